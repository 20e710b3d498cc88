from __future__ import annotations

import re

import pytest

from rationanomaly.model.parser import (
    OUTPUT_REGEX,
    ParsedVerdict,
    VerdictParseError,
    is_valid_verdict,
    parse_verdict,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>Disk full.</think> <answer>abnormal</answer>", ParsedVerdict("Disk full.", "abnormal")),
        ("<think>ok</think><answer>normal</answer>", ParsedVerdict("ok", "normal")),
        ("\n <think>\n multi\nline <*> </think>\n\n<answer> normal </answer>\n", ParsedVerdict("multi\nline <*>", "normal")),
        ("<think>a < b and x<*>y</think> <answer>normal</answer>", ParsedVerdict("a < b and x<*>y", "normal")),
    ],
)
def test_valid(text: str, expected: ParsedVerdict) -> None:
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty output"),
        ("   ", "empty output"),
        ("<answer>normal</answer>", "missing <think>"),
        ("<think>x</think>", "missing <answer>"),
        ("<think>x <answer>normal</answer>", "missing </think>"),
        ("<think>x</think> <answer>normal", "missing </answer>"),
        ("<answer>normal</answer> <think>x</think>", "<answer> before <think>"),
        ("<think>x</think> <answer>normal</answer> <answer>abnormal</answer>", "exactly one <answer>, found 2"),
        ("<think>x</think><think>y</think><answer>normal</answer>", "exactly one <think>, found 2"),
        ("Sure! <think>x</think> <answer>normal</answer>", "text before <think>"),
        ("<think>x</think> <answer>normal</answer> Hope this helps", "text after </answer>"),
        ("<think>x</think> so <answer>normal</answer>", "text between"),
        ("<think>x</think> <answer>Normal</answer>", "answer must be one of"),
        ("<think>x</think> <answer>ABNORMAL</answer>", "answer must be one of"),
        ("<THINK>x</THINK> <ANSWER>normal</ANSWER>", "missing <think>"),
        ("<think>x</think> <answer>maybe</answer>", "answer must be one of"),
        ("<think>  </think> <answer>normal</answer>", "empty <think>"),
        ("<think>see </p> here</think> <answer>normal</answer>", "tag-like text"),
        ("<think>x</answer></think> <answer>normal</answer>", "exactly one </answer>"),
    ],
)
def test_invalid(text: str, reason: str) -> None:
    with pytest.raises(VerdictParseError, match=re.escape(reason)):
        parse_verdict(text)
    assert not is_valid_verdict(text)


def test_parse_error_is_a_value_error() -> None:
    assert issubclass(VerdictParseError, ValueError)


@pytest.mark.parametrize(
    "text",
    [
        "<think>x</think> <answer>normal</answer>",
        "<think>a<*>b\nc</think><answer>abnormal</answer>",
        "\n<think>x</think>\n\n<answer>abnormal</answer>",
    ],
)
def test_regex_matches_parse(text: str) -> None:
    assert re.fullmatch(OUTPUT_REGEX, text)
    parse_verdict(text)


@pytest.mark.parametrize(
    "text",
    [
        "<think>x</think> <answer>Normal</answer>",
        "<think>x</think> <answer>normal</answer> extra",
        "<think>x</think><think>y</think><answer>normal</answer>",
        "<think>x</answer></think><answer>normal</answer>",
        "<think>x</think>" + " " * 10 + "<answer>normal</answer>",  # whitespace is bounded
    ],
)
def test_regex_rejects(text: str) -> None:
    assert re.fullmatch(OUTPUT_REGEX, text) is None


def test_regex_has_no_lookarounds() -> None:
    # vLLM's regex backends reject look-arounds; the grammar must do without them.
    assert "(?=" not in OUTPUT_REGEX and "(?!" not in OUTPUT_REGEX and "(?<" not in OUTPUT_REGEX

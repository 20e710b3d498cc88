from __future__ import annotations

import pytest

from rationanomaly.model.parser import parse_verdict
from rationanomaly.model.prompt import (
    INSTRUCTION,
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    completion_text,
    template_messages,
    window_messages,
)


def test_template_messages_shape_and_static_prefix() -> None:
    first = template_messages("kernel panic <*>")
    second = template_messages("link up")
    assert [m["role"] for m in first] == ["system", "user"]
    assert first[0] == second[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert first[1]["content"] == f"{INSTRUCTION} kernel panic <*>"
    # The static instruction comes first, byte-identical, for prefix caching.
    assert first[1]["content"].startswith(INSTRUCTION) and second[1]["content"].startswith(INSTRUCTION)


def test_system_prompt_states_format() -> None:
    assert "SRE" in SYSTEM_PROMPT
    assert "<think>step-by-step analysis</think> <answer>normal|abnormal</answer>" in SYSTEM_PROMPT


def test_window_messages_collapses_and_numbers() -> None:
    user = window_messages(["a", "a", "b", "c", "c", "c", "a"])[1]["content"]
    assert user.splitlines() == [INSTRUCTION, "1. a (×2)", "2. b", "3. c (×3)", "4. a"]


def test_window_flattens_newlines() -> None:
    user = window_messages(["line one\nline two", "x"])[1]["content"]
    assert user.splitlines()[1:] == ["1. line one line two", "2. x"]


def test_window_rejects_empty_and_bare_string() -> None:
    with pytest.raises(ValueError, match="at least one template"):
        window_messages([])
    with pytest.raises(TypeError):
        window_messages("abc")


def test_completion_text_round_trips() -> None:
    text = completion_text("Node card <*> failed; hardware fault.", "abnormal")
    assert text == "<think>Node card <*> failed; hardware fault.</think> <answer>abnormal</answer>"
    verdict = parse_verdict(text)
    assert (verdict.rationale, verdict.label) == ("Node card <*> failed; hardware fault.", "abnormal")


@pytest.mark.parametrize("rationale", ["", "  ", "bad </think> inside", "<answer>normal</answer>"])
def test_completion_text_rejects_unrenderable_rationale(rationale: str) -> None:
    with pytest.raises(ValueError, match="rationale"):
        completion_text(rationale, "normal")


def test_completion_text_rejects_bad_label() -> None:
    with pytest.raises(ValueError, match="label"):
        completion_text("x", "unknown")  # type: ignore[arg-type]


def test_prompt_version_is_set() -> None:
    assert PROMPT_VERSION and isinstance(PROMPT_VERSION, str)

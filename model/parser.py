"""Strict parser for the model's verdicts: `<think>…</think> <answer>normal|abnormal</answer>`.

One grammar serves three users: the backends (to validate every response, since a server may
silently ignore the output constraint), the GRPO format reward, and vLLM's structured outputs
(`OUTPUT_REGEX`). The rationale body is defined without look-arounds so the very same body
pattern works in the regex engines behind vLLM's structured outputs: a `<` inside the rationale
may not be followed by `/`, `t`, `a` or another `<`, which rules out any of the four tags while
still allowing log placeholders such as `<*>`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

Label = Literal["normal", "abnormal"]
LABELS: tuple[str, ...] = get_args(Label)

_BODY = r"(?:[^<]|<[^/ta<])*"
_LABEL = "|".join(LABELS)

# Parser whitespace is unbounded; the generation constraint bounds it so a constrained decoder
# cannot spin on blanks. Every string matching OUTPUT_REGEX therefore parses.
_PARSE_RE = re.compile(
    rf"[ \t\r\n]*<think>(?P<body>{_BODY})</think>[ \t\r\n]*"
    rf"<answer>[ \t\r\n]*(?P<label>{_LABEL})[ \t\r\n]*</answer>[ \t\r\n]*"
)
OUTPUT_REGEX: str = (
    rf"[ \n]{{0,2}}<think>{_BODY}</think>[ \n]{{0,2}}<answer>(?:{_LABEL})</answer>"
)



def output_gbnf(max_tokens: int) -> str:
    """OUTPUT_REGEX's language as a GBNF grammar, for llama.cpp servers (the `grammar` field).

    The rationale is bounded so the answer fits in `max_tokens`: a constrained decoder that runs
    out of tokens inside `<think>` leaves an unparseable answer, which the regex alone allows.
    About three characters per token, and 16 tokens kept for the tags and the label.

    >>> "{1,24}" in output_gbnf(24)
    True
    >>> 'label ::= "normal" | "abnormal"' in output_gbnf(64)
    True
    """
    body_chars = max(8, 3 * (max_tokens - 16))
    labels = " | ".join(f'"{label}"' for label in LABELS)
    return "\n".join((
        'root ::= [ \\n]? "<think>" body "</think>" [ \\n]? "<answer>" label "</answer>"',
        f"body ::= ([^<] | \"<\" [^/ta<]){{1,{body_chars}}}",
        f"label ::= {labels}",
    ))


_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


class VerdictParseError(ValueError):
    """The text is not exactly one think block followed by one answer block."""


@dataclass(frozen=True, slots=True)
class ParsedVerdict:
    rationale: str
    label: Label


def parse_verdict(text: str) -> ParsedVerdict:
    """Parse a model completion strictly.

    >>> parse_verdict("<think>Kernel panic on node.</think> <answer>abnormal</answer>")
    ParsedVerdict(rationale='Kernel panic on node.', label='abnormal')
    >>> parse_verdict("<answer>normal</answer>")
    Traceback (most recent call last):
    ...
    rationanomaly.model.parser.VerdictParseError: missing <think>
    """
    match = _PARSE_RE.fullmatch(text)
    if match is None:
        raise VerdictParseError(_diagnose(text))
    rationale = match.group("body").strip()
    if not rationale:
        raise VerdictParseError("empty <think> block")
    label = match.group("label")
    return ParsedVerdict(rationale=rationale, label="abnormal" if label == "abnormal" else "normal")


def is_valid_verdict(text: str) -> bool:
    """True when `parse_verdict` would accept the text.

    >>> is_valid_verdict("<think>ok</think><answer>normal</answer>")
    True
    >>> is_valid_verdict("<think>ok</think><answer>Normal</answer>")
    False
    """
    try:
        parse_verdict(text)
    except VerdictParseError:
        return False
    return True


def _diagnose(text: str) -> str:
    """Name the first thing wrong, for logs and `unknown` reasons.

    >>> _diagnose("")
    'empty output'
    >>> _diagnose("<think>a</think><answer>normal</answer><answer>normal</answer>")
    'expected exactly one <answer>, found 2'
    >>> _diagnose("<answer>normal</answer><think>a</think>")
    '<answer> before <think>'
    """
    if not text.strip():
        return "empty output"
    counts = {tag: text.count(tag) for tag in _TAGS}
    for tag in _TAGS:
        if counts[tag] == 0:
            return f"missing {tag}"
    for tag in _TAGS:
        if counts[tag] > 1:
            return f"expected exactly one {tag}, found {counts[tag]}"
    positions = [text.index(tag) for tag in _TAGS]
    if positions[2] < positions[0]:
        return "<answer> before <think>"
    if positions != sorted(positions):
        return "tags out of order"
    answer = text[positions[2] + len("<answer>") : positions[3]].strip()
    if answer not in LABELS:
        return f"answer must be one of {'|'.join(LABELS)}, got {_preview(answer)}"
    if text[: positions[0]].strip():
        return f"text before <think>: {_preview(text[: positions[0]])}"
    if text[positions[3] + len("</answer>") :].strip():
        return f"text after </answer>: {_preview(text[positions[3] + len('</answer>') :])}"
    if text[positions[1] + len("</think>") : positions[2]].strip():
        return "text between </think> and <answer>"
    return "tag-like text inside <think> (a '<' followed by '/', 't', 'a' or '<')"


def _preview(fragment: str, limit: int = 40) -> str:
    fragment = fragment.strip()
    return repr(fragment if len(fragment) <= limit else fragment[:limit] + "…")

"""Prompt rendering: pure functions from log templates to chat messages and training targets.

The system prompt and the instruction are byte-identical across requests and come before the
log, so a server's prefix cache (vLLM's is on by default) serves them once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from rationanomaly.model.parser import LABELS, Label, VerdictParseError, parse_verdict

# Part of every verdict_id: bump whenever any rendered text below changes.
PROMPT_VERSION: str = "ra-prompt-1"

SYSTEM_PROMPT: str = (
    "You are an expert site reliability engineer (SRE) who analyses system logs. "
    "Think step by step about the key parameters of the log and what they imply, then "
    "answer exactly in this format: "
    "<think>step-by-step analysis</think> <answer>normal|abnormal</answer>"
)
INSTRUCTION: str = "Classify the given log entries into normal and abnormal categories."

Messages = list[dict[str, str]]

_WINDOW_LINE = re.compile(r"\d+\. (.*?)(?: \(×(\d+)\))?")


def template_messages(template: str) -> Messages:
    """Chat messages asking for a verdict on one template (template mode).

    >>> template_messages("ciod: LOGIN chdir(<*>) failed")[1]["content"]
    'Classify the given log entries into normal and abnormal categories. ciod: LOGIN chdir(<*>) failed'
    """
    return _messages(f"{INSTRUCTION} {_one_line(template)}")


def window_messages(templates: Sequence[str]) -> Messages:
    """Chat messages for a window's template sequence (window mode).

    Consecutive repeats collapse to one numbered line so a burst of identical lines costs a
    few tokens rather than a hundred.

    >>> print(window_messages(["a <*>", "a <*>", "a <*>", "b", "a <*>"])[1]["content"])
    Classify the given log entries into normal and abnormal categories.
    1. a <*> (×3)
    2. b
    3. a <*>
    """
    if isinstance(templates, str):
        raise TypeError("window_messages takes a sequence of templates; for one, use template_messages")
    if not templates:
        raise ValueError("window_messages needs at least one template; skip empty windows upstream")
    lines = [
        f"{number}. {template}" + (f" (×{count})" if count > 1 else "")
        for number, (template, count) in enumerate(collapse_repeats(templates), start=1)
    ]
    return _messages(INSTRUCTION + "\n" + "\n".join(lines))


def collapse_repeats(templates: Sequence[str]) -> list[tuple[str, int]]:
    """Run-length encode consecutive equal templates (newlines flattened first).

    >>> collapse_repeats(["x", "x", "y", "x"])
    [('x', 2), ('y', 1), ('x', 1)]
    """
    runs: list[tuple[str, int]] = []
    for raw in templates:
        template = _one_line(raw)
        if runs and runs[-1][0] == template:
            runs[-1] = (template, runs[-1][1] + 1)
        else:
            runs.append((template, 1))
    return runs


def read_log(messages: Messages) -> str | tuple[str, ...]:
    """The log a rendered prompt asks about: the template (template mode) or the window's
    template sequence with repeats expanded (window mode). Inverse of the two renderers, for
    decisions that need the input itself (`model.ranking`).

    >>> read_log(template_messages("disk <*> failed"))
    'disk <*> failed'
    >>> read_log(window_messages(["a <*>", "a <*>", "b"]))
    ('a <*>', 'a <*>', 'b')
    >>> read_log([{"role": "user", "content": "hello"}])
    Traceback (most recent call last):
    ...
    ValueError: not a prompt rendered by ra-prompt-1: the user message does not start with the instruction
    """
    user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    if not user.startswith(INSTRUCTION):
        raise ValueError(f"not a prompt rendered by {PROMPT_VERSION}: the user message does not start with the instruction")
    body = user[len(INSTRUCTION) :]
    if body.startswith(" "):
        return body[1:]
    templates: list[str] = []
    for line in body.splitlines()[1:]:
        match = _WINDOW_LINE.fullmatch(line)
        if match is None:
            raise ValueError(f"not a prompt rendered by {PROMPT_VERSION}: window line {line!r}")
        templates += [match.group(1)] * int(match.group(2) or 1)
    if not templates:
        raise ValueError(f"not a prompt rendered by {PROMPT_VERSION}: no log in the user message")
    return tuple(templates)


def completion_text(rationale: str, label: Label) -> str:
    """The exact target string the model is trained to produce.

    >>> completion_text(" The node lost its link. ", "abnormal")
    '<think>The node lost its link.</think> <answer>abnormal</answer>'
    """
    if label not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    text = f"<think>{rationale.strip()}</think> <answer>{label}</answer>"
    try:
        parse_verdict(text)
    except VerdictParseError as error:
        raise ValueError(
            f"rationale cannot be rendered as a valid target ({error}); remove tag-like text "
            "such as '</…>' or '<think>' from it and make sure it is not empty"
        ) from error
    return text


def _messages(user: str) -> Messages:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _one_line(template: str) -> str:
    # A stray newline inside a template would break the numbered layout of a window.
    return " ".join(template.splitlines()) if ("\n" in template or "\r" in template) else template

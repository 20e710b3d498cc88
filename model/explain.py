"""Decide, then explain: the rank decision's abnormal verdicts get an explanation the model writes
with the label already fixed, published only when it passes a check against the input.

The rank decision (`model.decision.RankDecider`) publishes a rule-written draft. With
`explain` on, each input it labels abnormal gets one more generation: the same prompt, plus a
note after the log saying the answer is abnormal and asking why. Only the `<think>` part of
what comes back is read (the model's own answer, if it writes one, is ignored: the label is the
rank decision's). The explanation replaces the draft only when `check` passes:

- every quoted fragment appears in the input's text (no invented evidence);
- its stance (`model.stance`) is the label (it argues abnormal, not the opposite);
- it holds no markup (tags, chat-template tokens) and is not empty.

Otherwise the draft stays, with `rationale_source: draft` and `rationale_note` saying why.
Normal verdicts keep their draft: nobody reads an explanation of a line that raised nothing.

`EXPLAIN_VERSION` names the note's wording and the check; it is part of the decider's
`model_id`, so every verdict id changes when explanations are on (`ExplainingDecider`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import replace

import structlog

from rationanomaly.model.backends.base import Backend, Generation
from rationanomaly.model.classifier import STEERING_NOTE
from rationanomaly.model.guard import steering_found
from rationanomaly.model.judgement import DecisionKind, Judgement, LogInput
from rationanomaly.model.parser import Label
from rationanomaly.model.prompt import Messages, completion_text, log_text
from rationanomaly.model.ranking import messages_for
from rationanomaly.model.stance import stance

log = structlog.get_logger(__name__)

# Part of the explaining decider's model_id: bump when EXPLAIN_NOTE or `check` changes.
EXPLAIN_VERSION: str = "ra-explain-1"

EXPLAIN_NOTE: str = (
    "The answer is abnormal. In <think>, explain why in one or two sentences, quoting the words "
    "of the log that show the fault, and end with 'Conclusion: abnormal'."
)

_THINK = re.compile(r"<think>(.*?)(?:</think>|<answer>|$)", re.DOTALL | re.IGNORECASE)
# Quoted fragments: '…', "…", ‘…’, “…”. A single quote inside a word (isn't) is no quote.
_QUOTED = re.compile(r"(?<!\w)'([^'\n]+?)'(?!\w)|\"([^\"\n]+?)\"|‘([^’\n]+?)’|“([^”\n]+?)”")
# Markup a rationale must not carry: a tag (<think>, </answer>, <log>), a chat-template token
# (<|im_end|>), the prompt's inert brackets, or an instruction marker. Drain3's <*> is no tag.
_MARKUP = re.compile(r"<\s*/?\s*[A-Za-z_][\w:-]*\s*/?\s*>|<\||\|>|‹|›|\[/?INST\]|<<\s*/?SYS", re.IGNORECASE)
_MAX_CHARS = 600


def explain_messages(log_input: LogInput) -> Messages:
    """The rank prompt for `log_input`, with the decided answer stated after the log.

    >>> explain_messages("ciod: LOGIN chdir(<*>) failed")[1]["content"].endswith(EXPLAIN_NOTE)
    True
    """
    messages = messages_for(log_input)
    user = messages[-1]
    return [*messages[:-1], {**user, "content": f"{user['content']}\n{EXPLAIN_NOTE}"}]


def think_part(text: str | None) -> str | None:
    """What the model wrote inside `<think>` (up to its close, an `<answer>`, or the end);
    None when there is no `<think>`.

    >>> think_part("<think>Key: 'failed'. Conclusion: abnormal.</think> <answer>normal</answer>")
    "Key: 'failed'. Conclusion: abnormal."
    >>> think_part("abnormal") is None
    True
    """
    if text is None:
        return None
    match = _THINK.search(text)
    return match.group(1).strip() if match else None


def quotes(text: str) -> list[str]:
    """The quoted fragments of a rationale.

    >>> quotes("Key: 'chdir failed' and \\"No such file\\"; it isn't 'ok'.")
    ['chdir failed', 'No such file', 'ok']
    """
    return [next(g for g in m.groups() if g is not None) for m in _QUOTED.finditer(text)]


def check(explanation: str, log_input: LogInput, label: Label) -> str | None:
    """Why `explanation` may not be published for `label` on `log_input`; None when it may.

    >>> log_line = "ciod: LOGIN chdir(<*>) failed: No such file or directory"
    >>> check("Key: 'chdir(<*>) failed'. Conclusion: abnormal, the login failed.", log_line, "abnormal") is None
    True
    >>> check("Key: 'disk full'. Conclusion: abnormal.", log_line, "abnormal")
    "quotes text the log does not hold: 'disk full'"
    >>> check("Key: 'failed'. Conclusion: normal, routine.", log_line, "abnormal")
    'argues normal, the label is abnormal'
    >>> check("Key: 'failed'.</think> Conclusion: abnormal.", log_line, "abnormal")
    "holds markup: '</think>'"
    """
    text = explanation.strip()
    if not text:
        return "empty"
    if len(text) > _MAX_CHARS:
        return f"longer than {_MAX_CHARS} characters ({len(text)})"
    markup = _MARKUP.search(text)
    if markup:
        return f"holds markup: {markup.group(0)!r}"
    haystacks = _texts(log_input)
    for fragment in quotes(text):
        needle = _squash(fragment)
        if not needle or not any(needle in hay for hay in haystacks):
            return f"quotes text the log does not hold: {fragment!r}"
    argued = stance(text)
    if argued is None:
        return f"takes no stance (the label is {label})"
    if argued != label:
        return f"argues {argued}, the label is {label}"
    return None


def _texts(log_input: LogInput) -> list[str]:
    # The raw templates and the text the prompt showed (the model may quote either).
    parts = [log_input] if isinstance(log_input, str) else list(log_input)
    raw = " ".join(parts)
    shown = " ".join(log_text(p, mark="") for p in parts)
    return [_squash(raw), _squash(shown)]


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


class ExplainingDecider:
    """A rank decider whose abnormal verdicts get a model-written explanation, checked before
    it replaces the draft (module docstring). Labels, confidences and normal verdicts are the
    inner decider's, unchanged."""

    kind: DecisionKind = "rank"

    def __init__(self, inner: object, generator: Backend | None = None) -> None:
        self.inner = inner
        backend = generator if generator is not None else getattr(inner, "backend", None)
        if not callable(getattr(backend, "generate", None)):
            raise TypeError(f"{type(backend).__name__} cannot generate; an explanation needs a backend that can")
        self.generator: Backend = backend  # type: ignore[assignment]
        self.model_id: str = f"{inner.model_id}+{EXPLAIN_VERSION}"  # type: ignore[attr-defined]
        self.prompt_version: str = inner.prompt_version  # type: ignore[attr-defined]

    def decide(self, inputs: Sequence[LogInput]) -> list[Judgement]:
        judged: list[Judgement] = list(self.inner.decide(inputs))  # type: ignore[attr-defined]
        wanted = [i for i, j in enumerate(judged) if j.label == "abnormal" and j.rationale]
        kept: dict[int, str] = {}
        for i in wanted:
            # A log that addresses the model keeps the rule's rationale and its steering note:
            # the model would be explaining text written to steer it.
            if steering_found(inputs[i]) or STEERING_NOTE in (judged[i].rationale or ""):
                kept[i] = "explanation not asked: the log holds text addressed to the model"
        asked = [i for i in wanted if i not in kept]
        generations: list[Generation] = []
        if asked:
            started = time.perf_counter()
            try:
                generations = self.generator.generate([explain_messages(inputs[i]) for i in asked])
                if len(generations) != len(asked):
                    raise RuntimeError(f"{len(generations)} generations for {len(asked)} conversations")
            except Exception as exc:  # noqa: BLE001 (the explanation is optional; the verdict stands)
                log.warning("explanation failed", error=repr(exc), batch=len(asked))
                spent = (time.perf_counter() - started) / len(asked)
                generations = [Generation(None, spent, error=repr(exc), unavailable=True) for _ in asked]
        for i, generation in zip(asked, generations, strict=True):
            judged[i] = explained(judged[i], inputs[i], generation)
        for i, note in kept.items():
            judged[i] = replace(judged[i], rationale_note=note)
        return judged

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]
        if self.generator is not getattr(self.inner, "backend", None):
            self.generator.close()


def explained(judgement: Judgement, log_input: LogInput, generation: Generation) -> Judgement:
    """`judgement` with the generation's explanation when it passes `check`, else with the
    draft kept and the reason in `rationale_note`; latency includes the generation."""
    latency = judgement.latency_s + generation.latency_s
    label: Label = "abnormal" if judgement.label == "abnormal" else "normal"
    if generation.error is not None or generation.text is None:
        why = "the model was unavailable" if generation.unavailable else "the model's generation failed"
        note = f"explanation not used: {why} ({generation.error or 'no text'})"
        return replace(judgement, latency_s=latency, rationale_source="draft", rationale_note=note)
    explanation = think_part(generation.text)
    reason = "no <think> part" if explanation is None else check(explanation, log_input, label)
    if reason is not None or explanation is None:
        return replace(judgement, latency_s=latency, rationale_source="draft",
                       rationale_note=f"explanation failed its check: {reason}")
    return replace(judgement, rationale=explanation, latency_s=latency, rationale_source="model",
                   rationale_note=None, raw=completion_text(explanation, label))


__all__ = ["EXPLAIN_NOTE", "EXPLAIN_VERSION", "ExplainingDecider", "check", "explain_messages", "explained",
           "quotes", "think_part"]

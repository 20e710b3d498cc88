"""From a generation to a judgement: parse strictly, else the reason it failed; and the steering
rule that has the last word on every judgement. The deciders that use them: `model.decision`."""

from __future__ import annotations

from dataclasses import replace

from rationanomaly.model.backends.base import Conversation, Generation
from rationanomaly.model.judgement import Judgement, JudgementLabel
from rationanomaly.model.parser import VerdictParseError, parse_verdict
from rationanomaly.model.prompt import control_marks

__all__ = ["STEERING_NOTE", "Judgement", "JudgementLabel", "failure_reason"]

# Said in the rationale of a log that carried text addressed to a model (a separate flag, not a
# verdict): what the judge read is the log without it.
STEERING_NOTE = "Text addressed to the model (chat markup, output tags or instructions to the judge) was removed from the log before judging."


def _steered(conversation: Conversation, judgement: Judgement) -> Judgement:
    """A log whose prompt still carries neutralised control markup (spelled with the inert
    brackets themselves: `model.guard` cuts every mark it knows, with what follows, and the
    prompt keeps no trace of that; `model.guard.steering_found` reports it from the raw
    template) keeps the model's label, and the rationale says so. Overriding the label to
    abnormal made every normal log carrying such text a false alarm (bench/injection.py,
    ra-prompt-2: 100 normal->abnormal flips in 400). Unknowns stay unknown."""
    if judgement.label == "unknown" or not control_marks(conversation):
        return judgement
    return replace(judgement, rationale=f"{judgement.rationale or ''} {STEERING_NOTE}".strip())


def _judge(generation: Generation, attempt: int, latency_s: float) -> tuple[Judgement | None, str]:
    """A judgement when the generation parses, else the reason it did not."""
    if generation.error is not None or generation.text is None:
        return None, failure_reason(generation.error or "no text")
    try:
        verdict = parse_verdict(generation.text)
    except VerdictParseError as error:
        return None, f"unparseable: {error}"
    return Judgement(verdict.label, verdict.rationale, None, latency_s, attempt, generation.text, generation.confidence), ""


def failure_reason(error: str) -> str:
    """A short, stable reason for a failed generation.

    >>> failure_reason("timeout after 5s (ReadTimeout)")
    'timeout'
    >>> failure_reason("http 503: overloaded")
    'backend error: http 503: overloaded'
    """
    return "timeout" if error.startswith("timeout") else f"backend error: {error}"

"""Turn backend generations into judgements: parse strictly, retry what failed, else `unknown`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
import structlog

from rationanomaly.model.backends.base import Backend, BackendError, Conversation, Generation
from rationanomaly.model.judgement import Judgement, JudgementLabel
from rationanomaly.model.parser import VerdictParseError, parse_verdict
from rationanomaly.model.prompt import PROMPT_VERSION, control_marks

log = structlog.get_logger(__name__)

# Said in the rationale of a log that carried text addressed to a model (a separate flag, not a
# verdict): what the judge read is the log without it.
STEERING_NOTE = "Text addressed to the model (chat markup, output tags or instructions to the judge) was removed from the log before judging."

class Classifier:
    """Judge conversations with a backend, retrying only the items that failed."""

    def __init__(self, backend: Backend, retries: int = 2) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.backend = backend
        self.retries = retries

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    @property
    def prompt_version(self) -> str:
        return PROMPT_VERSION

    def classify(self, conversations: Sequence[Conversation]) -> list[Judgement]:
        results: list[Judgement | None] = [None] * len(conversations)
        latency = [0.0] * len(conversations)
        last_reason: list[str] = ["not attempted"] * len(conversations)
        last_raw: list[str | None] = [None] * len(conversations)
        away = [False] * len(conversations)
        pending = list(range(len(conversations)))
        attempt = 0
        while pending and attempt <= self.retries:
            attempt += 1
            generations = self.backend.generate([conversations[i] for i in pending])
            if len(generations) != len(pending):
                raise BackendError(
                    f"{self.backend.model_id}: {len(generations)} generations for {len(pending)} conversations"
                )
            still_pending = []
            for index, generation in zip(pending, generations, strict=True):
                latency[index] += generation.latency_s
                judgement, reason = _judge(generation, attempt, latency[index])
                if judgement is not None:
                    results[index] = judgement
                    continue
                last_reason[index] = reason
                away[index] = generation.unavailable
                last_raw[index] = generation.text if generation.text is not None else last_raw[index]
                still_pending.append(index)
            pending = still_pending
        for index in pending:
            log.warning("judgement unknown", reason=last_reason[index], attempts=attempt, model=self.model_id)
            results[index] = Judgement("unknown", None, last_reason[index], latency[index], attempt, last_raw[index],
                                       unavailable=away[index])
        return [_steered(conversations[i], judgement) for i, judgement in enumerate(results) if judgement is not None]


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

"""The decision stage: log inputs in, judgements out.

A `Decider` works on what the detector holds — one template, or a window's templates — and
says how it reached each label (`Judgement.decision`) and who wrote the rationale
(`Judgement.rationale_source`). Backends are transport only: `generate` text for a prompt and,
where they can, `score` a completion after one. Two deciders sit on them:

- `GenerateDecider` renders the prompt, asks the backend to generate, parses the answer
  strictly and retries only what failed; what still fails is `unknown` with the reason, and
  `unavailable` when the model was away rather than the answer wrong.
- `RankDecider` writes a grounded draft per label (`model.drafts`), has the backend score both
  after the same prompt and keeps the likelier past a calibrated threshold (`model.ranking`);
  the published rationale is the chosen draft, written by a rule (`rationale_source: draft`).

`make_decider` chooses, and `decision="auto"` means the same for every backend kind: rank when
a calibrated threshold is known for the model in use — `rank_threshold`, or the `decision.json`
of the adapter the settings name (for kind="openai", the adapter the server serves) — and the
backend can score (transformers; openai against a server that echoes prompt log-probs); else
generate, with a warning when a threshold was there but the backend cannot score.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import structlog

from rationanomaly.model.backends.base import Backend, BackendError
from rationanomaly.model.classifier import STEERING_NOTE, _judge, _steered
from rationanomaly.model.guard import steering_found
from rationanomaly.model.judgement import DecisionKind, Judgement, LogInput
from rationanomaly.model.parser import Label
from rationanomaly.model.prompt import PROMPT_VERSION, completion_text
from rationanomaly.model.ranking import (
    Scorer,
    candidates,
    confidence,
    decide,
    drafts,
    load_threshold,
    margins,
    messages_for,
    rank_model_id,
)
from rationanomaly.model.settings import BackendSettings

if TYPE_CHECKING:
    from rationanomaly.model.memory import ReviewedMemory
    from rationanomaly.model.sessions import SessionRules

log = structlog.get_logger(__name__)

# One template the start-up scoring check asks a server about.
_PROBE_LOG = "ciod: LOGIN chdir(<*>) failed: No such file or directory"


@runtime_checkable
class Decider(Protocol):
    """Judge log inputs; one judgement per input, in order, never an exception for one input."""

    kind: DecisionKind
    # Everything that changes a verdict besides the prompt (model, adapter, decision, threshold,
    # drafts): part of every verdict_id and the template cache's key.
    model_id: str
    prompt_version: str

    def decide(self, inputs: Sequence[LogInput]) -> list[Judgement]: ...

    def close(self) -> None: ...


class GenerateDecider:
    """The model writes a rationale and an answer; parsed strictly, retried, else `unknown`."""

    kind: DecisionKind = "generate"
    prompt_version = PROMPT_VERSION

    def __init__(self, backend: Backend, retries: int = 2) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.backend = backend
        self.retries = retries

    @property
    def model_id(self) -> str:
        return self.backend.model_id

    def decide(self, inputs: Sequence[LogInput]) -> list[Judgement]:
        conversations = [messages_for(x) for x in inputs]
        results: list[Judgement | None] = [None] * len(inputs)
        latency = [0.0] * len(inputs)
        last_reason = ["not attempted"] * len(inputs)
        last_raw: list[str | None] = [None] * len(inputs)
        away = [False] * len(inputs)
        pending = list(range(len(inputs)))
        attempt = 0
        while pending and attempt <= self.retries:
            attempt += 1
            generations = self.backend.generate([conversations[i] for i in pending])
            if len(generations) != len(pending):
                raise BackendError(f"{self.model_id}: {len(generations)} generations for {len(pending)} conversations")
            still_pending = []
            for index, generation in zip(pending, generations, strict=True):
                latency[index] += generation.latency_s
                judgement, reason = _judge(generation, attempt, latency[index])
                if judgement is not None:
                    results[index] = replace(judgement, decision="generate",
                                             rationale_source="model" if judgement.rationale else None)
                    continue
                last_reason[index] = reason
                away[index] = generation.unavailable
                last_raw[index] = generation.text if generation.text is not None else last_raw[index]
                still_pending.append(index)
            pending = still_pending
        for index in pending:
            log.warning("judgement unknown", reason=last_reason[index], attempts=attempt, model=self.model_id)
            results[index] = Judgement("unknown", None, last_reason[index], latency[index], attempt, last_raw[index],
                                       unavailable=away[index], decision="generate")
        return _finished(inputs, results)

    def close(self) -> None:
        self.backend.close()


class RankDecider:
    """The model scores a grounded draft per label; the margin against a calibrated threshold
    decides, and the chosen draft is the rationale."""

    kind: DecisionKind = "rank"
    prompt_version = PROMPT_VERSION

    def __init__(self, scorer: object, threshold: float, batch_size: int = 8, retries: int = 2) -> None:
        score = getattr(scorer, "score", None)
        if not callable(score):
            raise BackendError(f"{type(scorer).__name__} cannot score completions; the rank decision needs "
                               "kind='transformers', or kind='openai' against a server that echoes prompt log-probs")
        if not math.isfinite(threshold):
            raise ValueError(f"threshold must be finite, got {threshold!r}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        self.backend = scorer  # the transport that scores
        self._score: Scorer = score
        self.threshold = threshold
        self.retries = retries
        self._batch_size = batch_size
        self.model_id: str = rank_model_id(str(getattr(scorer, "model_id", "model")), threshold)

    def decide(self, inputs: Sequence[LogInput]) -> list[Judgement]:
        results: list[Judgement] = []
        for start in range(0, len(inputs), self._batch_size):
            batch = inputs[start : start + self._batch_size]
            judged = self._rank(batch)
            # Retry only what went unscored (a server that timed out on one request): a margin
            # that was computed is deterministic and would come back the same.
            for attempt in range(2, self.retries + 2):
                again = [i for i, j in enumerate(judged) if j.label == "unknown" and j.unavailable]
                if not again:
                    break
                for i, fresh in zip(again, self._rank([batch[i] for i in again]), strict=True):
                    judged[i] = replace(fresh, attempts=attempt, latency_s=judged[i].latency_s + fresh.latency_s)
            results.extend(judged)
        return _finished(inputs, results)

    def _rank(self, batch: Sequence[LogInput]) -> list[Judgement]:
        started = time.perf_counter()
        written: dict[int, dict[Label, str]] = {}
        refused: dict[int, str] = {}
        for i, x in enumerate(batch):
            try:
                written[i] = drafts(x)
            except ValueError as exc:  # an input no draft can be written for: this input's fault
                refused[i] = f"rank decision: {exc}"
        readable = list(written)
        found: dict[int, float] = {}
        error: str | None = None
        if readable:
            answers = [{label: completion_text(text, label) for label, text in written[i].items()} for i in readable]
            try:
                found = dict(zip(readable, margins(self._score, [batch[i] for i in readable], answers), strict=True))
            except Exception as exc:  # noqa: BLE001 (a scorer's failure is this batch's, not the stream's)
                log.exception("rank scoring failed", batch=len(readable))
                error = f"scoring error: {exc!r}"
        latency = time.perf_counter() - started
        out: list[Judgement] = []
        for i in range(len(batch)):
            margin = found.get(i, math.nan)
            if math.isfinite(margin):
                label = decide(margin, self.threshold)
                out.append(Judgement(label, written[i][label], None, latency, 1, completion_text(written[i][label], label),
                                     confidence(margin, self.threshold, label), decision="rank", rationale_source="draft"))
            elif i in refused:
                out.append(Judgement("unknown", None, refused[i], latency, 1, None, decision="rank"))
            else:
                # NaN: a server could not score one of the two answers (its log says why); like
                # an exception, it says nothing about this input: the model counts as away.
                reason = error or f"no margin: {margin!r} (an answer went unscored)"
                out.append(Judgement("unknown", None, reason, latency, 1, None, unavailable=True, decision="rank"))
        return out

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if callable(close):
            close()


def _finished(inputs: Sequence[LogInput], results: Sequence[Judgement | None]) -> list[Judgement]:
    """The steering rule's last word on each judgement (`model.classifier`): the prompt keeps no
    trace of what `model.guard` took out, so the decider, which holds the raw templates, adds the
    note when the guard found text addressed to the model (`guard.steering_found`)."""
    out = []
    for log, judgement in zip(inputs, results, strict=True):
        if judgement is None:
            continue
        judgement = _steered(messages_for(log), judgement)
        if judgement.label != "unknown" and STEERING_NOTE not in (judgement.rationale or "") and steering_found(log):
            judgement = replace(judgement, rationale=f"{judgement.rationale or ''} {STEERING_NOTE}".strip())
        out.append(judgement)
    return out


def rank_threshold(settings: BackendSettings) -> float | None:
    """The override, else the calibrated threshold in the named adapter's decision.json; None
    when neither is there."""
    from rationanomaly.model.loading import ModelLoadError, resolve_adapter

    if settings.rank_threshold is not None:
        return settings.rank_threshold
    try:
        return load_threshold(resolve_adapter(settings.adapter))
    except ModelLoadError as error:
        raise BackendError(str(error)) from error


def make_decider(settings: BackendSettings, *, backend: Backend | None = None, retries: int = 2,
                 memory: ReviewedMemory | None = None, rules: SessionRules | None = None) -> Decider:
    """The decider `settings.decision` names, over `backend` (built from `settings` when not
    handed in). See the module's docstring for what `auto` means.

    `memory`: reviewed templates the rank decision consults (`model.retrieval.RetrievalDecider`
    around the rank decider, inside any explanation). `rules`: session rules that decide
    windows (`model.sessions.SessionDecider`, outermost). Both are built by the caller, which
    knows where the data lies."""
    from rationanomaly.model.backends import make_backend

    owned = backend is None
    backend = backend if backend is not None else make_backend(settings)
    try:
        decider = _choose(settings, backend, retries, memory)
        if rules is not None:
            from rationanomaly.model.sessions import SessionDecider

            decider = SessionDecider(decider, rules)
        return decider
    except BaseException:
        if owned:
            backend.close()
        raise


def _generating(memory: ReviewedMemory | None, backend: Backend, retries: int) -> Decider:
    if memory is not None:
        log.warning("retrieval_off", reason="the reviewed-example memory blends the rank decision's margin; "
                    "this detector generates", fix="decision=rank (or auto with a calibrated threshold)")
    return GenerateDecider(backend, retries)


def _choose(settings: BackendSettings, backend: Backend, retries: int, memory: ReviewedMemory | None = None) -> Decider:
    if settings.decision == "generate":
        return _generating(memory, backend, retries)
    threshold = rank_threshold(settings)
    can_score = callable(getattr(backend, "score", None))
    if settings.decision == "auto" and threshold is None:
        return _generating(memory, backend, retries)  # nothing calibrated for this model: generate
    if not can_score:
        if settings.decision == "rank":
            raise BackendError(f"{type(backend).__name__} cannot score completions; the rank decision needs "
                               "kind='transformers', or kind='openai' against a server that echoes prompt log-probs")
        log.warning("the adapter ships a rank decision but this backend cannot score; generating instead "
                    "(verdicts may differ from the model card)", kind=settings.kind, adapter=settings.adapter)
        return _generating(memory, backend, retries)
    check = getattr(backend, "check_scoring", None)
    if callable(check):
        # One request at start-up: a server without echoed log-probs is found here, not per verdict.
        try:
            check(messages_for(_PROBE_LOG), candidates(_PROBE_LOG)["abnormal"])
        except BackendError as error:
            if settings.decision == "rank":
                raise
            log.warning("the adapter ships a rank decision but the server cannot score; generating instead",
                        error=str(error), base_url=settings.base_url)
            return _generating(memory, backend, retries)
    ranker: Decider = RankDecider(backend, 0.0 if threshold is None else threshold, batch_size=settings.batch_size,
                                  retries=retries)
    if memory is not None:
        # Inside the explanation: the label is settled (margin and neighbours) before the model
        # is asked to explain it.
        ranker = memory.decider(ranker)  # type: ignore[assignment]
    if settings.explain:
        from rationanomaly.model.explain import ExplainingDecider

        return ExplainingDecider(ranker)
    return ranker


def as_decider(handed: Backend | Decider, settings: BackendSettings, retries: int = 2,
               memory: ReviewedMemory | None = None, rules: SessionRules | None = None) -> Decider:
    """A decider handed in is used as it is (its maker chose its memory and rules); a backend
    gets the one `settings` choose."""
    if isinstance(handed, Decider):
        return handed
    return make_decider(settings, backend=handed, retries=retries, memory=memory, rules=rules)


__all__ = ["Decider", "GenerateDecider", "Judgement", "LogInput", "RankDecider", "as_decider", "make_decider",
           "rank_threshold"]

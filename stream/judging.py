"""Judging: closed windows in, judged windows out, with the model called off the polling thread.

Template mode (the paper's protocol) classifies each distinct template once and caches the
answer by template id; since the id is the hash of the template's text, a template that Drain3
changes gets a new id and is judged again. Window mode shows the model the window's sequence.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import orjson

import structlog

from rationanomaly.model.decision import Decider
from rationanomaly.model.judgement import DecisionKind, Judgement, RationaleSource
from rationanomaly.model.prompt import log_text
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.records import JudgeMode, ModelDownPolicy, VerdictLabel, Window
from rationanomaly.stream.settings import JudgeSettings
from rationanomaly.stream.template_owners import OwnersClosed, TemplateOwners

log = structlog.get_logger(__name__)


class ModelDown(RuntimeError):
    """The model was away for part of a batch (unreachable, timing out, 5xx) and the policy is
    to wait: the batch is judged again later rather than published `unknown`."""


@dataclass(frozen=True, slots=True)
class JudgedWindow:
    window: Window
    label: VerdictLabel
    reason: str | None
    rationale: str | None
    template_labels: dict[str, VerdictLabel]
    latency_ms: float
    confidence: float | None = None  # in `label`, when the backend gives one (rank decision)
    decision: DecisionKind | None = None
    rationale_source: RationaleSource | None = None  # None when there is no rationale
    rationale_note: str | None = None  # why a part of the rationale is a draft where the model's was asked for
    template_sources: dict[str, RationaleSource] = field(default_factory=dict)  # per abnormal template


def window_source(sources: list[RationaleSource]) -> RationaleSource | None:
    """Who wrote a window's rationale, from its parts' writers: a person's correction outweighs
    the rest; otherwise `model` only when the model wrote every part, else `draft`.

    >>> window_source(["model", "model"]), window_source(["model", "draft"]), window_source(["draft", "operator"])
    ('model', 'draft', 'operator')
    >>> window_source([]) is None
    True
    """
    if not sources:
        return None
    if "operator" in sources:
        return "operator"
    return "model" if all(s == "model" for s in sources) else "draft"


def window_confidence(label: VerdictLabel, judged: list[tuple[VerdictLabel, float | None]]) -> float | None:
    """Confidence in a window's label from its templates' (label, confidence) pairs.

    Abnormal: the clearest abnormal template's, since one anomaly makes the window abnormal.
    Normal: the least sure template's, since any of them could have tipped it. None when a
    deciding template has none (generated verdicts) or the window is unknown.

    >>> window_confidence("abnormal", [("normal", 0.9), ("abnormal", 0.6), ("abnormal", 0.8)])
    0.8
    >>> window_confidence("normal", [("normal", 0.9), ("normal", 0.7)])
    0.7
    >>> window_confidence("normal", [("normal", 0.9), ("normal", None)]) is None
    True
    """
    if label == "unknown":
        return None
    deciding = [c for lab, c in judged if lab == label]
    if not deciding or any(c is None for c in deciding):
        return None
    return max(deciding) if label == "abnormal" else min(deciding)  # type: ignore[type-var]


def combine(labels: list[VerdictLabel]) -> VerdictLabel:
    """A window is abnormal if any template is; unknown only if nothing is abnormal and one is unknown.

    >>> combine(["normal", "unknown", "abnormal"])
    'abnormal'
    >>> combine(["normal", "unknown"])
    'unknown'
    >>> combine(["normal", "normal"])
    'normal'
    """
    if "abnormal" in labels:
        return "abnormal"
    if "unknown" in labels:
        return "unknown"
    return "normal"


_CACHE_VERSION = 3  # 3: each entry is [label, rationale, confidence, decision, rationale_source, rationale_note]


class TemplateCache:
    """Judgements by template id, at most `max_templates` (least recently used go first: a
    flood of one-off templates must not grow it without end; one that returns is judged again).

    An `unknown` answer (the model failed after its retries) is kept only for `unknown_ttl_s`:
    asking again for every window would multiply the model's load exactly when it struggles.
    """

    def __init__(self, unknown_ttl_s: float = 300.0, max_templates: int = 100_000,
                 on_evict: Callable[[], None] | None = None) -> None:
        self._by_id: OrderedDict[str, Judgement] = OrderedDict()
        self._unknown: dict[str, tuple[float, Judgement]] = {}
        self._ttl_s = unknown_ttl_s
        self._max = max_templates
        self._on_evict = on_evict
        # Each answer the model gave here, as (template id, judgement): stream/detector_state.py
        # shares it with the group through Kafka. Answers learnt from the group go by `remember`.
        self.on_new: Callable[[tuple[str, Judgement]], None] | None = None
        # Operator corrections (stream/feedback.py) by template id: they outrank any answer.
        self._corrected: dict[str, Judgement] = {}

    def correct(self, template_id: str, judgement: Judgement | None) -> None:
        """An operator's judgement for a template, applied to the next window; None withdraws it."""
        if judgement is None:
            self._corrected.pop(template_id, None)
        else:
            self._corrected[template_id] = judgement

    def corrected(self, template_id: str) -> Judgement | None:
        return self._corrected.get(template_id)

    def answer(self, template_id: str) -> Judgement | None:
        """The model's answer (normal or abnormal) for the template, never an operator's correction."""
        return self._by_id.get(template_id)

    def get(self, template_id: str) -> Judgement | None:
        if self._corrected and (correction := self._corrected.get(template_id)) is not None:
            return correction
        found = self._by_id.get(template_id)
        if found is not None:
            try:
                self._by_id.move_to_end(template_id)
            except KeyError:  # evicted by the judging thread since the lookup: still a hit
                pass
            return found
        failed = self._unknown.get(template_id)
        if failed is not None:
            if time.monotonic() - failed[0] < self._ttl_s:
                return failed[1]
            del self._unknown[template_id]
        return None

    def put(self, template_id: str, judgement: Judgement) -> None:
        self.remember(template_id, judgement)
        if self.on_new is not None and judgement.label != "unknown":
            self.on_new((template_id, judgement))

    def remember(self, template_id: str, judgement: Judgement) -> None:
        """`put`, for an answer another instance (or an earlier run) gave: not shared again."""
        if judgement.label == "unknown":
            self._unknown[template_id] = (time.monotonic(), judgement)
        else:
            self._unknown.pop(template_id, None)
            self._by_id[template_id] = judgement
            self._by_id.move_to_end(template_id)
            while len(self._by_id) > self._max:
                self._by_id.popitem(last=False)
                if self._on_evict is not None:
                    self._on_evict()

    def __len__(self) -> int:
        return len(self._by_id)

    def save(self, path: Path, model_id: str, prompt_version: str) -> None:
        """Answers survive restarts: a restarted detector does not ask the model again."""
        entries = {tid: [j.label, j.rationale, j.confidence, j.decision, j.rationale_source, j.rationale_note]
                   for tid, j in self._by_id.items()}
        payload = {"version": _CACHE_VERSION, "model_id": model_id, "prompt_version": prompt_version, "templates": entries}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(payload))
        os.replace(tmp, path)

    def load(self, path: Path, model_id: str, prompt_version: str) -> int:
        """Loads answers given by the same model and prompt; returns how many (0 if none apply)."""
        if not path.exists():
            return 0
        try:
            payload = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError:
            log.warning("template_cache_unreadable", path=str(path))
            return 0
        if payload.get("version") != _CACHE_VERSION:
            # Older versions kept no confidence (1) or provenance (2): their hits would publish
            # verdicts without them.
            log.info("template_cache_ignored", path=str(path), reason=f"format version {payload.get('version')!r}")
            return 0
        if (payload.get("model_id"), payload.get("prompt_version")) != (model_id, prompt_version):
            return 0  # another model, decision or prompt: its answers say nothing about this one's
        for tid, (label, rationale, confidence, decision, source, note) in payload["templates"].items():
            if label in ("normal", "abnormal"):
                self.put(tid, Judgement(label, rationale, None, 0.0, 0, None, confidence,
                                        decision=decision, rationale_source=source, rationale_note=note))
        return len(self._by_id)


class WindowJudge:
    """Synchronous judging of a batch of windows; the worker below runs it on a thread."""

    def __init__(self, decider: Decider, settings: JudgeSettings, metrics: DetectorMetrics) -> None:
        self._decider = decider
        self._settings = settings
        self._metrics = metrics
        self.cache = TemplateCache(
            settings.unknown_ttl_s, settings.cache_max_templates, metrics.template_cache_evictions.inc
        )
        self.model_away = False  # whether the last `judge` met the model away
        # Held across a model call and the caching of its answers (`between_model_calls`).
        self._model_call = threading.Lock()
        # Set in a consumer group (stream/detector_state.py): the template's owner judges it,
        # this member asks and waits (stream/template_owners.py). None: judge everything here.
        self.owners: TemplateOwners | None = None

    @contextmanager
    def between_model_calls(self, timeout_s: float) -> Iterator[bool]:
        """No model call runs inside (True), or none could be waited for that long (False).

        A member losing partitions enters here before their templates move: the call in flight
        ends first, its answers cached and in the outbox to the group's cache topic, and no new
        one starts on requests it no longer owns. So the next owner, which reads that topic on
        assignment, finds them instead of asking the model again. Without it, a member that
        joins while a call is in flight pays again for the templates of the partitions it takes:
        the likeliest cause of 24 calls for 18 templates in one CI run of the scale-out test,
        where the new member joined later than usual, as the windows closed.
        """
        taken = self._model_call.acquire(timeout=timeout_s)
        try:
            yield taken
        finally:
            if taken:
                self._model_call.release()

    def judge_cached(self, window: Window) -> JudgedWindow | None:
        """The verdict from the template cache alone, or None if a template still needs the model.

        This is the hot path once the cache is warm: no queue, no thread hand-off, no batch wait.
        """
        if self._settings.mode is not JudgeMode.TEMPLATE:
            return None
        get = self.cache.get
        known: dict[str, Judgement] = {}
        for tid in window.templates:
            judgement = get(tid)
            if judgement is None:
                return None
            known[tid] = judgement
        return self._from_templates(window, {}, known)

    def judge(self, windows: list[Window], *, hold_if_model_down: bool = False) -> list[JudgedWindow]:
        """Judge a batch; with `hold_if_model_down`, raise ModelDown instead of returning
        windows the model could not judge for being away (what it did judge is cached)."""
        self.model_away = False
        if self._settings.mode is JudgeMode.TEMPLATE:
            return self._judge_templates(windows, hold_if_model_down)
        return self._judge_sequences(windows, hold_if_model_down)

    def _judge_templates(self, windows: list[Window], hold_if_model_down: bool) -> list[JudgedWindow]:
        wanted: dict[str, str] = {}
        known: dict[str, Judgement] = {}  # looked up once: the cache may evict them meanwhile
        for window in windows:
            for tid, text in window.templates.items():
                if tid in known or tid in wanted:
                    continue
                judgement = self.cache.get(tid)
                if judgement is None:
                    wanted[tid] = text
                else:
                    known[tid] = judgement
        if self.owners is not None:
            return self._judge_routed(windows, wanted, known, self.owners, hold_if_model_down)
        fresh = self._decide(wanted, hold_if_model_down) if wanted else {}
        return [self._from_templates(window, fresh, known) for window in windows]

    def _decide(self, wanted: dict[str, str], hold_if_model_down: bool,
                serving: dict[str, str] | None = None) -> dict[str, Judgement]:  # fmt: skip
        """One model call for `wanted` (id -> text); answers cached (so shared), and the requests
        among them (`serving`, other members') marked served, or retried later if the model was away."""
        with self._model_call:
            return self._decide_locked(wanted, hold_if_model_down, serving)

    def _decide_locked(self, wanted: dict[str, str], hold_if_model_down: bool,
                       serving: dict[str, str] | None) -> dict[str, Judgement]:  # fmt: skip
        ids = list(wanted)
        judgements = self._decider.decide([wanted[t] for t in ids])
        owners = self.owners if serving else None
        fresh: dict[str, Judgement] = {}
        away: list[Judgement] = []
        for tid, judgement in zip(ids, judgements, strict=True):
            self._metrics.model_latency.observe(judgement.latency_s)
            fresh[tid] = judgement
            if judgement.label == "unknown" and judgement.unavailable:
                away.append(judgement)  # never cached: the model's absence says nothing of the template
                if owners is not None and tid in serving and not hold_if_model_down:
                    owners.retry_later(tid)  # holding, the worker's backoff paces the retries instead
                continue
            self.cache.put(tid, judgement)
            if owners is not None and tid in serving:
                owners.served(tid, unknown=judgement.reason if judgement.label == "unknown" else None)
        self._metrics.templates.set(len(self.cache))
        # One line per model call: in a group, which member paid for which template, and for whom.
        log.info("templates_judged", templates=ids, for_others=sorted(serving or ()), away=len(away),
                 owned=sorted(self.owners.owned) if self.owners is not None else None)  # fmt: skip
        self.model_away = self.model_away or bool(away)
        if away and hold_if_model_down:
            raise ModelDown(f"{len(away)} of {len(ids)} templates: {away[0].reason}")
        return fresh

    def _judge_routed(self, windows: list[Window], wanted: dict[str, str], known: dict[str, Judgement],
                      owners: TemplateOwners, hold_if_model_down: bool) -> list[JudgedWindow]:  # fmt: skip
        """Template mode in a group: judge the templates this member owns (and the requests of
        other members for them); ask the owners of the rest and wait for their answers through
        the cache topic, serving requests meanwhile, so two members waiting on each other both
        go on. A template whose owner stays silent for judging.remote_wait_s is judged here."""
        local: dict[str, str] = {}
        remote: dict[str, str] = {}
        for tid, text in wanted.items():
            if not owners.owns(tid) and owners.ask(tid, text):
                remote[tid] = text
            else:
                local[tid] = text
        fresh: dict[str, Judgement] = {}
        while True:
            serving = self._requests_to_serve(owners, local)
            batch = {**serving, **local}
            if batch:
                fresh.update(self._decide(batch, hold_if_model_down, serving))
                local = {}
            for tid in list(remote):
                judgement = self.cache.get(tid)
                if judgement is not None:  # the owner's answer came in (or a correction did)
                    known[tid] = judgement
                    del remote[tid]
                elif owners.owns(tid):  # the assignment moved: this member is its owner now
                    local[tid] = remote.pop(tid)
                elif owners.overdue(tid):
                    self._metrics.template_routing.labels("timed_out").inc()
                    log.warning("template_owner_silent", template=tid, partition=owners.partition_of(tid),
                                waited_s=self._settings.remote_wait_s)  # fmt: skip
                    local[tid] = remote.pop(tid)
            if local:
                continue
            if not remote:
                break
            owners.wait(remote)
        for tid in wanted:
            owners.settled(tid)
        return [self._from_templates(window, fresh, known) for window in windows]

    def _requests_to_serve(self, owners: TemplateOwners, local: dict[str, str]) -> dict[str, str]:
        """Other members' requests due now that need the model; those answered here already
        are shared again (the requester may not have seen the answer) and closed at once."""
        serving: dict[str, str] = {}
        for tid, text in owners.to_serve().items():
            judgement = None if tid in local else self.cache.get(tid)
            if judgement is None:
                serving[tid] = text
                continue
            answer = self.cache.answer(tid)  # the model's, never a correction (each member has those)
            if answer is not None and self.cache.on_new is not None:
                self.cache.on_new((tid, answer))
            owners.served(tid, unknown=judgement.reason if answer is None and judgement.label == "unknown" else None)
        return serving

    def _from_templates(self, window: Window, fresh: dict[str, Judgement], known: dict[str, Judgement]) -> JudgedWindow:
        labels: dict[str, VerdictLabel] = {}
        confidences: list[tuple[VerdictLabel, float | None]] = []
        rationale_parts: list[str] = []
        sources: dict[str, RationaleSource] = {}
        notes: list[str] = []
        decisions: set[DecisionKind] = set()
        reasons: list[str] = []
        latency_s = 0.0
        for tid, text in window.templates.items():
            judgement = fresh.get(tid) or known.get(tid)
            if judgement is None:  # not reachable: every template is fresh or known
                labels[tid] = "unknown"
                reasons.append(f"{tid}: not judged")
                continue
            labels[tid] = judgement.label
            confidences.append((judgement.label, judgement.confidence))
            if judgement.decision is not None:
                decisions.add(judgement.decision)
            if tid in fresh:
                latency_s = max(latency_s, judgement.latency_s)
            if judgement.label == "abnormal" and judgement.rationale:
                # Quoted as the model saw it: inert and bounded (the text is an attacker's to write).
                rationale_parts.append(f"Template {tid} «{log_text(text)}»: {judgement.rationale}")
                if judgement.rationale_source is not None:
                    sources[tid] = judgement.rationale_source
                if judgement.rationale_note:
                    notes.append(f"{tid}: {judgement.rationale_note}")
            elif judgement.label == "unknown":
                reasons.append(f"{tid}: {judgement.reason}")
        label = combine(list(labels.values()))
        return JudgedWindow(
            window=window,
            label=label,
            reason="; ".join(reasons) if label == "unknown" else None,
            rationale="\n".join(rationale_parts) if label == "abnormal" else None,
            template_labels=labels,
            latency_ms=latency_s * 1000.0,
            confidence=window_confidence(label, confidences),
            # One kind per detector, except where an operator's correction replaced a template's.
            decision="operator" if "operator" in decisions else next(iter(decisions), None),
            rationale_source=window_source(list(sources.values())) if label == "abnormal" else None,
            rationale_note="; ".join(notes) if label == "abnormal" and notes else None,
            template_sources=sources if label == "abnormal" else {},
        )

    def _judge_sequences(self, windows: list[Window], hold_if_model_down: bool) -> list[JudgedWindow]:
        cap = self._settings.window_max_templates
        inputs: list[tuple[str, ...]] = []
        for window in windows:
            texts = [window.templates[tid] for tid in window.sequence]
            if len(texts) > cap:
                # Head and tail: HDFS-like sessions show their failures at the start or the end.
                texts = texts[: cap // 2] + texts[-(cap - cap // 2) :]
            inputs.append(tuple(texts))
        judgements = self._decider.decide(inputs)
        away = [j for j in judgements if j.label == "unknown" and j.unavailable]
        self.model_away = bool(away)
        if away and hold_if_model_down:
            raise ModelDown(f"{len(away)} of {len(windows)} windows: {away[0].reason}")
        judged = []
        for window, judgement in zip(windows, judgements, strict=True):
            self._metrics.model_latency.observe(judgement.latency_s)
            judged.append(
                JudgedWindow(
                    window=window,
                    label=judgement.label,
                    reason=judgement.reason if judgement.label == "unknown" else None,
                    rationale=judgement.rationale if judgement.label == "abnormal" else None,
                    template_labels={},  # the window was judged as a whole, no template alone
                    latency_ms=judgement.latency_s * 1000.0,
                    confidence=judgement.confidence,
                    decision=judgement.decision,
                    rationale_source=judgement.rationale_source if judgement.label == "abnormal" else None,
                    rationale_note=judgement.rationale_note if judgement.label == "abnormal" else None,
                )
            )
        return judged


class JudgeWorker:
    """A bounded queue in front of WindowJudge, drained in batches by one thread.

    The polling thread submits windows and collects results; it never blocks on the model,
    so it keeps polling (and heartbeating the group) while partitions are paused.
    """

    def __init__(self, judge: WindowJudge, settings: JudgeSettings, metrics: DetectorMetrics) -> None:
        self._judge = judge
        self._settings = settings
        self._metrics = metrics
        self._pending: deque[Window] = deque()
        self._done: deque[JudgedWindow] = deque()
        self._in_progress = 0
        self._cond = threading.Condition()
        self._closed = False
        self._down_since: float | None = None  # monotonic time the model was first found away
        self._thread = threading.Thread(target=self._run, name="judge", daemon=True)
        self._thread.start()

    def route(self, owners: TemplateOwners) -> None:
        """Judge in a group: each template by its owner (stream/template_owners.py). The thread
        also wakes, with no window to judge, to serve other members' requests."""
        self._judge.owners = owners
        owners.on_wake(self._wake)
        self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _serving_due(self) -> bool:
        owners = self._judge.owners
        return owners is not None and owners.has_work()

    @property
    def holding(self) -> bool:
        """Windows are being held for a model that is away (policy `wait`, deadline not passed):
        the input should pause, as a circuit breaker, until it answers again."""
        return self._down_since is not None and self._may_hold()

    def _may_hold(self) -> bool:
        if self._settings.on_model_down is not ModelDownPolicy.WAIT:
            return False
        down = self._down_since
        return down is None or time.monotonic() - down < self._settings.model_down_deadline_s

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._pending) + self._in_progress

    def submit(self, window: Window) -> None:
        with self._cond:
            # Answer from the cache at once, but only behind an empty queue: verdicts leave in
            # the order their windows closed, so a replay's output is the same line for line.
            if not self._pending and not self._in_progress:
                cached = self._judge.judge_cached(window)
                if cached is not None:
                    self._done.append(cached)
                    return
            self._pending.append(window)
            self._metrics.queue_depth.set(len(self._pending) + self._in_progress)
            self._cond.notify_all()

    def take_done(self) -> list[JudgedWindow]:
        with self._cond:
            done = list(self._done)
            self._done.clear()
            return done

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._in_progress:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._judge.owners is not None:
            self._judge.owners.close()  # a judge waiting for another member's answer stops waiting
        self._thread.join(timeout=5)

    def _next_batch(self) -> list[Window] | None:
        with self._cond:
            while not self._pending and not self._closed and not self._serving_due():
                owners = self._judge.owners
                self._cond.wait(owners.next_due_in() if owners is not None else None)
            if self._closed:
                return None
            if not self._pending:
                return []  # no window, only other members' requests to serve
            # Let a batch fill for up to max_wait_ms: fewer, fuller model calls.
            deadline = time.monotonic() + self._settings.max_wait_ms / 1000.0
            while len(self._pending) < self._settings.max_batch and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            n = min(len(self._pending), self._settings.max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            self._in_progress = n
            return batch

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            judged = self._judge_through_outage(batch)
            if judged is None:  # closed while waiting for the model
                return
            with self._cond:
                self._done.extend(judged)
                self._in_progress = 0
                self._metrics.queue_depth.set(len(self._pending))
                self._cond.notify_all()

    def _judge_through_outage(self, batch: list[Window]) -> list[JudgedWindow] | None:
        """Judge a batch; while the model is away and the policy is `wait`, retry it with
        backoff (1 s doubling to 30 s) until the model answers or the deadline passes."""
        backoff_s = 1.0
        while True:
            try:
                judged = self._judge.judge(batch, hold_if_model_down=self._may_hold())
            except OwnersClosed:
                return None
            except ModelDown as exc:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                    log.warning("model_unavailable", reason=str(exc), policy="wait", windows_held=len(batch),
                                unknown_after_s=self._settings.model_down_deadline_s)  # fmt: skip
                self._metrics.model_degraded.set(1)
                with self._cond:
                    if self._cond.wait_for(lambda: self._closed, timeout=backoff_s):
                        return None
                backoff_s = min(backoff_s * 2, 30.0)
                continue
            except Exception as exc:  # a bug or a backend crash must not lose the windows
                log.exception("judge_batch_failed", windows=len(batch))
                return [
                    JudgedWindow(w, "unknown", f"judge failed: {exc!r}", None, {t: "unknown" for t in w.templates}, 0.0)
                    for w in batch
                ]
            if self._judge.model_away:
                if self._down_since is None:
                    self._down_since = time.monotonic()
                self._metrics.model_degraded.set(1)
            elif self._down_since is not None:
                log.info("model_available", down_s=round(time.monotonic() - self._down_since, 1))
                self._down_since = None
                self._metrics.model_degraded.set(0)
            return judged

"""The stream's middle: raw record → decoded line → header/content → template → windows → verdicts.

It is the same code for the live consumer, a topic replay and a file replay; only the source
driving `feed` and the sink receiving verdicts differ, so the same input gives the same
verdicts and ids on every path. It never reads the clock: callers pass wall time to
`advance` (for idle timeouts) and processing time to `publish`.
"""

from __future__ import annotations

import re
from collections.abc import Container
from dataclasses import dataclass, field

import structlog

from rationanomaly.stream.checkpoint import Checkpoint
from rationanomaly.stream.deadletters import DeadLetterLog
from rationanomaly.stream.decoding import Decoder, decode_letter
from rationanomaly.stream.generic import ProfileSplitter
from rationanomaly.stream.judging import JudgedWindow, JudgeWorker
from rationanomaly.stream.ledger import OffsetLedger
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.multiline import Event, LineJoiner
from rationanomaly.stream.parsing import TemplateParser
from rationanomaly.stream.profiles import HeaderFields, profile_letter
from rationanomaly.stream.records import DeadLetter, LogRecord, ParsedLog, SourceRef, Window
from rationanomaly.stream.repartition import SplitMemo, UpstreamMarks
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.siem import selected
from rationanomaly.stream.sinks import VerdictSink
from rationanomaly.stream.verdicts import Verdict, build_verdict
from rationanomaly.stream.windows import Windower

log = structlog.get_logger(__name__)

# The reasons an `unknown` verdict gives when the model could not be reached or failed
# (model.classifier.failure_reason, the judge worker's crash), not when it answered badly.
_BACKEND_FAILURE = re.compile(r"\b(?:timeout|backend error|judge failed)")


@dataclass(slots=True)
class PartitionState:
    parser: TemplateParser
    windower: Windower
    watermark_ms: int = -(2**62)
    last_activity_s: float | None = None
    # key -> last offset of a window already published; see checkpoint.py for why.
    produced: dict[str, int] = field(default_factory=dict)
    replay_until: int = -1  # the largest offset in `produced` from the restored checkpoint
    joiner: LineJoiner | None = None  # the profile's multi-line events: the one still open
    prune_at: int = 1024  # size of `produced` that triggers pruning it (replay never checkpoints)
    # After the repartition hop: the input lines this partition already took (repartition.py)
    upstream: UpstreamMarks = field(default_factory=UpstreamMarks)
    # After the hop: input partition -> [largest event time from it, when its last line came
    # (caller's clock)]. The watermark is the least of them, as Kafka Streams' stream time is
    # the least over a task's partitions (see `advance`).
    upstream_clocks: dict[int, list] = field(default_factory=dict)
    upstream_since_s: float | None = None  # when the first line behind the hop came


def _silent(state: PartitionState, now_s: float, idle_s: float) -> bool:
    """No line for `idle_s` on a partition that has had one since its windows last closed for it."""
    return state.last_activity_s is not None and now_s - state.last_activity_s >= idle_s


@dataclass(frozen=True, slots=True)
class ModelIdentity:
    model_id: str
    prompt_version: str


class Pipeline:
    def __init__(
        self,
        settings: DetectorSettings,
        worker: JudgeWorker,
        sink: VerdictSink,
        metrics: DetectorMetrics,
        identity: ModelIdentity,
    ) -> None:
        self._settings = settings
        self._worker = worker
        self._sink = sink
        self._metrics = metrics
        self._identity = identity
        self._decoder = Decoder(settings.input.decode)
        self._headers = ProfileSplitter(settings.profile)
        self._profile = self._headers.profile
        self._decode = self._decoder.fields
        self._split = self._headers.fields
        self._dead_log = DeadLetterLog()
        self._warned_record_time = False
        self._key_by = None if settings.windows.key_by == "none" else settings.windows.key_by
        self._states: dict[int, PartitionState] = {}
        self._held: dict[int, tuple[int, Window]] = {}  # id(window) -> (partition, window)
        self._forced: dict[str, int] = {}  # memory cap -> windows it closed, for the logs
        self.ledger = OffsetLedger()
        self.lines = 0
        self.windows = 0
        self.verdicts = 0
        self.dead_letters = 0
        self.repeats = 0  # repartition records dropped as copies of lines already taken
        # Behind the hop: the input topic's partition count (the app sets it). Until each has
        # sent a line, or the wait has lasted `input.idle_timeout_s`, the watermark holds.
        self.upstream_partitions = 0
        # Behind the hop: the splits its forward side made in this process (Rekeyer.share_splits),
        # so a line read back here is not decoded and split again; None: every line is.
        self.hop_memo: SplitMemo | None = None

    # -- partitions -------------------------------------------------------------------------
    def state(self, partition: int) -> PartitionState:
        state = self._states.get(partition)
        if state is None:
            state = PartitionState(TemplateParser(self._settings.parsing), Windower(self._settings.windows))
            state.joiner = self._joiner()
            self._states[partition] = state
        return state

    def restore(self, partition: int, checkpoint: Checkpoint) -> None:
        state = PartitionState(
            TemplateParser.restore(checkpoint.parser, self._settings.parsing),
            # The watermark is not restored: the checkpoint's is the one at the crash, past the
            # lines about to be re-read, and it would close their windows before they fill.
            # Re-reading rebuilds it from the same lines in the same order.
            Windower(self._settings.windows),
            produced=dict(checkpoint.produced),
            replay_until=max(checkpoint.produced.values(), default=-1),
            joiner=self._joiner(),
            upstream=UpstreamMarks.restore(checkpoint.upstream),
        )
        self._states[partition] = state
        log.info("partition_restored", partition=partition, offset=checkpoint.offset, templates=state.parser.size)

    def committable(self, partition: int) -> int | None:
        """The offset that may be committed: below every line still in an open or unpublished window."""
        state = self._states.get(partition)
        open_min = state.windower.open_min_offsets().get(partition) if state is not None else None
        if state is not None and state.joiner is not None:
            # an event still being joined: the commit stays at its head, never inside it
            head = state.joiner.pending_first
            if head is not None and (open_min is None or head < open_min):
                open_min = head
        return self.ledger.committable(partition, open_min)

    def checkpoint(self, partition: int, offset: int) -> Checkpoint:
        state = self.state(partition)
        # Only windows whose lines may be read again (at or after the committed offset) matter.
        produced = {k: last for k, last in state.produced.items() if last >= offset}
        state.produced = produced
        return Checkpoint(offset=offset, watermark_ms=state.watermark_ms, parser=state.parser.snapshot(),
                          produced=produced, upstream=state.upstream.below(offset))  # fmt: skip

    def drop(self, partition: int) -> None:
        """A revoked partition: its open windows are abandoned, and so are its windows still with
        the model (their verdicts are never published here): the next owner re-reads them all
        from the committed offset, and this member publishes nothing of the partition any more."""
        self._states.pop(partition, None)
        for window_id, (owner, _) in list(self._held.items()):
            if owner == partition:
                del self._held[window_id]
                self.ledger.release(window_id)
        self.ledger.forget(partition)

    # -- the hot path -------------------------------------------------------------------------
    def feed(
        self,
        value: bytes | None,
        key: bytes | None,
        source: SourceRef,
        timestamp_ms: int | None,
        now_s: float,
        only_key: str | None = None,
        upstream: tuple[int, int] | None = None,
    ) -> None:
        """One record. After the repartition hop, `only_key` is the window key it was routed by
        and `upstream` its input (partition, offset), so a repeat of a line is skipped."""
        state = self.state(source.partition)
        state.last_activity_s = now_s
        self.ledger.seen(source.partition, source.offset)
        if upstream is not None and not state.upstream.take(source.offset, upstream, only_key or ""):
            self.repeats += 1
            return
        self.lines += 1
        if state.joiner is not None:
            record = self._decoder.decode(value, key, source, timestamp_ms)
            if isinstance(record, DeadLetter):
                self._dead(record)
                return
            event = state.joiner.push(record, now_s)
            if event is not None:
                self._process(state, event.head, event)
            return
        # One line is one event: decoded and split into plain fields, with no record built for
        # the stages in between (Decoder.fields, ProfileSplitter.fields).
        if upstream is not None and self.hop_memo is not None:
            split = self.hop_memo.get(upstream, value, key, timestamp_ms)
            if split is not None:  # the forward side's split of this very record: no decode, no split
                self._parsed(state, source, split, None, only_key, False)
                self._upstream_clock(state, upstream, split[0], now_s)
                return
        decoded = self._decode(value, key)
        if decoded.__class__ is str:
            self._dead(decode_letter(source, decoded, value, key))
            return
        line, key_text, host, envelope_ms = decoded
        t = self._line(state, source, line, key_text, host, envelope_ms, timestamp_ms, None, only_key, upstream is None)
        if upstream is not None and t is not None:
            self._upstream_clock(state, upstream, t, now_s)

    @staticmethod
    def _upstream_clock(state: PartitionState, upstream: tuple[int, int], t: int, now_s: float) -> None:
        """Behind the hop: the event time and arrival of the line's input partition (see `advance`)."""
        if state.upstream_since_s is None:
            state.upstream_since_s = now_s
        clock = state.upstream_clocks.get(upstream[0])
        if clock is None:
            state.upstream_clocks[upstream[0]] = [t, now_s]
        else:
            if t > clock[0]:
                clock[0] = t
            clock[1] = now_s

    def _joiner(self) -> LineJoiner | None:
        rule = self._profile.multiline
        return None if rule is None else LineJoiner(rule)

    def _process(self, state: PartitionState, record: LogRecord, event: Event | None) -> None:
        """One event of the multi-line joiner (a head line with its continuation lines)."""
        self._line(state, record.source, record.line, record.key, record.host, record.event_time_ms,
                   record.timestamp_ms, event, None, True)  # fmt: skip

    def _line(
        self,
        state: PartitionState,
        source: SourceRef,
        line: str,
        key: str | None,
        host: str | None,
        envelope_ms: int | None,
        timestamp_ms: int | None,
        event: Event | None,
        only_key: str | None,
        moves_watermark: bool,
    ) -> int | None:
        """One event (a line, or a head line with its continuation lines) into its windows; its
        event time, or None when it was dead-lettered. Behind the hop (`moves_watermark` False),
        the caller keeps the watermark per upstream partition instead."""
        fields = self._split(line, key, host, envelope_ms, timestamp_ms)
        if fields.__class__ is str:
            # the letter carries the whole event
            text = "\n".join(event.lines) if event is not None and event.line_count > 1 else line
            self._dead(profile_letter(source, fields, text, key))
            return None
        return self._parsed(state, source, fields, event, only_key, moves_watermark)

    def _parsed(
        self,
        state: PartitionState,
        source: SourceRef,
        fields: HeaderFields,
        event: Event | None,
        only_key: str | None,
        moves_watermark: bool,
    ) -> int:
        """A split event (its header fields) into its windows; its event time."""
        event_ms, content, host, level, component, ground_truth, from_record = fields
        if event is not None and event.line_count > 1:
            # Drain3 mines the head line, led by the innermost exception's class: leading, it
            # routes the line down its own branch of Drain's prefix tree, so traces of two
            # exception classes stay two templates (at the end Drain would make it a <*>). The
            # frames and the exception's message vary and stay out.
            exception = event.exception
            if exception is not None:
                content = f"{exception}: {content}"
        if from_record and not self._warned_record_time:
            self._warned_record_time = True
            log.warning(
                "event_time_from_record",
                source=str(source),
                profile=self._profile.name,
                detail="lines without a timestamp of their own take the record's time (Kafka's "
                "timestamp, or on a file replay the file's modification time plus the line number in ms)",
            )
        parsed = ParsedLog(source, event_ms, content, state.parser.parse(content), host, level, component, ground_truth)
        if moves_watermark and event_ms > state.watermark_ms:
            state.watermark_ms = event_ms
        if source.offset <= state.replay_until:
            skip = {k for k, last in state.produced.items() if last >= source.offset}
            closed = state.windower.add(parsed, skip_keys=skip, only_key=only_key)
        else:
            closed = state.windower.add(parsed, only_key=only_key)
        if closed:
            self._submit(source.partition, closed)
        return event_ms

    def dead(self, letter: DeadLetter) -> None:
        """A record the repartition hop could not use (it never reaches `feed`)."""
        self._dead(letter)

    def _dead(self, letter: DeadLetter) -> None:
        self.dead_letters += 1
        self._metrics.dead_letters.labels(letter.stage).inc()
        self._dead_log.add(letter)
        self._sink.dead_letter(letter)

    def _submit(self, partition: int, windows: list[Window]) -> None:
        for window in windows:
            self.windows += 1
            self._metrics.windows.labels(window.kind.value).inc()
            if window.forced is not None:
                self._note_forced(partition, window)
            self._held[id(window)] = (partition, window)
            self.ledger.hold(id(window), window.offsets)
            self._worker.submit(window)

    def _note_forced(self, partition: int, window: Window) -> None:
        self._metrics.windows_forced.labels(window.forced).inc()
        count = self._forced.get(window.forced, 0) + 1
        self._forced[window.forced] = count
        if count & (count - 1) == 0:  # 1, 2, 4, 8 ...: a flood is visible without flooding the log
            log.warning(
                "window_closed_early", cap=window.forced, key=window.key, lines=window.lines,
                partition=partition, times=count, setting=f"windows.{window.forced}",
            )

    # -- time and end of input -------------------------------------------------------------
    def silent_partitions(self, now_s: float) -> list[int]:
        """Partitions with no line for `input.idle_timeout_s`: their windows close at the next
        `advance` unless the caller leaves them out of `quiet`."""
        idle_s = self._settings.input.idle_timeout_s
        return [p for p, state in self._states.items() if _silent(state, now_s, idle_s)]

    def advance(self, now_s: float, idle: bool = True, quiet: Container[int] | None = None) -> None:
        """Close windows the watermark has passed, and (if `idle`) those of partitions idle too long.

        The caller passes `idle=False` while it holds input back itself (paused partitions):
        a partition we stopped reading is not idle, and closing its windows early would split them.
        With `quiet`, only the partitions in it close for silence: the Kafka edge confirms that a
        silent partition is read to its log's end, not held behind a transaction (stream/log_end.py).
        """
        idle_s = self._settings.input.idle_timeout_s
        self._dead_log.tick()
        for partition, state in self._states.items():
            if idle and state.joiner is not None:
                event = state.joiner.expire(now_s)
                if event is not None:
                    self._process(state, event.head, event)
            if state.upstream_clocks:
                self._upstream_watermark(state, now_s - idle_s if idle else None, self.upstream_partitions)
            closed = state.windower.advance(state.watermark_ms)
            if not idle:
                if state.last_activity_s is not None:
                    state.last_activity_s = now_s
            elif _silent(state, now_s, idle_s) and (quiet is None or partition in quiet):
                closed += state.windower.flush()
                state.last_activity_s = None
            if closed:
                self._submit(partition, closed)
        self.observe()

    @staticmethod
    def _upstream_watermark(state: PartitionState, idle_before_s: float | None, upstreams: int) -> None:
        """Behind the hop, lines of one window partition come from every input partition,
        interleaved as the group happens to read them. Each input partition's lines keep their
        order, so the least of their largest event times is a time no later line should precede:
        the watermark. An input partition that sent nothing since `idle_before_s` (caller's
        clock; None while input is paused) stops holding it back, as Kafka Streams stops waiting
        for an empty partition after `max.task.idle.ms`. An input partition not heard from yet
        holds it the same way, counted from the first line behind the hop."""
        waiting = idle_before_s is None or (state.upstream_since_s or 0.0) > idle_before_s
        if waiting and len(state.upstream_clocks) < upstreams:
            return
        clocks = state.upstream_clocks.values()
        active = [c[0] for c in clocks if idle_before_s is None or c[1] > idle_before_s]
        watermark = min(active) if active else max(c[0] for c in clocks)
        if watermark > state.watermark_ms:
            state.watermark_ms = watermark

    def observe(self) -> None:
        """The bounded quantities, as gauges (once per poll, not per line)."""
        states = self._states.values()
        self._metrics.open_windows.set(sum(s.windower.open_count for s in states))
        self._metrics.held_lines.set(sum(s.windower.held_lines for s in states))
        self._metrics.drain_clusters.set(sum(s.parser.size for s in states))

    def finish(self) -> None:
        """End of input: every open window closes now."""
        self._dead_log.flush()
        for partition, state in self._states.items():
            if state.joiner is not None:
                event = state.joiner.flush()
                if event is not None:
                    self._process(state, event.head, event)
            closed = state.windower.flush()
            if closed:
                self._submit(partition, closed)
        self.observe()

    def publish(self, created_ms: int) -> int:
        """Hand judged windows to the sink; returns how many were published."""
        done = self._worker.take_done()
        for judged in done:
            self._emit(judged, created_ms)
        return len(done)

    def _emit(self, judged: JudgedWindow, created_ms: int) -> None:
        held = self._held.pop(id(judged.window), None)
        if held is None:
            return  # its partition was revoked meanwhile: the next owner publishes it
        verdict: Verdict = build_verdict(
            judged,
            profile=self._profile.name,
            model_id=self._identity.model_id,
            prompt_version=self._identity.prompt_version,
            created_ms=created_ms,
            key_by=self._key_by,
            confidence=judged.confidence,
        )
        self._sink.emit(verdict)
        self.verdicts += 1
        self._metrics.verdicts.labels(verdict.verdict).inc()
        out = self._settings.output
        if not selected(verdict.verdict, out.publish, out.publish_unknown):
            self._metrics.withheld.labels(verdict.verdict).inc()
        self._track_model_health(judged)
        partition, window = held
        self.ledger.release(id(judged.window))
        state = self._states.get(partition)
        if state is not None:
            for rng in window.offsets:
                if rng.partition == partition:
                    state.produced[window.key] = max(state.produced.get(window.key, -1), rng.last)
            if len(state.produced) >= state.prune_at:
                self._prune_produced(partition, state)

    def _prune_produced(self, partition: int, state: PartitionState) -> None:
        """Forget published keys below the committable offset: no restart re-reads their lines.
        `checkpoint` does this on every commit; replay never commits, and a million distinct keys
        would otherwise stay here. Beyond `windows.max_open_windows` keys (an old window pinning
        the commit offset while a burst of keys goes by), the oldest are forgotten too: after a
        crash their windows are published again, with the same verdict_id, rather than held here."""
        low = self.committable(partition)
        produced = state.produced
        if low is not None:
            produced = {k: last for k, last in produced.items() if last >= low}
        cap = self._settings.windows.max_open_windows
        if len(produced) > cap:
            produced = dict(sorted(produced.items(), key=lambda item: item[1])[-cap:])
        state.produced = produced
        state.prune_at = 2 * len(produced) + 1024

    def _track_model_health(self, judged: JudgedWindow) -> None:
        """Degraded while windows come back unknown for a backend failure; healthy again at the
        first answer the model gave afresh (a cached answer says nothing about the model now)."""
        if judged.label == "unknown":
            if judged.reason and _BACKEND_FAILURE.search(judged.reason):
                self._metrics.model_degraded.set(1)
        elif judged.latency_ms > 0:
            self._metrics.model_degraded.set(0)

    @property
    def in_flight(self) -> int:
        return len(self._held)

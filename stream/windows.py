"""Group parsed lines into windows by event time. Pure: the caller passes every time it knows.

Kinds:
- session: keyed by every distinct match of `key_pattern` in the content (HDFS block ids); a
  line naming several ids joins each id's window. A session closes once the watermark shows
  `gap_ms` of silence for its key, or once it spans `max_duration_ms`.
- count: keyed by `key_by`; closes at `count` lines (the paper's 100-line windows), or when it
  spans `max_duration_ms`, so a quiet key cannot hold its offsets forever.
- time: tumbling `size_ms` buckets keyed by `key_by`; a bucket closes when the watermark passes
  its end.

Time semantics, in event time. The watermark is what the caller passes to `advance` (the
pipeline passes the largest event time seen, like Kafka Streams' stream time); it never goes
back. A window closes when no on-time line could still join it, an on-time line being one no
older than `watermark - grace_ms`: for a session, `watermark >= end + gap + grace`.
- Out-of-order lines within the grace join their window as usual.
- A line arriving after its key's session or bucket closed ("late") is never dropped: it opens
  a new window, which the next `advance` closes. `stats.late` counts lines older than
  `watermark - grace_ms` when they arrive.
- Sessions follow the lines' times, not their arrival order. A line joins the open session of
  its key that it is less than `gap_ms` from (an out-of-order line before the session's start
  moves the start back). A line `gap_ms` or more after the session's end, or before its start,
  belongs to another session and opens one, so a key may have several open at once (lines
  behind the repartition hop arrive interleaved across upstream partitions). A line within the
  gap of two open sessions joins them into one, as Kafka Streams merges sessions.
- Lines with no session key join no window and are counted in `stats.unkeyed` (`add` returns no
  window for them); their offsets are held by nothing, so the ledger may commit past them.

Every window is returned exactly once, by `add`, `advance` or `flush` (the pipeline calls `flush`
for a partition idle longer than `input.idle_timeout_s`, wall time). A window
keeps only its template-id sequence, the id -> text map and per-partition offset bounds.

Memory is bounded against hostile volume; each cap closes a window early (returned like any
other, with `Window.forced` naming the cap) and loses no line:
- `max_open_windows` (a burst of distinct keys): opening one more closes the open window due to
  close first (earliest deadline: the longest-quiet session, the oldest bucket; without a
  deadline, the first opened).
- `max_window_lines` (a session that never ends): a window reaching it closes, and the key's
  next line opens a new one.
- `max_held_lines` (lines held by all open windows together): past it, windows close as for
  `max_open_windows` until it holds again.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Container
from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rationanomaly.stream.records import ForcedBy, Label, OffsetRange, ParsedLog, Window, WindowKind

KeyBy = Literal["host", "component", "none"]

CONSTANT_KEY = "all"  # the key of count/time windows when key_by is "none"
MISSING_KEY = "-"  # the key when the key_by field is absent from a line
_NEVER = 1 << 62  # a deadline no watermark reaches
_NO_WATERMARK = -(1 << 62)
_NO_SKIP: frozenset[str] = frozenset()
_LABELS: tuple[Label | None, ...] = (None, "normal", "abnormal")


class WindowSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: WindowKind = WindowKind.SESSION
    key_pattern: str = r"blk_-?\d+"  # session: whole match, or the pattern's one group
    key_by: KeyBy = "none"  # count and time windows
    gap_ms: int = Field(300_000, gt=0)  # session inactivity that closes it
    max_duration_ms: int | None = Field(3_600_000, gt=0)  # session and count; None: unbounded
    count: int = Field(100, ge=1)
    size_ms: int = Field(60_000, gt=0)  # time windows
    grace_ms: int = Field(5_000, ge=0)  # allowed lateness beyond the watermark
    # Memory caps, per partition (see the module docstring and stream/README.md).
    max_open_windows: int = Field(50_000, ge=1)
    max_window_lines: int = Field(10_000, ge=1)
    max_held_lines: int = Field(1_000_000, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> WindowSettings:
        try:
            groups = re.compile(self.key_pattern).groups
        except re.error as exc:
            raise ValueError(f"windows.key_pattern {self.key_pattern!r} is not a valid regex: {exc}") from None
        if groups > 1:
            raise ValueError(
                f"windows.key_pattern {self.key_pattern!r} has {groups} groups; use at most one "
                "(the key), and (?:...) for the others"
            )
        if self.kind is WindowKind.SESSION and self.key_by != "none":
            raise ValueError(
                "windows.key_by applies to count and time windows; session windows are keyed by "
                "windows.key_pattern. Drop key_by or set windows.kind to count or time"
            )
        return self


class WindowStateError(ValueError):
    """A state that does not fit this windower (another kind, or windows already open)."""


@dataclass(slots=True)
class WindowStats:
    lines: int = 0  # lines passed to add
    unkeyed: int = 0  # session lines naming no key: in no window
    skipped: int = 0  # (line, key) pairs left out because the caller listed the key in skip_keys
    late: int = 0  # lines older than watermark - grace when they arrived (still windowed)
    opened: int = 0
    closed: int = 0
    forced: int = 0  # closed early by a memory cap (also among `closed`)
    merged: int = 0  # sessions joined into another by a line within the gap of both (not closed)


class _Open:
    """A window being filled; mutable, and never leaves this module."""

    __slots__ = ("slot", "key", "bucket", "seq", "start_ms", "end_ms", "lines", "sequence",
                 "templates", "offsets", "topic", "label", "closed")

    def __init__(self, slot: Any, key: str, bucket: int, seq: int, log: ParsedLog) -> None:
        t = log.event_time_ms
        src = log.source
        self.slot = slot  # its key in Windower._open
        self.key = key
        self.bucket = bucket
        self.seq = seq
        self.start_ms = t
        self.end_ms = t
        self.lines = 1
        self.sequence = [log.template.id]
        self.templates = {log.template.id: log.template.text}
        self.offsets = {src.partition: [src.offset, src.offset]}
        self.topic = src.topic
        gt = log.ground_truth
        self.label = 0 if gt is None else (2 if gt == "abnormal" else 1)
        self.closed = False


class Windower:
    """One partition's open windows. Not thread-safe."""

    def __init__(self, settings: WindowSettings) -> None:
        self._s = settings
        self._kind = settings.kind
        self._findall = re.compile(settings.key_pattern).findall
        self._open: dict[Any, _Open] = {}  # session: (key, seq); count: key; time: (key, bucket)
        self._sessions: dict[str, list[_Open]] = {}  # key -> its open sessions (session kind)
        # (deadline, opening number, push number, window); every open window has an entry no
        # later than its deadline (_NEVER for none), so the top finds the window due to close
        # first, and windows due together close in the order they opened, whatever the pushes
        # (a restored windower closes them in the same order as the one that saved it).
        self._heap: list[tuple[int, int, int, _Open]] = []
        self._held = 0  # lines in open windows
        self._pushes = 0
        self._seq = 0
        self._watermark = _NO_WATERMARK
        self._max_event = _NO_WATERMARK
        self.stats = WindowStats()

    @property
    def watermark_ms(self) -> int | None:
        return None if self._watermark == _NO_WATERMARK else self._watermark

    @property
    def max_event_ms(self) -> int | None:
        """The largest event time added so far: the natural watermark to pass to `advance`."""
        return None if self._max_event == _NO_WATERMARK else self._max_event

    @property
    def open_count(self) -> int:
        return len(self._open)

    @property
    def held_lines(self) -> int:
        """Lines held by open windows (bounded by `max_held_lines`)."""
        return self._held

    # -- lines in ------------------------------------------------------------------------------
    def add(self, log: ParsedLog, skip_keys: Container[str] = _NO_SKIP, only_key: str | None = None) -> list[Window]:
        """Adds a line; returns the windows it closed. Keys in `skip_keys` do not get this line
        (the pipeline uses it not to rebuild windows already published before a restart).
        `only_key`: a session line that names several keys joins only this one's window (after
        the repartition hop, the line comes once per key it names, each to that key's partition)."""
        stats = self.stats
        stats.lines += 1
        t = log.event_time_ms
        if t < self._watermark - self._s.grace_ms:
            stats.late += 1
        if t > self._max_event:
            self._max_event = t
        closed: list[Window] = []
        kind = self._kind
        if kind is WindowKind.SESSION:
            keys = self._findall(log.content)
            if only_key is not None:
                keys = [only_key] if only_key in keys else []
            if not keys:
                stats.unkeyed += 1
                return closed
            if len(keys) > 1:
                keys = dict.fromkeys(keys)  # a line naming one id twice counts once in it
            for key in keys:
                if key in skip_keys:
                    stats.skipped += 1
                else:
                    self._add_session(key, log, t, closed)
            if self._held > self._s.max_held_lines:
                self._shed(closed)
            return closed
        key = self._key_of(log)
        if key in skip_keys:
            stats.skipped += 1
        elif kind is WindowKind.COUNT:
            self._add_count(key, log, t, closed)
        else:
            self._add_time(key, log, t, closed)
        if self._held > self._s.max_held_lines:
            self._shed(closed)
        return closed

    def _key_of(self, log: ParsedLog) -> str:
        by = self._s.key_by
        if by == "none":
            return CONSTANT_KEY
        value = log.host if by == "host" else log.component
        return value or MISSING_KEY

    def _add_session(self, key: str, log: ParsedLog, t: int, closed: list[Window]) -> None:
        open_ = self._sessions.get(key)
        if open_ is not None:
            gap = self._s.gap_ms
            if len(open_) == 1:  # the usual case: no list to build
                win = open_[0]
                joined = t - win.end_ms < gap and win.start_ms - t < gap
            else:
                joins = [w for w in open_ if t - w.end_ms < gap and w.start_ms - t < gap]
                joined = bool(joins)
                if joined:
                    win = joins[0]
                    for other in joins[1:]:
                        self._merge(win, other)
            if joined:
                limit = self._s.max_duration_ms
                if limit is not None and t - win.start_ms >= limit:
                    closed.append(self._close(win))
                else:
                    self._extend(win, log, t, closed)
                    return
        self._start(None, key, 0, log, closed)

    def _merge(self, win: _Open, other: _Open) -> None:
        """`other`'s lines join `win` (a line fell within the gap of both): one session."""
        first, second = (win, other) if win.start_ms <= other.start_ms else (other, win)
        win.sequence = first.sequence + second.sequence
        for tid, text in other.templates.items():
            win.templates.setdefault(tid, text)
        for partition, (low, high) in other.offsets.items():
            bounds = win.offsets.get(partition)
            if bounds is None:
                win.offsets[partition] = [low, high]
            else:
                bounds[0], bounds[1] = min(bounds[0], low), max(bounds[1], high)
        win.start_ms, win.end_ms = min(win.start_ms, other.start_ms), max(win.end_ms, other.end_ms)
        win.lines += other.lines
        win.label = max(win.label, other.label)
        other.closed = True
        self.stats.merged += 1
        del self._open[other.slot]
        self._sessions[other.key].remove(other)
        self._schedule(win)

    def _add_count(self, key: str, log: ParsedLog, t: int, closed: list[Window]) -> None:
        win = self._open.get(key)
        limit = self._s.max_duration_ms
        if win is not None and limit is not None and t - win.start_ms >= limit:
            closed.append(self._close(win))
            win = None
        if win is None:
            win = self._start(key, key, 0, log, closed)
        else:
            self._extend(win, log, t, closed)
        if win.lines >= self._s.count and not win.closed:
            closed.append(self._close(win))

    def _add_time(self, key: str, log: ParsedLog, t: int, closed: list[Window]) -> None:
        bucket = t - t % self._s.size_ms
        slot = (key, bucket)
        win = self._open.get(slot)
        if win is None:
            self._start(slot, key, bucket, log, closed)
        else:
            self._extend(win, log, t, closed)

    def _start(self, slot: Any | None, key: str, bucket: int, log: ParsedLog, closed: list[Window]) -> _Open:
        while len(self._open) >= self._s.max_open_windows:
            closed.append(self._force_close("max_open_windows"))
        self._seq += 1
        if slot is None:  # a session: one key may have several
            slot = (key, self._seq)
            self._sessions.setdefault(key, []).append(win := _Open(slot, key, bucket, self._seq, log))
        else:
            win = _Open(slot, key, bucket, self._seq, log)
        self._open[slot] = win
        self._held += 1
        self.stats.opened += 1
        self._schedule(win)
        if self._s.max_window_lines == 1:
            closed.append(self._close(win, "max_window_lines"))
        return win

    def _extend(self, win: _Open, log: ParsedLog, t: int, closed: list[Window]) -> None:
        win.lines += 1
        self._held += 1
        template = log.template
        win.sequence.append(template.id)
        win.templates.setdefault(template.id, template.text)
        if t > win.end_ms:
            win.end_ms = t
        elif t < win.start_ms:
            win.start_ms = t
            if self._s.max_duration_ms is not None and self._kind is not WindowKind.TIME:
                self._schedule(win)  # an earlier start brings the duration limit closer
        src = log.source
        bounds = win.offsets.get(src.partition)
        if bounds is None:
            win.offsets[src.partition] = [src.offset, src.offset]
        elif src.offset < bounds[0]:
            bounds[0] = src.offset
        elif src.offset > bounds[1]:
            bounds[1] = src.offset
        gt = log.ground_truth
        if gt is not None:
            label = 2 if gt == "abnormal" else 1
            if label > win.label:
                win.label = label
        if win.lines >= self._s.max_window_lines:
            closed.append(self._close(win, "max_window_lines"))

    # -- closing -------------------------------------------------------------------------------
    def _deadline(self, win: _Open) -> int:
        """The smallest watermark at which no on-time line can join `win` any more."""
        s = self._s
        if self._kind is WindowKind.TIME:
            return win.bucket + s.size_ms + s.grace_ms
        limit = _NEVER if s.max_duration_ms is None else win.start_ms + s.max_duration_ms
        if self._kind is WindowKind.SESSION:
            limit = min(limit, win.end_ms + s.gap_ms)
        return limit + s.grace_ms if limit < _NEVER else _NEVER

    def _schedule(self, win: _Open) -> None:
        if len(self._heap) > 2 * len(self._open) + 1024:
            self._compact()
        self._pushes += 1
        heapq.heappush(self._heap, (self._deadline(win), win.seq, self._pushes, win))

    def _compact(self) -> None:
        """Drops the entries of closed windows and stale ones (windows that closed by count or a
        new line leave theirs behind), keeping one per open window, in opening order for ties."""
        heap = []
        for win in self._open.values():
            self._pushes += 1
            heap.append((self._deadline(win), win.seq, self._pushes, win))
        heapq.heapify(heap)
        self._heap = heap

    def _force_close(self, cap: ForcedBy) -> Window:
        """Closes the open window due to close first (a memory cap was reached)."""
        heap = self._heap
        while heap:
            key, _, _, win = heapq.heappop(heap)
            if win.closed:
                continue
            deadline = self._deadline(win)
            if deadline > key and heap and deadline > heap[0][0]:
                # A stale entry (the window grew since): another window may be due first.
                self._pushes += 1
                heapq.heappush(heap, (deadline, win.seq, self._pushes, win))
                continue
            return self._close(win, cap)
        raise AssertionError("an open window without a heap entry")  # every _start schedules one

    def _shed(self, closed: list[Window]) -> None:
        while self._held > self._s.max_held_lines and self._open:
            closed.append(self._force_close("max_held_lines"))

    def advance(self, watermark_ms: int) -> list[Window]:
        """Moves the watermark (never back) and returns the windows it closes, oldest deadline first."""
        if watermark_ms > self._watermark:
            self._watermark = watermark_ms
        watermark = self._watermark
        heap = self._heap
        closed: list[Window] = []
        # Entries are lazy: a window that grew since it was pushed is pushed again when popped.
        while heap and heap[0][0] <= watermark:  # never true for _NEVER
            _, _, _, win = heapq.heappop(heap)
            if win.closed:
                continue
            deadline = self._deadline(win)
            if deadline > watermark:
                self._pushes += 1
                heapq.heappush(heap, (deadline, win.seq, self._pushes, win))
            else:
                closed.append(self._close(win))
        return closed

    def flush(self) -> list[Window]:
        """End of input: closes every open window, in the order they opened."""
        closed = [self._close(win) for win in list(self._open.values())]
        self._heap.clear()
        self._sessions.clear()
        return closed

    def _close(self, win: _Open, forced: ForcedBy | None = None) -> Window:
        win.closed = True
        del self._open[win.slot]
        if self._kind is WindowKind.SESSION:
            sessions = self._sessions[win.key]
            if len(sessions) == 1:
                del self._sessions[win.key]
            else:
                sessions.remove(win)
        self._held -= win.lines
        self.stats.closed += 1
        if forced is not None:
            self.stats.forced += 1
        return Window(
            kind=self._kind,
            key=win.key,
            start_ms=win.start_ms,
            end_ms=win.end_ms,
            lines=win.lines,
            sequence=tuple(win.sequence),
            templates=win.templates,
            offsets=tuple(OffsetRange(p, b[0], b[1]) for p, b in sorted(win.offsets.items())),
            topic=win.topic,
            ground_truth=_LABELS[win.label],
            forced=forced,
        )

    # -- offsets and state ---------------------------------------------------------------------
    def open_min_offsets(self) -> dict[int, int]:
        """Partition -> the smallest offset any open window holds (nothing open: absent)."""
        lows: dict[int, int] = {}
        for win in self._open.values():
            for partition, (first, _) in win.offsets.items():
                low = lows.get(partition)
                if low is None or first < low:
                    lows[partition] = first
        return lows

    def state(self) -> dict[str, Any]:
        """The open windows and clocks as plain data (orjson-able), for `restore`."""
        return {
            "version": 1,
            "kind": self._kind.value,
            "watermark_ms": self.watermark_ms,
            "max_event_ms": self.max_event_ms,
            "stats": asdict(self.stats),
            "open": [
                {
                    "key": w.key,
                    "bucket": w.bucket,
                    "start_ms": w.start_ms,
                    "end_ms": w.end_ms,
                    "lines": w.lines,
                    "sequence": list(w.sequence),
                    "templates": dict(w.templates),
                    "offsets": [[p, b[0], b[1]] for p, b in sorted(w.offsets.items())],
                    "topic": w.topic,
                    "ground_truth": _LABELS[w.label],
                }
                for w in self._open.values()
            ],
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Loads `state()` output into this windower, which must have nothing open."""
        if self._open:
            raise WindowStateError(f"restore into a windower with {len(self._open)} open windows")
        try:
            snap = _State.model_validate(state)
        except ValidationError as exc:
            raise WindowStateError(f"not a windower state: {exc}") from None
        if snap.kind is not self._kind:
            raise WindowStateError(f"state is for {snap.kind.value} windows, this windower makes {self._kind.value}")
        self._watermark = _NO_WATERMARK if snap.watermark_ms is None else snap.watermark_ms
        self._max_event = _NO_WATERMARK if snap.max_event_ms is None else snap.max_event_ms
        self.stats = WindowStats(**snap.stats.model_dump())
        for w in snap.open:
            self._seq += 1
            win = _Open.__new__(_Open)
            if self._kind is WindowKind.TIME:
                win.slot = (w.key, w.bucket)
            elif self._kind is WindowKind.SESSION:
                win.slot = (w.key, self._seq)
                self._sessions.setdefault(w.key, []).append(win)
            else:
                win.slot = w.key
            win.key, win.bucket, win.seq = w.key, w.bucket, self._seq
            win.start_ms, win.end_ms, win.lines = w.start_ms, w.end_ms, w.lines
            win.sequence = list(w.sequence)
            win.templates = dict(w.templates)
            win.offsets = {p: [first, last] for p, first, last in w.offsets}
            win.topic = w.topic
            win.label = _LABELS.index(w.ground_truth)
            win.closed = False
            if win.slot in self._open:
                raise WindowStateError(f"state opens key {w.key!r} twice")
            self._open[win.slot] = win
            self._held += win.lines
            self._schedule(win)


class _StatsState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lines: int = 0
    unkeyed: int = 0
    skipped: int = 0
    late: int = 0
    opened: int = 0
    closed: int = 0
    forced: int = 0
    merged: int = 0


class _OpenState(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str
    bucket: int
    start_ms: int
    end_ms: int
    lines: int = Field(ge=1)
    sequence: list[str]
    templates: dict[str, str]
    offsets: list[tuple[int, int, int]]
    topic: str
    ground_truth: Label | None


class _State(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1]
    kind: WindowKind
    watermark_ms: int | None
    max_event_ms: int | None
    stats: _StatsState
    open: list[_OpenState]

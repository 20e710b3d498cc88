"""Multi-line events: continuation lines (a stack trace) join the line that started their event.

As Filebeat's and Vector's multiline settings, a profile declares either a `start_pattern` (a
line matching it starts an event, any other continues the one before) or a
`continuation_pattern` (a line matching it continues the event before, any other starts one),
or the shipped `preset: stack_traces` (Java's `at ...`, `Caused by:`, `... N more`; Python's
`Traceback`, indented frames and the closing `SomeError: message`). An event ends at the next
start, after `flush_timeout_s` of wall time without a line (live runs), or at end of input; past
`max_lines` or `max_bytes` further lines still belong to it (their offsets) but add no text.

The joined event is one record: its head line is split by the profile; Drain3 mines the head's
content led by the exception class ("KeyError: Instance failed to spawn"), so `ValueError` and
`KeyError` make two templates; its source is the head line's position. Until an event is complete its head offset is held
(`pending_first`), so a commit never lands inside an event: a restart re-reads it whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from rationanomaly.stream.records import LogRecord

# Java: "\tat x.y(Z.java:1)", "Caused by: ...", "Suppressed: ...", "\t... 12 more"; Python:
# "Traceback (most recent call last):", indented frames and code, the chained-exception
# sentences, and the closing "pkg.SomeError: message" line. Any indented line continues too.
STACK_TRACE_CONTINUATION = (
    r"^(?:\s|Traceback \(most recent call last\)|Caused by:|Suppressed:|\.\.\. \d+ (?:more|common frames omitted)"
    r"|During handling of the above exception|The above exception was the direct cause"
    r"|[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Fault|Throwable)(?::|$))"
)
# The exception a trace names: Python's last "pkg.Error: msg" line, Java's "Caused by: x.Y"
# or a head line ending in "x.YException: msg".
_EXCEPTION = re.compile(r"(?:^|Caused by: |\s)((?:[A-Za-z_][\w$]*\.)*[A-Za-z_][\w$]*(?:Error|Exception|Exit|Interrupt|Fault|Throwable))(?::|$|\s)")


class MultilineSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    preset: Literal["stack_traces"] | None = None
    start_pattern: str | None = None
    continuation_pattern: str | None = None
    max_lines: int = Field(500, ge=1)
    max_bytes: int = Field(65_536, ge=1)
    flush_timeout_s: float = Field(5.0, gt=0)

    @model_validator(mode="after")
    def _one_rule(self) -> MultilineSettings:
        given = [n for n in ("preset", "start_pattern", "continuation_pattern") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                f"multiline needs exactly one of preset, start_pattern, continuation_pattern (got {given or 'none'})"
            )
        for name in ("start_pattern", "continuation_pattern"):
            pattern = getattr(self, name)
            if pattern is not None:
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValueError(f"multiline.{name} {pattern!r} is not a valid regex: {exc}") from None
        return self

    def continues(self) -> tuple[re.Pattern[str], bool]:
        """The pattern and whether a match means "continues" (else it means "starts")."""
        if self.start_pattern is not None:
            return re.compile(self.start_pattern), False
        return re.compile(self.continuation_pattern or STACK_TRACE_CONTINUATION), True


STACK_TRACES = MultilineSettings(preset="stack_traces")


def exception_class(lines: list[str]) -> str | None:
    """The innermost exception a trace names: the last one found, scanning from the end.

    >>> exception_class(["ERROR x Traceback (most recent call last):", '  File "a.py", line 1', "KeyError: 'k'"])
    'KeyError'
    >>> exception_class(["boom java.io.IOException: disk", "\\tat a.B(B.java:1)", "Caused by: java.lang.IllegalStateException: x"])
    'java.lang.IllegalStateException'
    """
    for line in reversed(lines):
        m = _EXCEPTION.search(line)
        if m is not None:
            return m.group(1)
    return None


@dataclass(slots=True)
class _Pending:
    head: LogRecord
    lines: list[str]
    last_offset: int
    size: int
    last_s: float
    count: int = 1


@dataclass(frozen=True, slots=True)
class Event:
    """A complete event: the head record, every line's text (up to the caps) and the last offset."""

    head: LogRecord
    lines: tuple[str, ...]
    last_offset: int
    line_count: int

    @property
    def exception(self) -> str | None:
        return exception_class(list(self.lines)) if len(self.lines) > 1 else None


@dataclass(slots=True)
class LineJoiner:
    """One partition's pending event. Pure: the caller passes wall time for the flush timeout."""

    settings: MultilineSettings
    _pattern: re.Pattern[str] = field(init=False)
    _match_continues: bool = field(init=False)
    _pending: _Pending | None = field(init=False, default=None)
    joined_lines: int = field(init=False, default=0)  # continuation lines joined so far

    def __post_init__(self) -> None:
        self._pattern, self._match_continues = self.settings.continues()

    @property
    def pending_first(self) -> int | None:
        """The head offset of the event still open (it must not be committed past)."""
        return None if self._pending is None else self._pending.head.source.offset

    def push(self, record: LogRecord, now_s: float) -> Event | None:
        """Add a line; returns the event it completed, if it starts a new one."""
        matched = self._pattern.search(record.line) is not None
        continues = matched if self._match_continues else not matched
        pending = self._pending
        if continues and pending is not None:
            pending.count += 1
            pending.last_offset = record.source.offset
            pending.last_s = now_s
            self.joined_lines += 1
            size = len(record.line) + 1
            if len(pending.lines) < self.settings.max_lines and pending.size + size <= self.settings.max_bytes:
                pending.lines.append(record.line)
                pending.size += size
            return None
        done = self.flush()
        self._pending = _Pending(record, [record.line], record.source.offset, len(record.line), now_s)
        return done

    def flush(self) -> Event | None:
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        return Event(pending.head, tuple(pending.lines), pending.last_offset, pending.count)

    def expire(self, now_s: float) -> Event | None:
        """The pending event, if no line joined it for `flush_timeout_s`."""
        pending = self._pending
        if pending is not None and now_s - pending.last_s >= self.settings.flush_timeout_s:
            return self.flush()
        return None

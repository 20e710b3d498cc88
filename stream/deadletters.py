"""Dead letters in the log as summaries: counts by stage and error, with a few examples.

One warning per dead letter turned a 25k-line file without timestamps into 6 MB of stderr. Here
the first dead letter is logged at once (so a misconfiguration shows immediately), then one
summary per `interval_s` at most, and a last one when the input ends. Errors are grouped by
their text with quoted values and numbers blanked, so "timestamp '081109 2036' does not fit"
and "timestamp '081109 2037' ..." count as one kind. Every dead letter still goes to the sink
in full; only the log is summarised.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable

import structlog

from rationanomaly.stream.records import DeadLetter

log = structlog.get_logger(__name__)

_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_NUMBER = re.compile(r"\d+")
_EXAMPLES = 3
_KINDS = 20  # kinds named in one summary; the rest are counted as "other kinds"


def error_kind(error: str) -> str:
    """An error's text with its particulars blanked.

    >>> error_kind("timestamp '081109 2036' does not fit '%y%m%d %H%M%S' (profile 'hdfs')")
    "timestamp '…' does not fit '…' (profile '…')"
    >>> error_kind("record of 70000 bytes exceeds max_line_bytes=65536")
    'record of N bytes exceeds max_line_bytes=N'
    """
    return _NUMBER.sub("N", _QUOTED.sub("'…'", error))


class DeadLetterLog:
    """Counts dead letters and logs them in summaries. `clock` is monotonic seconds.

    The clock is read only to space out log lines: it decides nothing about the data.
    """

    def __init__(self, interval_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._counts: Counter[tuple[str, str]] = Counter()
        self._examples: dict[tuple[str, str], list[str]] = {}
        self._last_s: float | None = None
        self.total = 0

    def add(self, letter: DeadLetter) -> None:
        self.total += 1
        kind = (letter.stage, error_kind(letter.error))
        self._counts[kind] += 1
        examples = self._examples.setdefault(kind, [])
        if len(examples) < _EXAMPLES:
            examples.append(f"{letter.source}: {letter.error[:200]}")
        now = self._clock()
        if self._last_s is None or now - self._last_s >= self._interval_s:
            self.flush(now)

    def tick(self) -> None:
        """Log a summary if one is due: dead letters counted and `interval_s` gone by."""
        if self._counts and self._last_s is not None and self._clock() - self._last_s >= self._interval_s:
            self.flush()

    def flush(self, now: float | None = None) -> None:
        """Log what was counted since the last summary, if anything."""
        if not self._counts:
            return
        self._last_s = self._clock() if now is None else now
        top = self._counts.most_common(_KINDS)
        log.warning(
            "dead_letters",
            count=sum(self._counts.values()),
            total=self.total,
            by_error=[
                {"stage": stage, "error": error, "count": n, "examples": self._examples[(stage, error)]}
                for (stage, error), n in top
            ],
            other_kinds=max(0, len(self._counts) - _KINDS),
        )
        self._counts.clear()
        self._examples.clear()

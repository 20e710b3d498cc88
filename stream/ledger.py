"""Which offset each partition may commit: none that a window still needs.

A window holds the smallest offset of its lines in each partition from the moment it closes
until its verdict is published (`hold` ... `release`); open windows are the windower's, passed in
as `open_min` (`Windower.open_min_offsets()`). The committable offset is the smallest offset still
held, or one past the last offset seen. Committing it means a restart re-reads every line of
every window not yet published (at-least-once; verdict ids make the repeats recognisable).
"""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable

from rationanomaly.stream.records import OffsetRange


class LedgerError(ValueError):
    """A window held twice, or released without being held: a bookkeeping bug upstream."""


class OffsetLedger:
    """Pure bookkeeping for any number of partitions; not thread-safe."""

    def __init__(self) -> None:
        self._next: dict[int, int] = {}  # partition -> last seen offset + 1
        self._holds: dict[Hashable, tuple[tuple[int, int], ...]] = {}  # window -> ((partition, first), ...)
        self._counts: dict[int, dict[int, int]] = {}  # partition -> first offset -> windows holding it
        self._heaps: dict[int, list[int]] = {}  # partition -> held first offsets (lazy deletion)

    @property
    def in_flight(self) -> int:
        """Windows held (closed, verdict not yet released)."""
        return len(self._holds)

    def seen(self, partition: int, offset: int) -> None:
        if offset >= self._next.get(partition, 0):
            self._next[partition] = offset + 1

    def hold(self, window_id: Hashable, offsets: Iterable[OffsetRange]) -> None:
        if window_id in self._holds:
            raise LedgerError(f"window {window_id!r} is already held")
        pairs = tuple((r.partition, r.first) for r in offsets)
        for partition, first in pairs:
            counts = self._counts.setdefault(partition, {})
            held = counts.get(first, 0)
            counts[first] = held + 1
            if not held:
                heapq.heappush(self._heaps.setdefault(partition, []), first)
        self._holds[window_id] = pairs

    def release(self, window_id: Hashable) -> None:
        pairs = self._holds.pop(window_id, None)
        if pairs is None:
            raise LedgerError(f"window {window_id!r} is not held (released twice?)")
        for partition, first in pairs:
            counts = self._counts[partition]
            held = counts[first] - 1
            if held:
                counts[first] = held
            else:
                del counts[first]  # its heap entry goes when it reaches the top

    def committable(self, partition: int, open_min: int | None = None) -> int | None:
        """The offset to commit for `partition`: the smallest offset held by a window in flight
        or (via `open_min`) an open one, else last seen + 1. None: nothing seen yet."""
        low = self._next.get(partition)
        if low is None:
            return None
        heap = self._heaps.get(partition)
        if heap:
            counts = self._counts[partition]
            while heap and heap[0] not in counts:
                heapq.heappop(heap)
            if heap and heap[0] < low:
                low = heap[0]
        if open_min is not None and open_min < low:
            low = open_min
        return low

    def forget(self, partition: int) -> None:
        """A revoked partition: drop what it held, so a later owner of it starts clean.
        Windows spanning other partitions keep their holds there."""
        self._next.pop(partition, None)
        self._counts.pop(partition, None)
        self._heaps.pop(partition, None)
        for window_id, pairs in list(self._holds.items()):
            if any(p == partition for p, _ in pairs):
                self._holds[window_id] = tuple((p, first) for p, first in pairs if p != partition)

"""Whether a window partition silent for `input.idle_timeout_s` is at its end, or held back.

A read_committed consumer stops at a partition's last stable offset: the records of a
transaction still open are out of its sight for as long as it stays open. A member killed in
the middle of a transaction leaves one open on every repartition partition it forwarded to,
until the broker aborts it (the producer's transaction.timeout.ms, 60 s by default, checked
every 10 s) or a new producer with its transactional.id fences it. The lines committed after
it wait behind it. Closing the windows for that silence split them: the lines behind the
transaction formed second, partial windows: 315 of 1,782 blocks, when the scale-out test's
new member (which takes the killed one's transactional.id) was started 16 s after the kill.

So the windows of a silent partition close for idleness only once this member has met the
partition's end at the end the broker reports for the log itself (its high watermark, open
transactions included). Behind a dead member's transaction that is after the broker aborts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import structlog
from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

log = structlog.get_logger(__name__)


class LogEnds:
    """Asks the broker where the logs of silent partitions end, at most once per `recheck_s`."""

    def __init__(self, make_admin: Callable[[], AdminClient], topic: str, on_held: Callable[[int], None],
                 recheck_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._make_admin = make_admin
        self._admin = make_admin()
        self._on_held = on_held  # how many silent partitions are held, on each change
        self._topic = topic
        self._recheck_s = recheck_s
        self._clock = clock
        self._next_s = 0.0
        self._held: frozenset[int] = frozenset()

    def at_end(self, silent: list[int], ends_met: Mapping[int, int]) -> frozenset[int]:
        """Of the `silent` partitions, those whose end this member met (`ends_met`: partition ->
        offset of its last end-of-partition event) at the log's end. None of them between two
        asks, or when the broker does not answer: their windows stay open until it does."""
        if not silent:
            if self._held:
                self._change(frozenset(), {}, {}, ends_met)
            return frozenset()
        now = self._clock()
        if now < self._next_s:
            return frozenset()
        self._next_s = now + self._recheck_s
        latest = OffsetSpec.latest()
        wanted = [TopicPartition(self._topic, p) for p in silent]
        try:
            log_end = self._ends({tp: latest for tp in wanted}, IsolationLevel.READ_UNCOMMITTED)
            held = frozenset(p for p in silent if ends_met.get(p, -1) < log_end[p])
            stable = {}
            if held:
                asked = {TopicPartition(self._topic, p): latest for p in held}
                stable = self._ends(asked, IsolationLevel.READ_COMMITTED)
        except KafkaException as exc:
            log.info("log_end_check_deferred", topic=self._topic, error=exc.args[0].str())
            # After a broker restart, a client asking with the leader epochs it knew is refused for
            # good ("Leader epoch is older than broker epoch"); a new one looks them up afresh.
            self._admin = self._make_admin()
            return frozenset()
        if held != self._held:
            self._change(held, log_end, stable, ends_met)
        return frozenset(silent) - held

    def _change(self, held: frozenset[int], log_end: dict[int, int], stable: dict[int, int],
                ends_met: Mapping[int, int]) -> None:  # fmt: skip
        # Records past the last stable offset are a transaction still open: a member that died
        # in one holds every partition it wrote to until the broker aborts it.
        log.info("silent_partitions_held", topic=self._topic, partitions=sorted(held),
                 behind_open_transaction={p: log_end[p] - stable[p] for p in held if stable[p] < log_end[p]},
                 unread={p: stable[p] - ends_met.get(p, -1) for p in held
                         if ends_met.get(p, -1) < stable[p]})  # fmt: skip
        self._held = held
        self._on_held(len(held))

    def _ends(self, asked: dict[TopicPartition, OffsetSpec], isolation: IsolationLevel) -> dict[int, int]:
        futures = self._admin.list_offsets(asked, isolation_level=isolation, request_timeout=5)
        return {tp.partition: future.result().offset for tp, future in futures.items()}

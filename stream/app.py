"""The live detector: a Kafka consumer loop driving the pipeline, with backpressure and checkpoints.

Delivery is at-least-once without loss: an offset is committed only when every window holding
it has been published (and the producer has flushed), and the template miner's snapshot is
saved at that moment. Duplicates after a crash carry the same `verdict_id`. With
`output.exactly_once`, verdicts and offsets are committed in one Kafka transaction.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from dataclasses import dataclass

import structlog
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from rationanomaly.model.backends import Backend
from rationanomaly.stream import health
from rationanomaly.stream.broker_link import RETRIABLE_COMMIT, BrokerLink, BrokerRefused, is_refusal
from rationanomaly.stream.checkpoint import CheckpointError
from rationanomaly.stream.detector_state import DetectorState, KafkaState, LocalState
from rationanomaly.stream.engine import Engine, build_engine
from rationanomaly.stream.feedback import VerdictMemory
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.records import DeadLetter, SourceRef
from rationanomaly.stream import instance_slot, repartition
from rationanomaly.stream.repartition import RepartitionError, Rekeyer, read_headers, source_header
from rationanomaly.stream.kafka_log import with_client_log
from rationanomaly.stream.log_end import LogEnds
from rationanomaly.stream.settings import DetectorSettings, librdkafka_config
from rationanomaly.stream.state_topics import StateTopicError, partition_count
from rationanomaly.stream.sinks import MAX_MESSAGE_BYTES, DeliveryError, KafkaSink, Undelivered, routes_for

log = structlog.get_logger(__name__)

_REBALANCING = {
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError._ASSIGNMENT_LOST,
}


def window_group(group_id: str) -> str:
    """The consumer group of the repartition topic behind the hop; the input's is `group_id`."""
    return f"{group_id}-windows"


class BrokerUnreachable(RuntimeError):
    """No broker answered within `kafka.startup_timeout_s` of the start."""


@dataclass(frozen=True, slots=True)
class RunLimits:
    """Bounds for tests and batch jobs; a production run leaves them unset."""

    stop_at_eof: bool = False  # end of input = every assigned partition at its end
    max_seconds: float | None = None


class Detector:
    def __init__(
        self,
        settings: DetectorSettings,
        limits: RunLimits = RunLimits(),
        backend: Backend | None = None,
    ) -> None:
        self._settings = settings
        self._limits = limits
        self._stop = threading.Event()
        self._kafka = librdkafka_config(settings.kafka)
        self._backend = backend
        self._engine: Engine | None = None
        self.metrics = DetectorMetrics()
        self._consumer: Consumer | None = None  # the input topic's, in the group `kafka.group_id`
        # Behind the hop, windows form on a second consumer in its own group (`_windows`).
        self._window_consumer: Consumer | None = None
        self._admin: AdminClient | None = None  # the end-of-input and idle checks' offset lookups
        self._log_ends: LogEnds | None = None  # whether silent window partitions are at their end
        self._producer: Producer | None = None
        self._state: DetectorState | None = None  # checkpoints and shared caches (stream/detector_state.py)
        # Partitions of the topic windows form on (`_window_topic`: the input topic, or
        # `<group>-repartition` behind the hop) and, with the hop, of the input topic.
        self._window_topic = settings.input.topic
        self._assigned: set[int] = set()
        self._committed: dict[int, int] = {}
        self._rekeyer: Rekeyer | None = None  # the repartition hop (stream/repartition.py), when on
        self._hop_assigned: set[int] = set()
        self._hop_next: dict[int, int] = {}  # input partition -> last forwarded offset + 1
        self._hop_committed: dict[int, int] = {}
        self._hop_failures: list[str] = []
        # stop_at_eof behind the hop: the window partitions found read to the group's end, and when to look again
        self._forwarded_checked: frozenset[int] | None = None
        self._forwarded_check_at = 0.0
        self._eof_offset: dict[int, int] = {}  # window partition -> offset of its last end-of-partition event
        self._at_eof: set[tuple[str, int]] = set()
        # assigned, paused, offsets and state not yet taken (`_take_assigned`)
        self._pending: dict[tuple[str, int], TopicPartition] = {}
        self._pending_tries = 0
        self._pending_retry_at = 0.0
        self._paused = False
        self._closed = False
        self._transactional = settings.output.exactly_once
        self._slot: instance_slot.InstanceSlot | None = None  # held while running, for the transactional id
        self._link = BrokerLink()
        # monotonic times of the first line read and of the end of input, for throughput figures
        self.first_record_s: float | None = None
        self.finished_s: float | None = None

    def stop(self, *_: object) -> None:
        self._stop.set()

    def serve_metrics(self, port: int, addr: str = "0.0.0.0") -> int:
        """/metrics (Prometheus) and /health (stream/health.py) on `port`; returns the bound port."""
        bound = health.serve(self.metrics.registry, self.health, port, addr)
        log.info("metrics_serving", port=bound)
        return bound

    def health(self) -> dict[str, object]:
        """What /health reports: read from other threads, so plain values only."""
        worker = self._engine.worker if self._engine is not None else None
        model_away = bool(worker is not None and worker.holding)
        broker_reachable = self._link.reachable
        return {
            "status": "ok" if broker_reachable and not model_away else "degraded",
            "broker_reachable": broker_reachable,
            "model_away": model_away,
            "paused": self._paused,
            "partitions": sorted(self._assigned),
        }

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)

    # -- wiring ---------------------------------------------------------------------------
    def _make_clients(self) -> None:
        s = self._settings
        self._consumer_conf = consumer_conf = {
            **self._kafka,
            "group.id": s.kafka.group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "fetch.max.bytes": 8 * MAX_MESSAGE_BYTES,
        }
        if self._limits.stop_at_eof:
            # A partition's end is reported after a fetch that finds nothing, which the broker holds
            # for fetch.wait.max.ms (500 by default): a run that stops at the end asks sooner.
            consumer_conf.setdefault("fetch.wait.max.ms", 100)
        # Incremental rebalancing: a member keeps its partitions while others join or leave,
        # and only the moved ones stop (stream/README.md, "Rebalancing"). kafka.extra may override.
        consumer_conf.setdefault("partition.assignment.strategy", "cooperative-sticky")
        producer_conf = {
            **self._kafka,
            "enable.idempotence": True,
            "linger.ms": 20,
            "message.max.bytes": MAX_MESSAGE_BYTES,
            "compression.type": "zstd",
            # Every callback on this producer records failures only: a report per delivered
            # record was a Python call per forwarded line behind the hop, for nothing.
            "delivery.report.only.error": True,
        }
        if self._transactional:
            # One id per instance (KIP-447: the group metadata sent with the offsets fences a
            # zombie member, so the id need not follow partitions); the host name keeps it stable
            # across restarts, so a restarted instance aborts its own unfinished transaction at once.
            producer_conf["transactional.id"] = s.output.transactional_id or self._own_transactional_id()
        consumer_conf["error_cb"] = producer_conf["error_cb"] = self._link.on_error
        self._consumer = Consumer(with_client_log(consumer_conf))
        self._producer = Producer(with_client_log(producer_conf))
        self._await_broker()
        if self._transactional:
            self._producer.init_transactions(30)
            self._producer.begin_transaction()
        self._admin = self._new_admin()
        self._hop_inputs = 0  # input partitions feeding each window partition, behind the hop
        self._window_partitions: int | None = None  # the repartition topic's, behind the hop
        if repartition.hop_needed(s):
            self._open_hop()
        # VerdictMemory: a correction naming a verdict_id resolves to that verdict's templates
        sink = VerdictMemory(KafkaSink(self._producer, routes_for(s.output), s.output.dlq_topic))
        self._engine = build_engine(s, sink, backend=self._backend, metrics=self.metrics)
        self._engine.pipeline.upstream_partitions = self._hop_inputs
        if self._rekeyer is not None:  # a line this process forwards is not split again when read back
            self._engine.pipeline.hop_memo = self._rekeyer.share_splits()
        self._state = self._open_state(self._window_topic, self._window_partitions)
        self._log_ends = LogEnds(self._new_admin, self._window_topic, self.metrics.silent_held.set)

    def _new_admin(self) -> AdminClient:
        return AdminClient(with_client_log(self._kafka))

    def _own_transactional_id(self) -> str:
        """One per instance: the host name and this process's slot on the host (stream/instance_slot.py)."""
        s = self._settings
        slot_dir = instance_slot.host_dir()
        try:
            self._slot = instance_slot.claim(slot_dir, s.kafka.group_id)
        except OSError as exc:
            # Still correct for one process per host; a second one there would fence this one.
            log.warning("instance_slot_unavailable", dir=str(slot_dir), error=str(exc),
                        fix="set output.transactional_id per instance")  # fmt: skip
            return instance_slot.transactional_id(s.kafka.group_id, s.input.topic, socket.gethostname(), None)
        tx_id = instance_slot.transactional_id(s.kafka.group_id, s.input.topic, socket.gethostname(), self._slot.number)
        log.info("transactional_id", id=tx_id, slot=self._slot.number)
        return tx_id

    def _open_hop(self) -> None:
        """The repartition topic, created or checked, and the stage that re-keys into it."""
        s = self._settings
        inputs = self._input_partitions(s.input.topic)
        if inputs == 1 and s.input.repartition_partitions is None:
            # One input partition holds every window whole already: the hop would only copy it.
            log.info("repartition_hop_skipped", input=s.input.topic, reason="the input topic has one partition")
            return
        repartition.check_supported(s)
        partitions = s.input.repartition_partitions or inputs
        name = repartition.topic_name(s.kafka.group_id)
        # Its count from here, not from metadata: the topic just made may not be in it yet, and a
        # guess of 1 made the state topics with 1 partition (a second member then refused them).
        self._window_partitions = repartition.ensure_topic(self._admin, name, partitions,
                                                           s.input.repartition_retention_ms)  # fmt: skip
        self._window_topic = name
        self._rekeyer = Rekeyer(s)
        self._hop_inputs = inputs
        # A group of its own for the repartition topic: in one group, the assignor balances the
        # partitions of both topics together, and one member could take every input partition and
        # another every window partition (seen in 2 of 5 two-member runs: one did all the windows).
        # Each group balances its own topic; both commit in the same transaction (`_commit`).
        group = window_group(s.kafka.group_id)
        self._window_consumer = Consumer(with_client_log({**self._consumer_conf, "group.id": group}))
        log.info("repartition_hop", input=s.input.topic, topic=name, partitions=partitions, window_group=group)

    @property
    def _windows(self) -> Consumer:
        """The consumer windows form on: of the repartition topic behind the hop, else the input's."""
        return self._window_consumer if self._window_consumer is not None else self._consumer

    def _open_state(self, consumed_topic: str, partitions: int | None) -> DetectorState:
        """Checkpoints for the partitions of `consumed_topic` (the topic windows form on), and the
        shared template-verdict cache, read to its end before the first line."""
        s = self._settings
        if s.state.store == "local":
            return LocalState(s, consumed_topic)
        if partitions is None:
            partitions = self._input_partitions(consumed_topic)
        return KafkaState(s, self._kafka, self._producer, self._engine, consumed_topic, partitions)

    def _input_partitions(self, topic: str) -> int:
        """The input topic's partition count, which the repartition and state topics take: waited
        for while the topic is not there yet. A guess of 1 made state topics too small for a topic
        created later, and every member then refused them. As Kafka Streams stops on a missing
        source topic, this stops once kafka.startup_timeout_s has passed."""
        wait_s = self._settings.kafka.startup_timeout_s
        metadata = self._consumer.list_topics(topic, timeout=10).topics
        meta = metadata.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            log.warning("waiting_for_input_topic", topic=topic, gives_up_after_s=wait_s)
        count = partition_count(self._consumer, metadata, topic, wait_s, stop=self._stop)
        if not count:
            raise StateTopicError(
                f"the input topic {topic} does not exist (waited {wait_s:g}s, kafka.startup_timeout_s): "
                "create it first; the detector's state topics take its partition count"
            )
        return count

    def _await_broker(self) -> None:
        """Wait for a broker to answer metadata; a clear message while waiting, then give up."""
        s = self._settings
        started = time.monotonic()
        while True:
            try:
                self._consumer.list_topics(s.input.topic, timeout=5.0)
            except KafkaException as exc:
                # A refused login or handshake reaches only error_cb, served by poll: a wrong
                # password must end the start at once, not after the whole wait.
                if is_refusal(exc.args[0]):
                    self._link.on_error(exc.args[0])
                self._consumer.poll(0)
                self._producer.poll(0)
                self._link.check()
                waited = time.monotonic() - started
                log.warning("waiting_for_broker", bootstrap=s.kafka.bootstrap_servers, waited_s=round(waited, 1),
                            gives_up_after_s=s.kafka.startup_timeout_s, error=exc.args[0].str())  # fmt: skip
                if waited >= s.kafka.startup_timeout_s:
                    raise BrokerUnreachable(
                        f"no Kafka broker answered at {s.kafka.bootstrap_servers} within "
                        f"{s.kafka.startup_timeout_s:g}s (kafka.startup_timeout_s): {exc.args[0].str()}"
                    ) from exc
                if self._stop.wait(1.0):
                    raise BrokerUnreachable("stopped while waiting for a broker") from exc
                continue
            self._link.heard_from_broker()
            return

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Nothing that waits on the broker may run here: the group's rebalance waits for this
        # callback, and a committed-offsets fetch made from it can stall until its timeout (seen
        # for minutes with two members starting together). So the partitions are assigned paused,
        # and `_take_assigned` fetches their offsets and restores their state from the loop.
        if partitions:
            consumer.incremental_assign(partitions)
            consumer.pause(partitions)
        for tp in partitions:
            self._at_eof.discard((tp.topic, tp.partition))
            self._pending[(tp.topic, tp.partition)] = TopicPartition(tp.topic, tp.partition)
        self._pending_retry_at = 0.0
        log.info("partitions_assigned", added=sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions),
                 partitions=sorted(self._assigned), forwarding=sorted(self._hop_assigned))  # fmt: skip

    def _take_assigned(self) -> None:
        """Newly assigned partitions, still paused: their committed offsets, their checkpoints,
        then resume. A retriable failure leaves them paused until the next try; the loop goes on
        polling meanwhile, which is what lets a rebalance in progress finish."""
        if not self._pending or time.monotonic() < self._pending_retry_at:
            return
        by_consumer: dict[int, tuple[Consumer, list[TopicPartition]]] = {}
        for tp in self._pending.values():
            consumer = self._windows if tp.topic == self._window_topic else self._consumer
            by_consumer.setdefault(id(consumer), (consumer, []))[1].append(tp)
        for consumer, pending in by_consumer.values():
            try:
                committed = consumer.committed(pending, timeout=5)
            except KafkaException as exc:
                # e.g. right after a broker restart, the coordinator is still loading its offsets
                if exc.args[0].code() not in RETRIABLE_COMMIT:
                    raise
                self._pending_tries += 1
                self._pending_retry_at = time.monotonic() + min(5.0, 0.5 * 2 ** (self._pending_tries - 1))
                log.info("committed_offsets_retry", error=exc.args[0].str(), attempt=self._pending_tries,
                         partitions=sorted(f"{tp.topic}[{tp.partition}]" for tp in pending))  # fmt: skip
                continue
            for tp in committed:
                self._pending.pop((tp.topic, tp.partition), None)
            self._take(consumer, committed)
        if not self._pending:
            self._pending_tries = 0

    def _take(self, consumer: Consumer, committed: list[TopicPartition]) -> None:
        windows = False
        for tp in committed:
            if tp.topic != self._window_topic:  # an input partition, forwarded through the hop
                self._hop_assigned.add(tp.partition)
                self._hop_committed[tp.partition] = tp.offset if tp.offset != OFFSET_INVALID else -1
                self._hop_next.pop(tp.partition, None)
                continue
            windows = True
            self._assigned.add(tp.partition)
            self._committed[tp.partition] = tp.offset if tp.offset != OFFSET_INVALID else -1
            if tp.offset == OFFSET_INVALID:
                continue  # nothing committed: the partition starts from its beginning, fresh
            try:
                checkpoint = self._state.restore(tp.partition)
            except (CheckpointError, StateTopicError):
                # Templates keep their ids (content hashes) without it; windows published before the
                # commit may be published again, partial: say so loudly rather than stop the group.
                log.exception("checkpoint_restore_failed", partition=tp.partition)
                continue
            if checkpoint is not None:
                if checkpoint.offset != tp.offset:
                    log.warning("checkpoint_offset_differs", partition=tp.partition, committed=tp.offset,
                                checkpoint=checkpoint.offset)  # fmt: skip
                self._engine.pipeline.restore(tp.partition, checkpoint)
        if windows:
            self._state.caught_up()  # the group's verdicts so far, before this partition's lines
            self._state.owned(self._assigned)  # the templates this member judges for the group
        if not self._paused:  # held back for backpressure: `_backpressure` resumes them with the rest
            consumer.resume(committed)
        log.info("partitions_taken", partitions=sorted(self._assigned), forwarding=sorted(self._hop_assigned))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        judge = self._engine.judge
        routed = (judge.owners is not None and not self._closed
                  and any(tp.topic == self._window_topic for tp in partitions))  # fmt: skip
        # Their templates' next owner reads the cache topic when it takes them: the answers of a
        # model call in flight here go out first (in this commit), not after it judged them again.
        with judge.between_model_calls(self._settings.judging.handover_wait_s if routed else 0.0) as idle:
            if routed and not idle:
                log.warning("handover_without_model_answers", waited_s=self._settings.judging.handover_wait_s)
            try:
                if not self._closed:  # on close the final commit has already been made
                    if routed:
                        self._state.flush(5.0)  # the answers, and the served requests' tombstones
                    self._commit(final=False)
            except (KafkaException, RuntimeError):
                log.exception("commit_on_revoke_failed")
            self._release(partitions)
        log.info("partitions_revoked", removed=sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The group took the partitions while this member was away (session timeout): a commit
        would fail, and their next owner may already be reading them. Drop them, publish nothing."""
        self._release(partitions)
        log.warning("partitions_lost", removed=sorted(f"{tp.topic}[{tp.partition}]" for tp in partitions))

    def _release(self, partitions: list[TopicPartition]) -> None:
        """Forget revoked or lost partitions: open windows and windows still with the model are
        dropped (pipeline.drop), so nothing of them is published from here any more."""
        for tp in partitions:
            self._at_eof.discard((tp.topic, tp.partition))
            self._pending.pop((tp.topic, tp.partition), None)
            if tp.topic != self._window_topic:
                self._hop_assigned.discard(tp.partition)
                self._hop_next.pop(tp.partition, None)
                self._hop_committed.pop(tp.partition, None)
                continue
            self._assigned.discard(tp.partition)
            self._committed.pop(tp.partition, None)
            self._eof_offset.pop(tp.partition, None)
            self._engine.pipeline.drop(tp.partition)
        if self._state is not None:
            self._state.owned(self._assigned)  # its templates' next judge is the partitions' next owner

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> int:
        try:
            self._make_clients()
        except (BrokerRefused, BrokerUnreachable, StateTopicError, RepartitionError) as exc:
            log.error("detector_stopped", error=str(exc))
            for consumer in self._consumers():
                consumer.close()
            self._release_slot()
            return 2
        s = self._settings
        consumer, engine = self._consumer, self._engine
        pipeline = engine.pipeline
        # Behind the hop the input's consumer only forwards, and windows form on the other consumer.
        windows = self._window_consumer
        batch, wait = s.input.poll_batch, s.input.poll_timeout_s
        waiter = windows or consumer
        for c, topic in ((consumer, s.input.topic), (windows, self._window_topic)):
            if c is not None:
                c.subscribe([topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost)
        started = time.monotonic()
        last_commit = started
        log.info("detector_started", topic=s.input.topic, group=s.kafka.group_id, model=engine.identity.model_id)
        link = self._link
        try:
            while not self._stop.is_set():
                # What is ready now, without waiting: `consume` hands over a part of a batch only at
                # its timeout, so waiting for a whole batch idled out the timeout whenever fewer lines
                # were ready: at every end of input, and whenever lines come slower than that.
                messages = consumer.consume(batch, 0.0)
                if windows is not None:
                    window_messages = windows.consume(batch, 0.0)
                    if window_messages:
                        messages = messages + window_messages if messages else window_messages
                if not messages:  # nothing ready: wait for the first line, not for a whole batch
                    messages = waiter.consume(1, wait)
                link.check()
                self._take_assigned()
                now = time.time()
                if messages:
                    link.heard_from_broker()
                    # a line, not an end-of-partition event: behind the hop the empty repartition
                    # topic reports its ends while the input's group is still forming
                    if self.first_record_s is None and any(m.error() is None for m in messages):
                        self.first_record_s = time.monotonic()
                lines_before = pipeline.lines
                # the hot loop: locals, and no per-message work that a batch can do once
                feed, at_eof, topic, hop = pipeline.feed, self._at_eof, self._window_topic, self._rekeyer
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            at_eof.add((msg.topic(), msg.partition()))
                            if msg.topic() == topic:
                                self._eof_offset[msg.partition()] = msg.offset()
                            elif hop is not None and msg.partition() in self._hop_assigned:
                                # every line before it is forwarded: commit the end itself, past any
                                # transaction markers, so the group sees this input partition done
                                p = msg.partition()
                                self._hop_next[p] = max(self._hop_next.get(p, 0), msg.offset())
                        elif err.fatal():
                            raise KafkaException(err)
                        else:
                            link.on_error(err)
                        continue
                    partition = msg.partition()
                    if at_eof:
                        at_eof.discard((msg.topic(), partition))
                    ts = msg.timestamp()[1]
                    if hop is None:
                        feed(msg.value(), msg.key(), SourceRef(topic, partition, msg.offset()), ts if ts > 0 else None, now)
                    elif msg.topic() != topic:
                        self._forward(msg, ts if ts > 0 else None)
                    else:
                        offset = msg.offset()
                        key, upstream = read_headers(msg.headers())
                        window_key = msg.key().decode("utf-8", "replace") if msg.key() is not None else None
                        feed(msg.value(), key, SourceRef(topic, partition, offset), ts if ts > 0 else None, now,
                             only_key=window_key, upstream=upstream)  # fmt: skip
                if hop is not None:
                    self._producer.poll(0)  # failed deliveries of forwarded lines
                if pipeline.lines != lines_before:
                    self.metrics.lines.inc(pipeline.lines - lines_before)
                quiet = frozenset()
                if not self._paused and link.reachable:
                    quiet = self._log_ends.at_end(pipeline.silent_partitions(now), self._eof_offset)
                pipeline.advance(now, idle=not self._paused, quiet=quiet)
                # Asked once per round: behind the hop the answer can turn true between two asks
                # (the group check runs at most twice a second), and a second ask that ended the
                # run found nothing in flight because the first had not let `finish` close the
                # windows (seen: 2 lines read, 0 verdicts published, exit 0).
                at_end = self._eof_reached()
                if at_end:
                    # Close what is open, then keep polling while the model finishes: blocking
                    # here would outlast max.poll.interval.ms and cost the group membership.
                    pipeline.finish()
                pipeline.publish(int(now * 1000))
                self._state.poll()
                self._backpressure()
                mono = time.monotonic()
                if mono - last_commit >= s.checkpoint.interval_s or (
                    hop is not None and mono - last_commit >= 0.2 and self._forwarded_to_end()
                ):
                    self._commit(final=False)
                    self._report_lag()
                    last_commit = mono
                if at_end and pipeline.in_flight == 0:
                    self.finished_s = time.monotonic()
                    log.info("end_of_input", lines=pipeline.lines, verdicts=pipeline.verdicts)
                    break
                if self._limits.max_seconds is not None and mono - started > self._limits.max_seconds:
                    log.warning("run_time_limit_reached", seconds=self._limits.max_seconds)
                    break
            self._commit(final=True)
        except (KafkaException, DeliveryError) as exc:
            # Nothing past the last commit is lost: a restart re-reads from there.
            log.error("detector_failed", error=str(exc), committed=self._committed)
            return 1
        except (BrokerRefused, BrokerUnreachable) as exc:
            log.error("detector_stopped", error=str(exc))
            return 2
        finally:
            self._closed = True
            self._state.close()
            engine.close()
            for c in self._consumers():
                c.close()
            self._release_slot()
        return 0

    def _consumers(self) -> list[Consumer]:
        return [c for c in (self._window_consumer, self._consumer) if c is not None]

    def _release_slot(self) -> None:
        if self._slot is not None:
            self._slot.release()
            self._slot = None

    def _forward(self, msg, timestamp_ms: int | None) -> None:
        """The hop: one input line to the repartition topic, once per window key it names."""
        partition, offset, value, key = msg.partition(), msg.offset(), msg.value(), msg.key()
        # plain fields, no records per line: the SourceRef is made only for a dead letter
        keys = self._rekeyer.keys_at(value, key, partition, offset, timestamp_ms)
        if keys.__class__ is DeadLetter:
            self._engine.pipeline.dead(keys)
        elif keys:
            source = (repartition.HEADER_SOURCE, source_header(partition, offset))
            headers = [source] if key is None else [source, (repartition.HEADER_KEY, key)]
            produce, topic = self._producer.produce, self._window_topic
            for window_key in keys:  # a str key: the client encodes it (UTF-8), as .encode() did
                while True:
                    try:
                        produce(topic, value, window_key, headers=headers,
                                timestamp=timestamp_ms or 0, on_delivery=self._forwarded)  # fmt: skip
                        break
                    except BufferError:
                        self._producer.poll(0.1)
            # lines forwarded after the group's end was found: it must be found again, past them
            self._forwarded_checked = None
        self._hop_next[partition] = offset + 1

    def _forwarded(self, err, msg) -> None:  # librdkafka calls this from poll()/flush(), on failure only
        self._hop_failures.append(f"{msg.topic()}: {err}")

    def _eof_reached(self) -> bool:
        if not self._limits.stop_at_eof or not self._assigned or self._pending:
            return False
        at_eof, topic = self._at_eof, self._window_topic
        if not all((topic, p) in at_eof for p in self._assigned):
            return False
        if self._rekeyer is None:
            return True
        # Behind the hop the input must be at its end too, and every forwarded line delivered:
        # the group check then reads ends that hold this member's lines, and finds them read.
        if not all((self._settings.input.topic, p) in at_eof for p in self._hop_assigned) or len(self._producer):
            return False
        return self._group_forwarded_all()

    def _forwarded_to_end(self) -> bool:
        """Stopping at the end behind the hop: this member's input partitions are all forwarded to
        their end and not yet committed there. The group's end waits for that commit
        (`_group_forwarded_all`), so it is made at once, not at the next checkpoint interval."""
        if not self._limits.stop_at_eof or not self._hop_assigned or self._pending:
            return False
        at_eof, source, nxt, committed = self._at_eof, self._settings.input.topic, self._hop_next, self._hop_committed
        return all((source, p) in at_eof for p in self._hop_assigned) and any(
            nxt.get(p, -1) > committed.get(p, -1) for p in self._hop_assigned
        )

    def _group_forwarded_all(self) -> bool:
        """Behind the hop a member's own partitions say nothing of lines other members are still
        forwarding to it: its end is when the group has committed every input partition to its
        end (every line on the repartition topic) and this member has read its window partitions
        to their end after that. Ending sooner closed windows whose last lines were on their way,
        and their next owner published the rest as a second, partial window."""
        assigned = frozenset(self._assigned)
        if self._forwarded_checked == assigned:
            return True
        mono = time.monotonic()
        if mono < self._forwarded_check_at:
            return False
        self._forwarded_check_at = mono + 0.5  # broker round trips: at most twice a second
        source, windows = self._settings.input.topic, self._window_topic
        inputs = [TopicPartition(source, p) for p in range(self._hop_inputs)]
        try:
            committed = self._consumer.committed(inputs, timeout=5)
            # every end in one request per broker (one request per partition took ~0.2 s each)
            latest = OffsetSpec.latest()
            asked = self._admin.list_offsets({tp: latest for tp in inputs + [TopicPartition(windows, p) for p in assigned]},
                                             request_timeout=5)  # fmt: skip
            ends = {(tp.topic, tp.partition): future.result().offset for tp, future in asked.items()}
            # An input partition is done once committed at its end: a member at an input
            # partition's end commits that end, an empty partition's too (`_forwarded_to_end`).
            if any(tp.offset < ends[(source, tp.partition)] for tp in committed):
                return False
            # The offset the partition's end was met at, not the last record's: in exactly-once
            # mode transaction markers follow the records, and the end is past them.
            if any(self._eof_offset.get(p, -1) < ends[(windows, p)] for p in assigned):
                return False
        except KafkaException as exc:
            log.info("end_of_input_check_deferred", error=exc.args[0].str())
            self._admin = self._new_admin()  # one refused after a broker restart stays refused (log_end.py)
            return False
        self._forwarded_checked = assigned
        return True

    def _backpressure(self) -> None:
        worker = self._engine.worker
        depth, holding = worker.depth, worker.holding
        j = self._settings.judging
        # A circuit breaker too: while windows wait for a model that is away, new input would
        # only pile up behind them; lag grows instead, and resumes draining when it answers.
        overloaded = not self._paused and (depth >= j.queue_max or holding)
        if overloaded and (held := [(c, a) for c in self._consumers() if (a := c.assignment())]):
            for consumer, assignment in held:
                consumer.pause(assignment)
            self._paused = True
            self._engine.metrics.paused.set(1)
            self._engine.metrics.pauses.inc()
            log.info("partitions_paused", queue_depth=depth, model_away=holding)
        elif self._paused and depth <= j.queue_low and not holding:
            pending = self._pending
            for consumer in self._consumers():
                consumer.resume([tp for tp in consumer.assignment() if (tp.topic, tp.partition) not in pending])
            self._paused = False
            self._engine.metrics.paused.set(0)
            log.info("partitions_resumed", queue_depth=depth)

    def _commit(self, final: bool) -> None:
        """Flush verdicts, snapshot the miners, then commit the oldest offsets still needed."""
        pipeline = self._engine.pipeline
        if not self._transactional:
            # While the brokers are away the verdicts wait in the producer's queue: the commit
            # waits with them (the loop goes on polling), rather than ending the run.
            try:
                self._engine.sink.flush(30.0 if final else 5.0)
            except Undelivered as exc:
                if final:
                    raise
                log.info("commit_deferred", reason=str(exc), broker_reachable=self._link.reachable)
                return
        if self._hop_failures:
            failures, self._hop_failures = self._hop_failures, []
            raise DeliveryError("forwarding to the repartition topic failed: " + "; ".join(failures[:5]))
        offsets = []
        topic = self._window_topic
        # Input offsets behind the hop: every line below them was forwarded, and (flushed above,
        # or in this transaction) is on the repartition topic for good.
        hop_offsets = [
            TopicPartition(self._settings.input.topic, p, nxt)
            for p in sorted(self._hop_assigned)
            if (nxt := self._hop_next.get(p)) is not None and nxt > self._hop_committed.get(p, -1)
        ]
        for partition in sorted(self._assigned):
            offset = pipeline.committable(partition)
            if offset is None or offset <= self._committed.get(partition, -1):
                continue
            self._state.save(partition, pipeline.checkpoint(partition, offset))
            offsets.append(TopicPartition(topic, partition, offset))
        if offsets and not self._transactional and not self._state.flush(30.0 if final else 5.0):
            if final:
                raise DeliveryError("checkpoints not delivered to the changelog topic")
            log.info("commit_deferred", reason="checkpoints not delivered", broker_reachable=self._link.reachable)
            return
        window_offsets = offsets
        if self._transactional:
            # Behind the hop, two groups' offsets in one transaction, each with its own group's
            # metadata: the coordinator of each fences that group's zombie members (KIP-447).
            for consumer, group_offsets in ((self._windows, window_offsets), (self._consumer, hop_offsets)):
                if group_offsets:
                    self._producer.send_offsets_to_transaction(group_offsets, consumer.consumer_group_metadata(), 30)
            self._producer.commit_transaction(30)
            if not final:
                self._producer.begin_transaction()
        else:
            if window_offsets and not self._commit_offsets(self._windows, window_offsets):
                window_offsets = []
            if hop_offsets and not self._commit_offsets(self._consumer, hop_offsets):
                hop_offsets = []
        offsets = window_offsets + hop_offsets
        if offsets:
            self._link.heard_from_broker()
        for tp in window_offsets:
            self._committed[tp.partition] = tp.offset
        for tp in hop_offsets:
            self._hop_committed[tp.partition] = tp.offset
        if hop_offsets:
            self._forwarded_check_at = 0.0  # the group's end may be this commit: ask again at once
        if window_offsets:
            self._engine.save_cache()
        if offsets:
            log.debug("offsets_committed", offsets={f"{tp.topic}[{tp.partition}]": tp.offset for tp in offsets})

    def _commit_offsets(self, consumer: Consumer, offsets: list[TopicPartition]) -> bool:
        """At-least-once: one group's offsets; False when the commit is left for a later try."""
        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() in RETRIABLE_COMMIT:
                log.info("commit_deferred", reason=exc.args[0].str(), broker_reachable=self._link.reachable)
                return False
            if exc.args[0].code() not in _REBALANCING:
                raise
            # The group moved on (a rebalance, or this member timed out): nothing is lost,
            # the partition's next owner re-reads from the last commit that did succeed.
            log.warning("commit_skipped", error=str(exc.args[0]))
            return False
        return True

    def _report_lag(self) -> None:
        topic, windows = self._window_topic, self._windows
        for partition in self._assigned:
            tp = TopicPartition(topic, partition)
            try:
                _, high = windows.get_watermark_offsets(tp, cached=True)
                (position,) = windows.position([tp])
            except KafkaException:
                continue
            if high >= 0 and position.offset >= 0:
                self._engine.metrics.consumer_lag.labels(str(partition)).set(high - position.offset)

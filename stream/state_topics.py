"""The detector's state, kept in compacted Kafka topics rather than on one machine's disk.

Kafka Streams keeps a store's state in a compacted changelog topic and rebuilds it, on whichever
instance is assigned the partition, by reading that topic to its end; this module does the same
for the detector's three kinds of state (stream/README.md, "State topics"):

- `<group>-checkpoints`: per consumed partition, the Drain3 snapshot and the windows already
  published (stream/checkpoint.py, `CheckpointLog`), in the changelog partition of the same number;
- `<group>-template-verdicts`: the template-verdict cache, keyed by (decision identity, template id);
- `<group>-corrections`: operator corrections by template id (stream/feedback.py).

Compaction keeps the latest record of each key for ever, so a topic here is the store itself.
Topics are created with their configs when missing; an existing topic whose configs would lose
state (say `cleanup.policy=delete`) is refused with one error naming the fix, never used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from rationanomaly.stream.kafka_log import with_client_log

log = structlog.get_logger(__name__)

# A checkpoint larger than this (compressed) is written as several chunk records; the topic's
# max.message.bytes leaves room for the record's key and headers on top.
CHUNK_BYTES = 512 * 1024
STATE_MAX_MESSAGE_BYTES = 2 * 1024 * 1024


class StateTopicError(RuntimeError):
    """A state topic cannot be used as it is (wrong configs, too few partitions, unreadable)."""


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A state topic: what it is made with, and which of its configs must hold on an existing one."""

    name: str
    partitions: int
    purpose: str  # for error messages: what would go wrong with the wrong configs
    replication_factor: int = -1  # the broker's default.replication.factor
    configs: dict[str, str] = field(default_factory=dict)

    def problems(self, partitions: int, configs: dict[str, str]) -> list[str]:
        """What about an existing topic would lose or refuse state; empty when it is usable."""
        found: list[str] = []
        policy = configs.get("cleanup.policy", "")
        if policy != "compact":
            # `delete` (or `compact,delete`) throws away the latest state of idle keys after
            # retention.ms: a partition untouched for a week would restart from nothing.
            found.append(f"cleanup.policy={policy or '?'} (needs compact)")
        wanted_bytes = int(self.configs.get("max.message.bytes", "0"))
        have_bytes = int(configs.get("max.message.bytes", "0") or 0)
        if wanted_bytes and have_bytes < wanted_bytes:
            found.append(f"max.message.bytes={have_bytes} (needs at least {wanted_bytes})")
        if partitions < self.partitions:
            found.append(f"{partitions} partitions (needs at least {self.partitions})")
        return found


def state_topic(name: str, partitions: int, purpose: str, replication_factor: int = -1) -> TopicSpec:
    return TopicSpec(
        name=name,
        partitions=max(1, partitions),
        purpose=purpose,
        replication_factor=replication_factor,
        configs={
            "cleanup.policy": "compact",
            "max.message.bytes": str(STATE_MAX_MESSAGE_BYTES),
            # Compaction may rewrite a segment only once its records are this old: a restore that
            # reads while the cleaner runs still sees every key's latest record, and a burst of
            # checkpoints costs the cleaner little. Correctness never depends on it.
            "min.compaction.lag.ms": "60000",
            "min.cleanable.dirty.ratio": "0.1",
            "segment.ms": "3600000",  # the active segment is never compacted: roll it hourly
        },
    )


def ensure_topics(admin: AdminClient, specs: Iterable[TopicSpec], timeout_s: float = 30.0) -> list[str]:
    """Create the missing topics; check the existing ones. Returns the names created.

    Raises StateTopicError naming every unusable topic and how to fix it.
    """
    specs = list(specs)
    metadata = admin.list_topics(timeout=timeout_s).topics
    missing = [s for s in specs if s.name not in metadata]
    created: list[str] = []
    if missing:
        futures = admin.create_topics(
            [NewTopic(s.name, num_partitions=s.partitions, replication_factor=s.replication_factor, config=s.configs)
             for s in missing],
            operation_timeout=timeout_s,
        )  # fmt: skip
        for name, future in futures.items():
            try:
                future.result(timeout_s)
                created.append(name)
                log.info("state_topic_created", topic=name, configs=next(s.configs for s in missing if s.name == name))
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # another instance won the race
                    raise StateTopicError(f"cannot create state topic {name}: {exc.args[0].str()}") from exc
        metadata = admin.list_topics(timeout=timeout_s).topics
    existing = [s for s in specs if s.name not in created]
    errors: list[str] = []
    if existing:
        resources = [ConfigResource(ConfigResource.Type.TOPIC, s.name) for s in existing]
        for spec, resource in zip(existing, resources, strict=True):
            configs = describe_topic(admin, resource, timeout_s)
            partitions = partition_count(admin, metadata, spec.name, timeout_s)
            problems = spec.problems(partitions, configs)
            if problems:
                errors.append(f"{spec.name} ({spec.purpose}): {', '.join(problems)}")
    if errors:
        raise StateTopicError(
            "state topics with the wrong configs: "
            + "; ".join(errors)
            + ". Fix them (kafka-configs --alter --entity-type topics --entity-name NAME --add-config "
            "cleanup.policy=compact,max.message.bytes=2097152; more partitions with kafka-topics --alter), "
            "or name other topics in the `state` settings section (`<group>-judge-requests` has no "
            "setting: its requests are transient, so it may be deleted and is made again at start)"
        )
    return created


def ensure_plain_topic(admin: AdminClient, name: str, replication_factor: int, timeout_s: float) -> None:
    """Create an input topic of the detector's own (the feedback topic) with the broker's defaults."""
    if name in admin.list_topics(timeout=timeout_s).topics:
        return
    future = admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=replication_factor)],
                                 operation_timeout=timeout_s)[name]  # fmt: skip
    try:
        future.result(timeout_s)
        log.info("topic_created", topic=name)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise StateTopicError(f"cannot create topic {name}: {exc.args[0].str()}") from exc


def partition_count(admin: AdminClient | Consumer, metadata: dict, name: str, timeout_s: float,
                    stop: threading.Event | None = None) -> int:  # fmt: skip
    """The topic's partition count, waited for up to `timeout_s` (or until `stop` is set); 0 when
    it is still not there."""
    # A topic another instance made a moment ago (it won the creation race) can show in the
    # metadata with no partitions yet: wait for them rather than refuse the topic as too small.
    meta = metadata.get(name)
    deadline = time.monotonic() + timeout_s
    while meta is None or meta.error is not None or not meta.partitions:
        if time.monotonic() > deadline:
            return 0
        if stop is None:
            time.sleep(0.2)
        elif stop.wait(0.2):
            return 0
        meta = admin.list_topics(name, timeout=timeout_s).topics.get(name)
    return len(meta.partitions)


def describe_topic(admin: AdminClient, resource: ConfigResource, timeout_s: float) -> dict[str, str]:
    # A topic made a moment ago (by another instance, or just now) may not be known yet to the
    # broker answering: that is a wait, not an error.
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            entries = admin.describe_configs([resource], request_timeout=timeout_s)[resource].result(timeout_s)
            return {name: entry.value for name, entry in entries.items()}
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART or time.monotonic() > deadline:
                raise StateTopicError(f"cannot read the configs of state topic {resource.name}: {exc.args[0].str()}") from exc
            time.sleep(0.5)


def reader_config(kafka: dict[str, str], group_id: str) -> dict[str, object]:
    """A consumer that only reads assigned partitions: no subscription, nothing committed
    (group.id is required by the client but never joins a group)."""
    return with_client_log(
        {
            **kafka,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "fetch.max.bytes": 4 * STATE_MAX_MESSAGE_BYTES,
        }
    )


def read_to_end(consumer: Consumer, topic: str, partitions: Iterable[int], timeout_s: float) -> list[Message]:
    """Every record of the given partitions, from the beginning to their current end.

    The end is where the consumer reports end-of-partition (under read_committed, the last stable
    offset: an open transaction of a dead producer holds it back until the transaction times out).
    Raises StateTopicError when `timeout_s` passes first.
    """
    wanted = sorted(set(partitions))
    records: list[Message] = []
    pending = set()
    for p in wanted:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        if high > low:
            pending.add(p)
    if not pending:
        return records
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(pending)])
    deadline = time.monotonic() + timeout_s
    try:
        while pending:
            if time.monotonic() > deadline:
                raise StateTopicError(
                    f"{topic} partitions {sorted(pending)} not read to their end within {timeout_s:g}s "
                    "(state.restore_timeout_s); an open transaction of a dead producer holds the end "
                    "back until transaction.timeout.ms"
                )
            for msg in consumer.consume(1000, 0.5):
                err = msg.error()
                if err is None:
                    records.append(msg)
                elif err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                elif err.fatal():
                    raise StateTopicError(f"reading {topic}: {err.str()}")
    finally:
        consumer.unassign()
    return records


def latest_by_key(records: Iterable[Message]) -> dict[bytes, bytes]:
    """A compacted topic's table: each key's latest value; a tombstone (no value) deletes it."""
    table: dict[bytes, bytes] = {}
    for msg in records:
        key = msg.key()
        if key is None:
            continue
        value = msg.value()
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return table


class CompactedTable:
    """Follows one compacted topic, every partition, on a consumer of its own: `catch_up` reads to
    the end (at start, and when partitions are assigned); `poll` takes what arrived since, without
    waiting. Each record goes to `on_record(key, value)` in topic order."""

    def __init__(self, consumer: Consumer, topic: str, on_record: Callable[[bytes, bytes | None], None]) -> None:
        self._consumer = consumer
        self._topic = topic
        self._on_record = on_record
        self._started = False
        self._partitions: list[int] = []
        self._eof_at: dict[int, int] = {}  # partition -> its end when last reached; absent: not at its end
        self.records = 0

    def _start(self, timeout_s: float) -> list[int]:
        # A topic created a moment ago may not be in this client's metadata yet: wait for it.
        deadline = time.monotonic() + timeout_s
        while True:
            meta = self._consumer.list_topics(self._topic, timeout=timeout_s).topics.get(self._topic)
            if meta is not None and meta.error is None and meta.partitions:
                break
            if time.monotonic() > deadline:
                raise StateTopicError(f"state topic {self._topic} is missing")
            time.sleep(0.2)
        partitions = sorted(meta.partitions)
        self._partitions = partitions
        self._consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in partitions])
        self._started = True
        return partitions

    def catch_up(self, timeout_s: float) -> int:
        """Read to the current end; returns how many records were applied.

        The first call raises StateTopicError when the end is not reached within `timeout_s`.
        Later calls (on assignment) read what arrived since and give up after a few seconds with
        a warning: the table keeps following the topic in `poll` anyway, and a transaction marker
        at the end (exactly-once mode) can move the end without a new end-of-partition event.
        """
        before = self.records
        if not self._started:
            pending = set(self._start(timeout_s))
            limit_s, strict = timeout_s, True
        else:
            pending = set()
            for p in self._partitions:
                _, high = self._consumer.get_watermark_offsets(TopicPartition(self._topic, p), timeout=timeout_s)
                end = self._eof_at.get(p)
                if end is None or end < high:
                    pending.add(p)
            limit_s, strict = min(timeout_s, 5.0), False
        deadline = time.monotonic() + limit_s
        while pending:
            if time.monotonic() > deadline:
                if strict:
                    raise StateTopicError(f"{self._topic} not read to its end within {timeout_s:g}s")
                log.warning("state_catch_up_incomplete", topic=self._topic, partitions=sorted(pending))
                break
            pending -= self._take(self._consumer.consume(1000, 0.5))
        return self.records - before

    def poll(self, max_records: int = 1000) -> int:
        """What arrived since the last call (no wait); returns how many records were applied."""
        if not self._started:
            return 0
        before = self.records
        self._take(self._consumer.consume(max_records, 0))
        return self.records - before

    def _take(self, messages: list[Message]) -> set[int]:
        at_end: set[int] = set()
        for msg in messages:
            err = msg.error()
            if err is None:
                self._eof_at.pop(msg.partition(), None)
                key = msg.key()
                if key is not None:
                    self.records += 1
                    self._on_record(key, msg.value())
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add(msg.partition())
                self._eof_at[msg.partition()] = msg.offset()
            elif err.fatal():
                raise StateTopicError(f"reading {self._topic}: {err.str()}")
        return at_end

    def close(self) -> None:
        self._consumer.close()

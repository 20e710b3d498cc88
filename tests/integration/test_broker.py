"""The broker the other integration tests rely on is a real Kafka, configured as they need.

Each check here is something a stand-in or a misconfigured single-node broker gets wrong:
oversized records (the dead-letter topic carries a >1 MiB bad line), committed offsets that a
restarted consumer resumes from, and transactions with consumer offsets (exactly-once output),
which on one broker need the transaction-state topic's replication factor and min ISR of 1.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource

from tests.conftest import new_group

pytestmark = pytest.mark.integration

MIB = 1024 * 1024
LARGE = 3 * MIB // 2  # 1.5 MiB: above Kafka's 1 MB default, below the 4 MiB configured


def _producer(bootstrap: str, **extra) -> Producer:
    # librdkafka refuses records over its own message.max.bytes (1 MB) before the broker sees them.
    return Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 4 * MIB, "linger.ms": 5, **extra})


def _consumer(bootstrap: str, group: str, **extra) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        **extra,
    })


def _consume(consumer: Consumer, n: int, timeout_s: float = 60.0) -> list:
    """Exactly `n` records (fails on fewer within the time), raising on any error record."""
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        for msg in consumer.consume(min(500, n - len(out)), 1.0):
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            out.append(msg)
    assert len(out) == n, f"got {len(out)} of {n} records in {timeout_s}s"
    return out


def _drain(consumer: Consumer, quiet_s: float = 3.0) -> list:
    """Whatever else arrives until nothing has for `quiet_s`."""
    out: list = []
    last = time.monotonic()
    while time.monotonic() - last < quiet_s:
        for msg in consumer.consume(100, 0.5):
            if msg.error() is None:
                out.append(msg)
                last = time.monotonic()
    return out


def _produce_all(producer: Producer, topic: str, values, keys=None) -> None:
    failures: list = []

    def on_delivery(err, _msg):
        if err is not None:
            failures.append(err)

    for i, value in enumerate(values):
        producer.produce(topic, value=value, key=None if keys is None else keys[i], on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0, "records still queued after 60 s"
    assert not failures, failures[:3]


def test_broker_settings_are_the_ones_the_detector_needs(kafka_bootstrap, kafka_admin):
    md = kafka_admin.list_topics(timeout=10)
    assert len(md.brokers) == 1
    broker_id = next(iter(md.brokers))
    resource = ConfigResource(ConfigResource.Type.BROKER, str(broker_id))
    configs = kafka_admin.describe_configs([resource])[resource].result(30)
    assert int(configs["message.max.bytes"].value) >= 2 * MIB
    assert int(configs["replica.fetch.max.bytes"].value) >= 2 * MIB
    assert configs["transaction.state.log.replication.factor"].value == "1"
    assert configs["transaction.state.log.min.isr"].value == "1"
    assert configs["offsets.topic.replication.factor"].value == "1"
    assert configs["group.initial.rebalance.delay.ms"].value == "0"
    assert configs["auto.create.topics.enable"].value == "true"


def test_thousand_records_and_a_large_one_round_trip_in_a_group(kafka_bootstrap, new_topic):
    topic = new_topic(partitions=3)
    values = [f"line {i} {uuid.uuid4().hex}".encode() for i in range(1000)]
    keys = [f"host-{i % 7}".encode() for i in range(1000)]
    large = bytes(range(256)) * (LARGE // 256)
    producer = _producer(kafka_bootstrap)
    _produce_all(producer, topic, values, keys)
    _produce_all(producer, topic, [large], [b"big"])

    group = new_group()
    consumer = _consumer(kafka_bootstrap, group)
    consumer.subscribe([topic])
    try:
        got = _consume(consumer, 1001)
        consumer.commit(asynchronous=False)  # manual commit of what this consumer has read
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=30)
    finally:
        consumer.close()

    big = [m for m in got if m.key() == b"big"]
    assert len(big) == 1 and len(big[0].value()) == len(large) and big[0].value() == large
    small = [m for m in got if m.key() != b"big"]
    assert sorted(m.value() for m in small) == sorted(values)
    # Same key, same partition, in produce order: what per-host windows rely on.
    for key in {m.key() for m in small}:
        seq = [m for m in small if m.key() == key]
        assert len({m.partition() for m in seq}) == 1
        offsets = [m.offset() for m in seq]
        assert offsets == sorted(offsets)
        assert [m.value() for m in seq] == [v for v, k in zip(values, keys) if k == key]
    assert sum(tp.offset for tp in committed) == 1001


def test_a_restarted_consumer_resumes_from_the_committed_offset(kafka_bootstrap, new_topic):
    topic = new_topic()
    _produce_all(_producer(kafka_bootstrap), topic, [f"{i}".encode() for i in range(100)])
    group = new_group()

    first = _consumer(kafka_bootstrap, group)
    first.subscribe([topic])
    try:
        read = _consume(first, 40)
        # Commit exactly after the 40th record (offset 39 -> next to read is 40), whatever the
        # consumer may have prefetched beyond it.
        first.commit(message=read[-1], asynchronous=False)
    finally:
        first.close()
    assert [int(m.value()) for m in read] == list(range(40))

    second = _consumer(kafka_bootstrap, group)
    second.subscribe([topic])
    try:
        assert second.committed([TopicPartition(topic, 0)], timeout=30)[0].offset == 40
        rest = _consume(second, 60)
        assert _drain(second, quiet_s=2.0) == []
    finally:
        second.close()
    assert [int(m.value()) for m in rest] == list(range(40, 100))


def test_transactional_produce_with_consumer_offsets_is_exactly_once(kafka_bootstrap, new_topic):
    source, sink = new_topic(), new_topic()
    _produce_all(_producer(kafka_bootstrap), source, [f"in-{i}".encode() for i in range(20)])
    group = new_group()

    consumer = _consumer(kafka_bootstrap, group, **{"isolation.level": "read_committed"})
    consumer.subscribe([source])
    producer = _producer(kafka_bootstrap, **{"transactional.id": f"tx-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    try:
        batch = _consume(consumer, 20)

        # An aborted attempt: its output must never be seen by a read_committed reader, and
        # its offsets must not move the group.
        producer.begin_transaction()
        for msg in batch[:10]:
            producer.produce(sink, value=b"aborted-" + msg.value())
        producer.flush(30)
        producer.abort_transaction(30)

        # The committed attempt: output and input offsets land together or not at all.
        producer.begin_transaction()
        for msg in batch:
            producer.produce(sink, value=b"out-" + msg.value())
        producer.send_offsets_to_transaction(
            consumer.position(consumer.assignment()), consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)
    finally:
        consumer.close()

    reader = _consumer(kafka_bootstrap, new_group("reader"), **{"isolation.level": "read_committed"})
    reader.subscribe([sink])
    try:
        out = _consume(reader, 20)
        assert _drain(reader, quiet_s=2.0) == []
    finally:
        reader.close()
    assert [m.value() for m in out] == [f"out-in-{i}".encode() for i in range(20)]

    # The group's offset came from the transaction (enable.auto.commit is off, and the consumer
    # itself never committed).
    check = _consumer(kafka_bootstrap, group)
    try:
        assert check.committed([TopicPartition(source, 0)], timeout=30)[0].offset == 20
    finally:
        check.close()

    # read_uncommitted does see the aborted records: the abort was real, not a dropped produce.
    dirty = _consumer(kafka_bootstrap, new_group("dirty"), **{"isolation.level": "read_uncommitted"})
    dirty.subscribe([sink])
    try:
        everything = _consume(dirty, 30)
    finally:
        dirty.close()
    assert sum(m.value().startswith(b"aborted-") for m in everything) == 10


def test_producing_to_a_new_topic_creates_it(kafka_bootstrap, kafka_admin):
    topic = f"auto-{uuid.uuid4().hex}"
    _produce_all(_producer(kafka_bootstrap), topic, [b"hello"])
    assert topic in kafka_admin.list_topics(timeout=10).topics
    kafka_admin.delete_topics([topic], operation_timeout=10)[topic].result(15)

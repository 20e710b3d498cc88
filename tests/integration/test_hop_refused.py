"""A forwarded line the broker refuses, real broker: the detector stops with exit 1 and commits
nothing, so a restart reads every line again.

The detector's producer reports failed deliveries only (`delivery.report.only.error`), so this is
the one path by which a lost forward is seen. The refusal is the broker's own: the repartition
topic, made beforehand, accepts no record stamped more than a day in the past, and the lines are
stamped with their 2008 event times (as a shipper replaying old files sets them).
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition

from rationanomaly.stream import repartition
from rationanomaly.stream.app import Detector, RunLimits
from tests.integration.detector_support import create_topics, unique
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARTITIONS = 3
LINES = [
    b"081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.1:50010",
    b"081109 203519 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /a/b. blk_2",
    b"081109 203520 143 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_1 terminating",
    b"081109 203521 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: blk_2 size 91178",
]
STAMP_MS = int(datetime(2008, 11, 9, 20, 35, 18, tzinfo=timezone.utc).timestamp() * 1000)


def test_a_forward_the_broker_refuses_stops_the_detector_with_nothing_committed(
    kafka_bootstrap, real_backend, backend_settings, tmp_path
):
    logs, out, dlq = unique("hop-refused"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, partitions=PARTITIONS)
    create_topics(kafka_bootstrap, out, dlq)
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for i, line in enumerate(LINES):
        producer.produce(logs, value=line, key=b"host-%d" % i, partition=i % PARTITIONS, timestamp=STAMP_MS + i * 1000)
    assert producer.flush(30) == 0

    settings = detector_settings(kafka_bootstrap, logs, out, dlq, tmp_path, backend=backend_settings.model_dump())
    # The detector's own repartition topic, made first with the refusing config (the detector
    # checks an existing one's partition count and cleanup policy, and uses it).
    name = repartition.topic_name(settings.kafka.group_id)
    create_topics(kafka_bootstrap, name, partitions=PARTITIONS,
                  config={"message.timestamp.before.max.ms": str(24 * 3600 * 1000)})  # fmt: skip

    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=120), backend=real_backend)
    assert detector.run() == 1
    assert detector._rekeyer is not None  # noqa: SLF001 - the lines did take the hop

    reader = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": settings.kafka.group_id})
    try:
        committed = reader.committed([TopicPartition(logs, p) for p in range(PARTITIONS)], timeout=10)
        ends = {topic: [reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(count)]
                for topic, count in ((logs, PARTITIONS), (name, PARTITIONS), (out, 1))}  # fmt: skip
    finally:
        reader.close()
    assert [tp.offset for tp in committed] == [OFFSET_INVALID] * PARTITIONS  # nothing committed
    assert sum(ends[logs]) == len(LINES)
    assert ends[name] == [0] * PARTITIONS  # the broker kept none of the forwarded lines
    assert ends[out] == [0]  # and no verdict was published

"""Bad records behind the repartition hop, real broker: the forwarding stage dead-letters each one
with its input position, and the good lines around it still reach their windows."""

from __future__ import annotations

import pytest

from rationanomaly.stream.app import Detector, RunLimits
from tests.integration.detector_support import create_topics, produce_lines, read_topic, unique, verdicts_of
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GOOD = [
    b"081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.1:50010",
    b"081109 203519 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /a/b. blk_2",
]
# value -> the stage that refuses it, and the bytes its dead letter must carry
BAD = {
    b"\xff\xfe broken": ("decode", b"\xff\xfe broken"),
    b"": ("decode", b""),
    b"   \r\n": ("decode", b"   \r\n"),
    b"081109 203520 1 INFO dfs.X: " + b"x" * 3000: ("decode", b"081109 203520 1 INFO dfs.X: " + b"x" * 3000),
    b"this line has no HDFS header blk_4\r\n": ("profile", b"this line has no HDFS header blk_4"),
}


def test_bad_records_on_a_partitioned_input_are_dead_lettered_by_the_hop_with_their_position(
    kafka_bootstrap, real_backend, backend_settings, tmp_path
):
    logs, out, dlq = unique("hop-bad"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, partitions=3)
    create_topics(kafka_bootstrap, out, dlq)
    bad = list(BAD)
    # partition 0: good, bad, bad; partition 1: bad, good, bad; partition 2: bad (keyed, as a shipper would)
    layout = {0: [GOOD[0], bad[0], bad[1]], 1: [bad[2], GOOD[1], bad[3]], 2: [bad[4]]}
    for partition, values in layout.items():
        produce_lines(kafka_bootstrap, logs, values, keys=[b"host-%d" % partition] * len(values), partition=partition)

    settings = detector_settings(
        kafka_bootstrap, logs, out, dlq, tmp_path,
        input={"decode": {"max_line_bytes": 2048}},
        backend=backend_settings.model_dump(),
    )  # fmt: skip
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=600), backend=real_backend)
    assert detector.run() == 0
    assert detector._rekeyer is not None  # noqa: SLF001 - the hop was on

    letters = read_topic(kafka_bootstrap, dlq, expected=len(BAD))
    assert len(letters) == len(BAD)
    found = {}
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["rationanomaly.source.topic"].decode() == logs
        assert headers["rationanomaly.error"]
        position = (int(headers["rationanomaly.source.partition"]), int(headers["rationanomaly.source.offset"]))
        found[position] = (headers["rationanomaly.stage"].decode(), letter.value(), letter.key())
    expected = {
        (partition, offset): (*BAD[value], b"host-%d" % partition)
        for partition, values in layout.items()
        for offset, value in enumerate(values)
        if value in BAD
    }
    assert found == expected
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, expected=2))
    assert sorted(v["window"]["key"] for v in verdicts) == ["blk_1", "blk_2"]

"""A transaction left open on the input, real broker: a silent partition's windows stay open
until its log is read to the end, so no window is split around the transaction.

A read_committed consumer stops at the first record of a transaction still open. The lines
committed after it wait behind it, and the partition looks silent. A member killed mid-transaction
leaves exactly this on every repartition partition it forwarded to, until the broker aborts it.
Closing windows for that silence published a block twice: its lines before the transaction, then
those after (stream/log_end.py). Here a real transactional producer holds one open, as long as
the test needs, and aborts it.
"""

from __future__ import annotations

import threading
import time

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from rationanomaly.stream.app import Detector, RunLimits
from tests.integration.detector_support import create_topics, unique
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE_S = 2.0
BEFORE = b"081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_7 src: /10.0.0.1:1 dest: /10.0.0.1:50010"
IN_TRANSACTION = b"081109 203519 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /a/b. blk_8"
AFTER = b"081109 203520 143 INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block blk_7 terminating"


def _held(detector: Detector) -> float:
    return detector.metrics.registry.get_sample_value("rationanomaly_silent_partitions_held") or 0.0


def _verdicts(bootstrap: str, topic: str, wait_s: float) -> list[dict]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"), "auto.offset.reset": "earliest",
                         "isolation.level": "read_committed"})  # fmt: skip
    consumer.subscribe([topic])
    try:
        deadline = time.monotonic() + wait_s
        out = []
        while time.monotonic() < deadline:
            out += [orjson.loads(m.value()) for m in consumer.consume(100, 0.5) if m.error() is None]
        return out
    finally:
        consumer.close()


def test_a_block_behind_an_open_transaction_is_published_once_whole(kafka_bootstrap, real_backend, backend_settings,
                                                                    tmp_path):  # fmt: skip
    logs, out, dlq = unique("open-txn"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    plain = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    plain.produce(logs, BEFORE)
    assert plain.flush(30) == 0
    held = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": unique("held")})
    held.init_transactions(30)
    held.begin_transaction()
    held.produce(logs, IN_TRANSACTION)
    assert held.flush(30) == 0  # on the log, not committed: the last stable offset stays before it
    plain.produce(logs, AFTER)
    assert plain.flush(30) == 0

    settings = detector_settings(kafka_bootstrap, logs, out, dlq, tmp_path, backend=backend_settings.model_dump(),
                                 input={"idle_timeout_s": IDLE_S})  # fmt: skip
    detector = Detector(settings, RunLimits(max_seconds=240), backend=real_backend)
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(detector.run()), daemon=True)
    runner.start()
    try:
        deadline = time.monotonic() + 180
        while detector.first_record_s is None:  # the model loads first
            assert time.monotonic() < deadline and runner.is_alive(), "the detector read nothing"
            time.sleep(0.5)
        # The partition is silent well past the idle timeout, held behind the transaction.
        while _held(detector) < 1:
            assert time.monotonic() < deadline and runner.is_alive(), "the silent partition was never held"
            time.sleep(0.2)
        time.sleep(3 * IDLE_S)
        assert _held(detector) == 1
        assert _verdicts(kafka_bootstrap, out, wait_s=2.0) == [], "a window closed while its lines were held back"

        held.abort_transaction(30)  # the broker's own abort of a dead member's, on demand
        while not _verdicts(kafka_bootstrap, out, wait_s=1.0):
            assert time.monotonic() < deadline, "no verdict after the transaction ended"
        time.sleep(IDLE_S + 2)  # a second, partial window would come by now
        verdicts = _verdicts(kafka_bootstrap, out, wait_s=2.0)
    finally:
        detector.stop()
        runner.join(60)
    assert codes == [0]
    assert _held(detector) == 0
    windows = sorted((v["window"]["key"], v["window"]["lines"]) for v in verdicts)
    assert windows == [("blk_7", 2)], windows  # once, with both lines; the aborted blk_8 line never seen

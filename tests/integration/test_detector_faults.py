"""The detector under faults: SIGKILL mid-stream and restart; bad records into the dead-letter topic."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings
from tests.integration.detector_support import (
    create_topics,
    expected_memberships,
    file_values,
    produce_lines,
    read_topic,
    unique,
    verdicts_of,
)
from tests.integration.test_detector_e2e import HDFS_BLOCKS, detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _detector_process(env: dict[str, str], log_path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "rationanomaly.cli.main", "run", "--log-level", "INFO", *extra],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _count(bootstrap: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("count")})
    try:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        return high
    finally:
        consumer.close()


# Sessions close 60 s of event time after their last line, so on this 3-minute file most close
# while the stream runs and the last minute's stay open until end of input: a kill in between
# always leaves published verdicts, uncommitted lines and open windows behind.
CRASH_GAP_MS = 60_000


def test_sigkill_mid_stream_loses_nothing(kafka_bootstrap, data_dir, real_backend, backend_settings, tmp_path):
    hdfs = data_dir / "raw" / "HDFS_20000.log"
    logs, out, dlq = unique("crash"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    produce_lines(kafka_bootstrap, logs, file_values(hdfs))
    env = {
        **os.environ,
        "RATIONANOMALY_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RATIONANOMALY_KAFKA__GROUP_ID": unique("crash-group"),
        "RATIONANOMALY_INPUT__TOPIC": logs,
        "RATIONANOMALY_INPUT__POLL_BATCH": "200",
        "RATIONANOMALY_INPUT__IDLE_TIMEOUT_S": "900",  # only the watermark closes windows in run one
        "RATIONANOMALY_WINDOWS__GAP_MS": str(CRASH_GAP_MS),
        "RATIONANOMALY_OUTPUT__TOPIC": out,
        "RATIONANOMALY_OUTPUT__DLQ_TOPIC": dlq,
        "RATIONANOMALY_CHECKPOINT__DIR": str(tmp_path / "checkpoints"),
        "RATIONANOMALY_CHECKPOINT__INTERVAL_S": "0.5",
        "RATIONANOMALY_METRICS__PORT": "0",
        "RATIONANOMALY_PROFILE__NAME": "hdfs",
        "RATIONANOMALY_BACKEND__MAX_NEW_TOKENS": str(backend_settings.max_new_tokens),
        "RATIONANOMALY_BACKEND__DEVICE": "cpu",
    }
    log_path = tmp_path / "detector.log"

    first = _detector_process(env, log_path)  # no --stop-at-eof: it would run on for ever
    deadline = time.monotonic() + 600
    while _count(kafka_bootstrap, out) < 300:
        assert first.poll() is None, f"detector exited early:\n{log_path.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "no verdicts within 10 minutes"
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait(30)

    second = _detector_process(env, log_path, "--stop-at-eof")
    assert second.wait(900) == 0, log_path.read_text()[-3000:]

    # The reference: the same file, the same settings, replayed without interruption.
    settings = load_settings(
        None,
        profile={"name": "hdfs"},
        windows={"gap_ms": CRASH_GAP_MS},
        metrics={"port": None},
        backend=backend_settings.model_dump(),
    )
    reference = io.BytesIO()
    replay_files([hdfs], settings, reference, backend=real_backend, progress=False)
    expected = {orjson.loads(line)["verdict_id"] for line in reference.getvalue().splitlines()}
    assert len(expected) > HDFS_BLOCKS  # the short gap splits some blocks: many windows close early

    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, idle_s=3.0))
    published = [v["verdict_id"] for v in verdicts]
    assert set(published) == expected, (
        f"{len(expected - set(published))} windows never judged, "
        f"{len(set(published) - expected)} partial or foreign windows published"
    )
    blocks, _ = expected_memberships(hdfs)
    assert {v["window"]["key"] for v in verdicts} == blocks
    # at-least-once: a restart may publish a window twice, always under the same id
    assert len(published) >= len(expected)


def test_bad_records_go_to_the_dead_letter_topic(kafka_bootstrap, real_backend, backend_settings, tmp_path):
    logs, out, dlq = unique("bad"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    good = [
        {"message": "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.1:50010"},
        {"message": "081109 203519 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /a/b. blk_2"},
    ]
    bad = {
        "invalid_utf8": b'{"message": "\xff\xfe broken"}',
        "giant_line": orjson.dumps({"message": "081109 203520 1 INFO dfs.X: " + "x" * (1024 * 1024)}),
        "empty": b"",
        "broken_json": b'{"message": "081109 203521 1 INFO dfs.X: blk_3',
        "no_profile_match": orjson.dumps({"message": "this line has no HDFS header blk_4"}),
    }
    values = [orjson.dumps(good[0]), *bad.values(), orjson.dumps(good[1])]
    produce_lines(kafka_bootstrap, logs, values)

    settings = detector_settings(
        kafka_bootstrap, logs, out, dlq, tmp_path,
        input={"decode": {"format": "json", "message_field": "message"}},
        backend=backend_settings.model_dump(),
    )
    Detector(settings, RunLimits(stop_at_eof=True, max_seconds=600), backend=real_backend).run()

    letters = read_topic(kafka_bootstrap, dlq, expected=len(bad))
    assert len(letters) == len(bad)
    offsets = sorted(int(dict(m.headers())["rationanomaly.source.offset"]) for m in letters)
    assert offsets == [1, 2, 3, 4, 5]
    for letter in letters:
        headers = dict(letter.headers())
        assert headers["rationanomaly.source.topic"].decode() == logs
        assert headers["rationanomaly.stage"] in (b"decode", b"profile")
        assert headers["rationanomaly.error"]
    giant = [m for m in letters if dict(m.headers())["rationanomaly.source.offset"] == b"2"][0]
    assert len(giant.value()) > 1024 * 1024, "the dead letter must carry the whole original record"
    # the stream went on: both good lines, before and after the bad ones, reached a verdict
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, expected=2))
    assert sorted(v["window"]["key"] for v in verdicts) == ["blk_1", "blk_2"]


class _CoordinatorAway:
    """The detector's consumer with a group coordinator that cannot answer offset fetches at
    first (one still loading after a restart, or busy with a rebalance): a fault the real broker
    gives only by chance. Everything else is the real consumer; the calls are recorded in order."""

    def __init__(self, inner, failures: int) -> None:
        self._inner, self.failures = inner, failures
        self.calls: list[str] = []
        self.in_callback = False

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        def assigned(_consumer, partitions):
            self.in_callback = True
            try:
                on_assign(self, partitions)
            finally:
                self.in_callback = False

        self._inner.subscribe(topics, on_assign=assigned, on_revoke=on_revoke, on_lost=on_lost)

    def committed(self, partitions, timeout=None):
        self.calls.append("committed-in-callback" if self.in_callback else "committed")
        if self.failures:
            self.failures -= 1
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "offset fetch timed out"))
        return self._inner.committed(partitions, timeout=timeout)

    def consume(self, *args, **kwargs):
        self.calls.append("consume")
        return self._inner.consume(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_offsets_of_new_partitions_are_fetched_from_the_loop_and_retried(
    kafka_bootstrap, data_dir, real_backend, backend_settings, tmp_path
):
    """The rebalance callback never waits on the coordinator (a fetch from it stalled a joining
    member for minutes): new partitions stay paused while the loop polls and retries, and then
    every line is read once."""
    path = data_dir / "raw" / "loghub_2k" / "HDFS_2k.log"
    logs, out, dlq = unique("coordinator"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, partitions=3)  # keyed by component: the hop is on
    create_topics(kafka_bootstrap, out, dlq)
    values = file_values(path)
    produce_lines(kafka_bootstrap, logs, values, keys=[v.split(b" ", 5)[4] for v in values], partition=None)
    settings = detector_settings(kafka_bootstrap, logs, out, dlq, tmp_path, backend=backend_settings.model_dump())

    class CoordinatorAwayDetector(Detector):
        def _make_clients(self) -> None:
            super()._make_clients()
            self._consumer = self.faulty = _CoordinatorAway(self._consumer, failures=3)

    detector = CoordinatorAwayDetector(settings, RunLimits(stop_at_eof=True, max_seconds=300), backend=real_backend)
    assert detector.run() == 0
    calls = detector.faulty.calls
    assert "committed-in-callback" not in calls
    # the first fetches are the new partitions' (the end-of-input check behind the hop asks too, later)
    fetches = [i for i, c in enumerate(calls) if c == "committed"][:4]
    assert len(fetches) == 4  # three timed out, then the one that answered
    assert all("consume" in calls[a:b] for a, b in zip(fetches, fetches[1:]))  # polled between tries

    reference = io.BytesIO()
    replay_files([path], load_settings(None, profile={"name": "hdfs"}, metrics={"port": None},
                                       backend=backend_settings.model_dump()), reference, backend=real_backend,
                 progress=False)  # fmt: skip
    expected = [orjson.loads(line) for line in reference.getvalue().splitlines()]
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, expected=len(expected)))
    assert sorted(v["verdict_id"] for v in verdicts) == sorted(v["verdict_id"] for v in expected)
    assert sum(v["window"]["lines"] for v in verdicts) == sum(v["window"]["lines"] for v in expected)

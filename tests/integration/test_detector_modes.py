"""The detector's other paths on the real broker: exactly-once, topic replay, backpressure, metrics."""

from __future__ import annotations

import io
import time
import urllib.request

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.replay import replay_files, replay_topic
from rationanomaly.stream.settings import load_settings
from tests.integration.detector_support import (
    committed_offset,
    create_topics,
    file_values,
    produce_lines,
    read_topic,
    unique,
    verdicts_of,
)
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def hdfs_2k(data_dir):
    return data_dir / "raw" / "loghub_2k" / "HDFS_2k.log"


def test_exactly_once_commits_verdicts_and_offsets_together(kafka_bootstrap, hdfs_2k, real_backend, backend_settings, tmp_path):
    logs, out, dlq = unique("eos"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    values = file_values(hdfs_2k)
    produce_lines(kafka_bootstrap, logs, values)
    settings, verdicts, reference = _exactly_once_run(kafka_bootstrap, logs, out, dlq, tmp_path, hdfs_2k,
                                                      real_backend, backend_settings)  # fmt: skip
    assert sorted(v["verdict_id"] for v in verdicts) == sorted(v["verdict_id"] for v in reference)
    assert committed_offset(kafka_bootstrap, settings.kafka.group_id, logs) == len(values)
    # The shipped adapter ranks (decision.json): every decided verdict carries its confidence.
    decided = [v for v in verdicts if v["verdict"] != "unknown"]
    assert decided and all(0.5 <= v["confidence"] <= 1.0 for v in decided)


def test_exactly_once_through_the_repartition_hop_matches_file_replay(
    kafka_bootstrap, hdfs_2k, real_backend, backend_settings, tmp_path
):
    """Input keyed by component over 3 partitions, as a shipper keys it: lines cross the hop
    inside the same transactions as the input offsets, and every block is one whole window."""
    logs, out, dlq = unique("eos-hop"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, partitions=3)
    create_topics(kafka_bootstrap, out, dlq)
    values = file_values(hdfs_2k)
    produce_lines(kafka_bootstrap, logs, values, keys=[_component(v) for v in values], partition=None)
    settings, verdicts, reference = _exactly_once_run(kafka_bootstrap, logs, out, dlq, tmp_path, hdfs_2k,
                                                      real_backend, backend_settings)  # fmt: skip

    def windows(vs):
        return sorted((v["window"]["key"], v["window"]["start_ms"], v["window"]["end_ms"], v["window"]["lines"]) for v in vs)

    assert windows(verdicts) == windows(reference)  # none split, none twice
    assert sorted(v["verdict_id"] for v in verdicts) == sorted(v["verdict_id"] for v in reference)
    assert {v["verdict_id"]: v["verdict"] for v in verdicts} == {v["verdict_id"]: v["verdict"] for v in reference}
    ends = _end_offsets(kafka_bootstrap, logs, 3)
    assert sum(ends) == len(values) and min(ends) > 0  # the keys did spread the lines
    assert _committed_offsets(kafka_bootstrap, settings.kafka.group_id, logs, 3) == ends


def _exactly_once_run(kafka_bootstrap, logs, out, dlq, tmp_path, path, real_backend, backend_settings):
    """The detector over `logs` in exactly-once mode to its end; its settings, the verdicts a
    read_committed reader sees, and file replay's verdicts on `path` for reference."""
    settings = detector_settings(
        kafka_bootstrap, logs, out, dlq, tmp_path,
        output={"exactly_once": True, "transactional_id": unique("tx")},
        backend=backend_settings.model_dump(),
    )
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=600), backend=real_backend)
    assert detector.run() == 0
    _, reference = _replayed(path, real_backend, backend_settings)
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, expected=len(reference)))  # read_committed
    return settings, verdicts, reference


def _component(value: bytes) -> bytes | None:
    fields = value.split(b" ", 5)
    return fields[4].rstrip(b":") if len(fields) > 5 else None


def _end_offsets(bootstrap: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("ends")})
    try:
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)]
    finally:
        consumer.close()


def _committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> list[int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        return [tp.offset for tp in consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)]
    finally:
        consumer.close()


def _replayed(path, backend, backend_settings, limit: int | None = None, tmp_path=None):
    if limit is not None:
        cut = tmp_path / f"first-{limit}.log"
        cut.write_bytes(b"\n".join(file_values(path)[:limit]) + b"\n")
        path = cut
    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None}, backend=backend_settings.model_dump())
    return _replayed_with(settings, path, backend)


def test_topic_replay_between_offsets_matches_file_replay(kafka_bootstrap, hdfs_2k, real_backend, backend_settings, tmp_path):
    logs, out = unique("history"), unique("replayed")
    create_topics(kafka_bootstrap, logs, out)
    produce_lines(kafka_bootstrap, logs, file_values(hdfs_2k))
    settings = load_settings(
        None,
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": unique("replay")},
        profile={"name": "hdfs"},
        metrics={"port": None},
        backend=backend_settings.model_dump(),
    )
    summary = replay_topic(settings, logs, out, start="0", stop="1000", backend=real_backend, progress=False)
    assert summary.lines == 1000
    from_topic = verdicts_of(read_topic(kafka_bootstrap, out, expected=summary.verdicts))
    _, from_file = _replayed(hdfs_2k, real_backend, backend_settings, limit=1000, tmp_path=tmp_path)
    assert sorted(v["verdict_id"] for v in from_topic) == sorted(v["verdict_id"] for v in from_file)


class SlowBackend:
    """The real model behind a delay: a slow model server, which the real one cannot be on demand."""

    def __init__(self, inner, delay_s: float) -> None:
        self._inner, self._delay_s = inner, delay_s
        self.model_id = inner.model_id

    def generate(self, conversations):
        time.sleep(self._delay_s)
        return self._inner.generate(conversations)

    def score(self, conversations, completions):
        # the rank decision scores instead of generating: it must be slow the same way, or the
        # detector would decide by generation and name another model than the replay's
        time.sleep(self._delay_s)
        return self._inner.score(conversations, completions)

    def close(self) -> None:
        pass


def test_backpressure_pauses_and_resumes_without_loss_and_serves_metrics(
    kafka_bootstrap, hdfs_2k, real_backend, backend_settings, tmp_path
):
    logs, out, dlq = unique("bp"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    produce_lines(kafka_bootstrap, logs, file_values(hdfs_2k))
    settings = detector_settings(
        kafka_bootstrap, logs, out, dlq, tmp_path,
        input={"poll_batch": 100},
        # windows close quickly and the model is slow: the queue fills and the partition pauses
        windows={"gap_ms": 1_000, "grace_ms": 0},
        judging={"queue_max": 20, "queue_low": 5, "max_batch": 4, "max_wait_ms": 0},
        backend=backend_settings.model_dump(),
    )
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=600), backend=SlowBackend(real_backend, 0.05))
    port = detector.serve_metrics(0, addr="127.0.0.1")
    assert detector.run() == 0
    assert detector.metrics.pauses._value.get() >= 1  # noqa: SLF001 (prometheus keeps the value there)
    _, reference = _replayed_with(settings, hdfs_2k, real_backend)
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, expected=len(reference)))
    assert sorted(v["verdict_id"] for v in verdicts) == sorted(v["verdict_id"] for v in reference)
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert "rationanomaly_lines_total 2000.0" in scraped
    by_label = [line for line in scraped.splitlines() if line.startswith("rationanomaly_verdicts_total{")]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in by_label) == len(reference)
    assert "rationanomaly_backpressure_pauses_total" in scraped
    assert "rationanomaly_model_latency_seconds_count" in scraped


def _replayed_with(settings, path, backend):
    out = io.BytesIO()
    summary = replay_files([path], settings, out, backend=backend, progress=False)
    return summary, [orjson.loads(line) for line in out.getvalue().splitlines()]

"""HDFS_20000.log through the real broker, Drain3 and the real default model, against replay."""

from __future__ import annotations

import io
from collections import Counter

import orjson
import pytest

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

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HDFS_BLOCKS = 1782


def detector_settings(bootstrap: str, topic: str, out: str, dlq: str, tmp_path, **extra):
    sections = {
        "kafka": {"bootstrap_servers": bootstrap, "group_id": unique("e2e")},
        "input": {"topic": topic},
        "output": {"topic": out, "dlq_topic": dlq},
        "checkpoint": {"dir": tmp_path / "checkpoints", "interval_s": 1.0},
        "metrics": {"port": None},
        "profile": {"name": "hdfs"},
    }
    for section, values in extra.items():
        sections.setdefault(section, {}).update(values)
    return load_settings(None, **sections)


@pytest.fixture(scope="module")
def hdfs_file(data_dir):
    return data_dir / "raw" / "HDFS_20000.log"


@pytest.fixture(scope="module")
def replayed(hdfs_file, real_backend, backend_settings, tmp_path_factory):
    """`rationanomaly replay` on the file: the reference the Kafka path must match."""
    tmp = tmp_path_factory.mktemp("replay")
    settings = load_settings(None, profile={"name": "hdfs"}, backend=backend_settings.model_dump(), metrics={"port": None})
    out = io.BytesIO()
    summary = replay_files([hdfs_file], settings, out, dlq_path=tmp / "dlq.jsonl", backend=real_backend, progress=False)
    verdicts = [orjson.loads(line) for line in out.getvalue().splitlines()]
    return summary, verdicts


def test_replay_judges_every_block_once(replayed, hdfs_file):
    summary, verdicts = replayed
    blocks, memberships = expected_memberships(hdfs_file)
    assert summary.lines == 20_000
    assert summary.dead_letters == 0
    keys = Counter(v["window"]["key"] for v in verdicts)
    assert len(keys) == HDFS_BLOCKS == len(blocks)
    assert set(keys) == blocks
    assert max(keys.values()) == 1, "a block was judged more than once"
    # every line is in the window of each block it names
    assert sum(v["window"]["lines"] for v in verdicts) == memberships
    assert {v["verdict"] for v in verdicts} <= {"normal", "abnormal", "unknown"}
    assert all(v["verdict"] != "unknown" or v.get("reason") for v in verdicts)
    assert all(v["verdict"] != "abnormal" or v.get("rationale") for v in verdicts)


def test_kafka_path_matches_replay(kafka_bootstrap, hdfs_file, replayed, real_backend, backend_settings, tmp_path):
    _, replay_verdicts = replayed
    logs, out, dlq = unique("hdfs"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    produce_lines(kafka_bootstrap, logs, file_values(hdfs_file))

    settings = detector_settings(kafka_bootstrap, logs, out, dlq, tmp_path, backend=backend_settings.model_dump())
    Detector(settings, RunLimits(stop_at_eof=True, max_seconds=1200), backend=real_backend).run()

    records = read_topic(kafka_bootstrap, out, expected=HDFS_BLOCKS)
    verdicts = verdicts_of(records)
    keys = Counter(v["window"]["key"] for v in verdicts)
    assert len(verdicts) == HDFS_BLOCKS
    assert max(keys.values()) == 1
    assert {v["verdict_id"] for v in verdicts} == {v["verdict_id"] for v in replay_verdicts}
    _, memberships = expected_memberships(hdfs_file)
    assert sum(v["window"]["lines"] for v in verdicts) == memberships
    # the record is keyed by the window key and stamped with the window's end (event time)
    for record, verdict in zip(records[:50], verdicts[:50]):
        assert record.key().decode() == verdict["window"]["key"]
        assert record.timestamp()[1] == verdict["window"]["end_ms"]
    assert read_topic(kafka_bootstrap, dlq, idle_s=2.0) == []

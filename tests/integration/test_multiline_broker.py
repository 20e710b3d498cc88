"""Multi-line events through the real broker: the same events, windows and verdict ids as a
file replay of the same lines."""

from __future__ import annotations

import io

import orjson
import pytest

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.replay import replay_files
from tests.integration.detector_support import create_topics, produce_lines, read_topic, unique, verdicts_of
from tests.integration.test_detector_e2e import detector_settings
from tests.unit.stream.test_replay import KeywordBackend
from tests.unit.stream.traceback_sample import PROFILE, WINDOWS, traceback_log

pytestmark = [pytest.mark.integration]


def test_tracebacks_through_the_broker_match_the_file_replay(kafka_bootstrap, tmp_path):
    lines, events, failed = traceback_log(instances=15)
    log = tmp_path / "nova-compute.log"
    log.write_text("\n".join(lines) + "\n")
    logs, out, dlq = unique("tb"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    produce_lines(kafka_bootstrap, logs, [line.encode() for line in lines])
    settings = detector_settings(kafka_bootstrap, logs, out, dlq, tmp_path, profile=PROFILE, windows=WINDOWS)

    reference = io.BytesIO()
    replay_files([log], settings, reference, backend=KeywordBackend(), progress=False)
    expected = {orjson.loads(v)["verdict_id"]: orjson.loads(v) for v in reference.getvalue().splitlines()}
    assert sum(v["window"]["lines"] for v in expected.values()) == events

    Detector(settings, RunLimits(stop_at_eof=True, max_seconds=300), backend=KeywordBackend()).run()
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, expected=len(expected)))
    assert {v["verdict_id"] for v in verdicts} == set(expected)
    spawn = {v["window"]["key"]: [t["text"] for t in v["templates"] if "failed to spawn" in t["text"]] for v in verdicts}
    assert {k: s[0].split(":")[0] for k, s in spawn.items() if s} == failed
    assert read_topic(kafka_bootstrap, dlq, idle_s=2.0) == []  # no frame dead-lettered

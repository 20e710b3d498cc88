"""Operator corrections through the real broker (issue 17, part 4): a correction published while
the detector runs changes the next windows' verdicts for that template, and only for it, bad
feedback goes to the dead-letter topic, and the correction survives a restart on another instance."""

from __future__ import annotations

import threading
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from rationanomaly.stream.app import Detector, RunLimits
from tests.integration.detector_support import create_topics, file_values, produce_lines, read_topic, unique, verdicts_of
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTE = "Operator: this replica check fails before every disk loss here."


def _run(detector: Detector) -> threading.Thread:
    def run() -> None:
        detector.exit_code = detector.run()

    thread = threading.Thread(target=run, name="detector", daemon=True)
    thread.start()
    return thread


def _settled(detector: Detector, lines: int, timeout_s: float = 180.0) -> None:
    """Every produced line read, every window closed (idle timeout) and published."""
    registry = detector.metrics.registry
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert getattr(detector, "exit_code", None) is None, f"the detector stopped: exit {detector.exit_code}"
        read = registry.get_sample_value("rationanomaly_lines_total") or 0
        open_windows = registry.get_sample_value("rationanomaly_open_windows") or 0
        queued = registry.get_sample_value("rationanomaly_queue_depth") or 0
        if read >= lines and open_windows == 0 and queued == 0 and detector._engine.pipeline.in_flight == 0:
            time.sleep(1.0)  # the last verdicts through the producer
            return
        time.sleep(0.3)
    raise AssertionError(f"not settled after {timeout_s}s: {read} of {lines} lines, {open_windows} windows open")


def _publish(bootstrap: str, topic: str, *values: bytes) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for value in values:
        producer.produce(topic, value=value)
    assert producer.flush(30) == 0


def _by_template(verdicts: list[dict]) -> dict[str, set[str]]:
    labels: dict[str, set[str]] = {}
    for v in verdicts:
        for t in v["templates"]:
            labels.setdefault(t["id"], set()).add(t["verdict"])
    return labels


def test_a_correction_mid_stream_changes_that_template_only_and_survives_a_restart(
    kafka_bootstrap, data_dir, real_backend, tmp_path
):
    lines = file_values(data_dir / "raw" / "HDFS_20000.log")
    batches = [lines[:8000], lines[8000:14000], lines[14000:]]
    logs, out, dlq = unique("fb-logs"), unique("fb-verdicts"), unique("fb-dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    group = unique("fb-group")

    def settings(machine: str):
        return detector_settings(
            kafka_bootstrap, logs, out, dlq, tmp_path / machine,
            kafka={"bootstrap_servers": kafka_bootstrap, "group_id": group},
            input={"idle_timeout_s": 2.0, "keyed_by_window": True},
            checkpoint={"interval_s": 0.5},
        )  # fmt: skip

    first = Detector(settings("first"), RunLimits(max_seconds=600), backend=real_backend)
    thread = _run(first)
    produce_lines(kafka_bootstrap, logs, batches[0])
    _settled(first, len(batches[0]))
    before = verdicts_of(read_topic(kafka_bootstrap, out, idle_s=1.0))
    assert before
    labels_before = _by_template(before)
    # The template to correct: judged normal, and in some windows but not most (so "only for it" shows).
    windows_with = Counter(t["id"] for v in before for t in v["templates"])
    candidates = [tid for tid, n in windows_with.items() if labels_before[tid] == {"normal"} and n < len(before) * 0.6]
    assert candidates, f"no normal template in a minority of windows: {windows_with}"
    target = max(candidates, key=windows_with.__getitem__)

    feedback = f"{group}-feedback"
    _publish(
        kafka_bootstrap, feedback,
        b'{"template_id": "x", "label": "maybe", "by": "test"}',  # not a label: refused
        b'{"label": "abnormal", "by": "test"}',  # names nothing: refused
        orjson.dumps({"template_id": target, "label": "abnormal", "note": NOTE, "by": "alice"}),
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while first._engine.judge.cache.corrected(target) is None:
        assert time.monotonic() < deadline, "the correction was not applied within 60 s"
        time.sleep(0.2)

    produce_lines(kafka_bootstrap, logs, batches[1])
    _settled(first, len(batches[0]) + len(batches[1]))
    first.stop()
    thread.join(60)
    after = verdicts_of(read_topic(kafka_bootstrap, out, idle_s=1.0))[len(before):]
    with_target = [v for v in after if any(t["id"] == target for t in v["templates"])]
    without = [v for v in after if v not in with_target]
    assert with_target and without
    for v in with_target:
        assert v["verdict"] == "abnormal"
        (entry,) = [t for t in v["templates"] if t["id"] == target]
        assert entry["verdict"] == "abnormal" and entry["rationale_source"] == "operator"
        assert NOTE in v["rationale"] and v["rationale_source"] == "operator"
    # Only that template: every other template keeps the model's label.
    for v in without:
        for t in v["templates"]:
            assert {t["verdict"]} <= labels_before.get(t["id"], {t["verdict"]}), t
        assert v.get("rationale_source") != "operator"

    letters = read_topic(kafka_bootstrap, dlq, idle_s=1.0)
    refused = [m for m in letters if dict(m.headers() or [])["rationanomaly.stage"] == b"feedback"]
    assert len(refused) == 2

    # Another instance, nothing on its disk: the correction comes from the corrections topic.
    second = Detector(settings("second"), RunLimits(max_seconds=600), backend=real_backend)
    thread = _run(second)
    produce_lines(kafka_bootstrap, logs, batches[2])
    _settled(second, len(batches[2]))
    second.stop()
    thread.join(60)
    assert second._engine.judge.cache.corrected(target) is not None
    latest = verdicts_of(read_topic(kafka_bootstrap, out, idle_s=1.0))[len(before) + len(after):]
    latest_with = [v for v in latest if any(t["id"] == target for t in v["templates"])]
    assert latest_with, "the last batch has no window with the corrected template"
    assert all(v["verdict"] == "abnormal" and v["rationale_source"] == "operator" for v in latest_with)

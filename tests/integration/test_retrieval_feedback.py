"""Operator corrections teach the reviewed-example memory through the real broker: a correction
published on the feedback topic while the detector runs joins the memory (through the
corrections topic), the next new template near it is judged with it among its neighbours and
cites it, and another instance started later restores it from the corrections topic.

The scorer is scripted (one margin for every template), so the vote alone moves the label and
the expected labels can be computed; tests/integration/test_retrieval_replay.py runs the real
model through the same decider."""

from __future__ import annotations

import io
import threading
import time
from dataclasses import replace

import orjson
import pytest
from confluent_kafka import Producer

from rationanomaly.model.prompt import log_text
from rationanomaly.model.retrieval import Neighbour, cite
from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.engine import reviewed_memory
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.verdicts import inert
from tests.integration.detector_support import create_topics, file_values, produce_lines, read_topic, unique, verdicts_of
from tests.integration.test_detector_e2e import detector_settings
from tests.unit.stream.test_retrieval_stage import ScriptedScorer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MARGIN = -4.0


def _run(detector: Detector) -> threading.Thread:
    def run() -> None:
        detector.exit_code = detector.run()

    thread = threading.Thread(target=run, name="detector", daemon=True)
    thread.start()
    return thread


def _settled(detector: Detector, lines: int, timeout_s: float = 180.0) -> None:
    registry = detector.metrics.registry
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert getattr(detector, "exit_code", None) is None, f"the detector stopped: exit {detector.exit_code}"
        read = registry.get_sample_value("rationanomaly_lines_total") or 0
        open_windows = registry.get_sample_value("rationanomaly_open_windows") or 0
        queued = registry.get_sample_value("rationanomaly_queue_depth") or 0
        if read >= lines and open_windows == 0 and queued == 0 and detector._engine.pipeline.in_flight == 0:
            time.sleep(1.0)
            return
        time.sleep(0.3)
    raise AssertionError(f"not settled after {timeout_s}s: {read} of {lines} lines")


def _templates(path, settings) -> set[str]:
    out = io.BytesIO()
    replay_files([path], settings, out, backend=ScriptedScorer(MARGIN), progress=False)
    return {t["text"] for line in out.getvalue().splitlines() for t in orjson.loads(line)["templates"]}


def test_a_published_correction_teaches_the_memory_and_survives_a_restart(kafka_bootstrap, data_dir, tmp_path):
    source = data_dir / "raw" / "loghub_2k" / "BGL_2k.log"
    lines = file_values(source)
    first_half, second_half = tmp_path / "first.log", tmp_path / "second.log"
    first_half.write_bytes(b"\n".join(lines[:1000]) + b"\n")
    second_half.write_bytes(b"\n".join(lines[1000:]) + b"\n")
    logs, out, dlq = unique("rf-logs"), unique("rf-verdicts"), unique("rf-dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    group = unique("rf-group")

    def settings(machine: str):
        return detector_settings(
            kafka_bootstrap, logs, out, dlq, tmp_path / machine,
            kafka={"bootstrap_servers": kafka_bootstrap, "group_id": group},
            input={"idle_timeout_s": 2.0}, checkpoint={"interval_s": 0.5}, profile={"name": "bgl"},
            windows={"kind": "count", "count": 50},
            backend={"kind": "transformers", "device": "cpu", "retrieval": {"data_dir": str(data_dir)}},
        )  # fmt: skip

    # A template the second half brings and the first does not, whose label the memory decides.
    plain = reviewed_memory(settings("probe"))
    assert plain is not None
    new = sorted(_templates(second_half, settings("probe")) - _templates(first_half, settings("probe")))
    assert new, "the second half of BGL_2k brings no template the first lacks"

    def label(text: str) -> str:
        return plain.blend.decide(MARGIN, plain.index.nearest(text, plain.blend.k, dataset="bgl"))

    def flips(text: str) -> bool:  # normal now, abnormal once a near twin is corrected to abnormal
        if label(text) != "normal":
            return False
        plain.learn(f"{text} on <*>", "abnormal")
        try:
            return label(text) == "abnormal"
        finally:
            plain.forget(f"{text} on <*>")

    target = next((t for t in new if flips(t)), None)
    assert target is not None, f"no new template a single correction would flip: {new}"
    twin = f"{target} on <*>"

    first = Detector(settings("first"), RunLimits(max_seconds=600), backend=ScriptedScorer(MARGIN))
    thread = _run(first)
    produce_lines(kafka_bootstrap, logs, lines[:1000])
    _settled(first, 1000)
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    producer.produce(f"{group}-feedback", value=orjson.dumps(
        {"template_id": "t-twin", "template": twin, "label": "abnormal", "by": "alice"}))  # fmt: skip
    assert producer.flush(30) == 0
    memory = first._engine.memory
    deadline = time.monotonic() + 60
    while not any(e.source == "correction" for e in memory.index.examples()):
        assert time.monotonic() < deadline, "the correction did not reach the memory within 60 s"
        time.sleep(0.2)

    produce_lines(kafka_bootstrap, logs, lines[1000:])
    _settled(first, len(lines))
    first.stop()
    thread.join(60)
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, idle_s=1.0))
    found = memory.index.nearest(target, memory.blend.k, dataset="bgl")
    assert found[0].example.template == twin and found[0].example.source == "correction"
    assert memory.blend.decide(MARGIN, found) == "abnormal"
    cited = [v for v in verdicts if any(t["text"] == target for t in v["templates"])]
    assert cited and all(t["verdict"] == "abnormal" for v in cited for t in v["templates"] if t["text"] == target)
    # The correction, quoted as log text is (bounded), then made inert for publication (‹ › for < >).
    clause = cite([Neighbour(replace(n.example, template=log_text(n.example.template)), n.similarity) for n in found],
                  "abnormal")  # fmt: skip
    assert clause is not None and clause.startswith("like '") and "(abnormal, reviewed, similarity " in clause
    assert all(f"Reviewed: {inert(clause)}." in v["rationale"] for v in cited)
    print(f"\nfeedback: {target!r} normal before the correction, abnormal after, in {len(cited)} windows")

    # Another instance: the correction comes back from the corrections topic into its memory.
    second = Detector(settings("second"), RunLimits(max_seconds=600), backend=ScriptedScorer(MARGIN))
    thread = _run(second)
    deadline = time.monotonic() + 120
    while getattr(second, "_engine", None) is None or second._engine.memory is None or not any(
            e.source == "correction" for e in second._engine.memory.index.examples()):  # fmt: skip
        assert time.monotonic() < deadline, "the restarted instance's memory lacks the correction"
        time.sleep(0.3)
    second.stop()
    thread.join(60)

"""Alert-only output: `output.publish` and `output.publish_unknown` choose what the output
carries, every window is still accounted for (released for commit, counted in the metrics), and
the model's health gauge follows backend failures. The real broker's side is in
tests/integration/test_soc_output.py."""

from __future__ import annotations

import io

import orjson
import pytest
from pydantic import ValidationError

from rationanomaly.model.backends import Generation
from rationanomaly.stream.engine import build_engine
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.records import SourceRef
from rationanomaly.stream.settings import load_settings
from rationanomaly.stream.siem import Publish
from rationanomaly.stream.sinks import JsonlSink, Route, routes_for
from tests.unit.stream.test_replay import KeywordBackend, replay


class FlakyBackend(KeywordBackend):
    """The keyword answers, but a server error for templates naming `PacketResponder`: a backend
    failure on demand, which the real model cannot give."""

    model_id = "flaky-backend"

    def generate(self, conversations):
        answers = super().generate(conversations)
        return [
            Generation(None, 0.001, error="http 503: overloaded") if "PacketResponder" in c[-1]["content"] else a
            for c, a in zip(conversations, answers, strict=True)
        ]


@pytest.fixture(scope="module")
def hdfs_2k(data_dir):
    return data_dir / "raw" / "loghub_2k" / "HDFS_2k.log"


def _labels(verdicts):
    return {v["verdict"] for v in verdicts}


def test_abnormal_only_output_is_the_abnormal_part_of_the_full_stream(hdfs_2k):
    full_summary, full = replay([hdfs_2k], profile={"name": "hdfs"})
    alert_summary, alerts = replay([hdfs_2k], profile={"name": "hdfs"}, output={"publish": "abnormal"})
    assert _labels(full) == {"normal", "abnormal"}
    assert alerts and _labels(alerts) == {"abnormal"}
    assert [v["verdict_id"] for v in alerts] == [v["verdict_id"] for v in full if v["verdict"] == "abnormal"]
    # Every window was still judged and counted: only the output was filtered.
    assert alert_summary.verdicts == full_summary.verdicts == len(full)


def test_unknown_verdicts_on_or_off(hdfs_2k):
    _, every = replay([hdfs_2k], FlakyBackend(), profile={"name": "hdfs"})
    assert _labels(every) == {"normal", "abnormal", "unknown"}
    _, with_unknown = replay([hdfs_2k], FlakyBackend(), profile={"name": "hdfs"}, output={"publish": "abnormal"})
    assert _labels(with_unknown) == {"abnormal", "unknown"}
    _, alerts_only = replay(
        [hdfs_2k], FlakyBackend(), profile={"name": "hdfs"}, output={"publish": "abnormal", "publish_unknown": False}
    )
    assert _labels(alerts_only) == {"abnormal"}
    _, no_unknown = replay([hdfs_2k], FlakyBackend(), profile={"name": "hdfs"}, output={"publish_unknown": False})
    assert _labels(no_unknown) == {"normal", "abnormal"}
    assert len(no_unknown) == len(every) - sum(v["verdict"] == "unknown" for v in every)


def test_filtered_windows_are_released_for_commit_and_counted(hdfs_2k):
    """A window kept off the output still frees its offsets: the committable offset reaches the
    end of the input, as with every verdict published."""
    settings = load_settings(None, metrics={"port": None}, profile={"name": "hdfs"}, output={"publish": "abnormal", "publish_unknown": False})
    metrics = DetectorMetrics()
    out = io.BytesIO()
    engine = build_engine(settings, JsonlSink(out, routes_for(settings.output)[0], None), backend=FlakyBackend(), metrics=metrics)
    try:
        lines = hdfs_2k.read_bytes().splitlines()
        for offset, line in enumerate(lines):
            engine.pipeline.feed(line, None, SourceRef("hdfs", 0, offset), None, 0.0)
        engine.pipeline.finish()
        assert engine.worker.wait_idle(60)
        engine.pipeline.publish(1_700_000_000_000)
        assert engine.pipeline.in_flight == 0
        assert engine.pipeline.committable(0) == len(lines)
        published = [orjson.loads(x) for x in out.getvalue().splitlines()]
        sample = {s.labels["verdict"]: s.value for s in metrics.withheld.collect()[0].samples if s.name.endswith("_total")}
        judged = {s.labels["verdict"]: s.value for s in metrics.verdicts.collect()[0].samples if s.name.endswith("_total")}
        assert sample["normal"] == judged["normal"] and sample["unknown"] == judged["unknown"] > 0
        assert "abnormal" not in sample and len(published) == judged["abnormal"]
        # The PacketResponder templates failed at the backend: the model is reported degraded.
        assert metrics.model_degraded._value.get() == 1  # noqa: SLF001 (prometheus keeps the value there)
    finally:
        engine.close()


def test_model_health_recovers_on_a_fresh_answer(hdfs_2k):
    metrics = DetectorMetrics()
    settings = load_settings(None, metrics={"port": None}, profile={"name": "hdfs"})
    engine = build_engine(settings, JsonlSink(io.BytesIO(), Route(""), None), backend=KeywordBackend(), metrics=metrics)
    try:
        metrics.model_degraded.set(1)
        for offset, line in enumerate(hdfs_2k.read_bytes().splitlines()[:200]):
            engine.pipeline.feed(line, None, SourceRef("hdfs", 0, offset), None, 0.0)
        engine.pipeline.finish()
        assert engine.worker.wait_idle(60)
        assert engine.pipeline.publish(1) > 0
        assert metrics.model_degraded._value.get() == 0  # noqa: SLF001
    finally:
        engine.close()


def test_publish_settings_from_file_env_and_flags(tmp_path, monkeypatch):
    for key in ("RATIONANOMALY_OUTPUT__PUBLISH", "RATIONANOMALY_OUTPUT__PUBLISH_UNKNOWN", "RATIONANOMALY_OUTPUT__FULL_TOPIC"):
        monkeypatch.delenv(key, raising=False)
    config = tmp_path / "detector.yaml"
    config.write_text("output:\n  publish: abnormal\n  full_topic: verdicts.all\n  format: ocsf\n")
    settings = load_settings(config)
    assert settings.output.publish is Publish.ABNORMAL and settings.output.publish_unknown is True
    routes = routes_for(settings.output)
    assert [(r.topic, r.fmt.value, r.publish.value) for r in routes] == [("verdicts", "ocsf", "abnormal"), ("verdicts.all", "native", "all")]
    monkeypatch.setenv("RATIONANOMALY_OUTPUT__PUBLISH_UNKNOWN", "false")
    monkeypatch.setenv("RATIONANOMALY_OUTPUT__PUBLISH", "all")
    settings = load_settings(config)
    assert (settings.output.publish, settings.output.publish_unknown) == (Publish.ALL, False)
    assert load_settings(config, output={"publish": "abnormal"}).output.publish is Publish.ABNORMAL  # flags win
    with pytest.raises(ValidationError, match="publish"):
        load_settings(None, output={"publish": "alerts"})
    with pytest.raises(ValidationError, match="full_topic"):
        load_settings(None, output={"full_topic": "verdicts"})
    assert len(routes_for(load_settings(None, output={"full_topic": None}).output)) == 1

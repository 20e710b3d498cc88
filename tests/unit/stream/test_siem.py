from __future__ import annotations

import orjson
import pytest


from rationanomaly.stream.records import OffsetRange, Window, WindowKind
from rationanomaly.stream.siem import OutputFormat, render, to_ecs, to_ocsf
from rationanomaly.stream.verdicts import Verdict, build_verdict, from_json
from tests.unit.stream.judged import Judged




def session_window() -> Window:
    return Window(
        kind=WindowKind.SESSION,
        key="blk_-42",
        start_ms=1_226_262_918_000,
        end_ms=1_226_263_101_000,
        lines=4,
        sequence=("tA", "tB", "tA", "tA"),
        templates={"tA": "Receiving block blk_<NUM>", "tB": "writeBlock blk_<NUM> received exception <*>"},
        offsets=(OffsetRange(0, 10, 99),),
        topic="hdfs-logs",
        ground_truth="abnormal",
    )


def abnormal() -> Verdict:
    judged = Judged(
        window=session_window(),
        label="abnormal",
        rationale="Template tB: an exception while writing a block is a failure.",
        template_labels={"tA": "normal", "tB": "abnormal"},
    )
    return build_verdict(judged, profile="hdfs", model_id="smollm2-135m", prompt_version="p3", created_ms=1_700_000_000_000)


def host_window() -> Window:
    return Window(
        kind=WindowKind.COUNT,
        key="tbird-sm1",
        start_ms=1_131_566_461_000,
        end_ms=1_131_566_521_000,
        lines=1,
        sequence=("tK",),
        templates={"tK": "kernel panic"},
        offsets=(OffsetRange(2, 5, 5),),
        topic="tbird",
    )


def test_ecs_alert() -> None:
    v = abnormal()
    doc = to_ecs(v)
    event = doc["event"]
    assert event["kind"] == "alert"
    assert event["category"] == ["intrusion_detection"] and event["type"] == ["info"]
    assert event["id"] == v.verdict_id
    assert (event["start"], event["end"], event["created"]) == (v.window.start, v.window.end, v.created)
    # An exception while writing: a software fault, Medium without a confidence to move it.
    assert event["risk_score"] == 47.0 and event["severity"] == 3
    assert event["reason"] == v.rationale
    assert event["duration"] == 183_000 * 1_000_000
    assert doc["@timestamp"] == v.window.end and doc["ecs"]["version"]
    assert doc["rule"]["id"] == "rationanomaly.session" and doc["rule"]["ruleset"] == "hdfs"
    assert doc["rule"]["version"] == "p3"
    assert doc["observer"]["product"] == "rationanomaly" and doc["observer"]["version"] == v.detector_version
    assert "host" not in doc  # a session key is a block id, not a host
    custom = doc["rationanomaly"]
    assert custom["model"] == {"id": "smollm2-135m", "prompt_version": "p3", "latency_ms": 12.5}
    assert custom["verdict"] == "abnormal" and custom["ground_truth"] == "abnormal"
    assert custom["fault_class"] == "software"
    assert [t["id"] for t in custom["templates"]] == ["tA", "tB"]
    assert custom["window"]["offsets"] == [{"topic": "hdfs-logs", "partition": 0, "first": 10, "last": 99}]


def test_ecs_host_key_normal_and_unknown() -> None:
    judged = Judged(window=host_window(), label="normal")
    normal = build_verdict(judged, profile="thunderbird", model_id="m", prompt_version="p", created_ms=1, key_by="host")
    doc = to_ecs(normal)
    assert doc["host"] == {"name": "tbird-sm1"}
    assert doc["event"]["kind"] == "event"  # not an alert: a SIEM's alert views stay for abnormal windows
    assert doc["event"]["risk_score"] == 0.0 and doc["event"]["severity"] == 1 and "reason" not in doc["event"]
    unknown = build_verdict(Judged(window=host_window(), label="unknown", reason="backend down"), profile="t", model_id="m", prompt_version="p", created_ms=1)
    doc = to_ecs(unknown)
    assert "risk_score" not in doc["event"] and doc["event"]["reason"] == "backend down" and doc["event"]["severity"] == 0
    assert "host" not in doc  # key_by not given: the key's meaning is unknown


def test_ocsf_detection_finding() -> None:
    v = abnormal()
    doc = to_ocsf(v)
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"], doc["type_uid"]) == (2004, 2, 1, 200401)
    assert doc["type_uid"] == doc["class_uid"] * 100 + doc["activity_id"]
    assert (doc["severity_id"], doc["severity"]) == (3, "Medium") and doc["time"] == v.window.end_ms
    assert (doc["risk_score"], doc["risk_level_id"]) == (47, 2)
    assert doc["metadata"]["product"] == {"name": "rationanomaly", "vendor_name": "RationAnomaly", "version": v.detector_version}
    assert doc["metadata"]["version"] == "1.5.0"
    info = doc["finding_info"]
    assert info["uid"] == v.verdict_id and info["title"]
    assert info["types"] == ["Log anomaly", "software fault"]
    assert info["analytic"]["type_id"] == 4 and info["analytic"]["name"] == "smollm2-135m"
    assert info["desc"] == v.rationale
    assert (info["first_seen_time"], info["last_seen_time"], info["created_time"]) == (v.window.start_ms, v.window.end_ms, v.created_ms)
    assert doc["is_alert"] is True and doc["status_id"] == 1
    assert "confidence_score" not in doc and doc["confidence_id"] == 0
    assert doc["unmapped"]["rationanomaly"]["verdict"] == "abnormal"


def test_ocsf_confidence_host_and_normal() -> None:
    judged = Judged(window=host_window(), label="normal")
    v = build_verdict(judged, profile="t", model_id="m", prompt_version="p", created_ms=1, key_by="host", confidence=0.87)
    doc = to_ocsf(v)
    assert doc["confidence_score"] == 87 and "confidence_id" not in doc
    assert doc["is_alert"] is False and doc["severity_id"] == 1
    assert doc["device"]["hostname"] == "tbird-sm1"
    assert doc["observables"] == [{"name": "device.hostname", "type_id": 1, "type": "Hostname", "value": "tbird-sm1"}]


def test_render_each_format() -> None:
    v = abnormal()
    assert from_json(render(v, OutputFormat.NATIVE)) == v
    assert orjson.loads(render(v, OutputFormat.ECS)) == to_ecs(v)
    assert orjson.loads(render(v, "ocsf")) == to_ocsf(v)
    assert not render(v, "ecs").endswith(b"\n")
    with pytest.raises(ValueError):
        render(v, "cef")



def test_severity_follows_fault_class_confidence_and_evidence() -> None:
    """stream/SIEM.md's table, through build_verdict and both SIEM forms."""

    def judged(text: str, confidence: float | None) -> Verdict:
        window = Window(
            kind=WindowKind.COUNT, key="n1", start_ms=0, end_ms=1, lines=1, sequence=("t",),
            templates={"t": text}, offsets=(OffsetRange(0, 0, 0),), topic="x",
        )
        j = Judged(window=window, label="abnormal", rationale="r", template_labels={"t": "abnormal"})
        return build_verdict(j, profile="p", model_id="m", prompt_version="p", created_ms=1, confidence=confidence)

    cases = [
        ("ddr: uncorrectable error on DIMM 3", 0.95, "hardware", "Critical", 5),
        ("ddr: uncorrectable error on DIMM 3", 0.8, "hardware", "High", 4),
        ("kernel panic - not syncing", None, "system", "High", 4),
        ("Connection timed out to 10.0.0.1", 0.6, "network", "Low", 2),
        ("Got exception while serving blk", 0.92, "software", "High", 4),
        # No trouble phrase: the model's word is the only evidence.
        ("PacketResponder 1 for block blk_1 terminating", 0.97, "network", "Medium", 3),
        ("Verification succeeded for blk_1", None, "system", "Low", 2),
    ]
    for text, confidence, fault, name, number in cases:
        v = judged(text, confidence)
        assert (v.fault_class, v.severity) == (fault, name), text
        assert to_ocsf(v)["severity_id"] == to_ecs(v)["event"]["severity"] == number, text


@pytest.mark.parametrize(("decision", "source", "note"), [
    ("rank", "draft", "tB: the explanation quotes 'disk', which the log does not hold"),
    ("generate", "model", None),
    ("operator", "operator", None),
])
def test_provenance_in_native_ecs_and_ocsf(decision, source, note) -> None:
    """How the label was reached and who wrote the rationale, in each of the three shapes."""
    judged = Judged(window=session_window(), label="abnormal", rationale="Template tB: a failure.",
                    template_labels={"tB": "abnormal"}, decision=decision, rationale_source=source, rationale_note=note)
    verdict = build_verdict(judged, profile="hdfs", model_id="m", prompt_version="p", created_ms=1)
    native = orjson.loads(render(verdict, "native"))
    assert (native["decision"], native["rationale_source"], native["rationale_note"]) == (decision, source, note)
    ecs = to_ecs(verdict)["rationanomaly"]
    assert (ecs["decision"], ecs["rationale_source"], ecs["rationale_note"]) == (decision, source, note)
    ocsf = to_ocsf(verdict)
    assert ocsf["unmapped"]["rationanomaly"]["rationale_source"] == source
    assert ocsf["finding_info"]["analytic"]["algorithm"] == decision
    tags = {t["name"]: t["value"] for t in ocsf["finding_info"]["tags"]}
    assert tags == {"decision": decision, "rationale_source": source} | ({"rationale_note": note} if note else {})
    assert from_json(render(verdict, "native")) == verdict


def test_no_rationale_no_rationale_source() -> None:
    """A normal verdict publishes no rationale, so it names no writer (the decision it keeps)."""
    judged = Judged(window=host_window(), label="normal", decision="rank", rationale_source="draft")
    verdict = build_verdict(judged, profile="thunderbird", model_id="m", prompt_version="p", created_ms=1)
    assert (verdict.decision, verdict.rationale_source) == ("rank", None)
    assert "tags" in to_ocsf(verdict)["finding_info"] and to_ocsf(verdict)["finding_info"]["tags"] == [
        {"name": "decision", "value": "rank"}]

"""Each SIEM format's records validate against the format's own published schema, with an
external validator (`jsonschema`), not only with this project's models:

- OCSF: the Detection Finding class of OCSF 1.5.0, as `ocsf-json-schema` generates it from the
  OCSF schema export it ships;
- ECS: the field types of ECS 8.17.0, from Elastic's `ecs_flat.yml` (the table beside this file,
  made by scripts/ecs_fields.py), as a JSON Schema: every field the record sets outside the
  custom `rationanomaly.*` namespace must be an ECS field of the right type, arrays where ECS
  wants arrays, and the categorization fields among their allowed values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from rationanomaly.stream.records import OffsetRange, Window, WindowKind
from rationanomaly.stream.siem import ECS_VERSION, OCSF_VERSION, render
from rationanomaly.stream.verdicts import Verdict, build_verdict
from tests.unit.stream.judged import Judged

jsonschema = pytest.importorskip("jsonschema", reason="the test extra's jsonschema validates the records")
ocsf_json_schema = pytest.importorskip("ocsf_json_schema", reason="the test extra's ocsf-json-schema ships OCSF")

ECS_FIELDS = Path(__file__).with_name(f"ecs_fields_{ECS_VERSION}.json")
CUSTOM_NAMESPACE = "rationanomaly"


def _window(kind: WindowKind, key: str, templates: dict[str, str], lines: int = 3) -> Window:
    sequence = tuple(templates)
    return Window(
        kind=kind,
        key=key,
        start_ms=1_131_566_461_000,
        end_ms=1_131_566_521_500,
        lines=lines,
        sequence=sequence,
        templates=templates,
        offsets=(OffsetRange(1, 10, 10 + lines - 1),),
        topic="logs",
    )


def verdicts() -> list[Verdict]:
    """One of each kind a SIEM receives: abnormal with and without a confidence, normal, unknown."""
    hardware = _window(WindowKind.COUNT, "bgl-R02-M1", {"t1": "instruction cache parity error corrected", "t2": "generating core.<NUM>"})
    network = _window(WindowKind.SESSION, "blk_-1608999687919862906", {"t3": "Receiving block <*>", "t4": "Got exception while serving <*> to <*>: Connection reset"})
    quiet = _window(WindowKind.TIME, "tbird-admin1", {"t5": "session opened for user root"})
    common = {"model_id": "smollm2-135m", "prompt_version": "p3", "created_ms": 1_700_000_000_000}
    return [
        build_verdict(
            Judged(window=hardware, label="abnormal", rationale="Parity errors point at failing memory.", template_labels={"t1": "abnormal", "t2": "normal"},
                   decision="rank", rationale_source="draft", rationale_note="t1: explanation quotes 'ECC' absent from the log"),
            profile="bgl", key_by="host", confidence=0.96, **common,
        ),
        build_verdict(
            Judged(window=network, label="abnormal", rationale="A reset connection broke the transfer.", template_labels={"t3": "normal", "t4": "abnormal"},
                   decision="generate", rationale_source="model"),
            profile="hdfs", **common,
        ),
        build_verdict(Judged(window=quiet, label="normal", template_labels={"t5": "normal"}, decision="operator"), profile="thunderbird", key_by="host", confidence=0.81, **common),
        build_verdict(Judged(window=quiet, label="unknown", reason="t5: timeout", template_labels={"t5": "unknown"}), profile="thunderbird", key_by="host", **common),
    ]


def rendered(fmt: str) -> list[dict[str, Any]]:
    return [orjson.loads(render(v, fmt)) for v in verdicts()]


# --- OCSF ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ocsf_validator():
    schema = ocsf_json_schema.OcsfJsonSchemaEmbedded(ocsf_json_schema.get_ocsf_schema(version=OCSF_VERSION))
    class_schema = schema.get_class_schema(class_name=schema.lookup_class_name_from_uid(2004))
    return jsonschema.Draft202012Validator(class_schema, format_checker=jsonschema.FormatChecker())


def _errors(validator, doc: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message[:160]}" for e in validator.iter_errors(doc)]


def test_ocsf_records_validate_against_ocsf_1_5_detection_finding(ocsf_validator):
    assert OCSF_VERSION == "1.5.0"
    docs = rendered("ocsf")
    for doc in docs:
        assert doc["metadata"]["version"] == "1.5.0"
        assert _errors(ocsf_validator, doc) == []
    assert [d["severity"] for d in docs] == ["Critical", "Medium", "Informational", "Unknown"]


def test_the_ocsf_validator_rejects_what_ocsf_forbids(ocsf_validator):
    """The check is not vacuous: the same records with OCSF-illegal changes fail it."""
    good = rendered("ocsf")[0]
    bad_severity = {**good, "severity_id": "High"}
    assert any(e.startswith("severity_id") for e in _errors(ocsf_validator, bad_severity))
    unknown_attribute = {**good, "verdict": "abnormal"}  # belongs under unmapped
    assert _errors(ocsf_validator, unknown_attribute)
    missing = {k: v for k, v in good.items() if k != "finding_info"}
    assert _errors(ocsf_validator, missing)


# --- ECS -------------------------------------------------------------------------------------

_ISO_DATE = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$"
_STRING = {"keyword", "constant_keyword", "wildcard", "text", "match_only_text", "version"}
_INTEGER = {"long", "integer", "short", "byte", "unsigned_long"}
_NUMBER = {"float", "half_float", "scaled_float", "double"}


def _leaf(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["type"]
    if kind in _STRING:
        schema: dict[str, Any] = {"type": "string"}
        if "allowed" in spec:
            schema["enum"] = spec["allowed"]
    elif kind in _INTEGER:
        schema = {"type": "integer"}
    elif kind in _NUMBER:
        schema = {"type": "number"}
    elif kind == "boolean":
        schema = {"type": "boolean"}
    elif kind == "date":  # Elasticsearch's default: strict_date_optional_time || epoch_millis
        schema = {"anyOf": [{"type": "string", "pattern": _ISO_DATE}, {"type": "integer"}]}
    elif kind == "ip":
        schema = {"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
    elif kind in {"object", "flattened"}:
        schema = {"type": "object"}
    elif kind == "nested":
        schema = {"type": "array", "items": {"type": "object"}}
    elif kind == "geo_point":
        schema = {"type": ["object", "string", "array"]}
    else:
        raise AssertionError(f"ECS type {kind} has no JSON Schema mapping here")
    return {"type": "array", "items": schema} if spec.get("array") else schema


def ecs_json_schema(fields: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """ECS's flat field table as a nested JSON Schema; unknown fields are errors."""
    tree: dict[str, Any] = {}
    for name, spec in fields.items():
        node = tree
        for part in name.split("."):
            node = node.setdefault(part, {})
        node["__spec__"] = spec

    def convert(node: dict[str, Any]) -> dict[str, Any]:
        spec = node.get("__spec__")
        children = {k: v for k, v in node.items() if k != "__spec__"}
        if not children:
            return _leaf(spec)
        obj = {
            "type": "object",
            "properties": {k: convert(v) for k, v in children.items()},
            # An `object` field (e.g. labels) takes keys ECS does not list; a field set does not.
            "additionalProperties": spec is not None and spec["type"] in {"object", "flattened"},
        }
        if spec is not None and spec["type"] == "nested":
            return {"anyOf": [obj, {"type": "array", "items": obj}]}
        return obj

    root = convert(tree)
    root["properties"][CUSTOM_NAMESPACE] = {"type": "object"}  # ECS's advice for custom fields
    root["required"] = ["@timestamp", "ecs"]
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **root}


@pytest.fixture(scope="module")
def ecs_table() -> dict[str, Any]:
    return json.loads(ECS_FIELDS.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def ecs_validator(ecs_table):
    schema = ecs_json_schema(ecs_table["fields"])
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())


def test_ecs_records_pass_the_ecs_field_types(ecs_validator, ecs_table):
    assert ecs_table["ecs_version"] == ECS_VERSION
    docs = rendered("ecs")
    for doc in docs:
        assert doc["ecs"]["version"] == ECS_VERSION
        assert _errors(ecs_validator, doc) == []
        # ECS pairs each event.category with the event.type values it expects.
        expected = ecs_table["fields"]["event.category"]["expected_event_types"]
        for category in doc["event"]["category"]:
            assert set(doc["event"]["type"]) <= set(expected[category]), category
    assert [d["event"]["severity"] for d in docs] == [5, 3, 1, 0]
    assert [d["event"].get("risk_score") for d in docs] == [99.0, 47.0, 0.0, None]


def test_the_ecs_validator_rejects_wrong_types_and_unknown_fields(ecs_validator):
    good = rendered("ecs")[0]
    wrong_type = {**good, "event": {**good["event"], "severity": "high"}}
    assert any(e.startswith("event.severity") for e in _errors(ecs_validator, wrong_type))
    not_allowed = {**good, "event": {**good["event"], "kind": "finding"}}
    assert any(e.startswith("event.kind") for e in _errors(ecs_validator, not_allowed))
    not_an_array = {**good, "event": {**good["event"], "category": "intrusion_detection"}}
    assert _errors(ecs_validator, not_an_array)
    typo = {**good, "rule": {**good["rule"], "nmae": "x"}}
    assert _errors(ecs_validator, typo)
    bad_date = {**good, "@timestamp": "yesterday"}
    assert _errors(ecs_validator, bad_date)


def test_native_records_name_the_same_severity_as_the_siem_forms():
    for verdict, ocsf, ecs in zip(verdicts(), rendered("ocsf"), rendered("ecs"), strict=True):
        native = orjson.loads(render(verdict, "native"))
        assert native["severity"] == ocsf["severity"]
        assert ecs["event"]["severity"] == ocsf["severity_id"]
        assert re.fullmatch(r"[0-9a-f]{32}", native["verdict_id"])

"""Verdicts in the shapes SIEMs read: Elastic Common Schema and OCSF Detection Finding.

ECS has no fields for a model's judgement, so the verdict's own details go under a custom
top-level namespace, `rationanomaly.*` (ECS's advice for custom fields). OCSF gets them under
`unmapped`, the place the schema keeps for source data it has no attribute for.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from rationanomaly.stream.verdicts import Verdict, to_json

ECS_VERSION = "8.17.0"
OCSF_VERSION = "1.4.0"  # the first with is_alert
PRODUCT = "rationanomaly"
VENDOR = "RationAnomaly"

# Elastic's detection-rule bands: low 0-21, medium 22-47, high 48-73, critical 74-100.
# An abnormal window is "high": a model's judgement, not yet a confirmed incident.
_RISK = {"abnormal": 73.0, "normal": 0.0}
# OCSF severity_id: 0 Unknown, 1 Informational, 4 High (ECS event.severity uses the same numbers).
_SEVERITY = {"abnormal": (4, "High"), "normal": (1, "Informational"), "unknown": (0, "Unknown")}


class OutputFormat(str, Enum):
    NATIVE = "native"
    ECS = "ecs"
    OCSF = "ocsf"


def _summary(v: Verdict) -> str:
    w = v.window
    return f"{v.verdict} {w.kind.value} window {w.key} ({w.lines} lines, {len(v.templates)} templates, {v.profile})"


def _explanation(v: Verdict) -> str | None:
    return v.rationale if v.verdict == "abnormal" and v.rationale else v.reason


def _details(v: Verdict) -> dict[str, Any]:
    """The verdict's own fields that neither schema has a place for."""
    w = v.window
    return {
        "schema_version": v.schema_version,
        "verdict": v.verdict,
        "reason": v.reason,
        "rationale": v.rationale,
        "ground_truth": v.ground_truth,
        "profile": v.profile,
        "model": v.model.model_dump(mode="json"),
        "window": {
            "kind": w.kind.value,
            "key": w.key,
            "key_by": w.key_by,
            "lines": w.lines,
            "offsets": [o.model_dump(mode="json") for o in w.offsets],
        },
        "templates": [t.model_dump(mode="json") for t in v.templates],
    }


def to_ecs(v: Verdict) -> dict[str, Any]:
    w = v.window
    severity, _ = _SEVERITY[v.verdict]
    event: dict[str, Any] = {
        "kind": "alert",
        "category": ["intrusion_detection"],
        "type": ["info"],
        "id": v.verdict_id,
        "start": w.start,
        "end": w.end,
        "created": v.created,
        "duration": (w.end_ms - w.start_ms) * 1_000_000,  # ECS durations are nanoseconds
        "severity": severity,
        "dataset": f"{PRODUCT}.verdict",
        "module": PRODUCT,
    }
    risk = _RISK.get(v.verdict)
    if risk is not None:  # an unknown verdict has no risk to report
        event["risk_score"] = risk
        event["risk_score_norm"] = risk
    explanation = _explanation(v)
    if explanation:
        event["reason"] = explanation
    doc: dict[str, Any] = {
        "@timestamp": w.end,  # when the window's last line happened
        "ecs": {"version": ECS_VERSION},
        "message": _summary(v),
        "event": event,
        "rule": {
            "id": f"{PRODUCT}.{w.kind.value}",
            "name": f"RationAnomaly {w.kind.value}-window log anomaly",
            "category": "Log anomaly detection",
            "description": f"A language model's judgement of a {w.kind.value} window of {v.profile} logs",
            "ruleset": v.profile,
            "version": v.model.prompt_version,
        },
        "observer": {
            "vendor": VENDOR,
            "product": PRODUCT,
            "type": "anomaly-detector",
            "version": v.detector_version,
        },
        PRODUCT: _details(v),
    }
    if w.key_by == "host":
        doc["host"] = {"name": w.key}
    return doc


def to_ocsf(v: Verdict) -> dict[str, Any]:
    w = v.window
    severity_id, severity = _SEVERITY[v.verdict]
    finding_info: dict[str, Any] = {
        "uid": v.verdict_id,
        "title": _summary(v),
        "analytic": {
            "type_id": 4,
            "type": "Learning (ML/DL)",
            "name": v.model.id,
            "uid": f"{v.model.id}@{v.model.prompt_version}",
            "version": v.model.prompt_version,
        },
        "created_time": v.created_ms,
        "first_seen_time": w.start_ms,
        "last_seen_time": w.end_ms,
        "data_sources": [v.profile],
        "types": ["Log anomaly"],
    }
    explanation = _explanation(v)
    if explanation:
        finding_info["desc"] = explanation
    doc: dict[str, Any] = {
        "class_uid": 2004,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": 1,
        "activity_name": "Create",
        "type_uid": 200401,
        "type_name": "Detection Finding: Create",
        "severity_id": severity_id,
        "severity": severity,
        "time": w.end_ms,  # when the window's last line happened, as @timestamp in ECS
        "start_time": w.start_ms,
        "end_time": w.end_ms,
        "message": _summary(v),
        "metadata": {
            "version": OCSF_VERSION,
            "uid": v.verdict_id,
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": v.detector_version},
        },
        "finding_info": finding_info,
        "is_alert": v.verdict == "abnormal",
        "status_id": 1,
        "status": "New",
        "unmapped": {PRODUCT: _details(v)},
    }
    if v.confidence is not None:
        doc["confidence_score"] = round(v.confidence * 100)
    else:
        doc["confidence_id"] = 0  # Unknown: the model gives a label, not a calibrated score
    if v.verdict in _RISK:
        doc["risk_score"] = round(_RISK[v.verdict])
    if w.key_by == "host":
        doc["device"] = {"hostname": w.key, "type_id": 0}
        doc["observables"] = [{"name": "device.hostname", "type_id": 1, "type": "Hostname", "value": w.key}]
    return doc


def render(verdict: Verdict, fmt: OutputFormat | str) -> bytes:
    """One verdict as JSON bytes in the chosen shape (no trailing newline)."""
    fmt = OutputFormat(fmt)  # also accepts "ecs" etc.; anything else raises ValueError
    if fmt is OutputFormat.ECS:
        return orjson.dumps(to_ecs(verdict))
    if fmt is OutputFormat.OCSF:
        return orjson.dumps(to_ocsf(verdict))
    return to_json(verdict)

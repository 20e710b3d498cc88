"""Verdicts in the shapes SIEMs read: Elastic Common Schema and OCSF Detection Finding.

ECS has no fields for a model's judgement, so the verdict's own details go under a custom
top-level namespace, `rationanomaly.*` (ECS's advice for custom fields). OCSF gets them under
`unmapped`, the place the schema keeps for source data it has no attribute for.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from rationanomaly.stream.severity import RISK_SCORE, Severity
from rationanomaly.stream.verdicts import Verdict, to_json

ECS_VERSION = "8.17.0"
OCSF_VERSION = "1.5.0"
PRODUCT = "rationanomaly"
VENDOR = "RationAnomaly"
# OCSF risk_level_id by severity_id: 0 Info, 1 Low, 2 Medium, 3 High, 4 Critical.
_RISK_LEVEL = {
    Severity.INFORMATIONAL: (0, "Info"),
    Severity.LOW: (1, "Low"),
    Severity.MEDIUM: (2, "Medium"),
    Severity.HIGH: (3, "High"),
    Severity.CRITICAL: (4, "Critical"),
}


class OutputFormat(str, Enum):
    NATIVE = "native"
    ECS = "ecs"
    OCSF = "ocsf"


class Publish(str, Enum):
    """Which verdicts a stream carries: every one, or only those a SOC acts on."""

    ALL = "all"
    ABNORMAL = "abnormal"


def selected(label: str, publish: Publish, unknown: bool) -> bool:
    """Whether a verdict with this label goes to a stream published with these settings.

    `unknown` (the model could not judge the window) is chosen on its own: an alert stream may
    want to hear that a window went unjudged, or not.

    >>> [selected(x, Publish.ABNORMAL, unknown=False) for x in ("abnormal", "normal", "unknown")]
    [True, False, False]
    >>> [selected(x, Publish.ALL, unknown=False) for x in ("abnormal", "normal", "unknown")]
    [True, True, False]
    """
    if label == "unknown":
        return unknown
    return publish is Publish.ALL or label == "abnormal"


def _summary(v: Verdict) -> str:
    w = v.window
    return f"{v.verdict} {w.kind.value} window {w.key} ({w.lines} lines, {len(v.templates)} templates, {v.profile})"


def _explanation(v: Verdict) -> str | None:
    return v.rationale if v.verdict == "abnormal" and v.rationale else v.reason


def _severity(v: Verdict) -> Severity:
    """The verdict's severity (a verdict read back from before it carried one: by its label)."""
    if v.severity is not None:
        return Severity[v.severity.upper()]
    return {"abnormal": Severity.HIGH, "normal": Severity.INFORMATIONAL}.get(v.verdict, Severity.UNKNOWN)


def _details(v: Verdict) -> dict[str, Any]:
    """The verdict's own fields that neither schema has a place for."""
    w = v.window
    return {
        "schema_version": v.schema_version,
        "verdict": v.verdict,
        "fault_class": v.fault_class,
        "confidence": v.confidence,
        "reason": v.reason,
        "rationale": v.rationale,
        # Provenance: how the label was reached and who wrote the rationale (stream/SIEM.md).
        "decision": v.decision,
        "rationale_source": v.rationale_source,
        "rationale_note": v.rationale_note,
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


def _provenance_tags(v: Verdict) -> list[dict[str, str]]:
    """The verdict's provenance as OCSF key:value tags, so a finding says beside its description
    whether the model or a rule wrote it."""
    pairs = (("decision", v.decision), ("rationale_source", v.rationale_source), ("rationale_note", v.rationale_note))
    return [{"name": name, "value": value} for name, value in pairs if value]


def to_ecs(v: Verdict) -> dict[str, Any]:
    w = v.window
    severity = _severity(v)
    event: dict[str, Any] = {
        # Only an abnormal window is an alert; the others are the detector's record of what it
        # judged, so a SIEM's alert views are not flooded with normal windows.
        "kind": "alert" if v.verdict == "abnormal" else "event",
        "category": ["intrusion_detection"],
        "type": ["info"],
        "id": v.verdict_id,
        "start": w.start,
        "end": w.end,
        "created": v.created,
        "duration": (w.end_ms - w.start_ms) * 1_000_000,  # ECS durations are nanoseconds
        "severity": int(severity),
        "dataset": f"{PRODUCT}.verdict",
        "module": PRODUCT,
    }
    risk = RISK_SCORE[severity]
    if risk is not None:  # an unknown verdict has no risk to report
        event["risk_score"] = float(risk)
        event["risk_score_norm"] = float(risk)
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
    severity = _severity(v)
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
        "types": ["Log anomaly"] + ([f"{v.fault_class} fault"] if v.fault_class else []),
    }
    if v.decision is not None:
        # OCSF's own slot for how an analytic reached its finding: generate, rank or operator.
        finding_info["analytic"]["algorithm"] = v.decision
    tags = _provenance_tags(v)
    if tags:
        finding_info["tags"] = tags
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
        "severity_id": int(severity),
        "severity": severity.label,
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
    if RISK_SCORE[severity] is not None:
        doc["risk_score"] = RISK_SCORE[severity]
        doc["risk_level_id"], doc["risk_level"] = _RISK_LEVEL[severity]
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

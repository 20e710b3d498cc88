"""A real `JudgedWindow` with defaults, for the verdict and SIEM mapping tests."""

from __future__ import annotations

from collections.abc import Mapping

from rationanomaly.model.judgement import DecisionKind, RationaleSource
from rationanomaly.stream.judging import JudgedWindow
from rationanomaly.stream.records import VerdictLabel, Window


def Judged(  # noqa: N802 (reads like the record it builds)
    window: Window,
    label: VerdictLabel,
    reason: str | None = None,
    rationale: str | None = None,
    template_labels: Mapping[str, VerdictLabel] | None = None,
    latency_ms: float = 12.5,
    decision: DecisionKind | None = None,
    rationale_source: RationaleSource | None = None,
    rationale_note: str | None = None,
) -> JudgedWindow:
    return JudgedWindow(window, label, reason, rationale, dict(template_labels or {}), latency_ms,
                        decision=decision, rationale_source=rationale_source, rationale_note=rationale_note)

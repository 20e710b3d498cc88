"""A real `JudgedWindow` with defaults, for the verdict and SIEM mapping tests."""

from __future__ import annotations

from collections.abc import Mapping

from rationanomaly.stream.judging import JudgedWindow
from rationanomaly.stream.records import VerdictLabel, Window


def Judged(  # noqa: N802 (reads like the record it builds)
    window: Window,
    label: VerdictLabel,
    reason: str | None = None,
    rationale: str | None = None,
    template_labels: Mapping[str, VerdictLabel] | None = None,
    latency_ms: float = 12.5,
) -> JudgedWindow:
    return JudgedWindow(window, label, reason, rationale, dict(template_labels or {}), latency_ms)

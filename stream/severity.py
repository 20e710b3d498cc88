"""How bad a verdict is, for a SOC: a severity from the fault class and the model's confidence.

The fault class is the paper's four (hardware, network, software, system), read from the text
of the templates the model called abnormal (all of the window's templates when it judged the
window as a whole) with the same cues the training drafts use (`model.lexicon`). Hardware and
system faults start at High: a failing DIMM or a kernel panic takes a node down. Network and
software faults start at Medium: retries and restarts usually absorb them. When the flagged text
holds no trouble phrase at all (the lexicon's error, fail, exception, timed out, ...), the model's
word is the only evidence and the start is Low, whatever the class (`system` is also where text
with no cue lands). The confidence then moves the start one step: up at 0.9 or more, down below
0.7 (never below Low), not at all in between or when the backend reports none (a generated
verdict has a label, not a probability). A normal verdict is Informational and an unknown one
Unknown, whatever their text.

The numbers are OCSF's `severity_id` (ECS's `event.severity` uses the same ones), and the risk
score is the top of Elastic's detection-rule band for that severity, so a SIEM's own rule
severities and these sort together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

from rationanomaly.model.lexicon import FaultClass, fault_class, has_fault_terms
from rationanomaly.stream.records import VerdictLabel

FaultClassName = Literal["hardware", "network", "software", "system"]
SeverityName = Literal["Unknown", "Informational", "Low", "Medium", "High", "Critical"]

HIGH_CONFIDENCE = 0.9
LOW_CONFIDENCE = 0.7


class Severity(IntEnum):
    """OCSF severity_id values (the subset a verdict can take)."""

    UNKNOWN = 0
    INFORMATIONAL = 1
    LOW = 2
    MEDIUM = 3
    HIGH = 4
    CRITICAL = 5

    @property
    def label(self) -> SeverityName:
        return self.name.capitalize()  # type: ignore[return-value]


_BASE = {
    FaultClass.HARDWARE: Severity.HIGH,
    FaultClass.SYSTEM: Severity.HIGH,
    FaultClass.NETWORK: Severity.MEDIUM,
    FaultClass.SOFTWARE: Severity.MEDIUM,
}

# Elastic's bands: low 0-21, medium 22-47, high 48-73, critical 74-100.
RISK_SCORE = {
    Severity.UNKNOWN: None,
    Severity.INFORMATIONAL: 0,
    Severity.LOW: 21,
    Severity.MEDIUM: 47,
    Severity.HIGH: 73,
    Severity.CRITICAL: 99,
}


@dataclass(frozen=True, slots=True)
class Assessment:
    fault_class: FaultClassName | None
    severity: Severity
    evidence: bool  # the flagged text holds a trouble phrase

    @property
    def risk_score(self) -> int | None:
        return RISK_SCORE[self.severity]


def _flagged_text(templates: Mapping[str, str], template_labels: Mapping[str, VerdictLabel]) -> str:
    flagged = [text for tid, text in templates.items() if template_labels.get(tid) == "abnormal"]
    return "\n".join(flagged or templates.values())


def verdict_fault_class(
    label: VerdictLabel, templates: Mapping[str, str], template_labels: Mapping[str, VerdictLabel]
) -> FaultClassName | None:
    """The fault class of an abnormal window; None for any other verdict.

    >>> verdict_fault_class("abnormal", {"a": "Receiving block", "b": "ECC error on DIMM"}, {"a": "normal", "b": "abnormal"})
    'hardware'
    >>> verdict_fault_class("abnormal", {"a": "Connection refused by peer"}, {}) # judged as a whole
    'network'
    >>> verdict_fault_class("normal", {"a": "ECC error"}, {}) is None
    True
    """
    if label != "abnormal":
        return None
    return fault_class(_flagged_text(templates, template_labels)).value  # type: ignore[return-value]


def severity(label: VerdictLabel, fault: FaultClassName | None, confidence: float | None, evidence: bool = True) -> Severity:
    """The severity table of stream/SIEM.md.

    >>> severity("abnormal", "hardware", 0.95).label, severity("abnormal", "network", 0.5).label
    ('Critical', 'Low')
    >>> severity("abnormal", "software", None).label, severity("normal", None, 0.99).label
    ('Medium', 'Informational')
    >>> severity("abnormal", "system", 0.95, evidence=False).label, severity("abnormal", "system", 0.5, evidence=False).label
    ('Medium', 'Low')
    """
    if label == "unknown":
        return Severity.UNKNOWN
    if label == "normal":
        return Severity.INFORMATIONAL
    base = _BASE[FaultClass(fault or FaultClass.SYSTEM.value)] if evidence else Severity.LOW
    if confidence is None:
        return base
    if confidence >= HIGH_CONFIDENCE:
        return Severity(min(base + 1, Severity.CRITICAL))
    if confidence < LOW_CONFIDENCE:
        return Severity(max(base - 1, Severity.LOW))
    return base


def assess(
    label: VerdictLabel,
    templates: Mapping[str, str],
    template_labels: Mapping[str, VerdictLabel],
    confidence: float | None,
) -> Assessment:
    fault = verdict_fault_class(label, templates, template_labels)
    evidence = label == "abnormal" and has_fault_terms(_flagged_text(templates, template_labels))
    return Assessment(fault, severity(label, fault, confidence, evidence), evidence)

"""The verdict: what the detector publishes for each judged window, and its JSON form.

`verdict_id` is a hash of what determines the verdict (profile, window, model, prompt), so a
replay or a restart after a crash republishes the same id and consumers can drop repeats. The
window is named by its key, its time span and where its lines start (partition, first offset):
two windows of one key can share a time span (a session cut at `windows.max_window_lines`, count
windows of lines stamped the same second), and must not share an id.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from importlib import metadata
from typing import Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from rationanomaly.model.judgement import DecisionKind, RationaleSource
from rationanomaly.stream.records import ForcedBy, Label, VerdictLabel, Window, WindowKind
from rationanomaly.stream.severity import FaultClassName, SeverityName, assess

SCHEMA_VERSION = 1
KeyKind = Literal["session", "host", "component", "none"]
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _detector_version() -> str:
    try:
        return metadata.version("rationanomaly")
    except metadata.PackageNotFoundError:  # running from a checkout that was never installed
        return "0+unknown"


DETECTOR_VERSION = _detector_version()


def verdict_id(
    profile: str,
    kind: WindowKind | str,
    key: str,
    start_ms: int,
    end_ms: int,
    model_id: str,
    prompt_version: str,
    first_offsets: Sequence[tuple[int, int]] = (),
    lines: int | None = None,
) -> str:
    """Deterministic id: the same window judged by the same model and prompt gets the same id.
    `first_offsets`: (partition, first offset) of the window's lines in each partition, for
    windows whose span does not tell them apart (see `window_identity`); `lines`: how many.

    >>> vid = verdict_id("hdfs", "session", "blk_1", 0, 5, "m", "p1", [(0, 17)])
    >>> vid
    'a1d00cd8dcefa1dcec3b32c745c40ff8'
    >>> verdict_id("hdfs", WindowKind.SESSION, "blk_1", 0, 5, "m", "p1", [(0, 17)]) == vid
    True
    >>> verdict_id("hdfs", "session", "blk_1", 0, 5, "m", "p1", [(0, 18)]) == vid
    False
    """
    kind_text = kind.value if isinstance(kind, WindowKind) else kind
    # A JSON array keeps the fields apart: ("a b", "c") and ("a", "b c") hash differently.
    firsts = [[partition, first] for partition, first in first_offsets]
    fields: list[object] = [profile, kind_text, key, start_ms, end_ms, model_id, prompt_version, firsts]
    if lines is not None:
        fields.append(lines)
    return hashlib.blake2b(orjson.dumps(fields), digest_size=16).hexdigest()


def window_identity(window: Window) -> tuple[list[tuple[int, int]], int]:
    """What names a window in its verdict's id, beside key and span: its line count, and where
    its lines start only when the span is not enough.

    A session window that closed by inactivity or by its maximum duration is the only one of its
    key with that start and end, however the input was partitioned, so its id leaves positions
    out: a replay of the file, a one-partition topic and a topic keyed by shipper behind the
    repartition hop all give it the same id. Count windows, time windows (a late line reopens a
    bucket) and windows cut by a memory cap can share key and span with another window, so theirs
    name the (partition, first offset) of their lines as well.
    """
    positional = window.kind is not WindowKind.SESSION or window.forced is not None
    firsts = [(r.partition, r.first) for r in window.offsets] if positional else []
    return firsts, window.lines


# Characters a viewer acts on rather than shows: C0/C1 controls but tab and newline (ANSI escape
# sequences start with one), zero-width and bidirectional overrides ("Trojan Source" reordering).
_UNSHOWN = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_MARKUP = str.maketrans({"<": "‹", ">": "›"})


def inert(text: str | None) -> str | None:
    r"""Free text for publication (rationale, reason): it quotes log content, which an attacker
    writes, and SIEMs render it as HTML or Markdown. Angle brackets become ‹ ›, so no tag, HTML
    comment or autolink survives; a Markdown link or image loses its "](" join; controls that
    a terminal or viewer would act on are dropped. Readable as it was, inert everywhere.

    >>> inert("Template t1 «<script>alert(1)</script> [x](javascript:y)»: \x1b[31mok\u202e")
    'Template t1 «‹script›alert(1)‹/script› [x] (javascript:y)»: [31mok'
    >>> inert("disk <*> failed\nline two") == "disk ‹*› failed\nline two"
    True
    """
    if text is None:
        return None
    return _UNSHOWN.sub("", text).translate(_MARKUP).replace("](", "] (")


def iso_utc(ms: int) -> str:
    """Epoch milliseconds as ISO-8601 UTC with millisecond precision.

    >>> iso_utc(1_226_262_975_123)
    '2008-11-09T20:36:15.123Z'
    >>> iso_utc(-1)
    '1969-12-31T23:59:59.999Z'
    """
    day, into_day = divmod(ms, 86_400_000)
    date = _DAYS.get(day)
    if date is None:
        # Formatting a datetime is the slow part (three times a verdict): each day is formatted
        # once, and the time of day is plain arithmetic (UTC has no leap seconds here either).
        if len(_DAYS) >= 1024:
            _DAYS.clear()
        date = _DAYS[day] = f"{_EPOCH + timedelta(days=day):%Y-%m-%d}"
    second, milli = divmod(into_day, 1000)
    minute, second = divmod(second, 60)
    hour, minute = divmod(minute, 60)
    return f"{date}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}Z"


_DAYS: dict[int, str] = {}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OffsetSpan(_Model):
    topic: str
    partition: int
    first: int
    last: int


class VerdictWindow(_Model):
    kind: WindowKind
    key: str
    key_by: KeyKind | None = None  # what the key names; "host" lets SIEM mappings fill host.name
    start: str  # ISO-8601 UTC, event time of the first line
    start_ms: int
    end: str
    end_ms: int
    lines: int = Field(ge=1)
    offsets: tuple[OffsetSpan, ...]
    # Closed early by this memory cap (stream/windows.py): the key's next lines are another window.
    forced: ForcedBy | None = None


class TemplateVerdict(_Model):
    id: str
    text: str
    count: int = Field(ge=1)  # lines of the window with this template
    verdict: VerdictLabel | None = None  # per template in template mode; None when not judged alone
    # Who wrote this template's part of the rationale (abnormal templates in template mode).
    rationale_source: RationaleSource | None = None


class ModelInfo(_Model):
    id: str
    prompt_version: str
    latency_ms: float = Field(ge=0)


class Verdict(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    verdict_id: str
    verdict: VerdictLabel
    reason: str | None = None  # why the verdict is "unknown"
    window: VerdictWindow
    templates: tuple[TemplateVerdict, ...]  # in order of first appearance
    rationale: str | None = None  # the step-by-step analysis behind an "abnormal" verdict
    # Provenance (stream/README.md, "Provenance"): how the label was reached, who wrote the
    # rationale, and why it is not the model's own when the model's was asked for. None in
    # verdicts written before they existed; rationale_source is None when there is no rationale.
    decision: DecisionKind | None = None
    rationale_source: RationaleSource | None = None
    rationale_note: str | None = None
    model: ModelInfo
    confidence: float | None = Field(None, ge=0, le=1)  # only if a backend reports one
    # From the abnormal templates' text and the confidence (stream/severity.py); None in
    # verdicts written before they existed.
    fault_class: FaultClassName | None = None
    severity: SeverityName | None = None
    ground_truth: Label | None = None  # from labelled data (evaluation); never shown to the model
    profile: str
    detector_version: str
    created: str  # processing time, ISO-8601 UTC
    created_ms: int


class JudgedLike(Protocol):
    """What `build_verdict` reads from a judged window (stream.judging.JudgedWindow fits)."""

    @property
    def window(self) -> Window: ...
    @property
    def label(self) -> VerdictLabel: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def rationale(self) -> str | None: ...
    @property
    def template_labels(self) -> Mapping[str, VerdictLabel]: ...
    @property
    def latency_ms(self) -> float: ...
    @property
    def decision(self) -> DecisionKind | None: ...
    @property
    def rationale_source(self) -> RationaleSource | None: ...
    @property
    def rationale_note(self) -> str | None: ...
    @property
    def template_sources(self) -> Mapping[str, RationaleSource]: ...


def build_verdict(
    judged: JudgedLike,
    *,
    profile: str,
    model_id: str,
    prompt_version: str,
    created_ms: int,
    key_by: KeyKind | None = None,
    detector_version: str = DETECTOR_VERSION,
    confidence: float | None = None,
) -> Verdict:
    """`key_by` is the windows' `key_by` for count/time windows; session keys are "session"."""
    w = judged.window
    counts = Counter(w.sequence)
    labels = judged.template_labels
    sources = judged.template_sources
    assessment = assess(judged.label, w.templates, labels, confidence)
    topic = w.topic
    # Plain data validated in one call: the nested models' own constructors would each cost a
    # Python-level __init__ (eight or so a verdict); the checks and the result are the same.
    return Verdict.model_validate({
        "verdict_id": verdict_id(profile, w.kind, w.key, w.start_ms, w.end_ms, model_id, prompt_version,
                                 *window_identity(w)),
        "verdict": judged.label,
        "reason": inert(judged.reason),
        "window": {
            "kind": w.kind,
            "key": w.key,
            "key_by": "session" if w.kind is WindowKind.SESSION else key_by,
            "start": iso_utc(w.start_ms),
            "start_ms": w.start_ms,
            "end": iso_utc(w.end_ms),
            "end_ms": w.end_ms,
            "lines": w.lines,
            "offsets": [{"topic": topic, "partition": r.partition, "first": r.first, "last": r.last} for r in w.offsets],
            "forced": w.forced,
        },
        "templates": [
            {"id": tid, "text": text, "count": counts[tid], "verdict": labels.get(tid), "rationale_source": sources.get(tid)}
            for tid, text in w.templates.items()
        ],
        "rationale": inert(judged.rationale),
        "decision": judged.decision,
        "rationale_source": judged.rationale_source if judged.rationale else None,
        "rationale_note": inert(judged.rationale_note),
        "model": {"id": model_id, "prompt_version": prompt_version, "latency_ms": max(0.0, judged.latency_ms)},
        "confidence": confidence,
        "fault_class": assessment.fault_class,
        "severity": assessment.severity.label,
        "ground_truth": w.ground_truth,
        "profile": profile,
        "detector_version": detector_version,
        "created": iso_utc(created_ms),
        "created_ms": created_ms,
    })


def to_json(verdict: Verdict) -> bytes:
    return orjson.dumps(verdict.model_dump(mode="json"))


def from_json(data: bytes | str) -> Verdict:
    """Raises pydantic.ValidationError or orjson.JSONDecodeError (both ValueError) on bad input."""
    return Verdict.model_validate(orjson.loads(data))

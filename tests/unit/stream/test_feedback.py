"""Operator corrections: validation, resolution to templates, and what the cache holds."""

from __future__ import annotations

import orjson
import pytest

from rationanomaly.stream.feedback import (
    Correction,
    VerdictMemory,
    apply_correction,
    correction_record,
    parse_correction,
    resolve,
)
from rationanomaly.stream.judging import TemplateCache


class _Verdict:
    def __init__(self, verdict_id, templates):
        self.verdict_id = verdict_id
        self.templates = [type("T", (), {"id": t, "verdict": v, "text": f"text of {t}"})() for t, v in templates]


class _Sink:
    def __init__(self):
        self.emitted, self.letters = [], []

    def emit(self, verdict):
        self.emitted.append(verdict)

    def dead_letter(self, letter):
        self.letters.append(letter)


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"", "empty record"),
        (b"not json", "not a correction"),
        (b'{"template_id": "t1", "label": "maybe", "by": "al"}', "label"),
        (b'{"label": "normal", "by": "al"}', "names a verdict_id or a template_id"),
        (b'{"template_id": "t1", "label": "normal"}', "by"),
        (b'{"template_id": "t1", "label": "normal", "by": "al", "extra": 1}', "extra"),
    ],
)
def test_bad_records_are_refused_with_a_reason(raw, reason):
    with pytest.raises(ValueError, match=reason):
        parse_correction(raw)


def test_verdict_ids_resolve_through_the_verdicts_published_lately():
    sink = _Sink()
    memory = VerdictMemory(sink, size=2)
    memory.emit(_Verdict("v1", [("t1", "normal"), ("t2", "abnormal"), ("t3", "abnormal")]))
    memory.emit(_Verdict("v2", [("t9", "normal")]))
    assert len(sink.emitted) == 2  # passed on, not kept back
    to_normal = Correction(verdict_id="v1", label="normal", by="al")
    assert resolve(to_normal, memory) == ["t2", "t3"]  # what the verdict flagged
    assert resolve(Correction(verdict_id="v2", label="abnormal", by="al"), memory) == ["t9"]
    with pytest.raises(ValueError, match="name the template_id that is abnormal"):
        resolve(Correction(verdict_id="v1", label="abnormal", by="al"), memory)
    assert resolve(Correction(verdict_id="v1", template_id="t1", label="abnormal", by="al"), memory) == ["t1"]
    with pytest.raises(ValueError, match="not in verdict"):
        resolve(Correction(verdict_id="v1", template_id="t7", label="abnormal", by="al"), memory)
    assert memory.text_of("t2") == "text of t2"
    key, value = correction_record("t2", to_normal, memory.text_of("t2"))
    assert orjson.loads(value)["template"] == "text of t2"  # for `review export`, and so for training
    memory.emit(_Verdict("v3", [("t4", "normal")]))  # v1 falls out of the bounded memory
    with pytest.raises(ValueError, match="not among the verdicts"):
        resolve(to_normal, memory)


def test_a_correction_overrides_the_cache_until_withdrawn():
    cache = TemplateCache()
    correction = Correction(template_id="t1", label="abnormal", note="disk errors precede this", by="al")
    key, value = correction_record("t1", correction)
    assert key == b"t1" and orjson.loads(value)["template_id"] == "t1"
    apply_correction(cache, key, value)
    judged = cache.get("t1")
    assert (judged.label, judged.rationale, judged.decision, judged.rationale_source) == (
        "abnormal", "disk errors precede this", "operator", "operator")  # fmt: skip
    assert cache.get("t2") is None
    apply_correction(cache, b"t1", None)  # a tombstone withdraws it
    assert cache.get("t1") is None
    apply_correction(cache, b"t2", b"garbage")  # an unreadable record changes nothing
    assert cache.get("t2") is None

"""Teacher rationales: only those agreeing with gold are kept, with provenance."""

from __future__ import annotations

from rationanomaly.model.backends.base import Generation
from rationanomaly.training.data import load_split
from rationanomaly.training.teacher import collect_teacher_rationales


class ScriptedTeacher:
    """Answers 'normal' first, then 'abnormal' on the retry (a stand-in for a real endpoint)."""

    model_id = "scripted"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, conversations):
        self.calls += 1
        label = "normal" if self.calls == 1 else "abnormal"
        text = f"<think>Key parameters checked. Conclusion: {label}.</think> <answer>{label}</answer>"
        return [Generation(text, 0.01) for _ in conversations]

    def close(self) -> None:
        pass


def test_keeps_only_gold_matching_rationales() -> None:
    examples = [e for e in load_split("bgl_dev") if e.label == "abnormal"][:2] + load_split("bgl_dev")[:2]
    out, stats = collect_teacher_rationales(examples, ScriptedTeacher(), samples=2)
    assert stats.kept == 4 and stats.rejected == 0
    assert all(e.rationale_source == "teacher:scripted" for e in out)
    assert all(e.rationale.endswith(f"{e.label}.") for e in out)
    out, stats = collect_teacher_rationales(examples, ScriptedTeacher(), samples=1)
    assert stats.kept == sum(e.label == "normal" for e in examples)
    assert all(e.rationale is None for e in out if e.label == "abnormal")

"""Session-level evaluation by the paper's rule, with a scripted classifier (the rule, not the model)."""

from __future__ import annotations

from rationanomaly.model.judgement import Judgement
from rationanomaly.training.data import load_split
from rationanomaly.training.evaluate import compute_metrics, judge_examples, sessions_by_template_rule


class KeywordClassifier:
    """Flags a template that mentions 'exception' (a stand-in; the real model is tested elsewhere)."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.inputs: list[str | tuple[str, ...]] = []

    def decide(self, inputs):
        out = []
        for log in inputs:
            text = log if isinstance(log, str) else "\n".join(log)
            self.seen.append(text)
            self.inputs.append(log)
            label = "abnormal" if "exception" in text.lower() else "normal"
            out.append(Judgement(label, f"Conclusion: {label}.", None, 0.1, 1, None))
        return out


def test_each_distinct_template_judged_once_and_any_rule() -> None:
    sessions = load_split("hdfs_dev")[:300]
    classifier = KeywordClassifier()
    results, templates = sessions_by_template_rule(sessions, classifier)
    distinct = {t for s in sessions for t in s.templates}
    assert len(classifier.seen) == len(distinct) == len(templates)
    for session, result in zip(sessions, results, strict=True):
        expected = any("exception" in t.lower() for t in session.templates)
        assert (result.predicted == "abnormal") == expected
        assert result.gold == session.label
    assert compute_metrics(results).n == 300


def test_window_mode_reads_the_sequence() -> None:
    sessions = load_split("hdfs_dev")[:5]
    classifier = KeywordClassifier()
    results = judge_examples(sessions, classifier)
    assert len(results) == 5
    assert sorted(classifier.inputs) == sorted(tuple(s.templates) for s in sessions)  # each whole sequence
    assert [r.id for r in results] == [s.example_id for s in sessions]

"""Metrics and the TF-IDF baseline (no model)."""

from __future__ import annotations

from rationanomaly.training.data import load_split
from rationanomaly.training.evaluate import ItemResult, abnormality, compute_metrics, lenient_label, roc_auc, tfidf_baseline


def item(gold: str, predicted: str, consistent: bool | None = True) -> ItemResult:
    return ItemResult("i", "d", gold, predicted, "r" if predicted != "unknown" else None, consistent, 0.5)


def test_confusion_and_scores() -> None:
    items = [item("abnormal", "abnormal"), item("abnormal", "abnormal"), item("abnormal", "normal"),
             item("normal", "abnormal", False), item("normal", "normal"), item("normal", "unknown", None)]
    m = compute_metrics(items)
    assert (m.tp, m.fp, m.fn, m.tn) == (2, 1, 1, 2)
    assert m.precision == 2 / 3 and m.recall == 2 / 3 and abs(m.f1 - 2 / 3) < 1e-12
    assert m.format_valid_rate == 5 / 6 and m.consistency_rate == 4 / 5 and m.mean_latency_s == 0.5


def test_empty_and_degenerate() -> None:
    assert compute_metrics([]).f1 == 0.0
    assert compute_metrics([item("normal", "normal")]).precision == 0.0


def test_lenient_label() -> None:
    assert lenient_label("<answer>abnormal") == "abnormal"
    assert lenient_label("This log is normal and routine.") == "normal"
    assert lenient_label("r16=0x1") == "unknown"


def scored(gold: str, score: float | None) -> ItemResult:
    return ItemResult("i", "d", gold, "normal", None, None, 0.0, score=score)


def test_auc_against_a_count_of_ordered_pairs() -> None:
    golds = ["abnormal", "normal", "abnormal", "normal", "normal", "abnormal", "normal"]
    scores = [0.9, 0.8, 0.8, 0.3, 0.1, 0.05, 0.05]
    items = [scored(g, s) for g, s in zip(golds, scores)]
    pos = [s for g, s in zip(golds, scores) if g == "abnormal"]
    neg = [s for g, s in zip(golds, scores) if g == "normal"]
    by_hand = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
    assert roc_auc(items) == by_hand == (4 + 3.5 + 0.5) / 12
    assert compute_metrics(items).auc == by_hand
    assert roc_auc([scored("abnormal", s) for s in (0.1, 0.9)]) is None  # one class: undefined
    assert compute_metrics([item("abnormal", "abnormal")]).auc is None  # a generated answer has no score


def test_abnormality_turns_a_confidence_in_either_label_into_one_order() -> None:
    # The rank decision's confidence is a logistic of margin − threshold for the chosen label, so
    # the two labels' confidences map onto one increasing score of the margin.
    assert abnormality("abnormal", 0.8) == 0.8 and abs(abnormality("normal", 0.8) - 0.2) < 1e-12
    assert abnormality("abnormal", 0.6) > abnormality("normal", 0.6) > abnormality("normal", 0.9)
    assert abnormality("unknown", 0.9) is None and abnormality("normal", None) is None


def test_tfidf_baseline_beats_chance_on_bgl_dev() -> None:
    items = tfidf_baseline(load_split("bgl_train"), load_split("bgl_dev"))
    m = compute_metrics(items)
    assert m.n == 265 and m.f1 > 0.3
    assert all(0.0 <= i.score <= 1.0 for i in items)
    assert all((i.predicted == "abnormal") == (i.score > 0.5) for i in items)
    assert m.auc is not None and m.auc > 0.9


def test_the_plot_gives_every_system_its_own_row(tmp_path) -> None:
    from PIL import Image

    from rationanomaly.training.report import write_plot

    def report(systems: int) -> dict:
        sections = [{"system": f"system {k}", "dataset": d, "level": "template", "f1": 0.1 * (k % 10)}
                    for k in range(systems) for d in ("bgl", "spirit")]
        return {"overall": {"tn": 5, "fp": 1, "fn": 2, "tp": 3, "f1": 0.667}, "sections": sections}

    few = write_plot(report(2), tmp_path / "few.png")
    many = write_plot(report(24), tmp_path / "many.png")
    assert few.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(few) as small, Image.open(many) as large:
        assert large.height > 2 * small.height  # rows, not a crowd of thinner columns

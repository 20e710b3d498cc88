"""Metrics and the TF-IDF baseline (no model)."""

from __future__ import annotations

from rationanomaly.training.data import load_split
from rationanomaly.training.evaluate import ItemResult, compute_metrics, lenient_label, tfidf_baseline


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


def test_tfidf_baseline_beats_chance_on_bgl_dev() -> None:
    items = tfidf_baseline(load_split("bgl_train"), load_split("bgl_dev"))
    m = compute_metrics(items)
    assert m.n == 265 and m.f1 > 0.3

"""Calibrate the rank decision: the margin above which an input is called abnormal.

A fine-tuned model's margin (log p(abnormal answer) − log p(normal answer), `model.ranking`)
ranks inputs far better than its sign decides them: SFT over-samples anomalies, and the two
drafts differ in length. The threshold is picked on train splits — never on dev, which
measures it — as the value that maximises the mean of the per-dataset F1s, so a large,
nearly all-normal dataset cannot drown a small one. Scoring every normal template costs two
passes each; a seeded sample of them stands in, each weighted by how many it represents.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rationanomaly.model.ranking import Scorer, margins
from rationanomaly.training.data import LogExample, log_input


@dataclass(frozen=True, slots=True)
class Scored:
    dataset: str
    gold: str
    margin: float
    weight: float = 1.0  # how many examples of the full split this one stands for


def weighted_f1(scored: Sequence[Scored], threshold: float) -> float:
    """F1 (abnormal positive) of calling `margin > threshold` abnormal, with normal weights.

    >>> s = [Scored("d", "abnormal", 2.0), Scored("d", "normal", 1.0, 3.0), Scored("d", "abnormal", 0.5)]
    >>> round(weighted_f1(s, 0.0), 3)  # tp 2, fp 3
    0.571
    >>> weighted_f1(s, 1.5)  # tp 1, fn 1
    0.6666666666666666
    """
    tp = sum(s.weight for s in scored if s.gold == "abnormal" and s.margin > threshold)
    fp = sum(s.weight for s in scored if s.gold != "abnormal" and s.margin > threshold)
    fn = sum(s.weight for s in scored if s.gold == "abnormal" and s.margin <= threshold)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def f1_by_dataset(scored: Sequence[Scored], threshold: float) -> dict[str, float]:
    """F1 per dataset at one threshold.

    >>> f1_by_dataset([Scored("a", "abnormal", 1.0), Scored("b", "abnormal", -1.0)], 0.0)
    {'a': 1.0, 'b': 0.0}
    """
    datasets = sorted({s.dataset for s in scored})
    return {d: weighted_f1([s for s in scored if s.dataset == d], threshold) for d in datasets}


def best_threshold(scored: Sequence[Scored]) -> tuple[float, dict[str, float]]:
    """The threshold with the highest mean per-dataset F1, and those F1s.

    Candidates are midpoints between neighbouring margins (plus 0); ties go to the one nearest
    0, the uncalibrated decision, so calibration moves it only as far as the data asks.

    >>> s = [Scored("a", "abnormal", 1.0), Scored("a", "normal", -1.0), Scored("a", "normal", 0.2)]
    >>> best_threshold(s)
    (0.6, {'a': 1.0})
    """
    if not any(s.gold == "abnormal" for s in scored):
        raise ValueError("calibration needs at least one abnormal example")
    values = sorted({s.margin for s in scored})
    candidates = {0.0} | {(a + b) / 2 for a, b in zip(values, values[1:])}

    def key(threshold: float) -> tuple[float, float]:
        f1s = f1_by_dataset(scored, threshold)
        return (sum(f1s.values()) / len(f1s), -abs(threshold))

    best = max(candidates, key=key)
    return round(best, 4), f1_by_dataset(scored, best)


def calibration_sample(examples: Sequence[LogExample], normal_per_dataset: int, seed: int = 0,
                       abnormal_per_dataset: int | None = None) -> list[tuple[LogExample, float]]:
    """Every abnormal example (or a sample of `abnormal_per_dataset`) and up to
    `normal_per_dataset` normal ones per dataset, each weighted to restore the dataset's label mix."""
    by_dataset: dict[str, list[LogExample]] = {}
    for example in examples:
        by_dataset.setdefault(example.provenance.dataset, []).append(example)
    rng = random.Random(seed)
    sample: list[tuple[LogExample, float]] = []
    for dataset in sorted(by_dataset):
        group = by_dataset[dataset]
        abnormal = [e for e in group if e.label == "abnormal"]
        normal = [e for e in group if e.label != "abnormal"]
        kept = rng.sample(normal, min(normal_per_dataset, len(normal)))
        caught = abnormal if abnormal_per_dataset is None else rng.sample(abnormal, min(abnormal_per_dataset, len(abnormal)))
        sample += [(e, len(abnormal) / len(caught)) for e in caught]
        sample += [(e, len(normal) / len(kept)) for e in kept]
    return sample


def score_sample(score: Scorer, sample: Sequence[tuple[LogExample, float]]) -> list[Scored]:
    """The rank decision's margin for each (example, weight) of a calibration sample."""
    values = margins(score, [log_input(e) for e, _ in sample])
    return [Scored(e.provenance.dataset, e.label, m, w) for (e, w), m in zip(sample, values, strict=True)]


def calibrate_on_holdout(model: Any, tokenizer: Any, held: Sequence[LogExample], batch_size: int = 16) -> dict[str, Any]:
    """The threshold that maximises the mean per-dataset F1 on the held-out examples, with those
    F1s and each dataset's AUC of the margin (how well it ranks, whatever the threshold)."""
    from rationanomaly.model.scoring import scorer
    from rationanomaly.training.evaluate import auc

    scored = score_sample(scorer(model, tokenizer, batch_size=batch_size), [(e, 1.0) for e in held])
    threshold, f1s = best_threshold(scored)
    aucs = {d: auc([(s.gold == "abnormal", s.margin) for s in scored if s.dataset == d]) for d in f1s}
    return {"threshold": threshold, "holdout_f1": {d: round(f, 4) for d, f in f1s.items()},
            "holdout_auc": {d: None if a is None else round(a, 4) for d, a in aucs.items()}}

"""Is one system really better than another on the same dev items, or is it one template's luck?

The dev splits are small in the class that matters (17 BGL and 26 Spirit anomalies), so one
template flipped moves F1 by 0.03–0.06. An ablation claim ("SFT+GRPO above SFT") needs the
difference set against that noise. Both tests here are paired, because both systems judged the
same items:

- a paired bootstrap of the F1 difference: resample the items with replacement, score both
  systems on each resample, and read the 95% interval of F1(B) − F1(A) and the share of
  resamples where B wins;
- McNemar's exact test on the items exactly one system gets right (two-sided binomial on the
  discordant pairs), which asks whether the two make different mistakes more often than chance.

Inputs are the per-item files `rationanomaly eval` writes (`*.items.jsonl`), matched by file and
item id; a file holding several systems (a model and its baselines) is filtered by `system`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

POOLED = "pooled"


@dataclass(frozen=True, slots=True)
class Judged:
    """One item as one system judged it."""

    key: tuple[str, str]  # (eval file, item id)
    dataset: str
    gold_abnormal: bool
    flagged: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    """B against A on one dataset (or all pooled)."""

    dataset: str
    n: int
    anomalies: int
    f1_a: float
    f1_b: float
    ci_low: float  # 2.5th percentile of F1(B) − F1(A) over resamples
    ci_high: float
    b_wins: float  # share of resamples with F1(B) > F1(A)
    only_a_right: int
    only_b_right: int
    mcnemar_p: float

    @property
    def delta(self) -> float:
        return self.f1_b - self.f1_a


def read_items(path: Path, system: str | None = None) -> list[Judged]:
    """The items of one system from an items file; `system` may be left out when the file holds
    one. Unparseable answers count as not flagged, as in the report's strict F1."""
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    systems = sorted({r["system"] for r in rows})
    if system is None:
        if len(systems) != 1:
            raise ValueError(f"{path} holds systems {systems}: name one")
        system = systems[0]
    elif system not in systems:
        raise ValueError(f"{path} has no system {system!r}; it holds {systems}")
    return [
        Judged((r["file"], str(r["id"])), r["dataset"], r["gold"] == "abnormal", r["predicted"] == "abnormal")
        for r in rows
        if r["system"] == system
    ]


def f1(gold: np.ndarray, flagged: np.ndarray) -> np.ndarray:
    """F1 with abnormal positive along the last axis; 0 where nothing is flagged or abnormal.

    >>> float(f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool)))
    0.5
    """
    tp = (gold & flagged).sum(-1)
    wrong = (gold ^ flagged).sum(-1)
    denominator = 2 * tp + wrong
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: the chance, if neither system were better, of a split of
    the discordant items at least this uneven.

    >>> mcnemar_exact(0, 0)
    1.0
    >>> round(mcnemar_exact(0, 6), 4)
    0.0312
    """
    n = only_a + only_b
    if n == 0:
        return 1.0
    k = min(only_a, only_b)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _pair(a: Sequence[Judged], b: Sequence[Judged]) -> list[tuple[Judged, Judged]]:
    by_key = {j.key: j for j in b}
    missing = [j.key for j in a if j.key not in by_key]
    if missing or len(a) != len(b):
        raise ValueError(f"the two systems judged different items ({len(a)} against {len(b)}; "
                         f"first unmatched: {missing[:3]})")
    pairs = [(j, by_key[j.key]) for j in a]
    clash = [x.key for x, y in pairs if x.gold_abnormal != y.gold_abnormal]
    if clash:
        raise ValueError(f"gold labels differ between the files, e.g. {clash[:3]}")
    return pairs


def compare_one(dataset: str, pairs: Sequence[tuple[Judged, Judged]], rounds: int, rng: np.random.Generator) -> Comparison:
    gold = np.array([x.gold_abnormal for x, _ in pairs])
    a = np.array([x.flagged for x, _ in pairs])
    b = np.array([y.flagged for _, y in pairs])
    # One index matrix for both systems keeps the resamples paired.
    idx = rng.integers(0, len(pairs), size=(rounds, len(pairs)))
    deltas = f1(gold[idx], b[idx]) - f1(gold[idx], a[idx])
    a_right, b_right = a == gold, b == gold
    only_a, only_b = int((a_right & ~b_right).sum()), int((b_right & ~a_right).sum())
    return Comparison(
        dataset=dataset, n=len(pairs), anomalies=int(gold.sum()),
        f1_a=float(f1(gold, a)), f1_b=float(f1(gold, b)),
        ci_low=float(np.percentile(deltas, 2.5)), ci_high=float(np.percentile(deltas, 97.5)),
        b_wins=float((deltas > 0).mean()),
        only_a_right=only_a, only_b_right=only_b, mcnemar_p=mcnemar_exact(only_a, only_b),
    )


def compare(a: Sequence[Judged], b: Sequence[Judged], rounds: int = 5000, seed: int = 0) -> list[Comparison]:
    """B against A per dataset, then pooled over all items when there are several datasets."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    pairs = _pair(a, b)
    rng = np.random.default_rng(seed)
    datasets = sorted({x.dataset for x, _ in pairs})
    found = [compare_one(d, [p for p in pairs if p[0].dataset == d], rounds, rng) for d in datasets]
    if len(datasets) > 1:
        found.append(compare_one(POOLED, pairs, rounds, rng))
    return found


def markdown(rows: Iterable[Comparison], name_a: str, name_b: str) -> str:
    lines = [
        f"B = {name_b} against A = {name_a} (paired, same items)",
        "",
        "| dataset | n | anomalies | F1 A | F1 B | Δ F1 | 95% interval of Δ | B wins | only A right | only B right | McNemar p |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in rows:
        lines.append(
            f"| {c.dataset} | {c.n} | {c.anomalies} | {c.f1_a:.3f} | {c.f1_b:.3f} | {c.delta:+.3f} | "
            f"[{c.ci_low:+.3f}, {c.ci_high:+.3f}] | {c.b_wins:.0%} | {c.only_a_right} | {c.only_b_right} | {c.mcnemar_p:.3f} |"
        )
    return "\n".join(lines) + "\n"

"""Paired comparison of two systems' verdicts: hand-computed F1s, McNemar, bootstrap, bad input."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from rationanomaly.training.compare import Judged, compare, markdown, mcnemar_exact, read_items


def judged(rows: list[tuple[str, bool, bool]]) -> list[Judged]:
    return [Judged(("dev.jsonl", str(i)), d, gold, flagged) for i, (d, gold, flagged) in enumerate(rows)]


def write_items(path: Path, system: str, rows: list[tuple[str, bool, bool]]) -> Path:
    lines = [
        orjson.dumps({"file": "dev.jsonl", "id": f"x/{i}", "dataset": d, "system": system,
                      "gold": "abnormal" if g else "normal", "predicted": "abnormal" if p else "normal"})
        for i, (d, g, p) in enumerate(rows)
    ]
    with path.open("ab") as f:
        f.write(b"\n".join(lines) + b"\n")
    return path


# Gold: 4 anomalies, 6 normal. A catches 2 with 2 false alarms; B catches 3 with 1 false alarm.
GOLD = [True] * 4 + [False] * 6
A = [True, True, False, False, True, True, False, False, False, False]
B = [True, True, True, False, True, False, False, False, False, False]


def test_f1_and_discordant_counts_match_a_hand_computation() -> None:
    a = judged([("bgl", g, p) for g, p in zip(GOLD, A)])
    b = judged([("bgl", g, p) for g, p in zip(GOLD, B)])
    (row,) = compare(a, b, rounds=200)
    # A: tp 2, fp 2, fn 2 → 4/8; B: tp 3, fp 1, fn 1 → 6/8.
    assert row.f1_a == pytest.approx(0.5) and row.f1_b == pytest.approx(0.75)
    assert row.delta == pytest.approx(0.25)
    # B alone right on item 2 (caught) and item 5 (no false alarm); A alone right nowhere.
    assert (row.only_a_right, row.only_b_right) == (0, 2)
    assert row.mcnemar_p == pytest.approx(0.5)
    assert row.n == 10 and row.anomalies == 4
    assert row.ci_low <= row.delta <= row.ci_high


def test_identical_systems_give_a_zero_interval_and_p_one() -> None:
    a = judged([("spirit", g, p) for g, p in zip(GOLD, A)])
    (row,) = compare(a, list(a), rounds=100)
    assert row.ci_low == row.ci_high == 0.0
    assert row.b_wins == 0.0 and row.mcnemar_p == 1.0


def test_a_consistent_win_is_significant_and_the_interval_excludes_zero() -> None:
    gold = [True] * 20 + [False] * 80
    a = judged([("bgl", g, False) for g in gold])  # misses every anomaly
    b = judged([("bgl", g, g) for g in gold])  # perfect
    (row,) = compare(a, b, rounds=500)
    assert row.f1_a == 0.0 and row.f1_b == 1.0
    assert row.ci_low > 0 and row.b_wins == 1.0
    assert row.mcnemar_p == pytest.approx(2 * 0.5**20)


def test_several_datasets_add_a_pooled_row() -> None:
    a = judged([("bgl", True, True), ("bgl", False, False), ("spirit", True, False), ("spirit", False, False)])
    b = judged([("bgl", True, True), ("bgl", False, False), ("spirit", True, True), ("spirit", False, False)])
    rows = compare(a, b, rounds=50)
    assert [r.dataset for r in rows] == ["bgl", "spirit", "pooled"]
    assert rows[-1].f1_a == pytest.approx(2 / 3) and rows[-1].f1_b == 1.0
    assert "| pooled | 4 | 2 |" in markdown(rows, "sft", "grpo")


def test_mcnemar_is_symmetric_and_bounded() -> None:
    assert mcnemar_exact(3, 1) == mcnemar_exact(1, 3) == pytest.approx(2 * 5 / 16)
    assert mcnemar_exact(5, 5) == 1.0
    assert mcnemar_exact(0, 10) == pytest.approx(2 / 2**10)
    assert not math.isnan(mcnemar_exact(200, 0))


def test_items_files_are_read_by_system_and_mismatches_refused(tmp_path: Path) -> None:
    rows = [("bgl", g, p) for g, p in zip(GOLD, A)]
    both = write_items(tmp_path / "both.items.jsonl", "sft", rows)
    write_items(both, "tfidf", [("bgl", g, p) for g, p in zip(GOLD, B)])
    with pytest.raises(ValueError, match="name one"):
        read_items(both)
    with pytest.raises(ValueError, match="no system 'grpo'"):
        read_items(both, "grpo")
    sft, tfidf = read_items(both, "sft"), read_items(both, "tfidf")
    assert [j.flagged for j in sft] == A and [j.flagged for j in tfidf] == B
    with pytest.raises(ValueError, match="different items"):
        compare(sft, tfidf[:-1])
    flipped = [Judged(j.key, j.dataset, not j.gold_abnormal, j.flagged) for j in tfidf]
    with pytest.raises(ValueError, match="gold labels differ"):
        compare(sft, flipped)
    with pytest.raises(ValueError, match="rounds"):
        compare(sft, tfidf, rounds=0)

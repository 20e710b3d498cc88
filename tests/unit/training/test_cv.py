"""The CV protocol (`training/cv.py`): folds stratified and seeded, thresholds chosen on training
items only, retrieval votes that never see a held-out label, margins read back from items files,
session rules fitted on real HDFS sessions, and a run that keeps to its budget and resumes."""

from __future__ import annotations

import doctest
import itertools
from collections import Counter

import numpy as np
import orjson
import pytest

import rationanomaly.training.cv as cv
from rationanomaly.model.ranking import confidence
from rationanomaly.training.data import load_split


def test_doctests() -> None:
    assert doctest.testmod(cv).failed == 0


def test_folds_are_stratified_even_and_seeded() -> None:
    strata = ["bgl/abnormal"] * 17 + ["bgl/normal"] * 248 + ["spirit/abnormal"] * 26 + ["spirit/normal"] * 169
    fold = cv.stratified_folds(strata, 5, seed=0)
    for stratum, n in Counter(strata).items():
        per_fold = Counter(f for f, s in zip(fold, strata) if s == stratum)
        assert set(per_fold) == set(range(5))
        assert max(per_fold.values()) - min(per_fold.values()) <= 1, stratum
    sizes = Counter(fold).values()
    assert max(sizes) - min(sizes) <= 1
    assert cv.stratified_folds(strata, 5, seed=0) == fold
    assert cv.stratified_folds(strata, 5, seed=1) != fold
    with pytest.raises(ValueError):
        cv.stratified_folds(strata, 1, 0)


def test_threshold_maximises_the_mean_of_per_dataset_f1_between_scores() -> None:
    # "a" has its anomaly at 0.5 among normals at 0.4 and below; "b" has normals up to 0.7.
    scores = [0.1, 0.4, 0.5, 0.2, 0.7, 0.9]
    gold = [False, False, True, False, False, True]
    groups = ["a", "a", "a", "b", "b", "b"]
    threshold, mean = cv.best_threshold(scores, gold, groups)
    # 0.45 keeps "a" perfect but lets b's 0.7 through (b: 2/3); 0.8 drops a's anomaly (a: 0).
    assert threshold == pytest.approx(0.45)
    assert mean == pytest.approx((1.0 + 2 / 3) / 2)
    assert cv.best_threshold([1.0, 1.0], [True, False], ["a", "a"])[0] < 1.0


def test_a_fold_vote_uses_only_labels_in_its_pool() -> None:
    gold = np.array([True, False, True, False])
    row = [(2, 0.9), (1, 0.8), (3, 0.1)]  # neighbours of item 0
    pool = np.array([True, True, False, True])  # item 2 is held out
    share, chosen = cv.pooled_vote(row, pool, gold, k=2)
    assert [j for j, _ in chosen] == [1, 3]
    assert share == 0.0
    share, chosen = cv.pooled_vote(row, np.ones(4, bool), gold, k=1)
    assert share == 1.0


def test_neighbour_table_never_lists_the_item_itself_and_keeps_to_its_dataset() -> None:
    items = load_split("bgl_dev")[:40] + load_split("spirit_dev")[:40]
    table = cv.neighbour_table(items, keep=5)
    for i, row in enumerate(table):
        assert all(j != i for j, _ in row)
        assert all(items[j].provenance.dataset == items[i].provenance.dataset for j, _ in row)
        assert [s for _, s in row] == sorted((s for _, s in row), reverse=True)


def test_margins_read_back_from_rank_scores(tmp_path) -> None:
    threshold = -1.2113
    path = tmp_path / "items.jsonl"
    margins = {"bgl/dev/0": -4.0, "bgl/dev/1": 0.5, "spirit/dev/2": -1.0}
    with path.open("wb") as handle:
        for item_id, m in margins.items():
            label = "abnormal" if m > threshold else "normal"
            c = confidence(m, threshold, label)
            score = c if label == "abnormal" else 1 - c
            handle.write(orjson.dumps({"id": item_id, "score": score}) + b"\n")
    read = cv.read_margins(path, threshold)
    assert read == pytest.approx(margins, abs=1e-6)


def test_blend_choice_takes_the_vote_when_the_margin_alone_cannot_separate() -> None:
    # Margins tie for an anomaly and a normal; the vote tells them apart: weight > 0 wins.
    margins = np.array([0.0, 0.0, -3.0, 2.0])
    gold = np.array([True, False, False, True])
    votes = np.array([0.9, 0.1, 0.2, 0.8])
    blend, f1 = cv.choose_blend(margins, lambda k: votes, gold, np.array(["bgl"] * 4))
    assert f1 == 1.0 and blend.weight > 0
    blend, _ = cv.choose_blend(np.array([1.0, -1.0]), lambda k: np.array([0.5, 0.5]), np.array([True, False]),
                               np.array(["bgl"] * 2))
    assert blend.weight == 0.0  # an uninformative vote: the model alone (the lowest weight among ties)


def test_adapter_ceiling_is_the_best_f1_any_threshold_k_and_weight_reach_per_dataset() -> None:
    rng = np.random.default_rng(3)
    n = 40
    datasets = np.array(["bgl"] * n + ["spirit"] * n)
    gold = np.array(([True] * 6 + [False] * (n - 6)) * 2)
    margins = rng.normal(0, 1, 2 * n) + 0.8 * gold  # overlapping: no threshold separates them
    votes = {k: np.clip(rng.normal(0.3, 0.2, 2 * n) + 0.25 * gold * (k / 20), 0, 1) for k in cv.K_GRID}
    ceiling = cv.adapter_ceiling(margins, lambda k: votes[k], gold, datasets, weights=(0.0, 1.0, 2.5))

    def f1_at_every_threshold(score: np.ndarray, g: np.ndarray) -> list[float]:
        cuts = [score.min() - 1.0, *score]  # flag score > cut: every distinct flagged set
        return [cv.counts(g, score > c).f1 for c in cuts]

    for d in ("bgl", "spirit"):
        m = datasets == d
        alone = f1_at_every_threshold(margins[m], gold[m])
        blends = [f for k in cv.K_GRID for w in (0.0, 1.0, 2.5)
                  for f in f1_at_every_threshold(margins[m] + w * (2 * votes[k][m] - 1), gold[m])]
        row = ceiling[d]
        assert row["margin_alone_f1"] == pytest.approx(max(alone), abs=1e-4)
        assert row["blend_f1"] == pytest.approx(max(blends), abs=1e-4)
        assert row["blend_f1"] >= row["margin_alone_f1"]  # weight 0 is the margin alone
        assert max(alone) < 1.0  # the case is not trivially separable
        # the reported choice reproduces the ceiling
        score = margins[m] + row["blend_weight"] * (2 * votes[row["blend_k"]][m] - 1)
        c = cv.counts(gold[m], score > row["blend_threshold"])
        assert (c.tp, c.fp, c.fn) == (row["blend_tp"], row["blend_fp"], row["blend_fn"])
        assert c.f1 == pytest.approx(row["blend_f1"], abs=1e-4)


def test_session_rules_fitted_on_real_hdfs_name_what_decided() -> None:
    train = load_split("hdfs_train")
    rules = cv.fit_session_rules(train, depth=2)
    assert "Exception in receiveBlock for block <*> <*>" in rules.implicated
    normal_templates = {t for s in train if s.label == "normal" for t in s.templates}
    assert not rules.implicated & normal_templates
    flagged = [rules.judge(s.templates) for s in train if s.label == "abnormal"]
    caught = [v for v in flagged if v.label == "abnormal"]
    assert len(caught) > len(flagged) / 3
    assert all(v.reasons and "'" in v.rationale() for v in caught)
    c = cv._session_counts(rules, train)
    assert c.precision > 0.9


def test_hdfs_ceiling_counts_sequences_shared_with_normal_sessions() -> None:
    from rationanomaly.training.data import LogExample, Provenance

    def s(label: str, *templates: str) -> LogExample:
        return LogExample(tuple(templates), label, Provenance("hdfs", "t", "x"))

    sessions = [s("normal", "a", "b"), s("normal", "a", "b"), s("abnormal", "a", "b"), s("abnormal", "a", "c")]
    ceiling = cv.hdfs_ceiling(sessions)
    assert ceiling["same_sequence_as_a_normal_session"] == 1
    assert ceiling["oracle_recall"] == 0.5 and ceiling["oracle_f1"] == pytest.approx(2 / 3, abs=1e-4)


def test_run_keeps_to_its_budget_and_resumes(tmp_path) -> None:
    ticks = itertools.count(0, 10)  # every clock read is 10 s later
    run = cv.CVRun(tmp_path, protocols=("hdfs",), folds=3, seeds=(0,), budget_s=15)
    path = cv.run_cv(run, clock=lambda: next(ticks))
    first = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert 0 < len(first) < 3  # stopped by the budget
    path = cv.run_cv(cv.CVRun(tmp_path, protocols=("hdfs",), folds=3, seeds=(0,), budget_s=1e9))
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert rows[: len(first)] == first  # finished folds kept, not rerun
    assert sorted(r["fold"] for r in rows) == [0, 1, 2]
    summary = cv.summarise(path)
    systems = {r["system"]: r for r in summary["rows"]}
    assert set(systems) == {"implicated_templates", "implicated+count_tree"}
    assert all(r["folds"] == 3 for r in systems.values())
    # each session is held out once: pooled counts cover every train session
    total = sum(sum(x[k] for k in ("tp", "fp", "fn", "tn")) for row in rows for x in row["results"]
                if x["system"] == "implicated_templates")
    assert total == len(load_split("hdfs_train"))
    assert "| hdfs |" in cv.markdown(summary)
    with pytest.raises(ValueError, match="unknown protocol"):
        cv.cv_main(tmp_path, ["bogus"], 5, [0], 1.0, None, None)

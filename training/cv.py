"""Honest selection: k-fold cross-validation over train+dev, every choice made inside the folds.

Three protocols, each with its own folds (stratified by dataset × label, seeded):
- `templates`: every BGL and Spirit train+dev template. Systems refitted per fold: TF-IDF + LR
  (the shipped baseline, threshold 0.5) and the retrieval vote alone (`model.retrieval`; its k
  and threshold chosen on the training folds by leave-one-out votes).
- `adapter`: the shipped adapter's rank margins exist honestly only where it never trained, the
  dev split (it trained on all of train; `MODEL_CARD.md`). These come from a cached items file
  (`--adapter-items`), are folded over dev alone, and the retrieval index holds train plus the
  training folds. Systems: the model at its shipped threshold, the model with a CV threshold,
  the retrieval vote, the blend of margin and vote (`RetrievalBlend`: k, weight and threshold
  chosen on the training folds), TF-IDF + LR fitted on the same pool. Caveat: the adapter was
  itself picked among checkpoints by dev F1, so its margins on dev are still flattered.
- `hdfs`: HDFS train sessions. Systems: templates implicated by session labels, and that plus
  a count tree (`model.sessions`), its depth chosen on an inner split of the training folds.

Every fold's figures are appended to `<out>/cv_folds.jsonl` as soon as it ends; a rerun skips the
folds already there (resume), and a time budget stops before a fold that would start after it.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import structlog

from rationanomaly.model.retrieval import RetrievalBlend, RetrievalIndex
from rationanomaly.model.sessions import SessionRules
from rationanomaly.training.data import LogExample, load_split
from rationanomaly.training.evaluate import tfidf_baseline

log = structlog.get_logger(__name__)

PROTOCOLS = ("templates", "adapter", "hdfs")
DATASETS = ("bgl", "spirit")
K_GRID = (3, 5, 10, 20)
WEIGHT_GRID = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)
DEPTH_GRID = (1, 2, 3, 4, 6)
SHIPPED_THRESHOLD = -1.2113  # decision.json of the shipped adapter
_POOL_NEIGHBOURS = 60  # neighbours kept per item; a fold's pool keeps ~80% of them, k <= 20 needs fewer


# --- pure pieces -----------------------------------------------------------------------------


def stratified_folds(strata: Sequence[str], k: int, seed: int) -> list[int]:
    """A fold number per item: each stratum shuffled with `seed` and dealt round-robin.

    >>> stratified_folds(["a", "a", "b", "b", "b"], 2, 0).count(0) in (2, 3)
    True
    """
    if k < 2:
        raise ValueError(f"k must be >= 2, got {k}")
    rng = random.Random(seed)
    fold = [0] * len(strata)
    members: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(strata):
        members[s].append(i)
    offset = 0
    for stratum in sorted(members):
        ids = members[stratum]
        rng.shuffle(ids)
        for j, i in enumerate(ids):
            fold[i] = (j + offset) % k
        offset += len(ids)  # the next stratum starts where this one stopped: folds stay even
    return fold


@dataclass(frozen=True, slots=True)
class Counts:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp else 0.0

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


def counts(gold: Sequence[bool], flagged: Sequence[bool]) -> Counts:
    g = np.asarray(gold, bool)
    p = np.asarray(flagged, bool)
    return Counts(int((g & p).sum()), int((~g & p).sum()), int((g & ~p).sum()), int((~g & ~p).sum()))


def best_threshold(scores: Sequence[float], gold: Sequence[bool], groups: Sequence[str]) -> tuple[float, float]:
    """The threshold (flag when score > it) maximising the mean per-group F1, and that mean.

    Candidates lie midway between consecutive distinct scores, so the choice does not sit on a
    training item's own score.

    >>> best_threshold([0.1, 0.2, 0.8, 0.9], [False, False, True, True], ["a"] * 4)
    (0.5, 1.0)
    """
    s = np.asarray(scores, float)
    g = np.asarray(gold, bool)
    grp = np.asarray(groups)
    distinct = np.unique(s)
    candidates = np.concatenate([[distinct[0] - 1.0], (distinct[:-1] + distinct[1:]) / 2]) if len(distinct) > 1 \
        else np.array([distinct[0] - 1.0])
    flagged = s[None, :] > candidates[:, None]
    means = np.zeros(len(candidates))
    names = sorted(set(grp.tolist()))
    for name in names:
        m = grp == name
        tp = (flagged[:, m] & g[m]).sum(1)
        fp = (flagged[:, m] & ~g[m]).sum(1)
        fn = (~flagged[:, m] & g[m]).sum(1)
        means += np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    means /= len(names)
    best = int(np.argmax(means))  # the first best: the lowest threshold among ties
    return float(candidates[best]), float(means[best])


# --- neighbours, computed once -----------------------------------------------------------------


def _key(text: str) -> str:
    return " ".join(text.lower().split())  # the index's own notion of "the same template"


def neighbour_table(examples: Sequence[LogExample], keep: int = _POOL_NEIGHBOURS) -> list[list[tuple[int, float]]]:
    """For each example, its nearest others of the same dataset: (example index, similarity).

    One index over all items (IDF from their text, never their labels); a fold then keeps the
    neighbours in its pool, so an item never sees its own or a held-out item's label.
    """
    index = RetrievalIndex()
    where: dict[tuple[str, str], int] = {}
    for i, e in enumerate(examples):
        index.add(e.source, e.label, "train", e.provenance.dataset)
        where[(e.provenance.dataset, _key(e.source))] = i
    table = []
    for e in examples:
        found = index.nearest(e.source, keep, dataset=e.provenance.dataset, exclude_self=True)
        table.append([(where[(e.provenance.dataset, _key(n.example.template))], n.similarity) for n in found])
    return table


def pooled_vote(row: Sequence[tuple[int, float]], in_pool: np.ndarray, gold: np.ndarray, k: int) -> tuple[float, list[tuple[int, float]]]:
    chosen = [(j, s) for j, s in row if in_pool[j]][:k]
    total = sum(max(s, 1e-6) for _, s in chosen)
    if not total:
        return 0.5, chosen
    return sum(max(s, 1e-6) for j, s in chosen if gold[j]) / total, chosen


# --- the protocols -----------------------------------------------------------------------------


def _template_items(root: Path | None) -> list[LogExample]:
    return [e for d in DATASETS for split in ("train", "dev") for e in load_split(f"{d}_{split}", root)]


def _per_dataset(records: list[dict], system: str, datasets: np.ndarray, gold: np.ndarray, flagged: np.ndarray,
                 params: dict[str, Any]) -> None:
    for d in DATASETS:
        m = datasets == d
        c = counts(gold[m], flagged[m])
        records.append({"system": system, "dataset": d, "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn, "params": params})


def _choose_vote(rows, idx_train, in_pool, gold, datasets) -> tuple[int, float]:
    best = (-1.0, K_GRID[0], 0.5)
    for k in K_GRID:
        votes = [pooled_vote(rows[i], in_pool, gold, k)[0] for i in idx_train]
        t, f = best_threshold(votes, gold[idx_train], datasets[idx_train])
        if f > best[0]:
            best = (f, k, t)
    return best[1], best[2]


def templates_fold(items: Sequence[LogExample], rows, fold_of: np.ndarray, fold: int) -> list[dict]:
    gold = np.array([e.label == "abnormal" for e in items])
    datasets = np.array([e.provenance.dataset for e in items])
    test = np.flatnonzero(fold_of == fold)
    train = np.flatnonzero(fold_of != fold)
    in_pool = fold_of != fold
    records: list[dict] = []
    tfidf = tfidf_baseline([items[i] for i in train], [items[i] for i in test])
    _per_dataset(records, "tfidf_lr", datasets[test], gold[test], np.array([r.predicted == "abnormal" for r in tfidf]), {})
    k, t = _choose_vote(rows, train, in_pool, gold, datasets)
    votes = np.array([pooled_vote(rows[i], in_pool, gold, k)[0] for i in test])
    _per_dataset(records, "retrieval", datasets[test], gold[test], votes > t, {"k": k, "threshold": t})
    return records


def read_margins(items_path: Path, threshold: float = SHIPPED_THRESHOLD) -> dict[str, float]:
    """The rank margin per item id from an eval items file (score = logistic(margin − threshold))."""
    margins = {}
    for line in items_path.read_bytes().splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        p = min(max(float(row["score"]), 1e-12), 1 - 1e-12)
        margins[row["id"]] = math.log(p / (1 - p)) + threshold
    return margins


def choose_blend(margins: np.ndarray, vote_at: Callable[[int], np.ndarray], gold: np.ndarray,
                 datasets: np.ndarray) -> tuple[RetrievalBlend, float]:
    """The (k, weight, threshold) maximising mean per-dataset F1 on these (training-fold) items."""
    best: tuple[float, RetrievalBlend] | None = None
    for k in K_GRID:
        v = vote_at(k)
        for w in WEIGHT_GRID:
            t, f = best_threshold(margins + w * (2 * v - 1), gold, datasets)
            if best is None or f > best[0] + 1e-12:
                best = (f, RetrievalBlend(weight=w, threshold=t, k=k))
    assert best is not None
    return best[1], best[0]


CEILING_WEIGHTS = tuple(sorted({*WEIGHT_GRID, *(w / 4 for w in range(0, 49))}))  # 0..12 nats by 0.25


def adapter_ceiling(margins: np.ndarray, vote_at: Callable[[int], np.ndarray], gold: np.ndarray,
                    datasets: np.ndarray, weights: Sequence[float] = CEILING_WEIGHTS) -> dict[str, dict[str, Any]]:
    """Per dataset, the best F1 reachable on these very items: the margin alone with its best
    threshold, and the blend margin + w·(2·vote − 1) with k, w and threshold all chosen here.

    An in-sample upper bound for the adapter protocol (every choice sees the items it is scored
    on), not a method: no fold-chosen setting of this margin and this index can beat it.
    """
    out: dict[str, dict[str, Any]] = {}
    votes = {k: np.asarray(vote_at(k), float) for k in K_GRID}
    for d in sorted(set(datasets.tolist())):
        m = datasets == d
        g = gold[m]
        one = np.full(int(m.sum()), d)
        t_alone, f_alone = best_threshold(margins[m], g, one)
        best = (-1.0, 0, 0.0, 0.0)
        for k in K_GRID:
            for w in weights:
                t, f = best_threshold(margins[m] + w * (2 * votes[k][m] - 1), g, one)
                if f > best[0] + 1e-12:
                    best = (f, k, float(w), t)
        c = counts(g, margins[m] + best[2] * (2 * votes[best[1]][m] - 1) > best[3])
        out[d] = {"items": int(m.sum()), "abnormal": int(g.sum()),
                  "margin_alone_f1": round(f_alone, 4), "margin_alone_threshold": t_alone,
                  "blend_f1": round(best[0], 4), "blend_k": best[1], "blend_weight": best[2],
                  "blend_threshold": best[3], "blend_tp": c.tp, "blend_fp": c.fp, "blend_fn": c.fn}
    return out


def adapter_fold(items: Sequence[LogExample], rows, margins: np.ndarray, is_dev: np.ndarray,
                 fold_of: np.ndarray, fold: int) -> list[dict]:
    gold = np.array([e.label == "abnormal" for e in items])
    datasets = np.array([e.provenance.dataset for e in items])
    test = np.flatnonzero(is_dev & (fold_of == fold))
    dev_train = np.flatnonzero(is_dev & (fold_of != fold))
    in_pool = ~(is_dev & (fold_of == fold))  # train + dev training folds
    records: list[dict] = []
    tfidf = tfidf_baseline([items[i] for i in np.flatnonzero(in_pool)], [items[i] for i in test])
    _per_dataset(records, "tfidf_lr", datasets[test], gold[test], np.array([r.predicted == "abnormal" for r in tfidf]), {})
    _per_dataset(records, "model_shipped_threshold", datasets[test], gold[test], margins[test] > SHIPPED_THRESHOLD,
                 {"threshold": SHIPPED_THRESHOLD})
    t, _ = best_threshold(margins[dev_train], gold[dev_train], datasets[dev_train])
    _per_dataset(records, "model_cv_threshold", datasets[test], gold[test], margins[test] > t, {"threshold": t})
    k, tv = _choose_vote(rows, dev_train, in_pool, gold, datasets)
    votes = np.array([pooled_vote(rows[i], in_pool, gold, k)[0] for i in test])
    _per_dataset(records, "retrieval", datasets[test], gold[test], votes > tv, {"k": k, "threshold": tv})

    def vote_at(k: int, ids: np.ndarray = dev_train) -> np.ndarray:
        return np.array([pooled_vote(rows[i], in_pool, gold, k)[0] for i in ids])

    blend, _ = choose_blend(margins[dev_train], vote_at, gold[dev_train], datasets[dev_train])
    score = margins[test] + blend.weight * (2 * vote_at(blend.k, test) - 1)
    _per_dataset(records, "model+retrieval", datasets[test], gold[test], score > blend.threshold,
                 {"k": blend.k, "weight": blend.weight, "threshold": blend.threshold})
    return records


# --- HDFS sessions -----------------------------------------------------------------------------


def fit_session_rules(sessions: Sequence[LogExample], depth: int, seed: int = 0) -> SessionRules:
    """Implicated templates (abnormal sessions only) plus a count tree of at most `depth` levels."""
    from sklearn.tree import DecisionTreeClassifier

    normal: Counter[str] = Counter()
    abnormal: Counter[str] = Counter()
    for s in sessions:
        (abnormal if s.label == "abnormal" else normal).update(set(s.templates))
    implicated = sorted(t for t in abnormal if not normal[t])
    vocab = sorted(set(normal) | set(abnormal))
    column = {t: j for j, t in enumerate(vocab)}
    x = np.zeros((len(sessions), len(vocab)))
    for i, s in enumerate(sessions):
        for t in s.templates:
            x[i, column[t]] += 1
    y = np.array([s.label == "abnormal" for s in sessions])
    nodes: list[dict[str, Any]] = []
    if depth > 0:
        tree = DecisionTreeClassifier(max_depth=depth, random_state=seed).fit(x, y).tree_
        positive = 1 if len(tree.value[0][0]) > 1 else 0
        for n in range(tree.node_count):
            leaf = tree.children_left[n] == -1
            value = tree.value[n][0]
            nodes.append({
                "template": None if leaf else vocab[tree.feature[n]],
                "at_most": float(tree.threshold[n]) if not leaf else 0.0,
                "left": int(tree.children_left[n]), "right": int(tree.children_right[n]),
                "abnormal": bool(leaf and value[positive] > value.sum() / 2),
            })
    return SessionRules.from_dict({"implicated": implicated, "tree": nodes, "depth": depth,
                                   "fitted_on_sessions": len(sessions)})


def _session_counts(rules: SessionRules, sessions: Sequence[LogExample]) -> Counts:
    return counts([s.label == "abnormal" for s in sessions], [rules.judge(s.templates).label == "abnormal" for s in sessions])


def choose_depth(sessions: Sequence[LogExample], seed: int) -> int:
    """The tree depth with the best F1 on an inner stratified 25% of these sessions."""
    inner = stratified_folds([s.label for s in sessions], 4, seed + 1000)
    fit = [s for s, f in zip(sessions, inner) if f != 0]
    held = [s for s, f in zip(sessions, inner) if f == 0]
    scored = [(_session_counts(fit_session_rules(fit, d, seed), held).f1, -d, d) for d in (0, *DEPTH_GRID)]
    return max(scored)[2]  # ties: the shallower tree


def hdfs_fold(sessions: Sequence[LogExample], fold_of: np.ndarray, fold: int, seed: int) -> list[dict]:
    train = [s for s, f in zip(sessions, fold_of) if f != fold]
    test = [s for s, f in zip(sessions, fold_of) if f == fold]
    records = []
    for system, depth in (("implicated_templates", 0), ("implicated+count_tree", choose_depth(train, seed))):
        c = _session_counts(fit_session_rules(train, depth, seed), test)
        records.append({"system": system, "dataset": "hdfs", "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn,
                        "params": {"depth": depth}})
    return records


def hdfs_ceiling(sessions: Sequence[LogExample]) -> dict[str, int]:
    """How many abnormal sessions share their exact template sequence with a normal one: no
    function of the sequence can tell those apart."""
    normal = Counter(s.templates for s in sessions if s.label == "normal")
    abnormal = Counter(s.templates for s in sessions if s.label == "abnormal")
    # The best any function of the sequence can do on these very sessions: each distinct
    # sequence takes its majority label (an in-sample upper bound, not a method).
    flagged = [seq for seq, n in abnormal.items() if n >= normal.get(seq, 0)]
    tp = sum(abnormal[seq] for seq in flagged)
    fp = sum(normal.get(seq, 0) for seq in flagged)
    fn = sum(abnormal.values()) - tp
    return {"abnormal": sum(abnormal.values()),
            "same_sequence_as_a_normal_session": sum(n for seq, n in abnormal.items() if seq in normal),
            "oracle_f1": round(Counts(tp, fp, fn, 0).f1, 4), "oracle_recall": round(tp / max(tp + fn, 1), 4)}


# --- the run ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CVRun:
    out_dir: Path
    protocols: tuple[str, ...] = PROTOCOLS
    folds: int = 5
    seeds: tuple[int, ...] = (0,)
    budget_s: float = 1800.0
    adapter_items: Path | None = None
    data_root: Path | None = None


def _done(path: Path) -> set[tuple[str, int, int]]:
    if not path.exists():
        return set()
    done = set()
    for line in path.read_bytes().splitlines():
        if line.strip():
            row = orjson.loads(line)
            done.add((row["protocol"], row["seed"], row["fold"]))
    return done


def run_cv(run: CVRun, clock: Callable[[], float] = time.monotonic) -> Path:
    """Run the folds not yet in `<out>/cv_folds.jsonl`, within the budget; return that file."""
    run.out_dir.mkdir(parents=True, exist_ok=True)
    path = run.out_dir / "cv_folds.jsonl"
    done = _done(path)
    started = clock()
    needed = [(p, s, f) for p in run.protocols for s in run.seeds for f in range(run.folds) if (p, s, f) not in done]
    if not needed:
        log.info("cv.nothing_to_do", folds=len(done))
        return path
    templates = rows = margins = is_dev = None
    if {"templates", "adapter"} & {p for p, _, _ in needed}:
        templates = _template_items(run.data_root)
        rows = neighbour_table(templates)
    if "adapter" in {p for p, _, _ in needed}:
        if run.adapter_items is None:
            raise ValueError("the adapter protocol needs --adapter-items (an eval items file with rank scores on dev)")
        by_id = read_margins(run.adapter_items)
        is_dev = np.array([e.provenance.split == "dev" for e in templates])
        missing = [e.example_id for e, d in zip(templates, is_dev) if d and e.example_id not in by_id]
        if missing:
            raise ValueError(f"{run.adapter_items}: no score for {len(missing)} dev items, e.g. {missing[:3]}")
        margins = np.array([by_id.get(e.example_id, math.nan) for e in templates])
    sessions = load_split("hdfs_train", run.data_root) if "hdfs" in {p for p, _, _ in needed} else None
    for protocol, seed, fold in needed:
        if clock() - started > run.budget_s:
            log.warning("cv.budget_spent", left=len(needed), budget_s=run.budget_s)
            break
        t0 = clock()
        if protocol == "templates":
            strata = [f"{e.provenance.dataset}/{e.label}" for e in templates]
            records = templates_fold(templates, rows, np.array(stratified_folds(strata, run.folds, seed)), fold)
        elif protocol == "adapter":
            strata = [f"{e.provenance.dataset}/{e.label}" if d else "train" for e, d in zip(templates, is_dev)]
            fold_of = np.array(stratified_folds(strata, run.folds, seed))
            records = adapter_fold(templates, rows, margins, is_dev, fold_of, fold)
        else:
            fold_of = np.array(stratified_folds([s.label for s in sessions], run.folds, seed))
            records = hdfs_fold(sessions, fold_of, fold, seed)
        line = {"protocol": protocol, "seed": seed, "fold": fold, "folds": run.folds, "wall_s": round(clock() - t0, 2),
                "results": records}
        with path.open("ab") as handle:
            handle.write(orjson.dumps(line) + b"\n")
        log.info("cv.fold", protocol=protocol, seed=seed, fold=fold, wall_s=line["wall_s"])
    return path


def summarise(path: Path) -> dict[str, Any]:
    """Per protocol, system and dataset: fold F1 mean ± sd, and P/R/F1 pooled over each seed's folds."""
    folds: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    pooled: dict[tuple[str, str, str, int], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    params: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        row = orjson.loads(line)
        for r in row["results"]:
            key = (row["protocol"], r["system"], r["dataset"])
            c = Counts(r["tp"], r["fp"], r["fn"], r["tn"])
            folds[key].append(c.f1)
            acc = pooled[(*key, row["seed"])]
            for j, v in enumerate((c.tp, c.fp, c.fn, c.tn)):
                acc[j] += v
            params[key].append(r["params"])
    summary = []
    for key, f1s in sorted(folds.items()):
        per_seed = [Counts(*acc) for (p, s, d, _), acc in pooled.items() if (p, s, d) == key]
        summary.append({
            "protocol": key[0], "system": key[1], "dataset": key[2], "folds": len(f1s),
            "f1_mean": round(float(np.mean(f1s)), 4), "f1_sd": round(float(np.std(f1s, ddof=1)) if len(f1s) > 1 else 0.0, 4),
            "pooled_precision": round(float(np.mean([c.precision for c in per_seed])), 4),
            "pooled_recall": round(float(np.mean([c.recall for c in per_seed])), 4),
            "pooled_f1": round(float(np.mean([c.f1 for c in per_seed])), 4),
            "params": params[key],
        })
    return {"rows": summary}


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| protocol | system | dataset | folds | F1 mean ± sd | pooled P / R / F1 |", "|---|---|---|---|---|---|"]
    for r in summary["rows"]:
        lines.append(f"| {r['protocol']} | {r['system']} | {r['dataset']} | {r['folds']} | "
                     f"{r['f1_mean']:.3f} ± {r['f1_sd']:.3f} | {r['pooled_precision']:.3f} / {r['pooled_recall']:.3f} / "
                     f"{r['pooled_f1']:.3f} |")
    return "\n".join(lines) + "\n"


# --- the shipped choices, fitted once the folds are in -------------------------------------------


def ship(run: CVRun, adapter_dir: Path | None) -> dict[str, Any]:
    """Fit each shipped choice by the CV procedure on all the data it may see, read dev once.

    - Retrieval blend: (k, weight, threshold) chosen on every dev item (leave-one-out votes
      against train + the rest of dev), as in each fold; written as `retrieval.json` beside the
      adapter. There is no untouched split left for it to be read on: its honest figure is the
      adapter protocol's CV one.
    - HDFS session rules: depth chosen on an inner split of hdfs_train, fitted on all of it,
      `hdfs_dev` read once; written as `hdfs_sessions.json` beside the adapter.
    """
    out: dict[str, Any] = {}
    if "adapter" in run.protocols and run.adapter_items is not None:
        templates = _template_items(run.data_root)
        rows = neighbour_table(templates)
        by_id = read_margins(run.adapter_items)
        dev = np.flatnonzero([e.provenance.split == "dev" for e in templates])
        gold = np.array([e.label == "abnormal" for e in templates])
        datasets = np.array([e.provenance.dataset for e in templates])
        margins = np.array([by_id[templates[i].example_id] for i in dev])
        everyone = np.ones(len(templates), bool)

        def vote_at(k: int) -> np.ndarray:
            return np.array([pooled_vote(rows[i], everyone, gold, k)[0] for i in dev])

        blend, fitted = choose_blend(margins, vote_at, gold[dev], datasets[dev])
        out["retrieval"] = {"weight": blend.weight, "threshold": blend.threshold, "k": blend.k,
                            "chosen_on": "dev (leave-one-out votes; index train+dev)", "fitted_mean_f1": round(fitted, 4),
                            "margins_from": run.adapter_items.name, "index": "bgl_train, spirit_train, bgl_dev, spirit_dev"}
        # The most any k / weight / threshold could give on dev, each dataset tuned on itself.
        for d, row in adapter_ceiling(margins, vote_at, gold[dev], datasets[dev]).items():
            out[f"ceiling_adapter_{d}"] = {**row, "chosen_on": "dev itself (in-sample upper bound)",
                                           "margins_from": run.adapter_items.name}
    if "hdfs" in run.protocols:
        train = load_split("hdfs_train", run.data_root)
        dev = load_split("hdfs_dev", run.data_root)
        depth = choose_depth(train, 0)
        rules = fit_session_rules(train, depth)
        c = _session_counts(rules, dev)
        out["hdfs_sessions"] = {"depth": depth, "dev_read_once": {"precision": round(c.precision, 4),
                                "recall": round(c.recall, 4), "f1": round(c.f1, 4), "tp": c.tp, "fp": c.fp, "fn": c.fn, "tn": c.tn},
                                "ceiling_train": hdfs_ceiling(train), "ceiling_dev": hdfs_ceiling(dev),
                                "ceiling_train+dev": hdfs_ceiling([*train, *dev])}
        if adapter_dir is not None:
            (adapter_dir / "hdfs_sessions.json").write_bytes(orjson.dumps(rules.to_dict(), option=orjson.OPT_INDENT_2))
    if adapter_dir is not None and "retrieval" in out:
        (adapter_dir / "retrieval.json").write_bytes(orjson.dumps(out["retrieval"], option=orjson.OPT_INDENT_2))
    return out


def cv_main(out_dir: Path, protocols: Sequence[str], folds: int, seeds: Sequence[int], budget_min: float,
            adapter_items: Path | None, ship_to: Path | None, data_root: Path | None = None) -> list[Path]:
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocol(s) {unknown}; choose from {PROTOCOLS}")
    run = CVRun(out_dir, tuple(protocols), folds, tuple(seeds), budget_min * 60, adapter_items, data_root)
    folds_path = run_cv(run)
    summary = summarise(folds_path)
    summary["shipped"] = ship(run, ship_to)
    summary["protocol"] = {"folds": folds, "seeds": list(seeds), "stratified_by": "dataset x label",
                           "k_grid": K_GRID, "weight_grid": WEIGHT_GRID, "depth_grid": DEPTH_GRID}
    json_path = out_dir / "cv_summary.json"
    json_path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    md_path = out_dir / "cv_summary.md"
    md_path.write_text(markdown(summary) + "\nShipped choices: " + orjson.dumps(summary["shipped"]).decode() + "\n",
                       encoding="utf-8")
    return [folds_path, json_path, md_path]

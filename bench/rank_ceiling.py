"""How far a threshold can take an adapter's rank decision, per dataset. Prints figures; asserts nothing.

    .venv/bin/python bench/rank_ceiling.py [--adapter model/adapters/rationanomaly-smollm2]

Scores the rank margin (`model.ranking.margins`) on the calibration sample of the train splits
(the one `calibrate` draws: all anomalies + 300 seeded normals per dataset) and on every dev
template — about 15 minutes on two CPU cores — then prints, for BGL and Spirit:

- dev AUC of the margin, and dev F1 at the adapter's calibrated threshold (`decision.json`);
- dev F1 at a per-dataset threshold chosen on train (what a per-source threshold would give);
- the ceiling: the best dev F1 over every threshold, chosen on dev itself (not a fair figure,
  an upper bound on what any threshold rule can reach with this margin);
- the same three for an ensemble of the margin with the TF-IDF baseline's probability, each
  z-scored on the train sample (TF-IDF scored by 5-fold cross-validation on train, so its train
  scores are not in-sample), at mixing weights 0.3 / 0.5 / 0.7 on the margin.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from rationanomaly.model.loading import load_causal_lm  # noqa: E402
from rationanomaly.model.ranking import load_threshold, margins  # noqa: E402
from rationanomaly.model.scoring import scorer  # noqa: E402
from rationanomaly.training.calibrate import Scored, best_threshold, calibration_sample, score_sample, weighted_f1  # noqa: E402
from rationanomaly.training.data import load_split, log_input  # noqa: E402
from rationanomaly.training.evaluate import auc  # noqa: E402

DATASETS = ("bgl", "spirit")


def scored(dataset: str, golds, values, weights=None) -> list[Scored]:
    weights = np.ones(len(golds)) if weights is None else weights
    return [Scored(dataset, "abnormal" if g else "normal", float(v), float(w)) for g, v, w in zip(golds, values, weights)]


def ceiling(items: list[Scored]) -> float:
    """The best F1 over every threshold (chosen on the items themselves)."""
    return max(weighted_f1(items, t) for t in [-np.inf, *sorted({s.margin for s in items})])


def report(name: str, dev: list[Scored], threshold: float) -> str:
    value = auc([(s.gold == "abnormal", s.margin) for s in dev])
    return (f"  {name:<13} dev AUC {value:.3f}  F1 at train threshold {weighted_f1(dev, threshold):.3f}"
            f"  ceiling (dev-chosen) {ceiling(dev):.3f}")


def tfidf_scores(train, dev) -> tuple[np.ndarray, np.ndarray]:
    """Cross-validated train probabilities and dev probabilities of the eval's TF-IDF baseline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline, make_union

    def pipeline():
        return make_pipeline(
            make_union(TfidfVectorizer(token_pattern=r"[A-Za-z][A-Za-z]+", lowercase=True, ngram_range=(1, 2)),
                       TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2)),
            LogisticRegression(max_iter=2000, class_weight="balanced", C=4.0))

    text, y = [e.source for e in train], np.array([e.label == "abnormal" for e in train])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    cv = cross_val_predict(pipeline(), text, y, cv=folds, method="predict_proba")[:, 1]
    return cv, pipeline().fit(text, y).predict_proba([e.source for e in dev])[:, 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", default=str(REPO / "model/adapters/rationanomaly-smollm2"))
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    threshold = load_threshold(args.adapter)
    if threshold is None:
        sys.exit(f"{args.adapter} has no decision.json; run `calibrate` first")
    model, tokenizer = load_causal_lm("default", args.adapter, device="auto")
    score = scorer(model, tokenizer, args.batch_size)

    train_all = {d: load_split(f"{d}_train") for d in DATASETS}
    sample = calibration_sample([e for d in DATASETS for e in train_all[d]], 300, 0, None)
    train_scored = score_sample(score, sample)
    print(f"adapter {args.adapter}; calibrated threshold {threshold}")
    for d in DATASETS:
        dev_examples = load_split(f"{d}_dev")
        gold = np.array([e.label == "abnormal" for e in dev_examples])
        m_dev = np.array(margins(score, [log_input(e) for e in dev_examples]))
        rows = [(e, s) for (e, _), s in zip(sample, train_scored, strict=True) if e.provenance.dataset == d]
        train = [s for _, s in rows]
        own, _ = best_threshold(train)
        dev = scored(d, gold, m_dev)
        print(f"\n{d}: {len(dev)} dev templates, {int(gold.sum())} abnormal")
        print(report("margin", dev, threshold) + f"  at own train threshold {weighted_f1(dev, own):.3f}")

        cv, p_dev = tfidf_scores(train_all[d], dev_examples)
        by_id = {e.example_id: p for e, p in zip(train_all[d], cv, strict=True)}
        p_tr = np.array([by_id[e.example_id] for e, _ in rows])
        m_tr = np.array([s.margin for s in train])
        y_tr = np.array([s.gold == "abnormal" for s in train])
        w_tr = np.array([s.weight for s in train])
        logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
        z = lambda v, ref: (v - ref.mean()) / ref.std()  # noqa: E731
        for a in (0.3, 0.5, 0.7):
            s_tr = a * z(m_tr, m_tr) + (1 - a) * z(logit(p_tr), logit(p_tr))
            s_dev = a * z(m_dev, m_tr) + (1 - a) * z(logit(p_dev), logit(p_tr))
            chosen, _ = best_threshold(scored(d, y_tr, s_tr, w_tr))
            print(report(f"ensemble {a:.1f}", scored(d, gold, s_dev), chosen))


if __name__ == "__main__":
    main()

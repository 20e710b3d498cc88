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
from rationanomaly.model.scoring import completion_logprobs  # noqa: E402
from rationanomaly.training.calibrate import Scored, best_threshold  # noqa: E402
from rationanomaly.training.calibrate import calibration_sample  # noqa: E402
from rationanomaly.training.data import load_split, prompt_messages  # noqa: E402

DATASETS = ("bgl", "spirit")


def f1(gold: np.ndarray, flagged: np.ndarray, weight: np.ndarray | None = None) -> float:
    w = np.ones(len(gold)) if weight is None else weight
    tp, fp, fn = (w * (gold & flagged)).sum(), (w * (~gold & flagged)).sum(), (w * (gold & ~flagged)).sum()
    return float(2 * tp / (2 * tp + fp + fn)) if tp else 0.0


def auc(gold: np.ndarray, score: np.ndarray) -> float:
    pos, neg = score[gold], score[~gold]
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def ceiling(gold: np.ndarray, score: np.ndarray) -> float:
    return max(f1(gold, score > t) for t in np.concatenate([[-np.inf], np.unique(score)]))


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

    def score(prompts, completions):
        return completion_logprobs(model, tokenizer, prompts, completions, args.batch_size)

    train_all = {d: load_split(f"{d}_train") for d in DATASETS}
    sample = calibration_sample([e for d in DATASETS for e in train_all[d]], 300, 0, None)
    train_margin = margins(score, [prompt_messages(e) for e, _ in sample])
    print(f"adapter {args.adapter}; calibrated threshold {threshold}")
    for d in DATASETS:
        dev = load_split(f"{d}_dev")
        gold = np.array([e.label == "abnormal" for e in dev])
        m_dev = np.array(margins(score, [prompt_messages(e) for e in dev]))
        rows = [(e, w, m) for (e, w), m in zip(sample, train_margin, strict=True) if e.provenance.dataset == d]
        y_tr = np.array([e.label == "abnormal" for e, _, _ in rows])
        w_tr = np.array([w for _, w, _ in rows])
        m_tr = np.array([m for _, _, m in rows])
        own, _ = best_threshold([Scored(d, e.label, m, w) for e, w, m in rows])
        print(f"\n{d}: {len(dev)} dev templates, {int(gold.sum())} abnormal")
        print(f"  margin        dev AUC {auc(gold, m_dev):.3f}  F1 at calibrated {f1(gold, m_dev > threshold):.3f}"
              f"  at own train threshold {f1(gold, m_dev > own):.3f}  ceiling (dev-chosen) {ceiling(gold, m_dev):.3f}")

        cv, p_dev = tfidf_scores(train_all[d], dev)
        by_id = {e.example_id: p for e, p in zip(train_all[d], cv, strict=True)}
        p_tr = np.array([by_id[e.example_id] for e, _, _ in rows])
        logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
        z = lambda v, ref: (v - ref.mean()) / ref.std()  # noqa: E731
        for a in (0.3, 0.5, 0.7):
            s_tr = a * z(m_tr, m_tr) + (1 - a) * z(logit(p_tr), logit(p_tr))
            s_dev = a * z(m_dev, m_tr) + (1 - a) * z(logit(p_dev), logit(p_tr))
            chosen = max(np.unique(s_tr), key=lambda t: f1(y_tr, s_tr > t, w_tr))
            print(f"  ensemble {a:.1f}  dev AUC {auc(gold, s_dev):.3f}"
                  f"  F1 at train threshold {f1(gold, s_dev > chosen):.3f}"
                  f"  ceiling (dev-chosen) {ceiling(gold, s_dev):.3f}")


if __name__ == "__main__":
    main()

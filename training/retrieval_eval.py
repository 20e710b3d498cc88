"""The shipped adapter's rank scores on dev, computed once and cached, for the CV protocol.

Scoring ~460 templates takes minutes on a shared CPU; this appends to a JSONL file (`id`,
`dataset`, `gold`, `score` — the rank decision's abnormality, logistic(margin − threshold)) and
skips the ids already there, so it can run in short slices under a time budget and resume.
`training/cv.py --adapter-items FILE` reads it.

    python -m rationanomaly.training.retrieval_eval --out training/results/items/dev_shipped_rank_ra-prompt-2.scores.jsonl --budget-s 180
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import orjson

from rationanomaly.training.data import load_split


def score_dev(out: Path, budget_s: float, batch_size: int = 16, splits: tuple[str, ...] = ("bgl_dev", "spirit_dev")) -> int:
    """Score the dev templates not yet in `out`, stopping after `budget_s`; return how many are left."""
    from rationanomaly.training.evaluate import judge_examples, make_classifier

    done = set()
    if out.exists():
        done = {orjson.loads(line)["id"] for line in out.read_bytes().splitlines() if line.strip()}
    todo = [e for s in splits for e in load_split(s) if e.example_id not in done]
    if not todo:
        return 0
    started = time.monotonic()
    classifier = make_classifier("default", batch_size, 96, decision="rank")
    out.parent.mkdir(parents=True, exist_ok=True)
    step = batch_size * 2
    while todo and time.monotonic() - started < budget_s:
        chunk, todo = todo[:step], todo[step:]
        with out.open("ab") as handle:
            for r in judge_examples(chunk, classifier, batch_size):
                if r.score is None:
                    raise RuntimeError(f"{r.id}: no rank score ({r.predicted}); is the rank decision on?")
                handle.write(orjson.dumps({"id": r.id, "dataset": r.dataset, "gold": r.gold, "predicted": r.predicted,
                                           "score": r.score}) + b"\n")
    return len(todo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--budget-s", type=float, default=180.0)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    left = score_dev(args.out, args.budget_s, args.batch_size)
    print(f"{args.out}: {left} dev templates left to score")


if __name__ == "__main__":
    main()

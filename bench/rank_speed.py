"""Rank-decision scoring speed with and without the shared system-prompt cache, in one run.

    .venv/bin/python bench/rank_speed.py [--templates 96] [--batch-size 16] [--repeats 2]

Scores the two grounded answers of the first N Spirit dev templates with the shipped adapter,
alternating the two paths (`model.scoring.scorer(share_prefix=…)`), and prints
templates/s for each, the best-of ratio, and the largest margin difference (should be ~1e-4).
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rationanomaly.model.loading import load_causal_lm  # noqa: E402
from rationanomaly.model.ranking import margins  # noqa: E402
from rationanomaly.model.scoring import scorer  # noqa: E402
from rationanomaly.training.data import load_split, log_input  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--templates", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    model, tokenizer = load_causal_lm("default", "default")
    conversations = [log_input(e) for e in load_split("spirit_dev")[: args.templates]]
    seconds: dict[bool, list[float]] = {False: [], True: []}
    found: dict[bool, list[float]] = {}
    for _ in range(args.repeats):
        for share in (False, True):
            started = time.perf_counter()
            found[share] = margins(scorer(model, tokenizer, args.batch_size, share_prefix=share), conversations)
            seconds[share].append(time.perf_counter() - started)
            print(f"share_prefix={share!s:5}  {len(conversations)} templates in {seconds[share][-1]:6.1f} s"
                  f"  = {len(conversations) / seconds[share][-1]:.2f} templates/s", flush=True)
    print(f"speed-up, best of {args.repeats} each: {min(seconds[False]) / min(seconds[True]):.2f}x")
    print(f"largest margin difference: {max(abs(a - b) for a, b in zip(found[True], found[False])):.2e} nats")


if __name__ == "__main__":
    main()

"""Decide, then explain: how often the model's explanation of an abnormal verdict passes its
check, and what it adds to that verdict's latency.

    .venv/bin/python bench/explain.py [--splits bgl_dev spirit_dev] [--device cpu] [--show 5]

Ranks the abnormal templates of the dev splits with the shipped default model and adapter
(`make_decider`, decision=rank), then, for each one the rank decision calls abnormal, asks for the
explanation alone (one template per request, so each latency is that template's) and applies
`model.explain.check`. Prints the share that passes, the reasons of those that fail, and the added
latency per abnormal template (median, p90). Read once: this is not selection on dev.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rationanomaly.model.decision import RankDecider, make_decider  # noqa: E402
from rationanomaly.model.explain import EXPLAIN_VERSION, explain_messages, explained  # noqa: E402
from rationanomaly.model.settings import BackendSettings  # noqa: E402
from rationanomaly.training.data import load_split, log_input  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--splits", nargs="+", default=["bgl_dev", "spirit_dev"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--show", type=int, default=5, help="print this many explanations of each outcome")
    args = parser.parse_args()

    ranker = make_decider(BackendSettings(device=args.device, decision="rank", batch_size=8))
    assert isinstance(ranker, RankDecider)
    inputs = [log_input(e) for split in args.splits for e in load_split(split) if e.label == "abnormal"]
    judged = ranker.decide(inputs)
    flagged = [(x, j) for x, j in zip(inputs, judged, strict=True) if j.label == "abnormal"]
    print(f"{EXPLAIN_VERSION} on {ranker.model_id}, device={args.device}")
    print(f"abnormal dev templates: {len(inputs)}; ranked abnormal: {len(flagged)}")

    added: list[float] = []
    reasons: collections.Counter[str] = collections.Counter()
    shown: collections.Counter[str] = collections.Counter()
    for x, judgement in flagged:
        (generation,) = ranker.backend.generate([explain_messages(x)])
        added.append(generation.latency_s)
        out = explained(judgement, x, generation)
        outcome = out.rationale_source or "none"
        if outcome == "draft":
            reasons[(out.rationale_note or "").split(":")[0] + ": " + _kind(out.rationale_note or "")] += 1
        if shown[outcome] < args.show:
            shown[outcome] += 1
            print(f"--- {outcome}: {x[:100]!r}\n    {(out.rationale if outcome == 'model' else generation.text)!r}"
                  + (f"\n    note: {out.rationale_note}" if out.rationale_note else ""))
    passed = len(flagged) - sum(reasons.values())
    print(f"passed the check: {passed}/{len(flagged)} = {passed / max(1, len(flagged)):.1%}")
    for reason, count in reasons.most_common():
        print(f"  draft kept, {reason}: {count}")
    if added:
        ordered = sorted(added)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        print(f"added latency per abnormal template (s): median {statistics.median(added):.2f}, p90 {p90:.2f}, "
              f"max {ordered[-1]:.2f}")
    ranker.close()


def _kind(note: str) -> str:
    # The reason's kind without the quoted specifics, so failures group.
    body = note.split(":", 1)[-1].strip()
    for prefix in ("quotes text", "holds markup", "argues", "takes no stance", "no <think>", "longer than", "empty"):
        if body.startswith(prefix):
            return prefix
    return body[:40]


if __name__ == "__main__":
    main()

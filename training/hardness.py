"""Which prompts GRPO should practise on: the ones the SFT policy is unsure of or gets wrong.

GRPO learns only from groups whose rollouts disagree; a prompt the policy answers the same way
every time earns equal rewards, zero advantage and a wasted step. After SFT most train prompts
are like that, so sampling them uniformly (as a small CPU run must, a few prompts per step)
spends most steps on nothing and lets the prompt mix, not the mistakes, steer the update.

The measure is the policy's own preference between two rationales for the same input: the
draft that argues for the gold label and the draft that argues for the other one, each scored
by its teacher-forced log-likelihood after the prompt. margin = log p(gold) − log p(flipped):
negative means the policy would rather argue the wrong way, near zero means it is torn. One
forward pass per draft, no sampling, so it costs a fraction of one GRPO step per prompt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from rationanomaly.model.lexicon import has_fault_terms
from rationanomaly.model.ranking import margins
from rationanomaly.model.scoring import scorer
from rationanomaly.training.data import LogExample, log_input


@dataclass(frozen=True, slots=True)
class Doubt:
    """How torn the policy is on one example: its margin for the gold-label draft."""

    example: LogExample
    margin: float  # log p(gold-label draft) − log p(opposite-label draft), in nats


def candidates(examples: Sequence[LogExample], limit: int, seed: int = 0) -> list[LogExample]:
    """Which examples to score when scoring all costs too much: every abnormal one, then the
    normal ones with trouble words (where a policy is most likely torn), then a seeded sample.

    >>> from rationanomaly.training.data import Provenance
    >>> e = lambda i, y, t: LogExample((t,), y, Provenance("bgl", "train", str(i)))
    >>> pool = [e(0, "normal", "link up"), e(1, "normal", "disk error"), e(2, "abnormal", "halt"), e(3, "normal", "ok")]
    >>> [x.provenance.item_id for x in candidates(pool, 2)]
    ['2', '1']
    """
    import random

    if limit >= len(examples):
        return list(examples)
    abnormal = [e for e in examples if e.label == "abnormal"]
    troubled = [e for e in examples if e.label == "normal" and has_fault_terms(e.source)]
    rest = [e for e in examples if e.label == "normal" and not has_fault_terms(e.source)]
    random.Random(seed).shuffle(rest)
    return (abnormal + troubled + rest)[:limit]


def preference_margins(model, tokenizer, examples: Sequence[LogExample], batch_size: int = 16) -> list[Doubt]:
    """Each example with the policy's margin for its gold-label draft over the flipped one: the
    rank decision's margin (abnormal over normal), signed by the gold label."""
    found = margins(scorer(model, tokenizer, batch_size), [log_input(e) for e in examples])
    return [Doubt(e, m if e.label == "abnormal" else -m) for e, m in zip(examples, found, strict=True)]


def hardest(scored: Sequence[Doubt], keep: int, max_margin: float) -> list[Doubt]:
    """Up to `keep` examples the policy is most torn on (smallest |margin| below `max_margin`),
    half from each label.

    |margin|, not the margin itself: a prompt the policy gets wrong by a wide margin is never
    answered right at sampling temperature, so its group has no spread and teaches nothing;
    the ones near zero are where rollouts disagree. Equal halves keep the set's label mix from
    deciding which way the update leans (a skewed mix moved the decision threshold in earlier
    runs); a label with too few such examples leaves its share to the other.

    >>> from rationanomaly.training.data import Provenance
    >>> e = lambda i, y: LogExample(("t",), y, Provenance("bgl", "train", str(i)))
    >>> pool = [Doubt(e(0, "normal"), 5.0), Doubt(e(1, "normal"), -2.0), Doubt(e(2, "normal"), 0.5),
    ...         Doubt(e(3, "abnormal"), 0.1), Doubt(e(4, "normal"), -1.0), Doubt(e(5, "abnormal"), -9.0)]
    >>> [s.example.provenance.item_id for s in hardest(pool, 3, 3.0)]
    ['3', '2', '4']
    >>> [s.example.provenance.item_id for s in hardest(pool, 2, 3.0)]
    ['3', '2']
    """
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    by_label: dict[str, list[Doubt]] = {"abnormal": [], "normal": []}
    for s in sorted(scored, key=lambda s: abs(s.margin)):
        if abs(s.margin) < max_margin:
            by_label[s.example.label].append(s)
    half = keep // 2
    abnormal = by_label["abnormal"][: max(half, keep - len(by_label["normal"]))]
    normal = by_label["normal"][: keep - len(abnormal)]
    return sorted(normal + abnormal, key=lambda s: abs(s.margin))

"""The GRPO prompt picker on the real model: margins are log-likelihood differences of drafts."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest

from rationanomaly.training.data import load_split
from rationanomaly.model.scoring import completion_logprobs
from rationanomaly.training.hardness import hardest, preference_margins

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    from rationanomaly.model.loading import load_causal_lm

    return load_causal_lm("default", "default")


@pytest.fixture(scope="module")
def examples():
    train = load_split("bgl_train")
    abnormal = [e for e in train if e.label == "abnormal"][:3]
    normal = [e for e in train if e.label == "normal"][:3]
    return abnormal + normal


def test_flipping_the_gold_label_negates_the_margin(lm, examples) -> None:
    model, tokenizer = lm
    margins = [s.margin for s in preference_margins(model, tokenizer, examples, batch_size=4)]
    flipped = [replace(e, label="normal" if e.label == "abnormal" else "abnormal") for e in examples]
    negated = [s.margin for s in preference_margins(model, tokenizer, flipped, batch_size=3)]
    assert all(math.isfinite(m) for m in margins)
    assert negated == pytest.approx([-m for m in margins], abs=1e-3)
    assert len({round(m, 3) for m in margins}) > 1, "margins depend on the input"


def test_batched_scores_equal_one_at_a_time(lm, examples) -> None:
    """Right padding must not change a sequence's score (pads come after every real token)."""
    from rationanomaly.model.prompt import template_messages

    model, tokenizer = lm
    prompts = [template_messages(e.templates[0]) for e in examples]
    completions = ["<think>Key: 'x'. Conclusion: normal.</think> <answer>normal</answer>"] * len(examples)
    together = completion_logprobs(model, tokenizer, prompts, completions, batch_size=6)
    alone = [completion_logprobs(model, tokenizer, [p], [c], batch_size=1)[0] for p, c in zip(prompts, completions)]
    assert together == pytest.approx(alone, abs=1e-3)
    assert all(score < 0 for score in together)


def test_hardest_keeps_the_policys_doubts(lm, examples) -> None:
    model, tokenizer = lm
    scored = preference_margins(model, tokenizer, examples, batch_size=6)
    chosen = hardest(scored, keep=4, max_margin=math.inf)
    assert len(chosen) == 4
    assert sum(s.example.label == "abnormal" for s in chosen) == 2
    torn = {label: min(abs(s.margin) for s in scored if s.example.label == label) for label in ("normal", "abnormal")}
    assert {abs(s.margin) for s in chosen} >= set(torn.values())


def test_hard_prompts_leave_the_held_out_share_to_calibration(tmp_path) -> None:
    """`hard-prompts --holdout` never hands GRPO a template that `calibrate --holdout` will score."""
    from typer.testing import CliRunner

    from rationanomaly.training.cli import app
    from rationanomaly.training.data import read_jsonl
    from rationanomaly.training.data import stratified_holdout

    _, held = stratified_holdout(load_split("bgl_train"), 0.5, 0)
    held_ids = {e.provenance.item_id for e in held}
    first_abnormal = [e.provenance.item_id for e in load_split("bgl_train") if e.label == "abnormal"][:6]
    assert held_ids & set(first_abnormal), "without the option the picker would take held-out templates"
    out = tmp_path / "hard.jsonl"
    result = CliRunner().invoke(app, ["hard-prompts", "--adapter", "default", "--out", str(out), "--splits", "bgl_train",
                                      "--holdout", "0.5", "--limit", "6", "--keep", "6", "--max-margin", "1000",
                                      "--batch-size", "6"])
    assert result.exit_code == 0, result.output
    kept = [e.provenance.item_id for e in read_jsonl(out)]
    assert len(kept) == 6 and not held_ids & set(kept)

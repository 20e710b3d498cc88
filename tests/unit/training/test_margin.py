"""Decision tuning (`training.margin`): the loss, the data it sees, and runs on the real model."""

from __future__ import annotations

import math
import random

import pytest

from rationanomaly.model.loading import SHIPPED_ADAPTER
from rationanomaly.training.data import load_split, stratified_holdout
from rationanomaly.training.margin import MarginRun, epoch_examples, length_batches, margin_loss

SHIPPED = str(SHIPPED_ADAPTER)


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_margin_loss_against_hand_computation() -> None:
    import torch

    margins = torch.tensor([1.0, -2.0, 0.5])
    abnormal = torch.tensor([True, True, False])
    # abnormal: softplus(-m), weight 2; normal: softplus(+m), weight 1
    expected = (2 * _softplus(-1.0) + 2 * _softplus(2.0) + 1 * _softplus(0.5)) / 5
    assert float(margin_loss(margins, abnormal, abnormal_weight=2.0)) == pytest.approx(expected, rel=1e-6)


def test_margin_loss_pushes_margins_towards_the_gold_label() -> None:
    import torch

    margins = torch.tensor([0.3, 0.3], requires_grad=True)
    margin_loss(margins, torch.tensor([True, False])).backward()
    assert margins.grad[0] < 0 < margins.grad[1]  # descent raises the anomaly's margin, lowers the normal's
    missed = margin_loss(torch.tensor([-1.0]), torch.tensor([True]), abnormal_weight=1.5)
    alarmed = margin_loss(torch.tensor([1.0]), torch.tensor([False]), abnormal_weight=1.5)
    assert float(missed) == pytest.approx(float(alarmed))  # alone, a weight divides out
    both = margin_loss(torch.tensor([-1.0, 1.0]), torch.tensor([True, False]), abnormal_weight=3.0)
    mixed_even = margin_loss(torch.tensor([-1.0, 1.0]), torch.tensor([True, False]), abnormal_weight=1.0)
    assert float(both) == pytest.approx(float(mixed_even))  # equal errors: the mix is unchanged


def test_holdout_is_stratified_and_disjoint(data_dir) -> None:
    examples = load_split("spirit_train", data_dir) + load_split("bgl_train", data_dir)
    train, held = stratified_holdout(examples, 0.2, seed=3)
    assert len(train) + len(held) == len(examples)
    assert not {e.example_id for e in train} & {e.example_id for e in held}
    for dataset in ("bgl", "spirit"):
        for label in ("abnormal", "normal"):
            total = sum(e.provenance.dataset == dataset and e.label == label for e in examples)
            kept_out = sum(e.provenance.dataset == dataset and e.label == label for e in held)
            assert kept_out == round(0.2 * total)
    assert stratified_holdout(examples, 0.2, seed=3)[1] == held  # seeded


def test_epoch_keeps_every_anomaly_and_samples_normals_per_dataset(data_dir) -> None:
    examples = load_split("spirit_train", data_dir) + load_split("bgl_train", data_dir)
    first = epoch_examples(examples, 2.0, random.Random(0))
    second = epoch_examples(examples, 2.0, random.Random(1))
    for dataset in ("bgl", "spirit"):
        abnormal = {e.example_id for e in examples if e.provenance.dataset == dataset and e.label == "abnormal"}
        picked = [e for e in first if e.provenance.dataset == dataset]
        assert {e.example_id for e in picked if e.label == "abnormal"} == abnormal
        assert sum(e.label == "normal" for e in picked) == 2 * len(abnormal)
    assert {e.example_id for e in first} != {e.example_id for e in second}  # other normals next epoch


def test_troubled_normals_join_every_epoch_within_the_same_sample_size(data_dir) -> None:
    from rationanomaly.model.lexicon import has_fault_terms

    examples = load_split("spirit_train", data_dir) + load_split("bgl_train", data_dir)
    troubled = {e.example_id for e in examples if e.label == "normal" and has_fault_terms(e.source)}
    plain = epoch_examples(examples, 3.0, random.Random(0))
    assert not troubled <= {e.example_id for e in plain}, "a uniform sample misses some"
    for seed in (0, 1):
        epoch = epoch_examples(examples, 3.0, random.Random(seed), troubled_normals=True)
        assert troubled <= {e.example_id for e in epoch}
        assert len(epoch) == len(plain) and len({e.example_id for e in epoch}) == len(epoch)


def test_length_batches_cover_each_example_once(data_dir) -> None:
    examples = load_split("spirit_train", data_dir)[:100]
    batches = length_batches(examples, 8, random.Random(0), group=4)
    assert sorted(e.example_id for b in batches for e in b) == sorted(e.example_id for e in examples)
    assert all(1 <= len(b) <= 8 for b in batches)


@pytest.fixture(scope="module")
def shipped():
    from rationanomaly.training.sft import load_base

    return load_base(None, adapter=SHIPPED)


def test_training_logprobs_equal_the_scorers(shipped, data_dir) -> None:
    """The stage trains exactly the margin the rank decision reads (same tokens, same sums)."""
    import torch

    from rationanomaly.model.ranking import candidates
    from rationanomaly.model.scoring import completion_logprobs
    from rationanomaly.training.data import prompt_messages
    from rationanomaly.training.margin import answer_logprobs

    model, tokenizer = shipped
    examples = [e for e in load_split("spirit_dev", data_dir) if e.label == "abnormal"][:2] + load_split("bgl_dev", data_dir)[:2]
    conversations = [prompt_messages(e) for e in examples for _ in range(2)]
    completions = [candidates(e.templates[0])[label] for e in examples for label in ("abnormal", "normal")]
    model.eval()
    with torch.no_grad():
        sums, lengths = answer_logprobs(model, tokenizer, conversations, completions)
    reference = completion_logprobs(model, tokenizer, conversations, completions, share_prefix=False)
    assert sums.tolist() == pytest.approx(reference, abs=1e-3)
    assert all(n == len(tokenizer(c, add_special_tokens=False)["input_ids"]) for n, c in zip(lengths.tolist(), completions))


@pytest.mark.slow
def test_steps_on_a_batch_lower_its_margin_loss(shipped, data_dir) -> None:
    import torch

    from rationanomaly.training.margin import batch_loss

    model, tokenizer = shipped
    run = MarginRun(adapter=SHIPPED, nll_weight=0.0)
    spirit = load_split("spirit_train", data_dir)
    batch = [e for e in spirit if e.label == "abnormal"][:3] + [e for e in spirit if e.label == "normal"][:3]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-4)
    model.eval()  # no dropout: the comparison is the updates' effect alone
    losses = []
    for _ in range(4):
        loss, parts = batch_loss(model, tokenizer, batch, run)
        losses.append(parts["margin_loss"])
        optimizer.zero_grad()
        loss.backward()
        assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in params)
        optimizer.step()
    assert losses[-1] < losses[0]


@pytest.mark.slow
def test_margin_smoke_saves_a_calibrated_adapter(data_dir, tmp_path) -> None:
    from safetensors.torch import load_file

    from rationanomaly.model.ranking import load_threshold
    from rationanomaly.training.margin import train_margin

    spirit = load_split("spirit_train", data_dir)
    examples = [e for e in spirit if e.label == "abnormal"][:6] + [e for e in spirit if e.label == "normal"][:10]
    run = MarginRun(adapter=SHIPPED, output_dir=tmp_path, epochs=1, batch_size=4, max_steps=2, holdout=0.25,
                    warmup_steps=0)
    final = train_margin(run, examples)
    assert final == tmp_path / "final"
    threshold = load_threshold(final)
    assert threshold is not None and math.isfinite(threshold)
    decision = (final / "decision.json").read_text()
    assert '"stage": "margin"' in decision and '"held_out": 4' in decision  # round(0.25 * 6) + round(0.25 * 10) = 2 + 2
    before = load_file(f"{SHIPPED}/adapter_model.safetensors")
    after = load_file(str(final / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before), "two steps moved the adapter"


@pytest.mark.slow
def test_non_finite_updates_are_dropped_and_three_in_a_row_stop_the_run(data_dir, tmp_path, monkeypatch) -> None:
    """A NaN loss cannot be produced on demand by the real model: the batch loss is poisoned."""
    from safetensors.torch import load_file

    import rationanomaly.training.margin as margin

    real = margin.batch_loss

    def poisoned(*args, **kwargs):
        loss, parts = real(*args, **kwargs)
        return loss * float("nan"), parts

    monkeypatch.setattr(margin, "batch_loss", poisoned)
    spirit = load_split("spirit_train", data_dir)
    examples = [e for e in spirit if e.label == "abnormal"][:8] + [e for e in spirit if e.label == "normal"][:16]
    run = MarginRun(adapter=SHIPPED, output_dir=tmp_path, epochs=2, batch_size=2, holdout=0.25, warmup_steps=0)
    final = margin.train_margin(run, examples)
    before = load_file(f"{SHIPPED}/adapter_model.safetensors")
    after = load_file(str(final / "adapter_model.safetensors"))
    assert all(before[k].equal(after[k]) for k in before), "no poisoned update reached the weights"
    assert not (tmp_path / "epoch-2").exists(), "three dropped updates in a row end the run in epoch 1"

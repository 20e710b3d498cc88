"""Smoke runs on the real model: SFT (3 steps) and GRPO (2 steps) on a handful of real templates."""

from __future__ import annotations

import math

import pytest

from rationanomaly.training.grpo import GRPORun, default_grpo_config, train_grpo
from rationanomaly.training.rewards import RewardConfig
from rationanomaly.training.sft import SFTRun, default_sft_config, train_sft

pytestmark = pytest.mark.slow


def _losses(output_dir) -> list[float]:
    import json

    states = sorted(output_dir.glob("checkpoint-*/trainer_state.json"))
    history = json.loads(states[-1].read_text())["log_history"] if states else []
    return [h["loss"] for h in history if "loss" in h]


@pytest.fixture(scope="module")
def sft_adapter(tmp_path_factory):
    out = tmp_path_factory.mktemp("sft")
    config = default_sft_config(out, max_steps=3, logging_steps=1, save_steps=3, per_device_train_batch_size=2)
    final = train_sft(SFTRun(limit=8, hdfs_windows=2), config)
    return out, final


def test_sft_smoke_finite_loss_and_adapter_reloads(sft_adapter) -> None:
    from peft import PeftModel

    from rationanomaly.training.sft import load_base

    out, final = sft_adapter
    losses = _losses(out)
    assert len(losses) == 3 and all(math.isfinite(x) for x in losses)
    size = (final / "adapter_model.safetensors").stat().st_size
    assert 1_000_000 < size < 10_000_000, "LoRA adapter stays a few MB"
    base, _ = load_base(None)
    model = PeftModel.from_pretrained(base, str(final))
    assert any("lora_A" in name for name, _ in model.named_parameters())


def test_grpo_smoke_from_sft_adapter(sft_adapter, tmp_path) -> None:
    from peft import PeftModel

    from rationanomaly.training.rewards import build_rewards
    from rationanomaly.training.sft import load_base

    _, adapter = sft_adapter
    rewards = RewardConfig()
    _, weights = build_rewards(rewards, scorer=lambda text: 10.0)
    config = default_grpo_config(
        tmp_path, weights=weights, max_steps=2, num_generations=2, per_device_train_batch_size=4,
        max_completion_length=24, save_steps=2,
    )
    final = train_grpo(GRPORun(adapter=str(adapter), limit=8, rewards=rewards), config)
    losses = _losses(tmp_path)
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert not (final / "ref").exists()  # the frozen KL reference is not part of the adapter
    base, _ = load_base(None)
    PeftModel.from_pretrained(base, str(final))


def test_sft_continues_a_saved_adapter(sft_adapter, tmp_path) -> None:
    """`init_adapter` trains the saved LoRA further: same shape, new values, base untouched."""
    from safetensors.torch import load_file

    _, adapter = sft_adapter
    config = default_sft_config(tmp_path, max_steps=1, logging_steps=1, save_steps=1, per_device_train_batch_size=2,
                                warmup_steps=0)  # warm-up would make the one step a zero-rate step
    final = train_sft(SFTRun(limit=4, init_adapter=str(adapter)), config)
    before = load_file(str(adapter / "adapter_model.safetensors"))
    after = load_file(str(final / "adapter_model.safetensors"))
    assert before.keys() == after.keys()
    assert all(before[k].shape == after[k].shape for k in before)
    assert any(not before[k].equal(after[k]) for k in before), "one step moved the adapter"
    assert math.isfinite(_losses(tmp_path)[0])

"""Stage 3 of the paper: GRPO with the multi-part reward, starting from the SFT adapter.

A thin entry point over TRL's `GRPOTrainer`: settings in TRL's `GRPOConfig`, rewards from
`rewards.build_rewards` with their weights in `GRPOConfig.reward_weights`. The SFT LoRA is
loaded trainable and continued, so the result is again one small adapter over the base model.
With PEFT, TRL's KL reference is the base with the adapter disabled; at the paper's β=0.001
that pull is slight.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from rationanomaly.training.data import LogExample, load_split, oversample_abnormal, read_jsonl
from rationanomaly.training.drafts import draft_all
from rationanomaly.training.rewards import RewardConfig, build_rewards

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class GRPORun:
    """What to train from and on; the trainer's own settings stay in `GRPOConfig`."""

    adapter: str | None  # SFT adapter directory to continue; None → fresh LoRA on the base
    model: str | None = None  # base model dir; None → prepare_default_model()
    splits: tuple[str, ...] = ("bgl_train", "spirit_train")
    rationales: Path | None = None  # references for grounding/brevity; None → drafts
    abnormal_share: float = 0.35
    limit: int | None = None
    time_budget_min: float | None = None
    seed: int = 1
    rewards: RewardConfig = RewardConfig()


def default_grpo_config(output_dir: str | Path, weights: list[float] | None = None, **overrides: Any):
    """TRL `GRPOConfig` with the paper's settings where they fit a small CPU run.

    Paper: 16 rollouts at temperature 0.9, KL β=0.001, lr 4e-7 (full model); here LoRA, so a
    larger learning rate, and 4 rollouts per prompt to fit a CPU. The generation batch
    (per-device batch × steps_per_generation) must be divisible by num_generations.
    """
    import torch
    from trl import GRPOConfig

    on_gpu = torch.cuda.is_available()
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 8,
        "gradient_accumulation_steps": 1,
        "num_generations": 4,
        "max_completion_length": 96,
        "temperature": 0.9,
        "beta": 0.001,
        "learning_rate": 2e-5,
        "lr_scheduler_type": "constant_with_warmup",
        "warmup_steps": 2,
        "logging_steps": 1,
        "save_steps": 10,
        "save_total_limit": 4,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "fp16": False,
        "report_to": [],
        "seed": 1,
        "use_vllm": on_gpu and importlib.util.find_spec("vllm") is not None,
        "log_completions": False,
        # TRL turns checkpointing on by default; a 135M model fits easily and recomputing
        # activations costs ~30% more time on a CPU.
        "gradient_checkpointing": False,
    }
    if weights is not None:
        settings["reward_weights"] = weights
    settings.update(overrides)
    if settings["use_vllm"]:
        # Colocated vLLM shares the GPU with training; no output constraint, so the format
        # reward still has something to teach.
        settings.setdefault("vllm_mode", "colocate")
    steps = settings.get("steps_per_generation") or settings["gradient_accumulation_steps"]
    generation_batch = settings.get("generation_batch_size") or settings["per_device_train_batch_size"] * steps
    if generation_batch % settings["num_generations"]:
        raise ValueError(
            f"generation batch {generation_batch} is not divisible by num_generations "
            f"{settings['num_generations']}: make per_device_train_batch_size a multiple of it"
        )
    return GRPOConfig(**settings)


def grpo_examples(run: GRPORun) -> list[LogExample]:
    examples = read_jsonl(run.rationales) if run.rationales else [e for s in run.splits for e in load_split(s)]
    examples = draft_all(examples)  # references for the grounding and brevity rewards
    mixed = oversample_abnormal(examples, run.abnormal_share, seed=run.seed)
    return mixed[: run.limit] if run.limit is not None else mixed


def load_policy(run: GRPORun):
    """Base model with the SFT adapter loaded trainable (or a fresh LoRA when there is none)."""
    from peft import get_peft_model

    from rationanomaly.training.sft import SFTRun, load_base, lora_config

    model, tokenizer = load_base(run.model, adapter=run.adapter)
    if not run.adapter:
        model = get_peft_model(model, lora_config(SFTRun()))
    tokenizer.padding_side = "left"
    return model, tokenizer


def train_grpo(run: GRPORun, config=None, scorer=None) -> Path:
    """Run GRPO and save the adapter to `config.output_dir/final`."""
    from trl import GRPOTrainer

    from rationanomaly.training.data import to_grpo_dataset
    from rationanomaly.training.callbacks import training_callbacks
    from rationanomaly.training.sft import save_trained

    funcs, weights = build_rewards(run.rewards, scorer=scorer)
    config = config or default_grpo_config("runs/grpo", weights=weights)
    if config.reward_weights is None:
        config.reward_weights = weights
    examples = grpo_examples(run)
    dataset = to_grpo_dataset(examples)
    model, tokenizer = load_policy(run)
    log.info("grpo.start", prompts=len(examples), rewards=[f.__name__ for f in funcs], weights=weights)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=training_callbacks(run.time_budget_min),
    )
    trainer.train()
    final = Path(config.output_dir) / "final"
    save_trained(trainer.model, tokenizer, final)
    log.info("grpo.saved", path=str(final))
    return final

"""Stage 2 of the paper: chain-of-thought SFT on (log, rationale, label) triplets.

A thin entry point over TRL's `SFTTrainer`: trainer settings live in TRL's `SFTConfig`; the
few choices TRL does not own (which data, which base model, LoRA or full) live in `SFTRun`.
The dataset is conversational prompt/completion, so TRL puts the loss on the completion only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from rationanomaly.training.data import (
    LogExample,
    load_split,
    oversample_abnormal,
    read_jsonl,
    session_rule_templates,
)
from rationanomaly.training.drafts import draft_all

log = structlog.get_logger(__name__)

LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass(frozen=True)
class SFTRun:
    """What to train on and what to train; the trainer's own settings stay in `SFTConfig`."""

    model: str | None = None  # HF dir; None → prepare_default_model()
    splits: tuple[str, ...] = ("bgl_train", "spirit_train")
    rationales: Path | None = None  # jsonl from `rationales draft|teacher|merge`; None → drafts
    hdfs_windows: int = 0  # balanced slice of hdfs_train sessions in window mode
    hdfs_templates: int = 0  # copies of each HDFS template labelled by the session rule (0: none)
    abnormal_share: float = 0.35  # the paper's set is ~15% anomalous; F1 is on the rare class
    limit: int | None = None  # first N examples after shuffling (smoke runs)
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    time_budget_min: float | None = None  # stop (and save) after this many minutes
    init_adapter: str | None = None  # continue a saved LoRA adapter instead of starting a fresh one
    seed: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def default_sft_config(output_dir: str | Path, **overrides: Any):
    """TRL `SFTConfig` with this project's defaults; keyword overrides win.

    bf16 follows the hardware: TRL turns it on by itself otherwise, which fails on CPU.
    """
    import torch
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    settings: dict[str, Any] = {
        "output_dir": str(output_dir),
        "per_device_train_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "learning_rate": 3e-4,
        "lr_scheduler_type": "cosine",
        "warmup_steps": 20,
        "num_train_epochs": 1,
        "max_length": 384,
        "logging_steps": 5,
        "save_steps": 100,
        "save_total_limit": 3,
        "bf16": on_gpu and torch.cuda.is_bf16_supported(),
        "fp16": False,
        "report_to": [],
        "seed": 0,
        "dataloader_num_workers": 0,
        "gradient_checkpointing": False,
        # A window-mode example is ~5x a template's length; mixed into a batch of templates it
        # pads all of them to its length. Grouping by length keeps long ones in their own batches.
        "train_sampling_strategy": "group_by_length",
    }
    settings.update(overrides)
    return SFTConfig(**settings)


def training_examples(run: SFTRun) -> list[LogExample]:
    """The SFT set: train splits with rationales, optional HDFS windows, abnormal oversampled."""
    if run.rationales is not None:
        examples = read_jsonl(run.rationales)
    else:
        examples = [e for split in run.splits for e in load_split(split)]
    sessions = load_split("hdfs_train") if run.hdfs_windows or run.hdfs_templates else []
    if run.hdfs_windows:
        rng = random.Random(run.seed)
        half = run.hdfs_windows // 2
        abnormal = [s for s in sessions if s.label == "abnormal"]
        normal = [s for s in sessions if s.label == "normal"]
        examples += rng.sample(abnormal, min(half, len(abnormal))) + rng.sample(normal, run.hdfs_windows - half)
    if run.hdfs_templates:
        examples += session_rule_templates(sessions) * run.hdfs_templates
    examples = draft_all(examples)
    mixed = oversample_abnormal(examples, run.abnormal_share, seed=run.seed)
    if run.limit is not None:
        mixed = mixed[: run.limit]
    return mixed


def lora_config(run: SFTRun):
    from peft import LoraConfig

    return LoraConfig(
        r=run.lora_r,
        lora_alpha=run.lora_alpha,
        lora_dropout=run.lora_dropout,
        # peft takes "all-linear" as a bare string (every linear layer but the output head).
        target_modules="all-linear" if run.lora_targets == ("all-linear",) else list(run.lora_targets),
        task_type="CAUSAL_LM",
    )


def load_base(model: str | None, adapter: str | None = None):
    """Base model and tokenizer in fp32 (CPU) or bf16 (GPU), with a saved LoRA adapter loaded
    trainable on top when one is given (SFT continuing, GRPO starting from SFT)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rationanomaly.training.models import resolve_base_model

    path = resolve_base_model(model)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter, is_trainable=True)
    return lm, tokenizer


def train_sft(run: SFTRun, config=None, resume: bool | str = False) -> Path:
    """Run SFT and save the adapter (or the full model) to `config.output_dir/final`.

    `resume=True` continues from the last checkpoint in output_dir (or a given checkpoint path).
    """
    from trl import SFTTrainer

    from rationanomaly.training.callbacks import training_callbacks
    from rationanomaly.training.data import to_sft_dataset

    config = config or default_sft_config("runs/sft")
    examples = training_examples(run)
    dataset = to_sft_dataset(examples)
    share = sum(e.label == "abnormal" for e in examples) / max(len(examples), 1)
    log.info("sft.data", examples=len(examples), abnormal_share=round(share, 3), lora=run.lora)
    # Continuing keeps the adapter's own LoRA shape; lora_r/targets of the run do not apply.
    model, tokenizer = load_base(run.model, adapter=run.init_adapter)
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora_config(run) if run.lora and not run.init_adapter else None,
        callbacks=training_callbacks(run.time_budget_min),
    )
    trainer.train(resume_from_checkpoint=resume if resume else None)
    final = Path(config.output_dir) / "final"
    save_trained(trainer.model, tokenizer, final)
    log.info("sft.saved", path=str(final))
    return final


def save_trained(model, tokenizer, path: Path) -> None:
    """Save a LoRA adapter in half precision (a few MB) or a full model as is; never a NaN one."""
    import torch

    from rationanomaly.training.callbacks import assert_finite

    assert_finite(model)
    path.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "peft_config"):
        # LoRA weights are small either way; fp16 halves them and they load back into fp32.
        state = {k: v.to(torch.float16) for k, v in model.state_dict().items() if "lora_" in k}
        # Only the policy: with a KL term TRL keeps a frozen "ref" copy, which would be saved beside it.
        model.save_pretrained(str(path), state_dict=state, selected_adapters=[model.active_adapter])
    else:
        model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))

"""Trainer callbacks shared by SFT and GRPO: a wall-clock budget and a stop on non-finite values.

Why the second one: a GRPO run in bf16 on a GPU logged `grad_norm: nan` at its 41st step; the
optimizer step that followed made the LoRA weights NaN and the next rollout's sampling died on
a device-side assert, losing the run. Stopping at the first non-finite loss or gradient norm
keeps the last checkpoint usable and `assert_finite` refuses to save a poisoned adapter.
"""

from __future__ import annotations

import math
import time
from typing import Any

import structlog

log = structlog.get_logger(__name__)

WATCHED = ("loss", "grad_norm")


class NonFiniteWeights(RuntimeError):
    """Training produced NaN or infinite weights; the adapter is not saved."""


def non_finite(logs: dict[str, Any]) -> list[str]:
    """Names of the watched figures in a trainer's log record that are NaN or infinite.

    >>> non_finite({"loss": 0.3, "grad_norm": float("nan")})
    ['grad_norm']
    >>> non_finite({"loss": "0.3", "learning_rate": 1e-5})
    []
    """
    bad = []
    for key in WATCHED:
        value = logs.get(key)
        try:
            if value is not None and not math.isfinite(float(value)):
                bad.append(key)
        except (TypeError, ValueError):
            continue
    return bad


def time_budget_callback(minutes: float):
    """A callback that ends training (with a save) once the wall-clock budget is spent."""
    from transformers import TrainerCallback

    class TimeBudget(TrainerCallback):
        def __init__(self) -> None:
            self.deadline = time.monotonic() + minutes * 60.0

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() >= self.deadline:
                log.info("train.time_budget_spent", step=state.global_step, minutes=minutes)
                control.should_training_stop = True
                control.should_save = True
            return control

    return TimeBudget()


def non_finite_guard():
    """A callback that stops training, without a save, at the first NaN/inf loss or gradient norm."""
    from transformers import TrainerCallback

    class NonFiniteGuard(TrainerCallback):
        def __init__(self) -> None:
            self.tripped_at: int | None = None

        def on_log(self, args, state, control, logs=None, **kwargs):
            bad = non_finite(logs or {})
            if bad and self.tripped_at is None:
                self.tripped_at = state.global_step
                log.error("train.non_finite", step=state.global_step, figures=bad,
                          hint="resume from the last checkpoint with a lower learning rate")
                control.should_training_stop = True
                control.should_save = False
            return control

    return NonFiniteGuard()


def training_callbacks(time_budget_min: float | None) -> list:
    callbacks = [non_finite_guard()]
    if time_budget_min:
        callbacks.append(time_budget_callback(time_budget_min))
    return callbacks


def assert_finite(model) -> None:
    """Raise `NonFiniteWeights` when any trainable parameter holds NaN or inf."""
    import torch

    for name, param in model.named_parameters():
        if param.requires_grad and not bool(torch.isfinite(param).all()):
            raise NonFiniteWeights(f"parameter {name} is not finite; the adapter was not saved")

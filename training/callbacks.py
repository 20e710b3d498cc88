"""Trainer callbacks shared by SFT and GRPO: a wall-clock budget and a guard on non-finite values.

Why the guard: GRPO runs on a GPU logged `grad_norm: nan` out of nowhere (bf16: step 8 of one
run, step 17 of another; fp32: step 52 at lr 2e-5), with a finite loss and ordinary gradient
norms (~0.3) just before — a known, sporadic failure of GRPO with LoRA. The optimizer step
that followed made the LoRA weights NaN and the run was lost. The guard now drops such an
update before the optimizer applies it (every trainable gradient set to None, so AdamW skips
its parameters), as AMP's loss scaler does. Training stops after `max_consecutive` dropped
updates in a row (the weights are still the last good ones, so a save is allowed) or, unsaved,
at a non-finite figure in the log that no dropped update explains. `assert_finite` still
refuses to save a poisoned adapter.
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


def non_finite_guard(max_consecutive: int = 3):
    """A callback that drops updates with NaN/inf gradients, and stops training after
    `max_consecutive` dropped updates in a row (the weights are still the last good ones, so the
    trainer may save them) or at a non-finite figure in the log it cannot explain (unsaved)."""
    from transformers import TrainerCallback

    class NonFiniteGuard(TrainerCallback):
        def __init__(self) -> None:
            self.tripped_at: int | None = None
            self.skipped: list[int] = []  # steps (1-based, as logged) whose update was dropped
            self._run = 0

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            trainable = [p for p in model.parameters() if p.requires_grad and p.grad is not None] if model else []
            if all(_finite(p.grad) for p in trainable):
                self._run = 0
                return control
            for param in trainable:
                param.grad = None
            step = state.global_step + 1
            self.skipped.append(step)
            self._run += 1
            log.warning("train.update_skipped", step=step, reason="non-finite gradient", in_a_row=self._run)
            if self._run >= max_consecutive:
                self._trip(state, control, ["grad_norm"], f"{self._run} non-finite gradients in a row", save=True)
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            # The logged grad_norm of an update this guard dropped is NaN by construction.
            dropped_now = bool(self.skipped) and self.skipped[-1] == state.global_step
            bad = [k for k in non_finite(logs or {}) if not (k == "grad_norm" and dropped_now)]
            if bad:
                self._trip(state, control, bad, "non-finite figures in the log", save=False)
            return control

        def _trip(self, state, control, figures, why, *, save: bool) -> None:
            if self.tripped_at is None:
                self.tripped_at = state.global_step
                log.error("train.non_finite", step=state.global_step, figures=figures, why=why,
                          hint="resume from the last checkpoint with a lower learning rate")
            control.should_training_stop = True
            if not save:
                control.should_save = False

    return NonFiniteGuard()


def _finite(tensor) -> bool:
    import torch

    return bool(torch.isfinite(tensor).all())


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

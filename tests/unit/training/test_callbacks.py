"""The trainers' guards: a NaN loss or gradient stops training unsaved; NaN weights are never saved."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerControl, TrainerState, TrainingArguments

from rationanomaly.training.callbacks import (
    NonFiniteWeights,
    assert_finite,
    non_finite_guard,
    time_budget_callback,
)
from rationanomaly.training.sft import SFTRun, lora_config


def _step(callbacks, logs, step=41):
    args = TrainingArguments(output_dir="unused", report_to=[])
    state, control = TrainerState(), TrainerControl()
    state.global_step = step
    for callback in callbacks:  # the Trainer's order: step end, then the log record
        callback.on_step_end(args, state, control)
    for callback in callbacks:
        callback.on_log(args, state, control, logs=logs)
    return control


def test_nan_gradient_norm_stops_training_without_a_save() -> None:
    guard = non_finite_guard()
    # A spent time budget asks for a save at the same step; the guard must win.
    control = _step([time_budget_callback(0.0), guard], {"loss": -0.02, "grad_norm": float("nan")})
    assert control.should_training_stop
    assert not control.should_save
    assert guard.tripped_at == 41


def test_finite_logs_leave_training_alone() -> None:
    guard = non_finite_guard()
    control = _step([guard], {"loss": 0.01, "grad_norm": "0.25", "learning_rate": 1e-5})
    assert not control.should_training_stop
    assert guard.tripped_at is None


def test_infinite_loss_trips_the_guard() -> None:
    control = _step([non_finite_guard()], {"loss": float("inf")})
    assert control.should_training_stop


def test_assert_finite_refuses_nan_trainable_weights_only() -> None:
    layer = torch.nn.Linear(3, 2)
    assert_finite(layer)
    with torch.no_grad():
        layer.bias[0] = float("nan")
    with pytest.raises(NonFiniteWeights, match="bias"):
        assert_finite(layer)
    layer.bias.requires_grad_(False)  # frozen base weights are not ours to judge
    assert_finite(layer)


def test_lora_all_linear_is_passed_to_peft_as_a_string() -> None:
    assert lora_config(SFTRun(lora_targets=("all-linear",))).target_modules == "all-linear"
    assert set(lora_config(SFTRun()).target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj"}

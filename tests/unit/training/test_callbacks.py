"""The trainers' guards: an update with NaN gradients is dropped, an unexplained NaN in the log
stops training unsaved, and NaN weights are never saved."""

from __future__ import annotations

import pytest
import torch
from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

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


def _poison(layer: torch.nn.Linear) -> None:
    loss = layer(torch.ones(1, 3)).sum() + torch.sqrt((layer.weight * 0).sum())  # d√u at u=0: inf × 0
    loss.backward()


def test_an_update_with_nan_gradients_is_dropped_before_the_optimizer_step() -> None:
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    before = [p.detach().clone() for p in layer.parameters()]
    _poison(layer)
    assert not torch.isfinite(layer.weight.grad).all() and torch.isfinite(layer.bias.grad).all()
    guard, control = non_finite_guard(), TrainerControl()
    args = TrainingArguments(output_dir="unused", report_to=[])
    guard.on_pre_optimizer_step(args, _at(7), control, model=layer)
    optimizer.step()
    # The whole update goes, the bias's finite gradient too: half an update is not the one computed.
    assert all(p.grad is None for p in layer.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    assert guard.skipped == [8] and not control.should_training_stop
    # Its NaN grad_norm in the log is explained, so training goes on.
    guard.on_log(args, _at(8), control, logs={"loss": 0.1, "grad_norm": float("nan")})
    assert not control.should_training_stop


def _at(step: int) -> TrainerState:
    state = TrainerState()
    state.global_step = step
    return state


def test_finite_gradients_are_left_alone_and_reset_the_count() -> None:
    layer, guard = torch.nn.Linear(3, 2), non_finite_guard(max_consecutive=2)
    args, control = TrainingArguments(output_dir="unused", report_to=[]), TrainerControl()
    _poison(layer)
    guard.on_pre_optimizer_step(args, _at(0), control, model=layer)
    layer(torch.ones(1, 3)).sum().backward()
    guard.on_pre_optimizer_step(args, _at(1), control, model=layer)
    assert layer.weight.grad is not None and not control.should_training_stop
    layer.zero_grad()
    _poison(layer)
    guard.on_pre_optimizer_step(args, _at(2), control, model=layer)
    assert guard.skipped == [1, 3] and not control.should_training_stop


def test_updates_dropped_in_a_row_stop_training_with_the_last_good_weights_savable() -> None:
    layer, guard = torch.nn.Linear(3, 2), non_finite_guard(max_consecutive=2)
    args, control = TrainingArguments(output_dir="unused", report_to=[]), TrainerControl()
    control.should_save = True
    for step in (4, 5):
        _poison(layer)
        guard.on_pre_optimizer_step(args, _at(step), control, model=layer)
    assert control.should_training_stop and guard.tripped_at == 5
    assert control.should_save  # weights are untouched by the dropped updates
    assert_finite(layer)


class _Poisonable(torch.nn.Module):
    """y = w·x; a batch flagged `poison` adds √0 to the loss: a finite loss with NaN gradients,
    the symptom the GPU runs showed."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(2))

    def forward(self, x, poison):
        loss = ((x * self.w).sum(-1) - 1.0).pow(2).mean()
        if bool(poison.any()):
            loss = loss + torch.sqrt((self.w * 0).sum())
        return {"loss": loss}


def test_a_real_trainer_skips_the_poisoned_step_and_finishes(tmp_path) -> None:
    data = [{"x": [1.0, 2.0], "poison": int(i == 2)} for i in range(6)]
    guard = non_finite_guard()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=1,
                             learning_rate=0.05, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True)
    trainer = Trainer(model=_Poisonable(), args=args, train_dataset=data, callbacks=[guard])
    trainer.train()
    assert trainer.state.global_step == 6 and guard.tripped_at is None
    assert len(guard.skipped) == 1
    grad_norms = {r["step"]: r["grad_norm"] for r in trainer.state.log_history if "grad_norm" in r}
    assert [s for s, g in grad_norms.items() if g != g] == guard.skipped  # NaN exactly where dropped
    assert_finite(trainer.model)
    assert not torch.equal(trainer.model.w.detach(), torch.ones(2))  # the other five steps trained


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

"""Calibration of the rank decision: threshold choice on hand cases, the weighted sample on the
real train splits, and the `calibrate` command on the real model."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import shutil

import orjson
import pytest

from rationanomaly.training.calibrate import Scored, best_threshold, calibration_sample, f1_by_dataset, weighted_f1
from rationanomaly.training.data import load_split


def test_threshold_maximises_the_mean_of_per_dataset_f1() -> None:
    # Dataset "big": many normals just above 0 — any threshold below 0.6 floods it with false alarms.
    big = [Scored("big", "abnormal", 2.0), Scored("big", "abnormal", 1.0)] + [Scored("big", "normal", 0.5, 10.0)]
    # Dataset "small": its anomaly sits at 0.8, so a threshold above 0.8 misses it.
    small = [Scored("small", "abnormal", 0.8), Scored("small", "normal", -1.0)]
    threshold, f1s = best_threshold(big + small)
    assert 0.5 < threshold < 0.8
    assert f1s == {"big": 1.0, "small": 1.0}
    assert f1_by_dataset(big + small, 0.0)["big"] == pytest.approx(2 * 2 / (2 * 2 + 10))


def test_weights_count_as_many_examples() -> None:
    one = [Scored("d", "abnormal", 1.0), Scored("d", "normal", 1.0, weight=4.0)]
    four = [Scored("d", "abnormal", 1.0)] + [Scored("d", "normal", 1.0)] * 4
    assert weighted_f1(one, 0.0) == pytest.approx(weighted_f1(four, 0.0)) == pytest.approx(2 / 6)


def test_ties_stay_nearest_zero() -> None:
    perfect = [Scored("d", "abnormal", 3.0), Scored("d", "normal", -3.0)]
    assert best_threshold(perfect)[0] == 0.0


def test_without_anomalies_there_is_nothing_to_calibrate() -> None:
    with pytest.raises(ValueError, match="abnormal"):
        best_threshold([Scored("d", "normal", 0.1)])


def test_sample_weights_restore_each_real_splits_label_mix() -> None:
    train = load_split("bgl_train") + load_split("spirit_train")
    sample = calibration_sample(train, normal_per_dataset=50, seed=3, abnormal_per_dataset=20)
    for dataset in ("bgl", "spirit"):
        full = [e for e in train if e.provenance.dataset == dataset]
        mine = [(e, w) for e, w in sample if e.provenance.dataset == dataset]
        assert sum(e.label == "normal" for e, _ in mine) == 50
        assert sum(e.label == "abnormal" for e, _ in mine) == 20
        for label in ("normal", "abnormal"):
            represented = sum(w for e, w in mine if e.label == label)
            assert represented == pytest.approx(sum(e.label == label for e in full))
    again = calibration_sample(train, normal_per_dataset=50, seed=3, abnormal_per_dataset=20)
    assert [e.provenance.item_id for e, _ in again] == [e.provenance.item_id for e, _ in sample]


@pytest.mark.slow
def test_calibrate_command_writes_a_decision_the_backend_reads(tmp_path) -> None:
    from typer.testing import CliRunner

    from rationanomaly.model.decision import RankDecider, make_decider
    from rationanomaly.model.loading import shipped_adapter_dir
    from rationanomaly.model.ranking import DECISION_FILE
    from rationanomaly.model.settings import BackendSettings
    from rationanomaly.training.cli import app

    adapter = tmp_path / "adapter"
    shutil.copytree(shipped_adapter_dir(), adapter)
    (adapter / DECISION_FILE).unlink(missing_ok=True)
    result = CliRunner().invoke(app, ["calibrate", "--adapter", str(adapter), "--normal-per-dataset", "4",
                                      "--abnormal-per-dataset", "2", "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    decision = orjson.loads((adapter / DECISION_FILE).read_bytes())
    assert decision["decision"] == "rank"
    assert decision["scored"] == 12 and decision["calibrated_on"] == ["bgl_train", "spirit_train"]
    assert set(decision["train_f1"]) == {"bgl", "spirit"}
    assert all(0.0 <= f <= 1.0 for f in decision["train_f1"].values())
    # Never worse on its own sample than the uncalibrated decision it started from.
    mean = lambda f1s: sum(f1s.values()) / len(f1s)  # noqa: E731
    assert mean(decision["train_f1"]) >= mean(decision["train_f1_at_zero"])
    decider = make_decider(BackendSettings(device="cpu", adapter=str(adapter)))
    assert isinstance(decider, RankDecider) and decider.threshold == decision["threshold"]
    decider.close()


@pytest.mark.slow
def test_calibrate_on_the_held_out_share_of_decision_tuning(tmp_path) -> None:
    """A stage trained after decision tuning calibrates on the very share that tuning kept out."""
    from typer.testing import CliRunner

    from rationanomaly.model.loading import shipped_adapter_dir
    from rationanomaly.model.ranking import DECISION_FILE, load_threshold
    from rationanomaly.training.cli import app
    from rationanomaly.training.data import load_split
    from rationanomaly.training.data import stratified_holdout

    adapter = tmp_path / "adapter"
    shutil.copytree(shipped_adapter_dir(), adapter)
    (adapter / DECISION_FILE).unlink()
    result = CliRunner().invoke(app, ["calibrate", "--adapter", str(adapter), "--holdout", "0.02", "--seed", "5"])
    assert result.exit_code == 0, result.output
    decision = orjson.loads((adapter / DECISION_FILE).read_bytes())
    _, held = stratified_holdout(load_split("bgl_train") + load_split("spirit_train"), 0.02, 5)
    assert decision["held_out"] == len(held) and decision["seed"] == 5
    assert decision["calibrated_on"] == ["bgl_train held-out 0.02", "spirit_train held-out 0.02"]
    assert set(decision["holdout_f1"]) == {"bgl", "spirit"}
    assert load_threshold(adapter) == decision["threshold"]

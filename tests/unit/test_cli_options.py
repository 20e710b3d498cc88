"""One vocabulary on the command line: `run`, `replay` and `eval` choose a model with the same
options, `run` and `replay` share theirs from one declaration, and `eval` is registered once."""

from __future__ import annotations

import pytest
import typer
from typer.main import get_command

from rationanomaly.cli.main import app
from rationanomaly.cli.options import DetectorFlags
from rationanomaly.stream.settings import load_settings

MODEL_CHOICE = ("--model", "--adapter", "--decision", "--base-url")


def options(command) -> dict:
    return {opt: p for p in command.params for opt in p.opts}


@pytest.fixture(scope="module")
def commands() -> dict:
    pytest.importorskip("trl", reason="eval comes with the train extra")
    from rationanomaly.cli.main import _mount_training

    _mount_training()
    root = get_command(app)
    assert hasattr(root, "commands")  # a group (typer may bring its own click)
    return dict(root.commands)


def test_run_replay_and_eval_choose_a_model_with_the_same_words(commands) -> None:
    run, replay, evaluate = (options(commands[name]) for name in ("run", "replay", "eval"))
    for flag in MODEL_CHOICE:
        helps = {run[flag].help, replay[flag].help, evaluate[flag].help}
        assert len(helps) == 1, (flag, helps)
    assert "--model" in evaluate and "base" not in (evaluate["--model"].help or "").split("'")


def test_run_and_replay_share_their_detector_options(commands) -> None:
    run, replay = options(commands["run"]), options(commands["replay"])
    shared = {"--config", "--profile", "--mode", "--window", "--output-format", "--backend", "--publish",
              "--publish-unknown", *MODEL_CHOICE}
    assert shared <= set(run) and shared <= set(replay)
    for flag in shared:
        assert run[flag].help == replay[flag].help


def test_eval_is_registered_once(commands) -> None:
    train = commands["train"]
    assert "sft" in train.commands and "eval" not in train.commands
    assert "eval" in commands


@pytest.mark.parametrize(("adapter", "expected"), [("none", None), ("default", "default"), (None, "default")])
def test_adapter_none_means_no_adapter_in_the_settings(adapter, expected) -> None:
    overrides = {k: v for k, v in DetectorFlags(adapter=adapter).settings_overrides().items() if v is not None}
    nested: dict = {}
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        nested.setdefault(section, {})[key] = value
    settings = load_settings(None, **nested)
    assert settings.backend.adapter == expected


def test_the_replay_command_parses_the_shared_options(tmp_path, monkeypatch) -> None:
    """The decorated command receives what was typed, as DetectorFlags."""
    import rationanomaly.stream.replay as replay_module

    seen = {}

    def fake_replay_files(files, settings, out, **kwargs):  # stands in for the pipeline: only the flags matter
        seen["settings"] = settings
        raise typer.Exit(0)

    monkeypatch.setattr(replay_module, "replay_files", fake_replay_files)
    # The command configures logging onto the runner's stream, which the runner then closes:
    # later tests would log into a closed file.
    monkeypatch.setattr("rationanomaly.cli.main.configure_logging", lambda level: None)
    log = tmp_path / "x.log"
    log.write_text("line\n")
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["replay", str(log), "--adapter", "none", "--decision", "generate",
                                      "--profile", "hdfs", "--output", str(tmp_path / "v.jsonl")])
    assert result.exit_code == 0, result.output
    backend = seen["settings"].backend
    assert (backend.adapter, backend.decision, seen["settings"].profile.name) == (None, "generate", "hdfs")

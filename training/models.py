"""Where the base model and adapters come from, for training and evaluation: model/'s loading
(`rationanomaly.model.loading`), with the words the command line uses."""

from __future__ import annotations

from pathlib import Path

from rationanomaly.model.loading import resolve_model


def resolve_base_model(model: str | None) -> str:
    """`None`/""/"default" → the prepared default checkpoint (`model.loading.prepare_default_model`);
    a hub id or a path as given."""
    return resolve_model("default" if model in (None, "") else model)


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter directory (what `--adapter` takes, never `--model`).

    >>> is_adapter_dir("/nonexistent")
    False
    """
    return (Path(path) / "adapter_config.json").exists()

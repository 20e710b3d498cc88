"""Where the base model and adapters come from, for training and evaluation.

model/ owns loading (`rationanomaly.model.loading`); this module only resolves a user's
`--model` argument to a local HF directory and falls back to the documented cache location
when model/'s loader is not importable (it is the same path `prepare_default_model` writes).
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"


def default_model_dir() -> Path:
    try:
        from rationanomaly.model.loading import prepare_default_model
    except ImportError:
        cache = Path(os.environ.get("RATIONANOMALY_MODEL_CACHE", Path.home() / ".cache" / "rationanomaly" / "models"))
        path = cache / DEFAULT_MODEL_NAME
        if not (path / "config.json").exists():
            raise FileNotFoundError(
                f"no base model at {path}; run rationanomaly.model.loading.prepare_default_model() "
                "or pass --model with a local HF checkpoint directory"
            ) from None
        return path
    return Path(prepare_default_model())


def resolve_base_model(model: str | None) -> str:
    """`None`/"default" → the prepared default model; otherwise the path or name as given."""
    if model in (None, "", "default"):
        return str(default_model_dir())
    return model


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()

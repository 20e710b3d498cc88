from __future__ import annotations

import pydantic
import pytest

from rationanomaly.model.settings import BackendSettings


def test_defaults() -> None:
    settings = BackendSettings()
    assert (settings.kind, settings.model, settings.adapter) == ("transformers", "default", "default")
    assert (settings.max_new_tokens, settings.temperature, settings.concurrency, settings.batch_size) == (160, 0.0, 8, 8)
    assert settings.structured_outputs is True
    assert settings.api_key.get_secret_value() == "EMPTY"
    assert "EMPTY" not in repr(settings)


def test_frozen_and_extra_forbidden() -> None:
    settings = BackendSettings()
    with pytest.raises(pydantic.ValidationError):
        settings.kind = "openai"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="extra"):
        BackendSettings(batchsize=4)  # type: ignore[call-arg]


def test_openai_base_url_normalised() -> None:
    settings = BackendSettings(kind="openai", base_url="http://127.0.0.1:8000/v1/", adapter=None)
    assert settings.base_url == "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "openai"}, "needs base_url"),
        ({"kind": "openai", "base_url": "127.0.0.1:8000"}, "must start with http"),
        ({"kind": "openai", "base_url": "http://x/v1", "adapter": "/tmp/a", "decision": "generate"}, "--lora-modules"),
        ({"kind": "transformers", "base_url": "http://x/v1"}, "only used by kind='openai'"),
        ({"kind": "vllm", "device": "cpu"}, "needs a CUDA GPU"),
        ({"device": "gpu0"}, "cuda:N"),
        ({"device": "cpu", "dtype": "float16"}, "float32"),
        ({"model": "  "}, "hub id"),
        ({"concurrency": 0}, "greater than or equal to 1"),
        ({"temperature": -1}, "greater than or equal to 0"),
        ({"kind": "tgi"}, "openai"),
    ],
)
def test_invalid_settings_say_how_to_fix(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        BackendSettings(**kwargs)  # type: ignore[arg-type]

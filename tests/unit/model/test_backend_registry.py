from __future__ import annotations

import pytest

from rationanomaly.model.backends import BACKENDS, BackendError, make_backend
from rationanomaly.model.backends.vllm import VLLMBackend
from rationanomaly.model.settings import BackendSettings


def test_registry_covers_every_kind() -> None:
    assert set(BACKENDS) == {"openai", "transformers", "vllm"}


def test_vllm_missing_is_a_clear_backend_error() -> None:
    # vllm cannot be installed on these machines: the missing-package path is the one testable here.
    try:
        import vllm  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("vllm is installed here; the missing-package path cannot be exercised")
    with pytest.raises(BackendError, match=r"needs the vllm package.*kind='openai'"):
        make_backend(BackendSettings(kind="vllm", device="cuda"))
    with pytest.raises(BackendError):
        VLLMBackend(BackendSettings(kind="vllm", device="cuda"))


def test_openai_backend_builds_without_a_server() -> None:
    settings = BackendSettings(kind="openai", base_url="http://127.0.0.1:9/v1", retries=0, timeout_s=1)
    backend = make_backend(settings)
    try:
        assert backend.model_id == "default"
    finally:
        backend.close()

from __future__ import annotations

import os

import pytest

from rationanomaly.model.backends import make_backend
from rationanomaly.model.settings import BackendSettings

from tests.integration.detector_support import MemoBackend

# Short answers keep the real model's CPU time in CI to a minute or so per run; a verdict whose
# answer is cut off becomes `unknown`, which these tests count like any other verdict.
TEST_MAX_NEW_TOKENS = int(os.environ.get("RATIONANOMALY_TEST_MAX_NEW_TOKENS", "64"))


@pytest.fixture(scope="session")
def backend_settings() -> BackendSettings:
    return BackendSettings(kind="transformers", max_new_tokens=TEST_MAX_NEW_TOKENS, batch_size=16, device="cpu")


@pytest.fixture(scope="session")
def real_backend(backend_settings):
    """The default model (SmolLM2-135M-Instruct, + the shipped adapter when present), loaded once."""
    inner = make_backend(backend_settings)
    backend = MemoBackend(inner)
    yield backend
    inner.close()

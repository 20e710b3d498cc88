"""Inference backends behind one small Protocol, chosen by `settings.kind` from a registry.

Transport only: a backend generates text for a prompt and, where it can, scores a completion
after one. How a label is decided from that is `model.decision`'s business.

Each factory imports its module when called, so choosing `openai` never imports torch and
choosing `transformers` never imports vllm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from rationanomaly.model.backends.base import Backend, BackendError, Conversation, Generation
from rationanomaly.model.settings import BackendKind, BackendSettings

BackendFactory = Callable[[BackendSettings], Backend]


def _openai(settings: BackendSettings) -> Backend:
    from rationanomaly.model.backends.openai import OpenAIBackend

    # The structured-outputs probe is for generation; a rank-only decider never generates.
    return OpenAIBackend(settings, probe=settings.decision != "rank")


def _transformers(settings: BackendSettings) -> Backend:
    from rationanomaly.model.backends.transformers import TransformersBackend

    return TransformersBackend(settings)


def _vllm(settings: BackendSettings) -> Backend:
    from rationanomaly.model.backends.vllm import VLLMBackend

    return VLLMBackend(settings)


BACKENDS: Mapping[BackendKind, BackendFactory] = MappingProxyType(
    {"openai": _openai, "transformers": _transformers, "vllm": _vllm}
)


def make_backend(settings: BackendSettings) -> Backend:
    """Build the transport `settings.kind` names (`model.decision.make_decider` puts a decision on it)."""
    try:
        factory = BACKENDS[settings.kind]
    except KeyError:  # unreachable through BackendSettings' Literal, kept for model_construct
        raise BackendError(f"unknown backend kind {settings.kind!r}; choose one of {sorted(BACKENDS)}") from None
    return factory(settings)


__all__ = ["BACKENDS", "Backend", "BackendError", "Conversation", "Generation", "make_backend"]

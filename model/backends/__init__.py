"""Inference backends behind one small Protocol, chosen by `settings.kind` from a registry.

Each factory imports its module when called, so choosing `openai` never imports torch and
choosing `transformers` never imports vllm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import structlog

from rationanomaly.model.backends.base import Backend, BackendError, Conversation, Generation
from rationanomaly.model.settings import BackendKind, BackendSettings

BackendFactory = Callable[[BackendSettings], Backend]


def _openai(settings: BackendSettings) -> Backend:
    from rationanomaly.model.backends.openai import OpenAIBackend

    backend = OpenAIBackend(settings, probe=settings.decision != "rank")
    if settings.decision != "rank":
        return backend
    from rationanomaly.model.prompt import template_messages
    from rationanomaly.model.ranking import RankingBackend, candidates

    try:
        # One request at start-up: a server without echoed log-probs fails here, not per verdict.
        probe_log = "ciod: LOGIN chdir(<*>) failed: No such file or directory"
        backend.check_scoring(template_messages(probe_log), candidates(probe_log)["abnormal"])
    except BackendError:
        backend.close()
        raise
    threshold = _rank_threshold(settings)
    return RankingBackend(backend, 0.0 if threshold is None else threshold, batch_size=settings.batch_size)


def _transformers(settings: BackendSettings) -> Backend:
    from rationanomaly.model.backends.transformers import TransformersBackend
    from rationanomaly.model.ranking import RankingBackend

    backend = TransformersBackend(settings)  # first: it turns a bad model or adapter into BackendError
    if settings.decision == "generate":
        return backend
    threshold = _rank_threshold(settings)
    if threshold is None and settings.decision == "auto":
        return backend  # no calibrated rank decision shipped: generate
    return RankingBackend(backend, 0.0 if threshold is None else threshold, batch_size=settings.batch_size)


def _rank_threshold(settings: BackendSettings) -> float | None:
    """The override, else the adapter's calibrated decision.json; None when neither is there
    (ranking then compares the two answers as they are, at 0)."""
    from rationanomaly.model.loading import resolve_adapter
    from rationanomaly.model.ranking import load_threshold

    if settings.rank_threshold is not None:
        return settings.rank_threshold
    return load_threshold(resolve_adapter(settings.adapter))


def _vllm(settings: BackendSettings) -> Backend:
    from rationanomaly.model.backends.vllm import VLLMBackend
    from rationanomaly.model.loading import resolve_adapter
    from rationanomaly.model.ranking import load_threshold

    backend = VLLMBackend(settings)
    if settings.decision == "auto" and load_threshold(resolve_adapter(settings.adapter)) is not None:
        # The adapter was calibrated for ranking, which vLLM does not expose here: say so once.
        structlog.get_logger(__name__).warning(
            "adapter ships a rank decision; kind='vllm' generates instead (verdicts may differ from the model card)",
            adapter=settings.adapter,
        )
    return backend


BACKENDS: Mapping[BackendKind, BackendFactory] = MappingProxyType(
    {"openai": _openai, "transformers": _transformers, "vllm": _vllm}
)


def make_backend(settings: BackendSettings) -> Backend:
    """Build the backend `settings.kind` names."""
    try:
        factory = BACKENDS[settings.kind]
    except KeyError:  # unreachable through BackendSettings' Literal, kept for model_construct
        raise BackendError(f"unknown backend kind {settings.kind!r}; choose one of {sorted(BACKENDS)}") from None
    return factory(settings)


__all__ = ["BACKENDS", "Backend", "BackendError", "Conversation", "Generation", "make_backend"]

"""In-process generation with transformers: batched, left-padded, greedy by default.

For CPUs and small models (tests, benchmarks, training evaluation). It does not constrain
the output: every response is validated by the parser downstream.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from rationanomaly.model.backends.base import BackendError, Conversation, Generation
from rationanomaly.model.loading import ModelLoadError, load_causal_lm, model_label, resolve_adapter
from rationanomaly.model.settings import BackendSettings

log = structlog.get_logger(__name__)


class TransformersBackend:
    """`Backend` that runs `model.generate` in batches of `settings.batch_size`."""

    def __init__(self, settings: BackendSettings, *, model: Any = None, tokenizer: Any = None) -> None:
        """Load from settings, or wrap an already loaded model and tokenizer (training
        evaluation hands in the model it is training)."""
        self._settings = settings
        if model is None or tokenizer is None:
            try:
                adapter_path = resolve_adapter(settings.adapter)
                model, tokenizer = load_causal_lm(
                    settings.model, adapter_path, device=settings.device, dtype=settings.dtype
                )
            except ModelLoadError as error:
                raise BackendError(str(error)) from error
            self.model_id: str = model_label(settings.model, adapter_path)
        else:
            # A model handed in (training evaluation) is named by where it was loaded from.
            self.model_id = str(getattr(model, "name_or_path", None) or settings.model)
        if tokenizer.padding_side != "left":
            # Right padding would put pad tokens between the prompt and the generated text.
            tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._model = model
        self._tokenizer = tokenizer

    def generate(self, conversations: Sequence[Conversation]) -> list[Generation]:
        results: list[Generation] = []
        size = self._settings.batch_size
        for start in range(0, len(conversations), size):
            results.extend(self._generate_batch(conversations[start : start + size]))
        return results

    def score(self, conversations: Sequence[Conversation], completions: Sequence[str]) -> list[float]:
        """Teacher-forced log-likelihood (nats) of each completion after its conversation."""
        from rationanomaly.model.scoring import completion_logprobs

        if self._model is None:
            raise BackendError("backend is closed")
        return completion_logprobs(self._model, self._tokenizer, conversations, completions, self._settings.batch_size)

    def close(self) -> None:
        self._model = None
        self._tokenizer = None

    def _generate_batch(self, batch: Sequence[Conversation]) -> list[Generation]:
        started = time.perf_counter()
        try:
            texts, token_counts = self._run(batch)
        except Exception as error:  # the Protocol forbids raising for a bad request
            log.exception("batch generation failed", batch=len(batch))
            latency = time.perf_counter() - started
            return [Generation(None, latency, error=f"generation error: {error!r}") for _ in batch]
        # One forward pass serves the whole batch: each item waited for all of it.
        latency = time.perf_counter() - started
        return [
            Generation(text, latency, completion_tokens=count)
            for text, count in zip(texts, token_counts, strict=True)
        ]

    def _run(self, batch: Sequence[Conversation]) -> tuple[list[str], list[int]]:
        import torch

        if self._model is None:
            raise BackendError("backend is closed")
        prompts = [
            self._tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)
            for conv in batch
        ]
        # The chat template already wrote the special tokens; adding them again would double BOS.
        encoded = self._tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        encoded = encoded.to(self._model.device)
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": self._settings.temperature}
            if self._settings.temperature > 0
            else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
        )
        with torch.inference_mode():
            output = self._model.generate(
                **encoded,
                max_new_tokens=self._settings.max_new_tokens,
                pad_token_id=self._tokenizer.pad_token_id,
                **sampling,
            )
        new_tokens = output[:, encoded["input_ids"].shape[1] :]
        texts = self._tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return texts, [_count_generated(row.tolist(), self._eos_ids()) for row in new_tokens]

    def _eos_ids(self) -> set[int]:
        config = getattr(self._model, "generation_config", None)
        eos = getattr(config, "eos_token_id", None)
        ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self._tokenizer.eos_token_id is not None:
            ids.add(self._tokenizer.eos_token_id)
        return ids


def _count_generated(row: list[int], eos_ids: set[int]) -> int:
    """Tokens up to and including the first end-of-sequence token (the rest is padding).

    >>> _count_generated([5, 6, 2, 2, 2], {2})
    3
    >>> _count_generated([5, 6, 7], {2})
    3
    """
    for index, token in enumerate(row):
        if token in eos_ids:
            return index + 1
    return len(row)

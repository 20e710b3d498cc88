"""In-process vLLM: one `LLM` engine, output constrained to OUTPUT_REGEX, optional LoRA.

vLLM is imported only when this backend is built: it needs a CUDA GPU and pins its own torch
and transformers, so most installs of this project do not have it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import structlog

from rationanomaly.model.backends.base import BackendError, Conversation, Generation
from rationanomaly.model.loading import model_label, resolve_adapter, resolve_model
from rationanomaly.model.parser import OUTPUT_REGEX
from rationanomaly.model.settings import BackendSettings

log = structlog.get_logger(__name__)

INSTALL_HINT = "pip install 'rationanomaly[vllm]' on a machine with a CUDA GPU, or use kind='openai' against `vllm serve`"


class VLLMBackend:
    """`Backend` over `vllm.LLM.chat`; the engine batches the whole list itself."""

    def __init__(self, settings: BackendSettings) -> None:
        vllm = _import_vllm()
        self._settings = settings
        model_path = resolve_model(settings.model)
        adapter_path = resolve_adapter(settings.adapter)
        dtype = "auto" if settings.dtype == "auto" else settings.dtype
        try:
            self._llm: Any = vllm.LLM(
                model=model_path,
                dtype=dtype,
                enable_lora=adapter_path is not None,
                enable_prefix_caching=True,
            )
        except Exception as error:  # vLLM raises a wide range of types on bad models or OOM
            raise BackendError(f"vLLM could not load {model_path!r}: {error}") from error
        structured = (
            vllm.StructuredOutputsParams(regex=OUTPUT_REGEX) if settings.structured_outputs else None
        )
        self._sampling = vllm.SamplingParams(
            temperature=settings.temperature,
            max_tokens=settings.max_new_tokens,
            structured_outputs=structured,
        )
        self._lora = (
            vllm.LoRARequest("rationanomaly", 1, adapter_path) if adapter_path is not None else None
        )
        self.model_id: str = model_label(settings.model, adapter_path)

    def generate(self, conversations: Sequence[Conversation]) -> list[Generation]:
        if self._llm is None:
            raise BackendError("backend is closed")
        started = time.perf_counter()
        try:
            outputs = self._llm.chat(
                list(conversations),
                sampling_params=self._sampling,
                lora_request=self._lora,
                use_tqdm=False,
            )
        except Exception as error:  # one failing batch must not stop the stream
            log.exception("vLLM generation failed", batch=len(conversations))
            latency = time.perf_counter() - started
            return [Generation(None, latency, error=f"generation error: {error!r}") for _ in conversations]
        latency = time.perf_counter() - started
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            generations.append(Generation(completion.text, latency, completion_tokens=len(completion.token_ids)))
        return generations

    def close(self) -> None:
        self._llm = None


class _VLLMModules:
    """The few names this backend needs, gathered from their modules in one place."""

    def __init__(self) -> None:
        import vllm
        from vllm.lora.request import LoRARequest
        from vllm.sampling_params import StructuredOutputsParams

        self.LLM = vllm.LLM
        self.SamplingParams = vllm.SamplingParams
        self.StructuredOutputsParams = StructuredOutputsParams
        self.LoRARequest = LoRARequest


def _import_vllm() -> _VLLMModules:
    try:
        return _VLLMModules()
    except ImportError as error:
        raise BackendError(f"the vllm backend needs the vllm package ({error}); {INSTALL_HINT}") from error

"""Settings of one inference backend: a frozen section that the process's settings root embeds.

This module never reads the environment; the entry point's pydantic-settings root does and
passes the section in.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

BackendKind = Literal["openai", "transformers", "vllm"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
Decision = Literal["auto", "generate", "rank"]

DEFAULT = "default"
_DEVICE_RE = re.compile(r"cpu|auto|mps|cuda(?::\d+)?")


class BackendSettings(BaseModel):
    """How to reach or load the model that judges logs.

    >>> BackendSettings().kind, BackendSettings().model
    ('transformers', 'default')
    >>> BackendSettings(kind="openai")
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for BackendSettings
      Value error, kind='openai' needs base_url: set it to the server's OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1 ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: BackendKind = "transformers"
    # A hub id or local path; "default" is the SmolLM2-135M-Instruct checkpoint that
    # `prepare_default_model` builds. For kind="openai" it is the served model name, and
    # "default" asks the server's /v1/models for the one it serves.
    model: str = DEFAULT
    # A LoRA adapter directory; "default" is the shipped adapter when one is committed.
    adapter: str | None = DEFAULT
    base_url: str | None = None
    # kind="openai" with decision="rank": the served model's tokenizer (hub id or path), whose chat
    # template renders the prompts the server scores; "default" is the default model's.
    tokenizer: str = DEFAULT
    api_key: SecretStr = SecretStr("EMPTY")
    max_new_tokens: int = Field(default=160, ge=1, le=8192)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    concurrency: int = Field(default=8, ge=1, le=1024)  # requests in flight (openai)
    timeout_s: float = Field(default=60.0, gt=0.0)  # per request (openai)
    retries: int = Field(default=2, ge=0, le=10)  # transport retries on 5xx/429/connection errors
    backoff_s: float = Field(default=0.5, ge=0.0)  # first retry delay, doubled each time
    batch_size: int = Field(default=8, ge=1, le=4096)  # in-process batching (transformers)
    structured_outputs: bool = True  # constrain output to OUTPUT_REGEX (openai, vllm)
    # openai: also send the output grammar as GBNF in the `grammar` field, which llama.cpp's
    # servers read (they ignore `structured_outputs`); vLLM would only warn about the extra field.
    output_grammar: bool = False
    device: str = "auto"  # cuda when available, else cpu
    dtype: DType = "auto"
    # How the verdict is reached (model.decision): "generate" decodes a rationale and answer;
    # "rank" scores the two grounded answers and keeps the likelier (in-process with
    # transformers, or on a server that echoes prompt log-probs with openai); "auto", for every
    # kind, ranks when a calibrated threshold is known (rank_threshold, or the adapter's
    # decision.json) and the backend can score, else generates.
    decision: Decision = "auto"
    rank_threshold: float | None = None  # overrides decision.json's threshold (nats)
    # Decide, then explain (model.explain): under the rank decision, each abnormal verdict gets an
    # explanation the model writes with the label fixed, published only when it passes its check
    # (quotes in the log, stance = label, no markup), else the draft with the reason. Adds one
    # generation per abnormal template (cached per template like the verdict) and joins the
    # decision's model_id, so verdict ids change. Off by default: model/README.md has the cost.
    explain: bool = False

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError('model is empty: give a hub id, a local path, or "default"')
        return value

    @field_validator("adapter")
    @classmethod
    def _no_adapter(cls, value: str | None) -> str | None:
        # "none" (the command line's word) and "" (an emptied setting) both mean no adapter.
        if value is not None and value.strip().lower() in ("", "none"):
            return None
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_http(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url {value!r} must start with http:// or https://, e.g. http://127.0.0.1:8000/v1"
            )
        return value.rstrip("/")

    @field_validator("device")
    @classmethod
    def _device_known(cls, value: str) -> str:
        if not _DEVICE_RE.fullmatch(value):
            raise ValueError(f"device {value!r} is not one of cpu, auto, mps, cuda, cuda:N")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> BackendSettings:
        if self.kind == "openai":
            if self.base_url is None:
                raise ValueError(
                    "kind='openai' needs base_url: set it to the server's OpenAI-compatible root, "
                    "e.g. http://127.0.0.1:8000/v1"
                )
            if self.adapter not in (None, DEFAULT) and self.decision == "generate":
                # Otherwise the adapter directory is read for its decision.json only: it names
                # the adapter the server serves.
                raise ValueError(
                    "kind='openai' cannot load an adapter client-side: serve it with "
                    "`vllm serve BASE --enable-lora --lora-modules NAME=PATH` and set model=NAME"
                )
        elif self.base_url is not None:
            raise ValueError(
                f"base_url is only used by kind='openai'; remove it or set kind='openai' (kind is {self.kind!r})"
            )
        if self.dtype == "float16" and self.device == "cpu":
            raise ValueError("dtype='float16' is not supported for generation on CPU; use float32 or auto")
        if self.decision == "rank" and self.kind == "vllm":
            raise ValueError(
                "decision='rank' needs answer scores, which kind='vllm' does not expose here; use kind='openai' "
                "against `vllm serve` (it echoes prompt log-probs) or decision='generate'"
            )
        if self.kind == "vllm" and self.device in ("cpu", "mps"):
            raise ValueError(f"kind='vllm' needs a CUDA GPU; set device='cuda' (device is {self.device!r})")
        return self

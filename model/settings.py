"""Settings of one inference backend: a frozen section that the process's settings root embeds.

This module never reads the environment; the entry point's pydantic-settings root does and
passes the section in.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

BackendKind = Literal["openai", "transformers", "vllm"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
Decision = Literal["auto", "generate", "rank"]

DEFAULT = "default"
_DEVICE_RE = re.compile(r"cpu|auto|mps|cuda(?::\d+)?")
_DATASET_RE = re.compile(r"[a-z0-9][a-z0-9_-]*")


class RetrievalSettings(BaseModel):
    """The memory of reviewed templates the rank decision consults (model.retrieval).

    The index holds the reviewed train templates of the shared data folder (its
    `templates/<dataset>_train.jsonl`, read where they lie, never copied), any site files named
    in `reviewed`, and every operator correction the detector receives. It is used when the
    decision is rank and the index holds templates of the detector's dataset; otherwise the
    plain rank decision runs, with a warning saying why.

    >>> RetrievalSettings().enabled, RetrievalSettings().dataset
    (True, 'auto')
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # On by default: under cross-validation the blend matched or beat the model alone on both
    # datasets (model card, "Cross-validated figures"). Off: the plain rank decision.
    enabled: bool = True
    # The folder holding templates/<dataset>_train.jsonl; None: RATIONANOMALY_DATA_DIR, else
    # ../shared/data (resolved by the entry point, which alone reads the environment).
    data_dir: Path | None = None
    # Which train splits to index; None: every templates/*_train.jsonl found there.
    datasets: tuple[str, ...] | None = None
    # The site's own reviewed templates: JSONL of {"template", "label"[, "dataset"]}.
    reviewed: tuple[Path, ...] = ()
    # Neighbours are taken from this dataset's examples only (site conventions differ between
    # systems). "auto": the format profile's name; "all": no filter.
    dataset: str = "auto"
    # Overrides of the adapter's retrieval.json (chosen by cross-validation: training/cv.py).
    k: int | None = Field(default=None, ge=1, le=100)
    weight: float | None = Field(default=None, ge=0.0, le=50.0)
    threshold: float | None = None
    blend_file: Path | None = None  # None: retrieval.json in the adapter's directory

    @field_validator("datasets")
    @classmethod
    def _datasets_named(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in value or ():
            if not _DATASET_RE.fullmatch(name):
                raise ValueError(f"dataset {name!r} must be a lower-case name such as 'bgl' or 'spirit'")
        return value


class SessionRulesSettings(BaseModel):
    """Session verdicts from rules learned on labelled sessions (model.sessions), for window mode
    over session windows (HDFS blocks). The rules decide the label and name their reasons; the
    model still judges the window and writes the rationale when it agrees.

    >>> SessionRulesSettings().enabled
    False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Off by default: the shipped rules were learned on HDFS block sessions (hdfs_sessions.json)
    # and mean nothing for other systems' windows.
    enabled: bool = False
    rules_file: Path | None = None  # None: hdfs_sessions.json in the adapter's directory


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
    # The rank decision's memory of reviewed templates (see RetrievalSettings).
    retrieval: RetrievalSettings = RetrievalSettings()
    # Session rules in window mode (see SessionRulesSettings).
    sessions: SessionRulesSettings = SessionRulesSettings()

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

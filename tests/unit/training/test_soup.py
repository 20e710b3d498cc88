"""Adapter soups on the two shipped adapters: the update is the weighted mean, exactly."""

from __future__ import annotations

import shutil

import orjson
import pytest
import torch

from rationanomaly.model.loading import shipped_adapter_dir
from rationanomaly.training.soup import CONFIG_FILE, SoupError, soup, update

MODULES = ("base_model.model.model.layers.0.self_attn.q_proj", "base_model.model.model.layers.29.self_attn.o_proj")


@pytest.fixture(scope="module")
def pair():
    ranked = shipped_adapter_dir()
    return ranked, ranked.parent / "rationanomaly-smollm2-generate"


def test_the_soup_update_is_the_weighted_mean_of_updates(pair, tmp_path) -> None:
    a, b = pair
    mixed = soup([a, b], tmp_path / "soup", weights=[0.25, 0.75])
    config = orjson.loads((mixed / CONFIG_FILE).read_bytes())
    assert config["r"] == 32 and config["lora_alpha"] == 32
    assert not (mixed / "decision.json").exists(), "a soup needs its own threshold"
    for module in MODULES:
        expected = 0.25 * update(a, module) + 0.75 * update(b, module)
        assert not torch.allclose(update(a, module), update(b, module), atol=1e-4), "the pair must differ"
        torch.testing.assert_close(update(mixed, module), expected, atol=2e-4, rtol=2e-3)


def test_a_soup_of_one_adapter_with_itself_is_that_adapter(pair, tmp_path) -> None:
    a, _ = pair
    mixed = soup([a, a], tmp_path / "same")
    for module in MODULES:
        torch.testing.assert_close(update(mixed, module), update(a, module), atol=2e-4, rtol=2e-3)


def test_mismatched_adapters_and_weights_are_refused(pair, tmp_path) -> None:
    a, b = pair
    with pytest.raises(SoupError, match="summing to 1"):
        soup([a, b], tmp_path / "w", weights=[0.5, 0.6])
    with pytest.raises(SoupError, match="two adapters"):
        soup([a], tmp_path / "one")
    other = tmp_path / "other"
    shutil.copytree(b, other)
    config = orjson.loads((other / CONFIG_FILE).read_bytes())
    (other / CONFIG_FILE).write_bytes(orjson.dumps(dict(config, target_modules=["q_proj", "v_proj"])))
    with pytest.raises(SoupError, match="target_modules"):
        soup([a, other], tmp_path / "t")
    with pytest.raises(SoupError, match="not a LoRA adapter"):
        soup([a, tmp_path], tmp_path / "x")


@pytest.mark.slow
def test_a_soup_loads_and_ranks_like_its_ingredient(pair, tmp_path) -> None:
    """peft loads the wider adapter, and a soup of an adapter with itself scores as it does."""
    from rationanomaly.model.loading import load_causal_lm
    from rationanomaly.model.ranking import margins
    from rationanomaly.model.scoring import scorer
    from rationanomaly.training.data import load_split, log_input

    a, _ = pair
    mixed = soup([a, a], tmp_path / "same")
    examples = [e for e in load_split("bgl_dev") if e.label == "abnormal"][:2] + load_split("bgl_dev")[:2]
    logs = [log_input(e) for e in examples]
    found = {}
    for name, adapter in (("one", a), ("soup", mixed)):
        model, tokenizer = load_causal_lm("default", str(adapter))
        found[name] = margins(scorer(model, tokenizer, batch_size=4), logs)
    assert found["soup"] == pytest.approx(found["one"], abs=0.02)
    assert len({round(m, 2) for m in found["one"]}) > 1

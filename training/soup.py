"""Adapter soup: one LoRA adapter whose weight update is the weighted mean of several adapters'.

Checkpoints of one fine-tuning lineage (decision-tuning epochs and runs) disagree on single
templates while ranking alike; averaging their weights (a "model soup", Wortsman et al. 2022)
keeps what they share and smooths what they do not, at no inference cost.

Averaging the LoRA factors A and B one by one would not average the updates (B·A is not linear
in the pair). Concatenating them does, exactly: Σ wᵢ sᵢ Bᵢ Aᵢ = [w₁s₁B₁ … wₙsₙBₙ] · [A₁; …; Aₙ],
with sᵢ = alphaᵢ / rᵢ each adapter's scale. The soup is a LoRA of rank Σ rᵢ with scale 1: larger
on disk, equal in speed once merged into the base (the detector merges it at load).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from pathlib import Path

import orjson

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
_SIDE_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


class SoupError(ValueError):
    """The adapters cannot be averaged into one (other base, other modules, other layout)."""


def _config(adapter: Path) -> dict:
    path = adapter / CONFIG_FILE
    if not path.is_file():
        raise SoupError(f"{adapter}: no {CONFIG_FILE}; not a LoRA adapter directory")
    config = orjson.loads(path.read_bytes())
    if config.get("peft_type") != "LORA":
        raise SoupError(f"{adapter}: peft_type {config.get('peft_type')!r}, only LORA adapters mix")
    if config.get("use_rslora") or config.get("rank_pattern") or config.get("alpha_pattern"):
        raise SoupError(f"{adapter}: rsLoRA or per-module ranks are not supported")
    return config


def _scale(config: dict) -> float:
    return float(config["lora_alpha"]) / float(config["r"])


def soup(adapters: Sequence[Path | str], out: Path | str, weights: Sequence[float] | None = None) -> Path:
    """Write to `out` the adapter whose update is Σ wᵢ·(update of adapter i); weights default to
    uniform and must sum to 1. Tokenizer files come from the first adapter; no `decision.json`
    is written, since a soup's margins need their own threshold (`calibrate`)."""
    import torch
    from safetensors.torch import load_file, save_file

    dirs = [Path(a) for a in adapters]
    if len(dirs) < 2:
        raise SoupError("a soup needs two adapters or more")
    weights = [1.0 / len(dirs)] * len(dirs) if weights is None else [float(w) for w in weights]
    if len(weights) != len(dirs) or not math.isclose(sum(weights), 1.0, abs_tol=1e-6):
        raise SoupError(f"need one weight per adapter, summing to 1; got {weights}")
    configs = [_config(d) for d in dirs]
    for key in ("base_model_name_or_path", "target_modules", "bias", "modules_to_save"):
        # peft writes a module set as a list in no fixed order.
        values = {orjson.dumps(sorted(v) if isinstance(v := c.get(key), list) else v) for c in configs}
        if len(values) > 1:
            raise SoupError(f"adapters differ in {key}: " + ", ".join(str(c.get(key)) for c in configs))
    states = [load_file(str(d / WEIGHTS_FILE)) for d in dirs]
    keys = set(states[0])
    for d, state in zip(dirs[1:], states[1:], strict=True):
        if set(state) != keys:
            raise SoupError(f"{d}: other weight names than {dirs[0]}")
    if any(".lora_A." not in k and ".lora_B." not in k for k in keys):
        raise SoupError("only lora_A/lora_B weights can be averaged; found others")

    merged: dict[str, torch.Tensor] = {}
    for key in sorted(k for k in keys if ".lora_A." in k):
        b_key = key.replace(".lora_A.", ".lora_B.")
        # fp32 while mixing: fp16 factors scaled by small weights lose bits.
        merged[key] = torch.cat([s[key].float() for s in states], dim=0).contiguous()
        merged[b_key] = torch.cat(
            [w * _scale(c) * s[b_key].float() for w, c, s in zip(weights, configs, states, strict=True)], dim=1
        ).contiguous()
    rank = sum(int(c["r"]) for c in configs)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.to(torch.float16) for k, v in merged.items()}, str(out / WEIGHTS_FILE))
    config = dict(configs[0], r=rank, lora_alpha=rank)  # scale 1: the factors carry each scale
    (out / CONFIG_FILE).write_bytes(orjson.dumps(config, option=orjson.OPT_INDENT_2))
    (out / "soup.json").write_bytes(orjson.dumps(
        {"adapters": [str(d) for d in dirs], "weights": weights}, option=orjson.OPT_INDENT_2))
    for name in _SIDE_FILES:
        if (dirs[0] / name).is_file():
            shutil.copyfile(dirs[0] / name, out / name)
    return out


def update(adapter: Path | str, module: str) -> "torch.Tensor":  # noqa: F821
    """The weight update `scale · B · A` an adapter adds to one module (a weight name's prefix)."""
    from safetensors.torch import load_file

    adapter = Path(adapter)
    state = load_file(str(adapter / WEIGHTS_FILE))
    a = state[f"{module}.lora_A.weight"].float()
    b = state[f"{module}.lora_B.weight"].float()
    return _scale(_config(adapter)) * (b @ a)

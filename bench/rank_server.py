"""The rank decision on a server against the same model in-process, on a dev sample.

    .venv/bin/python bench/rank_server.py --convert-script LLAMA_CPP/convert_hf_to_gguf.py [--per-class 6]
    .venv/bin/python bench/rank_server.py --gguf merged.f16.gguf            # a GGUF built before

Merges the adapter into the default base model, converts it to an f16 GGUF with llama.cpp's
converter (the llama-cpp-python sdist carries it under vendor/llama.cpp; it needs the
`sentencepiece` package importable), serves it with llama-cpp-python, and ranks a seeded sample
of --per-class anomalies and normals from each dev file both ways, with the adapter's calibrated
threshold. Prints verdict agreement, the largest margin difference and seconds per item.
Prints figures; asserts nothing. llama-cpp-python assembles echoed log-probs in Python, so it
is slow (seconds a request): it checks the server path's numbers, not vLLM's speed.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rationanomaly.model.backends.openai import OpenAIBackend  # noqa: E402
from rationanomaly.model.backends.transformers import TransformersBackend  # noqa: E402
from rationanomaly.model.llama_server import LlamaServer  # noqa: E402
from rationanomaly.model.loading import resolve_model, shipped_adapter_dir  # noqa: E402
from rationanomaly.model.ranking import decide, load_threshold, margins  # noqa: E402
from rationanomaly.model.settings import BackendSettings  # noqa: E402
from rationanomaly.training.data import load_split, log_input  # noqa: E402


def merged_gguf(adapter: Path, convert_script: Path, out_dir: Path) -> Path:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = resolve_model("default")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(adapter)).merge_and_unload()
    merged = out_dir / "merged"
    model.save_pretrained(merged)
    AutoTokenizer.from_pretrained(base).save_pretrained(merged)
    gguf = out_dir / "merged.f16.gguf"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(convert_script.parent / "gguf-py"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(convert_script), str(merged), "--outtype", "f16", "--outfile", str(gguf)],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return gguf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--adapter", type=Path, default=shipped_adapter_dir())
    parser.add_argument("--gguf", type=Path, default=None, help="base + adapter merged, as GGUF")
    parser.add_argument("--convert-script", type=Path, default=None, help="llama.cpp's convert_hf_to_gguf.py")
    parser.add_argument("--per-class", type=int, default=6, help="anomalies and normals sampled per dev file")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threshold = load_threshold(args.adapter)
    if threshold is None:
        parser.error(f"{args.adapter} has no decision.json")
    if args.gguf is None and args.convert_script is None:
        parser.error("give --gguf or --convert-script")
    rng = random.Random(args.seed)
    sample = []
    for split in ("bgl_dev", "spirit_dev"):
        examples = load_split(split)
        for label in ("abnormal", "normal"):
            pool = [e for e in examples if e.label == label]
            sample += rng.sample(pool, min(args.per_class, len(pool)))
    conversations = [log_input(e) for e in sample]

    with tempfile.TemporaryDirectory() as tmp:
        gguf = args.gguf
        if gguf is None:
            started = time.perf_counter()
            gguf = merged_gguf(args.adapter, args.convert_script, Path(tmp))
            print(f"merged and converted to {gguf.name} in {time.perf_counter() - started:.0f}s")
        local = TransformersBackend(BackendSettings(kind="transformers", adapter=str(args.adapter), device="cpu"))
        started = time.perf_counter()
        in_process = margins(local.score, conversations)
        local_s = time.perf_counter() - started
        local.close()
        with LlamaServer(gguf, n_threads=2) as server:
            remote = OpenAIBackend(BackendSettings(kind="openai", base_url=server.base_url, adapter=None, decision="rank",
                                                   concurrency=1, timeout_s=600), probe=False)
            started = time.perf_counter()
            served = margins(remote.score, conversations)
            server_s = time.perf_counter() - started
            remote.close()

    agree = sum(decide(a, threshold) == decide(b, threshold) for a, b in zip(in_process, served, strict=True))
    gold = [e.label for e in sample]
    right_local = sum(decide(m, threshold) == g for m, g in zip(in_process, gold, strict=True))
    right_served = sum(decide(m, threshold) == g for m, g in zip(served, gold, strict=True))
    diffs = [abs(a - b) for a, b in zip(in_process, served, strict=True)]
    print(f"items {len(sample)} (threshold {threshold:.3f} nats from {args.adapter.name}/decision.json)")
    print(f"verdicts agree {agree}/{len(sample)}; correct in-process {right_local}, on the server {right_served}")
    print(f"margin |difference| max {max(diffs):.3f} mean {sum(diffs) / len(diffs):.3f} nats")
    print(f"seconds per item: in-process {local_s / len(sample):.2f}, llama-cpp-python server {server_s / len(sample):.2f}")


if __name__ == "__main__":
    main()

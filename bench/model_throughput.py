"""Throughput of each backend available on this machine, on real BGL templates.

Prints figures, asserts nothing. Run it alone on the machine (other CPU jobs distort it):

    flock /tmp/rationanomaly-cpu.lock .venv/bin/python bench/model_throughput.py

- transformers, default SmolLM2-135M-Instruct, batch 1 vs batch 8
- openai backend against llama.cpp's server (if `llama_cpp` is importable), 1 vs 8 in flight
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import orjson

from rationanomaly.model.backends import Backend, Generation
from rationanomaly.model.prompt import template_messages
from rationanomaly.model.settings import BackendSettings

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Figure:
    backend: str
    setting: str
    templates: int
    seconds: float
    tokens: int
    errors: int

    def line(self) -> str:
        return (
            f"{self.backend:<13} {self.setting:<12} {self.templates:>4} templates "
            f"{self.seconds:7.1f} s  {self.templates / self.seconds:6.2f} templates/s  "
            f"{self.tokens / self.seconds:7.1f} tokens/s  errors={self.errors}"
        )


def data_dir() -> Path:
    return Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def bgl_templates(limit: int) -> list[str]:
    path = data_dir() / "templates" / "bgl_dev.jsonl"
    with path.open("rb") as handle:
        found = [orjson.loads(line)["template"] for line in handle]
    # A batch larger than the file repeats it: throughput needs full batches, not new text.
    return [found[i % len(found)] for i in range(limit)]


def measure(backend: Backend, name: str, setting: str, templates: Sequence[str]) -> Figure:
    conversations = [template_messages(t) for t in templates]
    backend.generate(conversations[:1])  # warm-up: first-call allocations, server prompt cache
    started = time.perf_counter()
    generations: list[Generation] = backend.generate(conversations)
    seconds = time.perf_counter() - started
    return Figure(
        name,
        setting,
        len(templates),
        seconds,
        sum(g.completion_tokens or 0 for g in generations),
        sum(1 for g in generations if g.error),
    )


def report(figure: Figure) -> Figure:
    print(figure.line(), flush=True)  # as it comes: a long run cut short still leaves figures
    return figure


def bench_transformers(templates: Sequence[str], max_new_tokens: int, device: str,
                       batch_sizes: Sequence[int]) -> list[Figure]:
    from rationanomaly.model.backends.transformers import TransformersBackend
    from rationanomaly.model.loading import load_causal_lm, resolve_device

    device = resolve_device(device)
    model, tokenizer = load_causal_lm("default", None, device=device)  # bf16 on a GPU, fp32 on a CPU
    figures = []
    for batch_size in batch_sizes:
        settings = BackendSettings(device=device, adapter=None, batch_size=batch_size, max_new_tokens=max_new_tokens)
        backend = TransformersBackend(settings, model=model, tokenizer=tokenizer)
        # Two full batches each (at least 4 templates): small batches would otherwise take minutes.
        subset = templates[: max(4, 2 * batch_size)]
        figures.append(report(measure(backend, f"transformers/{device}", f"batch {batch_size}", subset)))
    return figures


def bench_llama_server(templates: Sequence[str], max_new_tokens: int, threads: int) -> list[Figure]:
    from rationanomaly.model.backends.openai import OpenAIBackend
    from rationanomaly.model.llama_server import LlamaServer, llama_server_available

    if not llama_server_available():
        print("openai/llama.cpp: skipped (llama_cpp not importable; pip install 'rationanomaly[server]')")
        return []
    figures = []
    with LlamaServer(n_threads=threads) as server:
        for concurrency in (1, 8):
            settings = BackendSettings(
                kind="openai", base_url=server.base_url, adapter=None,
                concurrency=concurrency, max_new_tokens=max_new_tokens, timeout_s=300,
            )  # fmt: skip
            backend = OpenAIBackend(settings, probe=False)
            try:
                figures.append(report(measure(backend, "openai/llama", f"{concurrency} in flight", templates)))
            finally:
                backend.close()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--templates", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="llama.cpp server threads")
    parser.add_argument("--only", choices=["transformers", "openai"], default=None)
    parser.add_argument("--device", default="cpu", help='transformers device: cpu, cuda or "auto"')
    parser.add_argument("--batch-sizes", default="1,8", help="transformers batch sizes, comma-separated")
    args = parser.parse_args()
    templates = bgl_templates(args.templates)
    import torch

    print(f"{len(templates)} BGL templates, max_new_tokens={args.max_new_tokens}, torch threads={torch.get_num_threads()}")
    figures: list[Figure] = []
    if args.only in (None, "transformers"):
        sizes = [int(b) for b in args.batch_sizes.split(",")]
        figures += bench_transformers(templates, args.max_new_tokens, args.device, sizes)
    if args.only in (None, "openai"):
        figures += bench_llama_server(templates, args.max_new_tokens, args.threads)
    try:
        import vllm  # noqa: F401
    except ImportError:
        print("vllm: skipped (not installed)")
    print(f"{len(figures)} figures")


if __name__ == "__main__":
    main()

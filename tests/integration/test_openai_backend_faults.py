"""The openai backend against faults a real server cannot produce on demand: a closed port, a
server that answers too slowly, transient 5xx, and a server that rejects `structured_outputs`.

A tiny scripted HTTP server stands in only for those faults; the happy path runs against the
real llama.cpp server in test_openai_backend.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
import pytest

from rationanomaly.model.backends import make_backend
from rationanomaly.model.backends.openai import OpenAIBackend
from rationanomaly.model.decision import GenerateDecider, make_decider
from rationanomaly.model.llama_server import free_port
from rationanomaly.model.prompt import template_messages
from rationanomaly.model.settings import BackendSettings

GOOD = "<think>Routine.</think> <answer>normal</answer>"

# handler(body, request_number) -> (status, payload dict, delay_s)
Script = Callable[[dict, int], tuple[int, dict, float]]


def completion(text: str) -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"completion_tokens": 9},
    }


class ScriptedServer:
    def __init__(self, script: Script) -> None:
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # /v1/models
                self._send(200, {"object": "list", "data": [{"id": "scripted-model", "object": "model"}]})

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with lock:
                    outer.bodies.append(body)
                    number = len(outer.bodies)
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                status, payload, delay_s = script(body, number)
                time.sleep(delay_s)
                with lock:
                    outer.in_flight -= 1
                try:
                    self._send(status, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def _send(self, status: int, payload: dict) -> None:
                data = orjson.dumps(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Script], ScriptedServer]]:
    servers: list[ScriptedServer] = []

    def start(script: Script) -> ScriptedServer:
        server = ScriptedServer(script).__enter__()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.__exit__()


def settings(base_url: str, **overrides: object) -> BackendSettings:
    values: dict[str, object] = {"kind": "openai", "base_url": base_url, "adapter": None, "backoff_s": 0.01}
    values.update(overrides)
    return BackendSettings(**values)  # type: ignore[arg-type]


def test_server_down_gives_errors_not_exceptions() -> None:
    port = free_port()  # bound then released: nothing listens there
    started = time.perf_counter()
    backend = make_backend(settings(f"http://127.0.0.1:{port}/v1", retries=1, timeout_s=2))
    try:
        assert isinstance(backend, OpenAIBackend)
        assert backend.probe_result is not None
        assert backend.probe_result.reachable is False
        assert backend.probe_result.constraint_honoured is False
        generations = backend.generate([template_messages("a"), template_messages("b")])
    finally:
        backend.close()
    assert [g.text for g in generations] == [None, None]
    assert all(g.error and g.error.startswith("connection error") for g in generations)
    assert all(g.unavailable for g in generations)  # the model is away, not wrong
    assert time.perf_counter() - started < 10


def test_slow_server_times_out_without_exception(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda body, n: (200, completion(GOOD), 3.0))
    backend = OpenAIBackend(settings(server.base_url, timeout_s=0.5, retries=2), probe=False)
    try:
        started = time.perf_counter()
        generations = backend.generate([template_messages("a")] * 3)
        elapsed = time.perf_counter() - started
        judgements = GenerateDecider(backend, retries=1).decide(["a"])
    finally:
        backend.close()
    assert all(g.text is None and g.error and g.error.startswith("timeout") and g.unavailable for g in generations)
    assert elapsed < 2.0  # concurrent, and a timeout is not retried by the transport
    assert (judgements[0].label, judgements[0].reason, judgements[0].attempts) == ("unknown", "timeout", 2)
    assert judgements[0].unavailable


def test_transient_5xx_is_retried_with_backoff(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda body, n: (503, {"error": "busy"}, 0.0) if n <= 2 else (200, completion(GOOD), 0.0))
    backend = OpenAIBackend(settings(server.base_url, retries=2), probe=False)
    try:
        (generation,) = backend.generate([template_messages("a")])
    finally:
        backend.close()
    assert generation.error is None
    assert (generation.text, generation.completion_tokens) == (GOOD, 9)
    assert len(server.bodies) == 3


def test_retries_exhausted_reports_last_status(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda body, n: (500, {"error": "boom"}, 0.0))
    backend = OpenAIBackend(settings(server.base_url, retries=1), probe=False)
    try:
        (generation,) = backend.generate([template_messages("a")])
    finally:
        backend.close()
    assert generation.error is not None and generation.error.startswith("http 500")
    assert generation.unavailable
    assert len(server.bodies) == 2


def test_client_error_is_not_retried(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda body, n: (400, {"error": "bad"}, 0.0))
    backend = OpenAIBackend(settings(server.base_url, retries=3), probe=False)
    try:
        (generation,) = backend.generate([template_messages("a")])
    finally:
        backend.close()
    assert generation.error is not None and generation.error.startswith("http 400")
    assert not generation.unavailable  # a request the server refuses is this input's problem
    assert len(server.bodies) == 1


def test_request_body_and_model_resolution(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda body, n: (200, completion(GOOD), 0.0))
    backend = OpenAIBackend(settings(server.base_url, max_new_tokens=33), probe=False)
    try:
        backend.generate([template_messages("a")])
    finally:
        backend.close()
    (body,) = server.bodies
    assert backend.model_id == "scripted-model"
    assert body["model"] == "scripted-model"
    assert body["max_tokens"] == 33 and body["temperature"] == 0.0
    assert body["structured_outputs"]["regex"].startswith("[ \\n]{0,2}<think>")
    assert body["messages"] == template_messages("a")


def test_concurrency_is_bounded(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda body, n: (200, completion(GOOD), 0.2))
    backend = OpenAIBackend(settings(server.base_url, concurrency=3, structured_outputs=False), probe=False)
    try:
        started = time.perf_counter()
        generations = backend.generate([template_messages(str(i)) for i in range(9)])
        elapsed = time.perf_counter() - started
    finally:
        backend.close()
    assert all(g.text == GOOD for g in generations)
    assert server.max_in_flight == 3
    assert 0.55 < elapsed < 1.5  # three waves of 0.2 s, not nine
    assert "structured_outputs" not in server.bodies[0]


def test_probe_detects_ignored_and_honoured_constraint(serve: Callable[[Script], ScriptedServer]) -> None:
    ignoring = serve(lambda body, n: (200, completion("hello"), 0.0))
    honouring = serve(lambda body, n: (200, completion("ZQ-1234"), 0.0))
    ignored = OpenAIBackend(settings(ignoring.base_url))
    honoured = OpenAIBackend(settings(honouring.base_url))
    ignored.close()
    honoured.close()
    assert ignored.probe_result is not None and honoured.probe_result is not None
    assert (ignored.probe_result.reachable, ignored.probe_result.constraint_honoured) == (True, False)
    assert (honoured.probe_result.reachable, honoured.probe_result.constraint_honoured) == (True, True)
    assert ignored.structured_outputs_sent  # harmless to keep sending; responses are validated


def test_probe_drops_the_field_when_the_server_rejects_it(serve: Callable[[Script], ScriptedServer]) -> None:
    def strict(body: dict, n: int) -> tuple[int, dict, float]:
        if "structured_outputs" in body:
            return 400, {"error": "Unrecognized request argument: structured_outputs"}, 0.0
        return 200, completion(GOOD), 0.0

    server = serve(strict)
    backend = OpenAIBackend(settings(server.base_url))
    try:
        (generation,) = backend.generate([template_messages("a")])
    finally:
        backend.close()
    assert backend.probe_result is not None and backend.probe_result.constraint_honoured is False
    assert not backend.structured_outputs_sent
    assert generation.text == GOOD


def test_reasoning_content_is_folded_back(serve: Callable[[Script], ScriptedServer]) -> None:
    payload = completion("<answer>abnormal</answer>")
    payload["choices"][0]["message"]["reasoning_content"] = "Fan failure."
    server = serve(lambda body, n: (200, payload, 0.0))
    backend = OpenAIBackend(settings(server.base_url), probe=False)
    try:
        (judgement,) = GenerateDecider(backend).decide(["a"])
    finally:
        backend.close()
    assert (judgement.label, judgement.rationale) == ("abnormal", "Fan failure.")


def test_malformed_response_is_an_error(serve: Callable[[Script], ScriptedServer]) -> None:
    server = serve(lambda body, n: (200, {"choices": []}, 0.0))
    backend = OpenAIBackend(settings(server.base_url), probe=False)
    try:
        (generation,) = backend.generate([template_messages("a")])
    finally:
        backend.close()
    assert generation.text is None and generation.error == "response without message content"


def test_rank_decision_starts_before_its_server_and_checks_it_once_up(serve: Callable[[Script], ScriptedServer]) -> None:
    """A detector may start while its server is down: the scoring check waits for the first
    batch, and a server that then answers without echoed log-probs fails that batch, not the
    process."""
    port = free_port()
    decider = make_decider(settings(f"http://127.0.0.1:{port}/v1", decision="rank", retries=0, timeout_s=2), retries=0)
    try:
        down = decider.decide(["disk failure"])
    finally:
        decider.close()
    assert down[0].label == "unknown" and "went unscored" in down[0].reason and down[0].unavailable

    def no_echo(body: dict, n: int) -> tuple[int, dict, float]:
        return 200, {"choices": [{"index": 0, "text": "x", "logprobs": None}]}, 0.0

    def loading(body: dict, n: int) -> tuple[int, dict, float]:
        return (503, {"error": "loading"}, 0.0) if n == 1 else no_echo(body, n)

    server = serve(loading)
    decider = make_decider(settings(server.base_url, decision="rank", retries=0), retries=0)  # 503: not a refusal
    try:
        later = decider.decide(["disk failure"])
    finally:
        decider.close()
    assert later[0].label == "unknown" and "no echoed log-probs" in later[0].reason
    assert all(body.get("echo") is True for body in server.bodies)

"""The detector through a model outage, against the real llama.cpp server: killed mid-stream and
started again 30 s later on the same port, or frozen (SIGSTOP) for 30 s so every request runs past
its timeout, then thawed. Under judging.on_model_down=wait no window goes out for the outage: the
windows wait, the input pauses, and the model judges every one of them when it is back. The output
grammar (`backend.output_grammar`) keeps the served model's answers parseable, so the test can
demand zero `unknown` verdicts, not merely none blamed on the outage."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

import httpx
import pytest
import structlog

from rationanomaly.model.llama_server import LlamaServer
from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.sample import sample_lines
from tests.conftest import LLAMA_SERVER_MARKS
from tests.integration.detector_support import create_topics, produce_lines, unique
from tests.integration.test_broker_outage import _block, _later, _read_until
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [*LLAMA_SERVER_MARKS, pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0
# Reasons a window carries when the model was away rather than wrong.
AWAY = ("connection error", "timeout", "http 5", "unscored")


def _killed(server: LlamaServer) -> Callable[[], LlamaServer]:
    port = server.port
    server.stop()
    return lambda: LlamaServer(port=port, n_threads=2).start()


def _frozen(server: LlamaServer) -> Callable[[], LlamaServer]:
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)

    def thaw() -> LlamaServer:
        os.kill(pid, signal.SIGCONT)
        return server

    return thaw


@pytest.mark.parametrize("outage", [_killed, _frozen], ids=["killed", "frozen-past-timeout"])
def test_a_model_outage_holds_windows_until_the_model_is_back(kafka_bootstrap, tmp_path, outage):
    logs, out, dlq = unique("model-outage"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    before = sample_lines(6, seed=3)
    # New words, so the second half brings templates the model has not judged yet.
    after = [line.replace(" block ", " chunk ").replace("Receiving", "Accepting")
             for line in _later(sample_lines(6, seed=4), minutes=10)]  # fmt: skip
    server = LlamaServer(n_threads=2).start()
    settings = detector_settings(
        kafka_bootstrap, logs, out, dlq, tmp_path,
        input={"idle_timeout_s": 2.0}, checkpoint={"interval_s": 0.5},
        backend={"kind": "openai", "base_url": server.base_url, "adapter": None, "decision": "generate",
                 "max_new_tokens": 40, "output_grammar": True, "timeout_s": 10, "retries": 1},
        judging={"on_model_down": "wait", "model_down_deadline_s": 600},
    )  # fmt: skip
    detector = Detector(settings, limits=RunLimits(max_seconds=900))
    health_url = f"http://127.0.0.1:{detector.serve_metrics(0, addr='127.0.0.1')}/health"
    outcome: list[int] = []
    worker = threading.Thread(target=lambda: outcome.append(detector.run()), daemon=True)
    try:
        with structlog.testing.capture_logs() as events:
            produce_lines(kafka_bootstrap, logs, [line.encode() for line in before])
            worker.start()
            first = {_block(line) for line in before}
            assert first <= {v["window"]["key"] for v in _read_until(kafka_bootstrap, out, first, timeout_s=300)}

            back = outage(server)
            produce_lines(kafka_bootstrap, logs, [line.encode() for line in after])
            time.sleep(OUTAGE_S)
            during = {v["window"]["key"] for v in _read_until(kafka_bootstrap, out, first, timeout_s=30)}
            assert worker.is_alive(), outcome
            state = httpx.get(health_url).json()
            assert (state["status"], state["model_away"], state["paused"]) == ("degraded", True, True), state
            server = back()
            restarted = time.monotonic()

            expected = first | {_block(line) for line in after}
            verdicts = _read_until(kafka_bootstrap, out, expected, timeout_s=600)
            recovered = time.monotonic()
            detector.stop()
            worker.join(120)
    finally:
        server.stop()
    assert outcome == [0], outcome
    assert during == first, "windows were published while the model was away"
    assert {v["window"]["key"] for v in verdicts} == expected
    away = [v for v in verdicts if v["verdict"] == "unknown" and any(a in (v.get("reason") or "") for a in AWAY)]
    assert not away, [v["reason"] for v in away]
    names = [e["event"] for e in events]
    assert "model_unavailable" in names and "model_available" in names
    assert any(e["event"] == "partitions_paused" and e.get("model_away") for e in events)
    unknown = [v for v in verdicts if v["verdict"] == "unknown"]
    print(f"model outage ({outage.__name__[1:]}): {len(expected)} windows, {len(verdicts)} verdicts, "
          f"{len(unknown)} unknown, held windows judged {recovered - restarted:.1f}s after the server was back")
    assert not unknown, [v.get("reason") for v in unknown]
    # repeats are allowed (at-least-once), but a window keeps its id and an id names one window
    ids_of: dict[str, set[str]] = {}
    for v in verdicts:
        ids_of.setdefault(v["window"]["key"], set()).add(v["verdict_id"])
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of

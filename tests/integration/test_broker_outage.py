"""The detector through a broker outage: its own broker, stopped mid-stream (SIGTERM), kept down
for 30 s and started again on the same data; and a start with no broker at all."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime, timedelta

import pytest
import structlog

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.sample import sample_lines
from tests.conftest import BROKER_SCRIPT
from tests.integration.detector_support import create_topics, produce_lines, read_topic, unique, verdicts_of
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

OUTAGE_S = 30.0


def _broker(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(BROKER_SCRIPT), *args], capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    return done


@pytest.fixture
def own_broker():
    """A broker of this test's own (the session's is shared and must not go down)."""
    info = json.loads(_broker("up", "--port", "0", "--json").stdout.strip().splitlines()[-1])
    try:
        yield info
    finally:
        subprocess.run([sys.executable, str(BROKER_SCRIPT), "down", "--port", str(info["port"])],
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)  # fmt: skip


def _later(lines: list[str], minutes: int) -> list[str]:
    """The sample's lines moved later in event time, so a second batch is never late."""
    out = []
    for line in lines:
        stamp = datetime.strptime(line[:13], "%y%m%d %H%M%S") + timedelta(minutes=minutes)
        out.append(f"{stamp:%y%m%d %H%M%S}{line[13:]}")
    return out


def _read_until(bootstrap: str, topic: str, keys: set[str], timeout_s: float) -> list[dict]:
    """Every verdict on the topic, once all of `keys` have one (or the time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        verdicts = verdicts_of(read_topic(bootstrap, topic, idle_s=2.0, timeout_s=60))
        if keys <= {v["window"]["key"] for v in verdicts} or time.monotonic() > deadline:
            return verdicts
        time.sleep(1.0)


def _block(line: str) -> str:
    return next(token for token in line.split() if token.startswith("blk_"))


def test_a_broker_restart_mid_stream_loses_nothing_and_repeats_nothing_new(own_broker, real_backend, tmp_path):
    bootstrap, port = own_broker["bootstrap"], str(own_broker["port"])
    logs, out, dlq = unique("outage"), unique("verdicts"), unique("dlq")
    create_topics(bootstrap, logs, out, dlq)
    before = sample_lines(20, seed=7)
    after = _later(sample_lines(20, seed=8), minutes=10)
    expected = {_block(line) for line in before + after}
    settings = detector_settings(
        bootstrap, logs, out, dlq, tmp_path,
        input={"idle_timeout_s": 2.0}, checkpoint={"interval_s": 0.5},
    )  # fmt: skip
    detector = Detector(settings, limits=RunLimits(max_seconds=600), backend=real_backend)
    outcome: list[int] = []
    worker = threading.Thread(target=lambda: outcome.append(detector.run()), daemon=True)

    produce_lines(bootstrap, logs, [line.encode() for line in before])
    with structlog.testing.capture_logs() as events:
        worker.start()
        first = {_block(line) for line in before}
        published = verdicts_of(read_topic(bootstrap, out, expected=len(first), timeout_s=300))
        assert {v["window"]["key"] for v in published} == first

        _broker("stop", "--port", port)
        stopped = time.monotonic()
        time.sleep(OUTAGE_S)
        assert worker.is_alive(), f"the detector ended during the outage: {outcome}"
        _broker("start", "--port", port)
        restarted = time.monotonic()

        produce_lines(bootstrap, logs, [line.encode() for line in after])
        verdicts = _read_until(bootstrap, out, expected, timeout_s=300)
        recovered = time.monotonic()
        detector.stop()
        worker.join(120)
    assert outcome == [0], outcome

    keys = {v["window"]["key"] for v in verdicts}
    assert keys == expected, f"missing {sorted(expected - keys)[:5]}, foreign {sorted(keys - expected)[:5]}"
    ids_by_key: dict[str, set[str]] = defaultdict(set)
    for v in verdicts:
        ids_by_key[v["window"]["key"]].add(v["verdict_id"])
    assert all(len(ids) == 1 for ids in ids_by_key.values()), "a window was published under two ids"
    assert not [v for v in verdicts if v["verdict"] == "unknown"]

    names = [e["event"] for e in events]
    assert "broker_unreachable" in names and "broker_reachable" in names, sorted(set(names))
    print(f"outage: down {restarted - stopped:.1f}s, windows {len(keys)}, records {len(verdicts)}, "
          f"first-half windows republished {len(verdicts) - len(keys)}, "
          f"second half judged {recovered - restarted:.1f}s after the broker was back")


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_broker_at_start_waits_then_exits_non_zero(real_backend, tmp_path):
    bootstrap = f"127.0.0.1:{_closed_port()}"
    settings = detector_settings(bootstrap, "logs", "verdicts", "dlq", tmp_path, kafka={"startup_timeout_s": 4.0})
    started = time.monotonic()
    with structlog.testing.capture_logs() as events:
        code = Detector(settings, backend=real_backend).run()
    waited = time.monotonic() - started
    assert code == 2
    assert 4.0 <= waited < 60, waited
    waiting = [e for e in events if e["event"] == "waiting_for_broker"]
    assert waiting and all(e["bootstrap"] == bootstrap for e in waiting)
    stopped = [e for e in events if e["event"] == "detector_stopped"]
    assert stopped and "kafka.startup_timeout_s" in stopped[0]["error"]

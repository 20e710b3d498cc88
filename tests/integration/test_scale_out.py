"""Scale-out: HDFS_20000.log keyed by component over 6 partitions, a group of real detector
processes (`rationanomaly run`), one SIGKILLed mid-stream and a fourth started; the published
windows equal `rationanomaly replay`'s on the same file: one per block, none partial, every line
once, one verdict_id each.

The input is keyed by the line's component (as a shipper keys by source), so each block's lines
are spread over several partitions and only the repartition hop (stream/repartition.py) makes
whole windows. The lines are produced at a steady rate while the group runs, so the kill lands
mid-stream: its input partitions are re-read from their last commit (the hop forwards those lines
twice, and the repartition consumers drop the copies) and its window partitions are re-formed by
their next owners.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from pathlib import Path

import orjson
import pytest
import yaml
from confluent_kafka import Consumer, Producer

from tests.integration.detector_support import create_topics, expected_memberships, file_values, read_topic, unique

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HDFS_BLOCKS = 1782
PARTITIONS = 6
COMPONENT = re.compile(rb"^\S+ \S+ \S+ \S+ (\S+?):")
RATE_LINES_PER_S = 1000  # the file takes ~20 s to arrive
CHUNK = 250
KILL_AFTER_LINES = 8000  # ~40% of the file
# Issue 19: model calls across the group stay <= 1.1x the distinct templates. Every window here
# closes at the same moment on every member (the idle timeout at the end), the worst case: with
# the shared cache topic alone, 17 to 25 calls for 16 templates were measured; one judge per
# template (stream/template_owners.py) routes each to the member owning its partition.
MODEL_CALLS_PER_TEMPLATE = 1.1
# Exactly-once: the fourth member starts this long after the kill, past the idle timeout below.
REPLACEMENT_AFTER_S = 20.0
CLI = Path(sys.executable).with_name("rationanomaly")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DetectorProcess:
    """One `rationanomaly run` subprocess, its JSON log in a file."""

    def __init__(self, name: str, config: dict, tmp: Path) -> None:
        self.name = name
        self.port = _free_port()
        config = {**config, "metrics": {"port": self.port}, "checkpoint": {**config["checkpoint"], "dir": str(tmp / name)}}
        path = tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.log_path = tmp / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen([str(CLI), "run", "--config", str(path)], stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)  # fmt: skip
        self.model_calls = 0.0
        self.routing: dict[str, float] = {}

    def logged(self, event: str) -> bool:
        return f'"event": "{event}"'.encode() in self.log_path.read_bytes() or f'"event":"{event}"'.encode() in self.log_path.read_bytes()

    def scrape_model_calls(self) -> None:
        """Model requests so far (one per template sent to the model), from its /metrics."""
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        except OSError:
            return
        for line in body.splitlines():
            if line.startswith("rationanomaly_model_latency_seconds_count"):
                self.model_calls = max(self.model_calls, float(line.split()[-1]))
            elif line.startswith("rationanomaly_template_routing_total{"):
                event = line.split('event="', 1)[1].split('"', 1)[0]
                self.routing[event] = max(self.routing.get(event, 0.0), float(line.split()[-1]))

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._log.close()

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")


def _produce_by_component(bootstrap: str, topic: str, values: list[bytes], kill_at: int, on_kill) -> None:
    """The file at a steady rate, keyed by component; `on_kill()` once `kill_at` lines are out."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    started = time.monotonic()
    killed = False
    for i in range(0, len(values), CHUNK):
        for value in values[i : i + CHUNK]:
            match = COMPONENT.match(value)
            producer.produce(topic, value=value, key=match.group(1) if match else None)
        producer.flush(30)
        sent = i + CHUNK
        if not killed and sent >= kill_at:
            on_kill()
            killed = True
        pause = started + sent / RATE_LINES_PER_S - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    if producer.flush(60):
        raise RuntimeError("lines not delivered")


def _window(verdict: dict) -> tuple[str, int, int, int]:
    """What a window is, whatever the transport: its key, its span and its line count."""
    w = verdict["window"]
    return w["key"], w["start_ms"], w["end_ms"], w["lines"]


def _verdicts_until_settled(bootstrap: str, topic: str, expected: set[tuple], quiet_s: float, timeout_s: float,
                            timeline: dict[str, float], t0: float) -> list[dict]:  # fmt: skip
    """Every verdict on `topic`, read until all expected windows are in and nothing new came for `quiet_s`."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": unique("reader"), "auto.offset.reset": "earliest",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})  # fmt: skip
    consumer.subscribe([topic])
    verdicts: list[dict] = []
    deadline = time.monotonic() + timeout_s
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            fresh = [orjson.loads(m.value()) for m in consumer.consume(1000, 0.5) if m.error() is None]
            if fresh:
                verdicts.extend(fresh)
                last_new = time.monotonic()
                if "first_verdict_s" not in timeline:
                    timeline["first_verdict_s"] = last_new - t0
                if "all_windows_s" not in timeline and expected <= {_window(v) for v in verdicts}:
                    timeline["all_windows_s"] = last_new - t0
            elif "all_windows_s" in timeline and time.monotonic() - last_new > quiet_s:
                break
    finally:
        consumer.close()
    return verdicts


@pytest.fixture(scope="module")
def hdfs_file(data_dir):
    return data_dir / "raw" / "HDFS_20000.log"


def _replay(config: dict, hdfs_file: Path, tmp_path: Path) -> subprocess.Popen:
    """`rationanomaly replay` on the file, with the detectors' profile and model: the reference."""
    path = tmp_path / "replay.yaml"
    path.write_text(yaml.safe_dump({"profile": config["profile"], "backend": config["backend"]}), encoding="utf-8")
    return subprocess.Popen([str(CLI), "replay", "--config", str(path), str(hdfs_file), "-o", str(tmp_path / "replay.jsonl")],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


# Exactly-once too: three processes on one host must not fence each other's transactions
# (stream/instance_slot.py), and requests to a template's owner travel inside transactions.
# There the fourth member comes late, as a replacement on a busy cluster does: the killed one's
# open transaction hides every repartition partition's later lines for longer than the idle
# timeout, until the fourth (taking its transactional.id) aborts it. Windows must wait for
# those lines (stream/log_end.py). The fourth then joins about when the windows close, and
# partitions may move while templates are with the model (judging.py, between_model_calls).
@pytest.mark.parametrize("exactly_once", [False, True], ids=["at-least-once", "exactly-once"])
def test_group_with_a_killed_and_a_new_member_matches_replay(kafka_bootstrap, hdfs_file, backend_settings, tmp_path,
                                                             exactly_once):  # fmt: skip
    t0 = time.monotonic()
    timeline: dict[str, float] = {}

    logs, verdict_topic, dlq = unique("scale-logs"), unique("scale-verdicts"), unique("scale-dlq")
    create_topics(kafka_bootstrap, logs, partitions=PARTITIONS)
    create_topics(kafka_bootstrap, verdict_topic, dlq)
    group = unique("scale")
    config = {
        "kafka": {
            "bootstrap_servers": kafka_bootstrap,
            "group_id": group,
            # a dead member's partitions move after 6 s (the broker's minimum), not the default 45
            "extra": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"},
        },
        # Longer than a dead member's partitions stay unread, so no window is closed for
        # silence while its lines are still to come; the file spans 3 minutes of event time,
        # under the 5-minute session gap, so every window closes this way at the end.
        "input": {"topic": logs, "idle_timeout_s": 15},
        "output": {"topic": verdict_topic, "dlq_topic": dlq, "exactly_once": exactly_once},
        "checkpoint": {"interval_s": 1.0},
        "profile": {"name": "hdfs"},
        "backend": orjson.loads(backend_settings.model_dump_json()),
    }
    # the reference replay loads its model beside the group's
    replay = _replay(config, hdfs_file, tmp_path)
    fourth: threading.Timer | None = None
    members = [DetectorProcess(f"detector-{i}", config, tmp_path) for i in (1, 2, 3)]
    try:
        deadline = time.monotonic() + 240
        while not all(m.logged("detector_started") for m in members):
            assert all(m.proc.poll() is None for m in members), "\n".join(m.tail() for m in members)
            assert time.monotonic() < deadline, "detectors did not start:\n" + "\n".join(m.tail() for m in members)
            time.sleep(1)
        timeline["group_started_s"] = time.monotonic() - t0
        replay_log = replay.communicate(timeout=240)[0].decode("utf-8", "replace")
        assert replay.returncode == 0, replay_log[-3000:]
        timeline["replayed_s"] = time.monotonic() - t0
        reference = [orjson.loads(line) for line in (tmp_path / "replay.jsonl").read_bytes().splitlines()]
        ref_windows = {_window(v) for v in reference}
        templates = {t["id"] for v in reference for t in v["templates"]}
        assert len(ref_windows) == HDFS_BLOCKS

        def start_fourth() -> None:
            timeline["fourth_started_s"] = time.monotonic() - t0
            members.append(DetectorProcess("detector-4", config, tmp_path))

        def kill_one_start_another() -> None:
            victim = members[1]
            victim.scrape_model_calls()
            victim.stop(signal.SIGKILL)
            timeline["killed_at_s"] = time.monotonic() - t0
            fourth.start()

        fourth = threading.Timer(REPLACEMENT_AFTER_S if exactly_once else 0.0, start_fourth)
        values = file_values(hdfs_file)
        producer = threading.Thread(target=_produce_by_component, args=(kafka_bootstrap, logs, values, KILL_AFTER_LINES, kill_one_start_another))
        producer.start()
        producer.join(300)
        timeline["produced_s"] = time.monotonic() - t0
        verdicts = _verdicts_until_settled(kafka_bootstrap, verdict_topic, ref_windows, quiet_s=10, timeout_s=240,
                                           timeline=timeline, t0=t0)  # fmt: skip
        timeline["settled_s"] = time.monotonic() - t0
        fourth.join(60)
        deadline = time.monotonic() + 180  # a late fourth may still be loading its model
        while not members[3].logged("partitions_assigned"):
            assert time.monotonic() < deadline and members[3].proc.poll() is None, (
                "the fourth member never took part:\n" + members[3].tail()
            )
            time.sleep(1)
        # all of them again, with what the fourth may have published since it joined
        verdicts = _verdicts_until_settled(kafka_bootstrap, verdict_topic, ref_windows, quiet_s=5, timeout_s=120,
                                           timeline={}, t0=t0)  # fmt: skip
        for m in members:
            if m.proc.poll() is None:
                m.scrape_model_calls()
    finally:
        if fourth is not None:
            fourth.cancel()
        if replay.poll() is None:
            replay.kill()
        codes = {m.name: m.stop() for m in members}
    timeline["total_s"] = time.monotonic() - t0

    ids = Counter(v["verdict_id"] for v in verdicts)
    keys = defaultdict(set)
    for v in verdicts:
        keys[v["window"]["key"]].add(v["verdict_id"])
    model_calls = sum(m.model_calls for m in members)
    # The templates the group met: Drain3 runs behind the hop, one miner a partition, and may
    # make a template or two more than the replay's single miner (stream/README.md).
    group_templates = {t["id"] for v in verdicts for t in v["templates"]}
    routing = {m.name: m.routing for m in members}
    calls = {m.name: m.model_calls for m in members}
    print(f"\nscale-out: {len(ids)} verdict ids ({len(verdicts)} records), {sum(len(s) > 1 for s in keys.values())} keys "
          f"with several windows, model calls {model_calls:g} ({calls}) for "
          f"{len(group_templates)} distinct templates in the group's verdicts ({len(templates)} in the replay's), "
          f"routing {routing}, exits {codes}, timeline {({k: round(x, 1) for k, x in timeline.items()})}")  # fmt: skip

    # The same windows as `rationanomaly replay`: every block once, each with all its lines and
    # each line once (key, start, end and line count equal), none partial.
    windows = {_window(v) for v in verdicts}
    assert windows == ref_windows, f"{len(ref_windows - windows)} replay windows missing, {len(windows - ref_windows)} others"
    assert len(keys) == HDFS_BLOCKS and all(len(s) == 1 for s in keys.values()), "a block was split into partial windows"
    # The same verdict ids as the replay: a session window's id names its key, span and line
    # count, never where its lines were read (stream/verdicts.py window_identity). A window
    # published twice (a member killed with its verdict on the way) keeps its id.
    assert set(ids) == {v["verdict_id"] for v in reference}, "verdict ids differ from the replay's"
    by_window = defaultdict(set)
    for v in verdicts:
        by_window[_window(v)].add(v["verdict_id"])
    assert all(len(s) == 1 for s in by_window.values())
    _, memberships = expected_memberships(hdfs_file)
    assert sum(w[3] for w in ref_windows) == memberships
    assert read_topic(kafka_bootstrap, dlq, idle_s=2.0) == []
    assert {c for name, c in codes.items() if name != "detector-2"} == {0}, codes
    # Each template is judged by its owner, once per group, not once per member that meets it.
    assert model_calls <= MODEL_CALLS_PER_TEMPLATE * len(group_templates), (
        f"{model_calls:g} model calls across the group for {len(group_templates)} distinct templates ({routing})"
    )

"""State in Kafka (issue 19, part 2), on the real broker: state topics made with their configs,
wrong ones refused, and a detector killed mid-stream resumed by another instance that has
nothing on its local disk."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings
from rationanomaly.stream import repartition
from rationanomaly.stream.state_topics import StateTopicError, ensure_topics, state_topic
from tests.conftest import create_topic
from tests.integration.detector_support import (
    create_topics,
    expected_memberships,
    file_values,
    produce_lines,
    read_topic,
    unique,
    verdicts_of,
)
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration]


def _configs(admin: AdminClient, topic: str) -> dict[str, str]:
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    return {k: e.value for k, e in admin.describe_configs([resource])[resource].result(30).items()}


def test_state_topics_are_made_compacted_and_wrong_ones_refused(kafka_bootstrap, kafka_admin):
    name = unique("state")
    spec = state_topic(name, 3, "checkpoints")
    assert ensure_topics(kafka_admin, [spec]) == [name]
    configs = _configs(kafka_admin, name)
    assert configs["cleanup.policy"] == "compact"
    assert int(configs["max.message.bytes"]) >= 2 * 1024 * 1024
    assert len(kafka_admin.list_topics(name, timeout=10).topics[name].partitions) == 3
    # A second instance finds it as it should be: nothing to create, nothing to refuse.
    assert ensure_topics(kafka_admin, [spec]) == []

    # A topic someone made by hand with the broker's defaults would delete state after a week.
    by_hand = create_topic(kafka_admin, partitions=1)
    with pytest.raises(StateTopicError) as refused:
        ensure_topics(kafka_admin, [state_topic(by_hand, 3, "checkpoints"), spec])
    message = str(refused.value)
    assert by_hand in message and "cleanup.policy=delete" in message and "needs at least 3" in message
    assert name not in message  # only the wrong one is named


def _race(bootstrap: str, make) -> list[object]:
    """`make(admin)` by two instances at once, each with its own client: what each returned or raised."""
    import threading

    outcomes: list[object] = []

    def start() -> None:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        try:
            outcomes.append(make(admin))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            outcomes.append(exc)

    racers = [threading.Thread(target=start) for _ in range(2)]
    for t in racers:
        t.start()
    for t in racers:
        t.join(60)
    return outcomes


def test_instances_starting_together_both_accept_the_topics_one_of_them_made(kafka_bootstrap):
    """Two instances race to make the same state topics: the loser finds them existing, maybe not
    yet with their partitions in its metadata, and must wait for them, not refuse them as too small."""
    for _ in range(3):
        specs = [state_topic(unique("race"), 4, "checkpoints"), state_topic(unique("race"), 1, "template-verdict cache")]
        outcomes = _race(kafka_bootstrap, lambda admin: ensure_topics(admin, specs, timeout_s=30))  # noqa: B023
        assert len(outcomes) == 2 and not any(isinstance(o, Exception) for o in outcomes), outcomes
        assert sorted(n for o in outcomes for n in o) == sorted(s.name for s in specs)  # each made once


def test_instances_starting_together_both_accept_the_repartition_topic_one_of_them_made(kafka_bootstrap):
    """The same race for `<group>-repartition`: the loser used to index the fresh metadata by the
    topic's name and die with a KeyError when it was not there yet (two detectors started
    together in test_stop_at_end_hop.py)."""
    for _ in range(5):
        name = unique("race-repartition")
        outcomes = _race(kafka_bootstrap, lambda admin: repartition.ensure_topic(admin, name, 6, 86_400_000, timeout_s=30))  # noqa: B023
        assert outcomes == [6, 6], outcomes


def test_detector_refuses_a_wrong_state_topic_and_exits_2(kafka_bootstrap, kafka_admin, real_backend, tmp_path):
    logs, out, dlq = unique("logs"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    wrong = create_topic(kafka_admin, partitions=1)  # cleanup.policy=delete
    settings = detector_settings(kafka_bootstrap, logs, out, dlq, tmp_path, state={"checkpoint_topic": wrong})
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=60), backend=real_backend)
    assert detector.run() == 2


class CountingBackend:
    """The session's real model, counting the conversations it is asked to judge."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.model_id = inner.model_id
        self.conversations = 0

    def generate(self, conversations):
        self.conversations += len(conversations)
        return self._inner.generate(conversations)

    def __getattr__(self, name):  # score and any other transport call the decision makes
        attr = getattr(self._inner, name)
        if name == "score" and callable(attr):
            def counted(items, *args, **kwargs):
                self.conversations += len(items)
                return attr(items, *args, **kwargs)
            return counted
        return attr

    def close(self) -> None:
        pass


# As in test_detector_faults: a 60 s gap closes most sessions while the stream runs and keeps the
# last minute's open until end of input, so a kill always leaves published, uncommitted and open
# windows behind.
GAP_MS = 60_000


@pytest.mark.slow
def test_restart_on_another_instance_resumes_from_the_changelog(kafka_bootstrap, data_dir, real_backend,
                                                                 backend_settings, tmp_path):  # fmt: skip
    hdfs = data_dir / "raw" / "HDFS_20000.log"
    logs, out, dlq = unique("moved"), unique("verdicts"), unique("dlq")
    group = unique("moved-group")
    create_topics(kafka_bootstrap, logs, out, dlq)
    produce_lines(kafka_bootstrap, logs, file_values(hdfs))
    env = {
        **os.environ,
        "RATIONANOMALY_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "RATIONANOMALY_KAFKA__GROUP_ID": group,
        "RATIONANOMALY_INPUT__TOPIC": logs,
        "RATIONANOMALY_INPUT__POLL_BATCH": "200",
        "RATIONANOMALY_INPUT__IDLE_TIMEOUT_S": "900",
        # One partition, so the records are keyed by window whatever their key: no repartition
        # hop, which the scale-out test covers (test_scale_out.py); this one is about the state.
        "RATIONANOMALY_INPUT__KEYED_BY_WINDOW": "true",
        "RATIONANOMALY_WINDOWS__GAP_MS": str(GAP_MS),
        "RATIONANOMALY_OUTPUT__TOPIC": out,
        "RATIONANOMALY_OUTPUT__DLQ_TOPIC": dlq,
        "RATIONANOMALY_CHECKPOINT__DIR": str(tmp_path / "first-machine"),
        "RATIONANOMALY_CHECKPOINT__INTERVAL_S": "0.5",
        "RATIONANOMALY_METRICS__PORT": "0",
        "RATIONANOMALY_PROFILE__NAME": "hdfs",
        "RATIONANOMALY_BACKEND__MAX_NEW_TOKENS": str(backend_settings.max_new_tokens),
        "RATIONANOMALY_BACKEND__DEVICE": "cpu",
    }
    log_path = tmp_path / "first.log"
    first = subprocess.Popen([sys.executable, "-m", "rationanomaly.cli.main", "run", "--log-level", "INFO"],
                             env=env, stdout=log_path.open("ab"), stderr=subprocess.STDOUT)  # fmt: skip
    changelog, cache_topic = f"{group}-checkpoints", f"{group}-template-verdicts"
    deadline = time.monotonic() + 600
    try:
        while len(read_topic(kafka_bootstrap, out, idle_s=0.5, timeout_s=5)) < 300 or not read_topic(
            kafka_bootstrap, changelog, idle_s=0.5, timeout_s=5
        ):
            assert first.poll() is None, f"detector exited early:\n{log_path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "no verdicts and checkpoints within 10 minutes"
            time.sleep(0.5)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(30)

    judged_before = read_topic(kafka_bootstrap, cache_topic, idle_s=2.0)
    assert judged_before, "the first instance shared no template verdict before it died"
    templates_before = {orjson.loads(m.key())[2] for m in judged_before}
    end_before = max(m.offset() for m in judged_before) + 1

    # Another machine: the same group, nothing on its disk, its own model process.
    elsewhere = tmp_path / "second-machine"
    assert not elsewhere.exists()
    settings = load_settings(
        None,
        kafka={"bootstrap_servers": kafka_bootstrap, "group_id": group},
        input={"topic": logs, "poll_batch": 200, "idle_timeout_s": 900, "keyed_by_window": True},
        windows={"gap_ms": GAP_MS},
        output={"topic": out, "dlq_topic": dlq},
        checkpoint={"dir": elsewhere, "interval_s": 0.5},
        metrics={"port": None},
        profile={"name": "hdfs"},
        backend=backend_settings.model_dump(),
    )
    counting = CountingBackend(real_backend)
    second = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=600), backend=counting)
    assert second.run() == 0
    assert not any(elsewhere.rglob("*.json")), "the local directory is a cache at most, never written here"

    reference = io.BytesIO()
    replay_files([hdfs], settings, reference, backend=real_backend, progress=False)
    expected = {orjson.loads(line)["verdict_id"] for line in reference.getvalue().splitlines()}
    verdicts = verdicts_of(read_topic(kafka_bootstrap, out, idle_s=3.0))
    published = {v["verdict_id"] for v in verdicts}
    assert published == expected, (
        f"{len(expected - published)} windows never judged, {len(published - expected)} partial or foreign windows"
    )
    blocks, _ = expected_memberships(hdfs)
    assert {v["window"]["key"] for v in verdicts} == blocks

    # The group's verdicts so far were read, not asked again: no template judged before the kill
    # was judged by the second instance.
    written_after = read_topic(kafka_bootstrap, cache_topic, idle_s=2.0)
    templates_second = {orjson.loads(m.key())[2] for m in written_after if m.offset() >= end_before}
    assert not templates_second & templates_before
    if not templates_second:
        assert counting.conversations == 0

"""One judge per template in a consumer group, on the real broker with the real model: two
detectors share a two-partition topic, both meet the same templates at the same moment, and each
template is judged once between them, by the member owning its partition
(stream/template_owners.py); the other asks through `<group>-judge-requests` and takes the answer
from `<group>-template-verdicts`."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from rationanomaly.stream.app import Detector, RunLimits
from tests.integration.detector_support import create_topics, file_values, read_topic, unique, verdicts_of
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration]

LINES = 3000  # the head of HDFS_20000.log: a few hundred blocks, most of its templates
BLOCK = re.compile(rb"blk_-?\d+")


class SharedModel:
    """The session's real model, one call at a time: both members run in this process and share
    the one loaded model. Model calls are counted by each member's own metric."""

    lock = threading.Lock()

    def __init__(self, inner) -> None:
        self._inner = inner
        self.model_id = inner.model_id

    def generate(self, conversations):
        with self.lock:
            return self._inner.generate(conversations)

    def __getattr__(self, name):  # score, when the decision ranks
        attr = getattr(self._inner, name)
        if name == "score" and callable(attr):
            def locked(*args, **kwargs):
                with self.lock:
                    return attr(*args, **kwargs)
            return locked
        return attr

    def close(self) -> None:
        pass


def _model_calls(detector: Detector) -> float:
    """Templates this member sent to the model (one latency observation each, whatever the
    decision: rank scores two completions a template, generate may retry)."""
    return detector.metrics.registry.get_sample_value("rationanomaly_model_latency_seconds_count") or 0.0


def _routing(detector: Detector, event: str) -> float:
    return detector.metrics.registry.get_sample_value("rationanomaly_template_routing_total", {"event": event}) or 0.0


def test_two_members_judge_each_template_once_between_them(kafka_bootstrap, data_dir, real_backend, backend_settings,
                                                          tmp_path):  # fmt: skip
    values = file_values(data_dir / "raw" / "HDFS_20000.log")[:LINES]
    blocks = {BLOCK.search(v).group(0) for v in values}
    logs, out, dlq = unique("routed"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, partitions=2)
    create_topics(kafka_bootstrap, out, dlq)
    group = unique("routed-group")

    members, threads, codes = [], [], {}
    for name in ("a", "b"):
        settings = detector_settings(
            kafka_bootstrap, logs, out, dlq, tmp_path / name,
            kafka={"group_id": group, "extra": {"session.timeout.ms": "6000", "heartbeat.interval.ms": "1000"}},
            # keyed by block below: each member forms whole windows of its own partition; all of
            # them close together on the idle timeout, so both meet each template at once
            input={"keyed_by_window": True, "idle_timeout_s": 3},
            backend=backend_settings.model_dump(),
        )  # fmt: skip
        detector = Detector(settings, RunLimits(max_seconds=400), backend=SharedModel(real_backend))
        thread = threading.Thread(target=lambda d=detector, n=name: codes.__setitem__(n, d.run()), daemon=True)
        thread.start()
        members.append(detector)
        threads.append(thread)
    try:
        deadline = time.monotonic() + 120
        while not all(len(m._assigned) == 1 for m in members):  # one partition each: the group settled
            assert all(t.is_alive() for t in threads), codes
            assert time.monotonic() < deadline, "the two members never split the partitions"
            time.sleep(0.2)
        owned = [set(m._assigned) for m in members]
        assert owned[0] | owned[1] == {0, 1}

        keys = [BLOCK.search(v).group(0) for v in values]
        produce_by_key(kafka_bootstrap, logs, values, keys)
        deadline = time.monotonic() + 300
        verdicts: list[dict] = []
        while {v["window"]["key"] for v in verdicts} != {b.decode() for b in blocks}:
            assert time.monotonic() < deadline, f"{len(verdicts)} verdicts for {len(blocks)} blocks"
            assert all(t.is_alive() for t in threads), codes
            verdicts = verdicts_of(read_topic(kafka_bootstrap, out, idle_s=2.0, timeout_s=30))
    finally:
        for m in members:
            m.stop()
        for t in threads:
            t.join(60)
    assert codes == {"a": 0, "b": 0}

    templates = {t["id"] for v in verdicts for t in v["templates"]}
    calls = [_model_calls(m) for m in members]
    asked = [_routing(m, "asked") for m in members]
    served = [_routing(m, "served") for m in members]
    timed_out = [_routing(m, "timed_out") for m in members]
    print(f"\nrouting: model calls {calls} for {len(templates)} distinct templates; asked {asked}, served {served}, "
          f"timed out {timed_out}")  # fmt: skip

    # Members met templates the other owns and asked for them instead of judging them; every
    # request was answered by its owner, none waited out judging.remote_wait_s.
    assert sum(asked) > 0 and sum(served) == sum(asked) and sum(timed_out) == 0, (asked, served, timed_out)
    assert all(calls), calls  # each judged the templates it owns
    # Each template judged once in the whole group (without routing both members ask about the
    # templates they meet at the same moment).
    assert sum(calls) == len(templates), f"{sum(calls)} model calls for {len(templates)} templates"
    # Every template's answer is on the shared cache topic (an owner may write one twice when a
    # request meets its own answer on the way: a record, not a model call).
    shared = {orjson.loads(m.key())[2] for m in read_topic(kafka_bootstrap, f"{group}-template-verdicts", idle_s=2.0)
              if m.value() is not None}  # fmt: skip
    assert shared == {t["id"] for v in verdicts for t in v["templates"] if t["verdict"] in ("normal", "abnormal")}
    # One verdict per block, none lost to the hand-over.
    assert Counter(v["window"]["key"] for v in verdicts).most_common(1)[0][1] == 1
    assert read_topic(kafka_bootstrap, dlq, idle_s=1.0) == []

    # The request topic is compacted, one partition per window partition; every request served
    # was closed with a tombstone.
    requests_topic = f"{group}-judge-requests"
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    resource = ConfigResource(ConfigResource.Type.TOPIC, requests_topic)
    configs = {k: e.value for k, e in admin.describe_configs([resource])[resource].result(30).items()}
    assert configs["cleanup.policy"] == "compact"
    assert len(admin.list_topics(requests_topic, timeout=10).topics[requests_topic].partitions) == 2
    records = read_topic(kafka_bootstrap, requests_topic, idle_s=2.0)
    latest = {}
    for m in records:
        latest[m.key()] = m.value()
    assert latest and all(v is None for v in latest.values()), "a request left open"


def produce_by_key(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes]) -> None:
    """The lines keyed by block, so the default partitioner spreads blocks over both partitions."""
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for value, key in zip(values, keys, strict=True):
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.5)
    if producer.flush(60):
        raise RuntimeError("lines not delivered")


def test_a_request_topic_with_the_wrong_configs_stops_the_detector_with_exit_2(kafka_bootstrap, real_backend,
                                                                              backend_settings, tmp_path):  # fmt: skip
    logs, out, dlq = unique("routed"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, out, dlq)
    group = unique("routed-group")
    # Made by hand with the broker's defaults: delete policy, so open requests would vanish.
    create_topics(kafka_bootstrap, f"{group}-judge-requests")
    settings = detector_settings(kafka_bootstrap, logs, out, dlq, tmp_path, kafka={"group_id": group},
                                 backend=backend_settings.model_dump())  # fmt: skip
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=60), backend=SharedModel(real_backend))
    assert detector.run() == 2

"""Two detectors behind the repartition hop share the work of both topics: each forwards half of
the input partitions and forms windows on half of the repartition partitions.

In one consumer group subscribed to both topics, the cooperative-sticky assignor balances the
count of partitions per member over the two topics together, not per topic: a member could hold
every input partition and the other every window partition, so that one did all the forwarding
and the other formed every window (seen in 2 of 5 two-member runs of bench/stream_scaling.py; in
one, 200,000 window lines on one member and 1,287 on the other). The input topic and the
repartition topic now have a group each (stream/README.md, "Consumer groups"), and each group
balances its own topic.

The members are started one after the other, the second once the first holds every partition:
the shape where a single group moved whole topics.
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from confluent_kafka import ConsumerGroupState
from confluent_kafka.admin import AdminClient

from rationanomaly.stream import repartition
from rationanomaly.stream.app import Detector, RunLimits, window_group
from tests.integration.detector_support import create_topics, unique
from tests.integration.test_detector_e2e import detector_settings
from tests.integration.test_template_routing import SharedModel

pytestmark = [pytest.mark.integration]

PARTITIONS = 6


def _held(admin: AdminClient, groups: list[str]) -> tuple[bool, dict[tuple[str, str], int]]:
    """Whether every group is stable, and (client id, topic) -> partitions held, over the groups."""
    held: Counter[tuple[str, str]] = Counter()
    stable = True
    for future in admin.describe_consumer_groups(groups, request_timeout=10).values():
        try:
            group = future.result()
        except Exception:  # a group not formed yet
            continue
        if not group.members:  # not joined yet (or not used: the code before had one group)
            continue
        stable &= group.state == ConsumerGroupState.STABLE
        for member in group.members:
            for tp in member.assignment.topic_partitions:
                held[(member.client_id, tp.topic)] += 1
    return stable, dict(held)


def _settle(admin: AdminClient, groups: list[str], want_total: int, timeout_s: float) -> dict[tuple[str, str], int]:
    """The groups' assignment once stable, all `want_total` partitions held, and unchanged for 3 s."""
    deadline = time.monotonic() + timeout_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        stable, held = _held(admin, groups)
        if held != last:
            last, since = held, time.monotonic()
        elif stable and sum(held.values()) == want_total and time.monotonic() - since >= 3.0:
            return held
        time.sleep(0.5)
    raise AssertionError(f"the group did not settle in {timeout_s:g} s: {last}")


def test_two_members_behind_the_hop_each_take_half_of_each_topic(kafka_bootstrap, real_backend, backend_settings, tmp_path):
    logs, out, dlq = unique("balance"), unique("verdicts"), unique("dlq")
    create_topics(kafka_bootstrap, logs, partitions=PARTITIONS)
    create_topics(kafka_bootstrap, out, dlq)
    group = unique("balance-group")
    window_topic = repartition.topic_name(group)
    groups = [group, window_group(group)]  # the input's, and the window consumer's
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})

    def member(name: str) -> Detector:
        settings = detector_settings(
            kafka_bootstrap, logs, out, dlq, tmp_path / name,
            kafka={"group_id": group, "extra": {"client.id": name, "session.timeout.ms": "6000",
                                                 "heartbeat.interval.ms": "500"}},
            backend=backend_settings.model_dump(),
        )  # fmt: skip
        return Detector(settings, RunLimits(max_seconds=180), backend=SharedModel(real_backend))

    members = {name: member(name) for name in ("a", "b")}
    codes: dict[str, int] = {}
    threads = {n: threading.Thread(target=lambda n=n, d=d: codes.__setitem__(n, d.run()), daemon=True)
               for n, d in members.items()}  # fmt: skip
    try:
        threads["a"].start()
        alone = _settle(admin, groups, 2 * PARTITIONS, timeout_s=90)
        assert alone == {("a", logs): PARTITIONS, ("a", window_topic): PARTITIONS}
        threads["b"].start()
        shared = _settle(admin, groups, 2 * PARTITIONS, timeout_s=90)
    finally:
        for d in members.values():
            d.stop()
        for t in threads.values():
            if t.ident is not None:
                t.join(60)
    print(f"\nalone: {alone}\nshared: {shared}")
    assert codes == {"a": 0, "b": 0}
    half = PARTITIONS // 2
    assert shared == {("a", logs): half, ("a", window_topic): half, ("b", logs): half, ("b", window_topic): half}

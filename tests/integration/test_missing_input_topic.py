"""A detector started before its input topic exists (state in Kafka; with and without the hop).

Its repartition and state topics take the input topic's partition count. Without the hop the
detector used to guess 1 when the topic was missing, so a later 3-partition input topic got a
1-partition checkpoints topic, which every member after it refused; with the hop it stopped at
once. It now waits for the topic either way, and gives up with exit code 2 and a clear message
once kafka.startup_timeout_s has passed.
"""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka.admin import AdminClient

from rationanomaly.stream.app import Detector, RunLimits
from tests.integration.detector_support import create_topics, unique
from tests.integration.test_detector_e2e import detector_settings
from tests.unit.stream.fixed_model import AlwaysNormal

pytestmark = [pytest.mark.integration]


# keyed_by_window True: no hop, windows form on the input topic itself; False: the hop is on
HOP = pytest.mark.parametrize("keyed_by_window", [True, False], ids=["no-hop", "hop"])


def _settings(bootstrap: str, topic: str, tmp_path, startup_timeout_s: float, keyed_by_window: bool):
    out, dlq = unique("verdicts"), unique("dlq")
    create_topics(bootstrap, out, dlq)
    return detector_settings(
        bootstrap, topic, out, dlq, tmp_path,
        kafka={"startup_timeout_s": startup_timeout_s},
        input={"keyed_by_window": keyed_by_window},
    )  # fmt: skip


def _partitions(bootstrap: str, topic: str) -> int:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10).topics[topic]
    assert meta.error is None, meta.error
    return len(meta.partitions)


@HOP
def test_state_topics_take_the_count_of_an_input_topic_created_after_the_start(
    kafka_bootstrap, tmp_path, keyed_by_window
) -> None:
    topic = unique("late-input")
    settings = _settings(kafka_bootstrap, topic, tmp_path, 60.0, keyed_by_window)
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=60.0), backend=AlwaysNormal())
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(detector.run()), daemon=True)
    runner.start()
    time.sleep(3.0)  # the detector is waiting for the topic by now
    assert codes == []
    create_topics(kafka_bootstrap, topic, partitions=3)
    runner.join(90)
    assert codes == [0]
    group = settings.kafka.group_id
    assert _partitions(kafka_bootstrap, f"{group}-checkpoints") == 3
    if not keyed_by_window:
        assert _partitions(kafka_bootstrap, f"{group}-repartition") == 3


@HOP
def test_an_input_topic_that_never_comes_stops_the_start_with_exit_code_2(
    kafka_bootstrap, tmp_path, capsys, keyed_by_window
) -> None:
    topic = unique("no-input")
    settings = _settings(kafka_bootstrap, topic, tmp_path, 2.0, keyed_by_window)
    started = time.monotonic()
    code = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=30.0), backend=AlwaysNormal()).run()
    assert code == 2
    assert time.monotonic() - started < 25.0
    assert f"the input topic {topic} does not exist" in capsys.readouterr().out

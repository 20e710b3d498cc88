"""A detector started before its input topic exists (no repartition hop, state in Kafka).

Its state topics take the input topic's partition count. The detector used to guess 1 when the
topic was missing, so a later 3-partition input topic got a 1-partition checkpoints topic, which
every member after it refused. It now waits for the topic, and gives up with exit code 2 and a
clear message once kafka.startup_timeout_s has passed.
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


def _settings(bootstrap: str, topic: str, tmp_path, startup_timeout_s: float):
    out, dlq = unique("verdicts"), unique("dlq")
    create_topics(bootstrap, out, dlq)
    return detector_settings(
        bootstrap, topic, out, dlq, tmp_path,
        kafka={"startup_timeout_s": startup_timeout_s},
        input={"keyed_by_window": True},  # no hop: windows form on the input topic itself
    )  # fmt: skip


def test_state_topics_take_the_count_of_an_input_topic_created_after_the_start(kafka_bootstrap, tmp_path) -> None:
    topic = unique("late-input")
    settings = _settings(kafka_bootstrap, topic, tmp_path, startup_timeout_s=60.0)
    detector = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=60.0), backend=AlwaysNormal())
    codes: list[int] = []
    runner = threading.Thread(target=lambda: codes.append(detector.run()), daemon=True)
    runner.start()
    time.sleep(3.0)  # the detector is waiting for the topic by now
    assert codes == []
    create_topics(kafka_bootstrap, topic, partitions=3)
    runner.join(90)
    assert codes == [0]
    checkpoints = f"{settings.kafka.group_id}-checkpoints"
    meta = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(checkpoints, timeout=10).topics[checkpoints]
    assert meta.error is None
    assert len(meta.partitions) == 3


def test_an_input_topic_that_never_comes_stops_the_start_with_exit_code_2(kafka_bootstrap, tmp_path, capsys) -> None:
    topic = unique("no-input")
    settings = _settings(kafka_bootstrap, topic, tmp_path, startup_timeout_s=2.0)
    started = time.monotonic()
    code = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=30.0), backend=AlwaysNormal()).run()
    assert code == 2
    assert time.monotonic() - started < 25.0
    assert f"the input topic {topic} does not exist" in capsys.readouterr().out

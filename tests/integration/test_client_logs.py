"""Every Kafka client the detector makes routes librdkafka's log into the structured log.

A client made without the routed logger writes librdkafka's lines (`%4|…|CONFWARN|…`) raw to
stderr, outside the JSON log: the demo's clean stderr failed once on an unrouted admin client's
`BGQUEUE` line at shutdown. That line comes only now and then, so this test makes every client
log something on creation instead: librdkafka warns when a client is given a property of the
other kind (a producer's `linger.ms` on a consumer, a consumer's `session.timeout.ms` on a
producer or an admin client), and `kafka.extra` goes to every client the detector makes.
"""

from __future__ import annotations

import re

import pytest
from confluent_kafka.admin import AdminClient

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.settings import librdkafka_config
from tests.integration.detector_support import create_topics, file_values, produce_lines, unique
from tests.integration.test_detector_e2e import detector_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Both kinds: a consumer warns on the first, a producer and an admin client on the second.
CROSS_KIND = {"linger.ms": "5", "session.timeout.ms": "45000"}
RAW_LINE = re.compile(r"^%\d\|\d+\.\d+\|[A-Z]+\|", re.MULTILINE)


def test_no_client_of_a_detector_run_writes_raw_librdkafka_lines(kafka_bootstrap, data_dir, real_backend,
                                                                backend_settings, tmp_path, capfd) -> None:  # fmt: skip
    logs, out, dlq = unique("clog-logs"), unique("clog-verdicts"), unique("clog-dlq")
    create_topics(kafka_bootstrap, logs, out, dlq, partitions=2)
    produce_lines(kafka_bootstrap, logs, file_values(data_dir / "raw" / "HDFS_20000.log")[:1500])
    settings = detector_settings(
        kafka_bootstrap, logs, out, dlq, tmp_path,
        kafka={"extra": CROSS_KIND},
        backend=backend_settings.model_dump(),
    )  # fmt: skip
    assert settings.feedback.enabled  # the feedback consumer is among the clients
    capfd.readouterr()

    # The property set does make librdkafka write raw lines from a client without the logger.
    unrouted = AdminClient(librdkafka_config(settings.kafka))
    del unrouted
    control = capfd.readouterr().err
    assert "CONFWARN" in control and "session.timeout.ms" in control, control

    # The hop is on (input not keyed by window): the window consumer and the repartition side run too.
    code = Detector(settings, RunLimits(stop_at_eof=True, max_seconds=600), backend=real_backend).run()
    err = capfd.readouterr().err
    assert code == 0, err[-4000:]
    assert RAW_LINE.findall(err) == [], "\n".join(line for line in err.splitlines() if RAW_LINE.match(line))

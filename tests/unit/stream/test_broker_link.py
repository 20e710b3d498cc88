"""The broker link: an outage is logged once each way and never ends the run; a refusal does."""

from __future__ import annotations

import pytest
import structlog
from confluent_kafka import KafkaError

from rationanomaly.stream.broker_link import BrokerLink, BrokerRefused


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_outage_is_logged_when_it_starts_and_when_it_ends() -> None:
    clock = Clock()
    link = BrokerLink(clock)
    with structlog.testing.capture_logs() as events:
        link.heard_from_broker()  # nothing to report while all is well
        link.on_error(KafkaError(KafkaError._TRANSPORT, "127.0.0.1:9092/1: Disconnected"))
        link.on_error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
        link.on_error(KafkaError(KafkaError._TRANSPORT, "Connect to ipv4#127.0.0.1:9092 failed"))
        assert not link.reachable
        clock.now += 41.5
        link.heard_from_broker()
        link.heard_from_broker()
    assert [(e["event"], e["log_level"]) for e in events] == [("broker_unreachable", "warning"), ("broker_reachable", "info")]
    assert events[1]["down_s"] == 41.5
    assert link.reachable and link.outages == 1
    link.check()  # an outage is never a reason to stop


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._AUTHENTICATION, "SASL authentication error: Authentication failed"),
        KafkaError(KafkaError._SSL, "SSL handshake failed: certificate verify failed"),
        KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "Not authorized to access topics"),
        KafkaError(KafkaError._FENCED, "producer fenced", fatal=True),
    ],
)
def test_a_refusal_ends_the_run_with_its_reason(error: KafkaError) -> None:
    link = BrokerLink(Clock())
    link.on_error(error)
    link.on_error(KafkaError(KafkaError._TRANSPORT, "later noise"))
    with pytest.raises(BrokerRefused, match=error.name()):
        link.check()


"""librdkafka's log lines reach the structured log, with retried transient states demoted."""

from __future__ import annotations

import logging
import socket
import time

import structlog
from confluent_kafka import Producer

from rationanomaly.stream.kafka_log import KafkaClientLog, with_client_log


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_transient_warning_is_logged_at_info_and_a_real_one_keeps_its_level() -> None:
    with structlog.testing.capture_logs() as events:
        log = KafkaClientLog()
        log.log(logging.WARNING, "%s [%s] %s", "GETPID", "rdkafka#producer-1",
                "Failed to acquire idempotence PID from broker: Coordinator load in progress: retrying")
        log.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-2", "SASL authentication error")
    assert [(e["log_level"], e["facility"], e["client"]) for e in events] == [
        ("info", "GETPID", "rdkafka#producer-1"),
        ("error", "FAIL", "rdkafka#consumer-2"),
    ]
    assert all(e["event"] == "kafka_client" for e in events)


def test_a_real_client_writes_through_it_not_to_stderr(capfd) -> None:
    # A broker that is not there: librdkafka logs its failed connection attempts. With the
    # routed logger they arrive as events (served by poll), and nothing raw reaches stderr.
    port = _closed_port()
    with structlog.testing.capture_logs() as events:
        producer = Producer(with_client_log({"bootstrap.servers": f"127.0.0.1:{port}", "reconnect.backoff.ms": 100}))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(e.get("event") == "kafka_client" for e in events):
            producer.poll(0.2)
        del producer
    routed = [e for e in events if e.get("event") == "kafka_client"]
    assert routed, "no librdkafka log line was routed"
    assert any(str(port) in e["message"] for e in routed), routed
    assert "%3|" not in capfd.readouterr().err

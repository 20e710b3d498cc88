"""librdkafka's own log lines, routed into the detector's structured log.

Without a `logger` in its configuration, librdkafka writes `%4|…|GETPID|…` lines straight to
stderr, outside the JSON log and its level. With one, confluent-kafka calls its
`log(level, "%s [%s] %s", facility, client, message)` (levels already Python's), and the line
becomes a `kafka_client` event with those fields.

A few warnings are the client retrying a condition that clears by itself in seconds (a broker
that has just started still loading its coordinators): they are logged at INFO, so a fresh
broker does not greet every start with a warning, while a real failure (authentication,
authorization, a broker that stays away) keeps its level.
"""

from __future__ import annotations

import logging
from typing import Any

import structlog

# Substrings of librdkafka messages for conditions it retries and that resolve on their own.
TRANSIENT = (
    "Coordinator load in progress",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "Coordinator not available",
    "NOT_COORDINATOR",
)


class KafkaClientLog:
    """The object confluent-kafka's `logger` setting takes: anything with a `log` method."""

    def __init__(self, name: str = "rationanomaly.kafka") -> None:
        self._log = structlog.get_logger(name)

    def log(self, level: int, fmt: str, *args: Any) -> None:
        if len(args) == 3:
            facility, client, message = (str(a) for a in args)
        else:
            facility, client, message = "", "", fmt % args if args else fmt
        if level >= logging.WARNING and is_transient(message):
            level = logging.INFO
        self._log.log(level, "kafka_client", facility=facility, client=client, message=message)


def is_transient(message: str) -> bool:
    """
    >>> is_transient("Failed to acquire idempotence PID from broker: Coordinator load in progress: retrying")
    True
    >>> is_transient("SASL authentication error: Authentication failed during authentication")
    False
    """
    return any(marker in message for marker in TRANSIENT)


def with_client_log(conf: dict[str, Any]) -> dict[str, Any]:
    """`conf` plus the routed logger, for a Producer, Consumer or AdminClient."""
    return {**conf, "logger": KafkaClientLog()}

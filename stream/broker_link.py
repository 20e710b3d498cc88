"""What the Kafka clients say about the brokers, turned into the detector's decisions.

librdkafka never gives up on a broker that went away: it reconnects for ever and keeps
produced records queued for `message.timeout.ms`. So an outage is not an error to die of; the
detector keeps polling, defers its commits, and logs the outage once when it starts and once
when it ends. What does end a run is an error no retry can fix: a fatal client error, or a
refused authentication or TLS handshake (a wrong password or an untrusted certificate would
otherwise be retried for ever, in silence: connection-level errors reach only `error_cb`).
"""

from __future__ import annotations

import time

import structlog
from confluent_kafka import KafkaError

log = structlog.get_logger(__name__)

# A commit that failed for one of these is tried again at the next interval: the coordinator
# is away or moving, and the offsets stay uncommitted (so nothing is lost) until it is back.
RETRIABLE_COMMIT = frozenset({
    KafkaError._WAIT_COORD,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
})  # fmt: skip

# The brokers cannot be reached at all (rather than one request having failed).
_UNREACHABLE = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE})

# Errors that retrying cannot mend: the credentials, the certificate, or the rights are wrong.
_REFUSED = frozenset({
    KafkaError._AUTHENTICATION,
    KafkaError._SSL,
    KafkaError.SASL_AUTHENTICATION_FAILED,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
})  # fmt: skip


def is_refusal(error: KafkaError) -> bool:
    """An error no retry mends: fatal, or a refused login, handshake or authorization."""
    return error.fatal() or error.code() in _REFUSED


class BrokerRefused(RuntimeError):
    """The cluster refused this client for good (fatal error, authentication, TLS, authorization)."""


class BrokerLink:
    """Registered as every client's `error_cb`; the loop asks it whether to go on."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self.down_since: float | None = None
        self.refused: KafkaError | None = None
        self.outages = 0

    @property
    def reachable(self) -> bool:
        return self.down_since is None

    def on_error(self, error: KafkaError) -> None:
        code = error.code()
        if is_refusal(error):
            if self.refused is None:
                self.refused = error
                log.error("kafka_refused", code=error.name(), error=error.str())
        elif code in _UNREACHABLE:
            if self.down_since is None:
                self.down_since = self._clock()
                self.outages += 1
                log.warning("broker_unreachable", code=error.name(), error=error.str(),
                            action="polling on; commits deferred; nothing is lost")  # fmt: skip
        else:
            log.warning("kafka_error", code=error.name(), error=error.str())

    def heard_from_broker(self) -> None:
        """A record, an end of partition or a commit came back: the brokers answer again."""
        if self.down_since is not None:
            log.info("broker_reachable", down_s=round(self._clock() - self.down_since, 1))
            self.down_since = None

    def check(self) -> None:
        """Raise for an error no retry can fix; the caller ends the run with a clear message."""
        if self.refused is not None:
            raise BrokerRefused(f"{self.refused.name()}: {self.refused.str()}")

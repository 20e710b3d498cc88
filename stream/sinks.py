"""Where verdicts and dead letters go: the output and dead-letter topics, or JSONL files on replay."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import orjson
import structlog
from confluent_kafka import KafkaException, Producer

from rationanomaly.stream.records import DeadLetter
from rationanomaly.stream.settings import OutputSettings
from rationanomaly.stream.siem import OutputFormat, Publish, render, selected
from rationanomaly.stream.verdicts import Verdict

log = structlog.get_logger(__name__)

# Big enough for a dead letter that carries a 1 MiB line plus headers; the broker allows 4 MiB.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class VerdictSink(Protocol):
    def emit(self, verdict: Verdict) -> None: ...

    def dead_letter(self, letter: DeadLetter) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> None: ...

    def close(self) -> None: ...


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    src = letter.source
    return [
        ("rationanomaly.stage", letter.stage.encode()),
        ("rationanomaly.error", letter.error.encode("utf-8", "replace")[:4096]),
        ("rationanomaly.source.topic", src.topic.encode()),
        ("rationanomaly.source.partition", str(src.partition).encode()),
        ("rationanomaly.source.offset", str(src.offset).encode()),
    ]


class DeliveryError(RuntimeError):
    pass


class Undelivered(DeliveryError):
    """Records still queued when a flush timed out: not lost, the producer keeps retrying
    them (for `message.timeout.ms`); a broker that is away is the usual cause."""


@dataclass(frozen=True, slots=True)
class Route:
    """One verdict stream: a topic, the shape of its records, and which verdicts it carries."""

    topic: str
    fmt: OutputFormat = OutputFormat.NATIVE
    publish: Publish = Publish.ALL
    unknown: bool = True

    def takes(self, verdict: Verdict) -> bool:
        return selected(verdict.verdict, self.publish, self.unknown)


def routes_for(output: OutputSettings, topic: str | None = None) -> list[Route]:
    """The output topic (filtered as `output.publish` says), then the full stream if configured.

    A verdict a route does not take is still published for the offsets' sake: the pipeline
    releases its window either way, so a filtered window is neither lost nor judged again.
    """
    routes = [Route(topic or output.topic, output.format, output.publish, output.publish_unknown)]
    if output.full_topic is not None:
        routes.append(Route(output.full_topic, output.full_format))
    return routes


class KafkaSink:
    """Publishes verdicts keyed by window key, timestamped at the window's end (event time),
    to each route that takes them."""

    def __init__(self, producer: Producer, routes: Sequence[Route], dlq_topic: str) -> None:
        if not routes:
            raise ValueError("a Kafka sink needs at least one verdict route")
        self._producer = producer
        self._routes = tuple(routes)
        self._dlq_topic = dlq_topic
        self._failures: list[str] = []

    def _on_delivery(self, err, msg) -> None:  # librdkafka calls this from poll()/flush()
        if err is not None:
            self._failures.append(f"{msg.topic()}: {err}")

    def _produce(self, topic: str, **kwargs) -> None:
        while True:
            try:
                self._producer.produce(topic, on_delivery=self._on_delivery, **kwargs)
                return
            except BufferError:
                # Local queue full: serve delivery reports until there is room, never drop.
                self._producer.poll(0.5)

    def emit(self, verdict: Verdict) -> None:
        # Headers let a consumer or a Kafka Connect filter route without parsing the value.
        headers = [("rationanomaly.verdict", verdict.verdict.encode())]
        if verdict.severity is not None:
            headers.append(("rationanomaly.severity", verdict.severity.encode()))
        for route in self._routes:
            if route.takes(verdict):
                self._produce(
                    route.topic,
                    key=verdict.window.key.encode(),
                    value=render(verdict, route.fmt),
                    timestamp=verdict.window.end_ms,
                    headers=headers,
                )
        self._producer.poll(0)

    def dead_letter(self, letter: DeadLetter) -> None:
        self._produce(self._dlq_topic, key=letter.key, value=letter.value, headers=dead_letter_headers(letter))
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise Undelivered(f"{remaining} records still undelivered after {timeout_s}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError("delivery failed: " + "; ".join(failures[:5]))

    def close(self) -> None:
        try:
            self.flush()
        except (DeliveryError, KafkaException):
            log.exception("final_flush_failed")


class JsonlSink:
    """Replay output: one rendered verdict a line, those `route` takes; dead letters beside it
    (`<out>.dlq.jsonl`)."""

    def __init__(self, out: IO[bytes], fmt: OutputFormat | Route, dlq_path: Path | None) -> None:
        self._out = out
        self._route = fmt if isinstance(fmt, Route) else Route("", OutputFormat(fmt))
        self._dlq_path = dlq_path
        self._dlq: IO[bytes] | None = None
        self.dead_letters = 0

    def emit(self, verdict: Verdict) -> None:
        if not self._route.takes(verdict):
            return
        self._out.write(render(verdict, self._route.fmt))
        self._out.write(b"\n")

    def dead_letter(self, letter: DeadLetter) -> None:
        self.dead_letters += 1
        if self._dlq_path is None:
            return
        if self._dlq is None:
            self._dlq = self._dlq_path.open("ab")
        record = {
            "stage": letter.stage,
            "error": letter.error,
            "source": {"topic": letter.source.topic, "partition": letter.source.partition, "offset": letter.source.offset},
            "value_b64": base64.b64encode(letter.value).decode(),
        }
        self._dlq.write(orjson.dumps(record) + b"\n")

    def flush(self, timeout_s: float = 30.0) -> None:
        self._out.flush()
        if self._dlq is not None:
            self._dlq.flush()

    def close(self) -> None:
        self.flush()
        if self._dlq is not None:
            self._dlq.close()

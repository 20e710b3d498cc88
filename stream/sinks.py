"""Where verdicts and dead letters go: the output and dead-letter topics, or JSONL files on replay."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import IO, Protocol

import orjson
import structlog
from confluent_kafka import KafkaException, Producer

from rationanomaly.stream.records import DeadLetter
from rationanomaly.stream.siem import OutputFormat, render
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


class KafkaSink:
    """Publishes verdicts keyed by window key, timestamped at the window's end (event time)."""

    def __init__(self, producer: Producer, topic: str, dlq_topic: str, fmt: OutputFormat) -> None:
        self._producer = producer
        self._topic = topic
        self._dlq_topic = dlq_topic
        self._fmt = fmt
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
        self._produce(
            self._topic,
            key=verdict.window.key.encode(),
            value=render(verdict, self._fmt),
            timestamp=verdict.window.end_ms,
            headers=[("rationanomaly.verdict", verdict.verdict.encode())],
        )
        self._producer.poll(0)

    def dead_letter(self, letter: DeadLetter) -> None:
        self._produce(self._dlq_topic, key=letter.key, value=letter.value, headers=dead_letter_headers(letter))
        self._producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} records still undelivered after {timeout_s}s")
        if self._failures:
            failures, self._failures = self._failures, []
            raise DeliveryError("delivery failed: " + "; ".join(failures[:5]))

    def close(self) -> None:
        try:
            self.flush()
        except (DeliveryError, KafkaException):
            log.exception("final_flush_failed")


class JsonlSink:
    """Replay output: one rendered verdict a line; dead letters beside it (`<out>.dlq.jsonl`)."""

    def __init__(self, out: IO[bytes], fmt: OutputFormat, dlq_path: Path | None) -> None:
        self._out = out
        self._fmt = fmt
        self._dlq_path = dlq_path
        self._dlq: IO[bytes] | None = None
        self.dead_letters = 0

    def emit(self, verdict: Verdict) -> None:
        self._out.write(render(verdict, self._fmt))
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

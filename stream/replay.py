"""Replaying history through the same pipeline: from files (plain or gzip), or from a topic range.

A file is read as one partition (its lines numbered from 0 as offsets), so replaying a file and
streaming it through a one-partition topic give the same windows and the same verdict ids.
Replay never reads the wall clock for window decisions: idle timeouts do not apply.

The file clock: each line of a file carries a record time, as a Kafka record does, of the file's
modification time plus its line number in milliseconds. A line whose profile reads no timestamp
(or that has none, under the generic profile) takes that time, so a log without timestamps
replays in file order, one millisecond a line, instead of being dead-lettered; the pipeline
warns once when it happens.
"""

from __future__ import annotations

import gzip
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

import structlog
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from rationanomaly.model.backends import Backend
from rationanomaly.stream.engine import Engine, build_engine
from rationanomaly.stream.records import SourceRef
from rationanomaly.stream.kafka_log import with_client_log
from rationanomaly.stream.settings import DetectorSettings, librdkafka_config
from rationanomaly.stream.sinks import MAX_MESSAGE_BYTES, JsonlSink, KafkaSink, VerdictSink, routes_for

log = structlog.get_logger(__name__)

_NO_WALL_CLOCK = 0.0  # replay passes a constant "now": idle timeouts never fire


@dataclass(frozen=True, slots=True)
class ReplaySummary:
    lines: int
    windows: int
    verdicts: int
    dead_letters: int
    seconds: float

    @property
    def lines_per_s(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else 0.0


class Progress:
    """A progress bar on a terminal, nothing when piped."""

    def __init__(self, enabled: bool | None = None) -> None:
        enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(unit=" lines", unit_scale=True, file=sys.stderr, dynamic_ncols=True)

    def update(self, lines: int, engine: Engine) -> None:
        if self._bar is not None:
            p = engine.pipeline
            self._bar.update(lines - self._bar.n)
            self._bar.set_postfix(windows=p.windows, verdicts=p.verdicts, dlq=p.dead_letters, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def open_log(path: Path) -> IO[bytes]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    return gzip.open(path, "rb") if magic == b"\x1f\x8b" else path.open("rb")


def file_lines(paths: list[Path]) -> Iterator[tuple[bytes, SourceRef, int]]:
    """Each line with its position and its file-clock time (mtime ms + line number)."""
    for partition, path in enumerate(paths):
        start_ms = int(path.stat().st_mtime * 1000)
        with open_log(path) as fh:
            for offset, raw in enumerate(fh):
                yield raw.rstrip(b"\r\n"), SourceRef(path.name, partition, offset), start_ms + offset


def _drive(
    engine: Engine,
    records: Iterator[tuple[bytes | None, bytes | None, SourceRef, int | None]],
    settings: DetectorSettings,
    progress: Progress,
) -> ReplaySummary:
    pipeline, worker = engine.pipeline, engine.worker
    batch, queue_max = settings.input.poll_batch, settings.judging.queue_max
    started = time.monotonic()
    for n, (value, key, source, ts) in enumerate(records, start=1):
        pipeline.feed(value, key, source, ts, _NO_WALL_CLOCK)
        if n % batch == 0:
            pipeline.advance(_NO_WALL_CLOCK)
            pipeline.publish(int(time.time() * 1000))
            while worker.depth >= queue_max:  # backpressure: let the model catch up
                worker.wait_idle(0.5)
                pipeline.publish(int(time.time() * 1000))
            progress.update(pipeline.lines, engine)
    pipeline.advance(_NO_WALL_CLOCK)
    pipeline.finish()
    worker.wait_idle()
    pipeline.publish(int(time.time() * 1000))
    engine.sink.flush()
    progress.update(pipeline.lines, engine)
    return ReplaySummary(pipeline.lines, pipeline.windows, pipeline.verdicts, pipeline.dead_letters, time.monotonic() - started)


def replay_files(
    paths: list[Path],
    settings: DetectorSettings,
    out: IO[bytes],
    dlq_path: Path | None = None,
    backend: Backend | None = None,
    progress: bool | None = None,
) -> ReplaySummary:
    # A file gets the output topic's stream: `output.publish` filters it the same way.
    sink = JsonlSink(out, routes_for(settings.output)[0], dlq_path)
    engine = build_engine(settings, sink, backend=backend)
    bar = Progress(progress)
    try:
        records = ((value, None, source, clock_ms) for value, source, clock_ms in file_lines(paths))
        return _drive(engine, records, settings, bar)
    finally:
        bar.close()
        engine.close()


def parse_position(text: str) -> tuple[str, int]:
    """`123` is an offset; an ISO-8601 time (or `@<epoch ms>`) is a timestamp.

    >>> parse_position("42")
    ('offset', 42)
    >>> parse_position("@1700000000000")
    ('timestamp', 1700000000000)
    >>> parse_position("2008-11-09T20:35:18+00:00")
    ('timestamp', 1226262918000)
    """
    if text.isdigit():
        return "offset", int(text)
    if text.startswith("@") and text[1:].isdigit():
        return "timestamp", int(text[1:])
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{text!r} is neither an offset, '@<epoch ms>', nor an ISO-8601 time") from exc
    return "timestamp", int(moment.timestamp() * 1000)


def _resolve(consumer: Consumer, topic: str, partitions: list[int], position: str | None, end: bool) -> dict[int, int]:
    """Offsets per partition for a position; no position: the log's start, or its end if `end`."""
    out: dict[int, int] = {}
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        if position is None:
            out[p] = high if end else low
            continue
        kind, value = parse_position(position)
        if kind == "offset":
            out[p] = min(max(value, low), high)
        else:
            (found,) = consumer.offsets_for_times([TopicPartition(topic, p, value)], timeout=30)
            out[p] = high if found.offset < 0 else found.offset
    return out


def replay_topic(
    settings: DetectorSettings,
    source_topic: str,
    output_topic: str,
    start: str | None = None,
    stop: str | None = None,
    backend: Backend | None = None,
    progress: bool | None = None,
) -> ReplaySummary:
    """Re-read `source_topic` between two positions (stop exclusive) into `output_topic`."""
    kafka = librdkafka_config(settings.kafka)
    consumer = Consumer(with_client_log(
        {**kafka, "group.id": f"{settings.kafka.group_id}-replay", "enable.auto.commit": False, "enable.partition.eof": True}
    ))
    producer = Producer(with_client_log(
        {**kafka, "enable.idempotence": True, "message.max.bytes": MAX_MESSAGE_BYTES, "linger.ms": 20}
    ))
    # Only the output stream: a replay must not mix history into a live analysts' full topic.
    sink: VerdictSink = KafkaSink(producer, routes_for(settings.output, output_topic)[:1], settings.output.dlq_topic)
    engine = build_engine(settings, sink, backend=backend)
    bar = Progress(progress)
    try:
        metadata = consumer.list_topics(source_topic, timeout=30).topics[source_topic]
        if metadata.error is not None:
            raise RuntimeError(f"topic {source_topic}: {metadata.error}")
        partitions = sorted(metadata.partitions)
        begin = _resolve(consumer, source_topic, partitions, start, end=False)
        until = _resolve(consumer, source_topic, partitions, stop, end=True)
        live = {p for p in partitions if begin[p] < until[p]}
        consumer.assign([TopicPartition(source_topic, p, begin[p]) for p in live])

        def records() -> Iterator[tuple[bytes | None, bytes | None, SourceRef, int | None]]:
            while live:
                for msg in consumer.consume(settings.input.poll_batch, 1.0):
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            live.discard(msg.partition())
                        continue
                    p = msg.partition()
                    if p not in live or msg.offset() >= until[p]:
                        live.discard(p)
                        continue
                    _, ts = msg.timestamp()
                    yield msg.value(), msg.key(), SourceRef(msg.topic(), p, msg.offset()), ts if ts > 0 else None
                    if msg.offset() + 1 >= until[p]:
                        live.discard(p)

        return _drive(engine, records(), settings, bar)
    finally:
        bar.close()
        engine.close()
        consumer.close()

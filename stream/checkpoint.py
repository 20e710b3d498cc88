"""Per-partition checkpoints taken when offsets are committed.

A checkpoint is plain data (orjson; the Drain3 state as its own serialized clusters, never a
pickle), written atomically next to the committed offset it belongs to:

- `offset`: the committed offset (the oldest line still in an open or in-flight window);
- `watermark_ms`: the partition's event-time watermark when the checkpoint was taken (for
  operators; a restart rebuilds the watermark from the lines it re-reads);
- `parser`: the template miner's snapshot, so templates keep their ids after a restart;
- `produced`: for windows already published whose lines lie at or after `offset`, the key and
  the last offset they covered. Re-read lines are not added to those keys again, so a restart
  never publishes a partial copy of a window that was already judged;
- `upstream`: with the repartition hop, the input offsets already forwarded (stream/repartition.py).

Where checkpoints live: `CheckpointLog` writes them to the compacted changelog topic
`<group>-checkpoints` (stream/state_topics.py), in the changelog partition with the consumed
partition's number, so whichever instance is assigned a partition restores it. `CheckpointStore`
(a local directory) is kept for `state.store: local`, a single machine without a broker's say.

A checkpoint is zlib-compressed before it goes to Kafka; one above `CHUNK_BYTES` (a miner near its
template cap, or many published keys) goes as chunk records written before a manifest record, in
the same partition, so a reader that finds the manifest has read its chunks already.
"""

from __future__ import annotations

import base64
import os
import re
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import structlog
from confluent_kafka import Consumer, KafkaError, Producer

from rationanomaly.stream.state_topics import CHUNK_BYTES, latest_by_key, read_to_end

log = structlog.get_logger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(slots=True)
class Checkpoint:
    offset: int
    watermark_ms: int
    parser: bytes
    produced: dict[str, int] = field(default_factory=dict)
    # The repartition hop's dedup marks (stream/repartition.py, UpstreamMarks.below()).
    upstream: dict[str, list] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "offset": self.offset,
                "watermark_ms": self.watermark_ms,
                "parser_b64": base64.b64encode(self.parser).decode(),
                "produced": self.produced,
                "upstream": self.upstream,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        raw = orjson.loads(data)
        if raw.get("version") != 1:
            raise ValueError(f"unsupported checkpoint version {raw.get('version')!r}")
        return cls(
            offset=int(raw["offset"]),
            watermark_ms=int(raw["watermark_ms"]),
            parser=base64.b64decode(raw["parser_b64"]),
            produced={str(k): int(v) for k, v in raw["produced"].items()},
            upstream=raw.get("upstream") or {},
        )


class CheckpointStore:
    """One file per (group, topic, partition) under a directory."""

    def __init__(self, root: Path, group: str, topic: str) -> None:
        self._dir = root / _UNSAFE.sub("_", group) / _UNSAFE.sub("_", topic)
        self._dir.mkdir(parents=True, exist_ok=True)

    def _path(self, partition: int) -> Path:
        return self._dir / f"{partition}.json"

    def save(self, partition: int, checkpoint: Checkpoint) -> None:
        path = self._path(partition)
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            fh.write(checkpoint.to_bytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    def load(self, partition: int) -> Checkpoint | None:
        path = self._path(partition)
        if not path.exists():
            return None
        return Checkpoint.from_bytes(path.read_bytes())


class CheckpointError(RuntimeError):
    """A checkpoint in the changelog is damaged (a manifest whose chunks are missing or differ)."""


def _key(topic: str, partition: int) -> bytes:
    return f"{topic}:{partition}".encode()


def encode_records(topic: str, partition: int, checkpoint: Checkpoint, chunk_bytes: int = CHUNK_BYTES) -> list[tuple[bytes, bytes]]:
    """The (key, value) records of one checkpoint: chunks first, then the manifest naming them.

    >>> cp = Checkpoint(offset=7, watermark_ms=1, parser=b"x" * 10, produced={"k": 9})
    >>> [k for k, _ in encode_records("logs", 3, cp)]
    [b'logs:3']
    >>> big = Checkpoint(offset=7, watermark_ms=1, parser=os.urandom(3000), produced={})
    >>> [k for k, _ in encode_records("logs", 3, big, chunk_bytes=1500)]
    [b'logs:3:chunk:0', b'logs:3:chunk:1', b'logs:3:chunk:2', b'logs:3']
    """
    body = zlib.compress(checkpoint.to_bytes(), 6)
    key = _key(topic, partition)
    generation = uuid.uuid4().hex
    chunks = [body[i : i + chunk_bytes] for i in range(0, len(body), chunk_bytes)] or [b""]
    manifest = {"version": 1, "generation": generation, "offset": checkpoint.offset,
                "size": len(body), "crc32": zlib.crc32(body)}  # fmt: skip
    if len(chunks) == 1:
        return [(key, orjson.dumps({**manifest, "chunks": 0}) + b"\n" + body)]
    records = [(key + f":chunk:{i}".encode(), generation.encode() + b"\n" + chunk) for i, chunk in enumerate(chunks)]
    records.append((key, orjson.dumps({**manifest, "chunks": len(chunks)}) + b"\n"))
    return records


def decode_records(topic: str, partition: int, table: dict[bytes, bytes]) -> Checkpoint | None:
    """The checkpoint of one partition from its changelog table (each key's latest value)."""
    key = _key(topic, partition)
    value = table.get(key)
    if value is None:
        return None
    head, _, inline = value.partition(b"\n")
    manifest = orjson.loads(head)
    if manifest.get("version") != 1:
        raise CheckpointError(f"{key.decode()}: unsupported checkpoint record version {manifest.get('version')!r}")
    if manifest["chunks"] == 0:
        body = inline
    else:
        parts = []
        for i in range(manifest["chunks"]):
            chunk = table.get(key + f":chunk:{i}".encode())
            generation, _, data = (chunk or b"").partition(b"\n")
            if generation.decode() != manifest["generation"]:
                raise CheckpointError(f"{key.decode()}: chunk {i} of checkpoint {manifest['generation']} is missing")
            parts.append(data)
        body = b"".join(parts)
    if len(body) != manifest["size"] or zlib.crc32(body) != manifest["crc32"]:
        raise CheckpointError(f"{key.decode()}: checkpoint body does not match its manifest (size or crc32)")
    return Checkpoint.from_bytes(zlib.decompress(body))


class CheckpointLog:
    """Checkpoints in the compacted changelog topic; consumed partition p lives in its partition p.

    `save` queues the records on the detector's producer (inside its transaction in exactly-once
    mode); `flush` waits for them, and must succeed before the offsets they belong to are
    committed. `restore` reads one changelog partition to its end.
    """

    def __init__(self, producer: Producer, reader: Consumer, changelog: str, source_topic: str,
                 restore_timeout_s: float = 60.0) -> None:  # fmt: skip
        self._producer = producer
        self._reader = reader
        self.changelog = changelog
        self._source = source_topic
        self._timeout_s = restore_timeout_s
        self._failed: list[str] = []
        self.last_bytes = 0  # size of the latest checkpoint written (compressed), for the logs

    def _delivered(self, err: KafkaError | None, msg: object) -> None:
        if err is not None:
            self._failed.append(err.str())

    def save(self, partition: int, checkpoint: Checkpoint) -> None:
        records = encode_records(self._source, partition, checkpoint)
        self.last_bytes = sum(len(v) for _, v in records)
        for key, value in records:
            while True:
                try:
                    self._producer.produce(self.changelog, value=value, key=key, partition=partition,
                                           on_delivery=self._delivered)  # fmt: skip
                    break
                except BufferError:
                    self._producer.poll(0.1)

    def flush(self, timeout_s: float) -> bool:
        """Whether every checkpoint saved so far was delivered (False: do not commit now)."""
        remaining = self._producer.flush(timeout_s)
        failed, self._failed = self._failed, []
        if failed:
            log.warning("checkpoint_not_delivered", topic=self.changelog, error=failed[0], count=len(failed))
        return remaining == 0 and not failed

    def restore(self, partition: int) -> Checkpoint | None:
        records = read_to_end(self._reader, self.changelog, [partition], self._timeout_s)
        checkpoint = decode_records(self._source, partition, latest_by_key(records))
        log.info("checkpoint_read", topic=self.changelog, partition=partition, records=len(records),
                 offset=None if checkpoint is None else checkpoint.offset)  # fmt: skip
        return checkpoint

    def close(self) -> None:
        self._reader.close()

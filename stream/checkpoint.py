"""Per-partition checkpoints taken when offsets are committed.

A checkpoint is plain data (orjson; the Drain3 state as its own serialized clusters, never a
pickle), written atomically next to the committed offset it belongs to:

- `offset`: the committed offset (the oldest line still in an open or in-flight window);
- `watermark_ms`: the partition's event-time watermark when the checkpoint was taken (for
  operators; a restart rebuilds the watermark from the lines it re-reads);
- `parser`: the template miner's snapshot, so templates keep their ids after a restart;
- `produced`: for windows already published whose lines lie at or after `offset`, the key and
  the last offset they covered. Re-read lines are not added to those keys again, so a restart
  never publishes a partial copy of a window that was already judged.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(slots=True)
class Checkpoint:
    offset: int
    watermark_ms: int
    parser: bytes
    produced: dict[str, int] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "version": 1,
                "offset": self.offset,
                "watermark_ms": self.watermark_ms,
                "parser_b64": base64.b64encode(self.parser).decode(),
                "produced": self.produced,
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

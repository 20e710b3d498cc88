"""The embedded default input: a small, deterministic HDFS-format stream for `rationanomaly demo`.

Written from the HDFS log format (not copied from any dataset): a few dozen blocks go through
allocation, replication and deletion; a handful fail the way HDFS blocks fail (a write that
raises, a replica that cannot be served), so the demo has something to find.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

_NORMAL_STEPS = (
    "{pid} INFO dfs.FSNamesystem: BLOCK* NameSystem.allocateBlock: /user/demo/part-{n:05d}. {blk}",
    "{pid} INFO dfs.DataNode$DataXceiver: Receiving block {blk} src: /10.0.{a}.{b}:{port} dest: /10.0.{a}.{b}:50010",
    "{pid} INFO dfs.DataNode$PacketResponder: PacketResponder 1 for block {blk} terminating",
    "{pid} INFO dfs.DataNode$PacketResponder: Received block {blk} of size 67108864 from /10.0.{a}.{b}",
    "{pid} INFO dfs.FSNamesystem: BLOCK* NameSystem.addStoredBlock: blockMap updated: 10.0.{a}.{b}:50010 is added to {blk} size 67108864",
)
_FAILURES = (
    "{pid} WARN dfs.DataNode$DataXceiver: 10.0.{a}.{b}:50010:Got exception while serving {blk} to /10.0.{a}.{b}:",
    "{pid} INFO dfs.DataNode$DataXceiver: writeBlock {blk} received exception java.io.IOException: Could not read from stream",
    "{pid} INFO dfs.DataNode$PacketResponder: PacketResponder {blk} 2 Exception java.io.InterruptedIOException: Interruped while waiting for IO on channel",
)


def sample_lines(blocks: int = 40, failing_every: int = 9, seed: int = 7) -> list[str]:
    """HDFS-format lines for `blocks` interleaved blocks; every `failing_every`-th block fails."""
    rng = random.Random(seed)
    clock = datetime(2008, 11, 9, 20, 35, 0)
    events: list[tuple[datetime, str]] = []
    for n in range(blocks):
        blk = f"blk_{rng.randrange(10**17, 10**18) * rng.choice((1, -1))}"
        a, b = rng.randrange(1, 250), rng.randrange(1, 250)
        start = clock + timedelta(seconds=n * 2)
        steps = list(_NORMAL_STEPS)
        if n % failing_every == failing_every - 1:
            steps.insert(3, rng.choice(_FAILURES))
        for i, step in enumerate(steps):
            text = step.format(pid=rng.randrange(10, 999), n=n, blk=blk, a=a, b=b, port=rng.randrange(40000, 60000))
            events.append((start + timedelta(seconds=i), text))
    events.sort(key=lambda e: e[0])
    return [f"{t:%y%m%d %H%M%S} {text}" for t, text in events]

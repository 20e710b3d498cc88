from __future__ import annotations

import pytest

from rationanomaly.stream.checkpoint import Checkpoint, CheckpointStore


def test_round_trip_through_the_store(tmp_path):
    store = CheckpointStore(tmp_path, "group/with:odd chars", "logs")
    cp = Checkpoint(offset=120, watermark_ms=1_226_262_918_000, parser=b"\x00drain\xff", produced={"blk_1": 130})
    store.save(3, cp)
    assert store.load(3) == cp
    assert store.load(4) is None
    # the group name cannot escape the checkpoint directory
    assert all(tmp_path in p.parents for p in tmp_path.rglob("*.json"))


def test_save_replaces_atomically(tmp_path):
    store = CheckpointStore(tmp_path, "g", "t")
    store.save(0, Checkpoint(1, 0, b"a"))
    store.save(0, Checkpoint(2, 5, b"b", {"k": 9}))
    assert store.load(0) == Checkpoint(2, 5, b"b", {"k": 9})
    assert not list(tmp_path.rglob("*.tmp"))


def test_unknown_version_is_refused():
    with pytest.raises(ValueError, match="unsupported checkpoint version"):
        Checkpoint.from_bytes(b'{"version": 99}')

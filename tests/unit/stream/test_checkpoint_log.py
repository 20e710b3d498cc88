"""Checkpoint records in the changelog topic: compressed, chunked when large, checked on restore."""

from __future__ import annotations

import os

import pytest

from rationanomaly.model.judgement import Judgement
from rationanomaly.stream.checkpoint import Checkpoint, CheckpointError, decode_records, encode_records
from rationanomaly.stream.detector_state import cache_key, decode_judgement, encode_judgement
from rationanomaly.stream.judging import TemplateCache


def _table(*batches):
    """Each key's latest value, as compaction leaves the topic."""
    table = {}
    for records in batches:
        table.update(dict(records))
    return table


def test_a_large_checkpoint_is_chunked_and_restored_whole():
    parser = os.urandom(40_000)  # incompressible: a miner near its cap looks like this to zlib
    cp = Checkpoint(offset=900, watermark_ms=5, parser=parser, produced={f"blk_{i}": 900 + i for i in range(500)})
    records = encode_records("logs", 2, cp, chunk_bytes=8_000)
    assert len(records) > 5 and all(len(v) <= 8_000 + 64 for _, v in records)
    assert records[-1][0] == b"logs:2"  # the manifest last: a reader that sees it has the chunks
    assert decode_records("logs", 2, _table(records)) == cp
    assert decode_records("logs", 3, _table(records)) is None


def test_a_newer_smaller_checkpoint_wins_over_the_chunks_left_behind():
    big = Checkpoint(1, 0, os.urandom(30_000), {})
    small = Checkpoint(2, 0, b"drain", {"blk_1": 3})
    table = _table(encode_records("t", 0, big, chunk_bytes=8_000), encode_records("t", 0, small, chunk_bytes=8_000))
    assert decode_records("t", 0, table) == small


def test_a_manifest_without_its_chunks_is_an_error_not_an_empty_state():
    cp = Checkpoint(1, 0, os.urandom(30_000), {"blk_1": 2})
    records = encode_records("t", 0, cp, chunk_bytes=8_000)
    table = _table(records)
    del table[b"t:0:chunk:1"]
    with pytest.raises(CheckpointError, match="chunk 1"):
        decode_records("t", 0, table)
    # a chunk of another checkpoint under the same key is caught by its generation
    other = _table(encode_records("t", 0, Checkpoint(9, 0, os.urandom(30_000), {}), chunk_bytes=8_000))
    table[b"t:0:chunk:1"] = other[b"t:0:chunk:1"]
    with pytest.raises(CheckpointError):
        decode_records("t", 0, table)


def test_hdfs_sized_checkpoint_is_one_small_record():
    cp = Checkpoint(20_000, 0, b'{"format":"x","clusters":[]}' * 80, {f"blk_{i}": i for i in range(50)})
    (record,) = encode_records("logs", 0, cp)
    assert len(record[1]) < len(cp.to_bytes())


def test_cache_records_keep_provenance_and_never_unknown():
    j = Judgement("abnormal", "why", None, 0.3, 1, None, 0.9, decision="rank", rationale_source="draft",
                  rationale_note="explanation failed its check")  # fmt: skip
    back = decode_judgement(encode_judgement(j))
    assert (back.label, back.rationale, back.confidence, back.decision, back.rationale_source, back.rationale_note) == (
        "abnormal", "why", 0.9, "rank", "draft", "explanation failed its check")  # fmt: skip
    assert decode_judgement(encode_judgement(Judgement("unknown", None, "timeout", 0, 1, None))) is None
    assert decode_judgement(b"not json") is None
    assert cache_key("m", "p", "t1") != cache_key("m", "p2", "t1")


def test_the_cache_shares_its_own_answers_only_and_corrections_outrank_them():
    shared = []
    cache = TemplateCache()
    cache.on_new = shared.append
    mine = Judgement("normal", None, None, 0.1, 1, None)
    theirs = Judgement("abnormal", "r", None, 0.0, 0, None)
    cache.put("t1", mine)
    cache.remember("t2", theirs)
    cache.put("t3", Judgement("unknown", None, "timeout", 1.0, 2, None))
    assert shared == [("t1", mine)]
    assert cache.get("t2") is theirs
    fix = Judgement("abnormal", "operator note", None, 0.0, 0, None, decision="operator", rationale_source="operator")
    cache.correct("t1", fix)
    assert cache.get("t1") is fix and cache.get("t2") is theirs
    cache.correct("t1", None)
    assert cache.get("t1") is mine

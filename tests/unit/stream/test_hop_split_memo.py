"""The hop's split memo: the window side of one process takes the forward side's split of a line
instead of decoding and splitting it again, and only for the very record it was made from."""

from __future__ import annotations

import io

import pytest

from rationanomaly.stream.engine import build_engine
from rationanomaly.stream.records import DeadLetter, SourceRef
from rationanomaly.stream.repartition import Rekeyer, SplitMemo
from rationanomaly.stream.settings import load_settings
from rationanomaly.stream.siem import OutputFormat
from rationanomaly.stream.sinks import JsonlSink
from tests.unit.stream.fixed_model import AlwaysNormal

BASE_MS = 1_226_260_800_000  # 2008-11-09, the HDFS logs' day


def _hop(settings, arrivals, memo: bool, batch: int = 50) -> tuple[bytes, SplitMemo | None, int]:
    """Every input record through a Rekeyer, then its copies (one per key) into a pipeline as the
    window side reads them back, `batch` records at a time as the consumer loop does. Returns the
    verdicts published (created at 0), the memo and the dead letters."""
    out = io.BytesIO()
    engine = build_engine(settings, JsonlSink(out, OutputFormat.NATIVE, None), backend=AlwaysNormal())
    pipeline = engine.pipeline
    rekeyer = Rekeyer(settings)
    shared = rekeyer.share_splits() if memo else None
    pipeline.hop_memo = shared
    own = 0
    try:
        for start in range(0, len(arrivals), batch):
            forwarded = []
            for offset in range(start, min(len(arrivals), start + batch)):
                value, key, input_ms, window_ms = arrivals[offset]
                keys = rekeyer.keys_at(value, key, offset % 3, offset, input_ms)
                if isinstance(keys, DeadLetter):
                    pipeline.dead(keys)
                    continue
                forwarded += [(value, key, window_ms, k, (offset % 3, offset)) for k in keys]
            for value, key, window_ms, window_key, upstream in forwarded:
                pipeline.feed(value, key, SourceRef("g-repartition", 0, own), window_ms, 0.0,
                              only_key=window_key, upstream=upstream)  # fmt: skip
                own += 1
            pipeline.advance(0.0)
        pipeline.finish()
        assert engine.worker.wait_idle(60)
        pipeline.publish(0)
    finally:
        engine.close()
    return out.getvalue(), shared, pipeline.dead_letters


def _arrivals(lines: list[bytes], window_ms=lambda offset, input_ms: input_ms):
    bad = [b"", b"\xff\xfe not utf-8", b"no header here blk_7", b" \r\n"]
    values = [*lines[:700], *bad, *lines[700:]]
    arrivals = []
    for offset, value in enumerate(values):
        key = None if offset % 4 else b"host-%d" % (offset % 5)
        input_ms = BASE_MS + offset * 1000
        arrivals.append((value, key, input_ms, window_ms(offset, input_ms)))
    return arrivals


def test_windows_behind_the_hop_are_the_same_with_the_forward_sides_splits(loghub_dir) -> None:
    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None}, state={"store": "local"})
    arrivals = _arrivals((loghub_dir / "HDFS_2k.log").read_bytes().splitlines())
    with_memo, memo, letters = _hop(settings, arrivals, memo=True)
    without, _, letters_without = _hop(settings, arrivals, memo=False)
    assert with_memo == without and with_memo.count(b"\n") > 100
    assert letters == letters_without == 4
    # every copy read back was the forward side's record: none split twice
    assert memo.misses == 0 and memo.hits >= 2000


def test_a_record_read_back_with_another_timestamp_is_split_afresh(loghub_dir) -> None:
    """The raw profile takes event time from the record: a memo entry used for a record whose
    timestamp differs would put the line at the wrong time and in the wrong window."""
    settings = load_settings(None, profile={"name": "raw"}, metrics={"port": None}, state={"store": "local"})

    def moved(offset: int, input_ms: int) -> int:
        return input_ms + 3_600_000 * (offset % 7 == 0)  # every 7th an hour later: other sessions

    arrivals = _arrivals((loghub_dir / "HDFS_2k.log").read_bytes().splitlines(), moved)
    with_memo, memo, _ = _hop(settings, arrivals, memo=True)
    without, _, _ = _hop(settings, arrivals, memo=False)
    assert with_memo == without
    assert memo.misses >= 250 and memo.hits >= 1500
    # and the hour moved something: the forward side's times would have given other windows
    unmoved, _, _ = _hop(settings, _arrivals((loghub_dir / "HDFS_2k.log").read_bytes().splitlines()), memo=False)
    assert unmoved != without


def test_an_entry_serves_only_its_own_record() -> None:
    memo = SplitMemo(capacity=8)
    fields = (BASE_MS, "content", None, "INFO", "dfs.DataNode", None, False)
    memo.put((1, 5), b"line", b"k", BASE_MS, fields)
    assert memo.get((1, 5), b"line", b"k", BASE_MS) is fields
    assert memo.get((1, 5), b"line", b"k", BASE_MS) is fields  # a second key's copy of the same line
    assert memo.get((1, 5), b"line!", b"k", BASE_MS) is None
    assert memo.get((1, 5), b"line", None, BASE_MS) is None
    assert memo.get((1, 5), b"line", b"k", None) is None
    assert memo.get((2, 5), b"line", b"k", BASE_MS) is None
    assert (memo.hits, memo.misses) == (2, 4)


def test_the_memo_stays_bounded_when_another_member_reads_the_lines_back() -> None:
    memo = SplitMemo(capacity=100)
    fields = (BASE_MS, "content", None, None, None, None, False)
    for offset in range(10_000):
        memo.put((0, offset), b"line", None, BASE_MS, fields)
        assert len(memo) <= 100
    assert memo.get((0, 9_999), b"line", None, BASE_MS) is fields  # the newest are kept
    assert memo.get((0, 0), b"line", None, BASE_MS) is None


@pytest.mark.parametrize("fallback", [None, "generic"])
def test_splits_are_shared_only_without_a_fallback_profile(fallback) -> None:
    """The fallback counts its lines in the splitter that split them: the window side's count
    would fall short if it took the forward side's splits."""
    rekeyer = Rekeyer(load_settings(None, profile={"name": "hdfs", "fallback": fallback}))
    memo = rekeyer.share_splits()
    assert (memo is None) == (fallback == "generic")
    assert rekeyer.share_splits() is memo  # one memo per Rekeyer

"""The repartition hop's parts without a broker: when it is needed, the keys a line goes to, the
windower taking a routed line for its one key, and the marks that drop a re-forwarded line."""

from __future__ import annotations

import re

import pytest

from rationanomaly.stream.decoding import Decoder
from rationanomaly.stream.generic import ProfileSplitter
from rationanomaly.stream.records import DeadLetter, ParsedLog, SourceRef, Template, WindowKind
from rationanomaly.stream.repartition import (
    RepartitionError,
    Rekeyer,
    UpstreamMarks,
    check_supported,
    hop_needed,
    read_headers,
    source_header,
    topic_configs,
    topic_name,
)
from rationanomaly.stream.settings import load_settings
from rationanomaly.stream.windows import MISSING_KEY, Windower, WindowSettings
from tests.unit.stream.fixed_model import AlwaysNormal

TWO_BLOCKS = b"081109 204005 35 INFO dfs.FSNamesystem: BLOCK* NameSystem.delete: blk_1 blk_-2 blk_1 is added to invalidSet"
SRC = SourceRef("logs", 2, 40)


def test_the_hop_is_on_for_sessions_and_keyed_windows_and_off_when_producers_key_by_window() -> None:
    assert hop_needed(load_settings(None, profile={"name": "hdfs"}))
    assert hop_needed(load_settings(None, profile={"name": "bgl"}, windows={"kind": "count", "key_by": "host"}))
    assert not hop_needed(load_settings(None, profile={"name": "hdfs"}, input={"keyed_by_window": True}))
    # count windows of a partition's whole stream are per partition by design
    assert not hop_needed(load_settings(None, profile={"name": "bgl"}, windows={"kind": "count"}))


def test_multi_line_events_with_the_hop_are_refused_with_the_way_out() -> None:
    with pytest.raises(RepartitionError, match="keyed_by_window"):
        check_supported(load_settings(None, profile={"name": "hadoop"}))  # multi-line events on in this profile
    check_supported(load_settings(None, profile={"name": "hdfs"}))


def test_a_line_naming_several_blocks_goes_to_each_once() -> None:
    keys = Rekeyer(load_settings(None, profile={"name": "hdfs"})).keys_at(TWO_BLOCKS, b"dfs.FSNamesystem", 2, 40, None)
    assert keys == ["blk_1", "blk_-2"]


def test_count_windows_keyed_by_component_go_by_component() -> None:
    settings = load_settings(None, profile={"name": "hdfs"}, windows={"kind": "count", "key_by": "component"})
    assert Rekeyer(settings).keys_at(TWO_BLOCKS, None, 2, 40, None) == ["dfs.FSNamesystem"]


def test_a_record_the_hop_cannot_read_is_a_dead_letter_with_its_input_position() -> None:
    rekeyer = Rekeyer(load_settings(None, profile={"name": "hdfs"}, input={"topic": SRC.topic}))
    letter = rekeyer.keys_at(b"\xff\xfe not utf-8", None, SRC.partition, SRC.offset, None)
    assert isinstance(letter, DeadLetter) and letter.source == SRC and letter.stage == "decode"
    unsplit = rekeyer.keys_at(b"no header here", None, SRC.partition, SRC.offset, None)
    assert isinstance(unsplit, DeadLetter) and unsplit.stage == "profile"


@pytest.mark.parametrize(
    ("profile", "windows", "fallback"),
    [("hdfs", {}, None), ("bgl", {"kind": "count", "key_by": "host"}, None),
     ("hdfs", {"kind": "count", "key_by": "component"}, "generic")],  # fmt: skip
)
def test_keys_at_routes_every_line_as_the_record_path_does(loghub_dir, profile, windows, fallback) -> None:
    """The hot path's keys (plain fields, no LogRecord/Header) against the records' own decode and
    split, line by line and dead letter by dead letter, on a real log with bad records mixed in."""
    settings = load_settings(
        None, profile={"name": profile, "fallback": fallback}, windows=windows, input={"topic": "logs"}
    )
    rekeyer = Rekeyer(settings)
    decoder, splitter = Decoder(settings.input.decode), ProfileSplitter(settings.profile)
    lines = (loghub_dir / f"{profile.upper()}_2k.log").read_bytes().splitlines()
    values = [*lines, b"", b"\xff\xfe not utf-8", b"no header here blk_7", b" \r\n", b"x" * 70_000]
    letters = 0
    for offset, value in enumerate(values):
        key = None if offset % 3 else b"host-%d" % (offset % 5)
        source = SourceRef("logs", 4, offset)
        record = decoder.decode(value, key, source, 1_700_000_000_000)
        header = record if isinstance(record, DeadLetter) else splitter.split(record)
        if isinstance(header, DeadLetter):
            expected = header
            letters += 1
        elif rekeyer._session:  # noqa: SLF001
            found = re.findall(settings.windows.key_pattern, header.content)
            expected = list(dict.fromkeys(found))
        else:
            expected = [(header.host if settings.windows.key_by == "host" else header.component) or MISSING_KEY]
        assert rekeyer.keys_at(value, key, 4, offset, 1_700_000_000_000) == expected
    assert letters >= 4


def test_headers_carry_the_input_key_and_position() -> None:
    headers = [("rationanomaly.source", source_header(5, 1234)), ("rationanomaly.key", b"host-a")]
    assert read_headers(headers) == (b"host-a", (5, 1234))
    assert read_headers(None) == (None, None)


def test_the_topic_is_named_after_the_group_and_never_compacted() -> None:
    assert topic_name("detectors") == "detectors-repartition"
    configs = topic_configs(3_600_000)
    assert configs["cleanup.policy"] == "delete" and configs["retention.ms"] == "3600000"
    assert configs["message.timestamp.type"] == "CreateTime"


def test_a_routed_line_joins_only_the_window_of_its_key() -> None:
    w = Windower(WindowSettings(kind=WindowKind.SESSION, key_pattern=r"blk_-?\d+"))
    line = ParsedLog(source=SourceRef("g-repartition", 0, 7), event_time_ms=1000, content=TWO_BLOCKS.decode(),
                     template=Template("t", "x"))  # fmt: skip
    w.add(line, only_key="blk_-2")
    (window,) = w.flush()
    assert window.key == "blk_-2" and window.lines == 1
    # a key the line does not name: the line joins nothing (never a window of another key)
    w.add(line, only_key="blk_9")
    assert w.flush() == [] and w.stats.unkeyed == 1


def test_marks_drop_the_copies_a_re_read_input_partition_forwards_again() -> None:
    marks = UpstreamMarks()
    taken = [marks.take(own, (0, up), "blk_1") for own, up in enumerate([10, 11, 12])]
    # input partition 0 is re-read from offset 11 by its next owner: 11 and 12 come again
    again = [marks.take(own, (0, up), "blk_1") for own, up in zip([3, 4, 5], [11, 12, 13])]
    assert taken == [True, True, True] and again == [False, False, True] and marks.repeats == 2
    # another input partition has its own order
    assert marks.take(6, (1, 5), "blk_1")


def test_one_line_naming_two_keys_on_one_partition_counts_for_both_but_once_each() -> None:
    marks = UpstreamMarks()
    assert marks.take(0, (3, 100), "blk_1") and marks.take(1, (3, 100), "blk_2")
    assert not marks.take(2, (3, 100), "blk_1") and not marks.take(3, (3, 100), "blk_2")


def test_marks_kept_below_the_commit_restore_what_a_restart_does_not_re_read() -> None:
    marks = UpstreamMarks()
    for own, up in enumerate([10, 11, 12, 13]):
        marks.take(own, (0, up), "k")
    # the repartition partition commits at own offset 2: records 2 and 3 will be read again
    saved = marks.below(2)
    assert saved == {"0": [11, ["k"]]}
    restored = UpstreamMarks.restore(saved)
    # re-read from the commit: the originals at input offsets 12 and 13 are taken again ...
    assert restored.take(2, (0, 12), "k") and restored.take(3, (0, 13), "k")
    # ... and copies forwarded after a crash of the input's owner are dropped, below or above the commit
    assert not restored.take(4, (0, 11), "k") and not restored.take(5, (0, 13), "k")


# -- a revoked partition publishes nothing more ----------------------------------------------------
def test_a_revoked_partition_never_publishes_its_windows_still_with_the_model(tmp_path) -> None:
    import io

    from rationanomaly.stream.engine import build_engine
    from rationanomaly.stream.siem import OutputFormat
    from rationanomaly.stream.sinks import JsonlSink

    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None}, state={"store": "local"})
    out = io.BytesIO()
    engine = build_engine(settings, JsonlSink(out, OutputFormat.NATIVE, None), backend=AlwaysNormal())
    pipeline = engine.pipeline
    try:
        for partition in (0, 1):
            for offset in range(3):
                line = f"081109 2035{offset:02d} 35 INFO dfs.FSNamesystem: BLOCK* allocateBlock: blk_{partition}".encode()
                pipeline.feed(line, None, SourceRef("g-repartition", partition, offset), None, 0.0)
        pipeline.finish()  # both windows closed and handed to the model
        assert pipeline.in_flight == 2
        pipeline.drop(0)  # partition 0 revoked while its window is with the model
        assert engine.worker.wait_idle(30)
        pipeline.publish(0)
    finally:
        engine.close()
    published = [line for line in out.getvalue().splitlines() if line]
    assert len(published) == 1 and b'"blk_1"' in published[0]
    assert pipeline.in_flight == 0 and pipeline.committable(0) is None and pipeline.committable(1) == 3


def test_behind_the_hop_a_lagging_input_partition_holds_the_watermark_back(tmp_path) -> None:
    """One input partition read an hour ahead of another must not close the other's windows
    before their lines arrive: the watermark is the least of the input partitions' times."""
    import io

    import orjson

    from rationanomaly.stream.engine import build_engine
    from rationanomaly.stream.siem import OutputFormat
    from rationanomaly.stream.sinks import JsonlSink

    def line(hhmmss: str, block: str) -> bytes:
        return f"081109 {hhmmss} 35 INFO dfs.FSNamesystem: BLOCK* allocateBlock: {block}".encode()

    arrivals = [  # (input partition, line) in the order the window partition receives them
        (0, line("200000", "blk_1")),
        (0, line("210000", "blk_2")),  # input partition 0 is an hour ahead
        (1, line("200000", "blk_3")),
        (1, line("200001", "blk_3")),  # one second later: the same session
        (1, line("200002", "blk_1")),
    ]
    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None}, state={"store": "local"})
    out = io.BytesIO()
    engine = build_engine(settings, JsonlSink(out, OutputFormat.NATIVE, None), backend=AlwaysNormal())
    pipeline = engine.pipeline
    pipeline.upstream_partitions = 2
    try:
        for offset, (upstream, value) in enumerate(arrivals):
            block = value.rsplit(b" ", 1)[1].decode()
            pipeline.feed(value, None, SourceRef("g-repartition", 0, offset), None, 0.0,
                          only_key=block, upstream=(upstream, offset))  # fmt: skip
            pipeline.advance(0.0)
        assert pipeline.windows == 0  # input partition 1 is still at 20:00:02
        pipeline.feed(line("210001", "blk_4"), None, SourceRef("g-repartition", 0, 5), None, 0.0,
                      only_key="blk_4", upstream=(1, 5))  # fmt: skip
        pipeline.advance(0.0)  # both input partitions past 20:05:02: blk_1 and blk_3 close
        assert pipeline.windows == 2
        pipeline.finish()
        assert engine.worker.wait_idle(30)
        pipeline.publish(0)
    finally:
        engine.close()
    windows = {v["window"]["key"]: v["window"]["lines"] for v in map(orjson.loads, out.getvalue().splitlines())}
    assert windows == {"blk_1": 2, "blk_2": 1, "blk_3": 2, "blk_4": 1}


def test_behind_the_hop_an_input_partition_gone_quiet_stops_holding_the_watermark(tmp_path) -> None:
    import io

    from rationanomaly.stream.engine import build_engine
    from rationanomaly.stream.siem import OutputFormat
    from rationanomaly.stream.sinks import JsonlSink

    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None}, state={"store": "local"},
                             input={"idle_timeout_s": 30})  # fmt: skip
    engine = build_engine(settings, JsonlSink(io.BytesIO(), OutputFormat.NATIVE, None), backend=AlwaysNormal())
    pipeline = engine.pipeline
    pipeline.upstream_partitions = 3  # input partition 2 never sends a line
    try:
        feed = [(1, "200000", "blk_9", 0.0), (0, "200000", "blk_5", 0.0), (0, "210000", "blk_6", 20.0)]
        for offset, (upstream, hhmmss, block, now) in enumerate(feed):
            value = f"081109 {hhmmss} 35 INFO dfs.FSNamesystem: BLOCK* allocateBlock: {block}".encode()
            pipeline.feed(value, None, SourceRef("g-repartition", 0, offset), None, now, only_key=block, upstream=(upstream, offset))
        pipeline.advance(20.0)
        assert pipeline.windows == 0  # input partition 1 (20:00:00) holds it back
        pipeline.advance(31.0)  # 31 s without a line from input partition 1: it stops holding
        assert pipeline.windows == 2
    finally:
        engine.close()

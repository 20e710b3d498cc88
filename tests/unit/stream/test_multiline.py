"""Multi-line events: a Python traceback is one event for parsing and windows, and a commit never
lands inside an event."""

from __future__ import annotations

import doctest
import io

import orjson
import pytest

from rationanomaly.stream import multiline
from rationanomaly.stream.engine import build_engine
from rationanomaly.stream.multiline import LineJoiner, MultilineSettings
from rationanomaly.stream.profiles import BUILTIN_PROFILES
from rationanomaly.stream.records import LogRecord, SourceRef
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings
from rationanomaly.stream.sinks import JsonlSink
from tests.unit.stream.test_replay import KeywordBackend
from tests.unit.stream.traceback_sample import PROFILE, WINDOWS, traceback_log

JAVA = [
    "2015-10-18 18:05:56,570 WARN [main] org.apache.hadoop.hdfs.DFSClient: DataStreamer Exception",
    "java.io.IOException: Bad connect ack with firstBadLink as 10.0.0.5:50010",
    "\tat org.apache.hadoop.hdfs.DFSOutputStream.createBlockOutputStream(DFSOutputStream.java:1460)",
    "\t... 3 more",
    "Caused by: java.net.ConnectException: Connection refused",
    "\tat sun.nio.ch.SocketChannelImpl.checkConnect(Native Method)",
    "2015-10-18 18:05:57,001 INFO [main] org.apache.hadoop.mapred.Task: Task done",
]


def test_doctests() -> None:
    assert doctest.testmod(multiline).failed == 0


def records(lines: list[str]) -> list[LogRecord]:
    return [LogRecord(SourceRef("logs", 0, i), line) for i, line in enumerate(lines)]


def test_java_trace_joins_its_head_and_names_the_innermost_exception() -> None:
    joiner = LineJoiner(BUILTIN_PROFILES["hadoop"].multiline)
    done = [e for r in records(JAVA) if (e := joiner.push(r, 0.0)) is not None]
    assert len(done) == 1 and joiner.pending_first == 6
    trace = done[0]
    assert (trace.head.source.offset, trace.last_offset, trace.line_count) == (0, 5, 6)
    assert trace.exception == "java.net.ConnectException"
    assert joiner.flush().lines == (JAVA[6],)


def test_start_pattern_caps_and_flush_timeout() -> None:
    rule = MultilineSettings(start_pattern=r"^\d{4}-", max_lines=3, max_bytes=1000, flush_timeout_s=5.0)
    joiner = LineJoiner(rule)
    lines = ["2024-01-01 head"] + [f"  more {i}" for i in range(5)]
    for r in records(lines):
        assert joiner.push(r, 1.0) is None
    assert joiner.expire(5.9) is None  # 4.9 s since the last line
    event = joiner.expire(6.0)
    assert event.line_count == 6 and event.last_offset == 5  # every line belongs to it...
    assert len(event.lines) == 3  # ...but text stops at max_lines
    assert joiner.pending_first is None


@pytest.mark.parametrize("kwargs", [{}, {"preset": "stack_traces", "start_pattern": "x"}, {"start_pattern": "("}])
def test_multiline_settings_say_what_to_fix(kwargs) -> None:
    with pytest.raises(ValueError, match="multiline"):
        MultilineSettings(**kwargs)


def test_traceback_is_one_event_through_replay(tmp_path) -> None:
    lines, events, failed = traceback_log()
    log = tmp_path / "nova-compute.log"
    log.write_text("\n".join(lines) + "\n")
    settings = load_settings(None, metrics={"port": None}, profile=PROFILE, windows=WINDOWS)
    out = io.BytesIO()
    summary = replay_files([log], settings, out, backend=KeywordBackend(), progress=False)
    assert summary.lines == len(lines) and summary.dead_letters == 0
    verdicts = [orjson.loads(v) for v in out.getvalue().splitlines()]
    assert sum(v["window"]["lines"] for v in verdicts) == events  # events, not lines
    texts = {t["text"] for v in verdicts for t in v["templates"]}
    assert not any("File" in t or "Traceback" in t for t in texts)  # no frame became a template
    for v in verdicts:
        key = v["window"]["key"]
        spawn = [t["text"] for t in v["templates"] if "failed to spawn" in t["text"]]
        if key in failed:
            # the head line with the innermost exception's class kept
            assert len(spawn) == 1 and spawn[0].startswith(f"{failed[key]}: [instance: <UUID>]"), spawn
        else:
            assert not spawn


def test_a_commit_never_lands_inside_an_event() -> None:
    lines, _, _ = traceback_log(instances=3)
    settings = load_settings(None, metrics={"port": None}, profile=PROFILE, windows=WINDOWS)
    engine = build_engine(settings, JsonlSink(io.BytesIO(), settings.output.format, None), backend=KeywordBackend())
    try:
        pipeline = engine.pipeline
        heads = [i for i, line in enumerate(lines) if line.startswith("2017-")]
        for offset, line in enumerate(lines):
            pipeline.feed(line.encode(), None, SourceRef("logs", 0, offset), None, 0.0)
            committable = pipeline.committable(0)
            # at most the head of the event still being joined (open windows may hold less)
            head = max(h for h in heads if h <= offset)
            assert committable is not None and committable <= head
    finally:
        engine.close()

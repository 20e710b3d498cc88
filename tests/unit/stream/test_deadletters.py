"""Dead letters logged as summaries, and a log without timestamps replayed on the file clock."""

from __future__ import annotations

import doctest
import io
import os

import orjson
from structlog.testing import capture_logs

from rationanomaly.stream import deadletters
from rationanomaly.stream.deadletters import DeadLetterLog
from rationanomaly.stream.records import DeadLetter, SourceRef
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings
from tests.unit.stream.test_replay import KeywordBackend


def test_doctests() -> None:
    assert doctest.testmod(deadletters).failed == 0


def letter(offset: int, error: str, stage: str = "profile") -> DeadLetter:
    return DeadLetter(SourceRef("logs", 0, offset), stage, error, b"x")


def test_a_burst_logs_the_first_letter_then_one_summary_per_interval() -> None:
    now = [0.0]
    dlq = DeadLetterLog(interval_s=30.0, clock=lambda: now[0])
    with capture_logs() as logs:
        for i in range(1000):
            dlq.add(letter(i, f"timestamp '0811{i:02d}' does not fit '%y%m%d' (profile 'hdfs')"))
            dlq.add(letter(i, f"record of {70_000 + i} bytes exceeds max_line_bytes=65536", "decode"))
            now[0] += 0.01  # 10 s in all: within one interval
        dlq.tick()  # nothing due yet
        now[0] += 30.0
        dlq.tick()
        dlq.flush()  # nothing left: no line
    assert [e["event"] for e in logs] == ["dead_letters", "dead_letters"]
    first, summary = logs
    assert first["count"] == 1 and first["total"] == 1
    assert summary["count"] == 1999 and summary["total"] == 2000
    kinds = {(k["stage"], k["error"]): k for k in summary["by_error"]}
    assert kinds[("profile", "timestamp '…' does not fit '…' (profile '…')")]["count"] == 999
    assert kinds[("decode", "record of N bytes exceeds max_line_bytes=N")]["count"] == 1000
    assert all(len(k["examples"]) == 3 for k in summary["by_error"])
    assert "logs[0]@0: record of 70000 bytes" in kinds[("decode", "record of N bytes exceeds max_line_bytes=N")]["examples"][0]


def test_a_replay_full_of_bad_lines_logs_a_few_summaries(tmp_path) -> None:
    log = tmp_path / "not-hdfs.log"
    log.write_text("".join(f"some other format line {i}\n" for i in range(5000)))
    settings = load_settings(None, metrics={"port": None}, profile={"name": "hdfs"})
    with capture_logs() as logs:
        summary = replay_files([log], settings, io.BytesIO(), dlq_path=tmp_path / "o.dlq.jsonl", backend=KeywordBackend(), progress=False)
    assert summary.dead_letters == 5000
    assert len((tmp_path / "o.dlq.jsonl").read_text().splitlines()) == 5000  # every letter kept in full
    summaries = [e for e in logs if e["event"] == "dead_letters"]
    assert 1 <= len(summaries) <= 3
    assert sum(e["count"] for e in summaries) == 5000


def test_a_log_without_timestamps_replays_in_file_order_on_the_file_clock(tmp_path) -> None:
    log = tmp_path / "plain.log"
    log.write_text("".join(f"worker {i % 3} finished job {i}\n" for i in range(250)))
    mtime_s = 1_700_000_000
    os.utime(log, (mtime_s, mtime_s))
    for profile in ("raw", "generic"):
        settings = load_settings(
            None, metrics={"port": None}, profile={"name": profile}, windows={"kind": "count", "count": 100}
        )
        out = io.BytesIO()
        with capture_logs() as logs:
            summary = replay_files([log], settings, out, backend=KeywordBackend(), progress=False)
        assert summary.dead_letters == 0 and summary.lines == 250
        verdicts = sorted((orjson.loads(v) for v in out.getvalue().splitlines()), key=lambda v: v["window"]["start_ms"])
        spans = [(v["window"]["start_ms"] - mtime_s * 1000, v["window"]["end_ms"] - mtime_s * 1000) for v in verdicts]
        assert spans == [(0, 99), (100, 199), (200, 249)]  # line n at mtime + n ms
        warnings = [e for e in logs if e["event"] == "event_time_from_record"]
        assert len(warnings) == 1 and "line number" in warnings[0]["detail"]

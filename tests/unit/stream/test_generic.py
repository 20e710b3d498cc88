"""The generic profile: a timestamp and a level near the start of any line; the fallback for a
topic that mixes formats."""

from __future__ import annotations

from pathlib import Path

import pytest

from rationanomaly.stream.generic import GenericHeaderParser, ProfileSplitter
from rationanomaly.stream.profiles import ProfileSettings
from rationanomaly.stream.records import DeadLetter, Header, LogRecord, SourceRef

SRC = SourceRef("logs", 0, 3)
KAFKA_MS = 1_700_000_000_000


def split(line: str, **record) -> Header | DeadLetter:
    return GenericHeaderParser(default_year=2024).split(LogRecord(SRC, line, **record))


@pytest.mark.parametrize(
    ("line", "event_ms", "level", "component", "content"),
    [
        ("2015-10-18 18:01:47,978 INFO [main] org.apache.X: Created MRAppMaster", 1_445_191_307_978, "INFO", None, "[main] org.apache.X: Created MRAppMaster"),
        ("081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating", 1_226_262_975_000, "INFO", "dfs.DataNode$PacketResponder", "PacketResponder 1 terminating"),
        ("[Sun Dec 04 04:47:44 2005] [error] mod_jk child workerEnv in error state 6", 1_133_671_664_000, "ERROR", None, "mod_jk child workerEnv in error state 6"),
        ("2024-03-01T10:00:00Z app[web.1]: WARN: disk 91% full", 1_709_287_200_000, "WARN", None, "disk 91% full"),
        # no year in the line: the record's (2023)
        ("Jun 14 15:16:01 combo sshd(pam_unix)[19939]: authentication failure", 1_686_755_761_000, None, None, "combo sshd(pam_unix)[19939]: authentication failure"),
        ("ERROR nova.compute.manager Traceback (most recent call last):", KAFKA_MS, "ERROR", None, "nova.compute.manager Traceback (most recent call last):"),
        ("just words, an error somewhere in them", KAFKA_MS, None, None, "just words, an error somewhere in them"),
        ("nova-api.log.1.2017-05-16_13:53:08 2017-05-16 00:00:00.008 25746 INFO nova.osapi.server [req-1] GET /", 1_494_892_800_008, "INFO", None, "nova.osapi.server [req-1] GET /"),
    ],
)
def test_generic_finds_time_and_level_near_the_start(line, event_ms, level, component, content) -> None:
    out = split(line, timestamp_ms=KAFKA_MS)
    assert isinstance(out, Header)
    assert (out.event_time_ms, out.level, out.component, out.content) == (event_ms, level, component, content)
    assert out.time_from_record == (event_ms == KAFKA_MS)


def test_a_year_less_timestamp_takes_the_record_year() -> None:
    out = split("Jun 14 15:16:01 combo sshd[1]: x", timestamp_ms=1_118_700_000_000)  # a 2005 record
    assert out.event_time_ms == 1_118_762_161_000


def test_no_time_anywhere_is_a_dead_letter_that_says_so() -> None:
    out = split("no timestamp and no record time")
    assert isinstance(out, DeadLetter) and out.stage == "profile" and "no event time" in out.error


def test_generic_splits_every_loghub_sample(loghub_dir: Path) -> None:
    parser = GenericHeaderParser()
    for path in sorted(loghub_dir.glob("*_2k.log")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        headers = [parser.split(LogRecord(SRC, line)) for line in lines if line.strip()]
        dead = [h for h in headers if isinstance(h, DeadLetter)]
        # no record time is given: each line must carry a time the generic profile can read
        assert len(dead) <= 0.01 * len(headers), (path.name, dead[:2])
        assert all(h.content.strip() for h in headers if isinstance(h, Header))


def test_fallback_keeps_mixed_lines_out_of_the_dead_letter_queue() -> None:
    hdfs_line = "081109 203615 148 INFO dfs.DataNode$PacketResponder: PacketResponder 1 terminating"
    other = "2024-03-01 10:00:00,123 ERROR [worker-3] billing: charge failed for order 42"
    strict = ProfileSplitter(ProfileSettings(name="hdfs"))
    forgiving = ProfileSplitter(ProfileSettings(name="hdfs", fallback="generic"))
    for splitter in (strict, forgiving):
        assert splitter.split(LogRecord(SRC, hdfs_line)).component == "dfs.DataNode$PacketResponder"
    assert isinstance(strict.split(LogRecord(SRC, other)), DeadLetter)
    out = forgiving.split(LogRecord(SRC, other))
    assert isinstance(out, Header) and (out.level, out.event_time_ms) == ("ERROR", 1_709_287_200_123)
    assert forgiving.fallbacks == 1 and strict.fallbacks == 0


def test_the_generic_profile_by_name() -> None:
    splitter = ProfileSplitter(ProfileSettings(name="generic"))
    out = splitter.split(LogRecord(SRC, "2024-03-01 10:00:00 WARN low disk"))
    assert (out.level, out.content) == ("WARN", "low disk")

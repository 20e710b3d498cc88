from __future__ import annotations

import csv
import doctest
from pathlib import Path

import pytest

from rationanomaly.stream import profiles
from rationanomaly.stream.decoding import Decoder, DecodeSettings
from rationanomaly.stream.profiles import (
    BUILTIN_PROFILES,
    FormatProfile,
    HeaderParser,
    ProfileSettings,
    TimestampReader,
    resolve_profile,
)
from rationanomaly.stream.records import DeadLetter, Header, LogRecord, SourceRef

SRC = SourceRef("logs", 0, 7)

# profile -> (loghub file stem, {our field: loghub structured-CSV column}, first line's event time)
SAMPLES = {
    "hdfs": ("HDFS", {"Date": "Date", "Time": "Time", "Pid": "Pid", "Level": "Level", "Component": "Component"}, 1_226_262_975_000),
    "bgl": ("BGL", {"Label": "Label", "Timestamp": "Timestamp", "Node": "Node", "Level": "Level", "Component": "Component"}, 1_117_838_570_000),
    "thunderbird": ("Thunderbird", {"Label": "Label", "Node": "User", "Location": "Location", "Component": "Component", "Pid": "PID"}, 1_131_566_461_000),
    "openssh": ("OpenSSH", {"Month": "Date", "Day": "Day", "Time": "Time", "Host": "Component", "Pid": "Pid"}, 1_512_888_946_000),
    "linux": ("Linux", {"Month": "Month", "Day": "Date", "Time": "Time", "Host": "Level", "Component": "Component", "Pid": "PID"}, 1_118_762_161_000),
    "zookeeper": ("Zookeeper", {"Date": "Date", "Time": "Time", "Level": "Level", "Node": "Node", "Component": "Component", "Id": "Id"}, 1_438_191_704_747),
    "hadoop": ("Hadoop", {"Date": "Date", "Time": "Time", "Level": "Level", "Process": "Process", "Component": "Component"}, 1_445_191_307_978),
    "spark": ("Spark", {"Date": "Date", "Time": "Time", "Level": "Level", "Component": "Component"}, 1_497_039_040_000),
    "openstack": ("OpenStack", {"Logrecord": "Logrecord", "Date": "Date", "Time": "Time", "Pid": "Pid", "Level": "Level", "Component": "Component", "ADDR": "ADDR"}, 1_494_892_800_008),
    "android": ("Android", {"Date": "Date", "Time": "Time", "Pid": "Pid", "Tid": "Tid", "Level": "Level", "Component": "Component"}, 1_489_767_218_811),
    "apache": ("Apache", {"Level": "Level"}, 1_133_671_664_000),
    "hpc": ("HPC", {"LogId": "LogId", "Node": "Node", "Component": "Component", "State": "State", "Timestamp": "Time", "Flag": "Flag"}, 1_077_804_742_000),
    "healthapp": ("HealthApp", {"Timestamp": "Time", "Component": "Component", "Pid": "Pid"}, 1_514_067_329_606),
    "mac": ("Mac", {"Month": "Month", "Day": "Date", "Time": "Time", "Host": "User", "Component": "Component", "Pid": "PID", "Address": "Address"}, 1_498_899_655_000),
    "proxifier": ("Proxifier", {"Program": "Program"}, 1_477_846_146_000),
    "windows": ("Windows", {"Date": "Date", "Time": "Time", "Level": "Level", "Component": "Component"}, 1_475_037_030_000),
}
# Dead letters each sample produces. With loghub's formats every line of the sixteen 2k samples
# splits (loghub's own parser accepts them all too); odd lines are covered synthetically below.
EXPECTED_DEAD = dict.fromkeys(SAMPLES, 0)


def test_doctests() -> None:
    assert doctest.testmod(profiles).failed == 0


def _records(path: Path) -> list[LogRecord]:
    decoder = Decoder(DecodeSettings())
    out = []
    for i, value in enumerate(path.read_bytes().split(b"\n")):
        if value:
            rec = decoder.decode(value, None, SourceRef("replay", 0, i), None)
            assert isinstance(rec, LogRecord)
            out.append(rec)
    return out


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_builtin_profile_splits_its_loghub_sample(name: str, loghub_dir: Path) -> None:
    stem, columns, first_ms = SAMPLES[name]
    records = _records(loghub_dir / f"{stem}_2k.log")
    assert len(records) == 2000
    parser = HeaderParser(BUILTIN_PROFILES[name])
    headers = [parser.split(r) for r in records]
    dead = [h for h in headers if isinstance(h, DeadLetter)]
    assert len(dead) == EXPECTED_DEAD[name]
    assert headers[0].event_time_ms == first_ms

    with (loghub_dir / f"{stem}_2k.log_structured.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    regex = profiles.compile_log_format(BUILTIN_PROFILES[name].log_format)
    for record, header, row in zip(records, headers, rows, strict=True):
        assert header.content == row["Content"].strip(), row["LineId"]
        fields = regex.fullmatch(record.line).groupdict()
        for ours, theirs in columns.items():
            assert (fields[ours] or "") == row[theirs], (row["LineId"], ours)


def test_bgl_ground_truth_from_label_column(loghub_dir: Path) -> None:
    parser = HeaderParser(BUILTIN_PROFILES["bgl"])
    headers = [parser.split(r) for r in _records(loghub_dir / "BGL_2k.log")]
    labels = [h.ground_truth for h in headers]
    assert labels.count("abnormal") == 143  # the README's count of alert lines
    assert labels.count("normal") == 1857


def test_header_fields_of_one_line() -> None:
    parser = HeaderParser(BUILTIN_PROFILES["thunderbird"])
    line = "KERNDTLB 1131566461 2005.11.09 tbird-sm1 Nov 9 12:01:01 src@tbird-sm1 kernel: 1 CPU(s) online"
    header = parser.split(LogRecord(SRC, line))
    assert header == Header(
        event_time_ms=1_131_566_461_000,
        content="1 CPU(s) online",
        host="tbird-sm1",
        level=None,
        component="kernel",
        ground_truth="abnormal",
    )


def test_odd_line_is_a_dead_letter_not_a_crash() -> None:
    parser = HeaderParser(BUILTIN_PROFILES["hdfs"])
    out = parser.split(LogRecord(SRC, "java.lang.NullPointerException", key="k"))
    assert isinstance(out, DeadLetter)
    assert out.stage == "profile" and "does not match profile 'hdfs'" in out.error
    assert out.value == b"java.lang.NullPointerException" and out.key == b"k" and out.source == SRC


def test_bad_timestamp_is_a_dead_letter() -> None:
    parser = HeaderParser(BUILTIN_PROFILES["hdfs"])
    out = parser.split(LogRecord(SRC, "081399 253615 148 INFO dfs.DataNode: x"))
    assert isinstance(out, DeadLetter) and "timestamp '081399 253615'" in out.error


def test_surrounding_blanks_and_multiline_content() -> None:
    parser = HeaderParser(BUILTIN_PROFILES["spark"])
    out = parser.split(LogRecord(SRC, "  17/06/09 20:10:40 INFO spark.X: first\n  at second  \t"))
    assert isinstance(out, Header) and out.content == "first\n  at second"


def test_raw_profile_time_falls_back_to_envelope_then_record() -> None:
    parser = HeaderParser(BUILTIN_PROFILES["raw"])
    both = parser.split(LogRecord(SRC, " a b ", timestamp_ms=5, event_time_ms=9, host="h"))
    assert both == Header(event_time_ms=9, content="a b", host="h")
    kafka_only = parser.split(LogRecord(SRC, "a", timestamp_ms=5))
    assert isinstance(kafka_only, Header) and kafka_only.event_time_ms == 5
    none = parser.split(LogRecord(SRC, "a"))
    assert isinstance(none, DeadLetter) and "no event time" in none.error


def test_profile_time_wins_over_envelope_and_host_falls_back() -> None:
    parser = HeaderParser(BUILTIN_PROFILES["hdfs"])
    rec = LogRecord(SRC, "081109 203615 148 INFO dfs.DataNode: x", timestamp_ms=1, event_time_ms=2, host="shipper-host")
    header = parser.split(rec)
    assert isinstance(header, Header)
    assert header.event_time_ms == 1_226_262_975_000 and header.host == "shipper-host"


def test_default_year_allows_feb_29_and_zones_apply() -> None:
    reader = TimestampReader("%b %d %H:%M:%S", "Europe/Paris", default_year=2016)
    assert reader.read("Feb 29 01:00:00") == 1_456_704_000_000  # 2016-02-29T00:00:00Z
    utc = TimestampReader("iso8601")
    assert utc.read("2016-02-29 00:00:00") == 1_456_704_000_000
    assert utc.read("2016-02-29T01:00:00+01:00") == 1_456_704_000_000
    assert TimestampReader("epoch_ms").read("1456704000123") == 1_456_704_000_123
    assert TimestampReader("epoch_s").read("1456704000.5") == 1_456_704_000_500


def test_custom_profile_through_settings() -> None:
    settings = ProfileSettings.model_validate(
        {
            "name": "myapp",
            "custom": {
                "name": "myapp",
                "log_format": r"<Time> \[<Level>\] <Host> <Content>",
                "timestamp_fields": ["Time"],
                "timestamp_format": "iso8601",
                "level_field": "Level",
                "host_field": "Host",
            },
        }
    )
    profile = resolve_profile(settings)
    out = HeaderParser(profile).split(LogRecord(SRC, "2024-01-01T00:00:00Z [WARN] web-1 disk 91% full"))
    assert out == Header(event_time_ms=1_704_067_200_000, content="disk 91% full", host="web-1", level="WARN")


def test_builtin_resolution() -> None:
    assert resolve_profile(ProfileSettings()) is BUILTIN_PROFILES["hdfs"]
    assert resolve_profile(ProfileSettings(name="bgl")).label_field == "Label"
    assert {"hdfs", "bgl", "thunderbird", "openssh", "linux", "zookeeper", "hadoop", "spark", "openstack", "raw"} <= set(
        BUILTIN_PROFILES
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"log_format": "<A> <Content>", "host_field": "Host"}, "host_field='Host' is not a <Field>"),
        ({"log_format": "<A> <A> <Content>"}, "names a field twice"),
        ({"log_format": "<A-b> <Content>"}, "must be a name"),
        ({"log_format": "<A> <Content>", "timestamp_fields": ("A",)}, "set both timestamp_fields"),
        ({"log_format": "<A> <Content>", "timestamp_fields": ("A",), "timestamp_format": "%H:%M"}, "set default_year"),
        ({"log_format": "<A> <Content>", "timezone": "Mars/Olympus"}, "not an IANA zone"),
        ({"log_format": "(<A> <Content>"}, "not a valid pattern"),
        ({"log_format": "<A> <B>"}, "content_field='Content'"),
    ],
)
def test_profile_validation_says_what_to_fix(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        FormatProfile(name="x", **kwargs)
    assert fragment in str(info.value)


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        ProfileSettings(name="nope")
    custom = FormatProfile(name="mine", log_format="<Content>")
    with pytest.raises(ValueError, match="set profile.name to the custom profile's name"):
        ProfileSettings(name="hdfs", custom=custom)
    with pytest.raises(ValueError):
        ProfileSettings(name="hdfs", colour="red")


def test_host_falls_back_to_the_envelope_then_the_record_key() -> None:
    parser = HeaderParser(resolve_profile(ProfileSettings(name="hdfs")))  # HDFS lines name no host
    line = "081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1"
    src = SourceRef("logs", 0, 0)
    keyed = parser.split(LogRecord(source=src, line=line, key="datanode-7"))
    enveloped = parser.split(LogRecord(source=src, line=line, key="datanode-7", host="dn7.example"))
    bare = parser.split(LogRecord(source=src, line=line))
    assert isinstance(keyed, Header) and keyed.host == "datanode-7"
    assert isinstance(enveloped, Header) and enveloped.host == "dn7.example"
    assert isinstance(bare, Header) and bare.host is None

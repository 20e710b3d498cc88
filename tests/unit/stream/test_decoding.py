from __future__ import annotations

import doctest

import orjson
import pytest

from rationanomaly.stream import decoding
from rationanomaly.stream.decoding import Decoder, DecodeSettings, TimestampError, epoch_ms
from rationanomaly.stream.records import DeadLetter, LogRecord, SourceRef

SRC = SourceRef("logs", 3, 42)


def text_decoder(**kw) -> Decoder:
    return Decoder(DecodeSettings(**kw))


def json_decoder(**kw) -> Decoder:
    return Decoder(DecodeSettings(format="json", **kw))


def test_doctests() -> None:
    assert doctest.testmod(decoding).failed == 0


def test_text_line_strips_only_the_line_ending() -> None:
    rec = text_decoder().decode(b"  hello world \r\n", b"k1", SRC, 1000)
    assert rec == LogRecord(source=SRC, line="  hello world ", key="k1", timestamp_ms=1000)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "empty record"),
        (b"", "empty record"),
        (b"\r\n", "empty line"),
        (b"   \n", "empty line"),
        (b"caf\xe9 latin-1", "invalid UTF-8 at byte 3"),
    ],
)
def test_text_bad_records_are_dead_letters(value: bytes | None, fragment: str) -> None:
    out = text_decoder().decode(value, b"key", SRC, None)
    assert isinstance(out, DeadLetter)
    assert out.stage == "decode" and fragment in out.error
    assert out.value == (value or b"") and out.key == b"key" and out.source == SRC


def test_oversized_line_keeps_the_whole_value() -> None:
    value = b"x" * (1 << 20)  # 1 MiB
    out = text_decoder().decode(value, None, SRC, None)
    assert isinstance(out, DeadLetter)
    assert "1048576 bytes exceeds max_line_bytes=65536" in out.error
    assert out.value == value  # the DLQ must not lose data


def test_line_at_the_limit_passes() -> None:
    out = text_decoder(max_line_bytes=10).decode(b"0123456789", None, SRC, None)
    assert isinstance(out, LogRecord) and out.line == "0123456789"


def test_invalid_utf8_key_does_not_dead_letter_the_line() -> None:
    out = text_decoder().decode(b"line", b"\xff", SRC, None)
    assert isinstance(out, LogRecord) and out.key == "\ufffd"


def test_json_envelope() -> None:
    value = orjson.dumps({"message": "disk full\n", "host": "node-7", "timestamp": "2023-11-14T22:13:20.5Z"})
    rec = json_decoder().decode(value, None, SRC, 99)
    assert rec == LogRecord(
        source=SRC, line="disk full", key=None, timestamp_ms=99, host="node-7", event_time_ms=1_700_000_000_500
    )


def test_json_custom_and_dotted_fields() -> None:
    value = orjson.dumps({"log": "x", "host": {"name": "h1"}, "@timestamp": 1_700_000_000})
    dec = json_decoder(message_field="log", host_field="host.name", timestamp_field="@timestamp")
    rec = dec.decode(value, None, SRC, None)
    assert isinstance(rec, LogRecord)
    assert (rec.line, rec.host, rec.event_time_ms) == ("x", "h1", 1_700_000_000_000)


def test_json_optional_fields_absent() -> None:
    rec = json_decoder().decode(b'{"message": "m"}', None, SRC, 5)
    assert isinstance(rec, LogRecord)
    assert (rec.host, rec.event_time_ms, rec.timestamp_ms) == (None, None, 5)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b'{"message": "x"', "invalid JSON"),
        (b"[1, 2]", "JSON value is a list"),
        (b'{"msg": "x"}', "no 'message' field"),
        (b'{"message": 12}', "is a int, expected a string"),
        (b'{"message": ""}', "is empty"),
        (b'{"message": "x", "timestamp": "yesterday"}', "neither epoch s/ms nor ISO-8601"),
        (b'{"message": "x", "timestamp": true}', "must be a number"),
    ],
)
def test_json_bad_envelopes_are_dead_letters(value: bytes, fragment: str) -> None:
    out = json_decoder().decode(value, b"k", SRC, None)
    assert isinstance(out, DeadLetter)
    assert fragment in out.error and out.value == value and out.key == b"k"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, 0),
        (1_117_838_570, 1_117_838_570_000),
        (1_117_838_570_123, 1_117_838_570_123),
        ("2005-06-03T15:42:50", 1_117_813_370_000),
        ("2005-06-03 15:42:50.675872", 1_117_813_370_675),
        ("-1000", -1_000_000),
    ],
)
def test_epoch_ms(raw: object, expected: int) -> None:
    assert epoch_ms(raw) == expected


@pytest.mark.parametrize("raw", [float("nan"), float("inf"), [], {}, "2005-13-45"])
def test_epoch_ms_rejects(raw: object) -> None:
    with pytest.raises(TimestampError):
        epoch_ms(raw)


def test_settings_are_frozen_and_strict() -> None:
    with pytest.raises(ValueError):
        DecodeSettings(format="xml")
    with pytest.raises(ValueError):
        DecodeSettings(unknown=1)
    s = DecodeSettings()
    with pytest.raises(ValueError):
        s.format = "json"  # type: ignore[misc]

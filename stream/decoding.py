"""Raw Kafka values to text lines: plain UTF-8, or a JSON envelope carrying the line in a field.

Anything unusable becomes a `DeadLetter` that keeps the original value and key untouched, so
the dead-letter topic can be replayed after a fix; nothing here raises on bad input.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field

from rationanomaly.stream.records import DeadLetter, LogRecord, SourceRef

_STAGE = "decode"
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=_UTC)
# Below this an epoch number is read as seconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_SECONDS_BELOW = 100_000_000_000


class DecodeSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["text", "json"] = "text"
    # json field names; a dotted name also reaches into nested objects ("host.name").
    message_field: str = "message"  # the log line (required)
    host_field: str = "host"  # optional
    timestamp_field: str = "timestamp"  # optional; epoch s/ms number or ISO-8601 string
    # Longer values are dead-lettered before decoding, so one runaway record cannot stall a partition.
    max_line_bytes: int = Field(65_536, ge=1)


class TimestampError(ValueError):
    """An envelope timestamp that is neither an epoch number nor an ISO-8601 string."""


def epoch_ms(value: object) -> int:
    """Epoch milliseconds from an epoch number (s or ms, told apart by size) or an ISO-8601 string.

    Naive ISO times are read as UTC.

    >>> epoch_ms(1_700_000_000), epoch_ms(1_700_000_000_123), epoch_ms(1_700_000_000.5)
    (1700000000000, 1700000000123, 1700000000500)
    >>> epoch_ms("2023-11-14T22:13:20.123Z"), epoch_ms("2023-11-14 23:13:20+01:00")
    (1700000000123, 1700000000000)
    >>> epoch_ms("1700000000123")
    1700000000123
    """
    if isinstance(value, bool):  # bool is an int subclass; true/false is not a time
        raise TimestampError(f"timestamp must be a number or an ISO-8601 string, got {value!r}")
    if isinstance(value, int):
        return value * 1000 if abs(value) < _SECONDS_BELOW else value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise TimestampError(f"timestamp must be finite, got {value!r}")
        return round(value * 1000) if abs(value) < _SECONDS_BELOW else round(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit():
            return epoch_ms(int(text))
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            raise TimestampError(f"timestamp {value!r} is neither epoch s/ms nor ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=_UTC)
        delta = parsed - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise TimestampError(f"timestamp must be a number or an ISO-8601 string, got {type(value).__name__}")


class Decoder:
    """Decodes one record at a time; holds only its settings, so one instance serves all partitions."""

    def __init__(self, settings: DecodeSettings) -> None:
        self._settings = settings
        self._json = settings.format == "json"
        self._limit = settings.max_line_bytes

    def decode(
        self, value: bytes | None, key: bytes | None, source: SourceRef, timestamp_ms: int | None
    ) -> LogRecord | DeadLetter:
        out = self.fields(value, key)
        if out.__class__ is str:
            return _dead(source, out, value, key)
        line, key_text, host, event_ms = out
        return LogRecord(source, line, key_text, timestamp_ms, host, event_ms)

    def fields(self, value: bytes | None, key: bytes | None) -> tuple[str, str | None, str | None, int | None] | str:
        """`decode` without the records, for the hot path: (line, key, envelope host, envelope
        event time), or the reason the record is a dead letter."""
        if not value:
            return "empty record (no value)"
        if len(value) > self._limit:
            return f"record of {len(value)} bytes exceeds max_line_bytes={self._limit}"
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError as exc:
            return f"invalid UTF-8 at byte {exc.start}: {exc.reason}"
        key_text = key.decode("utf-8", "replace") if key is not None else None
        if self._json:
            return self._from_json(text, key_text)
        line = text.rstrip("\r\n")
        if not line or line.isspace():
            return "empty line"
        return line, key_text, None, None

    def _from_json(self, text: str, key_text: str | None) -> tuple[str, str | None, str | None, int | None] | str:
        s = self._settings
        try:
            doc: Any = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            return f"invalid JSON: {exc}"
        if not isinstance(doc, dict):
            return f"JSON value is a {type(doc).__name__}, expected an object"
        message = _field(doc, s.message_field)
        if message is None:
            return f"JSON object has no {s.message_field!r} field (decode.message_field)"
        if not isinstance(message, str):
            return f"JSON field {s.message_field!r} is a {type(message).__name__}, expected a string"
        line = message.rstrip("\r\n")
        if not line or line.isspace():
            return f"JSON field {s.message_field!r} is empty"
        host = _field(doc, s.host_field)
        event_ms = None
        raw_time = _field(doc, s.timestamp_field)
        if raw_time is not None:
            try:
                event_ms = epoch_ms(raw_time)
            except TimestampError as exc:
                return f"JSON field {s.timestamp_field!r}: {exc}"
        return line, key_text, host if isinstance(host, str) or host is None else str(host), event_ms


def _field(doc: dict[str, Any], name: str) -> Any:
    """`doc[name]`, else a dotted path into nested objects (ECS shippers write `host.name` nested)."""
    found = doc.get(name)
    if found is not None or "." not in name:
        return found
    node: Any = doc
    for part in name.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def decode_letter(source: SourceRef, error: str, value: bytes | None, key: bytes | None) -> DeadLetter:
    """The dead letter for a record `Decoder.fields` refused with `error`: the bytes as they came."""
    return DeadLetter(source=source, stage=_STAGE, error=error, value=value or b"", key=key)


_dead = decode_letter

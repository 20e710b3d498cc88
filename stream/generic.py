"""The `generic` profile: a timestamp and a level wherever they sit near a line's start.

For topics that mix formats, or logs nobody wrote a profile for. The first timestamp of any
shape in stream/timestamps.py within the first `HEAD_CHARS` characters gives the event time; a
level word among the next few tokens gives the level (and a `name:` right after it the
component); whatever follows is content. A line with no timestamp keeps all its text as
content and takes the record's time (an envelope's, the Kafka record's, or replay's file
clock), so a line is dead-lettered here only when no time exists at all.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

from rationanomaly.stream.profiles import (
    BUILTIN_PROFILES,
    HeaderFields,
    HeaderParser,
    ProfileSettings,
    TimestampReader,
    profile_letter,
    resolve_profile,
)
from rationanomaly.stream.records import DeadLetter, Header, LogRecord
from rationanomaly.stream.timestamps import TimestampShape, find_timestamp

HEAD_CHARS = 80
_LEVEL_TOKENS = 3  # tokens after the timestamp searched for a level
_LEVELS = (
    "TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|ERR|SEVERE|FATAL|CRITICAL|CRIT|ALERT|EMERG|FINE|FINER|FINEST|VERBOSE"
)
# A level stands as its own token, possibly bracketed ("[ERROR]", "<warn>", "INFO:"), in upper,
# lower or title case: not "Error" inside a sentence further on.
_LEVEL = re.compile(
    rf"[\[<(]?(?P<level>(?:{_LEVELS})|(?:{_LEVELS.lower()})|(?:{'|'.join(w.title() for w in _LEVELS.split('|'))}))[\]>)]?:?(?=\s|$)"
)
_COMPONENT = re.compile(r"(?P<component>[A-Za-z_][\w.$/-]*(?:\[\d+\])?):(?=\s|$)")
_LEAD = re.compile(r"[\s\])|,;:-]*")  # punctuation between header parts and the content
_TOKEN = re.compile(r"\S+")

GENERIC = BUILTIN_PROFILES["generic"]


class GenericHeaderParser:
    """Same interface as `HeaderParser`; keeps one timestamp reader per shape."""

    def __init__(self, default_year: int | None = None) -> None:
        self.profile = GENERIC
        # for shapes without a year ("Jun 14 15:16:01"): the record's year, else this one
        self._year = default_year or datetime.now(timezone.utc).year
        self._readers: dict[tuple[str, int], TimestampReader] = {}

    def _reader(self, shape: TimestampShape, year: int) -> TimestampReader:
        key = (shape.name, year if not shape.has_year else 0)
        reader = self._readers.get(key)
        if reader is None:
            reader = TimestampReader(shape.timestamp_format, "UTC", None if shape.has_year else year)
            self._readers[key] = reader
        return reader

    def split(self, record: LogRecord) -> Header | DeadLetter:
        out = self.fields(record.line, record.key, record.host, record.event_time_ms, record.timestamp_ms)
        if out.__class__ is str:
            return profile_letter(record.source, out, record.line, record.key)
        return Header(*out)

    def fields(
        self, line: str, key: str | None, host: str | None, event_time_ms: int | None, timestamp_ms: int | None
    ) -> HeaderFields | str:
        """As `HeaderParser.fields`: the Header's fields in order, or why the line is a dead letter."""
        fallback_ms = event_time_ms if event_time_ms is not None else timestamp_ms
        found = find_timestamp(line, HEAD_CHARS)
        event_ms: int | None = None
        rest = 0
        if found is not None:
            shape, match = found
            year = self._year
            if not shape.has_year and fallback_ms is not None:
                year = datetime.fromtimestamp(fallback_ms / 1000, timezone.utc).year
            text = " ".join(match.group().split()) if " " in match.group() else match.group()
            try:
                event_ms = self._reader(shape, year).read(text)
                rest = match.end()
            except (ValueError, OverflowError):
                event_ms = None  # a date-like string that is no date: the whole line is content
        if event_ms is None:
            event_ms = fallback_ms
        if event_ms is None:
            return "no event time: profile 'generic' found no timestamp near the line's start and the record has none"
        level = component = None
        pos = _LEAD.match(line, rest).end()
        scan = pos
        for _ in range(_LEVEL_TOKENS if rest else 1):
            token = _TOKEN.match(line, scan)
            if token is None:
                break
            lm = _LEVEL.fullmatch(token.group())
            if lm is not None:
                level = lm.group("level").upper()
                pos = _LEAD.match(line, token.end()).end() if not token.group().endswith(":") else token.end()
                cm = _COMPONENT.match(line, _LEAD.match(line, token.end()).end())
                if cm is not None:
                    component = cm.group("component")
                    pos = cm.end()
                break
            scan = _LEAD.match(line, token.end()).end()
        content = line[_LEAD.match(line, pos).end() :] if pos < len(line) else ""
        if not content.strip():
            content = line.strip()  # never an empty content: Drain3 needs a token
        return event_ms, content, host or key, level, component, None, found is None or rest == 0


class ProfileSplitter:
    """The configured profile's parser, with the generic profile behind it if `fallback` asks.

    `fallbacks` counts lines the configured profile could not split and the generic one did.
    """

    def __init__(self, settings: ProfileSettings) -> None:
        self.profile = resolve_profile(settings)
        generic = settings.custom is None and settings.name == GENERIC.name
        self._primary: HeaderParser | GenericHeaderParser = GenericHeaderParser() if generic else HeaderParser(self.profile)
        self._fallback = GenericHeaderParser() if settings.fallback == "generic" and not generic else None
        self.fallbacks = 0
        if self._fallback is None:
            self.fields = self._primary.fields  # nothing to fall back on: one call less a line

    def split(self, record: LogRecord) -> Header | DeadLetter:
        out = self._primary.split(record)
        if isinstance(out, DeadLetter) and self._fallback is not None:
            alternative = self._fallback.split(record)
            if isinstance(alternative, Header):
                self.fallbacks += 1
                return alternative
        return out

    def fields(
        self, line: str, key: str | None, host: str | None, event_time_ms: int | None, timestamp_ms: int | None
    ) -> HeaderFields | str:
        """`split` without the records (HeaderParser.fields); a dead letter's stage is `profile`."""
        out = self._primary.fields(line, key, host, event_time_ms, timestamp_ms)
        if out.__class__ is str and self._fallback is not None:
            alternative = self._fallback.fields(line, key, host, event_time_ms, timestamp_ms)
            if alternative.__class__ is not str:
                self.fallbacks += 1
                return alternative
        return out

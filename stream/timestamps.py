"""Timestamp shapes found in the wild, for reading a line whose format nobody declared.

Each shape is a regex for the text, the format `TimestampReader` reads it with, and a name per
blank-separated piece (a profile's `log_format` needs one field per piece: a field spanning
blanks would match lazily and split the header in the wrong place). `profile infer` and the
`generic` profile share this table.

A match must stand alone: at the line start or after a blank, `[`, `(` or `|`, and followed by
the line end or one of blank, `]`, `)`, `,`, `|`, `:`, so "nova-api.log.2017-05-16_13:53:08"
is not read as a date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rationanomaly.stream.profiles import EPOCH_MS, EPOCH_S, ISO8601

_BEFORE = r"(?:^|(?<=[\s\[(|]))"
_AFTER = r"(?=$|[\s\]),|:])"


@dataclass(frozen=True, slots=True)
class TimestampShape:
    name: str
    regex: re.Pattern[str]
    timestamp_format: str  # strptime, or iso8601 / epoch_s / epoch_ms
    pieces: tuple[str, ...]  # a field name per blank-separated piece
    has_year: bool = True


def _shape(name: str, pattern: str, fmt: str, pieces: tuple[str, ...], has_year: bool = True) -> TimestampShape:
    return TimestampShape(name, re.compile(_BEFORE + pattern + _AFTER), fmt, pieces, has_year)


_FRACTION = r"(?:[.,]\d{1,9})?"
_ZONE = r"(?:Z|[+-]\d{2}:?\d{2})?"
_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
_WEEKDAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"

# Order matters only between shapes that match at the same place: the longer comes first.
SHAPES: tuple[TimestampShape, ...] = (
    _shape("iso8601_t", r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}" + _FRACTION + _ZONE, ISO8601, ("Timestamp",)),
    _shape("iso8601_space", r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}" + _FRACTION + _ZONE, ISO8601, ("Date", "Time")),
    _shape("ymd_slash", r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}", "%Y/%m/%d %H:%M:%S", ("Date", "Time")),
    _shape("ymd_dotted_time", r"\d{4}-\d{2}-\d{2}-\d{2}\.\d{2}\.\d{2}\.\d{6}", "%Y-%m-%d-%H.%M.%S.%f", ("Timestamp",)),
    _shape("yymmdd_slash", r"\d{2}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}", "%y/%m/%d %H:%M:%S", ("Date", "Time")),
    _shape("yymmdd_compact", r"\d{6} \d{6}", "%y%m%d %H%M%S", ("Date", "Time")),
    _shape("ymd_compact_colon_ms", r"\d{8}-\d{1,2}:\d{1,2}:\d{1,2}:\d{1,3}", "%Y%m%d-%H:%M:%S:%f", ("Timestamp",)),
    _shape("clf", r"\d{2}/" + _MONTH + r"/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4}", "%d/%b/%Y:%H:%M:%S %z", ("Time", "Zone")),
    _shape(
        "ctime",
        _WEEKDAY + " " + _MONTH + r" +\d{1,2} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})? \d{4}",
        "%a %b %d %H:%M:%S %Y",
        ("Weekday", "Month", "Day", "Time", "Year"),
    ),
    _shape("syslog", _MONTH + r" +\d{1,2} \d{2}:\d{2}:\d{2}", "%b %d %H:%M:%S", ("Month", "Day", "Time"), has_year=False),
    _shape("md_dash_ms", r"\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}", "%m-%d %H:%M:%S.%f", ("Date", "Time"), has_year=False),
    _shape("md_dot", r"\d{2}\.\d{2} \d{2}:\d{2}:\d{2}", "%m.%d %H:%M:%S", ("Date", "Time"), has_year=False),
    # 2001-09-09 .. 2033-05-18 in seconds or milliseconds: other 10/13-digit numbers are rare
    # this close to a line's start.
    _shape("epoch_ms", r"1\d{12}", EPOCH_MS, ("Timestamp",)),
    _shape("epoch_s", r"1\d{9}(?:\.\d{1,6})?", EPOCH_S, ("Timestamp",)),
)


def find_timestamp(text: str, limit: int = 120) -> tuple[TimestampShape, re.Match[str]] | None:
    """The leftmost timestamp in the first `limit` characters; at one place, the first shape.

    >>> shape, m = find_timestamp("[Sun Dec 04 04:47:44 2005] [notice] ok")
    >>> shape.name, m.group()
    ('ctime', 'Sun Dec 04 04:47:44 2005')
    >>> find_timestamp("nova-api.log.1.2017-05-16_13:53:08 2017-05-16 00:00:00.008 25746")[1].group()
    '2017-05-16 00:00:00.008'
    >>> find_timestamp("no time here") is None
    True
    """
    head = text[:limit]
    best: tuple[TimestampShape, re.Match[str]] | None = None
    for shape in SHAPES:
        m = shape.regex.search(head)
        if m is not None and (best is None or m.start() < best[1].start()):
            best = (shape, m)
    return best


def find_shape(text: str, shape: TimestampShape, limit: int = 120) -> re.Match[str] | None:
    return shape.regex.search(text[:limit])

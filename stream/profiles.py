"""Format profiles: split a raw line into its header (time, host, level, component, label) and content.

A profile's `log_format` follows loghub's benchmark notation: `<Field>` placeholders between
literal text, e.g. `"<Date> <Time> <Pid> <Level> <Component>: <Content>"`. As in loghub, each
placeholder matches lazily, a run of spaces matches any whitespace, and the literal text is a
regular expression (so `\\[<Pid>\\]` and optional parts such as `(\\[<PID>\\])?` work). Only the
content goes on to Drain3; the header never reaches the template miner or the model.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, model_validator

from rationanomaly.stream.multiline import STACK_TRACES, MultilineSettings
from rationanomaly.stream.parsing import MaskRule, ProfileParsing
from rationanomaly.stream.records import DeadLetter, Header, Label, LogRecord, SourceRef

_STAGE = "profile"
_FIELD = re.compile(r"<([^<>]+)>")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)
_YEAR_DIRECTIVES = ("%Y", "%y", "%G", "%c", "%x", "%s")
# Timestamps repeat (many lines a second); past this many distinct ones the cache starts over.
_TIME_CACHE_MAX = 4096

EPOCH_S = "epoch_s"
EPOCH_MS = "epoch_ms"
ISO8601 = "iso8601"


def compile_log_format(log_format: str) -> re.Pattern[str]:
    """The regex for a loghub-style format, for `fullmatch` on a line (surrounding blanks allowed).

    >>> rx = compile_log_format("<Date> <Time> <Level> <Component>: <Content>")
    >>> rx.fullmatch("081109 203615 INFO dfs.DataNode: Receiving  block ").group("Component", "Content")
    ('dfs.DataNode', 'Receiving  block')
    """
    parts = _FIELD.split(log_format)
    pieces = [r"\s*"]
    for i, part in enumerate(parts):
        if i % 2:
            if not _NAME.fullmatch(part):
                raise ValueError(f"log_format field <{part}> must be a name of letters, digits and _")
            if i == len(parts) - 2 and not parts[-1]:
                # A trailing field is greedy and ends on a non-blank: the same text as a lazy
                # one (which must reach the end anyway) at a quarter of the cost.
                pieces.append(f"(?P<{part}>(?:.*\\S)?)")
            else:
                pieces.append(f"(?P<{part}>.*?)")
        elif part:
            pieces.append(re.sub(" +", r"\\s+", part))
    pieces.append(r"\s*")
    try:
        return re.compile("".join(pieces), re.DOTALL)
    except re.error as exc:
        raise ValueError(f"log_format {log_format!r} is not a valid pattern: {exc}") from None


class FormatProfile(BaseModel):
    """How to split one log format. Field names are the `<Field>` names of `log_format`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    log_format: str
    content_field: str = "Content"
    # Joined with single spaces, then read with `timestamp_format`: a strptime format, or one of
    # "iso8601" (fast; "2015-07-29 17:41:44,747" qualifies), "epoch_s", "epoch_ms".
    timestamp_fields: tuple[str, ...] = ()
    timestamp_format: str | None = None
    timezone: str = "UTC"  # for timestamps without an offset
    default_year: int | None = None  # for formats without a year (syslog's "Jun 14 15:16:01")
    host_field: str | None = None
    level_field: str | None = None
    component_field: str | None = None
    label_field: str | None = None  # a ground-truth column (BGL, Thunderbird); never shown to the model
    normal_labels: frozenset[str] = frozenset({"-"})
    # How continuation lines (stack traces) join the line that starts their event; None: every
    # line is an event. See stream/multiline.py.
    multiline: MultilineSettings | None = None
    # This format's own masking rules and Drain settings (stream/parsing.py ProfileParsing);
    # None: the shared masking file and `parsing` settings alone.
    parsing: ProfileParsing | None = None

    @model_validator(mode="after")
    def _fields_exist(self) -> FormatProfile:
        names = _FIELD.findall(self.log_format)
        if len(set(names)) != len(names):
            raise ValueError(f"profile {self.name!r}: log_format names a field twice: {self.log_format!r}")
        compile_log_format(self.log_format)
        wanted = {
            "content_field": (self.content_field,),
            "timestamp_fields": self.timestamp_fields,
            "host_field": (self.host_field,),
            "level_field": (self.level_field,),
            "component_field": (self.component_field,),
            "label_field": (self.label_field,),
        }
        for option, fields in wanted.items():
            for field in fields:
                if field is not None and field not in names:
                    raise ValueError(
                        f"profile {self.name!r}: {option}={field!r} is not a <Field> of log_format "
                        f"{self.log_format!r}; use one of {names}"
                    )
        if bool(self.timestamp_fields) != (self.timestamp_format is not None):
            raise ValueError(
                f"profile {self.name!r}: set both timestamp_fields and timestamp_format, or neither "
                "(without them the event time comes from the record)"
            )
        fmt = self.timestamp_format
        if fmt not in (None, EPOCH_S, EPOCH_MS, ISO8601):
            if self.default_year is None and not any(d in fmt for d in _YEAR_DIRECTIVES):
                raise ValueError(
                    f"profile {self.name!r}: timestamp_format {fmt!r} has no year; set default_year"
                )
        _zone(self.timezone)
        return self


def _zone(name: str) -> tzinfo:
    if name.upper() in ("UTC", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not an IANA zone name such as 'UTC' or 'Europe/Paris'") from None


_SYSLOG = r"<Month> <Day> <Time> <Host> <Component>(\[<Pid>\])?: <Content>"

# loghub's benchmark formats; fields are renamed where loghub's column name misleads (its Linux
# "Level" column holds the host). tests/unit/stream/test_profiles.py checks each against the
# loghub 2k sample and its structured CSV.
BUILTIN_PROFILES: Mapping[str, FormatProfile] = {
    p.name: p
    for p in (
        FormatProfile(
            name="hdfs",
            log_format="<Date> <Time> <Pid> <Level> <Component>: <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format="%y%m%d %H%M%S",
            level_field="Level",
            component_field="Component",
        ),
        FormatProfile(
            name="bgl",
            log_format="<Label> <Timestamp> <Date> <Node> <Time> <NodeRepeat> <Type> <Component> <Level> <Content>",
            # The epoch column is exact; the "Time" column is local time with no zone.
            timestamp_fields=("Timestamp",),
            timestamp_format=EPOCH_S,
            host_field="Node",
            level_field="Level",
            component_field="Component",
            label_field="Label",
        ),
        FormatProfile(
            name="thunderbird",
            log_format=r"<Label> <Timestamp> <Date> <Node> <Month> <Day> <Time> <Location> <Component>(\[<Pid>\])?: <Content>",
            timestamp_fields=("Timestamp",),
            timestamp_format=EPOCH_S,
            host_field="Node",
            component_field="Component",
            label_field="Label",
        ),
        FormatProfile(
            name="openssh",
            log_format=_SYSLOG,
            timestamp_fields=("Month", "Day", "Time"),
            timestamp_format="%b %d %H:%M:%S",
            default_year=2017,  # not in the lines; override for your own syslog
            host_field="Host",
            component_field="Component",
            # sshd's lines share their first word ("Failed password", "Failed none"): Drain
            # routes by the first two tokens instead of one.
            parsing=ProfileParsing(depth=5),
        ),
        FormatProfile(
            name="linux",
            log_format=_SYSLOG,
            timestamp_fields=("Month", "Day", "Time"),
            timestamp_format="%b %d %H:%M:%S",
            default_year=2005,  # loghub's Linux sample is from 2005 (its kernel lines say so)
            host_field="Host",
            component_field="Component",
        ),
        FormatProfile(
            name="zookeeper",
            log_format=r"<Date> <Time> - <Level>  \[<Node>:<Component>@<Id>\] - <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format=ISO8601,
            level_field="Level",
            component_field="Component",
            multiline=STACK_TRACES,
        ),
        FormatProfile(
            name="hadoop",
            log_format=r"<Date> <Time> <Level> \[<Process>\] <Component>: <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format=ISO8601,
            level_field="Level",
            component_field="Component",
            multiline=STACK_TRACES,
        ),
        FormatProfile(
            name="spark",
            log_format="<Date> <Time> <Level> <Component>: <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format="%y/%m/%d %H:%M:%S",
            level_field="Level",
            component_field="Component",
            multiline=STACK_TRACES,
        ),
        FormatProfile(
            name="openstack",
            log_format=r"<Logrecord> <Date> <Time> <Pid> <Level> <Component> \[<ADDR>\] <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format=ISO8601,
            level_field="Level",
            component_field="Component",
            multiline=STACK_TRACES,
            parsing=ProfileParsing(
                # A request's client: one address or a forwarded-for list, the same variable.
                masking=(
                    MaskRule(
                        regex_pattern=r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?:,\d{1,3}(?:\.\d{1,3}){3})+(?![\w.])",
                        mask_with="IP",
                    ),
                ),
                # Nova's lifecycle events differ by one word ("VM Paused", "VM Resumed"; "Instance
                # spawned" or "destroyed successfully"), a seventh of a short line.
                sim_th=0.9,
            ),
        ),
        FormatProfile(
            name="android",
            log_format="<Date> <Time> <Pid> <Tid> <Level> <Component>: <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format="%m-%d %H:%M:%S.%f",
            default_year=2017,  # logcat prints no year; override for your own
            level_field="Level",
            component_field="Component",
            multiline=STACK_TRACES,
            # Framework lines are short and differ by a word or a flag name.
            parsing=ProfileParsing(sim_th=0.9),
        ),
        FormatProfile(
            name="apache",
            log_format=r"\[<Weekday> <Month> <Day> <Time> <Year>\] \[<Level>\] <Content>",
            timestamp_fields=("Weekday", "Month", "Day", "Time", "Year"),
            timestamp_format="%a %b %d %H:%M:%S %Y",
            level_field="Level",
        ),
        FormatProfile(
            name="hpc",
            log_format="<LogId> <Node> <Component> <State> <Timestamp> <Flag> <Content>",
            timestamp_fields=("Timestamp",),
            timestamp_format=EPOCH_S,
            host_field="Node",
            component_field="Component",
        ),
        FormatProfile(
            name="healthapp",
            log_format=r"<Timestamp>\|<Component>\|<Pid>\|\s*<Content>",  # some contents start with a blank
            timestamp_fields=("Timestamp",),
            timestamp_format="%Y%m%d-%H:%M:%S:%f",
            component_field="Component",
        ),
        FormatProfile(
            name="mac",
            log_format=r"<Month> <Day> <Time> <Host> <Component>(\[<Pid>\])?( \(<Address>\))?: <Content>",
            timestamp_fields=("Month", "Day", "Time"),
            timestamp_format="%b %d %H:%M:%S",
            default_year=2017,  # syslog prints no year; loghub's Mac sample is from 2017
            host_field="Host",
            component_field="Component",
            parsing=ProfileParsing(sim_th=0.9, depth=5),
        ),
        FormatProfile(
            name="proxifier",
            log_format=r"\[<Date> <Time>\] <Program> - <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format="%m.%d %H:%M:%S",
            default_year=2016,  # Proxifier prints no year; override for your own
            component_field="Program",
            parsing=ProfileParsing(
                # Its events differ by a word or two on lines of a dozen tokens ("HTTPS" or
                # "SOCKS5"; "could not resolve" or "connection attempt failed").
                sim_th=0.9,
                masking=(
                    # a connection's lifetime: "<1 sec", "00:01", "01:02:03"
                    MaskRule(regex_pattern=r"<1 sec|(?<![\w:.])\d+:\d\d(?::\d\d)?(?![\w:])", mask_with="DURATION"),
                    # "0 bytes" and "1024 bytes (1.0 KB)": one amount, whichever way it is written
                    MaskRule(regex_pattern=r"(?<![\w.])\d+ bytes(?: \(\d+(?:\.\d+)? [KMGT]B\))?", mask_with="SIZE"),
                    # The far end of a connection: a host name or address before ":port"...
                    MaskRule(regex_pattern=r"(?<![\w.-])[A-Za-z0-9][\w-]*(?:\.[\w-]+)*(?=:\d+(?![\w.]))", mask_with="HOST"),
                    # ... or a dotted host name alone (the program is in the header, not here)
                    MaskRule(regex_pattern=r"(?<![\w.-])[A-Za-z0-9][\w-]*(?:\.[\w-]+)+(?![\w.-])", mask_with="HOST"),
                ),
            ),
        ),
        FormatProfile(
            name="windows",
            log_format="<Date> <Time>, <Level> <Component> <Content>",
            timestamp_fields=("Date", "Time"),
            timestamp_format=ISO8601,
            level_field="Level",
            component_field="Component",
            # CBS and CSI lines differ by one verb ("Starting", "Ending") in a few tokens.
            parsing=ProfileParsing(sim_th=0.85),
        ),
        # The whole line is content; the event time is the envelope's or the Kafka record's.
        FormatProfile(name="raw", log_format="<Content>"),
        # Split by stream/generic.py instead (any timestamp and level near the line's start);
        # the format here only names it.
        FormatProfile(name="generic", log_format="<Content>"),
    )
}


class ProfileSettings(BaseModel):
    """`name` picks a built-in profile, or names the one given in `custom`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "hdfs"
    custom: FormatProfile | None = None
    # "generic": a line the profile cannot split goes through the generic profile (a topic that
    # mixes formats) instead of the dead-letter queue. None: such a line is a dead letter.
    fallback: Literal["generic"] | None = None

    @model_validator(mode="after")
    def _known(self) -> ProfileSettings:
        if self.custom is not None:
            if self.custom.name != self.name:
                raise ValueError(
                    f"profile.custom is named {self.custom.name!r} but profile.name is {self.name!r}; "
                    "set profile.name to the custom profile's name to use it"
                )
        elif self.name not in BUILTIN_PROFILES:
            raise ValueError(
                f"unknown profile {self.name!r}: use one of {sorted(BUILTIN_PROFILES)} "
                "or define it in profile.custom"
            )
        return self


def resolve_profile(settings: ProfileSettings) -> FormatProfile:
    return settings.custom if settings.custom is not None else BUILTIN_PROFILES[settings.name]


class TimestampReader:
    """Header timestamp text to epoch ms, remembering recent answers (lines share their second)."""

    def __init__(self, fmt: str, zone: str = "UTC", default_year: int | None = None) -> None:
        self._fmt = fmt
        self._zone = _zone(zone)
        self._prefix = "" if default_year is None else f"{default_year} "
        self._strptime_fmt = fmt if default_year is None else f"%Y {fmt}"
        self._cache: dict[str, int] = {}

    def read(self, text: str) -> int:
        """Raises ValueError when `text` does not fit the format."""
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        value = self._convert(text)
        if len(self._cache) >= _TIME_CACHE_MAX:
            self._cache.clear()
        self._cache[text] = value
        return value

    def _convert(self, text: str) -> int:
        fmt = self._fmt
        if fmt == EPOCH_S:
            return round(float(text) * 1000)
        if fmt == EPOCH_MS:
            return int(text)
        if fmt == ISO8601:
            moment = datetime.fromisoformat(text)
        else:
            # The year is prepended rather than left to strptime: a year-less strptime reads
            # 1900 and rejects Feb 29.
            moment = datetime.strptime(self._prefix + text, self._strptime_fmt)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self._zone)
        return (moment - _EPOCH) // _MS


# A split line: event time, content, host, level, component, ground truth, time from the record
# (the fields of Header, in order); the hot path takes them without building the Header.
HeaderFields = tuple[int, str, "str | None", "str | None", "str | None", "Label | None", bool]
# Where a window key can sit in HeaderFields (count and time windows keyed by host or component).
HOST_FIELD, COMPONENT_FIELD = 2, 4


class HeaderParser:
    """Splits lines with one profile; holds no per-line state beyond a timestamp cache."""

    def __init__(self, profile: FormatProfile) -> None:
        self.profile = profile
        self._regex = compile_log_format(profile.log_format)
        groups = self._regex.groupindex
        self._content = groups[profile.content_field]
        self._time = tuple(groups[f] for f in profile.timestamp_fields)
        self._host = groups[profile.host_field] if profile.host_field else 0
        self._level = groups[profile.level_field] if profile.level_field else 0
        self._component = groups[profile.component_field] if profile.component_field else 0
        self._label = groups[profile.label_field] if profile.label_field else 0
        self._normal = profile.normal_labels
        self._clock = (
            TimestampReader(profile.timestamp_format, profile.timezone, profile.default_year)
            if profile.timestamp_format is not None
            else None
        )
        self._fullmatch = self._regex.fullmatch
        self._stamps = self._clock._cache.get if self._clock is not None else None
        self._no_match = f"line does not match profile {profile.name!r} ({profile.log_format})"
        self._no_time = f"no event time: profile {profile.name!r} reads none and the record has no timestamp"

    def split(self, record: LogRecord) -> Header | DeadLetter:
        out = self.fields(record.line, record.key, record.host, record.event_time_ms, record.timestamp_ms)
        if out.__class__ is str:
            return self._dead(record, out)
        return Header(*out)

    def fields(
        self, line: str, key: str | None, host: str | None, event_time_ms: int | None, timestamp_ms: int | None
    ) -> HeaderFields | str:
        """`split` without the records, for the hot path: a decoded line's parts (its key, and an
        envelope's host and event time) to the Header's fields in order, or why it is a dead letter."""
        match = self._fullmatch(line)
        if match is None:
            return self._no_match
        g = match.groups()  # group n at g[n - 1]
        from_record = False
        if self._clock is not None:
            t = self._time
            stamp = g[t[0] - 1] if len(t) == 1 else " ".join(match.group(*t))
            event_ms = self._stamps(stamp)  # the reader's own cache, looked up without a call
            if event_ms is None:
                try:
                    event_ms = self._clock.read(stamp)
                except (ValueError, OverflowError, TypeError):
                    return f"timestamp {stamp!r} does not fit {self.profile.timestamp_format!r} (profile {self.profile.name!r})"
        elif event_time_ms is not None:
            event_ms, from_record = event_time_ms, True
        elif timestamp_ms is not None:
            event_ms, from_record = timestamp_ms, True
        else:
            return self._no_time
        label: Label | None = None
        if self._label:
            raw_label = g[self._label - 1]
            if raw_label is not None:
                label = "normal" if raw_label in self._normal else "abnormal"
        return (
            event_ms,
            g[self._content - 1],
            # the line's own host, else the envelope's, else the record key (which may name the source)
            (g[self._host - 1] if self._host else None) or host or key,
            g[self._level - 1] if self._level else None,
            g[self._component - 1] if self._component else None,
            label,
            from_record,
        )

    @staticmethod
    def _dead(record: LogRecord, error: str) -> DeadLetter:
        return profile_letter(record.source, error, record.line, record.key)


def profile_letter(source: SourceRef, error: str, line: str, key: str | None) -> DeadLetter:
    """The dead letter for a line a profile could not split (`fields` gave `error`)."""
    # Decoding kept the raw bytes; from here on the line itself is what can be replayed.
    return DeadLetter(
        source=source,
        stage=_STAGE,
        error=error,
        value=line.encode("utf-8"),
        key=None if key is None else key.encode("utf-8"),
    )


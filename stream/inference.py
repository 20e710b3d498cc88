"""Propose a format profile from a sample of lines: `rationanomaly profile infer FILE...`.

The sample's most common timestamp shape (stream/timestamps.py) anchors each line; the text
around it is cut into header tokens (blank- or `|`-separated, a `[...]` group as one token), and
tokens are compared column by column across the sample:

- timestamp, level word, `[...]`, number, lone `-`, and `name:` / `name[pid]:` (a component,
  after which the content starts) are anchors;
- other words belong to the header only when an anchor follows them (a host before a syslog
  component, BGL's node columns before its level), and after a level only one word (a component
  such as OpenStack's before its `[req-...]`).

A column joins the header while one kind holds in 90% of the sample (a component column, 50%:
lazy fields let "name (detail):" match too). The result is a loghub-style `log_format`, checked
by running the real `HeaderParser` over the sample: coverage is the share of lines it splits.
"""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rationanomaly.stream.multiline import STACK_TRACE_CONTINUATION, STACK_TRACES
from rationanomaly.stream.profiles import FormatProfile, HeaderParser
from rationanomaly.stream.records import DeadLetter, LogRecord, SourceRef
from rationanomaly.stream.timestamps import TimestampShape, find_shape, find_timestamp

LEVELS = frozenset(
    {
        "TRACE", "DEBUG", "INFO", "NOTICE", "WARN", "WARNING", "ERROR", "ERR", "SEVERE", "FATAL",
        "CRITICAL", "CRIT", "ALERT", "EMERG", "EMERGENCY", "FAILURE", "FINE", "FINER", "FINEST",
        "CONFIG", "VERBOSE",
    }
)
# Android's logcat writes one letter; only a column made of them is read as a level.
LETTER_LEVELS = frozenset("VDIWEFA")

_TOKEN = re.compile(r"[^\s|]+")
# "," or ";" before a blank separates too ("2016-09-28 04:30:30, Info")
_SEPARATOR = re.compile(r"(?:[\s|]|[,;](?=\s))*")
_BLANKS = re.compile(r"\s+")
_COMPONENT_PID = re.compile(r".+\[\d+\]:$")
_MAX_TOKENS = 14
_HEAD_CHARS = 160
_SHARE = 0.9  # a column kind must hold in this share of the sample
_COMPONENT_SHARE = 0.5
_LITERAL_SHARE = 0.99
_TIME_SHARE = 0.5  # below this share of lines with the chosen shape, the profile reads no time
_ANCHORS = frozenset({"ts", "bts", "level", "blevel", "bracket", "num", "dash", "comp"})

# Ids that name a session: the first group (or the whole match) is the key. Ordered by preference.
SESSION_IDS: tuple[tuple[str, str], ...] = (
    ("HDFS block id", r"blk_-?\d+"),
    ("request id", r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
    ("UUID", r"(?<![0-9A-Za-z-])[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}(?![0-9A-Za-z])"),
    ("Hadoop/YARN id", r"(?:application|appattempt|container|attempt|job|task)_\d+(?:_[a-z]?\d+)+"),
)
_MIN_KEYED = 0.05  # share of lines naming an id
_MIN_RECURRENCE = 1.5  # lines per distinct id
_ALWAYS_KEYED = 0.5


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    kind: str
    sep: str  # the text between this token and the next


@dataclass(frozen=True, slots=True)
class _Column:
    kind: str
    sep: str
    tokens: tuple[str, ...]  # this column's token in each line that has one


@dataclass(frozen=True, slots=True)
class SessionKey:
    name: str
    pattern: str
    keyed_share: float
    distinct: int


@dataclass(frozen=True, slots=True)
class Coverage:
    lines: int
    matched: int
    unmatched_examples: tuple[str, ...]

    @property
    def share(self) -> float:
        return self.matched / self.lines if self.lines else 0.0


@dataclass(frozen=True, slots=True)
class Inference:
    profile: FormatProfile
    coverage: Coverage
    session_key: SessionKey | None
    timestamp_shape: str | None
    notes: tuple[str, ...] = field(default=())


def read_sample(paths: Sequence[Path], lines: int = 2000) -> list[str]:
    """Up to `lines` non-blank lines, shared among the files (plain or gzip)."""
    per_file = max(1, lines // max(1, len(paths)))
    sample: list[str] = []
    for path in paths:
        with path.open("rb") as probe:
            gz = probe.read(2) == b"\x1f\x8b"
        with (gzip.open(path, "rb") if gz else path.open("rb")) as fh:
            taken = 0
            for raw in fh:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if line.strip():
                    sample.append(line)
                    taken += 1
                    if taken >= per_file:
                        break
    return sample


def _is_level(text: str) -> bool:
    return text.upper() in LEVELS or text in LETTER_LEVELS


def _bracket_end(line: str, start: int) -> int:
    depth = 0
    for i in range(start, len(line)):
        if line[i] == "[":
            depth += 1
        elif line[i] == "]":
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def _tokens(line: str, ts: re.Match[str] | None) -> list[_Token]:
    out: list[_Token] = []
    pos = _SEPARATOR.match(line, 0).end()
    limit = min(len(line), _HEAD_CHARS)
    while pos < limit and len(out) < _MAX_TOKENS:
        if ts is not None and pos == ts.start():
            text, kind, pos = ts.group(), "ts", ts.end()
        elif line[pos] == "[" and (end := _bracket_end(line, pos)) > 0:
            text = line[pos:end]
            inner = text[1:-1]
            if ts is not None and ts.start() == pos + 1 and ts.end() == end - 1:
                kind = "bts"
            elif _is_level(inner.strip()):
                kind = "blevel"
            else:
                kind = "bracket"
            pos = end
        else:
            m = _TOKEN.match(line, pos)
            if m is None:
                break
            text, pos = m.group(), m.end()
            if ts is not None and m.start() < ts.start() < m.end():
                text, pos = line[m.start() : ts.start()], ts.start()  # "x,<ts>" or "x[<ts>"
            if text == "-":
                kind = "dash"
            elif text.endswith(":") and len(text) > 1 and text[0].isalnum():
                kind = "comp"
            elif text.isdigit():
                kind = "num"
            elif _is_level(text):
                kind = "level"
            else:
                kind = "word"
        sep_end = _SEPARATOR.match(line, pos).end()
        out.append(_Token(text, kind, _BLANKS.sub(" ", line[pos:sep_end])))
        pos = sep_end
    return out


def _column(rows: list[list[_Token]], j: int, total: int) -> tuple[_Column, float] | None:
    present = [row[j] for row in rows if len(row) > j]
    if not present:
        return None
    kinds = Counter(t.kind for t in present)
    kind, count = kinds.most_common(1)[0]
    if kind == "level" and any(len(t.text) == 1 for t in present if t.kind == "level"):
        # letters are levels only in a column of letters (logcat), not a stray "A" in content
        if not all(len(t.text) == 1 for t in present if t.kind == "level"):
            kind = "word"
    if kind == "word":
        # a word column is a plain field, which takes a stray number or level word as well
        count = sum(kinds[k] for k in ("word", "level", "num", "dash"))
    seps = Counter(t.sep for t in present if t.kind == kind)
    sep = seps.most_common(1)[0][0] if seps else " "
    return _Column(kind, sep, tuple(t.text for t in present if t.kind == kind)), count / total


def _header(rows: list[list[_Token]]) -> list[_Column]:
    """The header's columns: anchors, and words only where an anchor follows them."""
    total = len(rows)
    columns: list[_Column] = []
    last_anchor = -1
    words_after_level = 0
    seen_level = False
    for j in range(_MAX_TOKENS):
        found = _column(rows, j, total)
        if found is None:
            break
        column, share = found
        # A component or a " - " ends the header in most lines; in the rest a field before it
        # holds a blank ("chrome.exe *64 - ..."), which a lazy field still matches.
        needed = _COMPONENT_SHARE if column.kind in ("comp", "dash") else _SHARE
        if share < needed:
            break
        if seen_level and column.kind == "word":
            words_after_level += 1
            if words_after_level > 1:
                break
        columns.append(column)
        if column.kind in _ANCHORS:
            last_anchor = j
        if column.kind in ("level", "blevel"):
            seen_level = True
        if column.kind == "comp":
            break
    return columns[: last_anchor + 1]


def _escape(sep: str) -> str:
    # blanks stay blanks: compile_log_format reads a run of spaces as any whitespace
    return "".join(" " if c == " " else re.escape(c) for c in sep)


def _build(
    columns: list[_Column], shape: TimestampShape | None, year: int, total: int
) -> tuple[FormatProfile, list[str]]:
    notes: list[str] = []
    parts: list[str] = []
    names: Counter[str] = Counter()
    opts: dict[str, object] = {}

    def name(base: str) -> str:
        names[base] += 1
        return base if names[base] == 1 else f"{base}{names[base]}"

    kinds = [c.kind for c in columns]
    ts_at = next((i for i, k in enumerate(kinds) if k in ("ts", "bts")), None)
    for i, col in enumerate(columns):
        k = col.kind
        if k in ("ts", "bts") and shape is not None:
            fields = [name(p) for p in shape.pieces]
            text = " ".join(f"<{f}>" for f in fields)
            parts.append(f"\\[{text}\\]" if k == "bts" else text)
            if "timestamp_fields" not in opts:
                opts["timestamp_fields"] = tuple(fields)
                opts["timestamp_format"] = shape.timestamp_format
                if not shape.has_year:
                    opts["default_year"] = year
                    notes.append(f"timestamps carry no year: default_year {year} assumed; set the right one")
        elif k in ("level", "blevel") and "level_field" not in opts:
            f = name("Level")
            opts["level_field"] = f
            parts.append(f"\\[<{f}>\\]" if k == "blevel" else f"<{f}>")
        elif k == "comp":
            f = name("Component")
            opts["component_field"] = f
            with_pid = sum(1 for t in col.tokens if _COMPONENT_PID.match(t))
            if with_pid >= 0.3 * len(col.tokens):
                parts.append(f"<{f}>(\\[<{name('Pid')}>\\])?:")
            else:
                parts.append(f"<{f}>:")
        elif k == "dash":
            # After other fields a " - " separates (where it stands later, the field before it
            # holds a blank); leading the line it is a value, "-" in (nearly) every line or a
            # field (loghub's BGL label column: "-" or an alert category).
            literal = i > 0 or len(col.tokens) >= _LITERAL_SHARE * total
            parts.append("-" if literal else f"<{name('Dash')}>")
        elif k in ("bracket", "bts", "blevel"):
            after_level = i > 0 and kinds[i - 1] in ("level", "blevel", "word")
            parts.append(f"\\[<{name('Thread' if after_level and 'level_field' in opts else 'Context')}>\\]")
        elif k == "num":
            first_num = "num" not in kinds[:i]
            parts.append(f"<{name('Pid' if first_num and ts_at is not None and i > ts_at else 'Number')}>")
        elif k == "word":
            if ts_at is not None and i == ts_at + 1 and "comp" in kinds[i + 1 : i + 2]:
                f = name("Host")
                opts.setdefault("host_field", f)
            elif i > 0 and kinds[i - 1] in ("level",) and "component_field" not in opts:
                f = name("Component")
                opts["component_field"] = f
            else:
                f = name("Field")
            parts.append(f"<{f}>")
        else:  # level seen twice: keep the first as the level
            parts.append(f"<{name('Field')}>")
        parts.append(_escape(col.sep) if i < len(columns) - 1 else _escape(col.sep or " "))
    log_format = "".join(parts) + "<Content>"
    profile = FormatProfile(name="inferred", log_format=log_format, **opts)  # type: ignore[arg-type]
    return profile, notes


def measure(profile: FormatProfile, lines: Iterable[str], examples: int = 5) -> Coverage:
    """The share of `lines` the real header parser splits with `profile`."""
    parser = HeaderParser(profile)
    total = matched = 0
    missed: list[str] = []
    for i, line in enumerate(lines):
        total += 1
        # a record time stands in, so a profile without timestamps is judged on its format alone
        out = parser.split(LogRecord(SourceRef("sample", 0, i), line, timestamp_ms=0))
        if isinstance(out, DeadLetter):
            if len(missed) < examples:
                missed.append(line)
        else:
            matched += 1
    return Coverage(total, matched, tuple(missed))


def session_key(contents: Sequence[str]) -> SessionKey | None:
    """The first id kind named by enough lines and recurring across them, if any."""
    n = len(contents)
    for label, pattern in SESSION_IDS:
        rx = re.compile(pattern)
        keyed = 0
        values: set[str] = set()
        for text in contents:
            found = rx.findall(text)
            if found:
                keyed += 1
                values.update(found)
        # An id in most lines is a session key even if a small sample rarely repeats one
        # (loghub's HDFS sample); a rarer one must recur, or it is a per-line id.
        if values and (keyed / n >= _ALWAYS_KEYED or (keyed / n >= _MIN_KEYED and keyed / len(values) >= _MIN_RECURRENCE)):
            return SessionKey(label, pattern, keyed / n, len(values))
    return None


def infer_profile(lines: Sequence[str], year: int = 2024, name: str = "inferred") -> Inference:
    if not lines:
        raise ValueError("no lines to infer a profile from")
    # Stack-trace lines (indented frames, "Caused by:") carry no header: the header is
    # inferred from the other lines, so a log full of traces still gets one.
    continuation = re.compile(STACK_TRACE_CONTINUATION)
    heads = [line for line in lines if not continuation.search(line)] or list(lines)
    shapes = Counter()
    for line in heads:
        found = find_timestamp(line, _HEAD_CHARS)
        if found is not None:
            shapes[found[0].name] += 1
    shape: TimestampShape | None = None
    notes: list[str] = []
    if shapes:
        best, count = shapes.most_common(1)[0]
        if count / len(heads) >= _TIME_SHARE:
            from rationanomaly.stream.timestamps import SHAPES

            shape = next(s for s in SHAPES if s.name == best)
    if shape is None:
        notes.append("no timestamp shape in most lines: event time comes from the record (or replay's file clock)")
    rows = [_tokens(line, find_shape(line, shape, _HEAD_CHARS) if shape else None) for line in heads]
    columns = _header(rows)
    profile, build_notes = _build(columns, shape, year, len(heads))
    notes.extend(build_notes)
    profile = profile.model_copy(update={"name": name})
    coverage = measure(profile, lines)
    parser = HeaderParser(profile)
    unsplit = [line for i, line in enumerate(lines) if isinstance(parser.split(LogRecord(SourceRef("sample", 0, i), line, timestamp_ms=0)), DeadLetter)]
    traced = sum(1 for line in unsplit if continuation.search(line))
    if unsplit and traced >= 0.5 * len(unsplit):
        # the lines that do not split are mostly stack-trace lines: join them to their events
        profile = profile.model_copy(update={"multiline": STACK_TRACES})
        notes.append(f"{traced} of the {len(unsplit)} lines that do not split look like stack-trace lines: multiline preset stack_traces joins them to their events")
    contents = []
    for i, line in enumerate(lines):
        out = parser.split(LogRecord(SourceRef("sample", 0, i), line, timestamp_ms=0))
        contents.append(line if isinstance(out, DeadLetter) else out.content)
    return Inference(profile, coverage, session_key(contents), shape.name if shape else None, tuple(notes))


def render(inference: Inference, sources: Sequence[str]) -> str:
    """The proposal as YAML for the detector's settings file, its coverage as comments above."""
    import yaml

    cov = inference.coverage
    profile = inference.profile.model_dump(exclude_defaults=True)
    profile["name"] = inference.profile.name
    settings: dict[str, object] = {"profile": {"name": inference.profile.name, "custom": profile}}
    key = inference.session_key
    if key is not None:
        settings["windows"] = {"kind": "session", "key_pattern": key.pattern}
    lines = [
        f"# rationanomaly profile infer {' '.join(sources)}",
        f"# coverage: {cov.matched} of {cov.lines} sample lines split ({cov.share:.1%})",
        f"# timestamp: {inference.timestamp_shape or 'none found'}",
    ]
    if key is not None:
        lines.append(
            f"# session key: {key.name}, in {key.keyed_share:.0%} of lines, {key.distinct} distinct "
            "(windows.kind session); drop the windows section for count windows"
        )
    else:
        lines.append("# session key: no recurring id found; windows default to your settings (count or time)")
    lines.extend(f"# note: {note}" for note in inference.notes)
    if cov.unmatched_examples:
        lines.append("# lines the profile does not split (dead letters, or the generic profile with fallback: generic):")
        lines.extend(f"#   {line[:160]}" for line in cov.unmatched_examples)
    body = yaml.safe_dump(settings, sort_keys=False, default_flow_style=False, width=1000)
    return "\n".join(lines) + "\n" + body

"""Typed records the stream's stages hand each other.

Frozen, slotted dataclasses: they are created once per line on the hot path, so they stay
small and never carry the raw bytes further than the decoding stage.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Literal, TypeVar

_T = TypeVar("_T")


def _quick_init(cls: type[_T]) -> type[_T]:
    """Gives a frozen, slotted dataclass an `__init__` that stores each field through its slot's
    descriptor. The generated one calls `object.__setattr__` per field (a frozen class refuses
    plain assignment), about 0.4 µs a field; these records are made once per line, and this one
    takes a third of the time. Same signature and defaults; the instances stay frozen."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    params = []
    for f in fields(cls):  # type: ignore[arg-type]
        if f.default is not MISSING:
            params.append(f"{f.name}=_default_{f.name}")
        else:
            params.append(f.name)
    env = {f"_set_{n}": cls.__dict__[n].__set__ for n in names}
    env.update({f"_default_{f.name}": f.default for f in fields(cls) if f.default is not MISSING})  # type: ignore[arg-type]
    body = "".join(f"    _set_{n}(self, {n})\n" for n in names)
    exec(f"def __init__(self, {', '.join(params)}):\n{body}", env)  # noqa: S102 - fixed text, as dataclasses does
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    cls.__init__ = init  # type: ignore[misc]
    return cls

Label = Literal["normal", "abnormal"]
VerdictLabel = Literal["normal", "abnormal", "unknown"]
# The memory cap that closed a window early (stream/windows.py): the setting's name.
ForcedBy = Literal["max_open_windows", "max_window_lines", "max_held_lines"]


class WindowKind(str, Enum):
    SESSION = "session"
    COUNT = "count"
    TIME = "time"


class JudgeMode(str, Enum):
    TEMPLATE = "template"
    WINDOW = "window"


class ModelDownPolicy(str, Enum):
    """What judging does with windows while the model is away (judging.on_model_down)."""

    WAIT = "wait"  # hold them and retry; `unknown` only after judging.model_down_deadline_s
    UNKNOWN = "unknown"  # publish them `unknown` with the reason at once


@_quick_init
@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where a record came from: a Kafka position, or a file and line number for replay."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


@_quick_init
@dataclass(frozen=True, slots=True)
class LogRecord:
    """One input record decoded to text (JSON envelopes already unwrapped)."""

    source: SourceRef
    line: str
    key: str | None = None
    timestamp_ms: int | None = None  # the Kafka record timestamp, the fallback event time
    host: str | None = None  # from a JSON envelope field; used where the profile has no host
    event_time_ms: int | None = None  # from a JSON envelope field; used where the profile has no time


@_quick_init
@dataclass(frozen=True, slots=True)
class Header:
    """A line split by its format profile: the header fields, and the content Drain3 mines."""

    event_time_ms: int
    content: str
    host: str | None = None
    level: str | None = None
    component: str | None = None
    ground_truth: Label | None = None  # from the profile's label field; never shown to the model
    # The line had no time of its own and the record's stands in (for a one-time warning); not
    # part of what the header says, so not compared.
    time_from_record: bool = field(default=False, compare=False)


@dataclass(frozen=True, slots=True)
class Template:
    """A Drain3 template identified by the hash of its text, stable across miners and restarts."""

    id: str
    text: str


@_quick_init
@dataclass(frozen=True, slots=True)
class ParsedLog:
    source: SourceRef
    event_time_ms: int
    content: str
    template: Template
    host: str | None = None
    level: str | None = None
    component: str | None = None
    ground_truth: Label | None = None  # from a label column; never shown to the model


@dataclass(frozen=True, slots=True)
class OffsetRange:
    partition: int
    first: int
    last: int


@dataclass(frozen=True, slots=True)
class Window:
    """A closed group of lines, judged once."""

    kind: WindowKind
    key: str
    start_ms: int
    end_ms: int
    lines: int
    sequence: tuple[str, ...]  # template ids in arrival order
    templates: dict[str, str] = field(hash=False)  # template id -> text
    offsets: tuple[OffsetRange, ...]
    topic: str
    ground_truth: Label | None = None  # abnormal if any line's label is
    forced: ForcedBy | None = None  # closed early by a memory cap; None: closed by time or count


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record the stream could not use, with enough context to find and replay it."""

    source: SourceRef
    stage: str  # decode | profile | parse | judge
    error: str
    value: bytes
    key: bytes | None = None

"""Which member of the consumer group judges a template: its owner, found through Kafka's own
partition assignment, with no coordinator of the detector's own.

The owner of template T is the member that owns partition p(T) = crc32(cache key) mod P of the
topic windows form on (P its partition count). Each member knows its own assignment, so it knows
which templates it owns without asking anyone. A member that meets a template it neither knows
nor owns writes a request, keyed by the cache key, to partition p(T) of the compacted topic
`<group>-judge-requests`, and holds the window until the owner's answer reaches it through
`<group>-template-verdicts`. Each member reads the request partitions it owns, judges what is
asked, and writes a tombstone for each request it served. So members that close windows at the
same moment ask the model about a template once between them (stream/README.md, "One judge per
template").

This module is the bookkeeping only, shared by two threads: the consumer loop (Kafka I/O, the
assignment) and the judging thread (asking, waiting, serving). stream/detector_state.py moves
its records to and from Kafka; stream/judging.py uses it while judging.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import orjson

# A request carries the template's text; a text larger than this is judged where it is met
# (the request topic's max.message.bytes is 2 MiB; a template this long is a flood, not a pattern).
MAX_REQUEST_BYTES = 256 * 1024
# A request served with the model away is tried again after this long (the requester's own
# deadline, judging.remote_wait_s, bounds how long it waits for it).
SERVE_RETRY_S = 5.0


class OwnersClosed(RuntimeError):
    """The detector is stopping: nobody waits for a remote verdict any more."""


def cache_key(model_id: str, prompt_version: str, template_id: str) -> bytes:
    """The key of a template's verdict and of a request for it: the decision identity, then the template.

    >>> cache_key("m", "ra-prompt-2", "abc")
    b'["m","ra-prompt-2","abc"]'
    """
    return orjson.dumps([model_id, prompt_version, template_id])


def owner_partition(key: bytes, partitions: int) -> int:
    """The window-topic partition whose owner judges the template with this cache key.

    crc32, not hash(): every process, whatever its Python or PYTHONHASHSEED, must agree.

    >>> owner_partition(cache_key("m", "p", "t1"), 6) == owner_partition(cache_key("m", "p", "t1"), 6)
    True
    >>> owner_partition(b"anything", 1)
    0
    """
    return zlib.crc32(key) % partitions


@dataclass(frozen=True, slots=True)
class JudgeRequest:
    """A record for `<group>-judge-requests`: value None is the tombstone of a served request."""

    partition: int
    key: bytes
    value: bytes | None


def request_value(text: str) -> bytes:
    return orjson.dumps({"text": text})


def parse_request(key: bytes, value: bytes | None) -> tuple[str, str, str, str | None] | None:
    """(model id, prompt version, template id, text or None for a tombstone); None: not a request."""
    try:
        model_id, prompt_version, template_id = orjson.loads(key)
        text = None if value is None else orjson.loads(value)["text"]
    except (orjson.JSONDecodeError, ValueError, TypeError, KeyError):
        return None
    if not all(isinstance(x, str) for x in (model_id, prompt_version, template_id)):
        return None
    if text is not None and not isinstance(text, str):
        return None
    return model_id, prompt_version, template_id, text


class TemplateOwners:
    """Who judges which template, the requests this member made, and those it must serve.

    Thread-safe: the consumer loop calls `set_owned`, `requested`, `arrived`, `take_outbox`;
    the judging thread calls `owns`, `ask`, `overdue`, `settled`, `to_serve`, `served`, `wait`.
    """

    def __init__(self, partitions: int, model_id: str, prompt_version: str, remote_wait_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.partitions = max(1, partitions)
        self._identity = (model_id, prompt_version)
        self._wait_s = remote_wait_s
        self._clock = clock
        self._owned: frozenset[int] = frozenset()
        self._cond = threading.Condition()
        self._asked: dict[str, float] = {}  # template id -> when this member first asked its owner
        self._to_serve: dict[str, tuple[int, str, float]] = {}  # template id -> (partition, text, not before)
        self._outbox: deque[JudgeRequest] = deque()
        self._unknowns: deque[tuple[str, str]] = deque()  # served requests the model answered unreadably
        self._listeners: list[Callable[[], None]] = []
        self._closed = False
        self.asked_total = 0
        self.served_total = 0

    # -- ownership ---------------------------------------------------------------------------
    def key(self, template_id: str) -> bytes:
        return cache_key(*self._identity, template_id)

    def partition_of(self, template_id: str) -> int:
        return owner_partition(self.key(template_id), self.partitions)

    def owns(self, template_id: str) -> bool:
        return self.partition_of(template_id) in self._owned

    @property
    def owned(self) -> frozenset[int]:
        return self._owned

    def set_owned(self, partitions: Iterable[int]) -> None:
        """This member's window-topic partitions now (after an assignment, revoke or loss).

        Requests of a partition that moved away are forgotten here: its next owner reads them.
        A template this member waits for may now be its own to judge: the waiting thread wakes.
        """
        owned = frozenset(partitions)
        with self._cond:
            self._owned = owned
            for tid in [t for t, (p, _, _) in self._to_serve.items() if p not in owned]:
                del self._to_serve[tid]
        self._wake()

    # -- the requester's side (judging thread) -------------------------------------------------
    def ask(self, template_id: str, text: str) -> bool:
        """Ask the template's owner to judge it, once; False when it cannot be routed (judge it here)."""
        with self._cond:
            if template_id in self._asked:
                return True
            value = request_value(text)
            if len(value) > MAX_REQUEST_BYTES:
                return False
            self._asked[template_id] = self._clock()
            key = self.key(template_id)
            self._outbox.append(JudgeRequest(owner_partition(key, self.partitions), key, value))
            self.asked_total += 1
            return True

    def overdue(self, template_id: str) -> bool:
        """Asked at least `remote_wait_s` ago without an answer: judge it here after all."""
        asked = self._asked.get(template_id)
        return asked is not None and self._clock() - asked >= self._wait_s

    def settled(self, template_id: str) -> None:
        """The template's verdict is here (from its owner, or judged here): stop waiting for it."""
        with self._cond:
            self._asked.pop(template_id, None)

    def waiting_for(self) -> set[str]:
        with self._cond:
            return set(self._asked)

    def wait(self, template_ids: Iterable[str], cap_s: float = 1.0) -> None:
        """Sleep until something may have changed (a verdict arrived, a request came in, the
        assignment moved), the first of `template_ids` is overdue, or `cap_s` passed.

        Raises OwnersClosed once the detector stops.
        """
        now = self._clock()
        timeout = cap_s
        for tid in template_ids:
            asked = self._asked.get(tid)
            if asked is not None:
                timeout = min(timeout, max(0.0, asked + self._wait_s - now))
        with self._cond:
            if self._closed:
                raise OwnersClosed("stopping")
            if timeout > 0 and not self._due_locked():
                self._cond.wait(timeout)
            if self._closed:
                raise OwnersClosed("stopping")

    # -- the owner's side ------------------------------------------------------------------------
    def requested(self, partition: int, key: bytes, value: bytes | None) -> str | None:
        """A record read from an owned request partition (consumer loop). Returns the template id
        when it is a request to serve, None otherwise (a tombstone, another model's, not ours)."""
        parsed = parse_request(key, value)
        if parsed is None:
            return None
        model_id, prompt_version, template_id, text = parsed
        if (model_id, prompt_version) != self._identity:
            # Another model or prompt in the same group (a rolling upgrade): its members judge
            # it themselves after judging.remote_wait_s; this member's answer would not be theirs.
            return None
        with self._cond:
            if text is None:
                self._to_serve.pop(template_id, None)  # served already (by this member or the last owner)
                return None
            if partition not in self._owned:
                return None
            self._to_serve[template_id] = (partition, text, 0.0)
        self._wake()
        return template_id

    def to_serve(self) -> dict[str, str]:
        """Requests due now, for templates of partitions this member still owns: id -> text."""
        now = self._clock()
        with self._cond:
            return {tid: text for tid, (p, text, after) in self._to_serve.items() if after <= now and p in self._owned}

    def has_work(self) -> bool:
        with self._cond:
            return bool(self._to_serve) and self._due_locked()

    def next_due_in(self) -> float | None:
        with self._cond:
            if not self._to_serve:
                return None
            return max(0.0, min(after for _, _, after in self._to_serve.values()) - self._clock())

    def served(self, template_id: str, unknown: str | None = None) -> None:
        """The verdict is on its way to the cache topic: tombstone the request, so compaction
        drops it and a later owner of the partition does not serve it again.

        `unknown`: the model answered but no label could be read (the reason). Such answers are
        not cached for good, so the requester is told through `take_unknowns` instead of
        waiting out judging.remote_wait_s for an answer that will not come.
        """
        with self._cond:
            entry = self._to_serve.pop(template_id, None)
            if entry is None:
                return
            self._outbox.append(JudgeRequest(entry[0], self.key(template_id), None))
            if unknown is not None:
                self._unknowns.append((template_id, unknown))
            self.served_total += 1

    def retry_later(self, template_id: str, after_s: float = SERVE_RETRY_S) -> None:
        """The model was away for it: serve it again later, not in a tight loop."""
        with self._cond:
            entry = self._to_serve.get(template_id)
            if entry is not None:
                self._to_serve[template_id] = (entry[0], entry[1], self._clock() + after_s)

    def _due_locked(self) -> bool:
        now = self._clock()
        owned = self._owned
        return any(after <= now and p in owned for p, _, after in self._to_serve.values())

    # -- the consumer loop ---------------------------------------------------------------------
    def arrived(self) -> None:
        """A verdict came in from the cache topic: a waiting judge looks again."""
        self._wake()

    def take_outbox(self) -> list[JudgeRequest]:
        with self._cond:
            out = list(self._outbox)
            self._outbox.clear()
            return out

    def take_unknowns(self) -> list[tuple[str, str]]:
        with self._cond:
            out = list(self._unknowns)
            self._unknowns.clear()
            return out

    def on_wake(self, listener: Callable[[], None]) -> None:
        """Also call `listener` (the judge worker's idle wait) whenever something changes."""
        self._listeners.append(listener)

    def close(self) -> None:
        with self._cond:
            self._closed = True
        self._wake()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()
        for listener in self._listeners:  # outside our lock: a listener takes its own
            listener()

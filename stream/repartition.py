"""The repartition hop: lines re-keyed by their window key, so each window lives on one partition.

Shippers key records by host or file, so one HDFS block's lines land on several input
partitions, and windows formed per input partition would be partial. Like Kafka Streams'
`through`/`repartition`, the detector reads each input line, finds its window keys (the session
ids it names, or the host/component of count and time windows), and produces it once per key to
the internal topic `<group>-repartition`, keyed by that key. Windows form on the consumer of
that topic: every line of a window is on one of its partitions, read by one group member.

What a repartition record carries: the input record's value, untouched (the consumer decodes
and splits it again, so the windows see exactly what they would have seen); its timestamp (the
fallback event time); and headers with the input record's key and position. The position lets
the consumer drop the copies that an at-least-once hop makes when an input partition is re-read
after a crash (`UpstreamMarks`).

Drain3 runs after the hop, on the window's partition: a window's templates come from the miner
that holds its lines, in one checkpoint. `bench/repartition_templates.py` shows the placements
level under shipper keys that mix components (round robin, random, host); "before" wins only when
the input is keyed by component (stream/README.md, Scale-out).
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, field

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from rationanomaly.stream.decoding import Decoder, decode_letter
from rationanomaly.stream.generic import ProfileSplitter
from rationanomaly.stream.profiles import COMPONENT_FIELD, HOST_FIELD, HeaderFields, profile_letter
from rationanomaly.stream.records import DeadLetter, SourceRef, WindowKind
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.state_topics import StateTopicError, describe_topic, partition_count
from rationanomaly.stream.windows import MISSING_KEY

log = structlog.get_logger(__name__)

SUFFIX = "-repartition"
HEADER_KEY = "rationanomaly.key"  # the input record's own key (absent: it had none)
HEADER_SOURCE = "rationanomaly.source"  # "<input partition>:<input offset>"
SEGMENT_BYTES = 50 * 1024 * 1024  # Kafka Streams' choice for its repartition topics


class RepartitionError(RuntimeError):
    """The repartition topic cannot be used as configured (wrong partition count or policy)."""


def topic_name(group_id: str) -> str:
    return f"{group_id}{SUFFIX}"


def hop_needed(settings: DetectorSettings) -> bool:
    """Whether windows need the hop: their key is not the input record's key.

    Count and time windows with `key_by: none` are per input partition by design (the key is the
    partition's whole stream), so they never need it."""
    if settings.input.keyed_by_window:
        return False
    w = settings.windows
    return w.kind is WindowKind.SESSION or w.key_by != "none"


def check_supported(settings: DetectorSettings) -> None:
    """Raises when the hop cannot carry this input as configured."""
    if _profile_multiline(settings):
        raise RepartitionError(
            "multi-line events (profile.multiline) need their continuation lines beside their head "
            "line, which the repartition hop would scatter over partitions: have the producers key "
            "records by window key and set input.keyed_by_window: true, or use an input topic with "
            "one partition (no hop)"
        )


def _profile_multiline(settings: DetectorSettings) -> bool:
    # A named profile may switch multi-line events on by itself (hadoop, spark, ...).
    return ProfileSplitter(settings.profile).profile.multiline is not None


def topic_configs(retention_ms: int) -> dict[str, str]:
    # delete, never compact: records share keys (one block's lines), and compaction would keep
    # only the last line of each window. CreateTime keeps the input's timestamps.
    return {
        "cleanup.policy": "delete",
        "retention.ms": str(retention_ms),
        "segment.bytes": str(SEGMENT_BYTES),
        "message.timestamp.type": "CreateTime",
    }


def ensure_topic(admin: AdminClient, name: str, partitions: int, retention_ms: int, timeout_s: float = 30.0) -> int:
    """Create the repartition topic if missing; check an existing one. Returns its partition count."""
    # Metadata for all topics: a request naming a missing topic may have the broker auto-create
    # it, with the broker's defaults instead of these configs.
    existing = admin.list_topics(timeout=timeout_s).topics.get(name)
    if existing is None:
        future = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=-1, config=topic_configs(retention_ms))],
            operation_timeout=timeout_s,
        )[name]
        try:
            future.result(timeout_s)
            log.info("repartition_topic_created", topic=name, partitions=partitions, retention_ms=retention_ms)
            return partitions
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise RepartitionError(f"could not create the repartition topic {name}: {exc.args[0].str()}") from exc
        # another instance of the group created it first: check it like any existing one (its
        # metadata may not have reached the broker answering yet: partition_count waits for it)
    count = partition_count(admin, {} if existing is None else {name: existing}, name, timeout_s)
    if count != partitions:
        raise RepartitionError(
            f"the repartition topic {name} has {count} partitions, but the detector needs {partitions} "
            f"(input.repartition_partitions, default: the input topic's count). A topic with windows "
            f"in flight cannot be resized safely: delete it while no detector of group runs, or set "
            f"input.repartition_partitions: {count}"
        )
    try:
        configs = describe_topic(admin, ConfigResource(ConfigResource.Type.TOPIC, name), timeout_s)
    except StateTopicError as exc:
        raise RepartitionError(str(exc).replace("state topic", "the repartition topic")) from exc
    policy = configs.get("cleanup.policy", "delete")
    if "compact" in policy:
        raise RepartitionError(
            f"the repartition topic {name} has cleanup.policy={policy}: compaction keeps one line per "
            "window key and would cut windows. Set cleanup.policy=delete on it"
        )
    return count


class Rekeyer:
    """An input record's window keys, from the same decoding and header split the windows use."""

    def __init__(self, settings: DetectorSettings) -> None:
        self._topic = settings.input.topic
        self._decoder = Decoder(settings.input.decode)
        self._headers = ProfileSplitter(settings.profile)
        w = settings.windows
        self._session = w.kind is WindowKind.SESSION
        self._findall = re.compile(w.key_pattern).findall
        # where the key sits in HeaderFields (event time, content, host, level, component, ...)
        self._field = HOST_FIELD if w.key_by == "host" else COMPONENT_FIELD
        self._memo: SplitMemo | None = None
        # a fallback profile counts its lines in its own splitter (ProfileSplitter.fallbacks):
        # handing its splits on would leave the window side's count short
        self._shareable = settings.profile.fallback != "generic"

    def share_splits(self, capacity: int = 16_384) -> SplitMemo | None:
        """From now on, each line's split is kept for the window side of this process (the
        pipeline's `hop_memo`), which then need not decode and split it again. None: this
        configuration cannot share them (a fallback profile)."""
        if self._shareable and self._memo is None:
            self._memo = SplitMemo(capacity)
        return self._memo

    def keys_at(
        self, value: bytes | None, key: bytes | None, partition: int, offset: int, timestamp_ms: int | None
    ) -> list[str] | DeadLetter:
        """The window keys of the input topic's record at `partition`, `offset`, or its dead letter.
        The hot path: the line is decoded and split into plain fields (no LogRecord or Header),
        and the SourceRef is made only for a dead letter."""
        decoded = self._decoder.fields(value, key)
        if decoded.__class__ is str:
            return decode_letter(SourceRef(self._topic, partition, offset), decoded, value, key)
        line, key_text, host, event_ms = decoded
        fields = self._headers.fields(line, key_text, host, event_ms, timestamp_ms)
        if fields.__class__ is str:
            return profile_letter(SourceRef(self._topic, partition, offset), fields, line, key_text)
        if self._memo is not None:
            self._memo.put((partition, offset), value, key, timestamp_ms, fields)
        if self._session:
            found = self._findall(fields[1])
            return list(dict.fromkeys(found)) if len(found) > 1 else found
        return [fields[self._field] or MISSING_KEY]


class SplitMemo:
    """Split lines handed from the hop's forward side to its window side in one process.

    A forwarded line usually comes back to the member that forwarded it, moments later; its split
    is then taken from here instead of decoding and splitting it a second time. A split is a
    function of the record's value, key and timestamp alone (Decoder.fields, ProfileSplitter.fields),
    so an entry serves only a record read back with all three equal to the input record's; any
    other is split afresh, as without the memo. Lines another member reads back leave their entries
    unused: two generations of `capacity // 2` entries each bound the memory, the older one dropped
    whole when the newer fills.
    """

    __slots__ = ("_young", "_old", "_half", "hits", "misses")

    def __init__(self, capacity: int = 16_384) -> None:
        self._young: dict[tuple[int, int], tuple] = {}
        self._old: dict[tuple[int, int], tuple] = {}
        self._half = max(1, capacity // 2)
        self.hits = self.misses = 0

    def put(self, upstream: tuple[int, int], value: bytes | None, key: bytes | None, timestamp_ms: int | None,
            fields: HeaderFields) -> None:  # fmt: skip
        young = self._young
        young[upstream] = (value, key, timestamp_ms, fields)
        if len(young) >= self._half:
            self._old, self._young = young, {}

    def get(self, upstream: tuple[int, int], value: bytes | None, key: bytes | None,
            timestamp_ms: int | None) -> HeaderFields | None:  # fmt: skip
        """The split of the input line at `upstream` (partition, offset), if this record is it.
        Not removed: a line naming several window keys comes back once per key."""
        entry = self._young.get(upstream) or self._old.get(upstream)
        if entry is None or entry[0] != value or entry[1] != key or entry[2] != timestamp_ms:
            self.misses += 1
            return None
        self.hits += 1
        return entry[3]

    def __len__(self) -> int:
        return len(self._young) + len(self._old)


def source_header(partition: int, offset: int) -> bytes:
    return b"%d:%d" % (partition, offset)


def read_headers(headers: list[tuple[str, bytes]] | None) -> tuple[bytes | None, tuple[int, int] | None]:
    """The input record's key and (partition, offset), from a repartition record's headers."""
    key = upstream = None
    for name, value in headers or ():
        if name == HEADER_KEY:
            key = value
        elif name == HEADER_SOURCE:
            partition, _, offset = value.partition(b":")
            upstream = (int(partition), int(offset))
    return key, upstream


@dataclass(slots=True)
class UpstreamMarks:
    """Which input lines a repartition partition has already taken, to drop the hop's repeats.

    One input partition is forwarded by one member at a time, in offset order, by an idempotent
    producer, so its copies reach a repartition partition in increasing input offset. A re-read
    after a crash (at-least-once) forwards lines again from the input's last commit: those copies
    come with offsets at or below the highest already taken, and are dropped. A line naming two
    keys that share a repartition partition comes twice with one offset and two keys: both count.

    `high` is what the partition's checkpoint keeps: for each input partition, the highest offset
    (and its keys) taken from repartition records *below* the committed offset. A restart re-reads
    from there and rebuilds the rest from the records themselves.
    """

    high: dict[int, tuple[int, set[str]]] = field(default_factory=dict)  # input partition -> (offset, keys)
    base: dict[int, tuple[int, set[str]]] = field(default_factory=dict)  # the same, below the commit
    trail: deque[tuple[int, int, int, str]] = field(default_factory=deque)  # (own offset, input partition, input offset, key)
    repeats: int = 0

    def take(self, own_offset: int, upstream: tuple[int, int], key: str) -> bool:
        """True: a line not seen before here; False: a repeat, to skip."""
        partition, offset = upstream
        mark = self.high.get(partition)
        if mark is not None and (offset < mark[0] or (offset == mark[0] and key in mark[1])):
            self.repeats += 1
            return False
        if mark is None or offset > mark[0]:
            self.high[partition] = (offset, {key})
        else:
            mark[1].add(key)
        self.trail.append((own_offset, partition, offset, key))
        return True

    def below(self, committed: int) -> dict[str, list]:
        """The marks of lines taken below `committed` (this partition's commit), as plain data."""
        trail, base = self.trail, self.base
        while trail and trail[0][0] < committed:
            _, partition, offset, key = trail.popleft()
            mark = base.get(partition)
            if mark is None or offset > mark[0]:
                base[partition] = (offset, {key})
            elif offset == mark[0]:
                mark[1].add(key)
        return {str(p): [o, sorted(keys)] for p, (o, keys) in base.items()}

    @classmethod
    def restore(cls, data: dict[str, list] | None) -> UpstreamMarks:
        base = {int(p): (int(o), set(keys)) for p, (o, keys) in (data or {}).items()}
        return cls(high={p: (o, set(k)) for p, (o, k) in base.items()}, base=base)

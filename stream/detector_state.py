"""The live detector's state, behind the few calls its consumer loop makes.

- `restore(partition)`: the partition's checkpoint, for whichever instance was just assigned it;
- `save(partition, checkpoint)` then `flush(timeout_s)`: before the offset it belongs to is committed;
- `poll()`: once per loop, follows what other instances wrote (template verdicts, corrections) and
  writes this one's new template verdicts;
- `caught_up()`: on assignment, reads the shared tables to their end before the new lines;
- `owned(partitions)`: after each assignment change, the window partitions this member holds now,
  which decide the templates it judges for the group (stream/template_owners.py).

`KafkaState` keeps all of it in compacted topics (stream/state_topics.py), the default; with
`state.store: local`, `LocalState` keeps checkpoints in `checkpoint.dir` and the cache in
`judging.cache_file`, for one process on one machine.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Protocol

import orjson
import structlog
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from rationanomaly.model.judgement import Judgement
from rationanomaly.stream.checkpoint import Checkpoint, CheckpointLog, CheckpointStore
from rationanomaly.stream.engine import Engine
from rationanomaly.stream.records import JudgeMode
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.template_owners import TemplateOwners
from rationanomaly.stream.template_owners import cache_key as cache_key
from rationanomaly.stream.feedback import FeedbackLoop, VerdictMemory, apply_correction
from rationanomaly.stream.kafka_log import with_client_log
from rationanomaly.stream.state_topics import (
    CompactedTable,
    StateTopicError,
    ensure_plain_topic,
    ensure_topics,
    reader_config,
    state_topic,
)

log = structlog.get_logger(__name__)


class DetectorState(Protocol):
    def restore(self, partition: int) -> Checkpoint | None: ...
    def save(self, partition: int, checkpoint: Checkpoint) -> None: ...
    def flush(self, timeout_s: float) -> bool: ...
    def poll(self) -> None: ...
    def caught_up(self) -> None: ...
    def owned(self, partitions: set[int]) -> None: ...
    def close(self) -> None: ...


class LocalState:
    """Checkpoints in a local directory (the cache file is saved by the engine itself)."""

    def __init__(self, settings: DetectorSettings, consumed_topic: str) -> None:
        self._store = CheckpointStore(settings.checkpoint.dir, settings.kafka.group_id, consumed_topic)

    def restore(self, partition: int) -> Checkpoint | None:
        return self._store.load(partition)

    def save(self, partition: int, checkpoint: Checkpoint) -> None:
        self._store.save(partition, checkpoint)

    def flush(self, timeout_s: float) -> bool:
        return True

    def poll(self) -> None:
        pass

    def caught_up(self) -> None:
        pass

    def owned(self, partitions: set[int]) -> None:
        pass  # one process judges everything itself

    def close(self) -> None:
        pass


def encode_judgement(j: Judgement) -> bytes:
    return orjson.dumps(
        {"label": j.label, "rationale": j.rationale, "confidence": j.confidence, "decision": j.decision,
         "rationale_source": j.rationale_source, "rationale_note": j.rationale_note}  # fmt: skip
    )


def encode_unknown(reason: str, until_ms: int) -> bytes:
    """A served request the model answered unreadably: the requester's windows go out `unknown`
    with the owner's reason, as they would have had it asked itself, until `until_ms` (then the
    template is asked again, as judging.unknown_ttl_s says)."""
    return orjson.dumps({"label": "unknown", "reason": reason, "until_ms": until_ms})


def decode_unknown(value: bytes, now_ms: int) -> Judgement | None:
    """The `unknown` of `encode_unknown`, while it holds; None for anything else or once expired.

    >>> decode_unknown(encode_unknown("unparseable", 2_000), 1_000).reason
    'unparseable'
    >>> decode_unknown(encode_unknown("unparseable", 2_000), 3_000) is None
    True
    """
    try:
        raw = orjson.loads(value)
        if raw["label"] != "unknown" or int(raw["until_ms"]) <= now_ms:
            return None
        return Judgement("unknown", None, str(raw.get("reason")), 0.0, 0, None)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None


def decode_judgement(value: bytes) -> Judgement | None:
    """A cached verdict, or None for a record that is not one (never `unknown`: those are not shared)."""
    try:
        raw = orjson.loads(value)
        label = raw["label"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    if label not in ("normal", "abnormal"):
        return None
    return Judgement(label, raw.get("rationale"), None, 0.0, 0, None, raw.get("confidence"),
                     decision=raw.get("decision"), rationale_source=raw.get("rationale_source"),
                     rationale_note=raw.get("rationale_note"))  # fmt: skip


class KafkaState:
    """Checkpoints, the template-verdict cache and corrections, in compacted topics."""

    def __init__(self, settings: DetectorSettings, kafka: dict[str, str], producer: Producer,
                 engine: Engine, consumed_topic: str, consumed_partitions: int) -> None:  # fmt: skip
        state, group = settings.state, settings.kafka.group_id
        self._timeout_s = state.restore_timeout_s
        self._producer = producer
        self._engine = engine
        self.checkpoint_topic = state.topic("checkpoints", group)
        self.cache_topic = state.topic("template-verdicts", group)
        specs = [
            state_topic(self.checkpoint_topic, consumed_partitions, "checkpoints: Drain3 state and published keys per partition",
                        state.replication_factor),  # fmt: skip
            state_topic(self.cache_topic, 1, "template-verdict cache", state.replication_factor),
        ]
        feedback = settings.feedback
        self.corrections_topic = state.topic("corrections", group) if feedback.enabled else None
        if self.corrections_topic is not None:
            specs.append(state_topic(self.corrections_topic, 1, "operator corrections", state.replication_factor))
        # One judge per template (stream/template_owners.py): requests go to the partition of the
        # window topic whose owner judges the template, so the topic has the window topic's count.
        template_mode = settings.judging.mode is JudgeMode.TEMPLATE
        self.requests_topic = f"{group}-judge-requests" if template_mode else None
        if self.requests_topic is not None:
            specs.append(state_topic(self.requests_topic, consumed_partitions,
                                     "judge requests: templates asked of their owner", state.replication_factor))  # fmt: skip
        admin = AdminClient(with_client_log(kafka))
        self.created = ensure_topics(admin, specs, timeout_s=self._timeout_s)
        self._closed = False
        self._unknown_ttl_ms = int(settings.judging.unknown_ttl_s * 1000)
        self.owners: TemplateOwners | None = None
        self._requests: Consumer | None = None
        self.checkpoints = CheckpointLog(producer, Consumer(reader_config(kafka, f"{group}-state-restore")),
                                         self.checkpoint_topic, consumed_topic, self._timeout_s)  # fmt: skip
        identity = engine.identity
        self._identity = (identity.model_id, identity.prompt_version)
        self._outbox: deque[tuple[str, Judgement]] = deque()
        self.shared_in = 0  # verdicts taken from the topic (other instances', or earlier runs')
        self.shared_out = 0  # verdicts this instance wrote
        cache = engine.judge.cache
        cache.on_new = self._outbox.append  # called from the judging thread: deque.append is atomic
        if self.requests_topic is not None:
            self.owners = TemplateOwners(consumed_partitions, identity.model_id, identity.prompt_version,
                                         settings.judging.remote_wait_s)  # fmt: skip
            # Assigned partition by partition (`owned`), never subscribed: it follows the member's
            # window partitions, not a group of its own.
            self._requests = Consumer(reader_config(kafka, f"{group}-judge-requests-reader"))
            engine.worker.route(self.owners)
        self._cache_table = CompactedTable(Consumer(reader_config(kafka, f"{group}-state-cache")),
                                           self.cache_topic, self._cache_record)  # fmt: skip
        read = self._cache_table.catch_up(self._timeout_s)
        log.info("template_cache_restored", topic=self.cache_topic, records=read, templates=len(cache),
                 model=identity.model_id, prompt_version=identity.prompt_version)  # fmt: skip
        self._corrections: CompactedTable | None = None
        self.feedback: FeedbackLoop | None = None
        if self.corrections_topic is not None:
            self._corrections = CompactedTable(Consumer(reader_config(kafka, f"{group}-state-corrections")),
                                               self.corrections_topic, lambda k, v: apply_correction(cache, k, v))  # fmt: skip
            read = self._corrections.catch_up(self._timeout_s)
            log.info("corrections_restored", topic=self.corrections_topic, records=read)
            feedback_topic = feedback.topic_for(group)
            ensure_plain_topic(admin, feedback_topic, state.replication_factor, self._timeout_s)
            feedback_conf = {**kafka, "group.id": f"{group}-feedback", "enable.auto.commit": False,
                             "auto.offset.reset": "earliest"}  # fmt: skip
            memory = engine.sink if isinstance(engine.sink, VerdictMemory) else None
            self.feedback = FeedbackLoop(Consumer(with_client_log(feedback_conf)), producer, feedback_topic, self.corrections_topic,
                                         engine.sink, memory)  # fmt: skip

    def _cache_record(self, key: bytes, value: bytes | None) -> None:
        try:
            model_id, prompt_version, template_id = orjson.loads(key)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return
        if (model_id, prompt_version) != self._identity or value is None:
            return  # another model's or prompt's answers say nothing about this one's
        judgement = decode_judgement(value)
        if judgement is None:
            judgement = decode_unknown(value, int(time.time() * 1000))
            if judgement is None:
                return
        else:
            self.shared_in += 1
        self._engine.judge.cache.remember(template_id, judgement)
        if self.owners is not None:
            self.owners.arrived()  # a judge waiting for this template's owner looks again

    # -- the calls the consumer loop makes --------------------------------------------------
    def restore(self, partition: int) -> Checkpoint | None:
        return self.checkpoints.restore(partition)

    def save(self, partition: int, checkpoint: Checkpoint) -> None:
        self.checkpoints.save(partition, checkpoint)

    def flush(self, timeout_s: float) -> bool:
        self._write_outbox()
        if self.owners is not None:
            self._write_requests()
        return self.checkpoints.flush(timeout_s)

    def poll(self) -> None:
        self._write_outbox()
        self._cache_table.poll()
        if self.owners is not None:
            self._read_requests()
            self._write_requests()  # after the verdicts: a request is closed once its answer is out
        if self.feedback is not None:
            self.feedback.poll()
        if self._corrections is not None:
            self._corrections.poll()

    def caught_up(self) -> None:
        self._cache_table.catch_up(self._timeout_s)
        if self._corrections is not None:
            self._corrections.catch_up(self._timeout_s)

    def _write_outbox(self) -> None:
        model_id, prompt_version = self._identity
        while self._outbox:
            template_id, judgement = self._outbox.popleft()
            if judgement.label not in ("normal", "abnormal"):
                continue  # `unknown` is the model failing, not an answer another instance should reuse
            key = cache_key(model_id, prompt_version, template_id)
            while True:
                try:
                    self._producer.produce(self.cache_topic, value=encode_judgement(judgement), key=key)
                    break
                except BufferError:
                    self._producer.poll(0.1)
            self.shared_out += 1

    def owned(self, partitions: set[int]) -> None:
        """Follow the request partitions of the window partitions this member holds now, each
        newly owned one from its beginning: compaction keeps one request a template there, and
        the previous owner tombstoned those it served."""
        if self.owners is None or self._closed:
            return
        now, before = frozenset(partitions), self.owners.owned
        topic = self.requests_topic
        self.owners.set_owned(now)  # before reading: the records read next are this member's to serve
        if gone := sorted(before - now):
            self._requests.incremental_unassign([TopicPartition(topic, p) for p in gone])
        if new := sorted(now - before):
            self._requests.incremental_assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in new])
        if gone or new:
            log.info("template_owner", requests_topic=topic, partitions=sorted(now))

    def _read_requests(self) -> None:
        if not self.owners.owned:
            return
        owners = self.owners
        for msg in self._requests.consume(500, 0):
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF and err.fatal():
                    raise StateTopicError(f"reading {self.requests_topic}: {err.str()}")
                continue
            key = msg.key()
            if key is not None:
                owners.requested(msg.partition(), key, msg.value())

    def _write_requests(self) -> None:
        owners, metrics = self.owners, self._engine.metrics
        for request in owners.take_outbox():
            self._produce(self.requests_topic, request.key, request.value, request.partition)
            metrics.template_routing.labels("asked" if request.value is not None else "served").inc()
        if unknowns := owners.take_unknowns():
            model_id, prompt_version = self._identity
            until_ms = int(time.time() * 1000) + self._unknown_ttl_ms
            for template_id, reason in unknowns:
                self._produce(self.cache_topic, cache_key(model_id, prompt_version, template_id),
                              encode_unknown(reason, until_ms))  # fmt: skip

    def _produce(self, topic: str, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        while True:
            try:
                if partition is None:
                    self._producer.produce(topic, value=value, key=key)
                else:
                    self._producer.produce(topic, value=value, key=key, partition=partition)
                return
            except BufferError:
                self._producer.poll(0.1)

    def close(self) -> None:
        self._write_outbox()
        if self.owners is not None:
            self._write_requests()
            self.owners.close()
            self._requests.close()
        self._closed = True
        self.checkpoints.close()
        self._cache_table.close()
        if self._corrections is not None:
            self._corrections.close()
        if self.feedback is not None:
            self.feedback.close()

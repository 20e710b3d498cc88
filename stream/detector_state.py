"""The live detector's state, behind the few calls its consumer loop makes.

- `restore(partition)`: the partition's checkpoint, for whichever instance was just assigned it;
- `save(partition, checkpoint)` then `flush(timeout_s)`: before the offset it belongs to is committed;
- `poll()`: once per loop, follows what other instances wrote (template verdicts, corrections) and
  writes this one's new template verdicts;
- `caught_up()`: on assignment, reads the shared tables to their end before the new lines.

`KafkaState` keeps all of it in compacted topics (stream/state_topics.py), the default; with
`state.store: local`, `LocalState` keeps checkpoints in `checkpoint.dir` and the cache in
`judging.cache_file`, for one process on one machine.
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import orjson
import structlog
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from rationanomaly.model.judgement import Judgement
from rationanomaly.stream.checkpoint import Checkpoint, CheckpointLog, CheckpointStore
from rationanomaly.stream.engine import Engine
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.feedback import FeedbackLoop, VerdictMemory, apply_correction
from rationanomaly.stream.state_topics import CompactedTable, ensure_plain_topic, ensure_topics, reader_config, state_topic

log = structlog.get_logger(__name__)


class DetectorState(Protocol):
    def restore(self, partition: int) -> Checkpoint | None: ...
    def save(self, partition: int, checkpoint: Checkpoint) -> None: ...
    def flush(self, timeout_s: float) -> bool: ...
    def poll(self) -> None: ...
    def caught_up(self) -> None: ...
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

    def close(self) -> None:
        pass


def cache_key(model_id: str, prompt_version: str, template_id: str) -> bytes:
    """The template-verdict cache topic's key: the decision identity, then the template.

    >>> cache_key("m", "ra-prompt-2", "abc")
    b'["m","ra-prompt-2","abc"]'
    """
    return orjson.dumps([model_id, prompt_version, template_id])


def encode_judgement(j: Judgement) -> bytes:
    return orjson.dumps(
        {"label": j.label, "rationale": j.rationale, "confidence": j.confidence, "decision": j.decision,
         "rationale_source": j.rationale_source, "rationale_note": j.rationale_note}  # fmt: skip
    )


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
        admin = AdminClient(kafka)
        self.created = ensure_topics(admin, specs, timeout_s=self._timeout_s)
        self.checkpoints = CheckpointLog(producer, Consumer(reader_config(kafka, f"{group}-state-restore")),
                                         self.checkpoint_topic, consumed_topic, self._timeout_s)  # fmt: skip
        identity = engine.identity
        self._identity = (identity.model_id, identity.prompt_version)
        self._outbox: deque[tuple[str, Judgement]] = deque()
        self.shared_in = 0  # verdicts taken from the topic (other instances', or earlier runs')
        self.shared_out = 0  # verdicts this instance wrote
        cache = engine.judge.cache
        cache.on_new = self._outbox.append  # called from the judging thread: deque.append is atomic
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
            self.feedback = FeedbackLoop(Consumer(feedback_conf), producer, feedback_topic, self.corrections_topic,
                                         engine.sink, memory)  # fmt: skip

    def _cache_record(self, key: bytes, value: bytes | None) -> None:
        try:
            model_id, prompt_version, template_id = orjson.loads(key)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return
        if (model_id, prompt_version) != self._identity or value is None:
            return  # another model's or prompt's answers say nothing about this one's
        judgement = decode_judgement(value)
        if judgement is not None:
            self._engine.judge.cache.remember(template_id, judgement)
            self.shared_in += 1

    # -- the calls the consumer loop makes --------------------------------------------------
    def restore(self, partition: int) -> Checkpoint | None:
        return self.checkpoints.restore(partition)

    def save(self, partition: int, checkpoint: Checkpoint) -> None:
        self.checkpoints.save(partition, checkpoint)

    def flush(self, timeout_s: float) -> bool:
        self._write_outbox()
        return self.checkpoints.flush(timeout_s)

    def poll(self) -> None:
        self._write_outbox()
        self._cache_table.poll()
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

    def close(self) -> None:
        self._write_outbox()
        self.checkpoints.close()
        self._cache_table.close()
        if self._corrections is not None:
            self._corrections.close()
        if self.feedback is not None:
            self.feedback.close()

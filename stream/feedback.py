"""Operator corrections, applied live (issue 17, part 4).

An operator who sees a wrong verdict publishes a correction to the feedback topic
(`<group>-feedback` unless `feedback.topic` names another):

    {"template_id": "6af1…", "label": "normal", "note": "routine replica check", "by": "alice"}
    {"verdict_id": "0d9c…", "label": "normal", "by": "alice"}

It is validated (`Correction`); a record that is not one goes to the dead-letter topic with the
reason. A valid one is resolved to template ids and kept in the compacted corrections topic
(`<group>-corrections`, keyed by template id), which every instance follows: the template's
cached verdict is overridden at once, so the next window with it is published with the operator's
label, `decision: operator`, `rationale_source: operator` and the note. Restarts and other
instances read the corrections topic to its end before their first line.

A `verdict_id` resolves through the verdicts this instance published lately (`VerdictMemory`):
to `normal`, every template the verdict flagged; to `abnormal`, the verdict's only template, or
the one named beside it. A verdict_id this instance does not know is refused to the DLQ with the
reason (name the template id instead); `rationanomaly review export|import` moves corrections
to and from the expert-review CSV (training/review.py's columns).

Where the rank decision consults reviewed examples (`backend.retrieval`), each correction that
carries its template's text is also added to that memory (`learn_from_corrections`): templates
judged after it count it among their neighbours, and a withdrawn one gives its place back.
"""

from __future__ import annotations

import csv
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal
from weakref import WeakKeyDictionary

import orjson
import structlog
from confluent_kafka import Consumer, KafkaException, Message, Producer
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from rationanomaly.model.judgement import Judgement
from rationanomaly.stream.kafka_log import with_client_log
from rationanomaly.stream.records import DeadLetter, SourceRef
from rationanomaly.stream.verdicts import Verdict

log = structlog.get_logger(__name__)


class Correction(BaseModel):
    """One operator correction, as published to the feedback topic (JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    verdict_id: str | None = Field(None, min_length=1, max_length=128)
    template_id: str | None = Field(None, min_length=1, max_length=128)
    label: Literal["normal", "abnormal"]
    note: str | None = Field(None, max_length=2000)
    by: str = Field(min_length=1, max_length=200)
    at_ms: int | None = Field(None, ge=0)
    # The template's text: filled in by the detector when it knows it, so that
    # `rationanomaly review export` can hand training the input along with the label.
    template: str | None = Field(None, max_length=8000)

    @model_validator(mode="after")
    def _names_something(self) -> Correction:
        if self.verdict_id is None and self.template_id is None:
            raise ValueError("a correction names a verdict_id or a template_id (or both)")
        return self

    def judgement(self) -> Judgement:
        """What the template cache holds for a corrected template."""
        note = self.note or f"Label set to {self.label} by {self.by}."
        return Judgement(self.label, note, None, 0.0, 0, None, None,
                         decision="operator", rationale_source="operator")  # fmt: skip


def parse_correction(value: bytes | None) -> Correction:
    """Raises ValueError with a reason fit for the dead-letter header."""
    if not value:
        raise ValueError("empty record")
    try:
        return Correction.model_validate_json(value)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'record'}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"not a correction: {problems}") from None


class VerdictMemory:
    """A verdict sink that remembers the templates of the last `size` verdicts it passed on, so a
    correction naming a verdict_id can be resolved to templates."""

    def __init__(self, sink, size: int = 100_000, texts: int = 100_000) -> None:
        self._sink = sink
        self._size = size
        self._texts_max = texts
        self._templates: OrderedDict[str, tuple[tuple[str, str | None], ...]] = OrderedDict()
        self._texts: OrderedDict[str, str] = OrderedDict()

    def emit(self, verdict: Verdict) -> None:
        self._templates[verdict.verdict_id] = tuple((t.id, t.verdict) for t in verdict.templates)
        self._templates.move_to_end(verdict.verdict_id)
        if len(self._templates) > self._size:
            self._templates.popitem(last=False)
        for t in verdict.templates:
            self._texts[t.id] = t.text
            self._texts.move_to_end(t.id)
        while len(self._texts) > self._texts_max:
            self._texts.popitem(last=False)
        self._sink.emit(verdict)

    def text_of(self, template_id: str) -> str | None:
        return self._texts.get(template_id)

    def templates_of(self, verdict_id: str) -> tuple[tuple[str, str | None], ...] | None:
        return self._templates.get(verdict_id)

    def __getattr__(self, name: str):  # dead_letter, flush, close, and whatever else the sink offers
        return getattr(self._sink, name)


def resolve(correction: Correction, memory: VerdictMemory | None) -> list[str]:
    """The template ids a correction applies to; ValueError when it cannot be resolved."""
    if correction.verdict_id is None:
        return [correction.template_id]  # type: ignore[list-item]
    known = memory.templates_of(correction.verdict_id) if memory is not None else None
    if known is None:
        raise ValueError(
            f"verdict {correction.verdict_id} is not among the verdicts this detector published lately; "
            "name the template_id (the verdict's templates[].id)"
        )
    ids = [tid for tid, _ in known]
    if correction.template_id is not None:
        if correction.template_id not in ids:
            raise ValueError(f"template {correction.template_id} is not in verdict {correction.verdict_id}")
        return [correction.template_id]
    if correction.label == "normal":
        flagged = [tid for tid, label in known if label == "abnormal"]
        return flagged or ids
    if len(ids) == 1:
        return ids
    raise ValueError(
        f"verdict {correction.verdict_id} has {len(ids)} templates: name the template_id that is abnormal"
    )


def correction_record(template_id: str, correction: Correction, text: str | None = None) -> tuple[bytes, bytes]:
    """The corrections topic's record: keyed by template id, the correction with it (and the
    template's text, when known) filled in."""
    update: dict[str, str] = {"template_id": template_id}
    if text is not None and correction.template is None:
        update["template"] = text
    value = correction.model_copy(update=update).model_dump(mode="json", exclude_none=True)
    return template_id.encode(), orjson.dumps(value)


class FeedbackLoop:
    """Reads the feedback topic (one member of `<group>-feedback` per record) and writes resolved
    corrections to the corrections topic; bad records go to the sink's dead-letter topic."""

    def __init__(self, consumer: Consumer, producer: Producer, feedback_topic: str, corrections_topic: str,
                 sink, memory: VerdictMemory | None) -> None:  # fmt: skip
        self._consumer = consumer
        self._producer = producer
        self._topic = feedback_topic
        self._corrections = corrections_topic
        self._sink = sink
        self._memory = memory
        self.accepted = 0
        self.refused = 0
        consumer.subscribe([feedback_topic])

    def poll(self) -> None:
        messages = self._consumer.consume(100, 0)
        if not messages:
            return
        taken = False
        for msg in messages:
            if msg.error() is not None:
                continue
            taken = True
            self._take(msg)
        if taken:
            self._producer.flush(10)
            try:
                self._consumer.commit(asynchronous=False)
            except KafkaException as exc:  # re-read after a rebalance: corrections are idempotent
                log.info("feedback_commit_skipped", error=exc.args[0].str())

    def _take(self, msg: Message) -> None:
        source = SourceRef(msg.topic(), msg.partition(), msg.offset())
        try:
            correction = parse_correction(msg.value())
            template_ids = resolve(correction, self._memory)
        except ValueError as exc:
            self.refused += 1
            log.warning("correction_refused", source=str(source), error=str(exc))
            self._sink.dead_letter(DeadLetter(source, "feedback", str(exc), msg.value() or b"", msg.key()))
            return
        for template_id in template_ids:
            text = self._memory.text_of(template_id) if self._memory is not None else None
            key, value = correction_record(template_id, correction, text)
            self._producer.produce(self._corrections, key=key, value=value)
        self.accepted += 1
        log.info("correction_accepted", source=str(source), templates=template_ids, label=correction.label,
                 by=correction.by)  # fmt: skip

    def close(self) -> None:
        self._consumer.close()


class CorrectionMemory:
    """Teaches a reviewed-example memory (model.retrieval.ReviewedMemory) the corrections a
    template cache receives. It keeps each corrected template's text by id, since a withdrawal
    (a tombstone) names only the id."""

    def __init__(self, memory: Any) -> None:
        self.memory = memory
        self._texts: dict[str, str] = {}
        self.learned = 0
        self.unindexed = 0

    def take(self, template_id: str, correction: Correction | None) -> None:
        if correction is None:
            text = self._texts.pop(template_id, None)
            if text is not None:
                self.memory.forget(text)
                log.info("correction_forgotten", template=template_id)
            return
        text = correction.template
        if not text or not text.strip():
            # Named by id from a verdict this instance never saw: nothing to index by.
            self.unindexed += 1
            log.info("correction_not_indexed", template=template_id, reason="the correction carries no template text")
            return
        self.memory.learn(text, correction.label)
        self._texts[template_id] = text
        self.learned += 1
        log.info("correction_indexed", template=template_id, label=correction.label)


# Template cache -> the memory its corrections teach. Keyed by the cache object, whose owner
# (stream/detector_state.py) applies corrections to it without knowing of any memory.
_teaching: WeakKeyDictionary[Any, CorrectionMemory] = WeakKeyDictionary()


def learn_from_corrections(cache: Any, memory: Any) -> CorrectionMemory:
    """From now on, corrections `apply_correction` puts in `cache` are added to `memory` too."""
    teacher = CorrectionMemory(memory)
    _teaching[cache] = teacher
    return teacher


def apply_correction(cache, key: bytes, value: bytes | None) -> None:
    """A record of the corrections topic into the template cache (a tombstone withdraws it),
    and into the reviewed-example memory taught from that cache, if any."""
    template_id = key.decode("utf-8", "replace")
    teacher = _teaching.get(cache)
    if value is None:
        cache.correct(template_id, None)
        if teacher is not None:
            teacher.take(template_id, None)
        return
    try:
        correction = Correction.model_validate_json(value)
    except ValidationError:
        log.warning("correction_record_unreadable", template=template_id)
        return
    cache.correct(template_id, correction.judgement())
    log.info("correction_applied", template=template_id, label=correction.label, by=correction.by)
    if teacher is not None:
        teacher.take(template_id, correction)


# The expert-review CSV's columns (training/review.py's COLUMNS; `stream` never imports
# `training`, and a unit test keeps the two equal).
REVIEW_COLUMNS = ("id", "input", "label", "rationale", "source", "expert_label", "expert_rationale", "comment")


def export_review_csv(table: dict[bytes, bytes], path: Path) -> int:
    """The corrections topic's table as review rows: the id is the template id, the input its text,
    the correction in expert_label and expert_rationale (training merges them as expert labels)."""
    rows = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(REVIEW_COLUMNS)
        for key, value in sorted(table.items()):
            try:
                c = Correction.model_validate_json(value)
            except ValidationError:
                continue
            comment = f"by {c.by}" + (f"; verdict {c.verdict_id}" if c.verdict_id else "")
            writer.writerow([key.decode(), c.template or "", "", "", "operator", c.label, c.note or "", comment])
            rows += 1
    return rows


def read_review_csv(path: Path, by: str) -> list[Correction]:
    """Corrections from an edited review CSV: every row with an expert_label. Raises ValueError
    naming each bad row (nothing is imported from a file with one)."""
    corrections: list[Correction] = []
    errors: list[str] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        for number, row in enumerate(csv.DictReader(handle), start=2):
            label = (row.get("expert_label") or "").strip().lower()
            if not label:
                continue
            try:
                corrections.append(Correction(template_id=(row.get("id") or "").strip() or None, label=label,
                                              note=(row.get("expert_rationale") or "").strip() or None, by=by,
                                              template=(row.get("input") or "").strip() or None))  # fmt: skip
            except ValidationError as exc:
                errors.append(f"row {number}: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    if errors:
        raise ValueError(f"{path}: " + " | ".join(errors))
    return corrections


def export_corrections(settings, path: Path) -> int:
    """`rationanomaly review export`: the group's corrections topic, read to its end, as a review CSV."""
    from rationanomaly.stream.settings import librdkafka_config
    from rationanomaly.stream.state_topics import latest_by_key, read_to_end, reader_config

    kafka = librdkafka_config(settings.kafka)
    topic = settings.state.topic("corrections", settings.kafka.group_id)
    consumer = Consumer(reader_config(kafka, f"{settings.kafka.group_id}-review"))
    try:
        meta = consumer.list_topics(topic, timeout=30).topics.get(topic)
        if meta is None or meta.error is not None:
            raise ValueError(f"no corrections topic {topic} (has a detector of group {settings.kafka.group_id} run?)")
        records = read_to_end(consumer, topic, list(meta.partitions), settings.state.restore_timeout_s)
    finally:
        consumer.close()
    return export_review_csv(latest_by_key(records), path)


def import_corrections(settings, path: Path, by: str) -> int:
    """`rationanomaly review import`: the CSV's expert labels onto the feedback topic, where the
    running detectors apply them like any other correction."""
    from rationanomaly.stream.settings import librdkafka_config

    corrections = read_review_csv(path, by)
    producer = Producer(with_client_log({**librdkafka_config(settings.kafka), "enable.idempotence": True}))
    topic = settings.feedback.topic_for(settings.kafka.group_id)
    for c in corrections:
        producer.produce(topic, value=c.model_dump_json(exclude_none=True).encode())
    if producer.flush(30):
        raise RuntimeError(f"corrections not delivered to {topic} within 30 s")
    return len(corrections)

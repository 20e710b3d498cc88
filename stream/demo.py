"""`rationanomaly demo`: the embedded sample through a real broker and the default model."""

from __future__ import annotations

import tempfile
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.sample import sample_lines
from rationanomaly.stream.settings import load_settings


def _create_topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    # The sample's events are from 2008 and verdicts carry event time: keep them past retention.
    topics = [NewTopic(n, num_partitions=1, replication_factor=1, config={"retention.ms": "-1"}) for n in names]
    futures = admin.create_topics(topics)
    for future in futures.values():
        future.result(30)


def _read_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0) -> list[dict]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"demo-reader-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    out: list[dict] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 1.0):
                if msg.error() is None:
                    out.append(orjson.loads(msg.value()))
    finally:
        consumer.close()
    return out


def run_demo(bootstrap: str, blocks: int) -> int:
    run_id = uuid.uuid4().hex[:8]
    logs, verdicts, dlq = f"demo-logs-{run_id}", f"demo-verdicts-{run_id}", f"demo-dlq-{run_id}"
    _create_topics(bootstrap, logs, verdicts, dlq)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    lines = sample_lines(blocks)
    for line in lines:
        producer.produce(logs, value=line.encode())
    producer.flush(30)
    print(f"produced {len(lines)} HDFS lines ({blocks} blocks) to {logs}; judging with the default model ...")
    with tempfile.TemporaryDirectory() as checkpoints:
        settings = load_settings(
            None,
            kafka={"bootstrap_servers": bootstrap, "group_id": f"demo-{run_id}"},
            input={"topic": logs},
            output={"topic": verdicts, "dlq_topic": dlq},
            checkpoint={"dir": Path(checkpoints)},
            metrics={"port": None},
        )
        started = time.monotonic()
        Detector(settings, limits=RunLimits(stop_at_eof=True, max_seconds=900)).run()
        seconds = time.monotonic() - started
    results = _read_all(bootstrap, verdicts, expected=blocks)
    abnormal = [v for v in results if v["verdict"] == "abnormal"]
    print(f"{len(results)} verdicts in {seconds:.1f}s on {verdicts}: {len(abnormal)} abnormal, "
          f"{sum(v['verdict'] == 'unknown' for v in results)} unknown")
    for v in sorted(results, key=lambda v: v["window"]["start_ms"]):
        print(f"  {v['verdict']:<9} {v['window']['key']:<26} lines={v['window']['lines']:<3} id={v['verdict_id'][:12]}")
    for v in abnormal[:3]:
        print(f"\nwhy {v['window']['key']} is abnormal:\n  " + (v.get("rationale") or "").replace("\n", "\n  "))
    return 0 if len(results) == blocks else 1

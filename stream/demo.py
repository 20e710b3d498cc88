"""`rationanomaly demo`: the embedded sample through a real broker and the default model."""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from rationanomaly.stream.app import Detector, RunLimits
from rationanomaly.stream.kafka_log import with_client_log
from rationanomaly.stream.sample import sample_lines
from rationanomaly.stream.settings import load_settings


def _create_topics(bootstrap: str, *names: str) -> None:
    admin = AdminClient(with_client_log({"bootstrap.servers": bootstrap}))
    # The sample's events are from 2008 and verdicts carry event time: keep them past retention.
    topics = [NewTopic(n, num_partitions=1, replication_factor=1, config={"retention.ms": "-1"}) for n in names]
    futures = admin.create_topics(topics)
    for future in futures.values():
        future.result(30)


def _verdict_reader(bootstrap: str, topic: str) -> Consumer:
    consumer = Consumer(with_client_log({
        "bootstrap.servers": bootstrap,
        "group.id": f"demo-reader-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }))  # fmt: skip
    consumer.subscribe([topic])
    return consumer


def _verdict_line(verdict: dict) -> str:
    window = verdict["window"]
    return f"  {verdict['verdict']:<9} {window['key']:<26} lines={window['lines']:<3} id={verdict['verdict_id'][:12]}"


def run_demo(bootstrap: str, blocks: int) -> int:
    run_id = uuid.uuid4().hex[:8]
    logs, verdicts, dlq = f"demo-logs-{run_id}", f"demo-verdicts-{run_id}", f"demo-dlq-{run_id}"
    _create_topics(bootstrap, logs, verdicts, dlq)
    producer = Producer(with_client_log({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True}))
    lines = sample_lines(blocks)
    for line in lines:
        producer.produce(logs, value=line.encode())
    producer.flush(30)
    print(f"produced {len(lines)} HDFS lines ({blocks} blocks) to {logs}; judging with the default model ...", flush=True)
    reader = _verdict_reader(bootstrap, verdicts)
    results: list[dict] = []
    failure: list[BaseException] = []
    with tempfile.TemporaryDirectory() as checkpoints:
        settings = load_settings(
            None,
            kafka={"bootstrap_servers": bootstrap, "group_id": f"demo-{run_id}"},
            input={"topic": logs},
            output={"topic": verdicts, "dlq_topic": dlq},
            checkpoint={"dir": Path(checkpoints)},
            metrics={"port": None},
        )
        detector = Detector(settings, limits=RunLimits(stop_at_eof=True, max_seconds=900))

        def judge() -> None:
            try:
                detector.run()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
                failure.append(exc)

        # The detector runs beside a reader of its output topic, so each verdict is printed the
        # moment it is published rather than all of them at the end.
        started = time.monotonic()
        worker = threading.Thread(target=judge, name="detector", daemon=True)
        worker.start()
        try:
            drain_until: float | None = None
            while len(results) < blocks:
                if drain_until is None and not worker.is_alive():
                    drain_until = time.monotonic() + 30.0  # what it published is on its way
                if drain_until is not None and time.monotonic() > drain_until:
                    break
                for msg in reader.consume(100, 0.5):
                    if msg.error() is None:
                        results.append(orjson.loads(msg.value()))
                        print(_verdict_line(results[-1]), flush=True)
            worker.join()
        finally:
            reader.close()
        seconds = time.monotonic() - started
    if failure:
        raise failure[0]
    abnormal = [v for v in results if v["verdict"] == "abnormal"]
    print(f"{len(results)} verdicts in {seconds:.1f}s on {verdicts}: {len(abnormal)} abnormal, "
          f"{sum(v['verdict'] == 'unknown' for v in results)} unknown")
    for v in abnormal[:3]:
        print(f"\nwhy {v['window']['key']} is abnormal:\n  " + (v.get("rationale") or "").replace("\n", "\n  "))
    return 0 if len(results) == blocks else 1

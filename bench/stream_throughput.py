"""Stream-path throughput on HDFS_20000.log, beside Drain3 alone on the same lines, in one run.

Prints figures; asserts nothing. Usage (a broker must be up: `make kafka-up`):

    .venv/bin/python bench/stream_throughput.py [--bootstrap 127.0.0.1:9092] [--repeats 3]

1. Drain3 alone: a bare TemplateMiner over the lines' content (headers split beforehand, untimed).
2. Replay path: `replay_files` over the file (decode → profile → Drain3 → windows → verdicts).
3. Kafka path: the live Detector over a one-partition topic holding the file, with the template
   cache warm (the real model's answers memoised from step 0), read until end of input.
4. Kafka path with the repartition hop: the file produced into a `--hop-partitions` topic keyed
   by the line's component field (as a shipper keys by source, tests/integration/test_scale_out.py),
   so each line goes input → `<group>-repartition` → windows in the same Detector.
Ratios to Drain3-alone's rate (measured beside each, in the same run) are printed; the target is
the stream path at ≥ 0.5×. Lines/s counts input lines from the first record received to the end
of input.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drain3 import TemplateMiner  # noqa: E402
from drain3.template_miner_config import TemplateMinerConfig  # noqa: E402

from rationanomaly.model.backends import make_backend  # noqa: E402
from rationanomaly.model.settings import BackendSettings  # noqa: E402
from rationanomaly.stream.app import Detector, RunLimits  # noqa: E402
from rationanomaly.stream.decoding import Decoder  # noqa: E402
from rationanomaly.stream.profiles import HeaderParser, resolve_profile  # noqa: E402
from rationanomaly.stream.records import DeadLetter, SourceRef  # noqa: E402
from rationanomaly.stream.replay import replay_files  # noqa: E402
from rationanomaly.stream.settings import load_settings  # noqa: E402
from tests.integration.detector_support import MemoBackend, create_topics, file_values, produce_lines, unique  # noqa: E402

# An HDFS line's component field ("dfs.DataNode$PacketResponder"): the key a shipper would give it.
COMPONENT = re.compile(rb"^\S+ \S+ \S+ \S+ (\S+?):")


def drain3_alone(contents: list[str]) -> float:
    config = TemplateMinerConfig()
    config.load(str(REPO / "stream" / "drain3.ini"))
    miner = TemplateMiner(persistence_handler=None, config=config)
    started = time.perf_counter()
    for content in contents:
        miner.add_log_message(content)
    return len(contents) / (time.perf_counter() - started)


def produce_keyed(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """The file keyed by component, the partitioner spreading keys over the topic's partitions."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    for value in values:
        match = COMPONENT.match(value)
        while True:
            try:
                producer.produce(topic, value=value, key=match.group(1) if match else None)
                break
            except BufferError:
                producer.poll(0.5)
    if producer.flush(60):
        raise RuntimeError("lines not delivered")


def kafka_run(args, values, backend, backend_settings, judging, partitions: int) -> float:
    """Input lines/s of one Detector over a fresh topic of `partitions` (more than one: keyed by
    component, so the repartition hop is on), from its first record to end of input."""
    logs, out, dlq = unique("bench"), unique("bench-out"), unique("bench-dlq")
    create_topics(args.bootstrap, out, dlq)
    create_topics(args.bootstrap, logs, partitions=partitions)
    if partitions == 1:
        produce_lines(args.bootstrap, logs, values)
    else:
        produce_keyed(args.bootstrap, logs, values)
    kafka_settings = load_settings(
        None,
        kafka={"bootstrap_servers": args.bootstrap, "group_id": unique("bench")},
        input={"topic": logs},
        output={"topic": out, "dlq_topic": dlq},
        profile={"name": "hdfs"},
        metrics={"port": None},
        checkpoint={"dir": Path("/tmp") / unique("bench-ckpt")},
        backend=backend_settings.model_dump(),
        judging=judging,
    )
    detector = Detector(kafka_settings, RunLimits(stop_at_eof=True), backend=backend)
    if detector.run() != 0:
        raise RuntimeError("the detector failed")
    if partitions > 1 and detector._rekeyer is None:  # noqa: SLF001 - the figure must be the hop's
        raise RuntimeError("the repartition hop was not on")
    # from the first record received to end of input: group join and start-up excluded
    return len(values) / (detector.finished_s - detector.first_record_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default=os.environ.get("RATIONANOMALY_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO.parent / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hop-partitions", type=int, default=6, help="input partitions for the hop run; 0: skip it")
    args = parser.parse_args()
    path = args.data / "raw" / "HDFS_20000.log"
    values = file_values(path)

    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None})
    decoder, headers = Decoder(settings.input.decode), HeaderParser(resolve_profile(settings.profile))
    contents = []
    for i, value in enumerate(values):
        record = decoder.decode(value, None, SourceRef("bench", 0, i), None)
        header = headers.split(record) if not isinstance(record, DeadLetter) else record
        if not isinstance(header, DeadLetter):
            contents.append(header.content)

    backend_settings = BackendSettings(kind="transformers", max_new_tokens=args.max_new_tokens, device="cpu")
    backend = MemoBackend(make_backend(backend_settings))
    # The template cache persists between runs: after the warm-up, no run asks the model again.
    cache_file = Path("/tmp") / unique("bench-template-cache") / "templates.json"
    judging = {"cache_file": cache_file}
    settings = load_settings(
        None, profile={"name": "hdfs"}, metrics={"port": None}, backend=backend_settings.model_dump(), judging=judging
    )

    started = time.perf_counter()
    warm = replay_files([path], settings, io.BytesIO(), backend=backend, progress=False)
    warm_s = time.perf_counter() - started
    print(f"warm-up replay (model judging {backend.calls} templates): {warm_s:.1f}s, "
          f"{backend.calls / warm_s:.2f} templates/s end to end, {warm.verdicts} verdicts")
    if args.hop_partitions:
        # Behind the hop each repartition partition has its own miner, whose templates can differ
        # from one miner's over the file (stream/README.md, "Drain3 placement"): one untimed hop
        # run puts those in the cache too.
        kafka_run(args, values, backend, backend_settings, judging, args.hop_partitions)
        print(f"warm-up hop run: the model judged {backend.calls} templates in all", flush=True)
    calls_after_warm_up = backend.calls

    d3, rp, kf, hop = [], [], [], []
    for _ in range(args.repeats):
        d3.append(drain3_alone(contents))
        summary = replay_files([path], settings, io.BytesIO(), backend=backend, progress=False)
        rp.append(summary.lines_per_s)
        kf.append(kafka_run(args, values, backend, backend_settings, judging, 1))
        if args.hop_partitions:
            hop.append(kafka_run(args, values, backend, backend_settings, judging, args.hop_partitions))
        print(f"  repeat: drain3 {d3[-1]:,.0f}  replay {rp[-1]:,.0f}  kafka {kf[-1]:,.0f}"
              + (f"  hop {hop[-1]:,.0f}" if hop else "") + " lines/s", flush=True)

    d3m, rpm, kfm = statistics.median(d3), statistics.median(rp), statistics.median(kf)
    print(f"model calls after the warm-up: {backend.calls - calls_after_warm_up} (the cache answered)")
    print(f"lines: {len(values)}  repeats: {args.repeats} (medians)")
    print(f"drain3 alone          {d3m:>10,.0f} lines/s")
    print(f"replay path (files)   {rpm:>10,.0f} lines/s   ratio {rpm / d3m:.2f}")
    print(f"kafka path (broker)   {kfm:>10,.0f} lines/s   ratio {kfm / d3m:.2f}   (target ≥ 0.50)")
    if hop:
        hopm = statistics.median(hop)
        print(f"kafka path, hop ({args.hop_partitions}p) {hopm:>9,.0f} lines/s   ratio {hopm / d3m:.2f}   "
              "(input keyed by component → <group>-repartition → windows)")


if __name__ == "__main__":
    main()

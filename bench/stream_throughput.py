"""Stream-path throughput beside Drain3 alone on the same lines, paired run by run.

Prints figures; asserts nothing. Usage (a broker must be up: `make kafka-up`):

    .venv/bin/python bench/stream_throughput.py [--bootstrap 127.0.0.1:9092] [--repeats 3] [--lines N]

The input is HDFS_20000.log, or with `--lines N` that many lines: the file written out again and
again with shifted block ids and times (bench/replay_memory.py's `write_input`), so every copy's
blocks are new sessions and the windows of one copy close while the next is read.

Paths measured, each repeat in this order, with Drain3 alone run right before and right after
every stream run (d3 · parser · d3 · replay · d3 · kafka · d3 · hop · d3):
1. Drain3 alone: a bare TemplateMiner over the lines' content (headers split beforehand, untimed).
   Beside it, "parser alone": the stream's own miner over the same contents (the same masking
   and Drain3, with its memo of contents seen, stream/parsing.py), so the template step's share
   of every path's rate can be read off.
2. Replay path: `replay_files` over the file (decode → profile → Drain3 → windows → verdicts).
3. Kafka path: the live Detector over a one-partition topic holding the file, with the template
   cache warm (the real model's answers memoised in an untimed warm-up), read until end of input.
4. Kafka path with the repartition hop: the file produced into a `--hop-partitions` topic keyed
   by the line's component field (as a shipper keys by source, tests/integration/test_scale_out.py),
   so each line goes input → `<group>-repartition` → windows in the same Detector.

Each stream run's ratio is its rate over the mean of the two Drain3-alone rates beside it: this
box's speed drifts by tens of percent within minutes, and a pair a few seconds apart shares the
drift. The medians of those per-pair ratios are the figures; the target is ≥ 0.5×.

For a Kafka run three rates are printed, all input lines over a time measured from the first
record received (group join and start-up excluded):
- whole run: to the end of input, every fixed cost of the end included (the last windows' flush,
  the verdicts, and the detector's end-of-input detection).
- less the end wait: the whole run less the time between the last line fed to the windows and
  the detector's decision that input has ended (RunLimits.stop_at_eof; behind the hop that waits
  for the group's commit of the input partitions). A detector that never stops never waits for
  it. The waited seconds are printed beside it.
- steady: lines fed from 10% to 90% of the input over that span; start-up and the end left out.
  At 20k lines most windows close only at the end, so this leaves most verdict work out: it is
  a per-line figure only with `--lines` long enough for windows to close along the way. Behind
  the hop the lines counted are those fed to the windows, and the forward side runs ahead of
  them (the input is all on the topic before the run starts), so much of its work falls before
  the 10% mark: the hop's steady rate overstates its per-line rate; read its other two.
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

from bench.replay_memory import write_input  # noqa: E402
from rationanomaly.model.backends import make_backend  # noqa: E402
from rationanomaly.model.settings import BackendSettings  # noqa: E402
from rationanomaly.stream.app import Detector, RunLimits  # noqa: E402
from rationanomaly.stream.decoding import Decoder  # noqa: E402
from rationanomaly.stream.parsing import TemplateParser  # noqa: E402
from rationanomaly.stream.pipeline import Pipeline  # noqa: E402
from rationanomaly.stream.profiles import HeaderParser, resolve_profile  # noqa: E402
from rationanomaly.stream.records import DeadLetter, SourceRef  # noqa: E402
from rationanomaly.stream.replay import replay_files  # noqa: E402
from rationanomaly.stream.settings import load_settings  # noqa: E402
from tests.integration.detector_support import MemoBackend, create_topics, file_values, produce_lines, unique  # noqa: E402

# An HDFS line's component field ("dfs.DataNode$PacketResponder"): the key a shipper would give it.
COMPONENT = re.compile(rb"^\S+ \S+ \S+ \S+ (\S+?):")


class _Trace:
    """When the pipeline's line count last moved, batch by batch, and when the end's flush began.

    Taken from `Pipeline.advance` (once a batch) and `Pipeline.finish` (once input has ended),
    wrapped by `trace_pipeline` in this process only: nothing is added to the per-line path."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.points: list[tuple[float, int]] = []  # (monotonic time, lines fed so far)
        self.finish_s: float | None = None


TRACE = _Trace()


def trace_pipeline() -> None:
    """Wraps Pipeline.advance and .finish in this process (main() only: stream_scaling imports
    from this module and must run the pipeline as shipped)."""
    advance, finish = Pipeline.advance, Pipeline.finish

    def traced_advance(self: Pipeline, now_s: float, idle: bool = True) -> None:
        points = TRACE.points
        if not points or points[-1][1] != self.lines:
            points.append((time.monotonic(), self.lines))
        advance(self, now_s, idle)

    def traced_finish(self: Pipeline) -> None:
        if TRACE.finish_s is None:
            TRACE.finish_s = time.monotonic()
        finish(self)

    Pipeline.advance, Pipeline.finish = traced_advance, traced_finish


def drain3_alone(contents: list[str]) -> float:
    config = TemplateMinerConfig()
    config.load(str(REPO / "stream" / "drain3.ini"))
    miner = TemplateMiner(persistence_handler=None, config=config)
    started = time.perf_counter()
    for content in contents:
        miner.add_log_message(content)
    return len(contents) / (time.perf_counter() - started)


def parser_alone(contents: list[str], parsing) -> float:
    """The stream's own miner (stream/parsing.py: the same masking, Drain3, and its memo of
    contents seen) over the same contents: how much of a path's rate is the template step."""
    parser = TemplateParser(parsing)
    started = time.perf_counter()
    for content in contents:
        parser.parse(content)
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


def kafka_run(args, values, backend, backend_settings, judging, partitions: int) -> dict[str, float]:
    """One Detector over a fresh topic of `partitions` (more than one: keyed by component, so the
    repartition hop is on), to end of input: its rates, input lines/s (see the module's doc)."""
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
    TRACE.reset()
    if detector.run() != 0:
        raise RuntimeError("the detector failed")
    if partitions > 1 and detector._rekeyer is None:  # noqa: SLF001 - the figure must be the hop's
        raise RuntimeError("the repartition hop was not on")
    start, end = detector.first_record_s, detector.finished_s
    fed = TRACE.points[-1][1]
    all_fed = next(t for t, n in TRACE.points if n >= fed)
    end_wait = max(0.0, (TRACE.finish_s or end) - all_fed)

    def reached(fraction: float) -> float:
        return next(t for t, n in TRACE.points if n >= fraction * fed)

    a, b = reached(0.1), reached(0.9)
    return {
        "whole": len(values) / (end - start),
        "less_wait": len(values) / (end - start - end_wait),
        "steady": (0.8 * len(values)) / (b - a) if b > a else float("nan"),
        "end_wait_s": end_wait,
        "span_s": end - start,
        "start": start,  # time.monotonic() of the first record, and of the end
        "end": end,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default=os.environ.get("RATIONANOMALY_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO.parent / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lines", type=int, default=None,
                        help="input lines: HDFS_20000.log repeated with shifted block ids and times (default: the file once)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--hop-partitions", type=int, default=6, help="input partitions for the hop run; 0: skip it")
    args = parser.parse_args()
    trace_pipeline()
    path = args.data / "raw" / "HDFS_20000.log"
    if args.lines is not None:
        longer = Path("/tmp") / f"rationanomaly-throughput-{args.lines}.log"
        write_input(path, longer, args.lines)
        path = longer
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

    d3: list[float] = []
    ratios: dict[str, list[float]] = {}
    rates: dict[str, list[float]] = {}
    waits: dict[str, list[float]] = {}

    def paired(name: str, figures: dict[str, float]) -> str:
        """Stream rates over the mean of the Drain3-alone rates just before and just after."""
        d3.append(drain3_alone(contents))
        beside = (d3[-2] + d3[-1]) / 2
        parts = []
        for figure, rate in figures.items():
            label = f"{name} {figure}"
            rates.setdefault(label, []).append(rate)
            ratios.setdefault(label, []).append(rate / beside)
            parts.append(f"{figure} {rate:,.0f} ({rate / beside:.2f})")
        return f"{name}: " + ", ".join(parts)

    def kafka_figures(name: str, partitions: int) -> str:
        run = kafka_run(args, values, backend, backend_settings, judging, partitions)
        waits.setdefault(name, []).append(run["end_wait_s"])
        text = paired(name, {"whole run": run["whole"], "less end wait": run["less_wait"], "steady": run["steady"]})
        return f"{text} [span {run['span_s']:.2f}s, end wait {run['end_wait_s']:.2f}s]"

    for repeat in range(args.repeats):
        d3.append(drain3_alone(contents))
        rows = [paired("parser alone", {"whole run": parser_alone(contents, settings.parsing)})]
        rows.append(paired("replay", {"whole run": replay_files([path], settings, io.BytesIO(), backend=backend,
                                                             progress=False).lines_per_s}))  # fmt: skip
        rows.append(kafka_figures("kafka", 1))
        if args.hop_partitions:
            rows.append(kafka_figures("hop", args.hop_partitions))
        print(f"repeat {repeat + 1}: drain3 alone " + " / ".join(f"{r:,.0f}" for r in d3[-len(rows) - 1:]) + " lines/s",
              flush=True)  # fmt: skip
        for row in rows:
            print("  " + row, flush=True)

    print(f"model calls after the warm-up: {backend.calls - calls_after_warm_up} (the cache answered)")
    print(f"lines: {len(values)}  repeats: {args.repeats}  drain3 alone runs: {len(d3)}, median "
          f"{statistics.median(d3):,.0f} lines/s (min {min(d3):,.0f}, max {max(d3):,.0f})")
    print("medians; the ratio is the median of per-pair ratios (each run over the Drain3-alone rates beside it):")
    for label, values_ in rates.items():
        note = ""
        if label.endswith("whole run") and label.split()[0] in waits:
            note = f"   (end wait median {statistics.median(waits[label.split()[0]]):.2f}s, included)"
        elif label.endswith("less end wait"):
            note = "   (end-of-input detection left out)"
        elif label.endswith("steady"):
            note = "   (10%-90% of lines fed; start and end left out" + (
                "; the forward side ran ahead: overstated)" if label.startswith("hop") else ")")
        print(f"  {label:<24} {statistics.median(values_):>9,.0f} lines/s   ratio {statistics.median(ratios[label]):.2f}{note}")
    print("target: the kafka and hop paths at ≥ 0.50 of Drain3 alone"
          + (f"; hop = input keyed by component over {args.hop_partitions} partitions → <group>-repartition → windows"
             if args.hop_partitions else ""))


if __name__ == "__main__":
    main()

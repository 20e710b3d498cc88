"""Group throughput with 1 and 2 detector processes in one consumer group, on this machine's cores.

Prints figures; asserts nothing. Usage (a broker must be up: `make kafka-up`):

    .venv/bin/python bench/stream_scaling.py [--bootstrap 127.0.0.1:9092] [--repeats 2] [--partitions 6]
        [--lines 200000]

For each run, HDFS_20000.log (or, with `--lines`, that many lines: the file written out again and
again with shifted block ids and times by bench/replay_memory.py's `write_input`, as for the memory
bench) is produced into a fresh input topic of `--partitions` partitions keyed by the line's
component field (as a shipper keys by source), so the repartition hop is on: input →
`<group>-repartition` → windows. Each member is its own OS process (multiprocessing, spawn)
running the live Detector with the template cache warm (a copy of one file filled by a replay
with the real model beforehand), so no member asks the model. Members load and connect first;
all are then started together. The group's whole-run rate is the input's lines over the time
from the first record any member received to the end of input at the last member
(CLOCK_MONOTONIC is one clock for every process on Linux), so it includes any rebalance between
members and the wait for the last windows' verdicts.

The steady rate leaves the start and the end out: each member samples, every 0.1 s, the records
it has fed behind the hop (window-topic lines) and whether it holds partitions with none still
being taken. The steady span starts when every member holds its assignment (or at the first
record, if later) and ends when the group has fed 99% of its run's total; the rate is the
group's window-topic records fed in it over its length (none, "nan", when the group settled after
half its input had been fed). Window-topic records are input lines
counted once per window key they name (one each in HDFS_20000).

Each run says how its group formed. The test broker completes a new group's first rebalance as
soon as one member joins (`group.initial.rebalance.delay.ms=0`; Kafka's default is 3 s), so
whether members started together land in one rebalance is a race. Won ("formed at once"), each
member holds its share from the first record. Lost ("in steps"), the first member takes every
partition, and the cooperative protocol moves half of them over the next rounds while that member
forwards and forms windows it hands over: lines are read twice and the settling takes seconds. A
last line gives the medians of the groups formed at once.

Each run prints the CPU its members and the brokers on this machine used, beside the core-seconds
the machine had. This machine's speed drifts by tens of percent within minutes, so a larger
group's runs are also given as ratios over the first size's runs just before and after each.

Each member's log goes to its own file; a run that does not end in time prints which members had
not ended and the last lines of their logs.
"""

from __future__ import annotations

import argparse
import io
import multiprocessing as mp
import os
import queue
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from rationanomaly.model.backends import make_backend  # noqa: E402
from rationanomaly.model.settings import BackendSettings  # noqa: E402
from rationanomaly.stream.app import Detector, RunLimits  # noqa: E402
from rationanomaly.stream.replay import replay_files  # noqa: E402
from rationanomaly.stream.settings import load_settings  # noqa: E402
from bench.replay_memory import write_input  # noqa: E402
from bench.stream_throughput import produce_keyed  # noqa: E402
from tests.integration.detector_support import MemoBackend, create_topics, file_values, unique  # noqa: E402


SAMPLE_S = 0.1


def _sample(detector: Detector, samples: list[tuple[float, int, bool]], done: threading.Event) -> None:
    """(monotonic time, window-topic records fed so far, holds its assignment) every SAMPLE_S."""
    while not done.wait(SAMPLE_S):
        engine = detector._engine  # noqa: SLF001 - made inside run()
        if engine is None:
            continue
        settled = bool(detector._assigned or detector._hop_assigned) and not detector._pending  # noqa: SLF001
        samples.append((time.monotonic(), engine.pipeline.lines, settled))


def member(index: int, log_path: str, overrides: dict, backend_dump: dict, ready, go, results) -> None:
    """One detector process: load, say ready, wait for the start, run to end of input, report."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(log, 1)  # the detector's log and librdkafka's, one file a member
    os.dup2(log, 2)
    sys.stdout.reconfigure(line_buffering=True)  # a member killed as hung keeps its last lines
    sys.stderr.reconfigure(line_buffering=True)
    backend = MemoBackend(make_backend(BackendSettings(**backend_dump)))
    detector = Detector(load_settings(None, **overrides), RunLimits(stop_at_eof=True), backend=backend)
    samples: list[tuple[float, int, bool]] = []
    done = threading.Event()
    sampler = threading.Thread(target=_sample, args=(detector, samples, done), daemon=True)
    ready.release()
    go.wait()
    cpu = time.process_time()  # this process, every thread (librdkafka's too)
    sampler.start()
    rc = detector.run()
    done.set()
    sampler.join()
    pipeline = detector._engine.pipeline  # noqa: SLF001 - counts for the report
    results.put((index, rc, detector.first_record_s, detector.finished_s, pipeline.lines, pipeline.verdicts, backend.calls,
                 samples, time.process_time() - cpu))  # fmt: skip


def steady(reports: list[tuple]) -> tuple[float, float, float, int]:
    """Settled time, end of the steady span, window-topic records/s in it, records in it."""
    first = min(r[2] for r in reports if r[2] is not None)
    settled = max(first, *(next((t for t, _, held in r[7] if held), float("inf")) for r in reports))
    times = sorted({t for r in reports for t, _, _ in r[7]})
    total = sum(r[4] for r in reports)

    def fed(at: float) -> int:  # the group's records fed by `at` (each member's last sample before it)
        return sum(next((n for t, n, _ in reversed(r[7]) if t <= at), 0) for r in reports)

    end = next((t for t in times if fed(t) >= 0.99 * total), times[-1] if times else settled)
    if end <= settled:
        return settled, end, float("nan"), 0
    records = fed(end) - fed(settled)
    if records < total / 2:  # the group settled late: too little of the run left to call steady
        return settled, end, float("nan"), records
    return settled, end, records / (end - settled), records


def broker_cpu_s() -> float | None:
    """CPU seconds used so far by the Kafka brokers on this machine (every `kafka.Kafka` JVM), or
    None when there is none to read (a remote broker)."""
    total, found = 0.0, False
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if b"kafka.Kafka" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        found = True
    return total if found else None


class RunHung(RuntimeError):
    """A group run that did not reach the end of its input in time."""


def merge_caches(into: Path, other: Path) -> None:
    """`other`'s judged templates added to the template-cache file `into` (same model and prompt)."""
    base, extra = orjson.loads(into.read_bytes()), orjson.loads(other.read_bytes())
    if (base["model_id"], base["prompt_version"]) == (extra["model_id"], extra["prompt_version"]):
        base["templates"].update(extra["templates"])
        into.write_bytes(orjson.dumps(base))


def group_run(args, values: list[bytes], members: int, backend_dump: dict, cache: Path) -> tuple[float, list[tuple], list[Path]]:
    """One run of a `members`-process group over a fresh topic: input lines/s, reports sorted by
    member, the members' saved caches."""
    logs, out, dlq, group = unique("scale"), unique("scale-out"), unique("scale-dlq"), unique("scale")
    create_topics(args.bootstrap, out, dlq)
    create_topics(args.bootstrap, logs, partitions=args.partitions)
    produce_keyed(args.bootstrap, logs, values)
    ctx = mp.get_context("spawn")
    ready, go, results = ctx.Semaphore(0), ctx.Event(), ctx.Queue()
    procs, caches, logs_of = [], [], []
    for i in range(members):
        own_cache = cache.parent / f"{group}-{i}.json"  # each member saves its cache: not one file for two
        shutil.copyfile(cache, own_cache)
        caches.append(own_cache)
        overrides = dict(
            kafka={"bootstrap_servers": args.bootstrap, "group_id": group},
            input={"topic": logs},
            output={"topic": out, "dlq_topic": dlq},
            profile={"name": "hdfs"},
            metrics={"port": None},
            backend=backend_dump,
            judging={"cache_file": own_cache},
        )
        log_path = cache.parent / f"{group}-{i}.log"
        logs_of.append(log_path)
        proc = ctx.Process(target=member, args=(i, str(log_path), overrides, backend_dump, ready, go, results))
        proc.start()
        procs.append(proc)
    for _ in procs:
        if not ready.acquire(timeout=300):
            raise RuntimeError("a member did not load in time")
    broker_before, wall_before = broker_cpu_s(), time.monotonic()
    go.set()
    reports: list[tuple] = []
    deadline = time.monotonic() + args.run_timeout
    try:
        while len(reports) < len(procs):
            reports.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    except queue.Empty:
        # Seen in two-member groups: one member ends and leaves, the other does not reach its
        # end. Reported with who did not end and what it logged last, rather than waited out.
        ended = {r[0] for r in reports}
        for i, log_path in enumerate(logs_of):
            if i not in ended:
                tail = log_path.read_bytes().decode("utf-8", "replace").splitlines()[-15:]
                print(f"  member {i} of {members} did not end; last lines of {log_path}:", flush=True)
                print("\n".join(f"    {line[:300]}" for line in tail), flush=True)
        for proc in procs:
            proc.kill()
        raise RunHung(f"{members} member(s): no end of input within {args.run_timeout}s "
                      f"(members ended: {sorted(ended)})") from None
    broker_after, wall = broker_cpu_s(), time.monotonic() - wall_before
    for proc in procs:
        proc.join(60)
    if any(r[1] != 0 for r in reports):
        raise RuntimeError(f"a member failed: {reports}")
    reports.sort(key=lambda r: r[0])
    first = min(r[2] for r in reports if r[2] is not None)
    last = max(r[3] for r in reports if r[3] is not None)
    for log_path in logs_of:
        log_path.unlink()
    members_cpu = sum(r[8] for r in reports)
    broker = f"{broker_after - broker_before:.1f}" if broker_before is not None and broker_after is not None else "?"
    print(f"  CPU from the start signal to the last member's end ({wall:.1f}s, {os.cpu_count() * wall:.1f} core-s on "
          f"this machine): members {members_cpu:.1f} core-s, broker {broker} core-s", flush=True)  # fmt: skip
    return len(values) / (last - first), reports, caches


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", default=os.environ.get("RATIONANOMALY_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO.parent / "shared" / "data")))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--run-timeout", type=float, default=120.0, help="seconds a group run may take")
    parser.add_argument("--lines", type=int, default=None,
                        help="input lines: HDFS_20000.log repeated with shifted block ids and times (default: the file once)")
    args = parser.parse_args()
    path = args.data / "raw" / "HDFS_20000.log"
    if args.lines is None:
        values = file_values(path)
    else:
        longer = Path("/tmp") / unique("bench-scaling-input")
        write_input(path, longer, args.lines)
        values = file_values(longer)
        longer.unlink()

    backend_settings = BackendSettings(kind="transformers", max_new_tokens=64, device="cpu")
    backend_dump = backend_settings.model_dump()
    cache = Path("/tmp") / unique("bench-scaling-cache") / "templates.json"
    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None}, backend=backend_dump,
                             judging={"cache_file": cache})  # fmt: skip
    backend = MemoBackend(make_backend(backend_settings))
    started = time.perf_counter()
    replay_files([path], settings, io.BytesIO(), backend=backend, progress=False)
    print(f"warm-up replay: {backend.calls} templates judged by the model in {time.perf_counter() - started:.1f}s", flush=True)
    del backend

    # Behind the hop each repartition partition has its own miner, and a line's template can
    # differ a little from the replay's (and with the order lines arrive in): untimed group runs
    # first (at most three), each member's saved cache merged in, until one asks the
    # model nothing. The measured runs print their model calls.
    # A template comes from a repartition partition's lines, not from which member mines them:
    # one-member runs warm the cache for every group size.
    for n in args.members[:1]:
        for _ in range(3):
            try:
                _, reports, saved = group_run(args, values, n, backend_dump, cache)
            except RunHung as exc:
                print(f"warm-up: {exc}", flush=True)
                continue
            calls = sum(r[6] for r in reports)
            print(f"warm-up, {n} member(s): {calls} model calls", flush=True)
            for own in saved:
                merge_caches(cache, own)
            if not calls:
                break

    rates: dict[int, list[float]] = {n: [] for n in args.members}
    steady_rates: dict[int, list[float]] = {n: [] for n in args.members}
    at_once: dict[int, list[float]] = {n: [] for n in args.members}  # whole-run rates of groups formed at once
    sequence: list[tuple[int, float]] = []  # (members, whole-run rate) in the order run
    # Verdicts published by the first group size's first run: a run of another size that publishes
    # a different number split (or lost) windows, which a rate does not show.
    verdicts_seen: int | None = None
    for _ in range(args.repeats):
        for n in args.members:
            try:
                rate, reports, _ = group_run(args, values, n, backend_dump, cache)
            except RunHung as exc:
                print(f"  {exc}", flush=True)
                continue
            rates[n].append(rate)
            sequence.append((n, rate))
            start = min(r[2] for r in reports if r[2] is not None)
            settled, end, steady_rate, records = steady(reports)
            if steady_rate == steady_rate:  # NaN: the group settled after half its input
                steady_rates[n].append(steady_rate)
            # How the group formed. The coordinator completes a new group's first rebalance as
            # soon as its first member joins (group.initial.rebalance.delay.ms: 0 on the test
            # broker, 3 s by default): a member whose join lands after that starts with nothing,
            # and the cooperative protocol then moves half the partitions in two more rounds,
            # while the first member forwards and forms windows it must hand over (lines re-read).
            reread = sum(r[4] for r in reports) - len(values)
            formed = "at once" if settled - start < 0.5 and reread <= 0 else (
                f"in steps: settled at {settled - start:.1f}s, {reread:,} window-topic lines read twice")
            if n == 1 or formed == "at once":
                at_once[n].append(rate)
            detail = ", ".join(f"member {r[0]}: window-topic lines {r[4]:,} verdicts {r[5]:,} model calls {r[6]} "
                               f"ended at {r[3] - start:.1f}s" for r in reports)  # fmt: skip
            verdicts = sum(r[5] for r in reports)
            verdicts_seen = verdicts if verdicts_seen is None else verdicts_seen
            if verdicts != verdicts_seen:
                print(f"  VERDICTS DIFFER: {verdicts:,} published by {n} member(s), {verdicts_seen:,} by the first run "
                      f"(windows split or lost between members)", flush=True)  # fmt: skip
            print(f"  {n} member(s): whole run {rate:,.0f} input lines/s over {max(r[3] for r in reports) - start:.1f}s; "
                  f"steady {steady_rate:,.0f} window-topic records/s ({records:,} records from {settled - start:.1f}s, "
                  f"when every member held its partitions and records flowed, to {end - start:.1f}s); "
                  f"group formed {formed}  [{detail}]", flush=True)  # fmt: skip
    print(f"input: {len(values):,} lines, {args.partitions} partitions keyed by component, hop on; "
          f"repeats: {args.repeats} (medians); cores: {os.cpu_count()}")
    base = statistics.median(rates[args.members[0]]) if rates[args.members[0]] else float("nan")
    steady_base = statistics.median(steady_rates[args.members[0]]) if steady_rates[args.members[0]] else float("nan")
    for n in args.members:
        if not rates[n]:
            print(f"{n} process(es)   no run reached the end of input")
            continue
        m = statistics.median(rates[n])
        sm = statistics.median(steady_rates[n]) if steady_rates[n] else float("nan")
        print(f"{n} process(es)   whole run {m:>8,.0f} lines/s   ratio to {args.members[0]}: {m / base:.2f}   "
              f"steady {sm:>8,.0f} records/s   ratio to {args.members[0]}: {sm / steady_base:.2f}   "
              f"({len(rates[n])} of {args.repeats} runs ended, {len(steady_rates[n])} with a steady span)")  # fmt: skip
    # This machine's speed drifts by tens of percent within minutes: each run of a larger group
    # over the mean of the first size's runs just before and just after it (as the throughput
    # bench pairs its runs with Drain3 alone).
    first_size = args.members[0]
    for n in args.members[1:]:
        paired = []
        for i, (size, rate) in enumerate(sequence):
            if size != n:
                continue
            before = next((r for s_, r in reversed(sequence[:i]) if s_ == first_size), None)
            after = next((r for s_, r in sequence[i + 1:] if s_ == first_size), None)
            beside = [r for r in (before, after) if r is not None]
            if beside:
                paired.append(rate / statistics.mean(beside))
        if paired:
            print(f"{n} process(es)   whole run over the {first_size}-process runs beside it: median "
                  f"{statistics.median(paired):.2f}   (per run: {' / '.join(f'{p:.2f}' for p in paired)})")  # fmt: skip
    base_once = statistics.median(at_once[args.members[0]]) if at_once[args.members[0]] else float("nan")
    for n in args.members:
        if at_once[n]:
            m = statistics.median(at_once[n])
            print(f"{n} process(es)   groups formed at once: whole run {m:>8,.0f} lines/s   ratio to {args.members[0]}: "
                  f"{m / base_once:.2f}   ({len(at_once[n])} runs)")  # fmt: skip
        else:
            print(f"{n} process(es)   no group formed at once")


if __name__ == "__main__":
    main()

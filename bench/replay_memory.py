"""Peak memory of a long replay: is the detector's footprint flat in the number of lines?

Prints figures; asserts nothing. Usage:

    .venv/bin/python bench/replay_memory.py [--lines 10000000] [--mark 1000000] [--keep]

HDFS_20000.log is written out again and again into one file under /tmp, each copy with its block
ids shifted (so every copy's 1,782 blocks are new sessions) and its times moved on by a copy's span
plus a gap (so the windows of one copy close before the next begins). `rationanomaly replay` runs
over it with the shipped default model, as a user would, and this script samples the child every
0.2 s: its resident set (VmRSS, VmHWM from /proc) and how far it has read the input (the position
of the input file's descriptor, from /proc/<pid>/fdinfo). It prints the peak RSS when the reader
passed `--mark` lines and at the end; the target is peak(end) ≤ 1.2 × peak(mark).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from bisect import bisect_left
from datetime import datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"blk_(-?)(\d+)")
SOURCE_SPAN = timedelta(minutes=10)  # each copy starts this long after the previous one


def _shifted(line: str, copy: int) -> str:
    # "081109 203518 143 INFO comp: ... blk_-1608999687919862906 ..."
    stamp = datetime.strptime(line[:13], "%y%m%d %H%M%S") + copy * SOURCE_SPAN
    # a fixed-width copy number ahead of the digits keeps the id a valid block id and unique
    body = _BLOCK.sub(lambda m: f"blk_{m[1]}{copy:05d}{m[2]}", line[13:]) if copy else line[13:]
    return stamp.strftime("%y%m%d %H%M%S") + body


def write_input(source: Path, target: Path, lines: int) -> list[int]:
    """Writes `lines` lines; returns the byte offset after each full copy of the source."""
    original = source.read_text().splitlines()
    ends, written = [], 0
    with target.open("w") as out:
        copy = 0
        while written < lines:
            chunk = original[: lines - written]
            out.write("".join(_shifted(line, copy) + "\n" for line in chunk))
            written += len(chunk)
            ends.append(out.tell())
            copy += 1
    return ends


def _status(pid: int) -> dict[str, int]:
    fields = {}
    with open(f"/proc/{pid}/status") as status:
        for row in status:
            if row.startswith(("VmRSS:", "VmHWM:")):
                key, value = row.split(":")
                fields[key] = int(value.split()[0]) * 1024
    return fields


def _position(pid: int, path: Path) -> int | None:
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                        return int(info.readline().split()[1])
            except OSError:
                continue
    except OSError:
        return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--mark", type=int, default=1_000_000)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO.parent / "shared" / "data")))
    parser.add_argument("--keep", action="store_true", help="keep the generated input file")
    args = parser.parse_args()

    source = args.data / "raw" / "HDFS_20000.log"
    target = Path("/tmp") / f"rationanomaly-replay-{args.lines}.log"
    started = time.perf_counter()
    copy_ends = write_input(source, target, args.lines)
    per_copy = len(source.read_text().splitlines())
    mark_byte = copy_ends[min(len(copy_ends), -(-args.mark // per_copy)) - 1]
    print(f"input: {args.lines:,} lines, {target.stat().st_size / 2**30:.2f} GiB, written in "
          f"{time.perf_counter() - started:.0f}s", flush=True)

    command = [str(REPO / ".venv" / "bin" / "rationanomaly"), "replay", str(target), "--profile", "hdfs",
               "--output", "/dev/null"]
    child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    samples: list[tuple[float, int, int, int]] = []  # time, position, rss, hwm
    position = 0
    begun = time.perf_counter()
    while child.poll() is None:
        try:
            status = _status(child.pid)
        except OSError:
            break
        position = _position(child.pid, target) or position
        samples.append((time.perf_counter() - begun, position, status.get("VmRSS", 0), status.get("VmHWM", 0)))
        time.sleep(0.2)
    _, stderr = child.communicate()
    elapsed = time.perf_counter() - begun
    if child.returncode != 0:
        sys.exit(f"replay failed ({child.returncode}):\n{stderr[-4000:]}")

    positions = [s[1] for s in samples]
    at_mark = bisect_left(positions, mark_byte)
    peak_mark = max(s[2] for s in samples[: max(at_mark, 1)])
    peak_end = max(s[2] for s in samples)
    hwm_end = max(s[3] for s in samples)
    print(f"replay: {elapsed:.0f}s, {args.lines / elapsed:,.0f} lines/s (model load included)")
    print(f"peak RSS by line {args.mark:,}: {peak_mark / 2**20:,.0f} MiB")
    print(f"peak RSS by line {args.lines:,}: {peak_end / 2**20:,.0f} MiB  (VmHWM {hwm_end / 2**20:,.0f} MiB)")
    print("per copy of the source: lines, seconds, peak RSS so far (MiB)")
    for end in copy_ends[:: max(1, len(copy_ends) // 10)] + [copy_ends[-1]]:
        i = min(bisect_left(positions, end), len(samples) - 1)
        done = (copy_ends.index(end) + 1) * per_copy
        print(f"  {min(done, args.lines):>11,} {samples[i][0]:>7.0f} {max(s[2] for s in samples[: i + 1]) / 2**20:>8,.0f}")
    print(f"ratio end/mark: {peak_end / peak_mark:.3f}  (target ≤ 1.2)")
    if not args.keep:
        target.unlink()


if __name__ == "__main__":
    main()

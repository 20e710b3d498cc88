"""What the memory caps against hostile volume cost and bound (stream/README.md, "Bounded memory").

Prints, on this machine:
- the memory one open window takes, and one more line in it (tracemalloc), so the defaults of
  `windows.max_open_windows`, `max_window_lines` and `max_held_lines` translate into bytes;
- a burst of `--burst` distinct session keys (one line each) through a windower with the
  default caps: the peak memory it reaches and the windows the cap closed early;
- Drain3 at `parsing.max_clusters`: the memory its clusters take at the cap, and how many lines
  a second it mines from a family of random-word lines once the cap is reached (each such line
  is compared with every cluster in its leaf of the tree, so this is the cap's CPU price).

    .venv/bin/python bench/hostile_volume.py [--burst 1000000] [--caps 1000 5000] [--hostile-lines 2000]
"""

from __future__ import annotations

import argparse
import gc
import random
import string
import time
import tracemalloc

from rationanomaly.stream.parsing import ParsingSettings, TemplateParser
from rationanomaly.stream.records import ParsedLog, SourceRef, Template, WindowKind
from rationanomaly.stream.windows import Windower, WindowSettings

TEMPLATE = Template("t0123456789abcdef", "Receiving block blk_<NUM> src: /<IP>:<NUM>")
UNCAPPED = {"max_open_windows": 10**8, "max_window_lines": 10**8, "max_held_lines": 10**9}


def window_bytes(keys: int, lines_per_key: int) -> int:
    gc.collect()
    tracemalloc.start()
    windower = Windower(WindowSettings(kind=WindowKind.SESSION, gap_ms=10**9, max_duration_ms=None, **UNCAPPED))
    offset = 0
    for k in range(keys):
        key = f"blk_{k}"
        for _ in range(lines_per_key):
            windower.add(ParsedLog(SourceRef("logs", 0, offset), offset, key, TEMPLATE))
            offset += 1
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return used


def burst(keys: int) -> tuple[int, int, float]:
    """Peak bytes, windows closed early and seconds for `keys` distinct keys at the default caps."""
    gc.collect()
    tracemalloc.start()
    windower = Windower(WindowSettings(kind=WindowKind.SESSION))
    forced = 0
    started = time.perf_counter()
    for offset in range(keys):
        closed = windower.add(ParsedLog(SourceRef("logs", 0, offset), offset, f"blk_{offset}", TEMPLATE))
        forced += sum(1 for w in closed if w.forced)
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, forced, seconds


def drain_at_cap(cap: int, hostile: int, seed: int) -> tuple[float, int]:
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice(string.ascii_letters) for _ in range(rng.randint(4, 9)))

    lines = [" ".join(word() for _ in range(6)) for _ in range(cap + hostile)]
    gc.collect()
    tracemalloc.start()
    parser = TemplateParser(ParsingSettings(max_clusters=cap))
    for text in lines[:cap]:
        parser.parse(text)
    used, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    started = time.perf_counter()
    for text in lines[cap:]:
        parser.parse(text)
    return hostile / (time.perf_counter() - started), used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caps", type=int, nargs="+", default=[1_000, 5_000])
    parser.add_argument("--hostile-lines", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--burst", type=int, default=1_000_000)
    args = parser.parse_args()
    per_window = window_bytes(100_000, 1) / 100_000
    per_line = window_bytes(10, 100_000) / 1_000_000
    print(f"open window, one line: {per_window:,.0f} B   each further line: {per_line:.1f} B")
    d = WindowSettings()
    print(f"defaults: max_open_windows {d.max_open_windows:,} ~ {d.max_open_windows * per_window / 1e6:,.0f} MB, "
          f"max_held_lines {d.max_held_lines:,} ~ {d.max_held_lines * per_line / 1e6:,.0f} MB (per partition)")
    peak, forced, seconds = burst(args.burst)
    print(f"burst of {args.burst:,} distinct keys, default caps: peak {peak / 1e6:,.0f} MB, "
          f"{forced:,} windows closed early (max_open_windows), {seconds:.1f} s under tracemalloc")
    print("drain3 cap | MB at cap | random-word lines/s at cap")
    for cap in args.caps:
        rate, used = drain_at_cap(cap, args.hostile_lines, args.seed)
        print(f"{cap:>10,} | {used / 1e6:>9.1f} | {rate:>10,.0f}")


if __name__ == "__main__":
    main()

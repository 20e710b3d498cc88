"""Where Drain3 runs around the repartition hop: before it (one miner per input partition, which
sees the lines of the shipper keys hashed there) or after it (one miner per repartition
partition, which sees a hash-spread sample of every source). Prints, for each placement, the
distinct templates made, the share of lines whose template text equals the one a single miner
over the whole file gives (what `rationanomaly replay` does), and the mining throughput.

"Before" is measured under three shipper keyings, because its result depends on them: by the
component field (each miner sees one component's few message shapes), round robin and random
(what a shipper without a key does; a host's own file mixes every component the same way).

    .venv/bin/python bench/repartition_templates.py [--partitions 3,6] [FILE]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import time
import zlib
from pathlib import Path

from rationanomaly.stream.generic import ProfileSplitter
from rationanomaly.stream.parsing import ParsingSettings, TemplateParser
from rationanomaly.stream.profiles import ProfileSettings
from rationanomaly.stream.records import LogRecord, SourceRef

BLOCK = re.compile(r"blk_-?\d+")
DATA = Path(os.environ.get("RATIONANOMALY_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def mine(groups: dict[int, list[tuple[int, str]]]) -> tuple[dict[int, str], float]:
    """Line number -> template text, one miner per group, and the lines per second."""
    out: dict[int, str] = {}
    started = time.perf_counter()
    for lines in groups.values():
        parser = TemplateParser(ParsingSettings())
        for number, content in lines:
            out[number] = parser.parse(content).text
    return out, len(out) / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?", type=Path, default=DATA / "raw" / "HDFS_20000.log")
    ap.add_argument("--partitions", default="3,6", help="comma-separated partition counts")
    args = ap.parse_args()
    splitter = ProfileSplitter(ProfileSettings(name="hdfs"))
    rows = []  # (line number, component, content, first block)
    for number, raw in enumerate(args.file.read_text(encoding="utf-8").splitlines()):
        header = splitter.split(LogRecord(SourceRef("f", 0, number), raw))
        block = BLOCK.search(header.content)
        rows.append((number, header.component or "-", header.content, block.group(0) if block else None))
    single, single_rate = mine({0: [(i, c) for i, _, c, _ in rows]})
    print(f"{args.file.name}: {len(rows)} lines, {len(set(single.values()))} templates from one miner ({single_rate:,.0f} lines/s)")
    for n in (int(p) for p in args.partitions.split(",")):
        shuffle = random.Random(0)
        keyings = {
            "before the hop, keyed by component": lambda i, comp, blk: zlib.crc32(comp.encode()) % n,
            "before the hop, round robin": lambda i, comp, blk: i % n,
            "before the hop, random": lambda i, comp, blk: shuffle.randrange(n),
            "after the hop (keyed by block)": lambda i, comp, blk: None if blk is None else zlib.crc32(blk.encode()) % n,
        }
        for name, partition_of in keyings.items():
            groups: dict[int, list] = {}
            for number, component, content, block in rows:
                p = partition_of(number, component, block)
                if p is not None:
                    groups.setdefault(p, []).append((number, content))
            mined, rate = mine(groups)
            same = sum(single[i] == t for i, t in mined.items()) / len(mined)
            print(f"{n} partitions, {name}: {len(groups)} miners, {len(set(mined.values()))} distinct templates, "
                  f"{same:.2%} of lines with the single miner's template, {rate:,.0f} lines/s")  # fmt: skip

if __name__ == "__main__":
    main()

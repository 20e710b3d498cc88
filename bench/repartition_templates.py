"""Where Drain3 runs around the repartition hop: before it (one miner per input partition, which
sees one shipper key's lines) or after it (one miner per repartition partition, which sees a
hash-spread sample of every source). Prints, for each placement, the distinct templates made, the
share of lines whose template text equals the one a single miner over the whole file gives
(what `rationanomaly replay` does), and the mining throughput.

    .venv/bin/python bench/repartition_templates.py [--partitions 6] [FILE]
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--partitions", type=int, default=6)
    args = ap.parse_args()
    splitter = ProfileSplitter(ProfileSettings(name="hdfs"))
    rows = []  # (line number, component, content, first block)
    for number, raw in enumerate(args.file.read_text(encoding="utf-8").splitlines()):
        header = splitter.split(LogRecord(SourceRef("f", 0, number), raw))
        block = BLOCK.search(header.content)
        rows.append((number, header.component or "-", header.content, block.group(0) if block else None))
    n = args.partitions
    single, single_rate = mine({0: [(i, c) for i, _, c, _ in rows]})
    before: dict[int, list] = {}
    after: dict[int, list] = {}
    for number, component, content, block in rows:
        before.setdefault(zlib.crc32(component.encode()) % n, []).append((number, content))
        if block is not None:
            after.setdefault(zlib.crc32(block.encode()) % n, []).append((number, content))
    print(f"{args.file.name}: {len(rows)} lines, {len(set(single.values()))} templates from one miner ({single_rate:,.0f} lines/s)")
    for name, groups in (("before the hop (by component)", before), ("after the hop (by block)", after)):
        mined, rate = mine(groups)
        same = sum(single[i] == t for i, t in mined.items()) / len(mined)
        print(f"{name}: {len(groups)} miners, {len(set(mined.values()))} distinct templates, "
              f"{same:.2%} of lines with the single miner's template, {rate:,.0f} lines/s")  # fmt: skip


if __name__ == "__main__":
    main()

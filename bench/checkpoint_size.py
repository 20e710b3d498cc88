"""Size of a partition's checkpoint record in the changelog topic (issue 19, state in Kafka).

Mines a log file's contents with the detector's Drain3 settings (the profile's parsing folded in),
then prints the snapshot's size, the compressed record's, and how many records it takes; and the
same for a miner filled to its template cap with one-off lines (the worst case the cap allows).

    .venv/bin/python bench/checkpoint_size.py ../shared/data/raw/HDFS_20000.log --profile hdfs
"""

from __future__ import annotations

import argparse
import random
import string
from pathlib import Path

from rationanomaly.stream.checkpoint import Checkpoint, encode_records
from rationanomaly.stream.parsing import TemplateParser
from rationanomaly.stream.settings import load_settings


def report(name: str, parser: TemplateParser, produced: dict[str, int]) -> None:
    cp = Checkpoint(offset=0, watermark_ms=0, parser=parser.snapshot(), produced=produced)
    records = encode_records("logs", 0, cp)
    print(f"{name}: templates={parser.size} checkpoint_bytes={len(cp.to_bytes())} "
          f"record_bytes={sum(len(v) for _, v in records)} records={len(records)}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", type=Path)
    ap.add_argument("--profile", default="hdfs")
    args = ap.parse_args()
    settings = load_settings(None, profile={"name": args.profile})
    parser = TemplateParser(settings.parsing)
    for raw in args.file.read_bytes().splitlines():
        line = raw.decode("utf-8", "replace")
        parser.parse(line.split(": ", 1)[1] if ": " in line else line)  # the content after the header
    report(args.file.name, parser, {})

    capped = TemplateParser(settings.parsing)
    rng = random.Random(0)
    cap = settings.parsing.max_clusters or 5000
    for _ in range(cap + 100):
        words = ["".join(rng.choices(string.ascii_lowercase, k=8)) for _ in range(12)]
        capped.parse(" ".join(words))
    keys = {f"blk_{rng.getrandbits(62)}": i for i in range(settings.windows.max_open_windows)}
    report(f"worst case (cap {cap}, {len(keys)} published keys)", capped, keys)


if __name__ == "__main__":
    main()

"""The pure stages end to end on real data: HDFS_20000.log through decode, profile, Drain3 and
session windows must give one window per block, with the block's line count."""

from __future__ import annotations

import csv
from pathlib import Path

from rationanomaly.stream.decoding import Decoder, DecodeSettings
from rationanomaly.stream.parsing import ParsingSettings, TemplateParser
from rationanomaly.stream.profiles import BUILTIN_PROFILES, HeaderParser
from rationanomaly.stream.records import DeadLetter, ParsedLog, SourceRef, Window
from rationanomaly.stream.windows import Windower, WindowSettings


def test_hdfs_20000_gives_one_session_per_block(data_dir: Path) -> None:
    raw = data_dir / "raw"
    with (raw / "HDFS_20000.block_labels.csv").open(newline="") as fh:
        expected = {row["BlockId"]: int(row["LinesInFile"]) for row in csv.DictReader(fh)}
    assert len(expected) == 1782

    decoder = Decoder(DecodeSettings())
    headers = HeaderParser(BUILTIN_PROFILES["hdfs"])
    parser = TemplateParser(ParsingSettings())
    # The file spans 3 minutes and the longest silence inside a block is 137 s: a 140 s gap
    # keeps every block whole and still lets the watermark close blocks before the end.
    windower = Windower(WindowSettings(gap_ms=140_000))
    windows: list[Window] = []
    dead = 0
    values = (raw / "HDFS_20000.log").read_bytes().splitlines()
    for offset, value in enumerate(values):
        source = SourceRef("hdfs", 0, offset)
        record = decoder.decode(value, None, source, None)
        header = record if isinstance(record, DeadLetter) else headers.split(record)
        if isinstance(header, DeadLetter):
            dead += 1
            continue
        windows += windower.add(
            ParsedLog(
                source=source,
                event_time_ms=header.event_time_ms,
                content=header.content,
                template=parser.parse(header.content),
                level=header.level,
                component=header.component,
            )
        )
        if offset % 500 == 0:
            windows += windower.advance(windower.max_event_ms)
    closed_before_end = len(windows)
    windows += windower.flush()

    assert len(values) == 20_000 and dead == 0
    assert len(windows) == 1782
    assert 0 < closed_before_end < 1782  # the watermark closed some before the end of input
    assert {w.key: w.lines for w in windows} == expected
    assert all(len(w.sequence) == w.lines and set(w.sequence) <= set(w.templates) for w in windows)
    assert windower.stats.unkeyed == 0 and windower.open_count == 0

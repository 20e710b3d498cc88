"""A silent partition's windows close for idleness only where the caller confirms the silence
(`Pipeline.advance(quiet=...)`): the Kafka edge holds back one whose log is not read to its end."""

from __future__ import annotations

import io

import orjson

from rationanomaly.stream.engine import build_engine
from rationanomaly.stream.records import SourceRef
from rationanomaly.stream.settings import load_settings
from rationanomaly.stream.siem import OutputFormat
from rationanomaly.stream.sinks import JsonlSink
from tests.unit.stream.fixed_model import AlwaysNormal


def test_only_partitions_confirmed_quiet_close_for_silence() -> None:
    settings = load_settings(None, profile={"name": "hdfs"}, metrics={"port": None}, state={"store": "local"},
                             input={"idle_timeout_s": 30})  # fmt: skip
    out = io.BytesIO()
    engine = build_engine(settings, JsonlSink(out, OutputFormat.NATIVE, None), backend=AlwaysNormal())
    pipeline = engine.pipeline
    try:
        for partition, now in ((0, 0.0), (1, 0.0), (2, 20.0)):
            line = f"081109 203518 35 INFO dfs.FSNamesystem: BLOCK* allocateBlock: blk_{partition}".encode()
            pipeline.feed(line, None, SourceRef("logs", partition, 0), None, now)
        assert pipeline.silent_partitions(29.0) == []
        assert sorted(pipeline.silent_partitions(31.0)) == [0, 1]  # partition 2 spoke at 20 s
        pipeline.advance(31.0, quiet=frozenset({1, 2}))  # 0 held back; 2 confirmed but not silent
        assert pipeline.windows == 1
        assert pipeline.silent_partitions(32.0) == [0]  # still silent, still open
        pipeline.advance(32.0, quiet=frozenset())
        assert pipeline.windows == 1
        pipeline.advance(33.0, quiet=frozenset({0}))
        assert pipeline.windows == 2 and pipeline.silent_partitions(33.0) == []
        assert engine.worker.wait_idle(30)
        pipeline.publish(0)
    finally:
        engine.close()
    assert sorted(orjson.loads(v)["window"]["key"] for v in out.getvalue().splitlines()) == ["blk_0", "blk_1"]

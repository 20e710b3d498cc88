"""File replay through the whole pipeline with a scripted backend (the real model runs in
tests/integration): determinism, gzip, dead letters, formats, window modes."""

from __future__ import annotations

import gzip
import io
import json

import orjson
import pytest

from rationanomaly.model.backends import Generation
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings


class KeywordBackend:
    """Says abnormal when the prompt mentions an exception; counts what it was asked."""

    model_id = "keyword-backend"

    def __init__(self) -> None:
        self.prompts = 0

    def generate(self, conversations):
        self.prompts += len(conversations)
        out = []
        for conv in conversations:
            text = conv[-1]["content"]
            if "Exception" in text or "exception" in text:
                out.append(Generation("<think>The block write raised an exception.</think> <answer>abnormal</answer>", 0.001))
            else:
                out.append(Generation("<think>Routine block bookkeeping.</think> <answer>normal</answer>", 0.001))
        return out

    def close(self) -> None:
        pass


def replay(paths, backend=None, **sections):
    settings = load_settings(None, metrics={"port": None}, **sections)
    out = io.BytesIO()
    summary = replay_files(paths, settings, out, backend=backend or KeywordBackend(), progress=False)
    return summary, [orjson.loads(line) for line in out.getvalue().splitlines()]


@pytest.fixture(scope="module")
def hdfs_2k(data_dir):
    return data_dir / "raw" / "loghub_2k" / "HDFS_2k.log"


def test_replay_is_deterministic_and_asks_each_template_once(hdfs_2k):
    backend = KeywordBackend()
    first, verdicts = replay([hdfs_2k], backend, profile={"name": "hdfs"})
    _, again = replay([hdfs_2k], profile={"name": "hdfs"})
    assert first.lines == 2000 and first.dead_letters == 0
    assert first.verdicts == len(verdicts) == first.windows
    assert [v["verdict_id"] for v in verdicts] == [v["verdict_id"] for v in again]
    assert backend.prompts < 40  # template mode: each distinct template once, not each window
    abnormal = [v for v in verdicts if v["verdict"] == "abnormal"]
    assert abnormal and all("exception" in v["rationale"] for v in abnormal)
    assert all(any("xception" in t["text"] for t in v["templates"]) for v in abnormal)


def test_gzip_and_plain_give_the_same_verdicts(hdfs_2k, tmp_path):
    packed = tmp_path / "HDFS_2k.log.gz"
    packed.write_bytes(gzip.compress(hdfs_2k.read_bytes()))
    _, plain = replay([hdfs_2k], profile={"name": "hdfs"})
    _, zipped = replay([packed], profile={"name": "hdfs"})
    assert [v["verdict_id"] for v in plain] == [v["verdict_id"] for v in zipped]


def test_bad_lines_become_dead_letters_and_the_replay_goes_on(tmp_path):
    good = b"081109 203518 143 INFO dfs.DataNode$DataXceiver: Receiving block blk_1 src: /10.0.0.1:1 dest: /10.0.0.1:2"
    log = tmp_path / "mixed.log"
    log.write_bytes(b"\n".join([good, b"\xff\xfe not utf-8", b"no header here blk_2", b"", good.replace(b"blk_1", b"blk_3")]))
    settings = load_settings(None, metrics={"port": None}, profile={"name": "hdfs"})
    out, dlq = io.BytesIO(), tmp_path / "out.dlq.jsonl"
    summary = replay_files([log], settings, out, dlq_path=dlq, backend=KeywordBackend(), progress=False)
    assert summary.dead_letters == 3
    letters = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert [(d["stage"], d["source"]["offset"]) for d in letters] == [("decode", 1), ("profile", 2), ("decode", 3)]
    keys = sorted(orjson.loads(line)["window"]["key"] for line in out.getvalue().splitlines())
    assert keys == ["blk_1", "blk_3"]


def test_bgl_count_windows_carry_ground_truth_but_never_show_it(data_dir):
    class Recording(KeywordBackend):
        seen: list[str] = []

        def generate(self, conversations):
            self.seen.extend(c[-1]["content"] for c in conversations)
            return super().generate(conversations)

    backend = Recording()
    _, verdicts = replay(
        [data_dir / "raw" / "loghub_2k" / "BGL_2k.log"],
        backend,
        profile={"name": "bgl"},
        windows={"kind": "count", "count": 100, "max_duration_ms": None},
    )
    assert len(verdicts) == 20 and all(v["window"]["lines"] == 100 for v in verdicts)
    truth = [v["ground_truth"] for v in verdicts]
    assert "abnormal" in truth and "normal" in truth
    assert not any(p.startswith("- ") or " APPREAD " in p for p in backend.seen)  # no label column leaks


def test_window_mode_and_siem_formats(hdfs_2k):
    _, ocsf = replay([hdfs_2k], profile={"name": "hdfs"}, judging={"mode": "window"}, output={"format": "ocsf"})
    assert ocsf and all(r["class_uid"] == 2004 and r["finding_info"]["uid"] for r in ocsf)
    _, ecs = replay([hdfs_2k], profile={"name": "hdfs"}, output={"format": "ecs"})
    assert all((r["event"]["kind"] == "alert") == (r["rationanomaly"]["verdict"] == "abnormal") for r in ecs)
    assert {r["event"]["kind"] for r in ecs} == {"alert", "event"}

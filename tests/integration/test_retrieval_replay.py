"""The decision stage's memories, end to end with the real default model on CPU.

- Retrieval (`backend.retrieval`, on by default): BGL lines replayed through the real pipeline
  with the memory off and on. With it on, every template's label is the blend of the model's
  own margin (the plain rank decision's, recovered from its confidence) and the vote of its
  nearest reviewed BGL templates, and abnormal verdicts cite the nearest agreeing example. An
  operator correction taught at runtime moves the vote of its near twins, and so their label.
- Session rules (`backend.sessions`): HDFS blocks replayed in window mode; the rules label each
  block and name their reasons, the model judges every block.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path

import orjson
import pytest

from rationanomaly.model.decision import make_decider
from rationanomaly.model.prompt import log_text
from rationanomaly.model.retrieval import vote
from rationanomaly.model.sessions import SessionRules
from rationanomaly.stream.engine import build_engine, reviewed_memory
from rationanomaly.stream.feedback import Correction, apply_correction
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings
from rationanomaly.stream.sinks import JsonlSink

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NORMAL_LINES = 40
ABNORMAL_KINDS = 8
CITATION = re.compile(r"Reviewed: like '[^']+' \((abnormal|normal), reviewed, similarity [01]\.\d\d\)\.")


def _bgl_sample(data_dir: Path, out: Path) -> Path:
    """Normal lines and the first line of each of a few alert kinds, in file (time) order."""
    lines = (data_dir / "raw" / "loghub_2k" / "BGL_2k.log").read_text(encoding="utf-8").splitlines()
    picked, kinds, normal = [], set(), 0
    for line in lines:
        label, event = line.split(" ", 1)[0], " ".join(line.split()[9:12])
        if label == "-" and normal < NORMAL_LINES:
            normal += 1
            picked.append(line)
        elif label != "-" and event not in kinds and len(kinds) < ABNORMAL_KINDS:
            kinds.add(event)
            picked.append(line)
    out.write_text("\n".join(picked) + "\n", encoding="utf-8")
    return out


def _settings(data_dir: Path, backend_settings, enabled: bool, **extra):
    return load_settings(
        None, profile={"name": "bgl"}, metrics={"port": None}, windows={"kind": "count", "count": 8},
        backend={**backend_settings.model_dump(mode="json"), "retrieval": {"enabled": enabled, "data_dir": str(data_dir)}},
        **extra,
    )  # fmt: skip


def _replay(path: Path, settings, backend) -> list[dict]:
    out = io.BytesIO()
    replay_files([path], settings, out, backend=backend, progress=False)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def _margin(judgement, threshold: float) -> float:
    c = judgement.confidence
    distance = math.log(c / (1.0 - c))
    return threshold + (distance if judgement.label == "abnormal" else -distance)


def test_bgl_labels_come_from_the_blend_and_verdicts_cite_reviewed_examples(data_dir, real_backend, backend_settings,
                                                                            tmp_path):  # fmt: skip
    sample = _bgl_sample(data_dir, tmp_path / "bgl.log")
    on = _settings(data_dir, backend_settings, True)
    plain = _replay(sample, _settings(data_dir, backend_settings, False), real_backend)
    blended = _replay(sample, on, real_backend)
    memory = reviewed_memory(on)
    assert memory is not None and memory.dataset == "bgl"
    assert all("+retrieval(" not in v["model"]["id"] for v in plain)
    assert all(f"+retrieval(k={memory.blend.k}," in v["model"]["id"] and memory.index_id in v["model"]["id"]
               for v in blended)  # fmt: skip

    # The model's own margins, from the plain rank decision over the same backend.
    ranker = make_decider(on.backend.model_copy(update={"retrieval": on.backend.retrieval.model_copy(
        update={"enabled": False})}), backend=real_backend)  # fmt: skip
    texts = sorted({t["text"] for v in blended for t in v["templates"]})
    alone = dict(zip(texts, ranker.decide(texts), strict=True))
    margins = {t: _margin(j, ranker.threshold) for t, j in alone.items()}
    expected = {t: memory.blend.decide(m, memory.index.nearest(t, memory.blend.k, dataset="bgl")) for t, m in margins.items()}
    published = {t["text"]: t["verdict"] for v in blended for t in v["templates"]}
    assert published == expected
    assert {t["text"]: t["verdict"] for v in plain for t in v["templates"]} == {t: j.label for t, j in alone.items()}

    abnormal = [v for v in blended if v["verdict"] == "abnormal"]
    assert abnormal, "the sample's alert lines should give at least one abnormal verdict"
    for v in abnormal:
        assert CITATION.search(v["rationale"]), v["rationale"]
        assert v["decision"] == "rank"
    changed = sorted(t for t in texts if expected[t] != alone[t].label)
    print(f"\nretrieval: {len(texts)} templates, {sum(x == 'abnormal' for x in expected.values())} abnormal with the "
          f"memory, {sum(j.label == 'abnormal' for j in alone.values())} without; changed: {changed}")


def test_a_correction_at_runtime_moves_its_twins_vote_and_label(data_dir, real_backend, backend_settings, tmp_path):
    sample = _bgl_sample(data_dir, tmp_path / "bgl.log")
    settings = _settings(data_dir, backend_settings, True)
    engine = build_engine(settings, JsonlSink(io.BytesIO(), "native", None), backend=real_backend)
    try:
        memory = engine.memory
        assert memory is not None
        texts = sorted({t["text"] for v in _replay(sample, settings, real_backend) for t in v["templates"]})
        before = dict(zip(texts, engine.decider.decide(texts), strict=True))
        normal = [t for t in texts if before[t].label == "normal"]
        assert normal
        # An operator marks near twins of one normal template abnormal (they name the same event
        # on a different part), through the function the corrections topic feeds. The template:
        # the normal one the model itself leaned furthest towards abnormal.
        inner = engine.decider.inner
        margins = {t: _margin(j, inner.threshold) for t, j in zip(normal, inner.decide(normal), strict=True)}
        target = max(normal, key=margins.__getitem__)
        votes = vote(memory.index.nearest(target, memory.blend.k, dataset="bgl"))
        for n, suffix in enumerate((" on <*>", " at <*>", " (<*>)")):
            twin = target + suffix
            record = Correction(template_id=f"twin{n}", label="abnormal", by="alice", template=twin)
            apply_correction(engine.judge.cache, f"twin{n}".encode(), record.model_dump_json().encode())
        found = memory.index.nearest(target, memory.blend.k, dataset="bgl")
        assert {n.example.source for n in found[:3]} == {"correction"}
        assert vote(found) > votes
        after = engine.decider.decide([target])[0]
        # The real model's margin for the template is unchanged; the vote moved the label.
        assert after.label == memory.blend.decide(margins[target], found) == "abnormal"
        assert f"like {log_text(found[0].example.template)!r} (abnormal, reviewed" in after.rationale
        print(f"\ncorrection: {target!r} margin {margins[target]:.2f}, vote {votes:.2f} -> {vote(found):.2f}, "
              f"label normal -> {after.label}")
    finally:
        engine.close()


def _hdfs_blocks(data_dir: Path, out: Path, normal: int = 10) -> tuple[Path, dict[str, bool]]:
    """The lines of a few whole blocks: anomalous ones whose fault shows in the file, and normal ones."""
    raw = data_dir / "raw"
    with (raw / "HDFS_20000.block_labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    lines = (raw / "HDFS_20000.log").read_text(encoding="utf-8").splitlines()
    named = [(line, set(re.findall(r"blk_-?\d+", line))) for line in lines]
    faulty = {b for line, blocks in named if "exception" in line.lower() for b in blocks}
    chosen = {r["BlockId"]: True for r in rows if r["BlockId"] in faulty and r["Label"] == "Anomaly"}
    whole = [r["BlockId"] for r in rows if r["Label"] == "Normal" and r["LinesInFile"] == "13"]  # a block's usual steps
    chosen.update(dict.fromkeys(whole[:normal], False))
    kept = [line for line, blocks in named if blocks and blocks <= chosen.keys()]
    out.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return out, chosen


def test_hdfs_sessions_are_labelled_by_the_rules_and_judged_by_the_model(data_dir, real_backend, backend_settings,
                                                                       tmp_path):  # fmt: skip
    path, truth = _hdfs_blocks(data_dir, tmp_path / "hdfs.log")
    assert any(truth.values()) and not all(truth.values())
    settings = load_settings(
        None, profile={"name": "hdfs"}, metrics={"port": None}, judging={"mode": "window"},
        windows={"kind": "session", "gap_ms": 140_000},
        backend={**backend_settings.model_dump(mode="json"), "sessions": {"enabled": True}},
    )  # fmt: skip
    verdicts = _replay(path, settings, real_backend)
    assert {v["window"]["key"] for v in verdicts} == set(truth)
    rules = SessionRules.load(Path(__file__).resolve().parents[2] / "model" / "adapters" / "rationanomaly-smollm2"
                              / "hdfs_sessions.json")  # fmt: skip
    for v in verdicts:
        texts = [t["text"] for t in v["templates"] for _ in range(t["count"])]
        assert v["verdict"] == rules.judge(texts).label
        assert "+sessions@" in v["model"]["id"] and v["decision"] == "rank"
        if v["verdict"] == "abnormal":
            assert "Session rules: " in v["rationale"] and "occurs only in sessions reviewed as abnormal" in v["rationale"]
    assert {v["window"]["key"]: v["verdict"] == "abnormal" for v in verdicts} == truth

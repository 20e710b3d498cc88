"""Verdict identity is complete: everything that decides a verdict is in its id and in the
template cache's key, and a cached judgement comes back whole (confidence included) after a restart.

The stream runs for real (file replay of loghub's HDFS sample, Drain3, windows, judging, the
rank decision's own code); only the scores are a table, since a real model's margins are not ours
to pick (the real model's identity is checked in tests/unit/model/test_ranking.py).
"""

from __future__ import annotations

import io
from pathlib import Path

import orjson
import pytest

import rationanomaly.model.ranking as ranking
from rationanomaly.model.backends import Generation
from rationanomaly.model.loading import model_label
from rationanomaly.model.decision import RankDecider
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings


class LengthScorer:
    """Log-likelihoods from the prompt's length: the abnormal answer wins for long templates and
    exceptions, by a margin that differs between templates (so confidences differ too)."""

    def __init__(self, model_id: str = "base+adapter@000000000000") -> None:
        self.model_id = model_id
        self.pairs = 0

    def score(self, conversations, completions):
        out = []
        for conversation, completion in zip(conversations, completions, strict=True):
            text = conversation[-1]["content"]
            margin = (len(text) % 13) / 4.0 - 1.5 + (3.0 if "xception" in text else 0.0)
            out.append(margin if completion.endswith("<answer>abnormal</answer>") else 0.0)
        self.pairs += len(conversations) // 2
        return out


class GenerateBackend:
    """The generate decision's answer to the same inputs: same model id as the scorer."""

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id

    def generate(self, conversations):
        return [Generation("<think>Routine.</think> <answer>normal</answer>", 0.001) for _ in conversations]

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def hdfs_2k(data_dir: Path) -> Path:
    return data_dir / "raw" / "loghub_2k" / "HDFS_2k.log"


def replay(path: Path, backend, cache_file: Path | None = None) -> list[dict]:
    settings = load_settings(None, metrics={"port": None}, profile={"name": "hdfs"}, judging={"cache_file": cache_file})
    out = io.BytesIO()
    replay_files([path], settings, out, backend=backend, progress=False)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def ids(verdicts: list[dict]) -> list[str]:
    return [v["verdict_id"] for v in verdicts]


def test_each_ingredient_of_a_verdict_changes_its_id(hdfs_2k: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = replay(hdfs_2k, RankDecider(LengthScorer(), threshold=-1.2113))
    assert len(reference) > 100
    assert ids(replay(hdfs_2k, RankDecider(LengthScorer(), threshold=-1.2113))) == ids(reference)  # stable
    variants = {
        "threshold": lambda: RankDecider(LengthScorer(), threshold=-1.2),
        "adapter content": lambda: RankDecider(LengthScorer("base+adapter@111111111111"), threshold=-1.2113),
        "base model": lambda: RankDecider(LengthScorer("other-base+adapter@000000000000"), threshold=-1.2113),
        "decision kind": lambda: GenerateBackend(LengthScorer().model_id),
    }
    for ingredient, backend in variants.items():
        changed = replay(hdfs_2k, backend())
        assert [(v["window"]["key"], v["window"]["start_ms"]) for v in changed] == [
            (v["window"]["key"], v["window"]["start_ms"]) for v in reference
        ]
        assert not set(ids(changed)) & set(ids(reference)), f"{ingredient} left verdict ids unchanged"
    with monkeypatch.context() as patch:
        patch.setattr(ranking, "DRAFTS_VERSION", "ra-drafts-next")
        assert not set(ids(replay(hdfs_2k, RankDecider(LengthScorer(), threshold=-1.2113)))) & set(ids(reference))
    with monkeypatch.context() as patch:
        patch.setattr(RankDecider, "prompt_version", "ra-prompt-next")
        assert not set(ids(replay(hdfs_2k, RankDecider(LengthScorer(), threshold=-1.2113)))) & set(ids(reference))


def test_adapter_content_changes_the_model_label(tmp_path: Path) -> None:
    for name, weights in (("a", b"weights-1"), ("b", b"weights-2")):
        (tmp_path / name / "rationanomaly").mkdir(parents=True)
        (tmp_path / name / "rationanomaly" / "adapter_model.safetensors").write_bytes(weights)
        (tmp_path / name / "rationanomaly" / "adapter_config.json").write_text("{}")
    first = model_label("default", str(tmp_path / "a" / "rationanomaly"))
    assert first != model_label("default", str(tmp_path / "b" / "rationanomaly"))  # same name, new weights
    assert first != model_label("HuggingFaceTB/SmolLM2-360M-Instruct", str(tmp_path / "a" / "rationanomaly"))


def test_the_cache_serves_only_its_own_decision_and_keeps_confidence(hdfs_2k: Path, tmp_path: Path) -> None:
    cache = tmp_path / "templates.json"
    scorer = LengthScorer()
    fresh = replay(hdfs_2k, RankDecider(scorer, threshold=-1.2113), cache)
    asked = scorer.pairs
    assert asked > 0 and cache.exists()
    assert all(v["confidence"] is not None for v in fresh)

    # A restart with the same decision: every template from the saved cache, confidences intact.
    again = LengthScorer()
    restarted = replay(hdfs_2k, RankDecider(again, threshold=-1.2113), cache)
    assert again.pairs == 0
    assert [(v["verdict_id"], v["verdict"], v["confidence"], v["decision"], v["rationale_source"]) for v in restarted] == [
        (v["verdict_id"], v["verdict"], v["confidence"], v["decision"], v["rationale_source"]) for v in fresh
    ]
    assert {v["decision"] for v in fresh} == {"rank"}
    assert {v["rationale_source"] for v in fresh if v["verdict"] == "abnormal"} == {"draft"}

    # Another threshold: the saved answers were made under the old one, so none is served.
    moved = LengthScorer()
    replay(hdfs_2k, RankDecider(moved, threshold=0.5), cache)
    assert moved.pairs == asked

"""Session rules (`model.sessions`): verdicts with reasons, the file round trip, bad files."""

from __future__ import annotations

import orjson
import pytest

from rationanomaly.model.sessions import SessionRules, SessionRulesError

RULES = {
    "implicated": ["Exception in receiveBlock for block <*> <*>"],
    "tree": [
        {"template": "Receiving block <*>", "at_most": 2.5, "left": 1, "right": 2},
        {"template": None, "abnormal": True},
        {"template": None, "abnormal": False},
    ],
    "depth": 1,
}


def test_an_implicated_template_decides_and_is_named() -> None:
    rules = SessionRules.from_dict(RULES)
    verdict = rules.judge(["Receiving block <*>"] * 3 + ["Exception in receiveBlock for block <*> <*>"])
    assert verdict.label == "abnormal"
    assert "Exception in receiveBlock" in verdict.rationale()


def test_a_missing_step_is_caught_by_the_count_tree_with_its_count() -> None:
    rules = SessionRules.from_dict(RULES)
    verdict = rules.judge(["BLOCK* NameSystem.allocateBlock:<*>", "Receiving block <*>"])
    assert verdict.label == "abnormal"
    assert verdict.reasons == ("'Receiving block <*>' seen 1 time (at most 2)",)  # counts are whole: 2.5 reads 2
    normal = rules.judge(["Receiving block <*>"] * 3)
    assert normal.label == "normal" and normal.reasons == ()
    assert "normal" in normal.rationale()


def test_round_trip_and_bad_files(tmp_path) -> None:
    path = tmp_path / "hdfs_sessions.json"
    path.write_bytes(orjson.dumps(SessionRules.from_dict(RULES).to_dict()))
    again = SessionRules.load(path)
    assert again.to_dict() == SessionRules.from_dict(RULES).to_dict()
    assert again.source == {"depth": 1}
    for bad in (b"[1, 2]", b"{not json", orjson.dumps({"tree": [{"template": "x", "at_most": 1, "left": 5, "right": 6}]}),
                orjson.dumps({"tree": [{"template": "x", "at_most": "many", "left": 1, "right": 2}]})):
        path.write_bytes(bad)
        with pytest.raises(SessionRulesError):
            SessionRules.load(path)
    with pytest.raises(SessionRulesError):
        SessionRules.load(tmp_path / "absent.json")

"""Decide, then explain, through the stream's template cache: an explanation (or the draft with
the reason it was kept) is cached per template like the verdict, survives a restart under the
explaining decider's identity, and is not served to a detector without explanations."""

from __future__ import annotations

from rationanomaly.model.decision import RankDecider
from rationanomaly.model.explain import ExplainingDecider
from rationanomaly.stream.judging import TemplateCache
from tests.unit.model.test_explain import CIOD, LINK, Scripted


def test_explanations_and_their_notes_survive_the_cache_under_their_own_identity(tmp_path) -> None:
    backend = Scripted({"chdir": 3.0, "link up": -3.0, "kernel panic": 3.0}, {
        "chdir": "<think>Key: 'chdir(<*>) failed'. Conclusion: abnormal, the login failed.</think>",
        "kernel panic": "<think>Key: 'fault'. Conclusion: abnormal.</think>",
    })
    plain = RankDecider(backend, threshold=0.0)
    decider = ExplainingDecider(plain)
    inputs = [CIOD, LINK, "kernel panic on cpu <*>"]
    cache = TemplateCache()
    for tid, judgement in zip(("t1", "t2", "t3"), decider.decide(inputs), strict=True):
        cache.put(tid, judgement)
    path = tmp_path / "templates.json"
    cache.save(path, decider.model_id, decider.prompt_version)

    restarted = TemplateCache()
    assert restarted.load(path, decider.model_id, decider.prompt_version) == 3
    explained, normal, kept = (restarted.get(t) for t in ("t1", "t2", "t3"))
    assert explained is not None and normal is not None and kept is not None
    assert (explained.rationale_source, explained.rationale_note) == ("model", None)
    assert explained.rationale == "Key: 'chdir(<*>) failed'. Conclusion: abnormal, the login failed."
    assert normal.rationale_source == "draft" and normal.label == "normal"
    assert kept.rationale_source == "draft"
    assert kept.rationale_note == "explanation failed its check: quotes text the log does not hold: 'fault'"
    # A detector that ranks without explanations must not serve them.
    assert TemplateCache().load(path, plain.model_id, plain.prompt_version) == 0

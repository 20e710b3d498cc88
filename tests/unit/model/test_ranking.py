"""The rank decision: candidates, threshold, failures kept per item, and the real model's scores."""

from __future__ import annotations

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Sequence

import pytest

from rationanomaly.model.backends import BackendError, make_backend
from rationanomaly.model.backends.transformers import TransformersBackend
from rationanomaly.model.drafts import draft_template, draft_window
from rationanomaly.model.parser import parse_verdict
from rationanomaly.model.prompt import template_messages, window_messages
from rationanomaly.model.ranking import (
    DECISION_FILE,
    RankingBackend,
    candidates,
    load_threshold,
    margins,
    save_threshold,
)
from rationanomaly.model.settings import BackendSettings

DISK = "disk <*> failed: I/O error on sector <*>"
LINK = "link up on port <*>"


class TableScorer:
    """Scores from a table keyed by (log text, answer label): the margin of each input is chosen
    by the test. A fake, because a real model's margins are not ours to pick."""

    model_id = "table"

    def __init__(self, margins: dict[str, float], fail: bool = False) -> None:
        self._margins = margins
        self._fail = fail
        self.calls = 0
        self.closed = False

    def score(self, conversations: Sequence[list[dict[str, str]]], completions: Sequence[str]) -> list[float]:
        self.calls += 1
        if self._fail:
            raise RuntimeError("device lost")
        out = []
        for conversation, completion in zip(conversations, completions, strict=True):
            text = conversation[-1]["content"]
            margin = next(m for key, m in self._margins.items() if key in text)
            out.append(margin if completion.endswith("<answer>abnormal</answer>") else 0.0)
        return out

    def close(self) -> None:
        self.closed = True


def test_candidates_are_the_drafts_for_each_label() -> None:
    answers = candidates(DISK)
    for label in ("abnormal", "normal"):
        parsed = parse_verdict(answers[label])
        assert parsed.label == label
        assert parsed.rationale == draft_template(DISK, label)
    window = ("a", "b <*> failed", "a")
    assert parse_verdict(candidates(window)["abnormal"]).rationale == draft_window(window, "abnormal")


def test_threshold_decides_and_the_published_answer_is_the_chosen_draft() -> None:
    scorer = TableScorer({DISK: 1.2, LINK: -0.8})
    conversations = [template_messages(DISK), template_messages(LINK)]
    at_zero = RankingBackend(scorer, threshold=0.0).generate(conversations)
    assert [parse_verdict(g.text).label for g in at_zero] == ["abnormal", "normal"]
    assert at_zero[0].text == candidates(DISK)["abnormal"]
    # Confidence: the chosen answer's logistic share after the threshold's shift.
    assert at_zero[0].confidence == pytest.approx(1 / (1 + math.exp(-1.2)))
    assert at_zero[1].confidence == pytest.approx(1 / (1 + math.exp(-0.8)))
    lenient = RankingBackend(scorer, threshold=-1.0).generate(conversations)
    assert [parse_verdict(g.text).label for g in lenient] == ["abnormal", "abnormal"]
    strict = RankingBackend(scorer, threshold=2.0).generate(conversations)
    assert [parse_verdict(g.text).label for g in strict] == ["normal", "normal"]


def test_an_unreadable_prompt_fails_alone_and_a_scorer_error_fails_the_batch_without_raising() -> None:
    scorer = TableScorer({DISK: 1.0})
    out = RankingBackend(scorer, 0.0).generate([[{"role": "user", "content": "free text"}], template_messages(DISK)])
    assert out[0].text is None and "rank decision: not a prompt rendered" in out[0].error
    assert out[1].ok and parse_verdict(out[1].text).label == "abnormal"

    broken = RankingBackend(TableScorer({DISK: 1.0}, fail=True), 0.0).generate([template_messages(DISK)] * 3)
    assert [g.ok for g in broken] == [False] * 3
    assert all("device lost" in g.error for g in broken)


def test_non_finite_margin_is_an_error_not_a_verdict() -> None:
    out = RankingBackend(TableScorer({DISK: math.nan}), 0.0).generate([template_messages(DISK)])
    assert not out[0].ok and "went unscored" in out[0].error


def test_batches_and_close_pass_through() -> None:
    scorer = TableScorer({DISK: 1.0, LINK: -1.0})
    backend = RankingBackend(scorer, 0.0, batch_size=2)
    assert len(backend.generate([template_messages(DISK), template_messages(LINK)] * 2 + [template_messages(DISK)])) == 5
    assert scorer.calls == 3
    assert backend.model_id.startswith("table+rank(")
    backend.close()
    assert scorer.closed


def test_a_backend_that_cannot_score_is_refused() -> None:
    class GenerateOnly:
        model_id = "g"

    with pytest.raises(BackendError, match="cannot score"):
        RankingBackend(GenerateOnly(), 0.0)


def test_decision_file_round_trip_and_errors(tmp_path) -> None:
    assert load_threshold(None) is None
    assert load_threshold(tmp_path) is None
    save_threshold(tmp_path, -0.5, calibrated_on=["bgl_train"])
    assert load_threshold(tmp_path) == -0.5
    (tmp_path / DECISION_FILE).write_text("{not json")
    with pytest.raises(BackendError, match="not a rank decision file"):
        load_threshold(tmp_path)
    (tmp_path / DECISION_FILE).write_text('{"threshold": "nan"}')
    with pytest.raises(BackendError, match="finite"):
        load_threshold(tmp_path)
    with pytest.raises(ValueError):
        save_threshold(tmp_path, math.inf)


def test_rank_needs_a_backend_that_scores(tmp_path) -> None:
    # A server scores through echoed log-probs (openai); in-process vLLM exposes no scores here.
    served = BackendSettings(kind="openai", base_url="http://127.0.0.1:9/v1", decision="rank", adapter=str(tmp_path))
    assert served.decision == "rank" and served.tokenizer == "default"
    with pytest.raises(ValueError, match="decision='rank'.*kind='vllm'"):
        BackendSettings(kind="vllm", device="cuda", decision="rank")
    # Without the rank decision an adapter directory means nothing client-side: refused.
    with pytest.raises(ValueError, match="cannot load an adapter client-side"):
        BackendSettings(kind="openai", base_url="http://127.0.0.1:9/v1", adapter=str(tmp_path))
    assert BackendSettings(kind="openai", base_url="http://127.0.0.1:9/v1").decision == "auto"


# --- the real default model ----------------------------------------------------------------


@pytest.mark.slow
def test_real_model_margins_are_score_differences_and_decisions_follow_them(tmp_path) -> None:
    """Base model + shipped adapter: the backend's margin is the difference of the two answers'
    log-likelihoods, and the verdict flips exactly where the threshold crosses the margin."""
    settings = BackendSettings(device="cpu", batch_size=4, decision="generate")
    backend = make_backend(settings)
    assert isinstance(backend, TransformersBackend)
    conversations = [
        template_messages("ciod: Error reading message prefix on CioStream socket"),
        template_messages("VFS: Mounted root (ext2 filesystem)."),
        window_messages(["KERNEL FATAL machine check interrupt", "generating core.<*>", "generating core.<*>"]),
    ]
    found = margins(backend.score, conversations)
    assert all(math.isfinite(m) for m in found)
    answers = candidates("VFS: Mounted root (ext2 filesystem).")
    a, n = backend.score([conversations[1]] * 2, [answers["abnormal"], answers["normal"]])
    assert found[1] == pytest.approx(a - n, abs=1e-3)
    assert a < 0 and n < 0

    ranking = RankingBackend(backend, threshold=0.0, batch_size=2)
    labels = [parse_verdict(g.text).label for g in ranking.generate(conversations)]
    assert labels == ["abnormal" if m > 0 else "normal" for m in found]
    pivot = sorted(found)[1]  # a threshold just below the middle margin flips that one only
    shifted = RankingBackend(backend, threshold=pivot - 1e-6, batch_size=2).generate(conversations)
    assert [parse_verdict(g.text).label for g in shifted] == ["abnormal" if m > pivot - 1e-6 else "normal" for m in found]
    backend.close()


@pytest.mark.slow
def test_auto_decision_follows_the_adapters_decision_file(tmp_path) -> None:
    import shutil

    from rationanomaly.model.loading import shipped_adapter_dir

    adapter = tmp_path / "adapter"
    shutil.copytree(shipped_adapter_dir(), adapter)
    (adapter / DECISION_FILE).unlink(missing_ok=True)
    plain = make_backend(BackendSettings(device="cpu", adapter=str(adapter)))
    assert isinstance(plain, TransformersBackend)
    plain.close()
    save_threshold(adapter, -0.25)
    ranked = make_backend(BackendSettings(device="cpu", adapter=str(adapter)))
    assert isinstance(ranked, RankingBackend) and ranked.threshold == -0.25
    ranked.close()
    overridden = make_backend(BackendSettings(device="cpu", adapter=str(adapter), rank_threshold=1.5))
    assert isinstance(overridden, RankingBackend) and overridden.threshold == 1.5
    overridden.close()
    forced = make_backend(BackendSettings(device="cpu", adapter=str(adapter), decision="generate"))
    assert isinstance(forced, TransformersBackend)
    forced.close()


def test_the_rank_identity_names_scorer_threshold_and_drafts(monkeypatch) -> None:
    """Each ingredient that decides a rank verdict changes the id (hence verdict_id and cache key)."""
    import rationanomaly.model.ranking as ranking

    base = RankingBackend(TableScorer({}), threshold=-1.2113).model_id
    assert "-1.2113" in base and ranking.DRAFTS_VERSION in base
    assert RankingBackend(TableScorer({}), threshold=-1.2112).model_id != base
    assert RankingBackend(TableScorer({}), threshold=-1.2113 + 1e-12).model_id != base  # no rounding
    other = TableScorer({})
    other.model_id = "table+other-adapter@0123456789ab"
    assert RankingBackend(other, threshold=-1.2113).model_id != base
    monkeypatch.setattr(ranking, "DRAFTS_VERSION", "ra-drafts-test")
    assert RankingBackend(TableScorer({}), threshold=-1.2113).model_id != base


@pytest.mark.slow
def test_the_shipped_decision_files_threshold_is_in_the_model_id(tmp_path) -> None:
    """The real loading path: decision.json's threshold reaches the id, and editing it (or
    deciding by generation instead) gives another id."""
    import shutil

    from rationanomaly.model.loading import shipped_adapter_dir

    shipped = shipped_adapter_dir()
    if shipped is None or load_threshold(shipped) is None:
        pytest.skip("no shipped adapter with a rank decision")
    adapter = tmp_path / shipped.name
    shutil.copytree(shipped, adapter)

    def model_id(**overrides: object) -> str:
        backend = make_backend(BackendSettings(device="cpu", adapter=str(adapter), **overrides))  # type: ignore[arg-type]
        try:
            return backend.model_id
        finally:
            backend.close()

    shipped_id = model_id()
    assert f"threshold={load_threshold(shipped)!r}" in shipped_id
    save_threshold(adapter, load_threshold(shipped) + 0.25, calibrated_on=["test"])
    recalibrated = model_id()
    assert recalibrated != shipped_id
    generated = model_id(decision="generate")
    assert generated not in (shipped_id, recalibrated) and "+rank" not in generated

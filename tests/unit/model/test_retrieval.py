"""The reviewed-example memory (`model.retrieval`): similarities as scikit-learn computes them,
corrections that win, leave-one-out, the Spirit convention case on the real train split, the blend
and the files it reads."""

from __future__ import annotations

import doctest

import numpy as np
import orjson
import pytest

import rationanomaly.model.retrieval as retrieval
from rationanomaly.model.retrieval import (
    Neighbour,
    RetrievalBlend,
    RetrievalError,
    RetrievalIndex,
    ReviewedExample,
    cite,
    read_reviewed,
    vote,
)
from rationanomaly.training.data import load_split


def test_doctests() -> None:
    assert doctest.testmod(retrieval).failed == 0


def test_similarities_equal_scikit_learns_char_wb_tfidf_cosine() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    templates = [e.source for e in load_split("bgl_train")[:300]]
    queries = [e.source for e in load_split("bgl_dev")[:20]]
    index = RetrievalIndex()
    for t in templates:
        index.add(t, "normal", "train", "bgl")
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit(templates)
    expected = (vectorizer.transform(queries) @ vectorizer.transform(templates).T).toarray()
    position = {" ".join(t.lower().split()): j for j, t in enumerate(templates)}
    for q, row in zip(queries, expected, strict=True):
        found = index.nearest(q, k=5, dataset="bgl")
        assert [round(n.similarity, 9) for n in found] == [round(v, 9) for v in np.sort(row)[::-1][:5]]
        for n in found:
            assert n.similarity == pytest.approx(row[position[" ".join(n.example.template.lower().split())]], abs=1e-9)


def test_spirit_convention_is_told_apart_by_its_nearest_reviewed_examples() -> None:
    index = RetrievalIndex()
    for e in load_split("spirit_train"):
        if e.source not in ("mount: RPC: Timed out", ">> mount: RPC: Timed out"):  # judged, so left out
            index.add(e.source, e.label, "train", "spirit")
    marked = index.nearest(">> mount: RPC: Timed out", k=3, dataset="spirit")
    assert marked[0].example.template.startswith(">> mount: RPC")
    assert marked[0].example.label == "abnormal"
    assert vote(marked) > 0.5


def test_a_correction_replaces_the_label_and_the_next_query_sees_it() -> None:
    index = RetrievalIndex()
    index.add("link error on port <*>", "normal", "train", "bgl")
    index.add("disk full on <*>", "abnormal", "train", "bgl")
    index.add("Link  error on port <*>", "abnormal", "correction", "bgl")  # same template, other spacing/case
    assert len(index) == 2
    top = index.nearest("link error on port <*>", k=1, dataset="bgl")[0]
    assert (top.example.label, top.example.source) == ("abnormal", "correction")
    assert top.similarity == pytest.approx(1.0)


def test_exclude_self_and_dataset_filter() -> None:
    index = RetrievalIndex()
    index.add("kernel panic on node <*>", "abnormal", "train", "bgl")
    index.add("kernel panic on host <*>", "abnormal", "train", "bgl")
    index.add("kernel panic on node <*>", "normal", "train", "spirit")
    own = index.nearest("kernel panic on node <*>", k=5, dataset="bgl", exclude_self=True)
    assert [n.example.template for n in own] == ["kernel panic on host <*>"]
    assert all(n.example.dataset == "spirit" for n in index.nearest("kernel panic", k=5, dataset="spirit"))
    assert index.nearest("zzzz qqqq", k=3) == []  # no shared n-gram: no neighbour, not a zero-similarity list


def test_the_index_grows_after_queries() -> None:
    index = RetrievalIndex()
    index.add("alpha beta", "normal", "train")
    assert index.nearest("qqq zzz", k=1) == []
    index.add("qqq zzz", "abnormal", "correction")
    assert index.nearest("qqq zzz", k=1)[0].example.label == "abnormal"


@pytest.mark.parametrize("label, template", [("broken", "x"), ("normal", "   ")])
def test_bad_examples_are_refused(label: str, template: str) -> None:
    with pytest.raises(RetrievalError):
        RetrievalIndex().add(template, label, "train")
    with pytest.raises(RetrievalError):
        RetrievalIndex().nearest("x", k=0)


def test_blend_moves_the_margin_by_the_vote() -> None:
    blend = RetrievalBlend(weight=4.0, threshold=-1.0, k=10)
    abnormal = [Neighbour(ReviewedExample("a", "abnormal", "train"), 0.8)]
    normal = [Neighbour(ReviewedExample("a", "normal", "train"), 0.8)]
    assert blend.score(-2.0, abnormal) == pytest.approx(2.0)
    assert blend.decide(-2.0, abnormal) == "abnormal"
    assert blend.decide(-2.0, normal) == "normal"
    assert blend.score(-2.0, []) == -2.0  # no memory: the model alone
    assert RetrievalBlend(0.0, -1.0).decide(-0.5, normal) == "abnormal"


def test_blend_file_round_trip_and_bad_files(tmp_path) -> None:
    good = tmp_path / "retrieval.json"
    good.write_bytes(orjson.dumps({"weight": 4.0, "threshold": -3.6, "k": 10, "chosen_on": "dev"}))
    assert RetrievalBlend.load(good) == RetrievalBlend(4.0, -3.6, 10)
    for bad in ({"weight": 1.0}, {"weight": "x", "threshold": 0, "k": 1}, {"weight": -1, "threshold": 0, "k": 1},
                {"weight": 1, "threshold": float("inf"), "k": 1}):
        good.write_bytes(orjson.dumps(bad))
        with pytest.raises(RetrievalError):
            RetrievalBlend.load(good)
    with pytest.raises(RetrievalError):
        RetrievalBlend.load(tmp_path / "missing.json")


def test_cite_names_the_nearest_agreeing_example() -> None:
    found = [Neighbour(ReviewedExample("mount: RPC: Timed out", "normal", "train"), 0.95),
             Neighbour(ReviewedExample(">> mount: RPC: Timed out", "abnormal", "correction"), 0.9)]
    assert cite(found, "abnormal") == "like '>> mount: RPC: Timed out' (abnormal, reviewed, similarity 0.90)"
    assert cite(found[:1], "abnormal") is None
    assert cite([Neighbour(ReviewedExample("x" * 200, "normal", "train"), 0.5)], "normal").count("x") == 79


def test_read_reviewed_reads_the_real_split_and_refuses_bad_lines(tmp_path) -> None:
    from rationanomaly.training.data import data_dir

    examples = read_reviewed(data_dir() / "templates" / "bgl_dev.jsonl", "dev")
    assert len(examples) == 265 and sum(e.label == "abnormal" for e in examples) == 17
    assert {e.dataset for e in examples} == {"bgl"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"template": "x", "label": "normal"}\n{"template": "y", "label": "maybe"}\n')
    with pytest.raises(RetrievalError, match=":2:"):
        read_reviewed(bad, "correction")
    bad.write_text("not json\n")
    with pytest.raises(RetrievalError, match=":1:"):
        read_reviewed(bad, "correction")


class _MarginDecider:
    """A rank decider over fixed margins: the retrieval decider's unit tests need the inner
    margin on demand (the real RankDecider needs the model; the stream tests run that)."""

    kind = "rank"
    prompt_version = "test"
    model_id = "fixed-margins"

    def __init__(self, margins: dict, threshold: float = -1.0) -> None:
        self.margins = margins
        self.threshold = threshold
        self.closed = False

    def decide(self, inputs):
        from rationanomaly.model.judgement import Judgement
        from rationanomaly.model.ranking import confidence, decide, drafts

        out = []
        for x in inputs:
            m = self.margins.get(x if isinstance(x, str) else "window")
            if m is None:
                out.append(Judgement("unknown", None, "no margin", 0.0, 1, None, decision="rank"))
                continue
            label = decide(m, self.threshold)
            out.append(Judgement(label, drafts(x)[label], None, 0.0, 1, None, confidence(m, self.threshold, label),
                                 decision="rank", rationale_source="draft"))
        return out

    def close(self) -> None:
        self.closed = True


def _spirit_index() -> RetrievalIndex:
    index = RetrievalIndex()
    for e in load_split("spirit_train"):
        if e.source != ">> mount: RPC: Timed out":
            index.add(e.source, e.label, "train", "spirit")
    return index


def test_retrieval_decider_flips_a_convention_the_model_missed_and_cites_the_example() -> None:
    from rationanomaly.model.retrieval import RetrievalDecider

    template = ">> mount: RPC: Timed out"
    inner = _MarginDecider({template: -2.0, "window": 5.0})  # the model alone says normal
    decider = RetrievalDecider(inner, _spirit_index(), RetrievalBlend(weight=4.0, threshold=-1.0, k=10), "spirit")
    assert decider.kind == "rank" and "retrieval(k=10" in decider.model_id
    flipped, window, unknown = decider.decide([template, ("a", "b"), "never scored"])
    assert flipped.label == "abnormal"
    assert flipped.rationale_source == "draft"
    assert "Conclusion: abnormal" in flipped.rationale
    assert "Reviewed: like '>> mount: RPC:" in flipped.rationale and "(abnormal, reviewed" in flipped.rationale
    assert 0.5 < flipped.confidence < 1.0
    assert window.label == "abnormal" and "Reviewed" not in window.rationale  # windows pass through
    assert unknown.label == "unknown"
    decider.close()
    assert inner.closed


def test_retrieval_decider_keeps_a_confident_model_and_a_correction_changes_the_next_call() -> None:
    from rationanomaly.model.retrieval import RetrievalDecider

    template = "disk quota reached on /scratch for user <*>"
    index = RetrievalIndex()
    index.add("disk quota reached on /home for user <*>", "normal", "train", "site")
    decider = RetrievalDecider(_MarginDecider({template: 1.0}), index, RetrievalBlend(2.0, -1.0, 5), "site")
    first = decider.decide([template])[0]
    # The model leans abnormal (margin 1.0), its only reviewed neighbour is normal: 1.0 - 2.0 = -1.0,
    # not above the threshold, so normal.
    assert first.label == "normal" and "(normal, reviewed" in first.rationale
    index.add("disk quota reached on /home for user <*>", "abnormal", "correction", "site")
    second = decider.decide([template])[0]
    assert second.label == "abnormal" and "(abnormal, reviewed" in second.rationale
    assert first.confidence < second.confidence


def test_retrieval_decider_wraps_only_a_rank_decider() -> None:
    from rationanomaly.model.retrieval import RetrievalDecider

    class Generating:
        kind = "generate"

    with pytest.raises(RetrievalError):
        RetrievalDecider(Generating(), RetrievalIndex(), RetrievalBlend(1.0, 0.0))

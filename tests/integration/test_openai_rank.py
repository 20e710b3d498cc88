"""The rank decision on a server: llama.cpp (llama-cpp-python) serving the SmolLM2-135M-Instruct
GGUF, against the same weights in-process (transformers dequantizes that GGUF).

llama.cpp computes with the 4-bit weights themselves, so scores differ by quantization noise: a
few percent of a completion's log-likelihood. A token-position slip would move them by tens of
nats. llama-cpp-python builds each echoed token's log-prob list in Python (~8 s a request here),
so the test sends few requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rationanomaly.model.backends.openai import OpenAIBackend
from rationanomaly.model.backends.transformers import TransformersBackend
from rationanomaly.model.llama_server import LlamaServer
from rationanomaly.model.prompt import template_messages
from rationanomaly.model.decision import RankDecider, make_decider
from rationanomaly.model.ranking import candidates, decide, drafts
from rationanomaly.model.settings import BackendSettings

from tests.conftest import LLAMA_SERVER_MARKS

pytestmark = [*LLAMA_SERVER_MARKS, pytest.mark.slow]

# The base model's margins on these are far from 0 (−15 and +20 nats in-process), so the
# verdict cannot flip on quantization noise.
TEMPLATES = ["instruction cache parity error corrected", "KERNEL FATAL machine check interrupt"]


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    with LlamaServer(n_threads=2) as running:
        yield running


def served(server: LlamaServer, **overrides: object) -> BackendSettings:
    values: dict[str, object] = {"kind": "openai", "base_url": server.base_url, "adapter": None,
                                 "concurrency": 1, "timeout_s": 300, "decision": "rank", "rank_threshold": 0.0}
    values.update(overrides)
    return BackendSettings(**values)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def in_process_scores() -> dict[tuple[str, str], float]:
    backend = TransformersBackend(BackendSettings(kind="transformers", adapter=None, device="cpu", decision="rank"))
    try:
        pairs = [(t, label) for t in TEMPLATES for label in ("abnormal", "normal")]
        scores = backend.score([template_messages(t) for t, _ in pairs], [candidates(t)[label] for t, label in pairs])
    finally:
        backend.close()
    return dict(zip(pairs, scores, strict=True))


def test_the_server_scores_each_answer_as_the_model_in_process_does(server: LlamaServer, in_process_scores) -> None:
    backend = OpenAIBackend(served(server), probe=False)
    try:
        pairs = list(in_process_scores)
        scores = backend.score([template_messages(t) for t, _ in pairs], [candidates(t)[label] for t, label in pairs])
    finally:
        backend.close()
    for pair, score in zip(pairs, scores, strict=True):
        expected = in_process_scores[pair]
        assert score == pytest.approx(expected, rel=0.05), pair
    for t in TEMPLATES:
        served_margin = scores[pairs.index((t, "abnormal"))] - scores[pairs.index((t, "normal"))]
        local_margin = in_process_scores[(t, "abnormal")] - in_process_scores[(t, "normal")]
        assert abs(served_margin - local_margin) < 3.0 and decide(served_margin, 0.0) == decide(local_margin, 0.0)


def test_the_rank_decision_runs_against_the_server(server: LlamaServer, in_process_scores) -> None:
    decider = make_decider(served(server))  # passes the start-up check: echoed log-probs line up
    try:
        assert isinstance(decider, RankDecider) and decider.threshold == 0.0
        [judgement] = decider.decide([TEMPLATES[1]])
    finally:
        decider.close()
    expected = decide(in_process_scores[(TEMPLATES[1], "abnormal")] - in_process_scores[(TEMPLATES[1], "normal")], 0.0)
    assert judgement.reason is None, judgement.reason
    # The published rationale is the grounded draft for the chosen label, as in-process, and says so.
    assert judgement.label == expected and judgement.rationale == drafts(TEMPLATES[1])[expected]
    assert (judgement.decision, judgement.rationale_source) == ("rank", "draft")
    assert judgement.confidence is not None and judgement.confidence > 0.99


def test_eval_measures_the_served_model(server: LlamaServer, in_process_scores, tmp_path) -> None:
    """`rationanomaly eval --base-url`: the report's figures come from the server's verdicts."""
    from rationanomaly.training.evaluate import EvalRequest, run_evaluation

    data = tmp_path / "bgl_two.jsonl"
    # Gold labels chosen so that one verdict is right and one wrong, whatever the model says.
    verdicts = [decide(in_process_scores[(t, "abnormal")] - in_process_scores[(t, "normal")], 0.0) for t in TEMPLATES]
    gold = [verdicts[0], "normal" if verdicts[1] == "abnormal" else "abnormal"]
    data.write_text("".join(f'{{"dataset": "bgl", "template": "{t}", "label": "{g}"}}\n' for t, g in zip(TEMPLATES, gold)))
    report = run_evaluation(EvalRequest(data=(data,), model="default", adapter=None, baselines=(), decision="rank", rank_threshold=0.0,
                                        base_url=server.base_url, label="served"))
    [section] = report["sections"]
    assert section["system"] == "served" and section["n"] == 2
    assert section["format_valid_rate"] == 1.0
    tp = sum(v == g == "abnormal" for v, g in zip(verdicts, gold))
    fp = sum(v == "abnormal" != g for v, g in zip(verdicts, gold))
    fn = sum(g == "abnormal" != v for v, g in zip(verdicts, gold))
    assert (section["tp"], section["fp"], section["fn"]) == (tp, fp, fn)

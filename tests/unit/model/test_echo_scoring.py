"""Reading a completion's log-likelihood out of a server's echoed prompt log-probs.

The responses are written by hand in the two shapes real servers give: llama-cpp-python's
(BOS tokens left out, special tokens printed empty, no generated token when it stops at once)
and vLLM's (special tokens spelled out, the generated token last). The real server is in
tests/integration/test_openai_rank.py.
"""

from __future__ import annotations

import math

import httpx
import orjson
import pytest

from rationanomaly.model.backends.base import BackendError
from rationanomaly.model.backends.echo import (
    EchoError,
    check_aligned,
    completion_logprob,
    echo_body,
    locate,
    locate_ids,
    scoring_prompt,
)
from rationanomaly.model.backends.openai import OpenAIBackend
from rationanomaly.model.settings import BackendSettings

COMPLETION = "<think>Key: 'failed'.</think> <answer>abnormal</answer>"
COMPLETION_TOKENS = ["<", "think", ">", "Key", ":", " '", "failed", "'.", "</", "think", ">", " <", "answer", ">",
                     "ab", "normal", "</", "answer", ">"]
COMPLETION_LOGPROBS = [-5.5, -5.2, -0.03, -8.7, -4.0, -7.4, -9.5, -0.2, -1.0, -0.01, -0.01, -0.5, -0.02, -0.01,
                       -2.0, -0.01, -1.1, -0.011, -0.004]


def response(tokens: list[str], logprobs: list[float | None]) -> dict[str, object]:
    return {"choices": [{"text": "".join(tokens), "logprobs": {"tokens": tokens, "token_logprobs": logprobs}}]}


def llama_cpp_python_echo() -> dict[str, object]:
    # <|im_start|> is its BOS token: left out everywhere; <|im_end|> printed as "".
    prompt = ["system", "\n", "You", " are", "", "\n", "user", "\n", "ciod", " failed", "", "\n", "ass", "istant", "\n"]
    values: list[float | None] = [None] + [-1.0] * (len(prompt) - 1)
    return response(prompt + COMPLETION_TOKENS, values + COMPLETION_LOGPROBS)


def vllm_echo() -> dict[str, object]:
    prompt = ["<|im_start|>", "system", "\n", "You", " are", "<|im_end|>", "\n", "<|im_start|>", "assistant", "\n"]
    values: list[float | None] = [None] + [-1.0] * (len(prompt) - 1)
    return response(prompt + COMPLETION_TOKENS + ["<|im_end|>"], values + COMPLETION_LOGPROBS + [-0.3])


@pytest.mark.parametrize("echo", [llama_cpp_python_echo(), vllm_echo()], ids=["llama-cpp-python", "vllm"])
def test_the_completion_is_summed_over_exactly_its_tokens(echo: dict[str, object]) -> None:
    assert completion_logprob(echo, COMPLETION) == pytest.approx(sum(COMPLETION_LOGPROBS))
    check_aligned(echo, COMPLETION)


def test_the_last_occurrence_wins_when_the_prompt_quotes_the_completion() -> None:
    # A log that happens to contain the answer text must not be scored in its place.
    tokens = COMPLETION_TOKENS + ["\n"] + COMPLETION_TOKENS
    values = [None] + [-50.0] * (len(COMPLETION_TOKENS) - 1) + [-1.0] + COMPLETION_LOGPROBS
    assert completion_logprob(response(tokens, values), COMPLETION) == pytest.approx(sum(COMPLETION_LOGPROBS))


def test_non_ascii_pieces_inside_the_completion_are_counted() -> None:
    # "é" split over two byte tokens that a server prints as U+FFFD or not at all.
    completion = "<think>Key: 'dé'.</think> <answer>normal</answer>"
    tokens = ["\n", "<", "think", ">", "Key", ":", " 'd", "\ufffd", "", "'.", "</", "think", ">", " <", "answer", ">",
              "normal", "</", "answer", ">"]
    values: list[float | None] = [None] + [-1.0] * (len(tokens) - 1)
    assert completion_logprob(response(tokens, values), completion) == pytest.approx(-19.0)


def test_a_completion_off_token_boundaries_is_refused() -> None:
    assert locate(["<th", "ink>ok"], "<think>ok") == (0, 2)
    with pytest.raises(EchoError, match="token boundaries"):
        locate(["x<th", "ink>ok"], "<think>ok")


@pytest.mark.parametrize(
    ("echo", "message"),
    [
        ({"choices": [{"text": "hi", "logprobs": None}]}, "no echoed log-probs"),
        ({"choices": []}, "no echoed log-probs"),
        ({"choices": [{"logprobs": {"tokens": ["a"], "token_logprobs": []}}]}, "malformed"),
        (response(["<", "think", ">"], [None, -1.0, -1.0]), "does not contain"),
    ],
)
def test_responses_without_usable_log_probs_are_refused(echo: dict[str, object], message: str) -> None:
    with pytest.raises(EchoError, match=message):
        completion_logprob(echo, COMPLETION)


def test_a_completion_whose_first_token_has_no_log_prob_is_refused() -> None:
    with pytest.raises(EchoError, match="finite"):
        completion_logprob(response(COMPLETION_TOKENS, [None] + COMPLETION_LOGPROBS[1:]), COMPLETION)


def test_log_probs_shifted_by_one_token_are_detected() -> None:
    # What llama-cpp-python gives for a model without a BOS token: each token shows the
    # log-prob its successor had, so "answer" after "</" carries the "</" step's doubt.
    shifted = COMPLETION_LOGPROBS[1:] + [-6.0]
    with pytest.raises(EchoError, match="shifted"):
        check_aligned(response(["\n"] + COMPLETION_TOKENS, [None] + shifted), COMPLETION)


def test_the_request_asks_for_the_prompts_own_log_probs() -> None:
    body = echo_body("m", "text")
    assert body["echo"] is True and body["logprobs"] >= 1 and body["max_tokens"] == 1 and body["prompt"] == "text"


@pytest.fixture(scope="module")
def tokenizer():  # noqa: ANN201
    from transformers import AutoTokenizer

    from rationanomaly.model.loading import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model("default"))


def test_the_prompt_is_the_rendered_chat_then_the_completion(tokenizer) -> None:  # noqa: ANN001
    text = scoring_prompt(tokenizer, [{"role": "user", "content": "log"}], COMPLETION)
    assert text.endswith("<|im_start|>user\nlog<|im_end|>\n<|im_start|>assistant\n" + COMPLETION)


def test_vllm_token_ids_are_matched_exactly(tokenizer) -> None:  # noqa: ANN001
    # vLLM with return_tokens_as_token_ids: every echoed token is "token_id:N".
    prompt_ids = tokenizer.apply_chat_template([{"role": "user", "content": COMPLETION}], add_generation_prompt=True)
    prompt_ids = list(prompt_ids["input_ids"] if not isinstance(prompt_ids, list) else prompt_ids)
    completion_ids = tokenizer(COMPLETION, add_special_tokens=False)["input_ids"]
    ids = prompt_ids + completion_ids + [tokenizer.eos_token_id]
    values = [None] + [-1.0] * (len(prompt_ids) - 1) + [-0.5] * len(completion_ids) + [-0.2]
    echo = response([f"token_id:{i}" for i in ids], values)
    # The user message quotes the completion; the span scored is the answer's, at the end.
    assert locate_ids(echo["choices"][0]["logprobs"]["tokens"], completion_ids) == (
        len(prompt_ids), len(prompt_ids) + len(completion_ids))
    assert completion_logprob(echo, COMPLETION, completion_ids) == pytest.approx(-0.5 * len(completion_ids))
    check_aligned(echo, COMPLETION, completion_ids)
    with pytest.raises(EchoError, match="token ids do not contain"):
        completion_logprob(echo, COMPLETION, [completion_ids[0], 99999])


def backend_over(handler) -> OpenAIBackend:  # noqa: ANN001
    settings = BackendSettings(kind="openai", base_url="http://scorer.invalid/v1", model="m", decision="rank",
                               adapter=None, retries=0)
    return OpenAIBackend(settings, probe=False, transport=httpx.MockTransport(handler))


def test_the_start_up_check_refuses_a_server_that_echoes_nothing() -> None:
    # llama.cpp's own server answers /v1/completions but returns no prompt log-probs.
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/v1/completions" and orjson.loads(request.content)["echo"] is True
        return httpx.Response(200, json={"choices": [{"text": "x", "logprobs": None}]})

    with backend_over(handler) as backend, pytest.raises(BackendError, match="no echoed log-probs"):
        backend.check_scoring([{"role": "user", "content": "log"}], COMPLETION)


def test_a_failed_request_costs_its_own_score_only() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        prompt = orjson.loads(request.content)["prompt"]
        if "bad" in prompt:
            return httpx.Response(400, json={"error": "context length exceeded"})
        return httpx.Response(200, json=response(["user", "\n", "good", "", "\n", "ass", "istant", "\n"] + COMPLETION_TOKENS,
                                                 [None] + [-1.0] * 7 + COMPLETION_LOGPROBS))

    with backend_over(handler) as backend:
        scores = backend.score([[{"role": "user", "content": "good"}], [{"role": "user", "content": "bad"}]],
                               [COMPLETION, COMPLETION])
    assert scores[0] == pytest.approx(sum(COMPLETION_LOGPROBS)) and math.isnan(scores[1])

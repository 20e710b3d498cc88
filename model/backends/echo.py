"""Completion log-likelihoods from an OpenAI-compatible server's echoed prompt log-probs.

`/v1/completions` with `echo` and `logprobs` returns the log-probability of every prompt token,
so a prompt that ends with a candidate answer yields that answer's teacher-forced
log-likelihood: what the rank decision (`model.ranking`) weighs, with the model on a server.
vLLM and llama-cpp-python answer such requests; llama.cpp's own server does not.

The chat template is rendered here, with the served model's tokenizer, because the endpoint
takes raw text. The answer's tokens are then found in the echo, not counted from its start:
servers list tokens differently (llama-cpp-python leaves its BOS token out wherever it occurs
and prints special tokens as empty strings), and their `text_offset`s do not count what they
leave out. vLLM is asked for token ids (`return_tokens_as_token_ids`) and the answer's ids are
matched exactly; a server that ignores the field is matched on text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

Conversation = list[dict[str, str]]

# The closing tag every candidate answer ends with. After "</" the model has just read
# "<answer>…", so "answer>" is near-certain under any model that serves the rank decision; an
# echo whose log-probs are shifted by one position reads them from the wrong distribution and
# makes them improbable instead.
CLOSING_TAG = "</answer>"
ALIGNED_FLOOR_NATS = -3.0


class EchoError(ValueError):
    """A response that carries no usable echoed log-probs for the completion."""


def scoring_prompt(tokenizer: Any, conversation: Conversation, completion: str) -> str:
    """The text whose echo scores `completion`: the chat prompt as the model sees it, then the
    completion, exactly as `model.scoring` tokenizes them in-process."""
    prompt = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    return str(prompt) + completion


def echo_body(model_id: str, prompt: str) -> dict[str, Any]:
    """A request for the prompt's own log-probs; the one generated token is ignored.

    `add_special_tokens` and `return_tokens_as_token_ids` are vLLM's (the rendered template
    already holds any BOS token; ids match exactly where text may not); other servers ignore them.
    """
    return {
        "model": model_id,
        "prompt": prompt,
        "max_tokens": 1,
        "temperature": 0.0,
        "echo": True,
        "logprobs": 1,
        "add_special_tokens": False,
        "return_tokens_as_token_ids": True,
    }


def echoed_tokens(response: Mapping[str, Any]) -> tuple[list[str], list[float | None]]:
    """The echoed tokens' texts and log-probs, from a completions response."""
    try:
        logprobs = response["choices"][0]["logprobs"]
        tokens, values = list(logprobs["tokens"]), list(logprobs["token_logprobs"])
    except (KeyError, IndexError, TypeError) as error:
        raise EchoError(f"response has no echoed log-probs ({error!r}); the server must support "
                        "echo with logprobs on /v1/completions, as vLLM and llama-cpp-python do") from None
    if len(tokens) != len(values) or not all(isinstance(t, str) for t in tokens):
        raise EchoError(f"malformed logprobs: {len(tokens)} tokens for {len(values)} log-probs")
    return tokens, values


def locate(tokens: Sequence[str], completion: str) -> tuple[int, int]:
    """The last token span [start, end) whose texts spell `completion`.

    Compared on ASCII only: a token that carries part of a multi-byte character decodes
    differently on every server (empty, U+FFFD, or a byte escape), while such characters are
    rare in a draft and never decide where it starts or ends.

    >>> locate(["<|im_start|>", "user", "\\n", "<", "think", ">", "ok", "", "x"], "<think>ok")
    (3, 7)
    >>> locate(["ab", "c"], "bc")
    Traceback (most recent call last):
    ...
    rationanomaly.model.backends.echo.EchoError: the echo does not contain the completion on token boundaries ('bc')
    """
    target = _ascii(completion)
    if not target:
        raise EchoError("cannot locate a completion without ASCII text")
    pieces = [_ascii(token) for token in tokens]
    # Token boundaries in the ASCII text, by the non-empty pieces that start or end there.
    first_at: dict[int, int] = {}
    last_at: dict[int, int] = {}
    position = 0
    for i, piece in enumerate(pieces):
        if piece:
            first_at[position] = i
            position += len(piece)
            last_at[position] = i
    text = "".join(pieces)
    found = text.rfind(target)
    while found >= 0:
        stop = found + len(target)
        if found in first_at and stop in last_at:
            return first_at[found], last_at[stop] + 1
        found = text.rfind(target, 0, stop - 1)  # the next occurrence to the left
    raise EchoError(f"the echo does not contain the completion on token boundaries ({completion[:60]!r})")


def locate_ids(tokens: Sequence[str], completion_ids: Sequence[int]) -> tuple[int, int] | None:
    """The last token span [start, end) whose ids are `completion_ids`, for an echo in vLLM's
    `token_id:N` form; None when the echo is not in that form.

    >>> locate_ids(["token_id:1", "token_id:7", "token_id:8", "token_id:7", "token_id:8", "token_id:2"], [7, 8])
    (3, 5)
    >>> locate_ids(["<", "think"], [7]) is None
    True
    """
    if not completion_ids or not tokens or not all(t.startswith("token_id:") for t in tokens):
        return None
    try:
        ids = [int(t[len("token_id:"):]) for t in tokens]
    except ValueError:
        return None
    n = len(completion_ids)
    for start in range(len(ids) - n, -1, -1):
        if ids[start : start + n] == list(completion_ids):
            return start, start + n
    raise EchoError(f"the echo's token ids do not contain the completion's ({len(completion_ids)} tokens)")


def completion_span(response: Mapping[str, Any], completion: str,
                    completion_ids: Sequence[int] | None = None) -> tuple[list[float | None], int, int]:
    """The echo's log-probs and the span [start, end) of the tokens that are `completion`:
    matched by id when the echo gives ids and `completion_ids` are known, else by text."""
    tokens, values = echoed_tokens(response)
    span = locate_ids(tokens, completion_ids) if completion_ids else None
    start, end = span if span is not None else locate(tokens, completion)
    return values, start, end


def completion_logprob(response: Mapping[str, Any], completion: str,
                       completion_ids: Sequence[int] | None = None) -> float:
    """Sum of the log-probs (nats) of the echoed tokens that are `completion`."""
    values, start, end = completion_span(response, completion, completion_ids)
    found = values[start:end]
    if any(v is None or not math.isfinite(v) for v in found):
        raise EchoError("the completion's tokens include one without a finite log-prob")
    return float(sum(found))  # type: ignore[arg-type]


def check_aligned(response: Mapping[str, Any], completion: str, completion_ids: Sequence[int] | None = None) -> None:
    """Raise when the echo's log-probs look shifted by one token against its tokens.

    llama-cpp-python drops a leading BOS token and reads log-probs from the position after it;
    for a model whose prompts start with no BOS, each token then gets the probability that the
    next token repeats it. The closing tag tells: its last two tokens must be near-certain.
    """
    if not completion.endswith(CLOSING_TAG):
        raise ValueError(f"the alignment check needs a completion ending with {CLOSING_TAG!r}")
    values, start, end = completion_span(response, completion, completion_ids)
    tail = values[max(start, end - 2) : end]
    if not tail or any(v is None or v < ALIGNED_FLOOR_NATS for v in tail):
        raise EchoError(f"the server's echoed log-probs look shifted: the closing tag's last tokens got {tail} "
                        "nats; its scores would not be the model's")


def _ascii(text: str) -> str:
    return text.encode("ascii", "ignore").decode("ascii")

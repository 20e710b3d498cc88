"""Teacher-forced log-likelihood of a completion after a chat prompt.

Used to rank candidate answers (`model.ranking`) and to find the prompts a policy is torn on
(`training.hardness`). The vocabulary projection is the largest single matrix of a small model
and a prompt is most of each sequence, so the head runs only on the completion's positions.
Every prompt starts with the same system prompt (81 of a scored row's ~165 tokens here), so
that shared prefix runs once and its key/value cache is reused by every batch.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

Conversation = list[dict[str, str]]


def encode_pairs(tokenizer: Any, prompts: Sequence[Conversation], completions: Sequence[str]) -> list[tuple[list[int], int]]:
    """Token ids of prompt + completion, and where the completion starts, for each pair."""
    rows: list[tuple[list[int], int]] = []
    for messages, completion in zip(prompts, completions, strict=True):
        prompt_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        if not isinstance(prompt_ids, list):  # transformers 5 may return a BatchEncoding
            prompt_ids = list(prompt_ids["input_ids"])
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        if not completion_ids:
            raise ValueError("cannot score an empty completion")
        rows.append((list(prompt_ids) + list(completion_ids), len(prompt_ids)))
    return rows


def shared_prefix_length(rows: Sequence[tuple[list[int], int]], minimum: int = 8) -> int:
    """Tokens every row starts with, short of every prompt's last token (whose state predicts
    the completion's first); 0 when fewer than `minimum` are shared.

    >>> shared_prefix_length([([1, 2, 3, 4, 9], 4), ([1, 2, 3, 5, 9], 4)], minimum=2)
    3
    >>> shared_prefix_length([([1, 2, 3, 9], 2), ([1, 2, 3, 8], 3)], minimum=1)
    1
    """
    if not rows:
        return 0
    length = min(len(os.path.commonprefix([tokens for tokens, _ in rows])), min(p for _, p in rows) - 1)
    return length if length >= minimum else 0


def prefix_cache(model: Any, tokens: Sequence[int]) -> Any:
    """The key/value cache of one run of `tokens` (the prefix rows share); gradients flow
    through it when they are enabled."""
    import torch

    decoder = model.get_decoder()
    out = decoder(input_ids=torch.tensor([list(tokens)], device=model.device), use_cache=True)
    name = cache_argument(decoder)
    return out[name] if name in out else out[1]


def rows_hidden(model: Any, tokenizer: Any, rows: Sequence[tuple[list[int], int]], prefix: int = 0,
                cache: Any = None) -> Any:
    """Last hidden states of the rows after their first `prefix` tokens, right-padded; position
    j of a row's states is its token `prefix + j`. `cache` holds those `prefix` tokens (one row,
    from `prefix_cache`) and is used up: it is widened to the batch and a forward appends to it."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    decoder = model.get_decoder()
    width = max(len(tokens) for tokens, _ in rows) - prefix
    # Right padding: a causal model's states at real positions never see the pads.
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), prefix + width), dtype=torch.long)
    mask[:, :prefix] = 1
    for row, (tokens, _) in enumerate(rows):
        ids[row, : len(tokens) - prefix] = torch.tensor(tokens[prefix:])
        mask[row, prefix : len(tokens)] = 1
    extra: dict[str, Any] = {}
    if cache is not None:
        cache.batch_repeat_interleave(len(rows))
        extra = {cache_argument(decoder): cache, "use_cache": True}
    return decoder(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), **extra).last_hidden_state


def completion_logprobs(model: Any, tokenizer: Any, prompts: Sequence[Conversation], completions: Sequence[str],
                        batch_size: int = 16, share_prefix: bool = True) -> list[float]:
    """Sum of the completion tokens' log-probabilities (nats) after each chat prompt."""
    import torch

    rows = encode_pairs(tokenizer, prompts, completions)
    head = model.get_output_embeddings()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths, less padding
    scores = [0.0] * len(rows)
    with torch.inference_mode():
        prefix = shared_prefix_length(rows) if share_prefix else 0
        shared = prefix_cache(model, rows[0][0][:prefix]) if prefix else None
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            hidden = rows_hidden(model, tokenizer, [rows[i] for i in chunk], prefix,
                                 copy.deepcopy(shared) if shared is not None else None)
            for row, i in enumerate(chunk):
                tokens, prompt_len = rows[i]
                # The state at position t predicts token t + 1; hidden starts at position `prefix`.
                states = hidden[row, prompt_len - 1 - prefix : len(tokens) - 1 - prefix]
                logprobs = torch.log_softmax(head(states).float(), dim=-1)
                targets = torch.tensor(tokens[prompt_len:], device=logprobs.device)
                scores[i] = float(logprobs.gather(1, targets[:, None]).sum())
    return scores


def scorer(model: Any, tokenizer: Any, batch_size: int = 16,
           share_prefix: bool = True) -> Callable[[Sequence[Conversation], Sequence[str]], list[float]]:
    """`completion_logprobs` bound to one model: the scorer `model.ranking.margins` takes."""
    return functools.partial(completion_logprobs, model, tokenizer, batch_size=batch_size, share_prefix=share_prefix)


def cache_argument(decoder: Any) -> str:
    """transformers renamed `past_key_values` to `cache` (5.2x); the old name goes in 5.40."""
    return _cache_argument_of(type(decoder))


@functools.cache
def _cache_argument_of(decoder_class: type) -> str:
    import inspect

    return "cache" if "cache" in inspect.signature(decoder_class.forward).parameters else "past_key_values"

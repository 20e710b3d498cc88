"""Teacher-forced log-likelihood of a completion after a chat prompt.

Used to rank candidate answers (`model.ranking`) and to find the prompts a policy is torn on
(`training.hardness`). The vocabulary projection is the largest single matrix of a small model
and a prompt is most of each sequence, so the head runs only on the completion's positions.
"""

from __future__ import annotations

from collections.abc import Sequence
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


def completion_logprobs(model: Any, tokenizer: Any, prompts: Sequence[Conversation], completions: Sequence[str],
                        batch_size: int = 16) -> list[float]:
    """Sum of the completion tokens' log-probabilities (nats) after each chat prompt."""
    import torch

    rows = encode_pairs(tokenizer, prompts, completions)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))  # similar lengths, less padding
    scores = [0.0] * len(rows)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            width = max(len(rows[i][0]) for i in chunk)
            # Right padding: a causal model's states at real positions never see the pads.
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                tokens = rows[i][0]
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
            hidden = decoder(input_ids=ids.to(model.device), attention_mask=mask.to(model.device)).last_hidden_state
            for row, i in enumerate(chunk):
                tokens, prompt_len = rows[i]
                # The state at position t predicts token t + 1.
                states = hidden[row, prompt_len - 1 : len(tokens) - 1]
                logprobs = torch.log_softmax(head(states).float(), dim=-1)
                targets = torch.tensor(tokens[prompt_len:], device=logprobs.device)
                scores[i] = float(logprobs.gather(1, targets[:, None]).sum())
    return scores

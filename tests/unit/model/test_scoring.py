"""Teacher-forced completion scores on the real model: the shared-prefix cache changes nothing."""

from __future__ import annotations

import pytest

from rationanomaly.model.prompt import template_messages, window_messages
from rationanomaly.model.ranking import candidates
from rationanomaly.model.scoring import completion_logprobs, encode_pairs, shared_prefix_length

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lm():
    from rationanomaly.model.loading import load_causal_lm

    return load_causal_lm("default", "default")


def _pairs():
    logs = ["ciod: LOGIN chdir(<*>) failed: Input/output error", "PCI: Using configuration type 1",
            ("Receiving block <*> src: <*> dest: <*>", "PacketResponder <*> for block <*> terminating")]
    prompts, completions = [], []
    for log in logs:
        messages = template_messages(log) if isinstance(log, str) else window_messages(log)
        for answer in candidates(log).values():
            prompts.append(messages)
            completions.append(answer)
    return prompts, completions


def test_shared_prefix_scores_equal_full_passes(lm) -> None:
    model, tokenizer = lm
    prompts, completions = _pairs()
    rows = encode_pairs(tokenizer, prompts, completions)
    assert shared_prefix_length(rows) >= 40  # the system prompt at least
    for batch_size in (1, 4):
        shared = completion_logprobs(model, tokenizer, prompts, completions, batch_size=batch_size)
        full = completion_logprobs(model, tokenizer, prompts, completions, batch_size=batch_size, share_prefix=False)
        assert shared == pytest.approx(full, abs=2e-3)
    assert len({round(s, 2) for s in shared}) == len(shared)


def test_prompts_without_a_common_start_take_the_full_path(lm) -> None:
    model, tokenizer = lm
    prompts, completions = _pairs()
    bare = [[m for m in prompts[0] if m["role"] != "system"]]  # no system prompt: a different first token run
    rows = encode_pairs(tokenizer, prompts[:1] + bare, completions[:2])
    assert shared_prefix_length(rows) < 40
    mixed = completion_logprobs(model, tokenizer, prompts[:1] + bare, completions[:2], batch_size=2)
    alone = [completion_logprobs(model, tokenizer, [p], [c], share_prefix=False)[0]
             for p, c in zip(prompts[:1] + bare, completions[:2], strict=True)]
    assert mixed == pytest.approx(alone, abs=2e-3)

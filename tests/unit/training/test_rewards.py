"""Reward functions against hand-written cases."""

from __future__ import annotations

import math

import pytest

from rationanomaly.training.rewards import (
    RewardConfig,
    build_rewards,
    make_answer_reward,
    make_brevity_reward,
    make_coherence_reward,
    make_consistency_reward,
    make_format_reward,
    make_grounding_reward,
    rouge_l_f,
)

CFG = RewardConfig()
GOOD_ABN = "<think>Key: 'error' from ciod. A network fault. Conclusion: abnormal, a fault is indicated.</think> <answer>abnormal</answer>"
GOOD_NORM = "<think>Key: 'Mounted'. Routine status, no fault keywords. Conclusion: normal, routine operation.</think> <answer>normal</answer>"
BAD = "<answer>abnormal</answer> <think>late</think>"


def chat(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def test_format_reward_valid_and_invalid() -> None:
    reward = make_format_reward(CFG)
    assert reward([GOOD_ABN, BAD, "", "<think>x</think><answer>maybe</answer>"]) == [0.1, -1.0, -1.0, -1.0]


def test_format_reward_accepts_chat_messages() -> None:
    assert make_format_reward(CFG)([chat(GOOD_NORM), chat(BAD)]) == [0.1, -1.0]


def test_answer_reward_is_asymmetric() -> None:
    reward = make_answer_reward(CFG)
    tp, tn, fn, fp = reward(
        [GOOD_ABN, GOOD_NORM, GOOD_NORM, GOOD_ABN], label=["abnormal", "normal", "abnormal", "normal"]
    )
    assert tp > tn > 0, "a caught anomaly earns more than a correct normal"
    assert fn < fp < 0, "a missed anomaly costs more than a false alarm"


def test_answer_reward_void_when_format_invalid() -> None:
    assert make_answer_reward(CFG)([BAD, chat(BAD)], label=["abnormal", "normal"]) == [0.0, 0.0]


def test_answer_reward_needs_label_column() -> None:
    with pytest.raises(ValueError, match="label"):
        make_answer_reward(CFG)([GOOD_ABN])


def test_think_rewards_only_when_answer_right() -> None:
    source = ["ciod: Error reading message prefix"]
    reference = ["Key: 'Error' from ciod. This points to a network fault. Conclusion: abnormal, a fault is indicated."]
    grounding = make_grounding_reward(CFG)
    brevity = make_brevity_reward(CFG)
    right = grounding([GOOD_ABN], label=["abnormal"], source=source, reference=reference)[0]
    wrong = grounding([GOOD_ABN], label=["normal"], source=source, reference=reference)[0]
    assert 0.0 < right <= 1.0 and wrong == 0.0
    assert brevity([GOOD_ABN], label=["abnormal"], reference=reference)[0] > 0.5
    assert brevity([GOOD_ABN], label=["normal"], reference=reference)[0] == 0.0
    assert grounding([BAD], label=["abnormal"], source=source, reference=reference) == [0.0]


def test_brevity_falls_with_length_gap() -> None:
    reference = ["one two three four five six seven eight nine ten"]
    short = "<think>one two three four five six seven eight nine ten</think> <answer>normal</answer>"
    long = "<think>" + " word" * 40 + "</think> <answer>normal</answer>"
    brevity = make_brevity_reward(CFG)
    assert brevity([short], label=["normal"], reference=reference) == [1.0]
    assert brevity([long], label=["normal"], reference=reference) == [0.0]


def test_grounding_prefers_rationale_tied_to_input() -> None:
    source = ["instruction cache parity error corrected"]
    tied = "<think>The cache parity error was corrected. Conclusion: normal.</think> <answer>normal</answer>"
    loose = "<think>Bananas fly over purple mountains. Conclusion: normal.</think> <answer>normal</answer>"
    scores = make_grounding_reward(CFG)([tied, loose], label=["normal"] * 2, source=source * 2, reference=["", ""])
    assert scores[0] > scores[1]


def test_coherence_maps_perplexity_to_unit_interval() -> None:
    ppl = {"fluent": 5.0, "junk": 10000.0}
    reward = make_coherence_reward(CFG, scorer=lambda text: ppl["fluent" if "fluent" in text else "junk"])
    fluent = "<think>fluent text. Conclusion: normal.</think> <answer>normal</answer>"
    junk = "<think>zz qq. Conclusion: normal.</think> <answer>normal</answer>"
    assert reward([fluent, junk, fluent], label=["normal", "normal", "abnormal"]) == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    ("rationale", "answer", "expected"),
    [
        ("Key: 'error'. Conclusion: abnormal, a fault is indicated.", "abnormal", CFG.consistency_agree),
        ("Key: 'error'. Conclusion: abnormal, a fault is indicated.", "normal", CFG.consistency_disagree),
        ("The message is routine and benign.", "abnormal", CFG.consistency_disagree),
        ("There is no error and no failure here.", "normal", CFG.consistency_agree),
        ("There is no error and no failure here.", "abnormal", CFG.consistency_disagree),
        ("This is not a normal state; the disk failed.", "abnormal", CFG.consistency_agree),
        ("Key: 'failed'. Conclusion: normal, routine and not a fault.", "normal", CFG.consistency_agree),
        ("Register dump r16=0x1.", "normal", 0.0),  # undecided stance earns nothing
    ],
)
def test_consistency_reward(rationale: str, answer: str, expected: float) -> None:
    completion = f"<think>{rationale}</think> <answer>{answer}</answer>"
    assert make_consistency_reward(CFG)([completion]) == [expected]


def test_consistency_void_when_format_invalid() -> None:
    assert make_consistency_reward(CFG)([BAD]) == [0.0]


def test_build_rewards_weights_match_functions() -> None:
    funcs, weights = build_rewards(CFG, scorer=lambda text: 10.0)
    names = [f.__name__ for f in funcs]
    assert names == ["format_reward", "answer_reward", "grounding_reward", "brevity_reward", "coherence_reward", "consistency_reward"]
    assert len(weights) == len(funcs)
    assert math.isclose(sum(weights[2:5]), CFG.weight_think)
    funcs, weights = build_rewards(RewardConfig(use_coherence=False))
    assert "coherence_reward" not in [f.__name__ for f in funcs] and len(weights) == len(funcs)


def test_rewards_take_trl_style_kwargs() -> None:
    funcs, _ = build_rewards(CFG, scorer=lambda text: 10.0)
    kwargs = {"prompts": [[{"role": "user", "content": "x"}]] * 2, "label": ["abnormal", "normal"],
              "reference": ["Key: 'error'.", "Key: 'Mounted'."], "source": ["error", "Mounted"],
              "completion_ids": [[1], [2]], "trainer_state": None}
    for f in funcs:
        out = f([chat(GOOD_ABN), chat(GOOD_NORM)], **kwargs)
        assert len(out) == 2 and all(math.isfinite(v) for v in out)


def test_rouge_l() -> None:
    assert rouge_l_f("a b c d", "a c d") == pytest.approx(2 * (3 / 4) * 1 / (3 / 4 + 1))


def test_consistency_penalises_denying_fault_words_in_the_input() -> None:
    completion = "<think>Key: 'fatal'. Routine, no fault keywords. Conclusion: normal, routine operation.</think> <answer>normal</answer>"
    reward = make_consistency_reward(CFG)
    assert reward([completion], source=["fatal: usage: postqueue"]) == [CFG.consistency_disagree]
    assert reward([completion], source=["PCI: Using configuration type 1"]) == [CFG.consistency_agree]

"""GRPO rewards: plain batched callables `(completions, **kwargs) -> list[float]`.

TRL passes the dataset's extra columns to every reward function by name, so the keyword
arguments here are the column names of `data.to_grpo_dataset`: `label` (gold), `reference`
(the SFT rationale) and `source` (the input text). For chat data completions arrive as message
lists; plain strings are accepted too.

The paper's total is format + answer + 0.5·think. As in the released code, an invalid format
voids every other reward (they return 0), and the think rewards count only when the answer is
right, so a fluent rationale can never pay for a wrong verdict.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rationanomaly.model.parser import ParsedVerdict, VerdictParseError, parse_verdict
from rationanomaly.model.lexicon import has_fault_terms
from rationanomaly.training.stance import stance

RewardFn = Callable[..., list[float]]


@dataclass(frozen=True)
class RewardConfig:
    """Reward magnitudes and weights (the weights go to `GRPOConfig.reward_weights`)."""

    format_valid: float = 0.1  # released code: +0.1 valid, −1.0 invalid
    format_invalid: float = -1.0
    # Asymmetric answer reward: a caught anomaly earns more than a correct normal, a missed
    # anomaly costs more than a false alarm (the paper credits this with +4.5 F1 on Spirit).
    true_positive: float = 1.5
    true_negative: float = 1.0
    false_negative: float = -1.5
    false_positive: float = -0.5
    consistency_agree: float = 0.2
    consistency_disagree: float = -0.5
    brevity_tolerance: float = 0.5  # relative length gap at which brevity reaches 0
    use_coherence: bool = True
    coherence_model: str | None = None  # None → the base model; perplexity under it
    # SmolLM2-135M scores short draft-style rationales at perplexity ~100–1000; the shipped run
    # used 5–200 and the reward sat at ~0 throughout, so the range now spans what it measures.
    coherence_ppl_floor: float = 20.0  # perplexity mapped to 1.0
    coherence_ppl_ceiling: float = 2000.0  # perplexity mapped to 0.0
    weight_format: float = 1.0
    weight_answer: float = 1.0
    weight_think: float = 0.5  # split equally between the think rewards in use
    weight_consistency: float = 0.5


# --- parsing -------------------------------------------------------------------------------


def completion_text(completion: str | Sequence[dict[str, Any]]) -> str:
    """The assistant text of one completion, whether a string or a chat message list.

    >>> completion_text([{"role": "assistant", "content": "hi"}])
    'hi'
    """
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def parse_completion(completion: str | Sequence[dict[str, Any]]) -> ParsedVerdict | None:
    try:
        return parse_verdict(completion_text(completion))
    except VerdictParseError:
        return None


def _labels(label: Sequence[str] | None, n: int) -> list[str]:
    if label is None or len(label) != n:
        raise ValueError("reward needs the dataset's `label` column (one gold label per completion)")
    return list(label)


# --- text similarity (own implementation, no extra dependencies) ----------------------------

_TOKEN = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    """Lower-case alphanumeric tokens.

    >>> tokens("Node R02-M1 failed: EDRAM error")
    ['node', 'r02', 'm1', 'failed', 'edram', 'error']
    """
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (the core of ROUGE-L)."""
    if not a or not b:
        return 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    return previous[-1]


def rouge_l_f(candidate: str, reference: str) -> float:
    """ROUGE-L F1 over tokens, in [0, 1].

    >>> rouge_l_f("the node failed", "the node failed")
    1.0
    >>> rouge_l_f("", "x")
    0.0
    """
    c, r = tokens(candidate), tokens(reference)
    lcs = lcs_length(c, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def overlap_recall(candidate: str, source: str) -> float:
    """Share of the candidate's content tokens (≥3 letters) found in the source: grounding.

    >>> overlap_recall("parity error in cache", "instruction cache parity error corrected")
    1.0
    """
    content = [t for t in tokens(candidate) if len(t) >= 3 and not t.isdigit()]
    if not content:
        return 0.0
    vocabulary = set(tokens(source))
    return sum(t in vocabulary for t in content) / len(content)


# --- reward functions ----------------------------------------------------------------------


def make_format_reward(cfg: RewardConfig) -> RewardFn:
    def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return [cfg.format_valid if parse_completion(c) else cfg.format_invalid for c in completions]

    return format_reward


def make_answer_reward(cfg: RewardConfig) -> RewardFn:
    def answer_reward(completions: Sequence[Any], label: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        gold = _labels(label, len(completions))
        rewards = []
        for completion, truth in zip(completions, gold, strict=True):
            verdict = parse_completion(completion)
            if verdict is None:
                rewards.append(0.0)
            elif truth == "abnormal":
                rewards.append(cfg.true_positive if verdict.label == "abnormal" else cfg.false_negative)
            else:
                rewards.append(cfg.true_negative if verdict.label == "normal" else cfg.false_positive)
        return rewards

    return answer_reward


def _right_verdicts(completions: Sequence[Any], label: Sequence[str] | None) -> list[ParsedVerdict | None]:
    """Parsed verdicts where the answer is right, else None (think rewards are void then)."""
    gold = _labels(label, len(completions))
    verdicts = []
    for completion, truth in zip(completions, gold, strict=True):
        verdict = parse_completion(completion)
        verdicts.append(verdict if verdict is not None and verdict.label == truth else None)
    return verdicts


def make_grounding_reward(cfg: RewardConfig) -> RewardFn:
    """Mean of: tokens grounded in the input, and ROUGE-L F with the reference rationale."""

    def grounding_reward(
        completions: Sequence[Any],
        label: Sequence[str] | None = None,
        source: Sequence[str] | None = None,
        reference: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        n = len(completions)
        sources = list(source) if source is not None else [""] * n
        references = list(reference) if reference is not None else [""] * n
        rewards = []
        for verdict, src, ref in zip(_right_verdicts(completions, label), sources, references, strict=True):
            if verdict is None:
                rewards.append(0.0)
                continue
            parts = [overlap_recall(verdict.rationale, src)]
            if ref:
                parts.append(rouge_l_f(verdict.rationale, ref))
            rewards.append(sum(parts) / len(parts))
        return rewards

    return grounding_reward


def make_brevity_reward(cfg: RewardConfig) -> RewardFn:
    """1 when the rationale is as long as the reference, falling linearly to 0 at the tolerance."""

    def brevity_reward(
        completions: Sequence[Any],
        label: Sequence[str] | None = None,
        reference: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[float]:
        references = list(reference) if reference is not None else [""] * len(completions)
        rewards = []
        for verdict, ref in zip(_right_verdicts(completions, label), references, strict=True):
            if verdict is None or not ref:
                rewards.append(0.0)
                continue
            want, got = len(tokens(ref)), len(tokens(verdict.rationale))
            gap = abs(got - want) / max(want, 1)
            rewards.append(max(0.0, 1.0 - gap / cfg.brevity_tolerance))
        return rewards

    return brevity_reward


class PerplexityScorer:
    """Perplexity of a text under a small reference LM, cached by text (rollouts repeat a lot)."""

    def __init__(self, model_path: str, max_cache: int = 8192) -> None:
        self.model_path = model_path
        self._model = None
        self._tokenizer = None
        self._score = lru_cache(maxsize=max_cache)(self._perplexity)

    def __call__(self, text: str) -> float:
        return self._score(text)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rationanomaly.model.loading import resolve_device

        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        self._model = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=torch.float32)
        self._model.to(resolve_device("auto")).eval()

    def _perplexity(self, text: str) -> float:
        import torch

        if self._model is None:
            self._load()
        ids = self._tokenizer(text, return_tensors="pt").input_ids[:, :256].to(self._model.device)
        if ids.shape[1] < 2:
            return float("inf")
        with torch.inference_mode():
            loss = self._model(input_ids=ids, labels=ids).loss
        return float(torch.exp(loss))


def make_coherence_reward(cfg: RewardConfig, scorer: Callable[[str], float] | None = None) -> RewardFn:
    """Perplexity under the reference LM, mapped log-linearly to [0, 1] (lower is better)."""
    if scorer is None:
        from rationanomaly.training.models import resolve_base_model

        scorer = PerplexityScorer(resolve_base_model(cfg.coherence_model))
    low, high = math.log(cfg.coherence_ppl_floor), math.log(cfg.coherence_ppl_ceiling)

    def coherence_reward(completions: Sequence[Any], label: Sequence[str] | None = None, **kwargs: Any) -> list[float]:
        rewards = []
        for verdict in _right_verdicts(completions, label):
            if verdict is None:
                rewards.append(0.0)
                continue
            ppl = scorer(verdict.rationale)
            if not math.isfinite(ppl):
                rewards.append(0.0)
                continue
            rewards.append(min(1.0, max(0.0, (high - math.log(max(ppl, 1e-6))) / (high - low))))
        return rewards

    return coherence_reward


_DENIAL = re.compile(r"\bno (?:fault|error|trouble|failure) (?:keywords?|words?|terms?|indicators?)\b", re.IGNORECASE)


def denies_present_faults(rationale: str, source: str) -> bool:
    """The rationale claims no fault words while the input has some.

    >>> denies_present_faults("Routine, no fault keywords.", "fatal: usage: postqueue")
    True
    >>> denies_present_faults("Routine, no fault keywords.", "PCI: Using configuration type 1")
    False
    """
    return bool(_DENIAL.search(rationale)) and has_fault_terms(source)


def make_consistency_reward(cfg: RewardConfig) -> RewardFn:
    """The rationale's own conclusion must agree with its answer (undecided earns 0), and it must
    not deny trouble words the input contains."""

    def consistency_reward(
        completions: Sequence[Any], source: Sequence[str] | None = None, **kwargs: Any
    ) -> list[float]:
        sources = list(source) if source is not None else [None] * len(completions)
        rewards = []
        for completion, src in zip(completions, sources, strict=True):
            verdict = parse_completion(completion)
            if verdict is not None and src is not None and denies_present_faults(verdict.rationale, src):
                rewards.append(cfg.consistency_disagree)  # contradicts the input itself
                continue
            argued = stance(verdict.rationale) if verdict is not None else None
            if verdict is None or argued is None:
                rewards.append(0.0)
            else:
                rewards.append(cfg.consistency_agree if argued == verdict.label else cfg.consistency_disagree)
        return rewards

    return consistency_reward


def build_rewards(
    cfg: RewardConfig | None = None, scorer: Callable[[str], float] | None = None
) -> tuple[list[RewardFn], list[float]]:
    """Reward functions and their weights, for `GRPOTrainer(reward_funcs=…)` and
    `GRPOConfig(reward_weights=…)`."""
    cfg = cfg or RewardConfig()
    think = [make_grounding_reward(cfg), make_brevity_reward(cfg)]
    if cfg.use_coherence:
        think.append(make_coherence_reward(cfg, scorer))
    funcs = [make_format_reward(cfg), make_answer_reward(cfg), *think, make_consistency_reward(cfg)]
    weights = [cfg.weight_format, cfg.weight_answer]
    weights += [cfg.weight_think / len(think)] * len(think)
    weights.append(cfg.weight_consistency)
    return funcs, weights

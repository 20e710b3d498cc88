"""Teacher rationales from any OpenAI-compatible endpoint (the paper used GPT-4o).

The teacher is not told the gold label: it is asked for an expert step-by-step analysis (key
parameters → implications → conclusion) and its answer; only rationales whose conclusion
matches the gold label are kept, sampling up to `samples` times per example. Provenance:
"teacher:<model>". Examples the teacher never gets right keep no rationale (draft them later).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from rationanomaly.model.parser import VerdictParseError, parse_verdict
from rationanomaly.training.data import ExampleKind, LogExample
from rationanomaly.training.stance import stance

log = structlog.get_logger(__name__)

TEACHER_SYSTEM = (
    "You are an expert site reliability engineer. Analyse the log step by step: first identify "
    "the key parameters (component, event, error words, resources), then reason about what "
    "they imply for the system's health, then draw a conclusion. Keep the analysis under 50 "
    "words. Answer exactly as <think>analysis</think> <answer>normal|abnormal</answer>."
)


@dataclass(frozen=True)
class TeacherStats:
    kept: int
    rejected: int  # never matched gold within the sample budget


def teacher_conversation(example: LogExample) -> list[dict[str, str]]:
    from rationanomaly.model.prompt import INSTRUCTION, collapse_repeats

    if example.kind is ExampleKind.WINDOW:
        body = "\n".join(f"{n}. {t}" + (f" (×{c})" if c > 1 else "") for n, (t, c) in enumerate(collapse_repeats(example.templates), 1))
        user = f"{INSTRUCTION}\n{body}"
    else:
        user = f"{INSTRUCTION} {example.templates[0]}"
    return [{"role": "system", "content": TEACHER_SYSTEM}, {"role": "user", "content": user}]


def collect_teacher_rationales(
    examples: Sequence[LogExample], backend, samples: int = 3
) -> tuple[list[LogExample], TeacherStats]:
    """Ask `backend` (a model/ `Backend`) for rationales; keep those agreeing with gold."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    out = list(examples)
    pending = list(range(len(out)))
    for attempt in range(1, samples + 1):
        if not pending:
            break
        generations = backend.generate([teacher_conversation(out[i]) for i in pending])
        still = []
        for index, generation in zip(pending, generations, strict=True):
            verdict = None
            if generation.text is not None:
                try:
                    verdict = parse_verdict(generation.text)
                except VerdictParseError:
                    verdict = None
            # The answer must match gold, and so must the rationale's own conclusion.
            if verdict is not None and verdict.label == out[index].label and stance(verdict.rationale) in (None, verdict.label):
                out[index] = out[index].with_rationale(verdict.rationale, f"teacher:{backend.model_id}")
            else:
                still.append(index)
        log.info("teacher.attempt", attempt=attempt, kept=len(pending) - len(still), pending=len(still))
        pending = still
    return out, TeacherStats(kept=len(out) - len(pending), rejected=len(pending))


def teacher_backend(base_url: str, model: str = "default", temperature: float = 0.7, concurrency: int = 8):
    """model/'s OpenAI-compatible backend, unconstrained (the teacher writes free analysis)."""
    from rationanomaly.model.backends import make_backend
    from rationanomaly.model.settings import BackendSettings

    settings = BackendSettings(
        kind="openai", base_url=base_url, model=model, adapter=None, temperature=temperature,
        concurrency=concurrency, max_new_tokens=200, structured_outputs=False,
    )
    return make_backend(settings)

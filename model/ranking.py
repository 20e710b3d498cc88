"""Rank decision: publish the answer whose grounded rationale the model finds more likely.

Greedy decoding commits to a verdict one token at a time — after the quoted key words, the
first word of the next sentence ("This points to …" or "A routine …") settles it — on a
probability never weighed against the alternative's whole argument. Rank classification scores
both complete answers instead: the draft rationale arguing abnormal with
`<answer>abnormal</answer>`, and the draft arguing normal with `<answer>normal</answer>`, each by
its teacher-forced log-likelihood after the same prompt; the verdict is abnormal when

    margin = log p(abnormal answer) − log p(normal answer) > threshold.

The threshold corrects the model's prior (training over-sampled anomalies, and the two drafts
differ in length); `training.calibrate` picks it on train splits and saves it beside the adapter
in `decision.json`, which `decision="auto"` reads. The published rationale is the draft the model
chose: grounded in the input by construction (`model.drafts`) and consistent with its answer.
It costs two teacher-forced passes per input (the system prompt they share runs once,
`model.scoring`), no sampling, on a backend that exposes scores: in-process transformers, or
an OpenAI-compatible server that echoes prompt log-probs (`backends.echo`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson
import structlog

from rationanomaly.model.backends.base import BackendError, Conversation, Generation
from rationanomaly.model.drafts import DRAFTS_VERSION, draft_template, draft_window
from rationanomaly.model.parser import Label
from rationanomaly.model.prompt import completion_text, read_log

log = structlog.get_logger(__name__)

DECISION_FILE = "decision.json"
ORDER: tuple[Label, Label] = ("abnormal", "normal")

# (conversations, completions) -> summed completion log-probabilities, one per pair.
Scorer = Callable[[Sequence[Conversation], Sequence[str]], list[float]]


def candidates(log_input: str | tuple[str, ...]) -> dict[Label, str]:
    """The two answers to choose between: a grounded draft arguing each label, as targets.

    >>> sorted(candidates("disk <*> failed"))
    ['abnormal', 'normal']
    >>> candidates(("a", "b"))["normal"].endswith("<answer>normal</answer>")
    True
    """
    if isinstance(log_input, str):
        return {label: completion_text(draft_template(log_input, label), label) for label in ORDER}
    return {label: completion_text(draft_window(log_input, label), label) for label in ORDER}


def decide(margin: float, threshold: float) -> Label:
    """Abnormal when the margin clears the threshold.

    >>> decide(0.4, 0.0), decide(-0.4, 0.0), decide(-0.4, -0.5)
    ('abnormal', 'normal', 'abnormal')
    """
    return "abnormal" if margin > threshold else "normal"


def confidence(margin: float, threshold: float, label: Label) -> float:
    """The chosen answer's share of the two, after the threshold's shift: a logistic of the
    margin's distance from the threshold. It orders verdicts by how clearly the model preferred
    one argument; it is not a calibrated probability of being right.

    >>> round(confidence(2.0, 0.0, "abnormal"), 3), round(confidence(-2.0, -1.0, "normal"), 3)
    (0.881, 0.731)
    >>> confidence(0.0, 0.0, "normal")
    0.5
    """
    distance = margin - threshold if label == "abnormal" else threshold - margin
    return 1.0 / (1.0 + math.exp(-distance)) if distance > -700 else 0.0


def margins(score: Scorer, conversations: Sequence[Conversation],
            answers: Sequence[dict[Label, str]] | None = None) -> list[float]:
    """log p(abnormal answer) − log p(normal answer) for each conversation, in nats; `answers`
    are its `candidates` when the caller already has them.

    Raises ValueError for a conversation not rendered by `model.prompt`.
    """
    if answers is None:
        answers = [candidates(read_log(conversation)) for conversation in conversations]
    prompts: list[Conversation] = []
    completions: list[str] = []
    for conversation, pair in zip(conversations, answers, strict=True):
        prompts += [conversation, conversation]
        completions += [pair["abnormal"], pair["normal"]]
    scores = score(prompts, completions)
    return [scores[2 * k] - scores[2 * k + 1] for k in range(len(conversations))]


def load_threshold(adapter_dir: str | Path | None) -> float | None:
    """The calibrated threshold saved beside an adapter, or None when it has no rank decision."""
    if adapter_dir is None:
        return None
    path = Path(adapter_dir) / DECISION_FILE
    if not path.is_file():
        return None
    try:
        data = orjson.loads(path.read_bytes())
        threshold = float(data["threshold"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise BackendError(f"{path}: not a rank decision file ({error!r}); expected {{\"threshold\": <nats>}}") from error
    if not math.isfinite(threshold):
        raise BackendError(f"{path}: threshold must be a finite number, got {threshold!r}")
    return threshold


def save_threshold(adapter_dir: str | Path, threshold: float, **provenance: object) -> Path:
    """Write `decision.json` beside the adapter: the threshold and how it was chosen."""
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold!r}")
    path = Path(adapter_dir) / DECISION_FILE
    path.write_bytes(orjson.dumps({"decision": "rank", "threshold": threshold, **provenance}, option=orjson.OPT_INDENT_2))
    return path


def rank_model_id(scorer_id: str, threshold: float) -> str:
    """The rank decision's identity: the scoring model's, the decision, its threshold and the
    drafts it chooses between. Any of them changes a verdict, so each changes the id (and with
    it every verdict_id and the template cache's key).

    >>> rank_model_id("smollm2+adapter@7c0f1c06e4ac", -1.2113)
    'smollm2+adapter@7c0f1c06e4ac+rank(threshold=-1.2113,drafts=ra-drafts-1)'
    """
    # repr: the shortest text that reads back as the same float, so two thresholds never share it.
    return f"{scorer_id}+rank(threshold={float(threshold)!r},drafts={DRAFTS_VERSION})"


class RankingBackend:
    """`Backend` that answers by rank classification over a scoring backend's log-likelihoods."""

    def __init__(self, scorer: object, threshold: float, batch_size: int = 8) -> None:
        score = getattr(scorer, "score", None)
        if not callable(score):
            raise BackendError(f"{type(scorer).__name__} cannot score completions; the rank decision needs "
                               "kind='transformers', or kind='openai' against a server that echoes prompt log-probs")
        self._scorer = scorer
        self._score: Scorer = score
        self.threshold = threshold
        self._batch_size = batch_size
        self.model_id: str = rank_model_id(str(getattr(scorer, "model_id", "model")), threshold)

    def generate(self, conversations: Sequence[Conversation]) -> list[Generation]:
        results: list[Generation] = []
        for start in range(0, len(conversations), self._batch_size):
            results.extend(self._rank_batch(conversations[start : start + self._batch_size]))
        return results

    def close(self) -> None:
        close = getattr(self._scorer, "close", None)
        if callable(close):
            close()

    def _rank_batch(self, batch: Sequence[Conversation]) -> list[Generation]:
        started = time.perf_counter()
        readable: list[int] = []
        answers: dict[int, dict[Label, str]] = {}
        errors: dict[int, str] = {}
        for i, conversation in enumerate(batch):
            try:
                answers[i] = candidates(read_log(conversation))
                readable.append(i)
            except ValueError as error:
                errors[i] = f"rank decision: {error}"
        found: dict[int, float] = {}
        if readable:
            try:
                values = margins(self._score, [batch[i] for i in readable], [answers[i] for i in readable])
                found = dict(zip(readable, values, strict=True))
            except Exception as error:  # the Protocol forbids raising for a bad request
                log.exception("rank scoring failed", batch=len(readable))
                errors.update({i: f"scoring error: {error!r}" for i in readable})
        latency = time.perf_counter() - started
        out: list[Generation] = []
        for i in range(len(batch)):
            if i in found and math.isfinite(found[i]):
                label = decide(found[i], self.threshold)
                out.append(Generation(answers[i][label], latency, confidence=confidence(found[i], self.threshold, label)))
            else:
                # NaN: a server could not score one of the two answers (its log says why). An
                # input the drafts cannot read is this input's fault; anything else is the scorer's.
                out.append(Generation(None, latency, error=errors.get(i, f"no margin: {found.get(i)!r} (an answer went unscored)"),
                                      unavailable=i in readable))
        return out

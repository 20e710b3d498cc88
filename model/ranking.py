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
in `decision.json`, which `decision="auto"` reads (`model.decision`). The published rationale is
the draft the model chose: grounded in the input by construction (`model.drafts`) and consistent
with its answer, but written by a rule (`rationale_source: draft`).
It costs two teacher-forced passes per input (the system prompt they share runs once,
`model.scoring`), no sampling, on a backend that exposes scores: in-process transformers, or
an OpenAI-compatible server that echoes prompt log-probs (`backends.echo`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import orjson

from rationanomaly.model.backends.base import BackendError, Conversation
from rationanomaly.model.drafts import DRAFTS_VERSION, draft_template, draft_window
from rationanomaly.model.judgement import LogInput
from rationanomaly.model.parser import Label
from rationanomaly.model.prompt import completion_text, log_text, template_messages, window_messages

DECISION_FILE = "decision.json"
ORDER: tuple[Label, Label] = ("abnormal", "normal")

# (conversations, completions) -> summed completion log-probabilities, one per pair.
Scorer = Callable[[Sequence[Conversation], Sequence[str]], list[float]]


def messages_for(log: LogInput) -> Conversation:
    """The prompt for a log input: one template, or a window's templates.

    >>> messages_for("disk <*> failed") == template_messages("disk <*> failed")
    True
    >>> messages_for(("a", "b")) == window_messages(["a", "b"])
    True
    """
    return template_messages(log) if isinstance(log, str) else window_messages(list(log))


def drafts(log: LogInput) -> dict[Label, str]:
    """A grounded draft arguing each label, written from the input as the prompt shows it
    (inert and bounded: a draft quotes nothing the model was not shown).

    >>> drafts("ciod: Error reading message prefix on CioStream socket")["abnormal"]
    "Key: 'Error' from ciod. This points to a network fault affecting the socket. Conclusion: abnormal, a fault is indicated."
    >>> drafts(("a", "a", "b"))["normal"]
    'Key: 3 lines, 2 distinct events, no fault keywords. The events follow the usual lifecycle. Conclusion: normal, routine operation.'
    """
    if isinstance(log, str):
        shown = log_text(log)
        return {label: draft_template(shown, label) for label in ORDER}
    lines = tuple(log_text(t) for t in log)
    return {label: draft_window(lines, label) for label in ORDER}


def candidates(log: LogInput) -> dict[Label, str]:
    """The two answers to choose between: each label's draft with its answer, as the targets
    the model is trained to produce and is scored on.

    >>> sorted(candidates("disk <*> failed"))
    ['abnormal', 'normal']
    >>> candidates(("a", "b"))["normal"].endswith("<answer>normal</answer>")
    True
    """
    return {label: completion_text(text, label) for label, text in drafts(log).items()}


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


def margins(score: Scorer, inputs: Sequence[LogInput], answers: Sequence[dict[Label, str]] | None = None) -> list[float]:
    """log p(abnormal answer) − log p(normal answer) for each log input, in nats, after the
    prompt `messages_for` renders; `answers` are its `candidates` when the caller has them."""
    if answers is None:
        answers = [candidates(log) for log in inputs]
    prompts: list[Conversation] = []
    completions: list[str] = []
    for log, pair in zip(inputs, answers, strict=True):
        conversation = messages_for(log)
        prompts += [conversation, conversation]
        completions += [pair["abnormal"], pair["normal"]]
    scores = score(prompts, completions)
    return [scores[2 * k] - scores[2 * k + 1] for k in range(len(inputs))]


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

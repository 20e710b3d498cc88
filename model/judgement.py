"""What a decision yields for one log input, and the words that say how it was reached.

A leaf of `model/`: the deciders (`model.decision`), the generation parser (`model.classifier`)
and `stream` all read these names, and this module imports none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

# The input a decision works on: one template (template mode) or a window's templates in order
# (window mode). Never a rendered prompt: rendering is the generate decision's own business.
LogInput = str | tuple[str, ...]

JudgementLabel = Literal["normal", "abnormal", "unknown"]

# How the label was reached:
#   generate  the model decoded a rationale and an answer, parsed strictly (model.decision.GenerateDecider);
#   rank      the model scored a grounded draft per label and the margin met a calibrated
#             threshold (model.decision.RankDecider);
#   operator  a person's correction replaced the model's label (operator feedback).
DecisionKind = Literal["generate", "rank", "operator"]

# Who wrote the published rationale:
#   model     the model wrote it (generate; or rank's explanation, written with the label fixed
#             and checked against the input before it is published);
#   draft     a rule wrote it from the input's own words (model.drafts, or the steering rule);
#             the model only chose it, or its own text failed the check;
#   operator  a person's note with a correction.
RationaleSource = Literal["model", "draft", "operator"]

DECISION_KINDS: tuple[str, ...] = get_args(DecisionKind)
RATIONALE_SOURCES: tuple[str, ...] = get_args(RationaleSource)


@dataclass(frozen=True, slots=True)
class Judgement:
    label: JudgementLabel
    rationale: str | None
    reason: str | None  # why the label is "unknown"; None otherwise
    latency_s: float  # summed over attempts
    attempts: int
    raw: str | None  # the last text the model produced (or the answer it chose), for audit
    confidence: float | None = None  # the decision's confidence in `label`, when it gives one
    unavailable: bool = False  # "unknown" because the model was away, not because of this input
    decision: DecisionKind | None = None
    rationale_source: RationaleSource | None = None  # None when there is no rationale
    # Why a rationale is not the model's own when one was asked for (rank's explanation failed
    # its check, or the model was away for it); None otherwise.
    rationale_note: str | None = None

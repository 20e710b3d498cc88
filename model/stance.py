"""The stance a rationale takes: which label it argues for, read from its own words.

A pure function of text, in the model room because the rank decision's explanation is checked
with it before it is published (`model.explain`). Training reads it through `training.stance`
(its consistency reward, the evaluation's consistency rate, the teacher's filter).
"""

from __future__ import annotations

import re

from rationanomaly.model.parser import Label

_NEGATORS = re.compile(r"\b(?:no|not|without|none|never|nor|isn't|wasn't|aren't|doesn't|don't|free of|absence of|lack of)\b", re.IGNORECASE)
_ABNORMAL_CUE = re.compile(
    r"\b(?:abnormal|anomal\w*|faults?|faulty|failures?|failed|failing|errors?|critical|"
    r"problems?|issues?|malfunction\w*|broken|crash\w*|outage)\b",
    re.IGNORECASE,
)
_NORMAL_CUE = re.compile(
    r"\b(?:normal|routine|benign|informational|expected|healthy|harmless|ordinary|regular|"
    r"successful(?:ly)?|fine)\b",
    re.IGNORECASE,
)
_CONCLUSION = re.compile(
    r"\b(?:conclusion|verdict|therefore|thus|hence|so)\b\W{0,3}(?:\w+\W+){0,4}?(abnormal|anomalous|normal)\b",
    re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def stance(rationale: str) -> Label | None:
    """The label a rationale argues for, read from its last sentence(s); None when undecided.

    An explicit conclusion ("Conclusion: normal") wins; otherwise abnormal and normal cues are
    counted with negation flipping them ("no error" argues normal, "not normal" abnormal).

    >>> stance("Key: 'error'. Conclusion: abnormal, a fault is indicated.")
    'abnormal'
    >>> stance("The line mentions a counter. There is no error here.")
    'normal'
    >>> stance("This is not a routine message; the node failed.")
    'abnormal'
    >>> stance("Key: 'failed'. Conclusion: normal, routine and not a fault.")
    'normal'
    """
    sentences = [s for s in _SENTENCE_END.split(rationale.strip()) if s.strip()]
    if not sentences:
        return None
    for sentence in reversed(sentences[-2:]):
        explicit = _CONCLUSION.search(sentence)
        if explicit:
            word = explicit.group(1).lower()
            return "normal" if word == "normal" else "abnormal"
    for sentence in reversed(sentences[-2:]):
        score = _cue_score(sentence)
        if score:
            return "abnormal" if score > 0 else "normal"
    return None


def _cue_score(sentence: str) -> int:
    """+1 per abnormal cue, −1 per normal cue; a negator shortly before a cue flips its sign."""
    score = 0
    for pattern, sign in ((_ABNORMAL_CUE, 1), (_NORMAL_CUE, -1)):
        for match in pattern.finditer(sentence):
            window = sentence[max(0, match.start() - 24) : match.start()]
            score += -sign if _NEGATORS.search(window) else sign
    return score

"""Grounded draft rationales: written from the input itself and a label, no teacher needed.

The paper's rationales come from a teacher (GPT-4o) following "key parameters → implications →
conclusion". A draft follows the same three steps with only what the input shows: the trouble
phrases it contains (quoted verbatim), the emitting component, the resource involved and the
paper's fault class. A draft never asserts what the input does not show — it quotes only words
present in it, and it says "no fault keywords" only when none of the lexicon's trouble phrases
occurs — and it stays short (≤ ~50 tokens) so generation and scoring are cheap.

Training attaches drafts to examples as SFT targets (`training.drafts`); the rank decision
(`model.ranking`) writes one draft per label for an input and lets the model choose between them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from rationanomaly.model.lexicon import (
    FaultClass,
    component,
    fault_class,
    fault_terms,
    salient_words,
)
from rationanomaly.model.parser import Label

# Part of the rank decision's identity (its `model_id`, hence every verdict_id and the template
# cache key): bump whenever a draft's text can change, here or in `model.lexicon`. A test pins the
# drafts of a fixed set of templates to this version.
DRAFTS_VERSION: str = "ra-drafts-1"

# Phrases that explain why a line with trouble words is still routine; each needs its cue.
_BENIGN_REASONS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bcorrect(?:ed|able|ing)?\b", re.I), "the condition was corrected"),
    (re.compile(r"\bretry|retrying|retried\b", re.I), "the operation is retried"),
    (re.compile(r"\bsuppress", re.I), "further reports are suppressed"),
    (re.compile(r"\b(?:forced|default|fallback)\b", re.I), "a default setting is applied"),
    (re.compile(r"\b(?:login|authentication|password|user)\b", re.I), "a routine login event is reported"),
)

_RESOURCE = re.compile(
    r"\b(?:memory|cache|disk|sector|socket|connection|link|port|network|fan|power|node card|"
    r"filesystem|superblock|file|process|service|daemon|chip|clock|packet|server|host)\b",
    re.IGNORECASE,
)


def _quote(words: Iterable[str]) -> str:
    # '<' is dropped so a quoted fragment can never look like one of the output tags.
    return ", ".join(f"'{w.replace('<', '')}'" for w in words if w.replace("<", "").strip())


def _key_phrase(text: str) -> str:
    comp = component(text)
    terms = fault_terms(text, limit=2)
    words = terms or salient_words(text, limit=2)
    quoted = _quote(words) or "no readable words"
    return f"Key: {quoted}" + (f" from {comp}" if comp and comp.lower() not in quoted.lower() else "")


def _resource(text: str) -> str:
    match = _RESOURCE.search(text)
    return f" affecting the {match.group(0).lower()}" if match else ""


def draft_template(template: str, label: Label) -> str:
    """A short grounded rationale for one template and its gold label.

    >>> draft_template("ciod: Error reading message prefix on CioStream socket", "abnormal")
    "Key: 'Error' from ciod. This points to a network fault affecting the socket. Conclusion: abnormal, a fault is indicated."
    >>> draft_template("VFS: Mounted root (ext2 filesystem).", "normal")
    "Key: 'Mounted', 'filesystem' from VFS. A routine status message with no fault keywords. Conclusion: normal, routine operation."
    """
    key = _key_phrase(template)
    cls = fault_class(template)
    terms = fault_terms(template)
    if label == "abnormal":
        if terms:
            middle = f"This points to a {cls.value} fault{_resource(template)}."
        else:
            middle = f"This state is unexpected and points to a {cls.value} problem{_resource(template)}."
        return f"{key}. {middle} Conclusion: abnormal, a fault is indicated."
    if terms:
        reason = next((text for cue, text in _BENIGN_REASONS if cue.search(template)), None)
        middle = (
            f"Despite the wording, {reason}." if reason else "In this system it is a known, expected report."
        )
        return f"{key}. {middle} Conclusion: normal, routine and not a fault."
    kind = "status" if cls is FaultClass.SYSTEM else f"{cls.value} status"
    return f"{key}. A routine {kind} message with no fault keywords. Conclusion: normal, routine operation."


def draft_window(templates: tuple[str, ...], label: Label) -> str:
    """A short grounded rationale for a window's template sequence."""
    distinct = list(dict.fromkeys(templates))
    troubled = [t for t in distinct if fault_terms(t)]
    lines = f"{len(templates)} lines, {len(distinct)} distinct events"
    if label == "abnormal":
        if troubled:
            key = _quote(fault_terms(" ".join(troubled), limit=2))
            return f"Key: {lines}; {key} appear. The sequence shows a {fault_class(troubled[0]).value} fault. Conclusion: abnormal, a fault is indicated."
        return f"Key: {lines}, no fault keywords. The event sequence departs from the usual lifecycle. Conclusion: abnormal, a fault is indicated."
    if troubled:
        key = _quote(fault_terms(" ".join(troubled), limit=2))
        return f"Key: {lines}; {key} appear but are handled within the usual lifecycle. Conclusion: normal, routine and not a fault."
    return f"Key: {lines}, no fault keywords. The events follow the usual lifecycle. Conclusion: normal, routine operation."

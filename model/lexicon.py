"""Words that carry meaning in a log line, and the stance a sentence takes.

Shared by the draft writer (which must never contradict its input) and the consistency reward
(which reads the rationale's own conclusion), so both use one vocabulary.
"""

from __future__ import annotations

import re
from enum import Enum

from rationanomaly.model.parser import Label


class FaultClass(str, Enum):
    """The paper's fault categories (its expert corrections were counted in these four)."""

    HARDWARE = "hardware"
    NETWORK = "network"
    SOFTWARE = "software"
    SYSTEM = "system"


# Phrases that signal trouble in a log line. Multi-word phrases first so they win over parts.
FAULT_PATTERN = re.compile(
    # Roots match inside words too ("ScomError", "BGLERR_…" aside): camelCase and snake_case
    # identifiers carry most of the trouble in these logs.
    r"\b(?:not responding|not present|not fully functional|not functional|does not exist|"
    r"not found|could not|couldn't|can't|cannot|timed out|check condition|machine check|"
    r"kernel panic|divide-by-zero|"
    r"err|bad|lost|"
    r"\w*(?:errors?|fail(?:s|ed|ure|ures|ing)?|fatal|panic|exceptions?|faults?|timeout|"
    r"corrupt(?:ed|ion)?|abort(?:ed)?|denied|refused|invalid|illegal|warning)\w*|"
    r"unable|"
    r"disconnected|critical|abort(?:ed)?|mismatch|miscompare|unexpected|missing|deactivated|"
    r"overflow|underflow|killed|parity|broken|problems?|crash(?:ed)?|severe|wrong|lax|circular|"
    r"obsolete|disabled|deferred|throttling|assertion|orphan|unreachable|unavailable|"
    r"interrupt|segfault|segmentation|halt(?:ed)?|reject(?:ed)?)\b",
    re.IGNORECASE,
)

_CLASS_CUES: tuple[tuple[FaultClass, re.Pattern[str]], ...] = (
    (
        FaultClass.HARDWARE,
        re.compile(
            r"parity|ecc|edram|ddr|sram|dram|memory|\bram\b|fan|power|chip|\bcpu|disk|sector|scsi|"
            r"cciss|sense key|temperature|voltage|hardware|bios|node ?card|midplane|clock|pll|jtag|"
            r"vpd|dimm|cache|machine check|superblock|i/o error|serial|link card|service card",
            re.IGNORECASE,
        ),
    ),
    (
        FaultClass.NETWORK,
        re.compile(
            r"network|socket|connection|connect|packet|\blink\b|\bport\b|tcp|udp|\bnic\b|ethernet|"
            r"\brpc\b|nfs|ssh|timed out|timeout|refused|disconnect|not responding|relay|\bdns|lanai|"
            r"\bgm:|\barp\b|\btree\b|torus|host",
            re.IGNORECASE,
        ),
    ),
    (
        FaultClass.SOFTWARE,
        re.compile(
            r"exception|java|assert|program|segfault|segmentation|divide-by-zero|invalid operation|"
            r"core|signal|process|daemon|service|killed|respawn|application|ciod|\brts\b|microloader|"
            r"loader|library|version|config",
            re.IGNORECASE,
        ),
    ),
)

# Meaningful-content words: letters only, not placeholders or hex, not filler.
_TOKEN = re.compile(r"[A-Za-z0-9_\-]+")
_STOP = frozenset(
    "the and for with from that this was were are has have had not but into onto over under "
    "than then there their been being its via per all any some each out off too use used".split()
)


def fault_terms(text: str, limit: int = 3) -> list[str]:
    """Distinct trouble phrases in order of appearance, as written in the text.

    >>> fault_terms("ciod: Error reading message prefix on CioStream socket: Connection timed out")
    ['Error', 'timed out']
    """
    seen: dict[str, str] = {}
    for match in FAULT_PATTERN.finditer(text):
        seen.setdefault(match.group(0).lower(), match.group(0))
    return list(seen.values())[:limit]


def has_fault_terms(text: str) -> bool:
    return FAULT_PATTERN.search(text) is not None


def fault_class(text: str) -> FaultClass:
    """The paper's category the text most plausibly belongs to (first matching cue set wins).

    >>> fault_class("data TLB error interrupt on EDRAM bank").value
    'hardware'
    >>> fault_class("kernel: mounting root filesystem").value
    'system'
    """
    for cls, cue in _CLASS_CUES:
        if cue.search(text):
            return cls
    return FaultClass.SYSTEM


def component(text: str) -> str | None:
    """The emitting component when the line starts with one (`ciod:`, `EXT2-fs:`, `GM:`).

    >>> component("ciod: LOGIN chdir(<*>) failed")
    'ciod'
    """
    match = re.match(r"\s*([A-Za-z][\w.\-/]{1,24})(?:\[[^\]]*\])?:\s", text)
    return match.group(1) if match else None


def salient_words(text: str, limit: int = 2) -> list[str]:
    """The longest content words, in order of appearance (placeholders and hex skipped).

    >>> salient_words("fpr6=0x7465cb32 401eddf7 ae4ee1be bfaf15cf")
    ['fpr']
    """
    words: list[str] = []
    for token in _TOKEN.findall(text):
        if re.fullmatch(r"(?:0x)?[0-9a-fA-F]+", token) and re.search(r"\d", token):
            continue
        word = token.rstrip("0123456789").strip("-_")
        if len(word) < 3 or not word[0].isalpha() or word.lower() in _STOP or re.search(r"\d", word):
            continue
        if word.lower() not in (w.lower() for w in words):
            words.append(word)
    ranked = sorted(words, key=len, reverse=True)[:limit]
    return [w for w in words if w in ranked]


# --- stance of a rationale ------------------------------------------------------------------

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

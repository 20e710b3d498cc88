"""Words that carry meaning in a log line: trouble phrases, fault classes, components.

The draft writer (`model.drafts`) and severity (`stream.severity`) read a line with them; the
stance a rationale takes is training's business (`training.stance`).
"""

from __future__ import annotations

import re
from enum import Enum



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

"""Necessary conditions of a masking regex, so a line it cannot match skips it.

Masking runs every rule over every line, and most of a rule's cost on a line it does not change
is the regex engine trying each candidate start: the UUID rule at every hex digit, the host:port
rule at every letter. Many rules require a literal somewhere past their first character (a
UUID's "-", a port's ":", a hex number's "0x"), which the engine's own start-of-match scan cannot
use. Testing `"-" in line` is one fast substring search.

`requirements(pattern)` reads the pattern's parse tree and returns what any match must contain:
a tuple of `Need`s, each a few alternative strings of which one is in the line (a match lies in
the line, and so does whatever its lookarounds read), and for a single character, how many times
at least. It only ever claims what holds for every match, so skipping a rule whose need fails
changes nothing:

- the items of the pattern's top-level sequence are walked; a group without flags is walked in
  place, a repeat of at least one is walked for its body, a positive lookaround for its body;
- characters that sit next to each other in every match (single characters or small classes,
  with only zero-width assertions between them) make one need: their product, e.g. `0[xX]`
  gives ("0X", "0x");
- a character the match itself consumes n times (lookarounds aside, which may read the same
  text again) must be in the line n times: a UUID has four "-", a dotted IPv4 address three ".";
- alternation, optional parts, back-references, conditionals, negative lookarounds, wide or
  negated classes (`\\d`, `[^…]`, `.`) and case-insensitive parts give nothing;
- a pattern whose parse is not understood gives nothing: its rule always runs.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

try:  # the stdlib parser, the one re.compile uses (private: guarded, and nothing is lost without it)
    from re import _constants as _c
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover - Python < 3.11 names; the project needs 3.11
    _sre_parse = _c = None  # type: ignore[assignment]



class Need(NamedTuple):
    """One of `strings` is in every text the pattern matches in, `count` times or more."""

    strings: tuple[str, ...]
    count: int = 1


# A class of more characters is too common in text to be worth a substring test per character.
MAX_CLASS = 4
# A need tests at most this many alternative strings.
MAX_ALTERNATIVES = 4
# A rule tests at most this many needs: each is a pass over the line.
MAX_NEEDS = 3


def requirements(pattern: re.Pattern[str] | str) -> tuple[Need, ...]:
    """What every match of `pattern` needs in the text.

    >>> requirements(r"0(?<![A-Za-z0-9]0)[xX][0-9a-fA-F]+")
    (Need(strings=('0X', '0x'), count=1),)
    >>> requirements(r"[0-9]+(?:\\.[0-9]+)?")  # the fraction is optional
    ()
    >>> requirements(r"[a-z]+(?=:[0-9])")
    (Need(strings=(':',), count=1),)
    >>> requirements(r"[0-9]+(?:\\.[0-9]+){3}")
    (Need(strings=('.',), count=3),)
    """
    compiled = pattern if isinstance(pattern, re.Pattern) else re.compile(pattern)
    if _sre_parse is None or not isinstance(compiled.pattern, str) or compiled.flags & re.IGNORECASE:
        return ()
    try:
        tree = _sre_parse.parse(compiled.pattern, compiled.flags)
        runs: list[list[frozenset[str]]] = []
        consumed: Counter[str] = Counter()
        _walk(list(tree), runs, consumed)
    except Exception:  # an opcode this reading does not know: claim nothing
        return ()
    found: list[Need] = []
    for run in runs:
        strings = _best_span(run)
        if not strings:
            continue
        need = Need(strings, max(1, consumed[strings[0]]) if len(strings) == 1 and len(strings[0]) == 1 else 1)
        if need not in found:
            found.append(need)
    # Longer strings first (rarer in text), then fewer alternatives; then the pattern's order.
    found.sort(key=lambda n: (-len(n.strings[0]), len(n.strings)))
    return tuple(_drop_implied(found))[:MAX_NEEDS]


def passes(needs: tuple[Need, ...], text: str) -> bool:
    """Whether `text` meets every need (so the rule may match in it)."""
    return all(
        (any(s in text for s in strings) if count == 1 else text.count(strings[0]) >= count) for strings, count in needs
    )


def check(pattern: re.Pattern[str] | str) -> Callable[[str], bool] | None:
    """`passes` with `pattern`'s needs bound, shaped for a per-line call; None when the pattern
    has none (its rule always runs).

    >>> needs_port = check(r"[a-z]+(?=:[0-9])")
    >>> needs_port("host:80"), needs_port("no port here")
    (True, False)
    """
    found = requirements(pattern)
    if not found:
        return None
    # The common shapes as plain expressions: one call and one or two substring searches a line.
    if len(found) == 1:
        (strings, count), = found
        if count > 1:
            only = strings[0]  # a count is only kept for one string
            return lambda text: text.count(only) >= count
        if len(strings) == 1:
            only = strings[0]
            return lambda text: only in text
        if len(strings) == 2:
            a, b = strings
            return lambda text: a in text or b in text
    if len(found) == 2 and all(len(n.strings) == 1 and n.count == 1 for n in found):
        a, b = found[0].strings[0], found[1].strings[0]
        return lambda text: a in text and b in text
    return lambda text: passes(found, text)


def _walk(items: list, runs: list[list[frozenset[str]]], consumed: Counter[str] | None) -> None:
    """Appends to `runs` the runs of adjacent single characters of a sequence that every match
    of it contains, and counts in `consumed` the single characters it consumes (None: inside a
    lookaround, whose text the match may read twice); recurses into what every match also
    contains (groups, repeats, lookarounds)."""
    run: list[frozenset[str]] = []

    def close() -> None:
        nonlocal run
        if run:
            runs.append(run)
        run = []

    for op, av in items:
        chars = _chars(op, av)
        if chars is not None:
            run.append(chars)
            if consumed is not None and len(chars) == 1:
                consumed.update(chars)
        elif op is _c.AT or op is _c.ASSERT_NOT:
            pass  # zero width: the characters either side are still adjacent
        elif op is _c.ASSERT:
            _walk(list(av[1]), runs, None)  # zero width too; what it reads is in the text
        elif op is _c.SUBPATTERN:
            _group, add_flags, del_flags, body = av
            close()
            if not (add_flags or del_flags):  # scoped flags (e.g. (?i:...)) change what a literal matches
                _walk(list(body), runs, consumed)
        elif op is _c.ATOMIC_GROUP:
            close()
            _walk(list(av), runs, consumed)
        elif op in (_c.MAX_REPEAT, _c.MIN_REPEAT, _c.POSSESSIVE_REPEAT):
            low, high, body = av
            body = list(body)
            one = _chars(*body[0]) if len(body) == 1 else None
            if low == 0:
                close()
                continue
            if one is not None and low == high and low <= MAX_ALTERNATIVES:
                run.extend([one] * low)  # exactly `low` of them, in a row
            elif one is not None:
                run.append(one)  # the first repetition follows what came before
                close()
                run.append(one)  # the last one precedes what comes next
            if one is not None:
                if consumed is not None and len(one) == 1:
                    consumed.update({next(iter(one)): low})
                continue
            close()
            inner: Counter[str] | None = None if consumed is None else Counter()
            _walk(body, runs, inner)
            if consumed is not None and inner:
                consumed.update({char: n * low for char, n in inner.items()})  # each of `low` repetitions
        else:  # BRANCH, ANY, NOT_LITERAL, wide IN, GROUPREF, GROUPREF_EXISTS, ...: nothing certain
            close()
    close()


def _chars(op, av) -> frozenset[str] | None:
    """The characters a one-character item matches, if it is a literal or a small class."""
    if op is _c.LITERAL:
        return frozenset(chr(av))
    if op is not _c.IN:
        return None
    chars: set[str] = set()
    for kind, value in av:
        if kind is _c.LITERAL:
            chars.add(chr(value))
        elif kind is _c.RANGE and value[1] - value[0] < MAX_CLASS:
            chars.update(chr(c) for c in range(value[0], value[1] + 1))
        else:  # NEGATE, CATEGORY (\d, \w, ...), a wide range
            return None
        if len(chars) > MAX_CLASS:
            return None
    return frozenset(chars)


def _best_span(run: list[frozenset[str]]) -> tuple[str, ...]:
    """The longest stretch of the run with at most MAX_ALTERNATIVES strings, as those strings."""
    best: tuple[str, ...] = ()
    for start in range(len(run)):
        count = 1
        for end in range(start, len(run)):
            count *= len(run[end])
            if count > MAX_ALTERNATIVES:
                break
            length = end - start + 1
            if not best or length > len(best[0]) or (length == len(best[0]) and count < len(best)):
                best = tuple(sorted("".join(p) for p in itertools.product(*run[start : end + 1])))
    return best


def _drop_implied(found: list[Need]) -> list[Need]:
    """Needs that a kept one already implies go: ("-",) once when ("a-",) is kept."""
    kept: list[Need] = []
    for need in found:
        # implied: a single occurrence is asked, and every alternative of a kept need contains
        # one of this one's
        if not (
            need.count == 1
            and any(all(any(short in alt for short in need.strings) for alt in other.strings) for other in kept)
        ):
            kept.append(need)
    return kept

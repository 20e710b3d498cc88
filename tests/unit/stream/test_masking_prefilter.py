"""Masking prefilters (stream/prefilter.py): a rule is skipped only on a line it cannot match.

The prefilters are checked against the regex itself, never against a copy of the same reasoning:
on every line of every shared raw log, each rule whose test says "cannot match" must find no
match in the text it is given, and the masked text equals plain `re.sub` over all the rules.
"""

from __future__ import annotations

import doctest
import random
import re
from pathlib import Path

import pytest

from rationanomaly.stream import prefilter
from rationanomaly.stream.generic import ProfileSplitter
from rationanomaly.stream.parsing import ParsingSettings, TemplateParser, load_masking
from rationanomaly.stream.prefilter import Need, check, requirements
from rationanomaly.stream.settings import load_settings
from tests.unit.stream.raw_logs import profile_of, raw_logs


def test_a_skipped_rule_never_matches_and_masking_is_unchanged_on_every_shared_line(data_dir: Path) -> None:
    skipped = masked_lines = 0
    for path in raw_logs(data_dir):
        profile = profile_of(path)
        settings = load_settings(None, profile={"name": profile}, metrics={"port": None})
        parser = TemplateParser(settings.parsing)  # the profile's own rules first, then drain3.ini's
        splitter = ProfileSplitter(settings.profile)
        rules = [(mi.regex, f"<{mi.mask_with}>") for mi in parser._miner.masker.masking_instructions]  # noqa: SLF001
        checks = [check(regex) for regex, _ in rules]
        assert any(c is not None for c in checks)
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        texts = list(lines)
        for line in lines:  # and each line's content, the text masking gets in the stream
            fields = splitter.fields(line, None, None, None, 0)
            if fields.__class__ is not str:
                texts.append(fields[1])
        for text in texts:
            expected = current = text
            for (regex, mask), may_match in zip(rules, checks, strict=True):
                if may_match is not None and not may_match(current):
                    skipped += 1
                    assert regex.search(current) is None, (path.name, regex.pattern, current)
                current = regex.sub(mask, current)
            for regex, mask in rules:
                expected = regex.sub(mask, expected)
            assert current == expected
            assert parser._mask(text) == expected, (path.name, text)  # noqa: SLF001 - what parse() runs
            masked_lines += 1
    assert masked_lines > 60_000
    assert skipped > masked_lines  # the tests skip regexes for real: more than one per line on average


def test_the_shipped_rules_need_what_their_patterns_require() -> None:
    found = {name + str(i): requirements(pattern) for i, (pattern, name) in enumerate(load_masking().rules)}
    assert found == {
        "UUID0": (Need(("-",), 4),),  # 8-4-4-4-12: four dashes
        "IP1": (Need((".",)), Need((":",))),  # a dotted host name, then the port's ":" (a lookahead)
        "IP2": (Need((".",), 3),),
        "HEX3": (Need(("0X", "0x")),),
        # the hex id and number rules and the plain number rule start with their only mandatory
        # class; the regex engine already scans for it, so no test is derived
        "ID4": (),
        "NUM5": (),
        "NUM6": (),
    }


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (r"foo|bar", ()),  # alternation: no one literal is certain
        (r"[0-9]+(?:\.[0-9]+)?", ()),  # the fraction is optional
        (r"a*b", (Need(("b",)),)),
        (r"(?:ab|cd)e", (Need(("e",)),)),  # the branch gives nothing, what follows it does
        (r"(?:x|y)z", (Need(("xz", "yz")),)),  # the parser folds x|y into a class: both spellings
        (r"(?i)abc", ()),  # case-insensitive: "ABC" matches too
        (r"(?i:abc)def", (Need(("def",)),)),
        (r"(?<=:)\d+", (Need((":",)),)),  # what a lookbehind reads is in the text
        (r"(?<!-)\d+", ()),  # a negative lookaround promises nothing
        (r"x(?!y)z", (Need(("xz",)),)),  # zero width between: x and z are still adjacent
        (r"[^-]+-", (Need(("-",)),)),
        (r"a.b", (Need(("a",)), Need(("b",)))),
        (r"(?:-ab)+", (Need(("-ab",)),)),
        (r"(?:-ab)*", ()),
        (r"(\w+)-\1", (Need(("-",)),)),
        (r"k{3}", (Need(("kkk",)),)),
        (r"\d+(?:-\d+){2}", (Need(("-",), 2),)),  # two dashes consumed
        (r"-(?=-)", (Need(("-",)),)),  # the lookahead may read the same dash: counted once
        (r"(?:a|-)-", (Need(("--", "a-")),)),
        (r"", ()),
    ],
)
def test_derived_requirements(pattern: str, expected: tuple) -> None:
    assert requirements(pattern) == expected


def test_a_rule_without_requirements_always_runs_and_bytes_patterns_get_none() -> None:
    assert check(r"[0-9]+") is None
    assert requirements(re.compile(rb"-x")) == ()


def test_random_patterns_skip_only_texts_they_cannot_match() -> None:
    """Soundness beyond the shipped rules: random small patterns over a small alphabet, each
    tried on random texts; a text its test refuses must have no match."""
    rng = random.Random(19)
    atoms = ["a", "b", "-", ":", ".", "[ab]", "[a-c]", "[^a]", r"\d", ".", "(?:ab|b)", "(?:-a)", "(?:a:)", "(?=a)", "(?<=-)", "(?!b)", r"\b"]
    quantifiers = ["", "", "", "?", "*", "+", "{2}", "{1,3}"]
    alphabet = "ab-:.1c "  # few characters, so texts often hold a pattern's literals, some of them twice
    refused = by_count = 0
    for _ in range(400):
        parts = []
        for _ in range(rng.randint(1, 6)):
            atom = rng.choice(atoms)
            if atom.startswith("(?=") or atom.startswith("(?<") or atom.startswith("(?!") or atom == r"\b":
                parts.append(atom)
            else:
                parts.append(atom + rng.choice(quantifiers))
        if rng.random() < 0.2:
            parts = ["(?:" + "".join(parts[: len(parts) // 2]) + ")" + rng.choice(quantifiers)] + parts[len(parts) // 2 :]
        pattern = "".join(parts)
        regex = re.compile(pattern)
        may_match = check(regex)
        if may_match is None:
            continue
        needs = requirements(regex)
        for _ in range(60):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
            if not may_match(text):
                refused += 1
                assert regex.search(text) is None, (pattern, text)
                by_count += all(any(s in text for s in need.strings) for need in needs)  # only a count failed
    assert refused > 1000 and by_count > 50


def test_parser_with_prefilters_mines_the_templates_plain_drain3_mines(data_dir: Path) -> None:
    """The miner over HDFS_2k's contents, with the skips, against a stock TemplateMiner (Drain3's
    own masker: every rule on every line) with the same configuration."""
    from drain3 import TemplateMiner

    ours = TemplateParser(ParsingSettings())
    plain = TemplateMiner(persistence_handler=None, config=ours._miner.config)  # noqa: SLF001
    splitter = ProfileSplitter(load_settings(None, profile={"name": "hdfs"}).profile)
    lines = (data_dir / "raw" / "loghub_2k" / "HDFS_2k.log").read_text(encoding="utf-8").splitlines()
    for line in lines:
        content = splitter.fields(line, None, None, None, 0)[1]
        assert ours.parse(content).text == plain.add_log_message(content)["template_mined"]
    assert sorted(t.text for t in ours.templates()) == sorted(c.get_template() for c in plain.drain.clusters)


def test_doctests() -> None:
    assert doctest.testmod(prefilter).failed == 0

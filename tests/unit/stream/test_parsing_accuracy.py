"""Grouping accuracy on loghub samples, measured the way bench/parsing_accuracy.py measures it:
a regression guard for the masking rules, the Drain settings and the profiles' own tuning.

The floors sit just under the figures measured when they were set (Proxifier 1.000, OpenStack
0.971, OpenSSH 0.995; Drain3 out of the box 0.025, 0.309, 0.718), so a change that costs a
system a few dozen of its 2,000 lines fails here.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _bench():
    spec = importlib.util.spec_from_file_location("parsing_accuracy_bench", ROOT / "bench" / "parsing_accuracy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BENCH = _bench()


def test_grouping_accuracy_is_loghubs_metric() -> None:
    # a group counts only when it is exactly a true group: {0,1} is; {2,3} mixes b and c
    assert BENCH.grouping_accuracy(["a", "a", "b", "c"], [1, 1, 2, 2]) == 0.5
    assert BENCH.grouping_accuracy(["a", "a", "b"], [1, 2, 3]) == pytest.approx(1 / 3)


# Each exercises a different part of a profile's tuning: Proxifier its masking rules, OpenStack
# a rule and its similarity, OpenSSH its depth.
@pytest.mark.parametrize(("system", "floor"), [("Proxifier", 0.98), ("OpenStack", 0.95), ("OpenSSH", 0.98)])
def test_detector_grouping_accuracy_stays_above_its_floor(system: str, floor: float, data_dir: Path) -> None:
    lines, _, truth = BENCH.load(data_dir, system)
    profile, name = BENCH.profile_for(system, lines)
    assert name == system.lower()  # the built-in profile, as the detector would run it
    texts = BENCH.contents(profile, lines)
    ours = BENCH.grouping_accuracy(truth, BENCH.detector_clusters(texts, BENCH.detector_parsing(profile)))
    default = BENCH.grouping_accuracy(truth, BENCH.drain3_default_clusters(texts))
    assert ours >= floor, f"{system}: grouping accuracy {ours:.3f} under its floor {floor}"
    assert ours > default

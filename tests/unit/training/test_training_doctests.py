"""Run the doctests of the training room's pure functions (pytest is not run with --doctest-modules)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "rationanomaly.training.rewards",
    "rationanomaly.training.evaluate",
    "rationanomaly.training.hardness",
    "rationanomaly.training.callbacks",
    "rationanomaly.training.calibrate",
    "rationanomaly.training.margin",
    "rationanomaly.training.compare",
    "rationanomaly.training.stance",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0

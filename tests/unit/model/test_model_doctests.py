"""Run the doctests of the model room's pure functions (pytest is not run with --doctest-modules)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "rationanomaly.model.parser",
    "rationanomaly.model.prompt",
    "rationanomaly.model.lexicon",
    "rationanomaly.model.drafts",
    "rationanomaly.model.settings",
    "rationanomaly.model.classifier",
    "rationanomaly.model.loading",
    "rationanomaly.model.backends.openai",
    "rationanomaly.model.backends.echo",
    "rationanomaly.model.backends.transformers",
    "rationanomaly.model.ranking",
    "rationanomaly.model.llama_server",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0

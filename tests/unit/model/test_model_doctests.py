"""Run the doctests of the model room's pure functions (pytest is not run with --doctest-modules)."""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import rationanomaly.model

MODEL_DIR = Path(rationanomaly.model.__file__).resolve().parent


def modules_with_doctests() -> list[str]:
    """Every module of the model room whose source holds an example (`>>>`)."""
    found = []
    for path in sorted(MODEL_DIR.rglob("*.py")):
        if ">>> " in path.read_text(encoding="utf-8"):
            parts = path.relative_to(MODEL_DIR).with_suffix("").parts
            found.append(".".join(["rationanomaly.model", *(p for p in parts if p != "__init__")]))
    return found


MODULES = modules_with_doctests()


def test_the_runner_finds_the_modules_with_examples() -> None:
    assert {"rationanomaly.model.prompt", "rationanomaly.model.ranking", "rationanomaly.model.lexicon"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    # attempted > 0: a module whose examples doctest cannot see (in a string it does not
    # collect) fails here instead of passing with nothing run.
    assert result.failed == 0 and result.attempted > 0

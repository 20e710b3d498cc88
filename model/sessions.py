"""Session verdicts from rules learned on labelled sessions (HDFS blocks), with their reasons.

The artefact is a small JSON file that `training/cv.py` fits inside cross-validation folds:
- `implicated`: templates seen in abnormal training sessions and never in normal ones;
- `tree`: a shallow decision tree over per-template counts in the session ("'Receiving block
  <*>' seen 1 time, at most 2"), which catches a block's missing or repeated steps.
A session is abnormal when it holds an implicated template or the tree says so; the reasons name
the templates and counts that decided it, so the verdict's rationale can quote them.

Pure code: no clock, no I/O beyond reading the file it is handed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

Label = Literal["normal", "abnormal"]


class SessionRulesError(ValueError):
    """A session rules file that cannot be used."""


@dataclass(frozen=True, slots=True)
class SessionVerdict:
    label: Label
    reasons: tuple[str, ...]

    def rationale(self) -> str:
        if not self.reasons:
            return "Every step matches sessions reviewed as normal. Conclusion: normal."
        return "; ".join(self.reasons) + f". Conclusion: {self.label}."


@dataclass(frozen=True, slots=True)
class _Node:
    template: str | None  # None: a leaf
    at_most: float  # go left when count <= at_most
    left: int
    right: int
    abnormal: bool  # a leaf's class


class SessionRules:
    def __init__(self, implicated: Sequence[str], nodes: Sequence[_Node], source: dict[str, Any]) -> None:
        self.implicated = frozenset(implicated)
        self._nodes = list(nodes)
        self.source = source

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "session rules") -> SessionRules:
        try:
            implicated = [str(t) for t in data.get("implicated", [])]
            nodes = [
                _Node(n.get("template"), float(n.get("at_most", 0.0)), int(n.get("left", -1)),
                      int(n.get("right", -1)), bool(n.get("abnormal", False)))
                for n in data.get("tree", [])
            ]
        except (TypeError, ValueError, AttributeError) as error:
            raise SessionRulesError(f"{where}: malformed ({error!r})") from error
        for i, n in enumerate(nodes):
            if n.template is not None and not (i < n.left < len(nodes) and i < n.right < len(nodes)):
                raise SessionRulesError(f"{where}: tree node {i} points outside the tree or backwards")
        return cls(implicated, nodes, {k: v for k, v in data.items() if k not in ("implicated", "tree")})

    @classmethod
    def load(cls, path: Path | str) -> SessionRules:
        path = Path(path)
        try:
            data = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError) as error:
            raise SessionRulesError(f"{path}: cannot read session rules ({error!r})") from error
        if not isinstance(data, dict):
            raise SessionRulesError(f"{path}: expected a JSON object")
        return cls.from_dict(data, str(path))

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.source,
            "implicated": sorted(self.implicated),
            "tree": [{"template": n.template, "at_most": n.at_most, "left": n.left, "right": n.right,
                      "abnormal": n.abnormal} for n in self._nodes],
        }

    def judge(self, templates: Sequence[str]) -> SessionVerdict:
        counts = Counter(templates)
        reasons = [f"{t!r} occurs only in sessions reviewed as abnormal" for t in sorted(self.implicated & counts.keys())]
        if reasons:
            return SessionVerdict("abnormal", tuple(reasons))
        if not self._nodes:
            return SessionVerdict("normal", ())
        path: list[str] = []
        i = 0
        while self._nodes[i].template is not None:
            node = self._nodes[i]
            seen = counts.get(node.template, 0)  # type: ignore[arg-type]
            if seen <= node.at_most:
                path.append(f"{node.template!r} seen {seen} time{'s' if seen != 1 else ''} (at most {node.at_most:g})")
                i = node.left
            else:
                path.append(f"{node.template!r} seen {seen} time{'s' if seen != 1 else ''} (more than {node.at_most:g})")
                i = node.right
        if self._nodes[i].abnormal:
            return SessionVerdict("abnormal", tuple(path))
        return SessionVerdict("normal", ())

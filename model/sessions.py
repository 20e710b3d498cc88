"""Session verdicts from rules learned on labelled sessions (HDFS blocks), with their reasons.

The artefact is a small JSON file that `training/cv.py` fits inside cross-validation folds:
- `implicated`: templates seen in abnormal training sessions and never in normal ones;
- `tree`: a shallow decision tree over per-template counts in the session ("'Receiving block
  <*>' seen 1 time, at most 2"), which catches a block's missing or repeated steps.
A session is abnormal when it holds an implicated template or the tree says so; the reasons name
the templates and counts that decided it, so the verdict's rationale can quote them.

The stream's template miner masks differently from the sessions the rules were learned on
("Receiving block blk_<NUM> src: /<IP>:<NUM> dest: ..." against "Receiving block <*> src: /<*>
dest: ..."): `canonical` maps a mined template to the rule template whose text it fits, each
`<*>` standing for any non-empty text, so both count as the same step.

`SessionDecider` is the decision stage that uses them in window mode: the model judges each
session window as usual, the rules decide its label, and the rationale is the model's when
it agrees, else the grounded draft for the rules' label; either way the rules' reasons follow.

Pure code: no clock, no I/O beyond reading the file it is handed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


_SPACE = re.compile(r"\s+")
_CANONICAL_CACHE = 100_000  # mined templates remembered; a flood of one-offs must not grow it without end


def _pattern(template: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in _SPACE.sub(" ", template.strip()).split("<*>")]
    return re.compile(r"\S.*?".join(parts) if len(parts) > 1 else parts[0])


def _count(n: float) -> int:
    """A threshold between integer counts, as the count it allows at most (2.5 -> 2)."""
    return math.floor(n)


class SessionRules:
    def __init__(self, implicated: Sequence[str], nodes: Sequence[_Node], source: dict[str, Any]) -> None:
        self.implicated = frozenset(implicated)
        self._nodes = list(nodes)
        self.source = source
        known = sorted(self.implicated | {n.template for n in self._nodes if n.template is not None})
        # Most literal text first: the rule template a mined one fits most closely wins.
        known.sort(key=lambda t: (-len(t.replace("<*>", "")), t))
        self._patterns = [(t, _pattern(t)) for t in known]
        self._canonical: dict[str, str] = {}

    def digest(self) -> str:
        """A short digest of the rules, to name them in a decision's id."""
        body = orjson.dumps({"implicated": sorted(self.implicated), "tree": self.to_dict()["tree"]})
        return hashlib.sha256(body).hexdigest()[:12]

    def canonical(self, template: str) -> str:
        """The rule template `template` fits, else `template` itself.

        >>> rules = SessionRules.from_dict({"implicated": ["writeBlock <*> received exception <*>"]})
        >>> rules.canonical("writeBlock blk_<NUM> received exception java.io.IOException")
        'writeBlock <*> received exception <*>'
        >>> rules.canonical("Verification succeeded for blk_<NUM>")
        'Verification succeeded for blk_<NUM>'
        """
        found = self._canonical.get(template)
        if found is not None:
            return found
        text = _SPACE.sub(" ", template.strip())
        found = next((rule for rule, pattern in self._patterns if pattern.fullmatch(text)), template)
        if len(self._canonical) >= _CANONICAL_CACHE:
            self._canonical.clear()
        self._canonical[template] = found
        return found

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
        counts = Counter(self.canonical(t) for t in templates)
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
                path.append(f"{node.template!r} seen {seen} time{'s' if seen != 1 else ''} (at most {_count(node.at_most)})")
                i = node.left
            else:
                path.append(f"{node.template!r} seen {seen} time{'s' if seen != 1 else ''} (more than {_count(node.at_most)})")
                i = node.right
        if self._nodes[i].abnormal:
            return SessionVerdict("abnormal", tuple(path))
        return SessionVerdict("normal", ())


class SessionDecider:
    """Session windows decided by `SessionRules`, with the model's rationale where it agrees.

    The inner decider (the model) judges every input. A window's label is then the rules':
    when the model said the same, its judgement stands with the rules' reasons added; when it
    did not, the grounded draft for the rules' label is the rationale (`rationale_source:
    draft`, no confidence: the rules give none) and the reasons say what decided it. A single
    template, and a window the model could not judge (`unknown`: away or unparseable), pass
    through unchanged, so the stream's model-down policy still holds them.
    """

    def __init__(self, inner: object, rules: SessionRules) -> None:
        self.inner = inner
        self.rules = rules
        self.kind = inner.kind  # type: ignore[attr-defined]
        self.prompt_version = inner.prompt_version  # type: ignore[attr-defined]
        self.backend = getattr(inner, "backend", None)
        self.model_id = f"{inner.model_id}+sessions@{rules.digest()}"  # type: ignore[attr-defined]

    def decide(self, inputs: Sequence[Any]) -> list[Any]:
        judged = self.inner.decide(inputs)  # type: ignore[attr-defined]
        return [self._rule(x, j) for x, j in zip(inputs, judged, strict=True)]

    def _rule(self, log: Any, judgement: Any) -> Any:
        from rationanomaly.model.prompt import completion_text
        from rationanomaly.model.ranking import drafts

        if isinstance(log, str) or judgement.label not in ("normal", "abnormal"):
            return judgement
        verdict = self.rules.judge(list(log))
        because = f" Session rules: {'; '.join(verdict.reasons)}." if verdict.reasons else ""
        if verdict.label == judgement.label:
            return replace(judgement, rationale=f"{judgement.rationale or ''}{because}".strip())
        rationale = drafts(tuple(log))[verdict.label] + because
        return replace(judgement, label=verdict.label, rationale=rationale, raw=completion_text(rationale, verdict.label),
                       confidence=None, rationale_source="draft")

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]

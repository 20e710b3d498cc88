"""Draft rationales attached to training examples (provenance "draft").

The text itself comes from `model.drafts`, which the rank decision uses at inference too, so a
model is trained on exactly the rationales it is later asked to choose between.
"""

from __future__ import annotations

from collections.abc import Iterable

from rationanomaly.model.drafts import draft_template, draft_window
from rationanomaly.training.data import ExampleKind, LogExample

DRAFT_SOURCE = "draft"


def draft(example: LogExample) -> LogExample:
    """The example with a draft rationale attached (provenance "draft")."""
    if example.kind is ExampleKind.WINDOW:
        text = draft_window(example.templates, example.label)
    else:
        text = draft_template(example.templates[0], example.label)
    return example.with_rationale(text, DRAFT_SOURCE)


def draft_all(examples: Iterable[LogExample], keep_existing: bool = True) -> list[LogExample]:
    """Draft every example that has no rationale yet (or all of them with keep_existing=False)."""
    return [e if (keep_existing and e.rationale) else draft(e) for e in examples]

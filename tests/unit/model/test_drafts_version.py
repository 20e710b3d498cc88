"""DRAFTS_VERSION is part of every rank verdict's id: a change to the drafts' text must bump it.

The digest below is of the drafts written for every train and dev template (both labels, and the
windows' drafts for a fixed set of sequences). If this test fails after a change to
`model.drafts` or `model.lexicon`, the published rationales (and the rank decision's choices)
changed: bump DRAFTS_VERSION and record the new digest under it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import orjson
import pytest

from rationanomaly.model.drafts import DRAFTS_VERSION, draft_template, draft_window

REPO = Path(__file__).resolve().parents[3]
DIGESTS = {"ra-drafts-1": "501e80162502e197"}


def _templates() -> list[str]:
    root = Path(os.environ.get("RATIONANOMALY_DATA_DIR", REPO.parent / "shared" / "data")) / "templates"
    files = sorted(root.glob("*_train.jsonl")) + sorted(root.glob("*_dev.jsonl"))
    if not files:
        pytest.skip(f"no template splits under {root} (set RATIONANOMALY_DATA_DIR)")
    out: list[str] = []
    for path in files:
        out += [orjson.loads(line)["template"] for line in path.read_bytes().splitlines() if line.strip()]
    return out


def drafts_digest(templates: list[str]) -> str:
    digest = hashlib.sha256()
    for template in templates:
        for label in ("abnormal", "normal"):
            digest.update(draft_template(template, label).encode() + b"\0")
    for start in range(0, min(len(templates), 200), 10):
        window = tuple(templates[start : start + 10])
        for label in ("abnormal", "normal"):
            digest.update(draft_window(window, label).encode() + b"\0")
    return digest.hexdigest()[:16]


def test_drafts_text_is_pinned_to_its_version() -> None:
    assert DRAFTS_VERSION in DIGESTS, f"record the digest of {DRAFTS_VERSION} in DIGESTS"
    assert drafts_digest(_templates()) == DIGESTS[DRAFTS_VERSION], (
        f"the drafts changed under {DRAFTS_VERSION}: bump model.drafts.DRAFTS_VERSION (it is part of "
        "every rank verdict's id) and record the new digest here"
    )

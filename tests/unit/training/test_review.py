"""Expert calibration: CSV export and merge."""

from __future__ import annotations

import csv

import pytest

from rationanomaly.training.data import load_split
from rationanomaly.training.drafts import draft_all
from rationanomaly.training.review import COLUMNS, export_review, merge_review


def test_export_merge_roundtrip(tmp_path) -> None:
    examples = draft_all(load_split("bgl_dev")[:4])
    path = export_review(examples, tmp_path / "review.csv")
    with path.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 4
    flipped = "abnormal" if rows[0]["label"] == "normal" else "normal"
    rows[0]["expert_label"] = flipped
    rows[1]["expert_rationale"] = "Expert: a register dump, routine. Conclusion: normal."
    rows.append({**rows[2], "id": "nope/1"})
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    merged, stats = merge_review(examples, path)
    assert (stats.rows, stats.label_changes, stats.rationale_changes, stats.unknown_ids) == (5, 1, 1, 1)
    assert merged[0].label == flipped and merged[0].label_before_review == examples[0].label
    assert merged[0].rationale_source == "expert"
    assert merged[1].rationale.startswith("Expert:") and merged[1].rationale_source == "expert"
    assert merged[2] == examples[2]


def test_merge_rejects_bad_label(tmp_path) -> None:
    examples = draft_all(load_split("bgl_dev")[:1])
    path = tmp_path / "r.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerow({"id": examples[0].example_id, "expert_label": "maybe"})
    with pytest.raises(ValueError, match="expert_label"):
        merge_review(examples, path)

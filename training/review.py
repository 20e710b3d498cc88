"""Expert calibration: export rationales to a spreadsheet-friendly CSV and merge corrections.

Columns: id,input,label,rationale,source,expert_label,expert_rationale,comment. An expert
fills the last three; on merge, corrections win. A changed label is recorded as such:
provenance becomes "expert" and `label_before_review` keeps the label the expert saw.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rationanomaly.training.data import LogExample

COLUMNS = ("id", "input", "label", "rationale", "source", "expert_label", "expert_rationale", "comment")


@dataclass(frozen=True)
class MergeStats:
    rows: int
    label_changes: int
    rationale_changes: int
    unknown_ids: int


def export_review(examples: Sequence[LogExample], path: Path | str) -> Path:
    """Write the batch as CSV (UTF-8 with BOM so spreadsheet programs detect the encoding)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8-sig") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for e in examples:
            writer.writerow([e.example_id, e.source, e.label, e.rationale or "", e.rationale_source or "", "", "", ""])
    return path


def merge_review(examples: Sequence[LogExample], path: Path | str) -> tuple[list[LogExample], MergeStats]:
    """Apply an edited review CSV: expert label and rationale win where given."""
    by_id = {e.example_id: i for i, e in enumerate(examples)}
    merged = list(examples)
    rows = label_changes = rationale_changes = unknown = 0
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            rows += 1
            index = by_id.get((row.get("id") or "").strip())
            if index is None:
                unknown += 1
                continue
            e = merged[index]
            expert_label = (row.get("expert_label") or "").strip().lower()
            expert_rationale = (row.get("expert_rationale") or "").strip()
            if expert_label and expert_label not in ("normal", "abnormal"):
                raise ValueError(f"row {row['id']}: expert_label must be normal or abnormal, got {expert_label!r}")
            if expert_label and expert_label != e.label:
                e = replace(e, label_before_review=e.label, label=expert_label, rationale_source="expert")
                label_changes += 1
            if expert_rationale and expert_rationale != (e.rationale or ""):
                e = replace(e, rationale=expert_rationale, rationale_source="expert")
                rationale_changes += 1
            merged[index] = e
    return merged, MergeStats(rows, label_changes, rationale_changes, unknown)


def operator_examples(path: Path | str) -> list[LogExample]:
    """Operator corrections exported by `rationanomaly review export` as training examples: the
    template text with the operator's label and note (provenance dataset `operator`, the item id
    the template id). Rows without an input text or an expert label are skipped."""
    from rationanomaly.training.data import ExampleKind, Provenance

    examples: list[LogExample] = []
    with Path(path).open(newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            text = (row.get("input") or "").strip()
            label = (row.get("expert_label") or "").strip().lower()
            if not text or label not in ("normal", "abnormal"):
                continue
            note = (row.get("expert_rationale") or "").strip() or None
            examples.append(
                LogExample(
                    templates=(text,),
                    label=label,
                    provenance=Provenance("operator", "train", (row.get("id") or "").strip()),
                    kind=ExampleKind.TEMPLATE,
                    rationale=note,
                    rationale_source="expert" if note else None,
                )
            )
    return examples

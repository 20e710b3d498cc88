"""Labelled examples for training and evaluation, and their HF `datasets` form.

One record type serves both granularities of the paper: a single template (template mode) or a
window's template sequence (window mode). The HF columns are named exactly as the reward
functions' keyword arguments (`label`, `reference`, `source`), because TRL hands dataset columns
to reward functions by name.
"""

from __future__ import annotations

import csv
import hashlib
import os
import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path

import orjson

from rationanomaly.model.parser import Label

_REPO_ROOT = Path(__file__).resolve().parent.parent


class ExampleKind(str, Enum):
    TEMPLATE = "template"
    WINDOW = "window"


@dataclass(frozen=True, slots=True)
class Provenance:
    dataset: str
    split: str
    item_id: str


@dataclass(frozen=True, slots=True)
class LogExample:
    """One labelled input: a template, or a window's template sequence."""

    templates: tuple[str, ...]
    label: Label
    provenance: Provenance
    kind: ExampleKind = ExampleKind.TEMPLATE
    rationale: str | None = None
    rationale_source: str | None = None
    label_before_review: Label | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def source(self) -> str:
        """The input as plain text: what grounding rewards and drafts look at."""
        return "\n".join(self.templates)

    @property
    def example_id(self) -> str:
        p = self.provenance
        return f"{p.dataset}/{p.split}/{p.item_id}"

    def with_rationale(self, rationale: str, source: str) -> LogExample:
        return replace(self, rationale=rationale, rationale_source=source)


def data_dir() -> Path:
    """The shared data folder: `RATIONANOMALY_DATA_DIR`, else `<repo>/../shared/data`."""
    configured = os.environ.get("RATIONANOMALY_DATA_DIR")
    return Path(configured) if configured else _REPO_ROOT.parent / "shared" / "data"


def _label(value: str, where: str) -> Label:
    text = value.strip().lower()
    if text in ("normal", "abnormal"):
        return "abnormal" if text == "abnormal" else "normal"
    if text in ("anomaly", "anomalous"):
        return "abnormal"
    raise ValueError(f"{where}: label must be normal|abnormal, got {value!r}")


def _jsonl(path: Path) -> Iterator[tuple[int, dict]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle):
            if line.strip():
                yield number, orjson.loads(line)


def load_templates(path: Path | str) -> list[LogExample]:
    """Read a templates/*.jsonl file (`dataset`, `template`, `label`, `label_before_expert_review`)."""
    path = Path(path)
    split = path.stem.split("_", 1)[-1]
    examples = []
    for number, row in _jsonl(path):
        before = row.get("label_before_expert_review")
        examples.append(
            LogExample(
                templates=(row["template"],),
                label=_label(row["label"], f"{path}:{number + 1}"),
                provenance=Provenance(row.get("dataset", path.stem.split("_")[0]), split, str(number)),
                kind=ExampleKind.TEMPLATE,
                label_before_review=_label(before, f"{path}:{number + 1}") if before else None,
            )
        )
    return examples


def load_sessions(path: Path | str) -> list[LogExample]:
    """Read a sessions/*.jsonl file as window-mode examples (one per session)."""
    path = Path(path)
    split = path.stem.split("_", 1)[-1]
    return [
        LogExample(
            templates=tuple(row["templates"]),
            label=_label(row["label"], f"{path}:{number + 1}"),
            provenance=Provenance(row.get("dataset", "hdfs"), split, row.get("session_id", str(number))),
            kind=ExampleKind.WINDOW,
        )
        for number, row in _jsonl(path)
        if row["templates"]
    ]


def session_rule_templates(sessions: Iterable[LogExample]) -> list[LogExample]:
    """Template-level examples implied by labelled sessions under the paper's session rule.

    The rule says a session is abnormal if any of its templates is. So every template seen in a
    normal session is normal; a template seen only in abnormal sessions is labelled abnormal
    (the rule's likeliest reading, not a certainty: split `<split>-session-rule` says where the
    label came from). HDFS has no template labels of its own; without these a model judging
    HDFS templates has never seen one, and one normal template flagged abnormal ("Verification
    succeeded for <*>", in 18% of sessions) was enough to sink session-level precision.
    """
    seen_normal: dict[str, LogExample] = {}
    seen_abnormal: dict[str, LogExample] = {}
    for session in sessions:
        bucket = seen_normal if session.label == "normal" else seen_abnormal
        for template in session.templates:
            bucket.setdefault(template, session)
    derived = []
    for template in sorted(set(seen_normal) | set(seen_abnormal)):
        session = seen_normal.get(template) or seen_abnormal[template]
        p = session.provenance
        derived.append(
            LogExample(
                templates=(template,),
                label="normal" if template in seen_normal else "abnormal",
                provenance=Provenance(p.dataset, f"{p.split}-session-rule", hashlib.sha1(template.encode()).hexdigest()[:12]),
                kind=ExampleKind.TEMPLATE,
                extra={"from_session": p.item_id},
            )
        )
    return derived


def load_bgl_raw(structured_csv: Path | str) -> list[LogExample]:
    """Labelled BGL raw lines via loghub's structured CSV: `Label` '-' is normal, else an alert.

    One example per line (template from `EventTemplate`); deduplicate with `distinct_templates`.
    """
    path = Path(structured_csv)
    with path.open(newline="", encoding="utf-8") as handle:
        return [
            LogExample(
                templates=(row["EventTemplate"],),
                label="normal" if row["Label"].strip() == "-" else "abnormal",
                provenance=Provenance("bgl_raw", "all", row["LineId"]),
                kind=ExampleKind.TEMPLATE,
                extra={"content": row["Content"]},
            )
            for row in csv.DictReader(handle)
        ]


def distinct_templates(examples: Iterable[LogExample]) -> list[LogExample]:
    """One example per template text; a template seen abnormal anywhere is abnormal (paper's rule)."""
    first: dict[str, LogExample] = {}
    for example in examples:
        key = example.source
        seen = first.get(key)
        if seen is None:
            first[key] = example
        elif example.label == "abnormal" and seen.label == "normal":
            first[key] = replace(seen, label="abnormal")
    return list(first.values())


def load_any(path: Path | str) -> list[LogExample]:
    """Dispatch on the file's shape: templates jsonl, sessions jsonl, or a BGL structured CSV."""
    path = Path(path)
    if path.suffix == ".csv":
        return load_bgl_raw(path)
    with path.open("rb") as handle:
        first = orjson.loads(handle.readline())
    return load_sessions(path) if "templates" in first else load_templates(path)


def load_split(name: str, root: Path | None = None) -> list[LogExample]:
    """Load a named split of the shared data, e.g. `bgl_train`, `spirit_dev`, `hdfs_train`."""
    root = root or data_dir()
    if name.startswith("hdfs"):
        return load_sessions(root / "sessions" / f"{name}.jsonl")
    return load_templates(root / "templates" / f"{name}.jsonl")


def oversample_abnormal(examples: Sequence[LogExample], target_share: float, seed: int = 0) -> list[LogExample]:
    """Repeat abnormal examples until they make up about `target_share` of the set.

    The paper's SFT set is ~15% anomalous; F1 is on the rare class, so the rare class is shown
    more often (whole copies plus a seeded random remainder, deterministic for a seed).
    """
    if not 0.0 < target_share < 1.0:
        raise ValueError(f"target_share must be in (0, 1), got {target_share}")
    abnormal = [e for e in examples if e.label == "abnormal"]
    normal = [e for e in examples if e.label == "normal"]
    if not abnormal or len(abnormal) / len(examples) >= target_share:
        return list(examples)
    wanted = round(target_share * len(normal) / (1.0 - target_share))
    rng = random.Random(seed)
    copies, remainder = divmod(wanted, len(abnormal))
    extra = rng.sample(abnormal, remainder)
    mixed = list(normal) + abnormal * copies + extra
    rng.shuffle(mixed)
    return mixed


def stratified_holdout(examples: Sequence[LogExample], share: float,
                       seed: int = 0) -> tuple[list[LogExample], list[LogExample]]:
    """(kept for training, held out): `share` of each (dataset, label) group held out, at least
    one of any group with two or more, so every dataset keeps anomalies on both sides."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"holdout share must be in [0, 1), got {share}")
    groups: dict[tuple[str, str], list[LogExample]] = {}
    for example in examples:
        groups.setdefault((example.provenance.dataset, example.label), []).append(example)
    rng = random.Random(seed)
    train: list[LogExample] = []
    held: list[LogExample] = []
    for key in sorted(groups):
        group = list(groups[key])
        rng.shuffle(group)
        count = round(share * len(group))
        if share > 0 and len(group) >= 2:
            count = max(count, 1)
        held += group[:count]
        train += group[count:]
    return train, held


def log_input(example: LogExample) -> str | tuple[str, ...]:
    """What a decider judges for an example: its template, or its window's sequence."""
    if example.kind is ExampleKind.WINDOW:
        return tuple(example.templates)
    return example.templates[0]


def prompt_messages(example: LogExample) -> list[dict[str, str]]:
    """The chat prompt the model sees for an example: one template, or a window's sequence."""
    from rationanomaly.model.prompt import template_messages, window_messages

    if example.kind is ExampleKind.WINDOW:
        return window_messages(example.templates)
    return template_messages(example.templates[0])


def to_rows(examples: Iterable[LogExample]) -> list[dict]:
    """Plain rows for HF datasets / CSV. Column names match the reward kwargs."""
    rows = []
    for e in examples:
        prompt = prompt_messages(e)
        rows.append(
            {
                "id": e.example_id,
                "prompt": prompt,
                "label": e.label,
                "reference": e.rationale or "",
                "source": e.source,
                "kind": e.kind.value,
                "dataset": e.provenance.dataset,
            }
        )
    return rows


def to_sft_dataset(examples: Sequence[LogExample]):
    """Conversational prompt/completion dataset: TRL puts the loss on the completion only."""
    from datasets import Dataset

    from rationanomaly.model.prompt import completion_text

    rows = to_rows(examples)
    for row, e in zip(rows, examples, strict=True):
        if not e.rationale:
            raise ValueError(f"{e.example_id} has no rationale; run the draft writer or the teacher first")
        row["completion"] = [{"role": "assistant", "content": completion_text(e.rationale, e.label)}]
    return Dataset.from_list(rows)


def to_grpo_dataset(examples: Sequence[LogExample]):
    """Prompt-only dataset with the reward columns (`label`, `reference`, `source`)."""
    from datasets import Dataset

    return Dataset.from_list(to_rows(examples))


def write_jsonl(examples: Iterable[LogExample], path: Path | str) -> None:
    """Persist examples with their rationales and provenance (one JSON object a line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for e in examples:
            handle.write(orjson.dumps(example_to_dict(e)) + b"\n")


def example_to_dict(e: LogExample) -> dict:
    return {
        "id": e.example_id,
        "dataset": e.provenance.dataset,
        "split": e.provenance.split,
        "item_id": e.provenance.item_id,
        "kind": e.kind.value,
        "templates": list(e.templates),
        "label": e.label,
        "rationale": e.rationale,
        "rationale_source": e.rationale_source,
        "label_before_review": e.label_before_review,
    }


def read_jsonl(path: Path | str) -> list[LogExample]:
    """Inverse of `write_jsonl`."""
    examples = []
    for number, row in _jsonl(Path(path)):
        before = row.get("label_before_review")
        examples.append(
            LogExample(
                templates=tuple(row["templates"]),
                label=_label(row["label"], f"{path}:{number + 1}"),
                provenance=Provenance(row["dataset"], row["split"], row["item_id"]),
                kind=ExampleKind(row.get("kind", "template")),
                rationale=row.get("rationale"),
                rationale_source=row.get("rationale_source"),
                label_before_review=_label(before, f"{path}:{number + 1}") if before else None,
            )
        )
    return examples

"""Loading the real shared data: counts match data/README."""

from __future__ import annotations

import pytest

from rationanomaly.training.data import (
    ExampleKind,
    LogExample,
    Provenance,
    data_dir,
    distinct_templates,
    load_bgl_raw,
    load_split,
    oversample_abnormal,
    read_jsonl,
    session_rule_templates,
    to_grpo_dataset,
    to_sft_dataset,
    write_jsonl,
)
from rationanomaly.training.drafts import draft_all


@pytest.mark.parametrize(
    ("split", "total", "abnormal"),
    [
        ("bgl_train", 971, 61),
        ("bgl_dev", 265, 17),
        ("spirit_train", 714, 95),
        ("spirit_dev", 195, 26),
        ("hdfs_train", 4367, 172),
        ("hdfs_dev", 1191, 47),
    ],
)
def test_split_counts_match_readme(split: str, total: int, abnormal: int) -> None:
    examples = load_split(split)
    assert len(examples) == total
    assert sum(e.label == "abnormal" for e in examples) == abnormal


def test_template_records_carry_provenance() -> None:
    e = load_split("bgl_train")[0]
    assert e.kind is ExampleKind.TEMPLATE and e.provenance.dataset == "bgl" and e.provenance.split == "train"
    assert e.example_id == "bgl/train/0" and e.label_before_review in ("normal", "abnormal")
    assert any(x.label != x.label_before_review for x in load_split("bgl_train")), "expert corrections present"


def test_sessions_are_windows() -> None:
    e = load_split("hdfs_dev")[0]
    assert e.kind is ExampleKind.WINDOW and len(e.templates) > 1 and e.provenance.item_id.startswith("blk_")


def test_bgl_raw_labels() -> None:
    lines = load_bgl_raw(data_dir() / "raw" / "loghub_2k" / "BGL_2k.log_structured.csv")
    assert len(lines) == 2000
    assert sum(e.label == "abnormal" for e in lines) == 143
    templates = distinct_templates(lines)
    assert len(templates) < 2000 and any(t.label == "abnormal" for t in templates)


def test_oversample_reaches_share() -> None:
    examples = load_split("bgl_train")
    mixed = oversample_abnormal(examples, 0.35)
    share = sum(e.label == "abnormal" for e in mixed) / len(mixed)
    assert 0.34 < share < 0.36
    assert sum(e.label == "normal" for e in mixed) == 910
    with pytest.raises(ValueError):
        oversample_abnormal(examples, 1.5)


def test_hf_datasets_have_reward_columns(tmp_path) -> None:
    examples = draft_all(load_split("spirit_dev")[:5] + load_split("hdfs_dev")[:2])
    sft = to_sft_dataset(examples)
    assert {"prompt", "completion", "label", "reference", "source"} <= set(sft.column_names)
    assert sft[0]["completion"][0]["role"] == "assistant"
    grpo = to_grpo_dataset(examples)
    assert "completion" not in grpo.column_names and grpo[0]["prompt"][-1]["role"] == "user"
    path = tmp_path / "r.jsonl"
    write_jsonl(examples, path)
    assert read_jsonl(path) == examples


def _session(label: str, *templates: str) -> LogExample:
    return LogExample(templates=templates, label=label, provenance=Provenance("hdfs", "train", f"blk_{label}"),
                      kind=ExampleKind.WINDOW)


def test_session_rule_templates_follow_the_rule() -> None:
    derived = session_rule_templates([
        _session("normal", "A", "B", "A"),
        _session("abnormal", "A", "C"),
    ])
    labels = {e.templates[0]: e.label for e in derived}
    # A normal session makes all its templates normal, even when one also shows up in an abnormal one.
    assert labels == {"A": "normal", "B": "normal", "C": "abnormal"}
    assert all(e.kind is ExampleKind.TEMPLATE and e.provenance.split == "train-session-rule" for e in derived)
    assert len({e.example_id for e in derived}) == 3


def test_session_rule_on_real_hdfs_train() -> None:
    labels = {e.templates[0]: e.label for e in session_rule_templates(load_split("hdfs_train"))}
    assert labels["Verification succeeded for <*>"] == "normal"
    assert labels["writeBlock <*> received exception <*>"] == "abnormal"
    assert sum(label == "abnormal" for label in labels.values()) == 6 and len(labels) == 18

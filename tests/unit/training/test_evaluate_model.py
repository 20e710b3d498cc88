"""Evaluation on a small real file with the real model: report figures equal a hand count."""

from __future__ import annotations

import orjson
import pytest

from rationanomaly.training.data import data_dir
from rationanomaly.training.evaluate import EvalRequest, run_evaluation, write_report

pytestmark = pytest.mark.slow


def _small_file(tmp_path):
    source = data_dir() / "templates" / "spirit_dev.jsonl"
    lines = source.read_bytes().splitlines()
    # 12 templates with both classes present (abnormal ones are rare at the top of the file).
    abnormal = [l for l in lines if orjson.loads(l)["label"] == "abnormal"][:4]
    normal = [l for l in lines if orjson.loads(l)["label"] == "normal"][:8]
    data = tmp_path / "spirit_small.jsonl"
    data.write_bytes(b"\n".join(abnormal + normal) + b"\n")
    return data


def test_eval_metrics_match_hand_computation(tmp_path) -> None:
    data = _small_file(tmp_path)
    request = EvalRequest(data=(data,), model="default", adapter=None, baselines=("tfidf",), max_new_tokens=48)
    report = run_evaluation(request, items_path=tmp_path / "items.jsonl")
    written = write_report(report, tmp_path / "report.json")
    assert all(p.exists() for p in written)
    assert {"precision", "recall", "f1"} <= set(orjson.loads(written[0].read_bytes()))

    items = [orjson.loads(l) for l in (tmp_path / "items.jsonl").read_bytes().splitlines()]
    mine = [i for i in items if i["system"] == "model"]
    assert len(mine) == 12
    tp = sum(i["gold"] == "abnormal" and i["predicted"] == "abnormal" for i in mine)
    fp = sum(i["gold"] == "normal" and i["predicted"] == "abnormal" for i in mine)
    fn = sum(i["gold"] == "abnormal" and i["predicted"] != "abnormal" for i in mine)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    assert (report["precision"], report["recall"], report["f1"]) == pytest.approx((precision, recall, f1))
    valid = sum(i["predicted"] != "unknown" for i in mine) / 12
    section = next(s for s in report["sections"] if s["system"] == "model")
    assert section["format_valid_rate"] == pytest.approx(valid)
    assert next(s for s in report["sections"] if s["system"] == "tfidf")["n"] == 12


def test_rank_decision_report_carries_an_auc_of_its_scores(tmp_path) -> None:
    data = _small_file(tmp_path)
    request = EvalRequest(data=(data,), model="default", baselines=("tfidf",), decision="rank")
    report = run_evaluation(request, items_path=tmp_path / "items.jsonl")
    items = [orjson.loads(l) for l in (tmp_path / "items.jsonl").read_bytes().splitlines()]
    for system in ("model", "tfidf"):
        mine = [i for i in items if i["system"] == system]
        # Each item's score puts it on the side of 0.5 its verdict says.
        assert all((i["predicted"] == "abnormal") == (i["score"] > 0.5) for i in mine)
        pos = [i["score"] for i in mine if i["gold"] == "abnormal"]
        neg = [i["score"] for i in mine if i["gold"] == "normal"]
        by_hand = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))
        section = next(s for s in report["sections"] if s["system"] == system)
        assert section["auc"] == pytest.approx(by_hand)
    assert "| AUC |" in (write_report(report, tmp_path / "report.json")[1]).read_text()

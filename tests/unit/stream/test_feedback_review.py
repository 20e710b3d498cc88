"""Corrections to and from the expert-review CSV, and training reading them."""

from __future__ import annotations

import pytest

from rationanomaly.stream.feedback import (
    REVIEW_COLUMNS,
    Correction,
    correction_record,
    export_review_csv,
    read_review_csv,
)
from rationanomaly.training.review import COLUMNS, operator_examples


def test_the_csv_round_trips_and_training_reads_it(tmp_path):
    assert REVIEW_COLUMNS == COLUMNS
    table = dict(
        [
            correction_record("t1", Correction(template_id="t1", label="abnormal", note="disk loss follows", by="al"),
                              "Exception in receiveBlock for block <*>"),  # fmt: skip
            correction_record("t2", Correction(verdict_id="v9", label="normal", by="bo"), "Receiving block <*>"),
        ]
    )
    path = tmp_path / "review.csv"
    assert export_review_csv(table, path) == 2
    back = {c.template_id: c for c in read_review_csv(path, by="reviewer")}
    assert back["t1"].label == "abnormal" and back["t1"].note == "disk loss follows"
    assert back["t2"].label == "normal" and back["t2"].template == "Receiving block <*>"
    examples = {e.provenance.item_id: e for e in operator_examples(path)}
    assert examples["t1"].templates == ("Exception in receiveBlock for block <*>",)
    assert examples["t1"].label == "abnormal" and examples["t1"].rationale == "disk loss follows"
    assert examples["t2"].label == "normal"


def test_a_bad_row_stops_the_import(tmp_path):
    path = tmp_path / "review.csv"
    path.write_text(",".join(COLUMNS) + "\nt1,text,,,,abnormal,,\nt2,text,,,,maybe,,\n", encoding="utf-8")
    with pytest.raises(ValueError, match="row 3"):
        read_review_csv(path, by="al")


def test_review_import_of_a_missing_file_is_one_clear_error(tmp_path) -> None:
    from typer.testing import CliRunner

    from rationanomaly.cli.main import app

    missing = tmp_path / "nowhere.csv"
    result = CliRunner().invoke(app, ["review", "import", str(missing), "--by", "ops", "--bootstrap", "127.0.0.1:1"])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "No such file" in result.output

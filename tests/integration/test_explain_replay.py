"""Decide, then explain, end to end: BGL lines replayed through the real pipeline and the real
default model, with `backend.explain` off and on.

The explanation may change only who wrote an abnormal verdict's rationale, never a label: every
window gets the same verdict both ways. With it on, each abnormal template's rationale is either
the model's explanation (it passed its check) or the draft with a note saying why, and the
verdict ids are new, since the explanation is part of the decision's identity."""

from __future__ import annotations

import io
import os
from pathlib import Path

import orjson
import pytest

from rationanomaly.model.backends import make_backend
from rationanomaly.stream.replay import replay_files
from rationanomaly.stream.settings import load_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NORMAL_LINES = 24
ABNORMAL_KINDS = 4  # distinct abnormal events, the first line of each


def _bgl_sample(data_dir: Path, out: Path) -> Path:
    """Normal lines and one line of each of a few abnormal events, in file (time) order."""
    lines = (data_dir / "raw" / "loghub_2k" / "BGL_2k.log").read_text(encoding="utf-8").splitlines()
    picked, kinds, normal = [], set(), 0
    for line in lines:
        label, event = line.split(" ", 1)[0], " ".join(line.split()[9:12])
        if label == "-" and normal < NORMAL_LINES:
            normal += 1
            picked.append(line)
        elif label != "-" and event not in kinds and len(kinds) < ABNORMAL_KINDS:
            kinds.add(event)
            picked.append(line)
    assert len(kinds) == ABNORMAL_KINDS and normal == NORMAL_LINES
    out.write_text("\n".join(picked) + "\n", encoding="utf-8")
    return out


def _replay(path: Path, backend, explain: bool) -> list[dict]:
    settings = load_settings(
        None, profile={"name": "bgl"}, metrics={"port": None}, windows={"kind": "count", "count": 7},
        backend={"kind": "transformers", "device": "cpu", "max_new_tokens": 160, "explain": explain},
    )  # fmt: skip
    out = io.BytesIO()
    replay_files([path], settings, out, backend=backend, progress=False)
    return [orjson.loads(line) for line in out.getvalue().splitlines()]


def test_an_explanation_changes_who_wrote_the_rationale_never_the_verdict(tmp_path):
    data_dir = Path(os.environ.get("RATIONANOMALY_DATA_DIR", Path(__file__).resolve().parents[3] / "shared" / "data"))
    sample = _bgl_sample(data_dir, tmp_path / "bgl.log")
    settings = load_settings(None, backend={"kind": "transformers", "device": "cpu", "max_new_tokens": 160})
    backend = make_backend(settings.backend)
    try:
        plain = _replay(sample, backend, explain=False)
        explained = _replay(sample, backend, explain=True)
    finally:
        backend.close()

    def window(v: dict) -> tuple:
        return v["window"]["key"], v["window"]["start_ms"], v["window"]["end_ms"], v["window"]["lines"]

    assert {window(v): v["verdict"] for v in explained} == {window(v): v["verdict"] for v in plain}
    assert not {v["verdict_id"] for v in explained} & {v["verdict_id"] for v in plain}
    assert all("+ra-explain-1" in v["model"]["id"] for v in explained)

    abnormal = [t for v in explained for t in v["templates"] if t["verdict"] == "abnormal"]
    assert abnormal, "the sample's fault lines should give at least one abnormal template"
    assert {t["rationale_source"] for t in abnormal} <= {"model", "draft"}
    for v in explained:
        if v["verdict"] == "abnormal" and v["rationale_source"] == "draft":
            assert v["rationale_note"] and "explanation" in v["rationale_note"], v
    by_source = {s: sum(t["rationale_source"] == s for t in abnormal) for s in ("model", "draft")}
    print(f"\nexplain: {len(explained)} windows, abnormal templates by rationale source {by_source}")

"""`make run`'s demo, as a new user sees it: verdicts on stdout as they are published, and
nothing on stderr that is not the project's own (no progress bars, library deprecation notices
or raw librdkafka lines)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

VERDICT_LINE = re.compile(r"^  (normal|abnormal|unknown) +blk_-?\d+ +lines=\d+ +id=[0-9a-f]{12}$")


def test_demo_prints_one_line_per_verdict_and_nothing_else_on_stderr(kafka_bootstrap: str) -> None:
    blocks = 6
    rationanomaly = Path(sys.executable).with_name("rationanomaly")
    done = subprocess.run(
        [str(rationanomaly), "demo", "--bootstrap", kafka_bootstrap, "--blocks", str(blocks)],
        capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"},  # Python's filters, as in a shell
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stderr == "", f"stderr should be empty, got:\n{done.stderr[-4000:]}"
    lines = done.stdout.splitlines()
    verdicts = [line for line in lines if VERDICT_LINE.match(line)]
    assert len(verdicts) == blocks, done.stdout
    summary = next(i for i, line in enumerate(lines) if line.startswith(f"{blocks} verdicts in "))
    # Each verdict is printed as it arrives, before the summary that follows the detector's end.
    assert all(lines.index(v) < summary for v in verdicts)
    assert "\r" not in done.stdout


@pytest.mark.slow
def test_preparing_the_model_prints_its_own_lines_only(tmp_path) -> None:
    # The one-off conversion make run does on a new machine: no progress bars, no warnings.
    rationanomaly = Path(sys.executable).with_name("rationanomaly")
    done = subprocess.run([str(rationanomaly), "model", "prepare", "--cache-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(tmp_path / "smollm2-135m-instruct")
    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]  # JSON lines, nothing else
    assert events == ["preparing default model", "prepared default model"], done.stderr[-3000:]

"""Instance slots: distinct for live processes of one group on one host, taken back on exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from rationanomaly.stream.instance_slot import claim, transactional_id


def test_live_instances_get_distinct_slots_and_a_freed_one_is_taken_again(tmp_path):
    first, second = claim(tmp_path, "grp"), claim(tmp_path, "grp")
    assert (first.number, second.number) == (0, 1)
    assert claim(tmp_path, "other group").number == 0  # groups do not share slots
    first.release()
    third = claim(tmp_path, "grp")
    assert third.number == 0  # a restart takes its slot, so its transactional id, back
    assert transactional_id("grp", "logs", "h", third.number) != transactional_id("grp", "logs", "h", second.number)


def test_a_killed_process_frees_its_slot(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from rationanomaly.stream.instance_slot import claim; "
         f"s = claim(Path({str(tmp_path)!r}), 'grp'); print(s.number, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == b"0"
        assert claim(tmp_path, "grp").number == 1  # held by the other process
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
    deadline = time.monotonic() + 10
    while (number := claim(tmp_path, "grp").number) != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert number == 0

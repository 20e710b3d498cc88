"""The shared raw logs (16 loghub 2k samples and HDFS_20000) and the built-in profile each is read
with, for tests that go over every one of them."""

from __future__ import annotations

from pathlib import Path

from rationanomaly.stream.profiles import BUILTIN_PROFILES


def raw_logs(data_dir: Path) -> list[Path]:
    logs = sorted((data_dir / "raw" / "loghub_2k").glob("*_2k.log")) + [data_dir / "raw" / "HDFS_20000.log"]
    assert len(logs) == 17 and all(p.is_file() for p in logs)
    return logs


def profile_of(path: Path) -> str:
    name = path.name.split("_")[0].lower()
    return name if name in BUILTIN_PROFILES else "generic"

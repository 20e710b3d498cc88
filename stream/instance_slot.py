"""This instance's slot among the detector processes of one group on one host, for a
`transactional.id` that is distinct between them and stable across each one's restarts.

Exactly-once needs one transactional id per instance. The host name alone is stable (a
restarted instance aborts its own unfinished transaction at once instead of leaving
`read_committed` readers waiting for its timeout), but two processes on one host would then
fence each other in turn. So each process holds an exclusive lock on the lowest free
`<dir>/<group>-<n>.lock` for as long as it runs, and slot n names its id. The kernel drops the
lock when the process ends, however it ends (SIGKILL too), so a restart takes the slot back.

The slots live in the host's temporary directory, not in a process's own checkpoint directory:
they must be shared by exactly the processes that share a host name (a container has both its
own /tmp and its own host name).
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
from pathlib import Path
from typing import IO

MAX_SLOTS = 1024


def host_dir() -> Path:
    return Path(tempfile.gettempdir()) / "rationanomaly-instances"


class InstanceSlot:
    """A held slot: `number` is stable while the process lives; `release()` (or exit) frees it."""

    def __init__(self, number: int, handle: IO[bytes]) -> None:
        self.number = number
        self._handle = handle

    def release(self) -> None:
        self._handle.close()  # closing the last descriptor drops the flock


def claim(directory: Path, group: str) -> InstanceSlot:
    """The lowest slot no live process of `group` holds under `directory`.

    Raises OSError when the directory cannot be made or written, and when every slot is held.
    """
    if not directory.is_dir():
        directory.mkdir(parents=True, exist_ok=True)
        try:
            directory.chmod(0o1777)  # every user's detectors share the host's slots, like /tmp
        except OSError:
            pass  # made by another user a moment ago
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", group)
    for number in range(MAX_SLOTS):
        try:
            handle = open(directory / f"{stem}-{number}.lock", "ab")  # noqa: SIM115 (held open on purpose)
        except PermissionError:
            continue  # another user's slot: taken or not, not this process's to use
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode())
        handle.flush()
        return InstanceSlot(number, handle)
    raise OSError(f"all {MAX_SLOTS} instance slots of group {group!r} under {directory} are held")


def transactional_id(group: str, topic: str, host: str, slot: int | None) -> str:
    """`<group>-<topic>-<host>`, with `-<slot>` after it from the second slot on: the first
    keeps the id a lone instance has always had, so its restart still aborts what it left open.

    >>> transactional_id("g", "logs", "h1", 0), transactional_id("g", "logs", "h1", 2)
    ('g-logs-h1', 'g-logs-h1-2')
    """
    base = f"{group}-{topic}-{host}"
    return base if not slot else f"{base}-{slot}"

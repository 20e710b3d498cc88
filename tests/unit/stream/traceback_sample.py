"""A nova-compute-like log with Python tracebacks, generated: the multi-line tests' sample."""

from __future__ import annotations

import random

PROFILE = {
    "name": "nova",
    "custom": {
        "name": "nova",
        "log_format": "<Date> <Time> <Pid> <Level> <Component> <Content>",
        "timestamp_fields": ["Date", "Time"],
        "timestamp_format": "iso8601",
        "level_field": "Level",
        "component_field": "Component",
        "multiline": {"preset": "stack_traces"},
    },
}
WINDOWS = {"kind": "session", "key_pattern": r"instance: ([0-9a-f-]{36})", "gap_ms": 60_000}
FAILURES = (
    ("libvirt.libvirtError", "internal error: process exited while connecting to monitor"),
    ("KeyError", "'block_device_mapping'"),
)


def traceback_log(instances: int = 12, seed: int = 7) -> tuple[list[str], int, dict[str, str]]:
    """The lines, the number of events, and instance id -> exception class for the failed ones."""
    rng = random.Random(seed)
    lines: list[str] = []
    events = 0
    failed: dict[str, str] = {}
    second = 0

    def stamp() -> str:
        nonlocal second
        second += 1
        return f"2017-05-16 00:{second // 60:02d}:{second % 60:02d}.{rng.randrange(1000):03d}"

    for n in range(instances):
        uuid = f"{n:08x}-3ef0-4b7a-a3b0-{rng.randrange(16**12):012x}"
        lines.append(f"{stamp()} 2931 INFO nova.compute.claims [instance: {uuid}] Claim successful on node cp-{n % 3}")
        events += 1
        if n % 3 == 2:
            cls, message = FAILURES[n % 2]
            lines.append(f"{stamp()} 2931 ERROR nova.compute.manager [instance: {uuid}] Instance failed to spawn")
            lines.append("Traceback (most recent call last):")
            for depth in range(rng.randrange(2, 6)):
                lines.append(f'  File "/usr/lib/python2.7/dist-packages/nova/compute/m{depth}.py", line {rng.randrange(10, 3000)}, in f{depth}')
                lines.append(f"    result = step_{depth}(context, instance)")
            lines.append(f"{cls}: {message}")
            failed[uuid] = cls
        else:
            lines.append(f"{stamp()} 2931 INFO nova.compute.manager [instance: {uuid}] Took {rng.randrange(10, 90) / 10} seconds to spawn the instance on the hypervisor.")
        events += 1
    return lines, events, failed

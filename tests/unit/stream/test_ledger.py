from __future__ import annotations

import random

import pytest

from rationanomaly.stream.ledger import LedgerError, OffsetLedger
from rationanomaly.stream.records import OffsetRange


def test_nothing_seen_nothing_to_commit() -> None:
    ledger = OffsetLedger()
    assert ledger.committable(0) is None


def test_without_windows_commit_past_the_last_seen() -> None:
    ledger = OffsetLedger()
    for offset in (5, 6, 7):
        ledger.seen(0, offset)
    ledger.seen(0, 3)  # an older offset never moves it back
    assert ledger.committable(0) == 8


def test_a_held_window_pins_its_first_offset_until_released() -> None:
    ledger = OffsetLedger()
    for offset in range(10):
        ledger.seen(0, offset)
    ledger.hold("w1", (OffsetRange(0, 3, 9),))
    assert ledger.committable(0) == 3 and ledger.in_flight == 1
    ledger.release("w1")
    assert ledger.committable(0) == 10 and ledger.in_flight == 0


def test_a_line_in_several_windows_and_out_of_order_releases() -> None:
    ledger = OffsetLedger()
    for offset in range(20):
        ledger.seen(0, offset)
    # offset 4 is a line naming two blocks: both windows start there
    ledger.hold("blk_a", (OffsetRange(0, 4, 12),))
    ledger.hold("blk_b", (OffsetRange(0, 4, 15),))
    ledger.hold("blk_c", (OffsetRange(0, 7, 19),))
    ledger.release("blk_c")
    assert ledger.committable(0) == 4
    ledger.release("blk_a")
    assert ledger.committable(0) == 4  # blk_b still needs line 4
    ledger.release("blk_b")
    assert ledger.committable(0) == 20


def test_open_windows_are_passed_in() -> None:
    ledger = OffsetLedger()
    for offset in range(10):
        ledger.seen(0, offset)
    ledger.hold("w", (OffsetRange(0, 6, 8),))
    assert ledger.committable(0, open_min=2) == 2
    assert ledger.committable(0, open_min=9) == 6
    assert ledger.committable(0, open_min=None) == 6


def test_partitions_are_independent_and_a_window_may_span_two() -> None:
    ledger = OffsetLedger()
    ledger.seen(0, 100)
    ledger.seen(1, 50)
    ledger.hold("w", (OffsetRange(0, 90, 100), OffsetRange(1, 10, 40)))
    assert (ledger.committable(0), ledger.committable(1)) == (90, 10)
    ledger.release("w")
    assert (ledger.committable(0), ledger.committable(1)) == (101, 51)


def test_forget_a_revoked_partition() -> None:
    ledger = OffsetLedger()
    ledger.seen(0, 10)
    ledger.seen(1, 10)
    ledger.hold("span", (OffsetRange(0, 2, 10), OffsetRange(1, 3, 10)))
    ledger.forget(0)
    assert ledger.committable(0) is None and ledger.committable(1) == 3
    # the partition comes back; the old window's release must not touch the new holds
    ledger.seen(0, 5)
    ledger.hold("new", (OffsetRange(0, 2, 5),))
    ledger.release("span")
    assert ledger.committable(0) == 2 and ledger.committable(1) == 11


def test_bookkeeping_errors_are_loud() -> None:
    ledger = OffsetLedger()
    ledger.hold("w", (OffsetRange(0, 1, 1),))
    with pytest.raises(LedgerError, match="already held"):
        ledger.hold("w", (OffsetRange(0, 1, 1),))
    ledger.release("w")
    with pytest.raises(LedgerError, match="not held"):
        ledger.release("w")


def test_random_holds_and_releases_match_a_brute_force_minimum() -> None:
    rng = random.Random(7)
    ledger = OffsetLedger()
    held: dict[int, int] = {}
    last = -1
    for step in range(5000):
        last += 1
        ledger.seen(0, last)
        if rng.random() < 0.4:
            first = rng.randint(max(0, last - 50), last)
            ledger.hold(step, (OffsetRange(0, first, last),))
            held[step] = first
        if held and rng.random() < 0.4:
            victim = rng.choice(list(held))
            ledger.release(victim)
            del held[victim]
        assert ledger.committable(0) == min(held.values(), default=last + 1)

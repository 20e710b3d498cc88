from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from rationanomaly.stream.records import Label, OffsetRange, ParsedLog, SourceRef, Template, Window, WindowKind
from rationanomaly.stream.windows import Windower, WindowSettings, WindowStateError

S = 1000  # ms


def log(
    t_s: float,
    content: str,
    offset: int,
    *,
    host: str | None = None,
    component: str | None = None,
    gt: Label | None = None,
    partition: int = 0,
) -> ParsedLog:
    # One template per offset, so a window's sequence names exactly the lines it holds.
    template = Template(id=f"t{offset}", text=f"text of {offset}")
    return ParsedLog(
        source=SourceRef("logs", partition, offset),
        event_time_ms=round(t_s * S),
        content=content,
        template=template,
        host=host,
        component=component,
        ground_truth=gt,
    )


def session(**kw) -> Windower:
    kw.setdefault("grace_ms", 0)
    return Windower(WindowSettings(kind=WindowKind.SESSION, gap_ms=10 * S, **kw))


def lines_of(window: Window) -> list[int]:
    return [int(tid[1:]) for tid in window.sequence]


# -- session windows -------------------------------------------------------------------------
def test_session_closes_after_the_gap_at_the_watermark() -> None:
    w = session()
    assert w.add(log(0, "open blk_1", 0)) == []
    assert w.add(log(8, "open blk_2", 1)) == []
    assert w.add(log(5, "close blk_1", 2)) == []
    assert w.advance(14 * S) == []  # blk_1 ends at 5 s: closes at 15 s
    [b1] = w.advance(15 * S)
    assert (b1.key, b1.start_ms, b1.end_ms, b1.lines, lines_of(b1)) == ("blk_1", 0, 5 * S, 2, [0, 2])
    assert b1.offsets == (OffsetRange(0, 0, 2),) and b1.topic == "logs" and b1.kind is WindowKind.SESSION
    assert b1.templates == {"t0": "text of 0", "t2": "text of 2"}
    assert w.open_count == 1 and w.open_min_offsets() == {0: 1}
    assert w.advance(17 * S) == []
    [b2] = w.advance(18 * S)
    assert b2.key == "blk_2" and w.open_count == 0 and w.open_min_offsets() == {}


def test_grace_delays_closing() -> None:
    w = session(grace_ms=3 * S)
    w.add(log(0, "blk_1", 0))
    assert w.advance(12 * S) == []
    assert len(w.advance(13 * S)) == 1


def test_a_line_the_gap_or_more_after_the_session_opens_another() -> None:
    w = session(grace_ms=3 * S)
    w.add(log(0, "blk_1 a", 0))
    assert w.add(log(10, "blk_1 b", 1)) == []  # exactly gap_ms later: a new session
    assert w.open_count == 2
    [old] = w.advance(13 * S)  # the old one's end + gap + grace
    assert lines_of(old) == [0]
    [new] = w.flush()
    assert lines_of(new) == [1] and new.start_ms == 10 * S


def test_an_on_time_straggler_joins_the_session_it_belongs_to() -> None:
    w = session(grace_ms=3 * S)
    w.add(log(0, "blk_1 a", 0))
    w.add(log(12, "blk_1 b", 1))  # a second session
    assert w.add(log(1, "blk_1 c", 2)) == []  # 11 s before the second: the first one's
    assert w.advance(13 * S) == []  # the first now ends at 1 s: due at 14 s
    [old] = w.advance(14 * S)
    assert lines_of(old) == [0, 2]
    [new] = w.flush()
    assert lines_of(new) == [1]


def test_sessions_follow_event_time_not_arrival_order() -> None:
    """Lines behind the hop arrive interleaved across upstream partitions: the windows must be
    the ones in-order arrival makes."""
    times = [0, 4, 30, 33, 60, 12]  # 12 arrives last, within the gap of neither 4 nor 30... (8 s, 18 s)
    in_order = session(grace_ms=100 * S)
    for i in sorted(range(len(times)), key=lambda i: times[i]):
        in_order.add(log(times[i], "blk_7 x", i))
    shuffled = session(grace_ms=100 * S)
    for i in (4, 2, 5, 0, 3, 1):
        shuffled.add(log(times[i], "blk_7 x", i))
    spans = lambda ws: sorted((x.start_ms, x.end_ms, x.lines) for x in ws)  # noqa: E731
    assert spans(shuffled.flush()) == spans(in_order.flush()) == [(0, 12 * S, 3), (30 * S, 33 * S, 2), (60 * S, 60 * S, 1)]


def test_a_line_within_the_gap_of_two_sessions_merges_them() -> None:
    w = session(grace_ms=100 * S)
    w.add(log(0, "blk_2 a", 0))
    w.add(log(16, "blk_2 b", 1))  # 16 s after: a second session
    assert w.open_count == 2
    w.add(log(8, "blk_2 c", 2))  # 8 s from each: one session again
    assert w.open_count == 1 and w.stats.merged == 1
    [one] = w.flush()
    assert (one.start_ms, one.end_ms, one.lines) == (0, 16 * S, 3)
    assert sorted(lines_of(one)) == [0, 1, 2] and one.offsets[0].first == 0 and one.offsets[0].last == 2


def test_max_duration_splits_a_busy_session() -> None:
    w = session(max_duration_ms=5 * S)
    closed = []
    for i in range(12):
        closed += w.add(log(i, "blk_9 tick", i))
    assert [lines_of(c) for c in closed] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    [by_watermark] = w.advance(15 * S)  # opened at 10 s: duration limit reached at 15 s
    assert lines_of(by_watermark) == [10, 11]


def test_a_line_naming_several_ids_joins_each_window_once() -> None:
    w = session()
    w.add(log(0, "allocate blk_1", 0))
    w.add(log(1, "allocate blk_2", 1))
    w.add(log(2, "delete blk_1 blk_2 blk_1", 2))
    windows = {x.key: x for x in w.flush()}
    assert lines_of(windows["blk_1"]) == [0, 2] and lines_of(windows["blk_2"]) == [1, 2]
    assert windows["blk_1"].lines == 2 and w.stats.lines == 3


def test_unkeyed_lines_join_no_window_and_are_counted() -> None:
    w = session()
    assert w.add(log(0, "namenode started", 0)) == []
    assert w.stats.unkeyed == 1 and w.open_count == 0 and w.flush() == []


def test_key_pattern_group_is_the_key() -> None:
    w = Windower(WindowSettings(key_pattern=r"req-([0-9a-f]+)"))
    w.add(log(0, "GET req-ab12 ok", 0))
    [x] = w.flush()
    assert x.key == "ab12"


def test_out_of_order_lines_join_and_move_the_start_back() -> None:
    w = session()
    w.add(log(100, "blk_1", 0))
    w.advance(100 * S)
    w.add(log(95, "blk_1", 1))  # older than the watermark, but its session is open
    [x] = w.advance(110 * S)
    assert (x.start_ms, x.end_ms, lines_of(x)) == (95 * S, 100 * S, [0, 1])
    assert w.stats.late == 1


def test_a_late_line_opens_a_new_window_closed_at_the_next_advance() -> None:
    w = session(grace_ms=2 * S)
    w.add(log(0, "blk_1", 0))
    w.add(log(30, "blk_2", 1))
    [first] = w.advance(30 * S)
    assert first.key == "blk_1"
    assert w.add(log(5, "blk_1 straggler", 2)) == []  # its session is gone
    assert w.stats.late == 1
    [late] = w.advance(30 * S)
    assert (late.key, lines_of(late)) == ("blk_1", [2])
    assert w.open_count == 1  # blk_2 still open


def test_watermark_never_goes_back() -> None:
    w = session()
    w.add(log(0, "blk_1", 0))
    w.advance(5 * S)
    w.advance(-(2**62))  # the pipeline's initial value
    assert w.watermark_ms == 5 * S
    assert len(w.advance(10 * S)) == 1


def test_skip_keys_leave_the_line_out_of_those_windows() -> None:
    w = session()
    w.add(log(0, "blk_1 blk_2", 0), skip_keys={"blk_1"})
    [x] = w.flush()
    assert x.key == "blk_2" and w.stats.skipped == 1


def test_ground_truth_is_abnormal_if_any_line_is() -> None:
    w = session()
    w.add(log(0, "blk_1", 0, gt="normal"))
    w.add(log(1, "blk_1", 1, gt="abnormal"))
    w.add(log(2, "blk_1", 2, gt="normal"))
    w.add(log(0, "blk_2", 3, gt="normal"))
    w.add(log(0, "blk_3", 4))
    got = {x.key: x.ground_truth for x in w.flush()}
    assert got == {"blk_1": "abnormal", "blk_2": "normal", "blk_3": None}


def test_offsets_per_partition() -> None:
    w = session()
    w.add(log(0, "blk_1", 7, partition=1))
    w.add(log(1, "blk_1", 3, partition=1))
    w.add(log(2, "blk_1", 50, partition=0))
    assert w.open_min_offsets() == {0: 50, 1: 3}
    [x] = w.flush()
    assert x.offsets == (OffsetRange(0, 50, 50), OffsetRange(1, 3, 7))


# -- count windows ---------------------------------------------------------------------------
def test_count_windows_of_n_per_host() -> None:
    w = Windower(WindowSettings(kind=WindowKind.COUNT, key_by="host", count=3, max_duration_ms=None))
    closed = []
    for i in range(8):
        closed += w.add(log(i, "anything", i, host="a" if i % 2 == 0 else "b"))
    assert [(x.key, lines_of(x)) for x in closed] == [("a", [0, 2, 4]), ("b", [1, 3, 5])]
    assert w.advance(10**9) == []  # no duration limit: only the count or the end closes them
    assert [(x.key, lines_of(x)) for x in w.flush()] == [("a", [6]), ("b", [7])]


def test_count_window_default_is_100_and_key_none_is_constant() -> None:
    w = Windower(WindowSettings(kind=WindowKind.COUNT))
    closed = []
    for i in range(250):
        closed += w.add(log(i / 100, "x", i, host=f"h{i % 7}"))
    assert [x.lines for x in closed] == [100, 100] and {x.key for x in closed} == {"all"}
    assert [x.lines for x in w.flush()] == [50]


def test_count_window_missing_key_field() -> None:
    w = Windower(WindowSettings(kind=WindowKind.COUNT, key_by="component", count=2))
    w.add(log(0, "x", 0))
    w.add(log(0, "x", 1, component="kernel"))
    assert sorted(x.key for x in w.flush()) == ["-", "kernel"]


def test_count_window_duration_limit() -> None:
    w = Windower(WindowSettings(kind=WindowKind.COUNT, count=100, max_duration_ms=60 * S, grace_ms=0))
    w.add(log(0, "x", 0))
    w.add(log(30, "x", 1))
    assert w.advance(59 * S) == []
    [x] = w.advance(60 * S)
    assert x.lines == 2
    w.add(log(100, "x", 2))
    [y] = w.add(log(160, "x", 3))  # the line that would exceed the span starts the next window
    assert lines_of(y) == [2]


# -- time windows ----------------------------------------------------------------------------
def test_tumbling_windows_per_host() -> None:
    w = Windower(WindowSettings(kind=WindowKind.TIME, key_by="host", size_ms=60 * S, grace_ms=5 * S))
    w.add(log(1, "x", 0, host="a"))
    w.add(log(59, "x", 1, host="a"))
    w.add(log(30, "x", 2, host="b"))
    w.add(log(61, "x", 3, host="a"))
    assert w.advance(64 * S) == []
    first = w.advance(65 * S)  # bucket [0, 60 s) + 5 s grace
    assert [(x.key, lines_of(x), x.start_ms, x.end_ms) for x in first] == [
        ("a", [0, 1], 1 * S, 59 * S),
        ("b", [2], 30 * S, 30 * S),
    ]
    w.add(log(50, "x", 4, host="a"))  # its bucket closed: a late window of its own
    assert w.stats.late == 1
    [late] = w.advance(65 * S)
    assert (late.key, lines_of(late)) == ("a", [4])
    [second] = w.flush()
    assert lines_of(second) == [3]


def test_tumbling_buckets_for_negative_times() -> None:
    w = Windower(WindowSettings(kind=WindowKind.TIME, size_ms=10 * S))
    w.add(log(-1, "x", 0))
    w.add(log(0, "x", 1))
    assert sorted(lines_of(x) for x in w.flush()) == [[0], [1]]


# -- every line once, every window once ------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        WindowSettings(gap_ms=4 * S, max_duration_ms=20 * S, grace_ms=1 * S),
        WindowSettings(kind=WindowKind.COUNT, key_by="host", count=5, max_duration_ms=15 * S),
        WindowSettings(kind=WindowKind.TIME, key_by="host", size_ms=7 * S, grace_ms=2 * S),
    ],
    ids=["session", "count", "time"],
)
def test_random_streams_emit_each_window_once_and_window_every_keyed_line(settings: WindowSettings) -> None:
    rng = random.Random(20240611)
    w = Windower(settings)
    expected: Counter[tuple[str, int]] = Counter()
    windows: list[Window] = []
    clock = 0.0
    for offset in range(3000):
        clock += rng.expovariate(2.0)
        t = clock - rng.uniform(0, 6) if rng.random() < 0.1 else clock  # some out of order
        ids = rng.sample(range(40), rng.choice([0, 1, 1, 1, 2]))
        host = f"h{rng.randrange(4)}"
        content = " ".join(f"blk_{i}" for i in ids) or "no key here"
        windows += w.add(log(t, content, offset, host=host))
        if settings.kind is WindowKind.SESSION:
            expected.update((f"blk_{i}", offset) for i in ids)
        else:
            expected[(host, offset)] += 1
        if rng.random() < 0.05:
            windows += w.advance(round(clock * S))
    windows += w.flush()
    got = Counter((x.key, int(tid[1:])) for x in windows for tid in x.sequence)
    assert got == expected
    assert len({id(x) for x in windows}) == len(windows) == w.stats.closed == w.stats.opened - w.stats.merged
    assert all(x.lines == len(x.sequence) for x in windows)
    assert all(x.start_ms <= x.end_ms for x in windows)


# -- state -----------------------------------------------------------------------------------
def test_state_round_trips_through_json_and_continues_identically() -> None:
    settings = WindowSettings(gap_ms=10 * S, grace_ms=0)
    lines = [log(i, f"blk_{i % 3} blk_{(i + 1) % 5}", i, gt="abnormal" if i == 4 else None) for i in range(0, 40, 2)]
    a = Windower(settings)
    for x in lines[:10]:
        a.add(x)
    a.advance(16 * S)
    b = Windower(settings)
    b.restore(orjson.loads(orjson.dumps(a.state())))
    assert b.state() == a.state() and b.stats == a.stats
    for x in lines[10:]:
        assert b.add(x) == a.add(x)
    assert b.advance(50 * S) == a.advance(50 * S)
    assert b.flush() == a.flush()


def test_restore_refusals() -> None:
    w = Windower(WindowSettings())
    w.add(log(0, "blk_1", 0))
    state = w.state()
    with pytest.raises(WindowStateError, match="open windows"):
        w.restore(state)
    with pytest.raises(WindowStateError, match="state is for session windows"):
        Windower(WindowSettings(kind=WindowKind.COUNT)).restore(state)
    with pytest.raises(WindowStateError, match="not a windower state"):
        Windower(WindowSettings()).restore({"version": 2})


def test_settings_rules() -> None:
    with pytest.raises(ValueError, match="key_by applies to count and time windows"):
        WindowSettings(key_by="host")
    with pytest.raises(ValueError, match="use at most one"):
        WindowSettings(key_pattern=r"(a)(b)")
    with pytest.raises(ValueError, match="not a valid regex"):
        WindowSettings(key_pattern=r"(")
    with pytest.raises(ValueError):
        WindowSettings(count=0)
    with pytest.raises(ValueError):
        WindowSettings(window="x")

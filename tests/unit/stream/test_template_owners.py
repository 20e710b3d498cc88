"""One judge per template in a group (stream/template_owners.py and its use in stream/judging.py).

The judging side runs for real (WindowJudge, JudgeWorker, TemplateCache, TemplateOwners) with a
scripted decider; Kafka between two members is stood in for by `Bus`, which hands each member's
requests and answers to the other as KafkaState would (the real broker runs in
tests/integration/test_template_routing.py).
"""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from rationanomaly.model.judgement import Judgement
from rationanomaly.stream.detector_state import decode_judgement, decode_unknown, encode_judgement, encode_unknown
from rationanomaly.stream.judging import JudgeWorker, WindowJudge
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.settings import JudgeSettings
from rationanomaly.stream.template_owners import (
    MAX_REQUEST_BYTES,
    OwnersClosed,
    TemplateOwners,
    cache_key,
    owner_partition,
    parse_request,
)
from tests.unit.stream.test_judging import window

MODEL, PROMPT = "scripted", "test"


class CountingDecider:
    """Answers by keyword; counts each template text it is asked about, across threads."""

    model_id = MODEL
    prompt_version = PROMPT

    def __init__(self, away: bool = False, garbled: bool = False) -> None:
        self.asked: Counter[str] = Counter()
        self.away = away
        self.garbled = garbled
        self._lock = threading.Lock()

    def decide(self, inputs):
        out = []
        for text in inputs:
            with self._lock:
                self.asked[text] += 1
            if self.away:
                out.append(Judgement("unknown", None, "model unreachable", 0.0, 1, None, unavailable=True))
            elif self.garbled:
                out.append(Judgement("unknown", None, "unparseable: no <answer>", 0.01, 2, "???"))
            elif "failed" in text:
                out.append(Judgement("abnormal", "The write failed.", None, 0.01, 1, "raw", rationale_source="model"))
            else:
                out.append(Judgement("normal", None, None, 0.01, 1, "raw"))
        return out

    def close(self) -> None:
        pass


def ids_on(owners: TemplateOwners, partition: int, n: int, prefix: str) -> list[str]:
    """Template ids whose owner partition is `partition` (ids are content hashes in the detector;
    any string routes the same way)."""
    found = []
    i = 0
    while len(found) < n:
        tid = f"{prefix}{i}"
        if owners.partition_of(tid) == partition:
            found.append(tid)
        i += 1
    return found


class Member:
    """One detector's judging side: worker, judge, cache, owners."""

    def __init__(self, owned: set[int], partitions: int = 2, remote_wait_s: float = 30.0, decider=None,
                 on_model_down: str = "wait") -> None:  # fmt: skip
        self.decider = decider or CountingDecider()
        self.metrics = DetectorMetrics()
        self.settings = JudgeSettings(max_wait_ms=0, remote_wait_s=remote_wait_s, on_model_down=on_model_down)
        self.judge = WindowJudge(self.decider, self.settings, self.metrics)
        self.worker = JudgeWorker(self.judge, self.settings, self.metrics)
        self.owners = TemplateOwners(partitions, MODEL, PROMPT, remote_wait_s)
        self.shared: list[tuple[str, Judgement]] = []
        self.judge.cache.on_new = self.shared.append
        self.worker.route(self.owners)
        self.owners.set_owned(owned)

    def routing(self, event: str) -> float:
        return self.metrics.registry.get_sample_value("rationanomaly_template_routing_total", {"event": event}) or 0.0

    def results(self, n: int, timeout_s: float) -> list:
        done: list = []
        deadline = time.monotonic() + timeout_s
        while len(done) < n and time.monotonic() < deadline:
            self.worker.wait_idle(0.05)
            done.extend(self.worker.take_done())
        return done

    def close(self) -> None:
        self.worker.close()


class Bus(threading.Thread):
    """Kafka between members, as KafkaState moves it: requests to whichever member owns their
    partition (tombstones too), answers on the cache topic to every other member."""

    def __init__(self, *members: Member) -> None:
        super().__init__(daemon=True)
        self.members = members
        self.requests: list = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.01):
            for src in self.members:
                for request in src.owners.take_outbox():
                    self.requests.append(request)
                    for dst in self.members:
                        if request.partition in dst.owners.owned:
                            dst.owners.requested(request.partition, request.key, request.value)
                answers = list(src.shared)
                del src.shared[: len(answers)]
                unknowns = src.owners.take_unknowns()
                for dst in self.members:
                    if dst is src:
                        continue
                    for tid, judgement in answers:
                        dst.judge.cache.remember(tid, decode_judgement(encode_judgement(judgement)))
                    for tid, reason in unknowns:
                        value = encode_unknown(reason, int(time.time() * 1000) + 60_000)
                        dst.judge.cache.remember(tid, decode_unknown(value, int(time.time() * 1000)))
                    if answers or unknowns:
                        dst.owners.arrived()


@pytest.fixture
def pair():
    a, b = Member({0}), Member({1})
    bus = Bus(a, b)
    bus.start()
    yield a, b, bus
    bus.stop.set()
    a.close()
    b.close()


def test_owner_partition_is_stable_spreads_and_follows_the_decision_identity():
    keys = [cache_key(MODEL, PROMPT, f"t{i:04x}") for i in range(600)]
    spread = Counter(owner_partition(k, 6) for k in keys)
    assert set(spread) == set(range(6)) and min(spread.values()) > 60  # no partition starved
    # A fresh object (another process) computes the same owner: no per-process salt.
    assert [TemplateOwners(6, MODEL, PROMPT, 1).partition_of(f"t{i:04x}") for i in range(600)] == [
        owner_partition(k, 6) for k in keys
    ]
    # Another model's verdict for the same template is another key, so possibly another owner.
    other = [TemplateOwners(6, "other-model", PROMPT, 1).partition_of(f"t{i:04x}") for i in range(600)]
    assert other != [owner_partition(k, 6) for k in keys]


def test_a_lone_member_owns_everything_and_asks_nobody():
    lone = Member({0, 1})
    try:
        for i, text in enumerate(["block received", "write failed", "block received"]):
            lone.worker.submit(window(f"w{i}", {f"t{i % 2}": text}))
        done = lone.results(3, 5)
        assert sorted(j.label for j in done) == ["abnormal", "normal", "normal"]
        assert lone.owners.take_outbox() == [] and lone.routing("asked") == 0
        assert sum(lone.decider.asked.values()) == 2  # each template once
    finally:
        lone.close()


def test_a_template_owned_elsewhere_is_asked_once_and_judged_by_its_owner(pair):
    a, b, bus = pair
    (theirs,) = ids_on(a.owners, 1, 1, "x")
    (mine,) = ids_on(a.owners, 0, 1, "y")
    a.worker.submit(window("w1", {theirs: "write failed", mine: "block received"}))
    a.worker.submit(window("w2", {theirs: "write failed"}))
    done = a.results(2, 10)
    assert sorted(j.window.key for j in done) == ["w1", "w2"]
    assert all(j.label == "abnormal" for j in done)
    assert "The write failed." in done[0].rationale  # the owner's answer, with its rationale
    assert a.decider.asked == Counter({"block received": 1})  # its own template only
    assert b.decider.asked == Counter({"write failed": 1})  # the routed one, by its owner
    asked = [r for r in bus.requests if r.value is not None]
    assert len(asked) == 1 and asked[0].partition == 1
    assert parse_request(asked[0].key, asked[0].value) == (MODEL, PROMPT, theirs, "write failed")
    deadline = time.monotonic() + 2
    while not any(r.value is None for r in bus.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    (tombstone,) = [r for r in bus.requests if r.value is None]  # the owner closed the request
    assert tombstone.key == asked[0].key and tombstone.partition == 1


def test_two_members_waiting_on_each_other_both_finish_each_template_judged_once(pair):
    a, b, _ = pair
    for_b = ids_on(a.owners, 1, 3, "p")  # A's windows need templates B owns,
    for_a = ids_on(a.owners, 0, 3, "q")  # and B's windows templates A owns
    for i, tid in enumerate(for_b):
        a.worker.submit(window(f"a{i}", {tid: f"a-needs {i} failed"}))
    for i, tid in enumerate(for_a):
        b.worker.submit(window(f"b{i}", {tid: f"b-needs {i}"}))
    started = time.monotonic()
    done_a, done_b = a.results(3, 10), b.results(3, 10)
    # Well under remote_wait_s (30 s): each served the other's requests while it waited.
    assert time.monotonic() - started < 10
    assert [j.label for j in done_a] == ["abnormal"] * 3 and [j.label for j in done_b] == ["normal"] * 3
    calls = a.decider.asked + b.decider.asked
    assert set(calls.values()) == {1} and len(calls) == 6
    assert set(a.decider.asked) == {f"b-needs {i}" for i in range(3)}  # A judged only what it owns
    assert a.routing("timed_out") == b.routing("timed_out") == 0


def test_a_silent_owner_costs_one_wait_then_the_member_judges_it_itself():
    a = Member({0}, remote_wait_s=0.3)  # B never answers: no bus
    try:
        (theirs,) = ids_on(a.owners, 1, 1, "s")
        a.worker.submit(window("w", {theirs: "write failed"}))
        started = time.monotonic()
        (judged,) = a.results(1, 5)
        assert time.monotonic() - started >= 0.3
        assert judged.label == "abnormal" and a.decider.asked == Counter({"write failed": 1})
        assert a.metrics.registry.get_sample_value("rationanomaly_template_routing_total", {"event": "timed_out"}) == 1
        assert a.owners.waiting_for() == set()  # nothing left pending
    finally:
        a.close()


def test_a_member_given_the_owners_partition_while_waiting_judges_it_at_once():
    a = Member({0}, remote_wait_s=30)
    try:
        (theirs,) = ids_on(a.owners, 1, 1, "m")
        a.worker.submit(window("w", {theirs: "block received"}))
        deadline = time.monotonic() + 2
        while not a.owners.waiting_for() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert a.owners.waiting_for() == {theirs}
        a.owners.set_owned({0, 1})  # the owner died; its partition came here
        (judged,) = a.results(1, 3)
        assert judged.label == "normal" and a.decider.asked == Counter({"block received": 1})
    finally:
        a.close()


def test_the_next_owner_serves_requests_left_by_a_dead_one():
    b = Member({1})
    try:
        (tid,) = ids_on(b.owners, 0, 1, "d")
        key = cache_key(MODEL, PROMPT, tid)
        # Read from partition 0 before it is B's: not B's to serve (its owner then serves it).
        assert b.owners.requested(0, key, b'{"text": "write failed"}') is None
        b.owners.set_owned({0, 1})  # now it is: the partition is read from its beginning
        assert b.owners.requested(0, key, b'{"text": "write failed"}') == tid
        deadline = time.monotonic() + 3
        while not b.shared and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [(t, j.label) for t, j in b.shared] == [(tid, "abnormal")]  # to the cache topic
        assert [r.value for r in b.owners.take_outbox()] == [None]  # and the request tombstoned
        # A tombstone read (another owner served it first) cancels a request not yet served.
        b.owners.set_owned(set())
        b.owners.set_owned({0})
        assert b.owners.requested(0, cache_key(MODEL, PROMPT, "other"), b'{"text": "x"}') == "other"
        b.owners.requested(0, cache_key(MODEL, PROMPT, "other"), None)
        assert b.owners.to_serve() == {}
    finally:
        b.close()


def test_requests_of_another_model_or_a_moved_partition_are_not_served():
    owners = TemplateOwners(2, MODEL, PROMPT, 30)
    owners.set_owned({0, 1})
    assert owners.requested(0, cache_key("another-model", PROMPT, "t1"), b'{"text": "x"}') is None
    assert owners.requested(0, b"not json", b"{}") is None
    assert owners.requested(1, cache_key(MODEL, PROMPT, "t2"), b'{"text": "y"}') == "t2"
    owners.set_owned({0})  # partition 1 moved away: its next owner serves t2
    assert owners.to_serve() == {} and not owners.has_work()


def test_ask_once_overdue_by_the_clock_and_oversized_texts_stay_local():
    now = [100.0]
    owners = TemplateOwners(4, MODEL, PROMPT, remote_wait_s=120, clock=lambda: now[0])
    assert owners.ask("t1", "text") and owners.ask("t1", "text")
    (request,) = owners.take_outbox()  # asked once, however often it is met
    assert request.partition == owners.partition_of("t1")
    assert not owners.overdue("t1")
    now[0] += 119.9
    assert not owners.overdue("t1")
    now[0] += 0.2
    assert owners.overdue("t1")
    owners.settled("t1")
    assert not owners.overdue("t1") and owners.waiting_for() == set()
    assert not owners.ask("huge", "x" * MAX_REQUEST_BYTES)  # judged where it is met
    assert owners.take_outbox() == []


@pytest.mark.parametrize("policy", ["wait", "unknown"])
def test_a_request_served_with_the_model_away_is_retried_later_not_closed(policy):
    b = Member({0, 1}, decider=CountingDecider(away=True), on_model_down=policy)
    try:
        assert b.owners.requested(0, cache_key(MODEL, PROMPT, "t1"), b'{"text": "write failed"}') == "t1"
        deadline = time.monotonic() + 3
        while not b.decider.asked and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        assert b.decider.asked == Counter({"write failed": 1})  # tried, and not again at once
        assert b.owners.take_outbox() == [] and b.shared == []  # no tombstone, nothing shared
        if policy == "wait":
            # As for its own windows: the member holds (its input pauses) and retries with the
            # worker's backoff; the request stays open and due.
            assert b.worker.holding and b.owners.to_serve() == {"t1": "write failed"}
        else:
            # Nothing held; the request is served again in a few seconds, not in a tight loop.
            assert not b.worker.holding and b.owners.to_serve() == {} and b.owners.next_due_in() > 1
    finally:
        b.close()


def test_an_unreadable_answer_reaches_the_requester_as_unknown_without_the_long_wait():
    a, b = Member({0}), Member({1}, decider=CountingDecider(garbled=True))
    bus = Bus(a, b)
    bus.start()
    try:
        (theirs,) = ids_on(a.owners, 1, 1, "g")
        a.worker.submit(window("w", {theirs: "garbled line"}))
        (judged,) = a.results(1, 5)
        assert judged.label == "unknown" and "unparseable" in judged.reason
        assert sum(a.decider.asked.values()) == 0 and b.decider.asked == Counter({"garbled line": 1})
    finally:
        bus.stop.set()
        a.close()
        b.close()


def test_a_corrected_template_is_never_routed():
    a = Member({0})
    try:
        (theirs,) = ids_on(a.owners, 1, 1, "c")
        fix = Judgement("abnormal", "operator note", None, 0.0, 0, None, decision="operator", rationale_source="operator")
        a.judge.cache.correct(theirs, fix)
        a.worker.submit(window("w", {theirs: "block received"}))
        (judged,) = a.results(1, 3)
        assert judged.label == "abnormal" and judged.decision == "operator"
        assert a.owners.take_outbox() == [] and sum(a.decider.asked.values()) == 0
    finally:
        a.close()


def test_closing_stops_a_member_waiting_for_an_owner():
    a = Member({0}, remote_wait_s=60)
    (theirs,) = ids_on(a.owners, 1, 1, "z")
    a.worker.submit(window("w", {theirs: "x"}))
    deadline = time.monotonic() + 2
    while not a.owners.waiting_for() and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    a.close()
    assert time.monotonic() - started < 2
    with pytest.raises(OwnersClosed):
        a.owners.wait([theirs])

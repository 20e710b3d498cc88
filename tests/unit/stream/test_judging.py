"""Judging with a scripted decider: a fake is fine here, the real model runs in tests/integration."""

from __future__ import annotations

import time

from rationanomaly.model.judgement import Judgement
from rationanomaly.stream.judging import JudgeWorker, WindowJudge, combine
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.records import JudgeMode, OffsetRange, Window, WindowKind
from rationanomaly.stream.settings import JudgeSettings


class ScriptedClassifier:
    """A `Decider` answering by keyword in the log input; records every input it was asked."""

    kind = "generate"
    model_id = "scripted"
    prompt_version = "test"

    def __init__(self) -> None:
        self.asked: list[str | tuple[str, ...]] = []

    def decide(self, inputs):
        out = []
        for log in inputs:
            text = log if isinstance(log, str) else "\n".join(log)
            self.asked.append(log)
            if "garbled" in text:
                out.append(Judgement("unknown", None, "unparseable: no <answer>", 0.01, 3, "???", decision="generate"))
            elif "failed" in text:
                out.append(Judgement("abnormal", "The write failed, so data is at risk.", None, 0.02, 1, "raw",
                                     decision="generate", rationale_source="model"))
            else:
                out.append(Judgement("normal", "Routine progress message.", None, 0.01, 1, "raw",
                                     decision="generate", rationale_source="model"))
        return out

    def close(self) -> None:
        pass


def window(key: str, templates: dict[str, str], sequence: tuple[str, ...] | None = None) -> Window:
    return Window(
        kind=WindowKind.SESSION,
        key=key,
        start_ms=0,
        end_ms=10,
        lines=len(sequence or templates),
        sequence=sequence or tuple(templates),
        templates=templates,
        offsets=(OffsetRange(0, 0, 5),),
        topic="logs",
    )


def test_combine_rule():
    assert combine(["normal", "abnormal"]) == "abnormal"
    assert combine(["unknown", "normal"]) == "unknown"
    assert combine(["normal"]) == "normal"


def test_template_mode_asks_each_template_once_and_caches():
    classifier = ScriptedClassifier()
    judge = WindowJudge(classifier, JudgeSettings(), DetectorMetrics())
    first = judge.judge([window("a", {"t1": "block received", "t2": "write failed"}), window("b", {"t1": "block received"})])
    second = judge.judge([window("c", {"t2": "write failed", "t1": "block received"})])
    assert len(classifier.asked) == 2  # t1 and t2, once each, across three windows
    assert [j.label for j in first] == ["abnormal", "normal"]
    assert second[0].label == "abnormal"
    assert "write failed" in second[0].rationale and "t2" in second[0].rationale
    assert first[1].rationale is None  # normal windows carry no rationale
    assert second[0].latency_ms == 0.0  # answered from the cache


def test_unknown_answers_give_a_reason_and_are_asked_again_after_their_ttl():
    classifier = ScriptedClassifier()
    judge = WindowJudge(classifier, JudgeSettings(), DetectorMetrics())
    (j,) = judge.judge([window("a", {"t9": "garbled thing"})])
    assert j.label == "unknown" and "unparseable" in j.reason
    judge.judge([window("b", {"t9": "garbled thing"})])
    assert len(classifier.asked) == 1  # within the ttl: not asked again for every window

    expiring = ScriptedClassifier()
    judge = WindowJudge(expiring, JudgeSettings(unknown_ttl_s=0), DetectorMetrics())
    judge.judge([window("a", {"t9": "garbled thing"})])
    judge.judge([window("b", {"t9": "garbled thing"})])
    assert len(expiring.asked) == 2


def test_window_mode_sends_the_sequence_and_caps_it():
    classifier = ScriptedClassifier()
    judge = WindowJudge(classifier, JudgeSettings(mode=JudgeMode.WINDOW, window_max_templates=4), DetectorMetrics())
    seq = ("t1",) * 3 + ("t2",) + ("t1",) * 6
    (j,) = judge.judge([window("a", {"t1": "block received", "t2": "write failed"}, seq)])
    # ten lines, cap four: the first two and the last two, as the window's sequence
    assert classifier.asked[0] == ("block received",) * 4
    assert j.label == "normal"
    (short,) = judge.judge([window("b", {"t1": "block received", "t2": "write failed"}, ("t1", "t2", "t1"))])
    assert short.label == "abnormal" and short.rationale


def test_worker_batches_off_thread_and_drains():
    classifier = ScriptedClassifier()
    metrics = DetectorMetrics()
    settings = JudgeSettings(max_batch=4, max_wait_ms=5)
    worker = JudgeWorker(WindowJudge(classifier, settings, metrics), settings, metrics)
    try:
        for i in range(10):
            worker.submit(window(f"w{i}", {f"t{i % 3}": "write failed" if i % 3 == 0 else "ok"}))
        assert worker.wait_idle(10)
        done = worker.take_done()
        assert sorted(j.window.key for j in done) == sorted(f"w{i}" for i in range(10))
        assert worker.depth == 0 and worker.take_done() == []
    finally:
        worker.close()


def test_worker_turns_a_crashing_judge_into_unknown_verdicts():
    class Exploding:
        model_id = "x"
        prompt_version = "x"

        def decide(self, inputs):
            raise RuntimeError("backend fell over")

    metrics = DetectorMetrics()
    settings = JudgeSettings(max_wait_ms=0)
    worker = JudgeWorker(WindowJudge(Exploding(), settings, metrics), settings, metrics)
    try:
        worker.submit(window("a", {"t1": "x"}))
        deadline = time.monotonic() + 5
        done = []
        while not done and time.monotonic() < deadline:
            worker.wait_idle(1)
            done = worker.take_done()
        assert [j.label for j in done] == ["unknown"]
        assert "backend fell over" in done[0].reason
    finally:
        worker.close()


def test_cache_persists_for_the_same_model_and_prompt_only(tmp_path):
    classifier = ScriptedClassifier()
    judge = WindowJudge(classifier, JudgeSettings(), DetectorMetrics())
    judge.judge([window("a", {"t1": "block received", "t2": "write failed", "t9": "garbled"})])
    path = tmp_path / "cache" / "templates.json"
    judge.cache.save(path, "model-a", "p1")

    again = WindowJudge(ScriptedClassifier(), JudgeSettings(), DetectorMetrics())
    assert again.cache.load(path, "model-a", "p1") == 2  # the unknown answer is not kept
    hit = again.judge_cached(window("b", {"t2": "write failed"}))
    assert hit is not None and hit.label == "abnormal" and "failed" in hit.rationale
    assert again.judge_cached(window("c", {"t9": "garbled"})) is None

    other = WindowJudge(ScriptedClassifier(), JudgeSettings(), DetectorMetrics())
    assert other.cache.load(path, "model-b", "p1") == 0
    assert other.cache.load(path, "model-a", "p2") == 0


def test_verdicts_leave_in_the_order_their_windows_closed():
    class SlowFirst(ScriptedClassifier):
        def decide(self, inputs):
            time.sleep(0.05)
            return super().decide(inputs)

    metrics = DetectorMetrics()
    settings = JudgeSettings(max_batch=2, max_wait_ms=0)
    judge = WindowJudge(SlowFirst(), settings, metrics)
    worker = JudgeWorker(judge, settings, metrics)
    try:
        worker.submit(window("w0", {"t1": "write failed"}))  # needs the model
        for i in range(1, 6):  # cached once w0 is judged, but must wait their turn
            worker.submit(window(f"w{i}", {"t1": "write failed"}))
        assert worker.wait_idle(10)
        assert [j.window.key for j in worker.take_done()] == [f"w{i}" for i in range(6)]
        worker.submit(window("w6", {"t1": "write failed"}))  # queue empty: answered at once
        assert [j.window.key for j in worker.take_done()] == ["w6"]
    finally:
        worker.close()


class ConfidentClassifier(ScriptedClassifier):
    """Like ScriptedClassifier, with the confidence a rank decision attaches: the number after '@'."""

    def decide(self, inputs):
        out = []
        for judgement, log in zip(super().decide(inputs), inputs):
            text = log if isinstance(log, str) else " ".join(log)
            conf = float(text.rsplit("@", 1)[1]) if "@" in text else None
            out.append(Judgement(judgement.label, judgement.rationale, judgement.reason, judgement.latency_s,
                                 judgement.attempts, judgement.raw, conf))
        return out


def test_window_confidence_comes_from_the_deciding_templates():
    judge = WindowJudge(ConfidentClassifier(), JudgeSettings(), DetectorMetrics())
    abnormal, normal, mixed = judge.judge([
        window("a", {"t1": "block received @0.9", "t2": "write failed @0.7", "t3": "read failed @0.8"}),
        window("b", {"t1": "block received @0.9", "t4": "block sent @0.6"}),
        window("c", {"t1": "block received @0.9", "t5": "block deleted"}),
    ])
    assert (abnormal.label, abnormal.confidence) == ("abnormal", 0.8)  # the clearest anomaly
    assert (normal.label, normal.confidence) == ("normal", 0.6)  # the least sure normal template
    assert mixed.confidence is None  # one template without a confidence: no figure for the window
    (cached,) = judge.judge([window("d", {"t2": "write failed @0.7"})])
    assert cached.confidence == 0.7  # kept in the template cache


def test_window_mode_passes_the_judgements_confidence_through():
    judge = WindowJudge(ConfidentClassifier(), JudgeSettings(mode=JudgeMode.WINDOW), DetectorMetrics())
    (j,) = judge.judge([window("a", {"t1": "write failed @0.65"})])
    assert (j.label, j.confidence) == ("abnormal", 0.65)


def test_judging_doctests():
    import doctest

    import rationanomaly.stream.judging as judging

    result = doctest.testmod(judging)
    assert result.failed == 0 and result.attempted > 0


class AwayThenBack(ScriptedClassifier):
    """The model is away (unreachable) for its first `away_calls` calls, then answers."""

    def __init__(self, away_calls: int) -> None:
        super().__init__()
        self.away_calls = away_calls
        self.calls = 0

    def decide(self, inputs):
        self.calls += 1
        if self.calls <= self.away_calls:
            return [Judgement("unknown", None, "backend error: connection error", 0.0, 2, None, unavailable=True)
                    for _ in inputs]
        return super().decide(inputs)


def _drain(worker: JudgeWorker, until_s: float) -> list:
    deadline = time.monotonic() + until_s
    done: list = []
    while time.monotonic() < deadline and not done:
        done = worker.take_done()
        time.sleep(0.05)
    return done


def test_wait_policy_holds_windows_while_the_model_is_away_and_judges_them_when_it_returns():
    metrics = DetectorMetrics()
    classifier = AwayThenBack(away_calls=2)
    judge = WindowJudge(classifier, JudgeSettings(max_wait_ms=0), metrics)
    worker = JudgeWorker(judge, JudgeSettings(max_wait_ms=0), metrics)
    try:
        worker.submit(window("a", {"t2": "write failed"}))
        time.sleep(0.5)  # the first attempt failed; the next is a backoff away
        assert worker.take_done() == [] and worker.holding and worker.depth == 1
        assert metrics.model_degraded._value.get() == 1  # noqa: SLF001
        (judged,) = _drain(worker, until_s=10)  # backoff 1 s, then 2 s
    finally:
        worker.close()
    assert judged.label == "abnormal" and classifier.calls == 3
    assert not worker.holding and metrics.model_degraded._value.get() == 0  # noqa: SLF001
    # The failed attempts were never cached as the template's verdict.
    assert judge.cache.get("t2").label == "abnormal"


def test_unknown_policy_and_a_passed_deadline_publish_unknown_with_the_reason():
    for settings in (JudgeSettings(max_wait_ms=0, on_model_down="unknown"),
                     JudgeSettings(max_wait_ms=0, model_down_deadline_s=0)):
        metrics = DetectorMetrics()
        judge = WindowJudge(AwayThenBack(away_calls=10), settings, metrics)
        worker = JudgeWorker(judge, settings, metrics)
        try:
            worker.submit(window("a", {"t2": "write failed"}))
            (judged,) = _drain(worker, until_s=5)
        finally:
            worker.close()
        assert (judged.label, judged.reason) == ("unknown", "t2: backend error: connection error")
        assert not worker.holding and metrics.model_degraded._value.get() == 1  # noqa: SLF001
        assert judge.cache.get("t2") is None  # an outage is never a template's verdict


class MixedSources(ScriptedClassifier):
    """Rank-like answers: a draft for 'write' templates, the model's own words for 'read' ones."""

    kind = "rank"

    def decide(self, inputs):
        out = []
        for judgement, log in zip(super().decide(inputs), inputs):
            source = "draft" if "write" in log else "model"
            note = "explanation failed its check" if source == "draft" else None
            out.append(Judgement(judgement.label, judgement.rationale, judgement.reason, judgement.latency_s,
                                 judgement.attempts, judgement.raw, decision="rank",
                                 rationale_source=source if judgement.rationale else None, rationale_note=note))
        return out


def test_a_windows_provenance_comes_from_its_abnormal_templates_and_survives_the_cache(tmp_path):
    judge = WindowJudge(MixedSources(), JudgeSettings(), DetectorMetrics())
    mixed, model_only, normal = judge.judge([
        window("a", {"t1": "write failed", "t2": "read failed", "t3": "block received"}),
        window("b", {"t2": "read failed", "t3": "block received"}),
        window("c", {"t3": "block received"}),
    ])
    assert (mixed.decision, mixed.rationale_source) == ("rank", "draft")  # one part is a draft
    assert mixed.template_sources == {"t1": "draft", "t2": "model"}
    assert mixed.rationale_note == "t1: explanation failed its check"
    assert (model_only.rationale_source, model_only.rationale_note) == ("model", None)
    assert (normal.decision, normal.rationale_source, normal.template_sources) == ("rank", None, {})
    path = tmp_path / "templates.json"
    judge.cache.save(path, "m", "p")
    again = WindowJudge(MixedSources(), JudgeSettings(), DetectorMetrics())
    assert again.cache.load(path, "m", "p") == 3
    hit = again.judge_cached(window("d", {"t1": "write failed", "t2": "read failed"}))
    assert hit is not None and (hit.decision, hit.rationale_source, hit.template_sources) == (
        "rank", "draft", {"t1": "draft", "t2": "model"})


class GatedClassifier(ScriptedClassifier):
    """Answers only once `go` is set, so a model call stays in flight as long as a test needs."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.called = threading.Event()
        self.go = threading.Event()

    def decide(self, inputs):
        self.called.set()
        assert self.go.wait(10)
        return super().decide(inputs)


def test_a_handover_waits_for_the_model_call_in_flight_and_starts_none():
    """What a member losing partitions relies on (app._on_revoke): inside `between_model_calls`
    the answers of the call that was in flight are cached, and no new call begins."""
    import threading

    decider = GatedClassifier()
    judge = WindowJudge(decider, JudgeSettings(mode=JudgeMode.TEMPLATE), DetectorMetrics())
    first = threading.Thread(target=judge.judge, args=([window("a", {"t1": "block served"})],))
    first.start()
    assert decider.called.wait(10)
    with judge.between_model_calls(0.2) as idle:
        assert not idle  # the call is still in flight: the caller is told it did not wait it out
    threading.Timer(0.3, decider.go.set).start()
    with judge.between_model_calls(10) as idle:
        assert idle and judge.cache.get("t1") is not None  # its answer is in before the handover
        decider.called.clear()
        second = threading.Thread(target=judge.judge, args=([window("b", {"t2": "write failed"})],))
        second.start()
        assert not decider.called.wait(0.5)  # no new call while ownership changes
    assert decider.called.wait(10)
    second.join(10)
    first.join(10)
    assert judge.cache.get("t2").label == "abnormal"
    assert decider.asked == ["block served", "write failed"]

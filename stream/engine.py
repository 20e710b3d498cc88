"""Builds the detector's working parts from its settings, once, for any source and sink.

Besides the model, the decision stage may hold two memories, each built here because only the
entry point knows where files lie:
- the reviewed-example memory (`backend.retrieval`, model/retrieval.py): template mode, rank
  decision; the train templates of the shared data folder (read in place) and every operator
  correction the detector receives (stream/feedback.py teaches it);
- session rules (`backend.sessions`, model/sessions.py): window mode over session windows.
Either one missing never stops the detector: it logs why and decides without it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from rationanomaly.model.backends import Backend
from rationanomaly.model.decision import Decider, as_decider, make_decider
from rationanomaly.model.memory import NoReviewedExamples, ReviewedMemory, load_memory
from rationanomaly.model.retrieval import RetrievalError
from rationanomaly.model.sessions import SessionRules, SessionRulesError
from rationanomaly.stream.feedback import learn_from_corrections
from rationanomaly.stream.judging import JudgeWorker, WindowJudge
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.pipeline import ModelIdentity, Pipeline
from rationanomaly.stream.records import JudgeMode, WindowKind
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.sinks import VerdictSink

log = structlog.get_logger(__name__)

# The variable the tests and `training` read too; the folder beside the project otherwise.
DATA_DIR_ENV = "RATIONANOMALY_DATA_DIR"
DEFAULT_DATA_DIR = Path("..") / "shared" / "data"


def data_dir(settings: DetectorSettings) -> Path:
    """Where the reviewed train templates lie: `backend.retrieval.data_dir`, else
    RATIONANOMALY_DATA_DIR, else ../shared/data (from the working directory)."""
    given = settings.backend.retrieval.data_dir
    if given is not None:
        return given
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR)


def _adapter_dir(settings: DetectorSettings) -> str | None:
    from rationanomaly.model.loading import ModelLoadError, resolve_adapter

    try:
        return resolve_adapter(settings.backend.adapter)
    except ModelLoadError:
        return None  # the decider's own build reports a bad adapter path


def reviewed_memory(settings: DetectorSettings) -> ReviewedMemory | None:
    """The reviewed-example memory the settings ask for, or None (with the reason logged)."""
    wanted = settings.backend.retrieval
    if not wanted.enabled:
        return None
    if settings.judging.mode is not JudgeMode.TEMPLATE:
        log.info("retrieval_off", reason="window mode: the memory holds reviewed templates, not windows")
        return None
    folder = data_dir(settings)
    try:
        memory = load_memory(wanted, folder, _adapter_dir(settings), settings.profile.name)
    except NoReviewedExamples as error:
        log.info("retrieval_off", reason=str(error))
        return None
    except RetrievalError as error:
        log.warning("retrieval_off", reason=str(error), data_dir=str(folder),
                    consequence="the plain rank decision judges; verdicts cite no reviewed example")  # fmt: skip
        return None
    b = memory.blend
    log.info("retrieval_on", templates=len(memory.index), dataset=memory.dataset, k=b.k, weight=b.weight,
             threshold=b.threshold, index=memory.index_id, sources=list(memory.sources))  # fmt: skip
    return memory


def session_rules(settings: DetectorSettings) -> SessionRules | None:
    """The session rules the settings ask for, or None (with the reason logged)."""
    wanted = settings.backend.sessions
    if not wanted.enabled:
        return None
    if settings.judging.mode is not JudgeMode.WINDOW or settings.windows.kind is not WindowKind.SESSION:
        # The count rules read a whole session's steps: a count or time window cuts them anywhere.
        log.warning("session_rules_off", reason="session rules judge whole sessions: they need judging.mode=window "
                    "and windows.kind=session", mode=settings.judging.mode.value, windows=settings.windows.kind.value)
        return None
    adapter = _adapter_dir(settings)
    path = wanted.rules_file or (Path(adapter) / "hdfs_sessions.json" if adapter is not None else None)
    if path is None:
        log.warning("session_rules_off", reason="no adapter, so no hdfs_sessions.json; name backend.sessions.rules_file")
        return None
    try:
        rules = SessionRules.load(path)
    except SessionRulesError as error:
        log.warning("session_rules_off", reason=str(error))
        return None
    log.info("session_rules_on", path=str(path), implicated=len(rules.implicated), digest=rules.digest())
    return rules


@dataclass
class Engine:
    decider: Decider
    worker: JudgeWorker
    pipeline: Pipeline
    sink: VerdictSink
    metrics: DetectorMetrics
    identity: ModelIdentity
    judge: WindowJudge
    pipeline_settings: DetectorSettings
    owns_backend: bool = True
    memory: ReviewedMemory | None = None  # the reviewed-example memory, when the decision uses it

    def save_cache(self) -> None:
        path = self.pipeline_settings.judging.cache_file
        if path is not None:
            self.judge.cache.save(path, self.identity.model_id, self.identity.prompt_version)

    def close(self) -> None:
        self.worker.close()
        self.save_cache()
        self.sink.close()
        if self.owns_backend:  # a backend or decider handed in by the caller is the caller's to close
            self.decider.close()


def build_engine(
    settings: DetectorSettings,
    sink: VerdictSink,
    backend: Backend | Decider | None = None,
    metrics: DetectorMetrics | None = None,
) -> Engine:
    """`backend`: a transport the settings' decision is put on, or a whole decider (used as
    it is: no memory or rules are added to it); built from `settings.backend` when None."""
    metrics = metrics or DetectorMetrics()
    owns_backend = backend is None
    retries = settings.judging.retries
    handed_decider = backend is not None and isinstance(backend, Decider)
    memory = None if handed_decider else reviewed_memory(settings)
    rules = None if handed_decider else session_rules(settings)
    if backend is None:
        decider = make_decider(settings.backend, retries=retries, memory=memory, rules=rules)
    else:
        decider = as_decider(backend, settings.backend, retries=retries, memory=memory, rules=rules)
    if memory is not None and "+retrieval(" not in decider.model_id:
        memory = None  # the decision generates: make_decider said why
    identity = ModelIdentity(model_id=decider.model_id, prompt_version=decider.prompt_version)
    log.info("decision", kind=decider.kind, model=decider.model_id)
    judge = WindowJudge(decider, settings.judging, metrics)
    if memory is not None:
        learn_from_corrections(judge.cache, memory)
    if settings.judging.cache_file is not None:
        loaded = judge.cache.load(settings.judging.cache_file, identity.model_id, identity.prompt_version)
        log.info("template_cache_loaded", path=str(settings.judging.cache_file), templates=loaded)
    worker = JudgeWorker(judge, settings.judging, metrics)
    pipeline = Pipeline(settings, worker, sink, metrics, identity)
    return Engine(decider, worker, pipeline, sink, metrics, identity, judge, settings, owns_backend, memory)

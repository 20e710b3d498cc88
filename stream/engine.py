"""Builds the detector's working parts from its settings, once, for any source and sink."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from rationanomaly.model.backends import Backend
from rationanomaly.model.decision import Decider, as_decider, make_decider
from rationanomaly.stream.judging import JudgeWorker, WindowJudge
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.pipeline import ModelIdentity, Pipeline
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.sinks import VerdictSink

log = structlog.get_logger(__name__)


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
    """`backend`: a transport the settings' decision is put on, or a whole decider; built
    from `settings.backend` when None."""
    metrics = metrics or DetectorMetrics()
    owns_backend = backend is None
    retries = settings.judging.retries
    if backend is None:
        decider = make_decider(settings.backend, retries=retries)
    else:
        decider = as_decider(backend, settings.backend, retries=retries)
    identity = ModelIdentity(model_id=decider.model_id, prompt_version=decider.prompt_version)
    log.info("decision", kind=decider.kind, model=decider.model_id)
    judge = WindowJudge(decider, settings.judging, metrics)
    if settings.judging.cache_file is not None:
        loaded = judge.cache.load(settings.judging.cache_file, identity.model_id, identity.prompt_version)
        log.info("template_cache_loaded", path=str(settings.judging.cache_file), templates=loaded)
    worker = JudgeWorker(judge, settings.judging, metrics)
    pipeline = Pipeline(settings, worker, sink, metrics, identity)
    return Engine(decider, worker, pipeline, sink, metrics, identity, judge, settings, owns_backend)

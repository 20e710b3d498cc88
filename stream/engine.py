"""Builds the detector's working parts from its settings, once, for any source and sink."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from rationanomaly.model.backends import Backend, make_backend
from rationanomaly.model.classifier import Classifier
from rationanomaly.model.prompt import PROMPT_VERSION
from rationanomaly.stream.judging import JudgeWorker, WindowJudge
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.pipeline import ModelIdentity, Pipeline
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.sinks import VerdictSink

log = structlog.get_logger(__name__)


@dataclass
class Engine:
    backend: Backend
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
        if self.owns_backend:  # a backend handed in by the caller is the caller's to close
            self.backend.close()


def build_engine(
    settings: DetectorSettings,
    sink: VerdictSink,
    backend: Backend | None = None,
    metrics: DetectorMetrics | None = None,
) -> Engine:
    metrics = metrics or DetectorMetrics()
    owns_backend = backend is None
    backend = backend or make_backend(settings.backend)
    classifier = Classifier(backend, retries=settings.judging.retries)
    identity = ModelIdentity(model_id=backend.model_id, prompt_version=PROMPT_VERSION)
    judge = WindowJudge(classifier, settings.judging, metrics)
    if settings.judging.cache_file is not None:
        loaded = judge.cache.load(settings.judging.cache_file, identity.model_id, identity.prompt_version)
        log.info("template_cache_loaded", path=str(settings.judging.cache_file), templates=loaded)
    worker = JudgeWorker(judge, settings.judging, metrics)
    pipeline = Pipeline(settings, worker, sink, metrics, identity)
    return Engine(backend, worker, pipeline, sink, metrics, identity, judge, settings, owns_backend)

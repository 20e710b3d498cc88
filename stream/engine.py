"""Builds the detector's working parts from its settings, once, for any source and sink."""

from __future__ import annotations

from dataclasses import dataclass

from rationanomaly.model.backends import Backend, make_backend
from rationanomaly.model.classifier import Classifier
from rationanomaly.model.prompt import PROMPT_VERSION
from rationanomaly.stream.judging import JudgeWorker, WindowJudge
from rationanomaly.stream.metrics import DetectorMetrics
from rationanomaly.stream.pipeline import ModelIdentity, Pipeline
from rationanomaly.stream.settings import DetectorSettings
from rationanomaly.stream.sinks import VerdictSink


@dataclass
class Engine:
    backend: Backend
    worker: JudgeWorker
    pipeline: Pipeline
    sink: VerdictSink
    metrics: DetectorMetrics
    identity: ModelIdentity
    owns_backend: bool = True

    def close(self) -> None:
        self.worker.close()
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
    worker = JudgeWorker(WindowJudge(classifier, settings.judging, metrics), settings.judging, metrics)
    identity = ModelIdentity(model_id=backend.model_id, prompt_version=PROMPT_VERSION)
    pipeline = Pipeline(settings, worker, sink, metrics, identity)
    return Engine(backend, worker, pipeline, sink, metrics, identity, owns_backend)

"""The stream's memory of reviewed examples: what it indexes, which dataset it consults, and the
operator corrections it learns while running.

`load_memory` builds it from the settings (`model.settings.RetrievalSettings`): the train
templates of the data folder, read where they lie (`templates/<dataset>_train.jsonl`), the site's
own reviewed files, and the blend the adapter ships (`retrieval.json`). `ReviewedMemory.learn`
and `forget` take corrections as they arrive (stream/feedback.py calls them);
`ReviewedMemory.decider` wraps a rank decider in `model.retrieval.RetrievalDecider`.

No clock; I/O only to read the files the settings name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rationanomaly.model.retrieval import (
    RetrievalBlend,
    RetrievalDecider,
    RetrievalError,
    RetrievalIndex,
    ReviewedExample,
    read_reviewed,
)


class NoReviewedExamples(RetrievalError):
    """The index would hold no reviewed template of the detector's own dataset (an HDFS stream
    beside BGL and Spirit examples): nothing is wrong, there is just no memory for it."""


@dataclass
class ReviewedMemory:
    """The index the stream decides with, the blend that weighs it, and the dataset its
    neighbours come from. `learn` and `forget` take operator corrections as they arrive."""

    index: RetrievalIndex
    blend: RetrievalBlend
    dataset: str | None  # neighbours from this dataset only; None: all
    index_id: str  # fingerprint of what was indexed at the start (part of the decision's id)
    sources: tuple[str, ...]  # the files read, for the start-up log

    def learn(self, template: str, label: str) -> ReviewedExample:
        """An operator's label for a template: the next decisions see it among the neighbours
        (and it replaces a train label for the same text)."""
        return self.index.add(template, label, "correction", self.dataset)

    def forget(self, template: str) -> ReviewedExample | None:
        """A withdrawn correction: the label it replaced comes back."""
        return self.index.withdraw(template, "correction", self.dataset)

    def decider(self, inner: object) -> RetrievalDecider:
        return RetrievalDecider(inner, self.index, self.blend, self.dataset, self.index_id)


def load_memory(settings: Any, data_dir: Path, adapter_dir: Path | str | None, profile: str | None) -> ReviewedMemory:
    """The reviewed-example memory `settings` (model.settings.RetrievalSettings) describe.

    Raises RetrievalError, with what is missing and how to fix it, when there is nothing to
    build it from: no blend file, no train split where `data_dir` says, no example of the
    detector's dataset. The caller then runs the plain rank decision.
    """
    blend_file = settings.blend_file or (Path(adapter_dir) / "retrieval.json" if adapter_dir is not None else None)
    if blend_file is None:
        raise RetrievalError("no retrieval.json: the model runs without an adapter; name one with "
                             "backend.retrieval.blend_file, or set backend.retrieval.enabled=false")
    if not Path(blend_file).is_file():
        raise RetrievalError(f"no blend file at {blend_file} (the adapter ships none); name one with "
                             "backend.retrieval.blend_file, or set backend.retrieval.enabled=false")
    blend = RetrievalBlend.load(blend_file)
    blend = RetrievalBlend(weight=blend.weight if settings.weight is None else float(settings.weight),
                           threshold=blend.threshold if settings.threshold is None else float(settings.threshold),
                           k=blend.k if settings.k is None else int(settings.k))

    templates = Path(data_dir) / "templates"
    files: list[Path] = []
    if settings.datasets is None:
        files = sorted(templates.glob("*_train.jsonl")) if templates.is_dir() else []
    else:
        files = [templates / f"{name}_train.jsonl" for name in settings.datasets]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise RetrievalError(f"reviewed train split(s) not found: {', '.join(missing)} "
                                 "(set RATIONANOMALY_DATA_DIR or backend.retrieval.data_dir)")
    if not files and not settings.reviewed:
        raise RetrievalError(f"no reviewed templates: {templates}/*_train.jsonl not found; set RATIONANOMALY_DATA_DIR "
                             "or backend.retrieval.data_dir to the data folder, name a site file in "
                             "backend.retrieval.reviewed, or set backend.retrieval.enabled=false")
    examples: list[ReviewedExample] = []
    for path in files:
        # A row without a dataset belongs to the split its file is named after.
        named = path.name[: -len("_train.jsonl")]
        examples += [e if e.dataset else replace(e, dataset=named) for e in read_reviewed(path, "train")]
    indexed = {e.dataset for e in examples}
    if settings.dataset == "all":
        dataset = None
    elif settings.dataset == "auto":
        dataset = profile
        if dataset not in indexed and not settings.reviewed:
            raise NoReviewedExamples(f"no reviewed templates of dataset {profile!r} (the index would hold "
                                 f"{', '.join(sorted(d for d in indexed if d)) or 'none'}); set "
                                 "backend.retrieval.dataset to one of them, or to 'all'")
    else:
        dataset = settings.dataset
    for path in settings.reviewed:
        try:
            site = read_reviewed(path, "reviewed")
        except OSError as error:
            raise RetrievalError(f"{path}: cannot read reviewed templates ({error.strerror or error!r})") from error
        # The site's own file speaks for the detector's data unless a row says otherwise.
        examples += [e if e.dataset else replace(e, dataset=dataset) for e in site]
    index = RetrievalIndex()
    index.extend(examples)
    if dataset is not None and not any(e.dataset == dataset for e in index.examples()):
        raise RetrievalError(f"no reviewed templates of dataset {dataset!r} in {', '.join(map(str, files))}")
    return ReviewedMemory(index, blend, dataset, index.fingerprint(), tuple(str(f) for f in (*files, *settings.reviewed)))

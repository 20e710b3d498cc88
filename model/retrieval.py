"""Memory of reviewed examples: a char-n-gram TF-IDF index of labelled templates, and the blend
of its neighbours' vote with the model's rank margin.

Labels in these logs follow site conventions that words alone don't carry ("mount: RPC: Timed
out" is normal on Spirit, ">> mount: RPC: Timed out" is abnormal). An expert decides such cases
by remembering similar ones; this module is that memory. It indexes templates with a label and
where the label came from (`train`, `correction`, ...), returns the k nearest by cosine
similarity of sublinear TF-IDF weighted character n-grams, and turns them into a vote.

Pure code: no clock, no I/O beyond reading a JSONL file it is handed, no third-party imports
(the stream's runtime does not install scikit-learn). The weights a blend uses are chosen by
cross-validation in `training/cv.py` and saved as `retrieval.json` beside the adapter.

`RetrievalDecider` wraps a rank decider (`model.decision.RankDecider`): its margin plus the
neighbours' vote decides, and the rationale cites the nearest agreeing reviewed example
("like '>> mount: RPC: Timed out' (abnormal, reviewed, similarity 0.93)").
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import orjson

Label = Literal["normal", "abnormal"]

_SPACE = re.compile(r"\s+")


class RetrievalError(ValueError):
    """A reviewed example or a retrieval file that cannot be used."""



@dataclass(frozen=True, slots=True)
class ReviewedExample:
    template: str
    label: Label
    source: str  # where the label came from: "train", "correction", ...
    dataset: str | None = None


@dataclass(frozen=True, slots=True)
class Neighbour:
    example: ReviewedExample
    similarity: float  # cosine, 0..1


def _normalise(text: str) -> str:
    return _SPACE.sub(" ", text.strip().lower())


def char_ngrams(text: str, low: int = 3, high: int = 5) -> Counter[str]:
    """Character n-grams of each word padded with spaces (scikit-learn's `char_wb` analyser).

    >>> sorted(char_ngrams("ab", 3, 3))
    [' ab', 'ab ']
    """
    grams: Counter[str] = Counter()
    for word in _normalise(text).split(" "):
        padded = f" {word} "
        for n in range(low, high + 1):
            if len(padded) < n:
                break
            for start in range(len(padded) - n + 1):
                grams[padded[start:start + n]] += 1
    return grams


class RetrievalIndex:
    """Reviewed templates, searchable by char-n-gram TF-IDF cosine similarity.

    `add` may be called at any time (an operator correction arrives); IDF and the document norms
    are recomputed lazily at the next query. A later label for the same template (same dataset)
    replaces the earlier one: a correction wins over the train label it corrects.
    """

    def __init__(self, ngram_range: tuple[int, int] = (3, 5)) -> None:
        low, high = ngram_range
        if not 1 <= low <= high:
            raise RetrievalError(f"ngram_range must be 1 <= low <= high, got {ngram_range!r}")
        self._range = (low, high)
        self._examples: list[ReviewedExample | None] = []
        self._tf: list[dict[str, float]] = []
        self._by_key: dict[tuple[str | None, str], int] = {}
        self._postings: dict[str, set[int]] = {}
        self._norms: list[float] = []
        self._idf: dict[str, float] = {}
        self._stale = True
        # What a correction replaced, by key: withdrawing the correction brings it back.
        self._replaced: dict[tuple[str | None, str], ReviewedExample] = {}
        # The stream adds corrections on its polling thread while the judging thread queries.
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return len(self._by_key)

    def add(self, template: str, label: str, source: str, dataset: str | None = None) -> ReviewedExample:
        with self._lock:
            return self._add(template, label, source, dataset)

    def _add(self, template: str, label: str, source: str, dataset: str | None) -> ReviewedExample:
        if label not in ("normal", "abnormal"):
            raise RetrievalError(f"label must be normal|abnormal, got {label!r}")
        if not template.strip():
            raise RetrievalError("cannot index an empty template")
        example = ReviewedExample(template, label, source, dataset)  # type: ignore[arg-type]
        key = (dataset, _normalise(template))
        previous = self._by_key.get(key)
        if previous is not None:
            # Same text: keep its n-grams, swap the label (and where it came from).
            before = self._examples[previous]
            if before is not None and before.source != source and key not in self._replaced:
                self._replaced[key] = before
            self._examples[previous] = example
            return example
        doc = len(self._examples)
        tf = {gram: 1.0 + math.log(count) for gram, count in char_ngrams(template, *self._range).items()}
        self._examples.append(example)
        self._tf.append(tf)
        for gram in tf:
            self._postings.setdefault(gram, set()).add(doc)
        self._by_key[key] = doc
        self._stale = True
        return example

    def withdraw(self, template: str, source: str, dataset: str | None = None) -> ReviewedExample | None:
        """Undo the label `source` gave `template`: the example it replaced comes back, or the
        template leaves the index when it replaced nothing. Returns what is indexed now."""
        with self._lock:
            return self._withdraw((dataset, _normalise(template)), source)

    def _withdraw(self, key: tuple[str | None, str], source: str) -> ReviewedExample | None:
        doc = self._by_key.get(key)
        if doc is None or self._examples[doc] is None or self._examples[doc].source != source:  # type: ignore[union-attr]
            return self._examples[doc] if doc is not None else None
        restored = self._replaced.pop(key, None)
        if restored is not None:
            self._examples[doc] = restored
            return restored
        # Out of the postings too, so IDF and similarities are what they were before it came.
        for gram in self._tf[doc]:
            ids = self._postings[gram]
            ids.discard(doc)
            if not ids:
                del self._postings[gram]
        self._tf[doc] = {}
        self._examples[doc] = None
        del self._by_key[key]
        self._stale = True
        return None

    def fingerprint(self) -> str:
        """A short digest of what is indexed (text, label, dataset), to name the index in an id.

        >>> a, b = RetrievalIndex(), RetrievalIndex()
        >>> _ = a.add("x failed", "abnormal", "train"); _ = b.add("x  FAILED", "abnormal", "train")
        >>> a.fingerprint() == b.fingerprint()
        True
        """
        import hashlib

        rows = sorted(f"{e.dataset or ''}\t{e.label}\t{_normalise(e.template)}" for e in self.examples())
        return hashlib.sha256("\n".join(rows).encode()).hexdigest()[:12]

    def extend(self, examples: Iterable[ReviewedExample]) -> None:
        for e in examples:
            self.add(e.template, e.label, e.source, e.dataset)

    def examples(self) -> list[ReviewedExample]:
        with self._lock:
            return [e for e in self._examples if e is not None]

    def _refresh(self) -> None:
        if not self._stale:
            return
        docs = len(self._by_key)  # live documents: a withdrawn one left an empty slot
        # Smoothed IDF, as scikit-learn's default: log((1 + n) / (1 + df)) + 1.
        self._idf = {gram: math.log((1 + docs) / (1 + len(ids))) + 1.0 for gram, ids in self._postings.items()}
        self._norms = [
            math.sqrt(sum((w * self._idf[g]) ** 2 for g, w in tf.items())) or 1.0 for tf in self._tf
        ]
        self._stale = False

    def nearest(self, template: str, k: int = 10, dataset: str | None = None,
                exclude_self: bool = False) -> list[Neighbour]:
        """The k most similar reviewed templates (similarity > 0), most similar first.

        `dataset` keeps to that dataset's examples (site conventions differ between systems);
        `exclude_self` leaves out an indexed template with the same text, so an item can be
        judged by its neighbours without seeing its own label (leave-one-out).
        """
        if k < 1:
            raise RetrievalError(f"k must be >= 1, got {k}")
        with self._lock:
            return self._nearest(template, k, dataset, exclude_self)

    def _nearest(self, template: str, k: int, dataset: str | None, exclude_self: bool) -> list[Neighbour]:
        self._refresh()
        query = {g: (1.0 + math.log(c)) * self._idf[g]
                 for g, c in char_ngrams(template, *self._range).items() if g in self._idf}
        qnorm = math.sqrt(sum(w * w for w in query.values()))
        if not qnorm:
            return []
        dots: dict[int, float] = {}
        for gram, qw in query.items():
            dw = qw * self._idf[gram]
            for doc in self._postings[gram]:
                dots[doc] = dots.get(doc, 0.0) + dw * self._tf[doc][gram]
        own = self._by_key.get((dataset, _normalise(template))) if exclude_self else None
        ranked = []
        for doc, dot in dots.items():
            example = self._examples[doc]
            if example is None or doc == own:
                continue
            if dataset is not None and example.dataset != dataset:
                continue
            ranked.append((dot / (qnorm * self._norms[doc]), doc))
        # Ties broken by insertion order, so the answer never depends on dict order.
        ranked.sort(key=lambda pair: (-pair[0], pair[1]))
        return [Neighbour(self._examples[doc], min(sim, 1.0)) for sim, doc in ranked[:k]]  # type: ignore[arg-type]


def vote(neighbours: Sequence[Neighbour]) -> float:
    """Similarity-weighted share of abnormal neighbours, in [0, 1]; 0.5 with no neighbours.

    >>> n = lambda label, sim: Neighbour(ReviewedExample("t", label, "train"), sim)
    >>> vote([n("abnormal", 0.9), n("normal", 0.3)])
    0.75
    >>> vote([])
    0.5
    """
    total = sum(max(n.similarity, 1e-6) for n in neighbours)
    if not total:
        return 0.5
    return sum(max(n.similarity, 1e-6) for n in neighbours if n.example.label == "abnormal") / total


@dataclass(frozen=True, slots=True)
class RetrievalBlend:
    """The model's rank margin plus the neighbours' vote, as one score with one threshold.

    score = margin + weight · (2·vote − 1): a vote of all-abnormal neighbours adds `weight` nats,
    all-normal subtracts it, an even or empty vote leaves the model's margin as it is. `weight`
    0 is the model alone. Chosen by cross-validation (`training/cv.py`).
    """

    weight: float
    threshold: float
    k: int = 10

    def score(self, margin: float, neighbours: Sequence[Neighbour]) -> float:
        return margin + self.weight * (2.0 * vote(neighbours) - 1.0)

    def decide(self, margin: float, neighbours: Sequence[Neighbour]) -> Label:
        return "abnormal" if self.score(margin, neighbours) > self.threshold else "normal"

    @classmethod
    def load(cls, path: Path | str) -> RetrievalBlend:
        path = Path(path)
        try:
            data = orjson.loads(path.read_bytes())
            blend = cls(weight=float(data["weight"]), threshold=float(data["threshold"]), k=int(data["k"]))
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise RetrievalError(f"{path}: not a retrieval blend file ({error!r}); "
                                 'expected {"weight": <nats>, "threshold": <nats>, "k": <int>}') from error
        if not (math.isfinite(blend.weight) and math.isfinite(blend.threshold)) or blend.k < 1 or blend.weight < 0:
            raise RetrievalError(f"{path}: weight must be finite and >= 0, threshold finite, k >= 1; got {data!r}")
        return blend


def cite(neighbours: Sequence[Neighbour], label: str, limit: int = 80) -> str | None:
    """A clause naming the most similar reviewed example that agrees with `label`, for a rationale.

    >>> cite([Neighbour(ReviewedExample(">> mount: RPC: Timed out", "abnormal", "train"), 0.93)], "abnormal")
    "like '>> mount: RPC: Timed out' (abnormal, reviewed, similarity 0.93)"
    """
    for n in neighbours:
        if n.example.label == label:
            text = n.example.template if len(n.example.template) <= limit else n.example.template[:limit - 1] + "…"
            return f"like {text!r} ({label}, reviewed, similarity {n.similarity:.2f})"
    return None


def read_reviewed(path: Path | str, source: str) -> list[ReviewedExample]:
    """Labelled templates from a JSONL file of `{"template", "label"[, "dataset"]}` objects."""
    path = Path(path)
    examples = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = orjson.loads(line)
                label = str(row["label"]).strip().lower()
                template = str(row["template"])
            except (orjson.JSONDecodeError, KeyError, TypeError) as error:
                raise RetrievalError(f"{path}:{number}: expected an object with template and label ({error!r})") from error
            if label not in ("normal", "abnormal") or not template.strip():
                raise RetrievalError(f"{path}:{number}: label must be normal|abnormal and template non-empty")
            examples.append(ReviewedExample(template, label, source, row.get("dataset")))  # type: ignore[arg-type]
    return examples


class RetrievalDecider:
    """A rank decider with a memory: the inner decider's margin, moved by the vote of the k
    nearest reviewed templates (`RetrievalBlend`), decides; a flipped label publishes the other
    grounded draft. Either way the rationale cites the nearest reviewed example that agrees.

    What it cannot blend passes through unchanged: a window (reviewed examples are templates),
    an `unknown`, a judgement that is not a rank decision or carries no confidence.
    `index.add(...)` between calls (an operator correction) changes the next decisions.
    """

    def __init__(self, inner: object, index: RetrievalIndex, blend: RetrievalBlend, dataset: str | None = None,
                 index_id: str | None = None) -> None:
        threshold = getattr(inner, "threshold", None)
        if getattr(inner, "kind", None) != "rank" or not isinstance(threshold, float | int):
            raise RetrievalError("the retrieval decider wraps a rank decider (it needs the margin and its threshold)")
        self.inner = inner
        self.index = index
        self.blend = blend
        self.dataset = dataset
        self.kind = "rank"
        self.prompt_version = inner.prompt_version  # type: ignore[attr-defined]
        # The backend that scores: an explaining decider around this one generates with it.
        self.backend = getattr(inner, "backend", None)
        # The reviewed examples indexed at the start name the memory (`index_id`): another data
        # set or site file gives other verdict ids. Corrections received later do not: every
        # instance of a group must agree on the id, whenever it read the corrections topic.
        where = f",index={index_id}" if index_id else ""
        self.model_id = (f"{inner.model_id}+retrieval(k={blend.k},weight={blend.weight!r},"  # type: ignore[attr-defined]
                         f"threshold={blend.threshold!r}{where})")

    def decide(self, inputs: Sequence[Any]) -> list[Any]:
        judged = self.inner.decide(inputs)  # type: ignore[attr-defined]
        return [self._blend(x, j) for x, j in zip(inputs, judged, strict=True)]

    def _blend(self, log: Any, judgement: Any) -> Any:
        from rationanomaly.model.classifier import STEERING_NOTE
        from rationanomaly.model.prompt import completion_text, log_text
        from rationanomaly.model.ranking import confidence, drafts

        c = judgement.confidence
        if (not isinstance(log, str) or judgement.label not in ("normal", "abnormal") or judgement.decision != "rank"
                or c is None or not 0.0 < c < 1.0):
            return judgement
        distance = math.log(c / (1.0 - c))  # confidence = logistic(|margin − threshold|)
        margin = self.inner.threshold + (distance if judgement.label == "abnormal" else -distance)  # type: ignore[attr-defined]
        found = self.index.nearest(log, self.blend.k, dataset=self.dataset)
        score = self.blend.score(margin, found)
        label: Label = "abnormal" if score > self.blend.threshold else "normal"
        citation = cite([Neighbour(replace(n.example, template=log_text(n.example.template)), n.similarity)
                         for n in found], label)
        if label == judgement.label:
            rationale = judgement.rationale or ""
            raw = judgement.raw
        else:
            rationale = drafts(log)[label]
            raw = completion_text(rationale, label)
            if judgement.rationale and STEERING_NOTE in judgement.rationale:
                rationale = f"{rationale} {STEERING_NOTE}"
        if citation:
            rationale = f"{rationale} Reviewed: {citation}.".strip()
        return replace(judgement, label=label, rationale=rationale, raw=raw,
                       confidence=confidence(score, self.blend.threshold, label),
                       rationale_source=judgement.rationale_source if label == judgement.label else "draft")

    def close(self) -> None:
        self.inner.close()  # type: ignore[attr-defined]

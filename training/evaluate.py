"""Evaluation: per-item predictions, metrics (abnormal is the positive class), and baselines.

Granularities, as in the paper:
- template: one verdict per template;
- session by the paper's rule: every distinct template of a sessions file is judged once, and a
  session is abnormal when any of its templates is;
- window: the model reads the session's template sequence (window mode).

An answer that does not parse is `unknown`; for the metrics it counts as "not flagged" (normal)
and it lowers the format-valid rate, so a model cannot gain recall by emitting junk.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import orjson
import structlog

from rationanomaly.training.data import ExampleKind, LogExample, load_any, load_split, log_input
from rationanomaly.training.stance import stance

log = structlog.get_logger(__name__)


class SessionMode(str, Enum):
    TEMPLATE = "template"  # judge distinct templates once, session abnormal if any is
    WINDOW = "window"  # the model reads the template sequence


@dataclass(frozen=True, slots=True)
class ItemResult:
    id: str
    dataset: str
    gold: str
    predicted: str  # normal | abnormal | unknown
    rationale: str | None
    consistent: bool | None  # the rationale's stance agrees with the answer; None if undecided
    latency_s: float
    raw: str | None = None
    lenient: str | None = None  # label read leniently from unparseable text (baseline figures)
    score: float | None = None  # how abnormal the system finds it (rank decision, TF-IDF); None when it gives none


@dataclass(frozen=True, slots=True)
class Metrics:
    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    format_valid_rate: float
    consistency_rate: float | None  # among valid answers whose stance could be read
    stance_readable_rate: float | None
    mean_latency_s: float
    auc: float | None = None  # ranking quality of `score`, threshold-free; None without scores or a class

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def compute_metrics(items: Sequence[ItemResult]) -> Metrics:
    """Metrics from per-item predictions; `unknown` counts as not flagged.

    >>> m = compute_metrics([ItemResult("a", "d", "abnormal", "abnormal", "x", True, 1.0),
    ...                      ItemResult("b", "d", "normal", "abnormal", "x", True, 1.0),
    ...                      ItemResult("c", "d", "abnormal", "unknown", None, None, 1.0)])
    >>> (m.tp, m.fp, m.fn, m.tn, round(m.precision, 2), round(m.recall, 2), round(m.f1, 2))
    (1, 1, 1, 0, 0.5, 0.5, 0.5)
    """
    tp = sum(i.gold == "abnormal" and i.predicted == "abnormal" for i in items)
    fp = sum(i.gold == "normal" and i.predicted == "abnormal" for i in items)
    fn = sum(i.gold == "abnormal" and i.predicted != "abnormal" for i in items)
    tn = sum(i.gold == "normal" and i.predicted != "abnormal" for i in items)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    n = len(items)
    valid = [i for i in items if i.predicted != "unknown"]
    readable = [i for i in valid if i.consistent is not None]
    return Metrics(
        n=n,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        precision=precision,
        recall=recall,
        f1=f1,
        accuracy=(tp + tn) / n if n else 0.0,
        format_valid_rate=len(valid) / n if n else 0.0,
        consistency_rate=sum(bool(i.consistent) for i in readable) / len(readable) if readable else None,
        stance_readable_rate=len(readable) / len(valid) if valid else None,
        mean_latency_s=sum(i.latency_s for i in items) / n if n else 0.0,
        auc=roc_auc(items),
    )


def roc_auc(items: Sequence[ItemResult]) -> float | None:
    """Area under the ROC curve of the items' scores (abnormal positive): the chance that a random
    anomaly scores above a random normal item, ties counting half. None unless every item has a
    score and both labels occur. It says how well a system ranks, whatever its threshold.

    >>> def item(gold, score): return ItemResult("i", "d", gold, "normal", None, None, 0.0, score=score)
    >>> roc_auc([item("abnormal", 0.9), item("normal", 0.2), item("abnormal", 0.2), item("normal", 0.1)])
    0.875
    >>> roc_auc([item("abnormal", 0.9), item("normal", None)]) is None
    True
    """
    if not items or any(i.score is None for i in items):
        return None
    return auc([(i.gold == "abnormal", i.score) for i in items])


def auc(scored: Sequence[tuple[bool, float]]) -> float | None:
    """AUC of (is positive, score) pairs by mid-ranks (Mann–Whitney); None without both classes.

    >>> auc([(True, 0.9), (False, 0.2), (True, 0.2), (False, 0.1)])
    0.875
    """
    ordered = sorted(scored, key=lambda pair: pair[1])
    positives = sum(positive for positive, _ in scored)
    negatives = len(scored) - positives
    if not positives or not negatives:
        return None
    rank_sum, start = 0.0, 0
    while start < len(ordered):  # mid-ranks over runs of equal scores
        end = start
        while end + 1 < len(ordered) and ordered[end + 1][1] == ordered[start][1]:
            end += 1
        rank_sum += ((start + end) / 2 + 1) * sum(positive for positive, _ in ordered[start : end + 1])
        start = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


# --- judging -------------------------------------------------------------------------------

Judge = Callable[[Sequence[list[dict[str, str]]]], list[Any]]


def judge_examples(examples: Sequence[LogExample], classifier: Any, batch_size: int = 8) -> list[ItemResult]:
    """Judge examples with a `model.decision.Decider`; shortest inputs batched together (less padding)."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].source))
    results: list[ItemResult | None] = [None] * len(examples)
    chunk = batch_size * 4  # progress logging granularity; the backend batches within it
    for start in range(0, len(order), chunk):
        indices = order[start : start + chunk]
        judgements = classifier.decide([log_input(examples[i]) for i in indices])
        for index, judgement in zip(indices, judgements, strict=True):
            e = examples[index]
            argued = stance(judgement.rationale) if judgement.rationale else None
            # A batch's wall time is shared by its items: per-item latency is the batch time
            # divided by the batch size, which is what a throughput-bound stream sees.
            per_item = judgement.latency_s / min(batch_size, len(indices))
            results[index] = ItemResult(
                id=e.example_id,
                dataset=e.provenance.dataset,
                gold=e.label,
                predicted=judgement.label,
                rationale=judgement.rationale,
                consistent=None if argued is None or judgement.label == "unknown" else argued == judgement.label,
                latency_s=per_item,
                raw=judgement.raw,
                lenient=judgement.label if judgement.label != "unknown" else lenient_label(judgement.raw),
                score=abnormality(judgement.label, judgement.confidence),
            )
        log.info("eval.progress", done=min(start + chunk, len(order)), total=len(order))
    return [r for r in results if r is not None]


def abnormality(label: str, confidence: float | None) -> float | None:
    """The backend's confidence in its label as a score for `abnormal` (None without one).

    >>> abnormality("abnormal", 0.9), round(abnormality("normal", 0.9), 3), abnormality("unknown", 0.9)
    (0.9, 0.1, None)
    """
    if confidence is None or label not in ("normal", "abnormal"):
        return None
    return confidence if label == "abnormal" else 1.0 - confidence


def lenient_label(raw: str | None) -> str:
    """A label from text that does not parse: an `<answer>` tag if any, else the text's stance.

    Zero-shot models rarely follow the tag format; this reading is how the paper-style
    baselines are usually scored. It is reported beside, never instead of, the strict figures.

    >>> lenient_label("The log is abnormal. <answer>abnormal")
    'abnormal'
    >>> lenient_label(None)
    'unknown'
    """
    import re

    if not raw:
        return "unknown"
    tagged = re.search(r"<answer>\s*(abnormal|normal)", raw, re.IGNORECASE)
    if tagged:
        return tagged.group(1).lower()
    argued = stance(raw)
    return argued if argued is not None else "unknown"


def sessions_by_template_rule(sessions: Sequence[LogExample], classifier: Any, batch_size: int = 8) -> tuple[list[ItemResult], list[ItemResult]]:
    """Judge each distinct template of the sessions once; a session is abnormal if any is.

    Returns (session results, template results). Template results carry no gold label of their
    own (sessions are labelled, templates are not): their gold is "normal" as a placeholder.
    """
    from rationanomaly.training.data import Provenance

    distinct = list(dict.fromkeys(t for s in sessions for t in s.templates))
    template_examples = [
        LogExample(templates=(t,), label="normal", provenance=Provenance("template", "distinct", str(n)))
        for n, t in enumerate(distinct)
    ]
    judged = judge_examples(template_examples, classifier, batch_size)
    verdict = {t: r for t, r in zip(distinct, judged, strict=True)}
    results = []
    for s in sessions:
        parts = [verdict[t] for t in dict.fromkeys(s.templates)]
        flagged = [p for p in parts if p.predicted == "abnormal"]
        predicted = "abnormal" if flagged else ("unknown" if any(p.predicted == "unknown" for p in parts) else "normal")
        results.append(
            ItemResult(
                id=s.example_id,
                dataset=s.provenance.dataset,
                gold=s.label,
                predicted=predicted,
                rationale=flagged[0].rationale if flagged else None,
                consistent=all(p.consistent is not False for p in parts) if parts else None,
                latency_s=sum(p.latency_s for p in parts),
                # The rule's own order: a session is as abnormal as its most abnormal template.
                score=max(p.score for p in parts) if parts and all(p.score is not None for p in parts) else None,
            )
        )
    return results, judged


# --- baselines -----------------------------------------------------------------------------


def tfidf_baseline(train: Sequence[LogExample], test: Sequence[LogExample]) -> list[ItemResult]:
    """TF-IDF (word and char n-grams) + class-balanced logistic regression, fitted on `train`."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.feature_extraction.text import TfidfVectorizer

    pipeline = make_pipeline(
        make_union(
            TfidfVectorizer(token_pattern=r"[A-Za-z][A-Za-z]+", lowercase=True, ngram_range=(1, 2), min_df=1),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=2),
        ),
        LogisticRegression(max_iter=2000, class_weight="balanced", C=4.0),
    )
    pipeline.fit([e.source for e in train], [e.label == "abnormal" for e in train])
    started = time.perf_counter()
    probability = pipeline.predict_proba([e.source for e in test])[:, list(pipeline.classes_).index(True)]
    per_item = (time.perf_counter() - started) / max(len(test), 1)
    return [
        ItemResult(e.example_id, e.provenance.dataset, e.label, "abnormal" if p > 0.5 else "normal", None, None,
                   per_item, score=float(p))
        for e, p in zip(test, probability, strict=True)
    ]


def train_split_for(example: LogExample) -> str:
    """The train split matching an example's dataset (`bgl_dev` → `bgl_train`)."""
    dataset = example.provenance.dataset
    return f"{dataset}_train" if dataset in ("bgl", "spirit", "hdfs") else "bgl_train"


# --- the whole evaluation ------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRequest:
    data: tuple[Path, ...]
    model: str = "default"  # the base model: "default", a hub id or a path (the served name with base_url)
    adapter: str | None = "default"  # "default" (the shipped adapter), a directory, or None
    session_mode: tuple[SessionMode, ...] = (SessionMode.TEMPLATE, SessionMode.WINDOW)
    baselines: tuple[str, ...] = ("tfidf", "zero-shot")
    limit: int | None = None  # per file, first N (after a seeded shuffle for sessions)
    batch_size: int = 8
    max_new_tokens: int = 96
    seed: int = 0
    label: str = "model"  # the name the model under test gets in the report's sections
    decision: str = "auto"  # generate | rank | auto (rank when the adapter ships decision.json)
    rank_threshold: float | None = None
    base_url: str | None = None  # the model under test is served there (OpenAI-compatible); `model` says which


def make_classifier(model: str, batch_size: int, max_new_tokens: int, decision: str = "auto",
                    rank_threshold: float | None = None, base_url: str | None = None, adapter: str | None = "default"):
    """The `model.decision.Decider` under test, chosen with the detector's own words (`run`,
    `replay` and `eval` alike): `model` is the base model ('default', a hub id or a path; with
    `base_url`, the served model's name, 'default' asking the server) and `adapter` the LoRA
    adapter ('default', a directory, or None). No retries: both decisions are deterministic, a
    retry repeats the same answer. With `base_url` the server is judged; the adapter's
    decision.json is read locally."""
    from rationanomaly.model.decision import make_decider
    from rationanomaly.model.settings import BackendSettings
    from rationanomaly.training.models import resolve_base_model

    if model == "base" or _is_adapter(model):
        raise ValueError(f"--model {model!r}: name the base model with --model and the adapter with --adapter "
                         "('none' for the base model alone), as `rationanomaly run` does")
    if base_url is not None:
        served = BackendSettings(
            kind="openai", base_url=base_url, model=model, adapter=adapter if decision != "generate" else None,
            tokenizer="default", max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size,
            timeout_s=300, decision=decision, rank_threshold=rank_threshold,
        )  # fmt: skip
        return make_decider(served, retries=0)
    settings = BackendSettings(
        kind="transformers",
        model=model if model == "default" else resolve_base_model(model),
        adapter=adapter,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=0.0,
        device="auto",
        decision=decision,
        rank_threshold=rank_threshold,
    )
    return make_decider(settings, retries=0)


def _is_adapter(path: str) -> bool:
    from rationanomaly.training.models import is_adapter_dir

    return is_adapter_dir(path)


def _load_eval_file(path: Path, limit: int | None, seed: int) -> list[LogExample]:
    import random

    examples = load_any(path)
    if limit is not None and len(examples) > limit:
        if examples[0].kind is ExampleKind.WINDOW:
            # Sessions are rare-positive; keep the abnormal share of the file in the sample.
            rng = random.Random(seed)
            abnormal = [e for e in examples if e.label == "abnormal"]
            normal = [e for e in examples if e.label == "normal"]
            k = max(1, round(limit * len(abnormal) / len(examples)))
            examples = rng.sample(abnormal, min(k, len(abnormal))) + rng.sample(normal, limit - min(k, len(abnormal)))
        else:
            examples = examples[:limit]
    return examples


def run_evaluation(request: EvalRequest, items_path: Path | None = None) -> dict[str, Any]:
    """Evaluate the model (and baselines) on each file; returns the report dict.

    Top-level precision/recall/f1 pool every template-level and session-level item of the
    model under test; `sections` holds each (file, granularity, system) separately.
    """
    sections: list[dict[str, Any]] = []
    pooled: list[ItemResult] = []
    all_items: list[dict[str, Any]] = []
    classifiers: dict[str, Any] = {}

    def classifier(name: str) -> Any:
        if name not in classifiers:
            if name == "model":
                classifiers[name] = make_classifier(request.model, request.batch_size, request.max_new_tokens,
                                                    request.decision, request.rank_threshold, request.base_url,
                                                    adapter=request.adapter)
            else:
                classifiers[name] = make_classifier("default", request.batch_size, request.max_new_tokens, "generate",
                                                    adapter=None)
        return classifiers[name]

    systems = ["model"] + [b for b in request.baselines if b == "zero-shot"]
    for path in request.data:
        examples = _load_eval_file(path, request.limit, request.seed)
        dataset = examples[0].provenance.dataset if examples else path.stem
        is_sessions = bool(examples) and examples[0].kind is ExampleKind.WINDOW
        granularities = [m.value for m in request.session_mode] if is_sessions else ["template"]
        for granularity in granularities:
            for system in systems:
                started = time.perf_counter()
                if is_sessions and granularity == SessionMode.TEMPLATE.value:
                    items, _ = sessions_by_template_rule(examples, classifier(system), request.batch_size)
                    level = "session (any template)"
                else:
                    items = judge_examples(examples, classifier(system), request.batch_size)
                    level = "session (window)" if is_sessions else "template"
                wall = time.perf_counter() - started
                name = request.label if system == "model" else system
                sections.append(_section(path, dataset, level, name, items, wall))
                all_items += [{"file": path.name, "level": level, "system": name, **asdict(i)} for i in items]
                if system == "model":
                    pooled += items
            if "tfidf" in request.baselines:
                train = load_split(train_split_for(examples[0]))
                started = time.perf_counter()
                items = tfidf_baseline(train, examples)
                level = ("session (window)" if granularity == "window" else "session (template text)") if is_sessions else "template"
                if not (is_sessions and granularity == SessionMode.TEMPLATE.value):
                    sections.append(_section(path, dataset, level, "tfidf", items, time.perf_counter() - started))
                    all_items += [{"file": path.name, "level": level, "system": "tfidf", **asdict(i)} for i in items]
    overall = compute_metrics(pooled).as_dict()
    report = {
        **{k: overall[k] for k in ("precision", "recall", "f1")},
        "overall": overall,
        "model": request.model,
        "adapter": request.adapter,
        "model_id": classifier("model").model_id if "model" in classifiers else None,
        "prompt_version": _prompt_version(),
        "data": [str(p) for p in request.data],
        "limit": request.limit,
        "max_new_tokens": request.max_new_tokens,
        "sections": sections,
    }
    if items_path is not None:
        items_path.parent.mkdir(parents=True, exist_ok=True)
        items_path.write_bytes(b"".join(orjson.dumps(i) + b"\n" for i in all_items))
        report["items"] = str(items_path)
    for c in classifiers.values():
        c.backend.close()
    return report


def combine_reports(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report from several runs on the same data (e.g. the model, then a baseline run):
    sections are concatenated; the headline figures stay those of the first report."""
    if not reports:
        raise ValueError("combine_reports needs at least one report")
    combined = dict(reports[0])
    combined["sections"] = [s for r in reports for s in r["sections"]]
    combined["combined_from"] = [r.get("model") for r in reports]
    return combined


def _section(path: Path, dataset: str, level: str, system: str, items: Sequence[ItemResult], wall_s: float) -> dict[str, Any]:
    metrics = compute_metrics(items).as_dict()
    if any(i.lenient is not None for i in items):
        from dataclasses import replace

        lenient = compute_metrics([replace(i, predicted=i.lenient or i.predicted) for i in items])
        metrics.update(f1_lenient=lenient.f1, precision_lenient=lenient.precision, recall_lenient=lenient.recall)
    log.info("eval.section", file=path.name, level=level, system=system, f1=round(metrics["f1"], 4), n=len(items))
    return {"file": path.name, "dataset": dataset, "level": level, "system": system, "wall_s": wall_s, **metrics}


def _prompt_version() -> str:
    from rationanomaly.model.prompt import PROMPT_VERSION

    return PROMPT_VERSION


def write_report(report: dict[str, Any], path: Path) -> list[Path]:
    """report.json plus the Markdown table and the PNG beside it."""
    from rationanomaly.training.report import write_markdown, write_plot

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return [path, write_markdown(report, path.with_suffix(".md")), write_plot(report, path.with_suffix(".png"))]

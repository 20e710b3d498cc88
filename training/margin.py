"""Decision tuning: train the rank decision's margin itself, after SFT.

The shipped verdict is a rank decision (`model.ranking`): abnormal when
log p(abnormal draft) − log p(normal draft) clears a threshold. SFT never sees that margin —
it spreads its loss over every rationale token, most of which the two drafts share — and it
left the margin under-fitted: the SFT adapter's own train F1 under its best threshold was
0.75 / 0.71 (BGL / Spirit). This stage fits the margin directly with a weighted logistic loss,
a Bradley–Terry preference between the gold draft and the flipped one (DPO's objective without
a reference model), plus a small likelihood term on the gold answer so greedy generation stays
what SFT taught. Abnormal examples weigh more: as in the GRPO answer reward, a missed anomaly
costs most.

Not the paper's method (it has no rank decision); a separate, optional stage between SFT and
calibration. A stratified share of the train splits is held out of training and the threshold
is calibrated on it after every epoch, since margins on examples the stage trained on are
optimistic.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from rationanomaly.training.calibrate import calibrate_on_holdout
from rationanomaly.training.data import LogExample, load_split, log_input, prompt_messages, stratified_holdout

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class MarginRun:
    """Everything the stage needs; one dataclass, as TRL's configs."""

    adapter: str  # the SFT LoRA adapter to continue
    output_dir: Path = Path("runs/margin")
    model: str | None = None  # base HF dir; None → the prepared SmolLM2-135M-Instruct
    splits: tuple[str, ...] = ("bgl_train", "spirit_train")
    epochs: int = 3
    batch_size: int = 8
    learning_rate: float = 1e-4
    warmup_steps: int = 10
    normal_per_abnormal: float = 3.0  # normal examples sampled per abnormal one, per dataset and epoch
    abnormal_weight: float = 1.5  # loss weight of an abnormal example relative to a normal one
    nll_weight: float = 0.1  # weight of the gold answer's per-token negative log-likelihood
    troubled_normals: bool = False  # every normal with fault words joins every epoch (false-alarm bait)
    holdout: float = 0.2  # stratified share of the train splits kept out to calibrate on
    max_grad_norm: float = 1.0
    time_budget_min: float | None = None
    max_steps: int | None = None  # stop after this many updates (smoke runs)
    seed: int = 0


def margin_loss(margins: Any, abnormal: Any, abnormal_weight: float = 1.5) -> Any:
    """Weighted mean of softplus(−y·margin), y = +1 for abnormal and −1 for normal: the
    logistic loss of calling abnormal when the margin is positive.

    >>> import torch
    >>> round(float(margin_loss(torch.tensor([0.0]), torch.tensor([True]))), 4)  # log 2
    0.6931
    >>> float(margin_loss(torch.tensor([9.0, -9.0]), torch.tensor([True, False]))) < 1e-3
    True
    """
    import torch
    import torch.nn.functional as F

    sign = abnormal.float() * 2.0 - 1.0
    weights = torch.where(abnormal, torch.full_like(margins, abnormal_weight), torch.ones_like(margins))
    return (weights * F.softplus(-sign * margins)).sum() / weights.sum()


def epoch_examples(examples: Sequence[LogExample], normal_per_abnormal: float,
                   rng: random.Random, troubled_normals: bool = False) -> list[LogExample]:
    """One epoch's examples: every abnormal one and a fresh sample of normal ones per dataset,
    shuffled; each epoch sees other normals, so over epochs most of them are seen.

    With `troubled_normals`, the normal ones whose text has fault words ("connection lost",
    "bad username") fill the sample first, every epoch: they are where false alarms come from,
    and a uniform sample shows each only every few epochs. The sample's size stays the same.
    """
    from rationanomaly.model.lexicon import has_fault_terms

    by_dataset: dict[str, list[LogExample]] = {}
    for example in examples:
        by_dataset.setdefault(example.provenance.dataset, []).append(example)
    chosen: list[LogExample] = []
    for dataset in sorted(by_dataset):
        group = by_dataset[dataset]
        abnormal = [e for e in group if e.label == "abnormal"]
        normal = [e for e in group if e.label != "abnormal"]
        wanted = min(len(normal), math.ceil(normal_per_abnormal * len(abnormal))) if abnormal else len(normal)
        first: list[LogExample] = []
        if troubled_normals:
            troubled = [has_fault_terms(e.source) for e in normal]
            first = [e for e, t in zip(normal, troubled, strict=True) if t]
            normal = [e for e, t in zip(normal, troubled, strict=True) if not t]
            rng.shuffle(first)
            first = first[:wanted]
        chosen += abnormal + first + rng.sample(normal, wanted - len(first))
    rng.shuffle(chosen)
    return chosen


def length_batches(examples: Sequence[LogExample], batch_size: int, rng: random.Random,
                   group: int = 16) -> list[list[LogExample]]:
    """Batches of similar length in random order: a batch pads every row to its longest, and a
    few templates are 5x the median. Runs of `group` batches are sorted by length, then cut.

    >>> from rationanomaly.training.data import Provenance
    >>> ex = [LogExample(("x" * n,), "normal", Provenance("d", "s", str(n))) for n in (1, 50, 2, 60)]
    >>> sorted(sorted(len(e.source) for e in b) for b in length_batches(ex, 2, random.Random(0)))
    [[1, 2], [50, 60]]
    """
    batches: list[list[LogExample]] = []
    span = batch_size * group
    for start in range(0, len(examples), span):
        run = sorted(examples[start : start + span], key=lambda e: len(e.source))
        batches += [run[i : i + batch_size] for i in range(0, len(run), batch_size)]
    rng.shuffle(batches)
    return batches


def answer_logprobs(model: Any, tokenizer: Any, conversations: Sequence[list[dict[str, str]]],
                    completions: Sequence[str]) -> tuple[Any, Any]:
    """Summed completion log-probabilities (with gradients) and completion lengths, one per pair."""
    import torch

    from rationanomaly.model.scoring import encode_pairs, prefix_cache, rows_hidden, shared_prefix_length

    rows = encode_pairs(tokenizer, conversations, completions)
    # The system prompt every row starts with runs once per batch (gradients flow through it
    # once): about half of each row's tokens, so about half the step's compute.
    prefix = shared_prefix_length(rows)
    hidden = rows_hidden(model, tokenizer, rows, prefix, prefix_cache(model, rows[0][0][:prefix]) if prefix else None)
    # The head runs on completion positions only: the prompt is most of each row.
    positions = [(row, t) for row, (tokens, start) in enumerate(rows) for t in range(start - 1, len(tokens) - 1)]
    # hidden starts at position `prefix`; the state at t predicts token t + 1.
    row_index = torch.tensor([r for r, _ in positions], device=hidden.device)
    states = hidden[row_index, torch.tensor([t - prefix for _, t in positions], device=hidden.device)]
    logprobs = torch.log_softmax(model.get_output_embeddings()(states).float(), dim=-1)
    targets = torch.tensor([rows[r][0][t + 1] for r, t in positions], device=hidden.device)
    picked = logprobs.gather(1, targets[:, None]).squeeze(1)
    sums = torch.zeros(len(rows), device=hidden.device).index_add(0, row_index, picked)
    lengths = torch.tensor([len(tokens) - start for tokens, start in rows], device=hidden.device, dtype=torch.float)
    return sums, lengths


def batch_loss(model: Any, tokenizer: Any, batch: Sequence[LogExample], run: MarginRun) -> tuple[Any, dict[str, float]]:
    """The stage's loss on a batch, and its parts for the log."""
    import torch

    from rationanomaly.model.ranking import candidates

    conversations, completions = [], []
    for example in batch:
        conversation = prompt_messages(example)
        pair = candidates(log_input(example))  # exactly the answers the rank decision weighs
        conversations += [conversation, conversation]
        completions += [pair["abnormal"], pair["normal"]]
    sums, lengths = answer_logprobs(model, tokenizer, conversations, completions)
    margins = sums[0::2] - sums[1::2]
    abnormal = torch.tensor([e.label == "abnormal" for e in batch], device=margins.device)
    gold = torch.where(abnormal, sums[0::2] / lengths[0::2], sums[1::2] / lengths[1::2])
    decision = margin_loss(margins, abnormal, run.abnormal_weight)
    nll = -gold.mean()
    parts = {"margin_loss": float(decision.detach()), "gold_nll": float(nll.detach()),
             "accuracy": float(((margins.detach() > 0) == abnormal).float().mean())}
    return decision + run.nll_weight * nll, parts


def train_margin(run: MarginRun, examples: Sequence[LogExample] | None = None) -> Path:
    """Train, calibrate on the held-out share after every epoch, save `epoch-K/` and `final/`
    (the last epoch), each with its `decision.json`. Returns the final adapter's path.
    `examples` replaces the run's splits (tests, or a user's own labelled templates)."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    from rationanomaly.model.ranking import save_threshold
    from rationanomaly.training.sft import load_base, save_trained

    torch.manual_seed(run.seed)
    if examples is None:
        examples = [e for split in run.splits for e in load_split(split)]
    train, held = stratified_holdout(examples, run.holdout, run.seed)
    if not any(e.label == "abnormal" for e in held):
        raise ValueError("the held-out share has no abnormal example to calibrate on; raise --holdout")
    rng = random.Random(run.seed)
    per_epoch = len(epoch_examples(train, run.normal_per_abnormal, random.Random(run.seed), run.troubled_normals))
    total_steps = run.epochs * math.ceil(per_epoch / run.batch_size)
    if run.max_steps is not None:
        total_steps = min(total_steps, run.max_steps)
    model, tokenizer = load_base(run.model, adapter=run.adapter)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{run.adapter}: no trainable parameters; give a LoRA adapter")
    optimizer = torch.optim.AdamW(params, lr=run.learning_rate, weight_decay=0.0)
    schedule = get_cosine_schedule_with_warmup(optimizer, run.warmup_steps, total_steps)
    log.info("margin.start", train=len(train), held_out=len(held), per_epoch=per_epoch, steps=total_steps)
    deadline = time.monotonic() + run.time_budget_min * 60 if run.time_budget_min else math.inf
    step, skipped_in_a_row, final, stop = 0, 0, None, False
    for epoch in range(1, run.epochs + 1):
        model.train()
        for batch in length_batches(epoch_examples(train, run.normal_per_abnormal, rng, run.troubled_normals),
                                    run.batch_size, rng):
            loss, parts = batch_loss(model, tokenizer, batch, run)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = float(torch.nn.utils.clip_grad_norm_(params, run.max_grad_norm))
            value = float(loss.detach())
            step += 1
            if not (math.isfinite(value) and math.isfinite(norm)):
                # Dropped, as the SFT/GRPO guard drops it: the weights stay the last good ones.
                skipped_in_a_row += 1
                log.warning("margin.update_skipped", step=step, loss=value, grad_norm=norm, in_a_row=skipped_in_a_row)
                stop = skipped_in_a_row >= 3
                if stop:
                    log.error("margin.non_finite", step=step, hint="lower the learning rate")
                    break
                continue
            skipped_in_a_row = 0
            optimizer.step()
            schedule.step()
            if step % 10 == 0 or step == 1:
                log.info("margin.step", epoch=epoch, step=step, loss=round(value, 4), grad_norm=round(norm, 3),
                         lr=schedule.get_last_lr()[0], **{k: round(v, 4) for k, v in parts.items()})
            stop = time.monotonic() > deadline or step >= total_steps
            if stop:
                break
        model.eval()
        final = Path(run.output_dir) / f"epoch-{epoch}"
        save_trained(model, tokenizer, final)
        figures = calibrate_on_holdout(model, tokenizer, held)
        save_threshold(final, calibrated_on=[f"{s} held-out {run.holdout:g}" for s in run.splits], seed=run.seed,
                       stage="margin", epoch=epoch, held_out=len(held), **figures)
        log.info("margin.epoch", epoch=epoch, **figures)
        if stop:
            log.info("margin.stopped", epoch=epoch, step=step, budget_spent=time.monotonic() > deadline)
            break
    assert final is not None
    last = Path(run.output_dir) / "final"
    save_trained(model, tokenizer, last)
    (last / "decision.json").write_bytes((final / "decision.json").read_bytes())
    return last

"""Typer commands for the training room; the project CLI mounts them.

`app` carries `sft`, `grpo` and the `rationales` group (mounted as `rationanomaly train …`);
`eval_command` is a top-level command, registered there only (`rationanomaly eval DATA.jsonl
--model M --adapter A --report R`): it chooses the model with `run`'s words (`cli.options`).
Heavy imports (torch, TRL) happen inside the commands so `--help` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

from rationanomaly.cli.options import AdapterOpt, BaseUrlOpt, DecisionOpt, ModelOpt, adapter_value
from rationanomaly.training.sft import LORA_TARGETS

app = typer.Typer(help="Train the verdict model: rationales, CoT-SFT, GRPO.", no_args_is_help=True)
rationales_app = typer.Typer(help="Rationales for SFT: drafts, teacher, expert review.", no_args_is_help=True)
app.add_typer(rationales_app, name="rationales")

_SPLITS = "bgl_train,spirit_train"


def _splits(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _load(inputs: list[Path] | None, splits: str):
    from rationanomaly.training.data import load_any, load_split, read_jsonl

    if not inputs:
        return [e for s in _splits(splits) for e in load_split(s)]
    examples = []
    for path in inputs:
        # A rationales file (our own jsonl) keeps its rationales; anything else is raw data.
        try:
            examples += read_jsonl(path)
        except (KeyError, TypeError):
            examples += load_any(path)
    return examples


@rationales_app.command("draft")
def draft_command(
    out: Path = typer.Option(..., help="Output rationales jsonl."),
    inputs: list[Path] = typer.Option(None, "--input", help="Data or rationales files (default: the train splits)."),
    splits: str = typer.Option(_SPLITS, help="Comma-separated shared-data splits when no --input."),
    hdfs_windows: int = typer.Option(0, help="Add a balanced slice of hdfs_train sessions (window mode)."),
    hdfs_templates: int = typer.Option(0, help="Add N copies of each hdfs_train template labelled by the session rule."),
) -> None:
    """Grounded draft rationales (no teacher needed); provenance "draft"."""
    from rationanomaly.training.data import write_jsonl
    from rationanomaly.training.drafts import draft_all
    from rationanomaly.training.sft import SFTRun, training_examples

    if hdfs_windows or hdfs_templates:
        examples = training_examples(SFTRun(splits=_splits(splits), hdfs_windows=hdfs_windows,
                                            hdfs_templates=hdfs_templates, abnormal_share=0.01))
    else:
        examples = draft_all(_load(inputs, splits))
    write_jsonl(examples, out)
    typer.echo(f"{len(examples)} rationales → {out}")


@rationales_app.command("teacher")
def teacher_command(
    out: Path = typer.Option(..., help="Output rationales jsonl."),
    base_url: str = typer.Option(..., help="OpenAI-compatible root, e.g. http://127.0.0.1:8000/v1"),
    model: str = typer.Option("default", help="Served model name (default: ask /v1/models)."),
    samples: int = typer.Option(3, help="Tries per example until the teacher's verdict matches gold."),
    inputs: list[Path] = typer.Option(None, "--input"),
    splits: str = typer.Option(_SPLITS),
    draft_rejected: bool = typer.Option(True, help="Give a draft to examples the teacher never got right."),
) -> None:
    """Teacher rationales (key parameters → implications → conclusion), kept only when right."""
    from rationanomaly.training.data import write_jsonl
    from rationanomaly.training.drafts import draft_all
    from rationanomaly.training.teacher import collect_teacher_rationales, teacher_backend

    backend = teacher_backend(base_url, model)
    try:
        examples, stats = collect_teacher_rationales(_load(inputs, splits), backend, samples)
    finally:
        backend.close()
    if draft_rejected:
        examples = draft_all(examples)
    write_jsonl(examples, out)
    typer.echo(f"teacher kept {stats.kept}, rejected {stats.rejected} → {out}")


@rationales_app.command("export")
def export_command(
    rationales: Path = typer.Argument(..., help="Rationales jsonl."),
    out: Path = typer.Option(..., help="CSV for the experts."),
    limit: int = typer.Option(None, help="Only the first N."),
) -> None:
    """Export a batch to CSV: id,input,label,rationale,source,expert_label,expert_rationale,comment."""
    from rationanomaly.training.data import read_jsonl
    from rationanomaly.training.review import export_review

    examples = read_jsonl(rationales)
    export_review(examples[:limit] if limit else examples, out)
    typer.echo(f"exported → {out}")


@rationales_app.command("merge")
def merge_command(
    rationales: Path = typer.Argument(..., help="Rationales jsonl the CSV was exported from."),
    review: Path = typer.Argument(..., help="The edited CSV."),
    out: Path = typer.Option(..., help="Merged rationales jsonl."),
) -> None:
    """Merge expert corrections back (they win; label changes recorded as provenance "expert")."""
    from rationanomaly.training.data import read_jsonl, write_jsonl
    from rationanomaly.training.review import merge_review

    merged, stats = merge_review(read_jsonl(rationales), review)
    write_jsonl(merged, out)
    typer.echo(f"{stats.rows} rows: {stats.label_changes} label and {stats.rationale_changes} rationale changes, {stats.unknown_ids} unknown ids → {out}")


@app.command("sft")
def sft_command(
    output_dir: Path = typer.Option(Path("runs/sft")),
    model: str = typer.Option(None, help="Base HF checkpoint dir (default: the prepared SmolLM2-135M-Instruct)."),
    rationales: Path = typer.Option(None, help="Rationales jsonl (default: drafts of --splits)."),
    splits: str = typer.Option(_SPLITS),
    hdfs_windows: int = typer.Option(40),
    hdfs_templates: int = typer.Option(0, help="Copies of each hdfs_train template labelled by the session rule."),
    abnormal_share: float = typer.Option(0.35),
    full: bool = typer.Option(False, help="Full fine-tuning instead of LoRA."),
    max_steps: int = typer.Option(300),
    learning_rate: float = typer.Option(4e-4),
    batch_size: int = typer.Option(4),
    time_budget_min: float = typer.Option(None, help="Stop and save after this many minutes."),
    resume: bool = typer.Option(False, help="Resume from the last checkpoint in output_dir."),
    init_adapter: Path = typer.Option(None, help="Continue training this saved LoRA adapter (a new schedule)."),
    warmup_steps: int = typer.Option(20),
    save_steps: int = typer.Option(120),
    lora_r: int = typer.Option(16),
    lora_alpha: int = typer.Option(32),
    lora_targets: str = typer.Option(",".join(LORA_TARGETS), help='Comma-separated module names, or "all-linear".'),
) -> None:
    """LoRA (or full) CoT-SFT with TRL's SFTTrainer."""
    from rationanomaly.training.sft import SFTRun, default_sft_config, train_sft

    run = SFTRun(model=model, splits=_splits(splits), rationales=rationales, hdfs_windows=hdfs_windows,
                 hdfs_templates=hdfs_templates,
                 abnormal_share=abnormal_share, lora=not full, time_budget_min=time_budget_min,
                 init_adapter=str(init_adapter) if init_adapter else None, lora_r=lora_r, lora_alpha=lora_alpha,
                 lora_targets=_splits(lora_targets))
    config = default_sft_config(output_dir, max_steps=max_steps, learning_rate=learning_rate,
                                per_device_train_batch_size=batch_size, max_length=640, save_steps=save_steps,
                                warmup_steps=warmup_steps, logging_steps=10)
    typer.echo(str(train_sft(run, config, resume=resume)))


@app.command("hard-prompts")
def hard_prompts_command(
    adapter: Path = typer.Option(..., help="The SFT adapter whose doubts pick the prompts."),
    out: Path = typer.Option(..., help="Output jsonl (rationales format; give it to `grpo --rationales`)."),
    splits: str = typer.Option(_SPLITS),
    keep: int = typer.Option(256, help="At most this many prompts, half from each label."),
    max_margin: float = typer.Option(4.0, help="Keep prompts whose |gold-draft margin| (nats) is below this."),
    limit: int = typer.Option(600, help="Score at most this many: all abnormal, then normal with trouble words, then a sample."),
    batch_size: int = typer.Option(16),
    holdout: float = typer.Option(0.0, help="Leave out decision tuning's held-out share (same seed) so it can still calibrate."),
    seed: int = typer.Option(0, help="Seed of that held-out share."),
) -> None:
    """GRPO prompts the SFT policy is torn on (log-likelihood margin of the gold vs the flipped draft)."""
    from rationanomaly.model.loading import load_causal_lm
    from rationanomaly.training.data import load_split, stratified_holdout, write_jsonl
    from rationanomaly.training.drafts import draft_all
    from rationanomaly.training.hardness import candidates, hardest, preference_margins

    pool, _ = stratified_holdout([e for s in _splits(splits) for e in load_split(s)], holdout, seed)
    examples = candidates(pool, limit)
    model, tokenizer = load_causal_lm("default", str(adapter), device="auto")
    scored = preference_margins(model, tokenizer, examples, batch_size)
    chosen = hardest(scored, keep, max_margin)
    write_jsonl(draft_all([s.example for s in chosen]), out)
    wrong = sum(s.margin < 0 for s in scored)
    abnormal = sum(s.example.label == "abnormal" for s in chosen)
    typer.echo(f"{len(scored)} scored, {wrong} prefer the wrong label; kept {len(chosen)} "
               f"({abnormal} abnormal) with |margin| < {max_margin} → {out}")


@app.command("soup")
def soup_command(
    adapters: list[Path] = typer.Argument(..., help="LoRA adapter directories of one base model."),
    out: Path = typer.Option(..., help="Directory for the averaged adapter."),
    weights: str = typer.Option(None, help="Comma-separated weights summing to 1 (default: uniform)."),
) -> None:
    """Average adapters' weight updates into one adapter (then `calibrate` it)."""
    from rationanomaly.training.soup import SoupError, soup

    try:
        path = soup(adapters, out, [float(w) for w in weights.split(",")] if weights else None)
    except (SoupError, ValueError) as error:
        raise typer.BadParameter(str(error)) from error
    typer.echo(str(path))


@app.command("calibrate")
def calibrate_command(
    adapter: Path = typer.Option(..., help="The adapter whose rank decision to calibrate; decision.json is written into it."),
    splits: str = typer.Option(_SPLITS, help="Train splits to calibrate on (never the dev splits that measure it)."),
    normal_per_dataset: int = typer.Option(300, help="Normal examples scored per dataset (weighted to the full split)."),
    abnormal_per_dataset: int = typer.Option(None, help="Abnormal examples scored per dataset (default: all)."),
    batch_size: int = typer.Option(16),
    seed: int = typer.Option(0),
    holdout: float = typer.Option(0.0, help="Calibrate on exactly decision tuning's held-out share (this seed) "
                                            "instead of a sample; for stages trained without it."),
) -> None:
    """Pick the rank decision's threshold on train splits and save it beside the adapter."""
    from rationanomaly.model.loading import load_causal_lm
    from rationanomaly.model.ranking import save_threshold
    from rationanomaly.model.scoring import scorer
    from rationanomaly.training.calibrate import (
        best_threshold,
        calibrate_on_holdout,
        calibration_sample,
        f1_by_dataset,
        score_sample,
    )
    from rationanomaly.training.data import load_split, stratified_holdout

    names = _splits(splits)
    examples = [e for s in names for e in load_split(s)]
    model, tokenizer = load_causal_lm("default", str(adapter), device="auto")
    if holdout > 0:
        _, held = stratified_holdout(examples, holdout, seed)
        figures = calibrate_on_holdout(model, tokenizer, held, batch_size)
        path = save_threshold(adapter, calibrated_on=[f"{s} held-out {holdout:g}" for s in names], seed=seed,
                              held_out=len(held), **figures)
        typer.echo(f"threshold {figures['threshold']} nats; held-out F1 {figures['holdout_f1']} → {path}")
        return
    sample = calibration_sample(examples, normal_per_dataset, seed, abnormal_per_dataset)
    scored = score_sample(scorer(model, tokenizer, batch_size), sample)
    threshold, f1s = best_threshold(scored)
    path = save_threshold(adapter, threshold, calibrated_on=names, scored=len(scored),
                          normal_per_dataset=normal_per_dataset, abnormal_per_dataset=abnormal_per_dataset, seed=seed,
                          train_f1={d: round(f, 4) for d, f in f1s.items()},
                          train_f1_at_zero={d: round(f, 4) for d, f in f1_by_dataset(scored, 0.0).items()})
    typer.echo(f"threshold {threshold} nats; train F1 " + ", ".join(f"{d} {f:.3f}" for d, f in f1s.items()) + f" → {path}")


@app.command("margin")
def margin_command(
    adapter: Path = typer.Option(..., help="SFT adapter to continue."),
    output_dir: Path = typer.Option(Path("runs/margin")),
    model: str = typer.Option(None),
    splits: str = typer.Option(_SPLITS),
    epochs: int = typer.Option(3),
    batch_size: int = typer.Option(8),
    learning_rate: float = typer.Option(1e-4),
    normal_per_abnormal: float = typer.Option(3.0, help="Normal examples sampled per abnormal one, per dataset and epoch."),
    abnormal_weight: float = typer.Option(1.5, help="Loss weight of an abnormal example (a missed anomaly costs most)."),
    nll_weight: float = typer.Option(0.1, help="Weight of the gold answer's likelihood term."),
    troubled_normals: bool = typer.Option(False, help="Every normal template with fault words joins every epoch."),
    holdout: float = typer.Option(0.2, help="Stratified share of the train splits kept out to calibrate on."),
    time_budget_min: float = typer.Option(None),
    seed: int = typer.Option(0),
) -> None:
    """Decision tuning: fit the rank decision's margin (gold vs flipped draft), calibrate on a held-out share."""
    from rationanomaly.training.margin import MarginRun, train_margin

    run = MarginRun(adapter=str(adapter), output_dir=output_dir, model=model, splits=_splits(splits), epochs=epochs,
                    batch_size=batch_size, learning_rate=learning_rate, normal_per_abnormal=normal_per_abnormal,
                    abnormal_weight=abnormal_weight, nll_weight=nll_weight, holdout=holdout,
                    troubled_normals=troubled_normals,
                    time_budget_min=time_budget_min, seed=seed)
    typer.echo(str(train_margin(run)))


@app.command("grpo")
def grpo_command(
    adapter: Path = typer.Option(..., help="SFT adapter to continue."),
    output_dir: Path = typer.Option(Path("runs/grpo")),
    model: str = typer.Option(None),
    rationales: Path = typer.Option(None, help="References for grounding/brevity (default: drafts)."),
    splits: str = typer.Option(_SPLITS),
    max_steps: int = typer.Option(60),
    learning_rate: float = typer.Option(3e-5),
    num_generations: int = typer.Option(4),
    prompts_per_step: int = typer.Option(2),
    max_completion_length: int = typer.Option(96),
    coherence: bool = typer.Option(True, help="Include the perplexity (coherence) reward."),
    abnormal_share: float = typer.Option(0.35, help="Share of abnormal prompts after oversampling."),
    false_positive: float = typer.Option(-0.5, help="Answer reward for a false alarm."),
    false_negative: float = typer.Option(-1.5, help="Answer reward for a missed anomaly."),
    time_budget_min: float = typer.Option(None),
    bf16: bool = typer.Option(None, help="bf16 on a GPU (default: when supported); --no-bf16 trains in fp32."),
) -> None:
    """GRPO from the SFT adapter with format + answer + think + consistency rewards."""
    from rationanomaly.training.grpo import GRPORun, default_grpo_config, train_grpo
    from rationanomaly.training.rewards import RewardConfig, build_rewards

    rewards = RewardConfig(use_coherence=coherence, false_positive=false_positive, false_negative=false_negative)
    _, weights = build_rewards(rewards, scorer=lambda text: 1.0)  # weights only; no model loaded
    run = GRPORun(adapter=str(adapter), model=model, splits=_splits(splits), rationales=rationales,
                  rewards=rewards, abnormal_share=abnormal_share, time_budget_min=time_budget_min)
    config = default_grpo_config(output_dir, weights=weights, max_steps=max_steps, learning_rate=learning_rate,
                                 num_generations=num_generations,
                                 per_device_train_batch_size=num_generations * prompts_per_step,
                                 max_completion_length=max_completion_length,
                                 **({} if bf16 is None else {"bf16": bf16}))
    typer.echo(str(train_grpo(run, config)))


def eval_command(
    data: list[Path] = typer.Argument(..., help="templates/*.jsonl, sessions/*.jsonl or BGL *_structured.csv"),
    model: ModelOpt = "default",
    adapter: AdapterOpt = "default",
    report: Path = typer.Option(Path("report.json"), help="Report JSON; .md and .png are written beside it."),
    baselines: str = typer.Option("tfidf,zero-shot", help="Comma-separated: tfidf, zero-shot; empty for none."),
    session_mode: str = typer.Option("template,window", help="For sessions files: template (paper's rule), window."),
    limit: int = typer.Option(None, help="First N items per file (sessions: a stratified sample)."),
    batch_size: int = typer.Option(8),
    max_new_tokens: int = typer.Option(96),
    label: str = typer.Option("model", help="Name of the model under test in the report."),
    decision: DecisionOpt = "auto",
    rank_threshold: float = typer.Option(None, help="Override the rank decision's calibrated threshold (nats)."),
    base_url: BaseUrlOpt = None,
) -> None:
    """Precision, recall, F1, confusion matrix, format-valid and consistency rates, latency."""
    from rationanomaly.training.evaluate import EvalRequest, SessionMode, run_evaluation, write_report

    request = EvalRequest(
        data=tuple(data), model=model or "default", adapter=adapter_value(adapter), baselines=_splits(baselines),
        session_mode=tuple(SessionMode(m) for m in _splits(session_mode)),
        limit=limit, batch_size=batch_size, max_new_tokens=max_new_tokens, label=label,
        decision=decision or "auto", rank_threshold=rank_threshold, base_url=base_url,
    )
    result = run_evaluation(request, items_path=report.with_suffix(".items.jsonl"))
    written = write_report(result, report)
    typer.echo(f"precision {result['precision']:.3f} recall {result['recall']:.3f} f1 {result['f1']:.3f}")
    typer.echo("\n".join(str(p) for p in written))



@app.command("combine")
def combine_command(
    reports: list[Path] = typer.Argument(..., help="report.json files from runs on the same data."),
    out: Path = typer.Option(..., help="Combined report.json (.md and .png beside it)."),
) -> None:
    """Merge evaluation reports (model, SFT, baselines) into one table and plot."""
    import orjson

    from rationanomaly.training.evaluate import combine_reports, write_report

    combined = combine_reports([orjson.loads(p.read_bytes()) for p in reports])
    typer.echo("\n".join(str(p) for p in write_report(combined, out)))


@app.command("compare")
def compare_command(
    items_a: Path = typer.Argument(..., help="Items file of system A (the reference, e.g. SFT)."),
    items_b: Path = typer.Argument(..., help="Items file of system B (e.g. SFT+GRPO), same eval files."),
    system_a: str = typer.Option(None, help="System in A's file, when it holds several."),
    system_b: str = typer.Option(None, help="System in B's file, when it holds several."),
    rounds: int = typer.Option(5000, help="Paired bootstrap resamples."),
    seed: int = typer.Option(0),
    out: Path = typer.Option(None, help="Append the Markdown table to this file."),
) -> None:
    """Paired significance of B against A on the same items: bootstrap interval of ΔF1, McNemar."""
    from rationanomaly.training.compare import compare, markdown, read_items

    try:
        a, b = read_items(items_a, system_a), read_items(items_b, system_b)
        rows = compare(a, b, rounds, seed)
    except (ValueError, KeyError) as exc:
        raise typer.BadParameter(str(exc)) from exc
    table = markdown(rows, system_a or items_a.stem, system_b or items_b.stem)
    typer.echo(table)
    if out is not None:
        with out.open("a", encoding="utf-8") as f:
            f.write(table + "\n")


@app.command("cv")
def cv_command(
    out: Path = typer.Option(Path("training/results/cv"), help="Folder for cv_folds.jsonl (resumed) and the summary."),
    protocols: str = typer.Option("templates,adapter,hdfs", help="Comma list: templates, adapter, hdfs."),
    folds: int = typer.Option(5),
    seeds: str = typer.Option("0", help="Comma list of fold seeds (repeated CV)."),
    budget_min: float = typer.Option(30.0, help="No fold starts after this many minutes; rerun to resume."),
    adapter_items: Path = typer.Option(None, help="Eval items file with the adapter's rank scores on dev."),
    ship_to: Path = typer.Option(None, help="Adapter folder to write retrieval.json and hdfs_sessions.json into."),
) -> None:
    """k-fold CV over train+dev, every choice made inside the folds (training/cv.py)."""
    from rationanomaly.training.cv import cv_main

    try:
        paths = cv_main(out, _splits(protocols), folds, [int(s) for s in _splits(seeds)], budget_min, adapter_items, ship_to)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo("\n".join(str(p) for p in paths))


if __name__ == "__main__":
    app()

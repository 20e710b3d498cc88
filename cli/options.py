"""Options that more than one command takes, declared once: how to choose the model (`run`,
`replay` and `eval` say it with the same words) and what shapes a detector's run (`run`, `replay`).

`detector_options` adds the detector's shared options to a command and hands them to it as one
`DetectorFlags`; typer reads the command's signature, so the options appear in its --help as if
written out there.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

# Choosing a model: the same three words everywhere.
MODEL_HELP = "Base model: 'default', a hub id or a path; with --base-url, the served model's name ('default' asks the server)"
ADAPTER_HELP = "LoRA adapter: 'default' (the shipped one), a directory, or 'none'"
DECISION_HELP = ("auto (rank when a calibrated threshold is known and the backend can score, for every backend), "
                 "generate or rank")
BASE_URL_HELP = "OpenAI-compatible server, e.g. http://vllm:8000/v1"

ModelOpt = Annotated[Optional[str], typer.Option("--model", help=MODEL_HELP)]
AdapterOpt = Annotated[Optional[str], typer.Option("--adapter", help=ADAPTER_HELP)]
DecisionOpt = Annotated[Optional[str], typer.Option("--decision", help=DECISION_HELP)]
BaseUrlOpt = Annotated[Optional[str], typer.Option("--base-url", help=BASE_URL_HELP)]


def adapter_value(value: str | None) -> str | None:
    """The --adapter flag as settings read it: 'none' is no adapter.

    >>> adapter_value("none") is None, adapter_value("default"), adapter_value(None) is None
    (True, 'default', True)
    """
    return None if value is None or value == "none" else value


@dataclass(frozen=True)
class DetectorFlags:
    """The options `run` and `replay` share, as given (None: not on the command line)."""

    config: Optional[Path] = None
    profile: Optional[str] = None
    mode: Optional[str] = None
    window: Optional[str] = None
    output_format: Optional[str] = None
    backend: Optional[str] = None
    model: Optional[str] = None
    adapter: Optional[str] = None
    base_url: Optional[str] = None
    decision: Optional[str] = None
    publish: Optional[str] = None
    publish_unknown: Optional[bool] = None
    retrieval: Optional[bool] = None
    session_rules: Optional[bool] = None

    def settings_overrides(self) -> dict[str, Any]:
        """Dotted settings keys for the flags that shape judging and output."""
        return {
            "profile.name": self.profile,
            "judging.mode": self.mode,
            "windows.kind": self.window,
            "output.format": self.output_format,
            "backend.kind": self.backend,
            "backend.model": self.model,
            # 'none' goes through as a word: None here would mean "not given" and keep a config file's adapter.
            "backend.adapter": self.adapter,
            "backend.base_url": self.base_url,
            "backend.decision": self.decision,
            "output.publish": self.publish,
            "output.publish_unknown": self.publish_unknown,
            "backend.retrieval.enabled": self.retrieval,
            "backend.sessions.enabled": self.session_rules,
        }


_DETECTOR_OPTIONS: dict[str, Any] = {
    "config": Annotated[Optional[Path], typer.Option("--config", "-c", help="YAML settings file (sections as in DetectorSettings)")],
    "profile": Annotated[Optional[str], typer.Option(help="Log format profile (hdfs, bgl, thunderbird, openssh, linux, ...)")],
    "mode": Annotated[Optional[str], typer.Option(help="Judging mode: template (default) or window")],
    "window": Annotated[Optional[str], typer.Option("--window", help="Window kind: session, count or time")],
    "output_format": Annotated[Optional[str], typer.Option("--output-format", help="native, ecs or ocsf")],
    "backend": Annotated[Optional[str], typer.Option("--backend", help="transformers, openai or vllm")],
    "model": ModelOpt,
    "adapter": AdapterOpt,
    "base_url": BaseUrlOpt,
    "decision": DecisionOpt,
    "publish": Annotated[Optional[str], typer.Option("--publish", help="all, or abnormal: only alerts on the output")],
    "publish_unknown": Annotated[
        Optional[bool], typer.Option("--publish-unknown/--no-publish-unknown", help="Publish windows the model could not judge")
    ],
    "retrieval": Annotated[
        Optional[bool], typer.Option("--retrieval/--no-retrieval",
                                     help="Rank with the memory of reviewed templates (default: on where it holds the dataset)")
    ],
    "session_rules": Annotated[
        Optional[bool], typer.Option("--session-rules/--no-session-rules",
                                     help="Label session windows by the learned session rules (HDFS; window mode)")
    ],
}
assert set(_DETECTOR_OPTIONS) == {f.name for f in fields(DetectorFlags)}


def detector_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` the shared detector options; it receives them as `flags: DetectorFlags`."""
    signature = inspect.signature(command)
    hints = typing.get_type_hints(command, include_extras=True)  # the command's module resolves its own names
    own = [p.replace(annotation=hints.get(name, p.annotation))
           for name, p in signature.parameters.items() if name != "flags"]
    # Keyword-only, after the command's own: typer keeps their order in --help.
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
              for name, annotation in _DETECTOR_OPTIONS.items()]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flags = DetectorFlags(**{name: kwargs.pop(name, None) for name in _DETECTOR_OPTIONS})
        return command(*args, flags=flags, **kwargs)

    del wrapper.__wrapped__  # typer must read the signature below, not the command's
    wrapper.__signature__ = signature.replace(parameters=own + shared)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**{p.name: p.annotation for p in own}, **_DETECTOR_OPTIONS}
    return wrapper

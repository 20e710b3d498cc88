"""What every backend promises: one Generation per conversation, in order, never an exception
for a single bad request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

Conversation = list[dict[str, str]]


class BackendError(RuntimeError):
    """A backend cannot be built or used at all (missing package, unloadable model).

    Per-request failures never raise: they go into `Generation.error`.
    """


@dataclass(frozen=True, slots=True)
class Generation:
    text: str | None
    latency_s: float
    error: str | None = None
    completion_tokens: int | None = None  # when the backend knows it; for throughput figures
    confidence: float | None = None  # probability of the text's answer, when the decision yields one (rank)
    # The server could not be reached, timed out, or said "later" (408, 429, 5xx): the model is
    # away, which says nothing about this input; a wrong or unparseable answer is not this.
    unavailable: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.text is not None


@runtime_checkable
class Backend(Protocol):
    model_id: str

    def generate(self, conversations: Sequence[Conversation]) -> list[Generation]: ...

    def close(self) -> None: ...

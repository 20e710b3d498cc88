"""OpenAI-compatible chat backend (vLLM's server, llama.cpp's, or any other) over plain httpx.

It also scores completions, for the rank decision, where the server echoes prompt log-probs on
`/v1/completions` (`backends.echo`).

The server batches continuously, so the client's job is concurrency: up to
`settings.concurrency` requests in flight from a thread pool, one connection each. httpx is
used rather than the `openai` client because every failure has to land in
`Generation.error`, and httpx's exceptions map one-to-one onto our retry rules.
The `structured_outputs` body field is what `extra_body={"structured_outputs": …}` puts on
the wire with the `openai` client.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import structlog

from rationanomaly.model.backends import echo
from rationanomaly.model.backends.base import BackendError, Conversation, Generation
from rationanomaly.model.parser import OUTPUT_REGEX, output_gbnf
from rationanomaly.model.settings import DEFAULT, BackendSettings

log = structlog.get_logger(__name__)

# A pattern no model writes by itself when asked to say hello: matching it proves the server
# applied the constraint rather than silently dropping the field (as vLLM does for `guided_*`).
PROBE_REGEX = r"ZQ-[0-9]{4}"
_PROBE_MESSAGES: Conversation = [{"role": "user", "content": "Reply with one word: hello."}]
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ProbeResult:
    reachable: bool
    constraint_honoured: bool
    detail: str


@dataclass(frozen=True, slots=True)
class _Reply:
    data: dict[str, Any] | None
    error: str | None
    status: int | None = None


class OpenAIBackend:
    """`Backend` over `/v1/chat/completions`."""

    def __init__(
        self,
        settings: BackendSettings,
        *,
        probe: bool = True,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if settings.base_url is None:
            raise BackendError("OpenAIBackend needs settings.base_url, e.g. http://127.0.0.1:8000/v1")
        self._settings = settings
        self._structured = settings.structured_outputs
        self._client = httpx.Client(
            base_url=settings.base_url + "/",
            timeout=httpx.Timeout(settings.timeout_s),
            limits=httpx.Limits(
                max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency
            ),
            headers={
                "Authorization": f"Bearer {settings.api_key.get_secret_value()}",
                "Content-Type": "application/json",
            },
            transport=transport,
        )
        self._pool = ThreadPoolExecutor(
            max_workers=settings.concurrency, thread_name_prefix="openai-backend"
        )
        self._model_resolved = settings.model != DEFAULT
        self.model_id: str = settings.model
        self._resolve_model_id()
        self.probe_result: ProbeResult | None = None
        self._tokenizer: Any = None  # loaded on the first score(): generation never needs it
        self._pending_check: tuple[Conversation, str] | None = None  # a scoring check the server missed
        if probe and settings.structured_outputs:
            self.probe_result = self.probe()

    @property
    def structured_outputs_sent(self) -> bool:
        """Whether requests carry the constraint (off after a server rejected the field)."""
        return self._structured

    def generate(self, conversations: Sequence[Conversation]) -> list[Generation]:
        if not self._model_resolved:
            self._resolve_model_id()
        try:
            futures = [self._pool.submit(self._generate_one, conv) for conv in conversations]
        except RuntimeError as error:  # the pool was shut down by close()
            raise BackendError(f"backend is closed: {error}") from error
        return [future.result() for future in futures]

    def score(self, conversations: Sequence[Conversation], completions: Sequence[str]) -> list[float]:
        """Teacher-forced log-likelihood (nats) of each completion after its conversation, from
        the server's echoed prompt log-probs (`backends.echo`); NaN for a pair whose request
        failed, so one slow request costs one verdict, not the batch."""
        if self._pending_check is not None:
            self.check_scoring(*self._pending_check)  # raises if the server, now up, cannot score
        if not self._model_resolved:
            self._resolve_model_id()
        tokenizer = self.tokenizer
        prompts = [echo.scoring_prompt(tokenizer, c, text) for c, text in zip(conversations, completions, strict=True)]
        ids = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in completions]
        try:
            futures = [self._pool.submit(self._score_one, prompt, text, text_ids)
                       for prompt, text, text_ids in zip(prompts, completions, ids, strict=True)]
        except RuntimeError as error:
            raise BackendError(f"backend is closed: {error}") from error
        return [future.result() for future in futures]

    def check_scoring(self, conversation: Conversation, completion: str) -> bool:
        """The rank decision's start-up check, one request: raise BackendError unless the server
        returns echoed log-probs that line up with its tokens. A server that does not answer (down,
        still loading, 5xx) is no refusal: False, and the check runs again before the first
        score, so a detector can start before its server."""
        if not self._model_resolved:
            self._resolve_model_id()
        tokenizer = self.tokenizer
        reply = self._post(echo.echo_body(self.model_id, echo.scoring_prompt(tokenizer, conversation, completion)),
                           "completions")
        if reply.data is None and (reply.status is None or reply.status in _RETRYABLE_STATUS):
            self._pending_check = (conversation, completion)
            log.warning("server not reachable for the scoring check; it runs again before the first score",
                        base_url=self._settings.base_url, error=reply.error)
            return False
        self._pending_check = None
        if reply.data is None:
            raise BackendError(f"the rank decision needs /v1/completions with echoed log-probs: {reply.error}")
        try:
            echo.check_aligned(reply.data, completion, tokenizer(completion, add_special_tokens=False)["input_ids"])
        except echo.EchoError as error:
            raise BackendError(f"the rank decision cannot use this server: {error}") from None
        log.info("server scores completions", model=self.model_id, base_url=self._settings.base_url)
        return True

    @property
    def tokenizer(self) -> Any:
        """The served model's tokenizer, whose chat template renders the prompts to score."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from rationanomaly.model.loading import resolve_model

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(resolve_model(self._settings.tokenizer))
            except (OSError, ValueError) as error:
                raise BackendError(f"cannot load tokenizer {self._settings.tokenizer!r} to render prompts "
                                   f"for scoring: {error}") from error
        return self._tokenizer

    def probe(self) -> ProbeResult:
        """Check at start-up whether the server honours `structured_outputs`.

        Two small requests: the first sends OUTPUT_REGEX itself so a server that rejects the
        field or the pattern (HTTP 4xx) is caught and the field is dropped from later
        requests; the second asks for "hello" under PROBE_REGEX and sees what comes back.
        """
        accept = self._post(self._body(_PROBE_MESSAGES, {"regex": OUTPUT_REGEX}, max_tokens=1))
        if accept.data is None:
            if accept.status is not None and 400 <= accept.status < 500:
                self._structured = False
                return self._report(ProbeResult(True, False, f"server rejected structured_outputs: {accept.error}"))
            return self._report(ProbeResult(False, False, f"probe failed: {accept.error}"))
        reply = self._post(self._body(_PROBE_MESSAGES, {"regex": PROBE_REGEX}, max_tokens=12))
        if reply.data is None:
            return self._report(ProbeResult(False, False, f"probe failed: {reply.error}"))
        text, _ = _message_text(reply.data)
        honoured = text is not None and re.fullmatch(PROBE_REGEX, text.strip()) is not None
        detail = "constraint applied" if honoured else f"constraint ignored; got {text!r:.60}"
        return self._report(ProbeResult(True, honoured, detail))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _generate_one(self, conversation: Conversation) -> Generation:
        started = time.perf_counter()
        constraint = {"regex": OUTPUT_REGEX} if self._structured else None
        try:
            reply = self._post(self._body(conversation, constraint, self._settings.max_new_tokens))
            if reply.data is None:
                log.warning("generation failed", model=self.model_id, error=reply.error)
                away = reply.status is None or reply.status in _RETRYABLE_STATUS
                return Generation(None, time.perf_counter() - started, error=reply.error, unavailable=away)
            text, tokens = _message_text(reply.data)
            if text is None:
                return Generation(None, time.perf_counter() - started, error="response without message content")
            return Generation(text, time.perf_counter() - started, completion_tokens=tokens)
        except Exception as error:  # the Protocol forbids raising for one request
            log.exception("unexpected error in generation", model=self.model_id)
            return Generation(None, time.perf_counter() - started, error=f"client error: {error!r}")

    def _score_one(self, prompt: str, completion: str, completion_ids: list[int]) -> float:
        try:
            reply = self._post(echo.echo_body(self.model_id, prompt), "completions")
            if reply.data is None:
                log.warning("scoring failed", model=self.model_id, error=reply.error)
                return math.nan
            return echo.completion_logprob(reply.data, completion, completion_ids)
        except echo.EchoError as error:
            log.warning("scoring failed", model=self.model_id, error=str(error))
            return math.nan
        except Exception:  # one pair's failure must not take its batch down
            log.exception("unexpected error in scoring", model=self.model_id)
            return math.nan

    def _body(
        self, messages: Conversation, constraint: dict[str, str] | None, max_tokens: int
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model_id,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": self._settings.temperature,
        }
        if constraint is not None:
            body["structured_outputs"] = constraint
            if self._settings.output_grammar:
                body["grammar"] = output_gbnf(max_tokens)
        return body

    def _post(self, body: dict[str, Any], path: str = "chat/completions") -> _Reply:
        payload = orjson.dumps(body)
        delay_s = self._settings.backoff_s
        failure = _Reply(None, "no attempt made")
        for attempt in range(self._settings.retries + 1):
            if attempt:
                time.sleep(delay_s)
                delay_s *= 2
            try:
                response = self._client.post(path, content=payload)
            except httpx.TimeoutException as error:
                # Not retried here: a slow server gets slower with more load, and the
                # classifier decides whether the item is worth another try.
                return _Reply(None, f"timeout after {self._settings.timeout_s:g}s ({type(error).__name__})")
            except httpx.TransportError as error:
                failure = _Reply(None, f"connection error: {type(error).__name__}: {error}")
                continue
            if response.is_success:
                try:
                    return _Reply(orjson.loads(response.content), None, response.status_code)
                except orjson.JSONDecodeError:
                    return _Reply(None, f"invalid JSON from server: {response.text[:200]!r}", response.status_code)
            failure = _Reply(None, f"http {response.status_code}: {response.text[:200]}", response.status_code)
            if response.status_code not in _RETRYABLE_STATUS:
                return failure
        return failure

    def _resolve_model_id(self) -> None:
        """Ask /v1/models for the served name when settings.model is "default"."""
        if self._model_resolved:
            return
        try:
            response = self._client.get("models")
            response.raise_for_status()
            models = orjson.loads(response.content).get("data") or []
            self.model_id = str(models[0]["id"])
            self._model_resolved = True
            if len(models) > 1:
                log.warning("server serves several models; using the first", model=self.model_id)
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, IndexError, TypeError) as error:
            log.warning("could not resolve the served model name; will retry", error=repr(error))

    def _report(self, result: ProbeResult) -> ProbeResult:
        if result.constraint_honoured:
            log.info("structured outputs honoured", model=self.model_id, base_url=self._settings.base_url)
        else:
            log.warning(
                "structured outputs NOT honoured; every response is still validated by the parser",
                model=self.model_id,
                base_url=self._settings.base_url,
                reachable=result.reachable,
                detail=result.detail,
            )
        return result


def _message_text(data: dict[str, Any]) -> tuple[str | None, int | None]:
    """The assistant text, with a split-out reasoning part put back inside <think>.

    vLLM started with `--reasoning-parser` moves the think block to `reasoning_content`.

    >>> _message_text({"choices": [{"message": {"content": "<answer>normal</answer>",
    ...     "reasoning_content": "fine"}}], "usage": {"completion_tokens": 7}})
    ('<think>fine</think> <answer>normal</answer>', 7)
    """
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        return None, None
    content = message.get("content")
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning and content is not None and "<think>" not in content:
        content = f"<think>{reasoning.strip()}</think> {content.strip()}"
    usage = data.get("usage") or {}
    tokens = usage.get("completion_tokens")
    return content, tokens if isinstance(tokens, int) else None

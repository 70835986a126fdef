"""One client for every model: the official ``openai`` SDK against any OpenAI-compatible endpoint (OpenAI, vLLM,
llama.cpp's server, Ollama, ...), with retries, timeouts, streaming, usage and cost.

- **Retries** are tenacity's (the SDK's own are switched off): exponential backoff with jitter from the
  `RetryPolicy`, on timeouts, connection errors, 429 and 5xx only, waiting at least what a ``Retry-After``
  header asks (up to the policy's ``max_backoff_s``). A 400, 401, 404 or 422 is the caller's mistake and is raised
  at once.
- **Errors** are Orchestra's: `ModelTimeoutError`, `ModelUnavailableError` (connection refused, 5xx after
  retries), `ModelOutputError` (no choices, an empty answer, JSON requested and not returned), `ModelError`
  otherwise; each names the model card and carries ``attempts``, and an answer refused after it came back
  carries what it was billed (``prompt_tokens``, ``completion_tokens``, ``cost_usd``).
- **Cost** comes from the card's prices: ``None`` (never 0) when a price is unknown.
- **API keys** come from ``os.environ[card.api_key_env]``; endpoints with a ``base_url`` that need none get the
  placeholder ``"not-needed"``. Keys are scrubbed from every error message and never appear in a repr.
- **Structured output**: with ``ChatOptions.json_schema`` and a card that ``supports_json_schema``, the schema
  is sent as ``response_format`` for constrained decoding:

  * local (llama.cpp) cards: ``{"type": "json_object", "schema": ...}`` — what llama-cpp-python's server
    turns into a grammar;
  * other cards: OpenAI's ``{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``,
    which vLLM and recent llama.cpp servers also accept.

  Without support nothing is sent and the answer is parsed strictly instead. Either way the text must be one
  JSON value (a ```json fence around it is tolerated), else `ModelOutputError`; when ``jsonschema`` is
  installed the value is also validated against the schema. ``ChatResult.text`` is then the bare JSON text.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import math
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import openai
from pydantic import SecretStr
from tenacity import AsyncRetrying, RetryCallState, Retrying

from orchestra.cards import ModelCard
from orchestra.errors import (
    ModelError,
    ModelOutputError,
    ModelTimeoutError,
    ModelUnavailableError,
    PolicyError,
)
from orchestra.model import ChatChunk, ChatModel, ChatOptions, ChatResult, Message
from orchestra.policies import RetryPolicy, retrying

__all__ = [
    "FallbackChatModel",
    "OpenAIChatModel",
    "extract_json",
    "model_for_card",
    "response_format_for",
]

log = logging.getLogger(__name__)

NO_KEY_PLACEHOLDER = "not-needed"
"""Sent to endpoints that need no key (local servers): the SDK refuses to build a client without one."""

_KEY_LIKE = re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_\-*]{8,}")
"""Secret-key shapes (``sk-...``) scrubbed from server messages even when they are not this client's key."""
_FENCE = re.compile(r"^\s*```(?:json|JSON)?\s*\n?(?P<body>.*?)\n?\s*```\s*$", re.DOTALL)


# -- helpers ------------------------------------------------------------------------------------------------


def extract_json(text: str, *, model_id: str | None = None) -> tuple[Any, str]:
    """The JSON value in ``text`` (bare, or inside one ```json fence) and its bare text; `ModelOutputError`
    when the text is anything else."""
    fenced = _FENCE.match(text)
    body = (fenced.group("body") if fenced else text).strip()
    try:
        return json.loads(body), body
    except json.JSONDecodeError:
        pass
    try:
        # llama-cpp-python's grammar for bounded strings lets raw newlines and tabs through (invalid JSON, but
        # unambiguous): accept them and hand callers the canonical JSON text
        value = json.loads(body, strict=False)
        return value, json.dumps(value, ensure_ascii=False)
    except json.JSONDecodeError as exc:
        preview = text.strip().replace("\n", " ")[:120]
        raise ModelOutputError(
            f"model {model_id!r} was asked for JSON but answered text that is not JSON ({exc.msg} at char "
            f"{exc.pos}): {preview!r}",
            model_id=model_id,
        ) from None


def _validate_schema(value: Any, schema: dict[str, Any], model_id: str) -> None:
    try:
        import jsonschema
    except ImportError:  # optional: callers validate with their own pydantic models anyway
        return
    try:
        jsonschema.validate(value, schema)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(part) for part in exc.absolute_path) or "(root)"
        raise ModelOutputError(
            f"model {model_id!r} returned JSON that does not fit the schema at {where}: {exc.message[:200]}",
            model_id=model_id,
        ) from None
    except jsonschema.SchemaError as exc:
        raise PolicyError(f"ChatOptions.json_schema is not a valid JSON schema: {exc.message[:200]}") from None


def response_format_for(card: ModelCard, schema: dict[str, Any]) -> dict[str, Any] | None:
    """The ``response_format`` that asks ``card``'s server for constrained decoding, or ``None`` when the
    server does not support it (the answer is then parsed strictly)."""
    if not card.supports_json_schema:
        return None
    if card.local:
        # llama-cpp-python's server compiles this schema into a GBNF grammar
        return {"type": "json_object", "schema": schema}
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "answer"))[:64]
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def _transport_error_types() -> tuple[type[BaseException], ...]:
    """Connection-level errors of the HTTP library the SDK uses (``httpx``, or ``httpx2`` in openai 3.x): raised
    as they are, not wrapped, when a stream breaks after it started."""
    types: list[type[BaseException]] = []
    for name in ("httpx", "httpx2"):
        try:
            module = __import__(name)
        except ImportError:
            continue
        error = getattr(module, "TransportError", None)
        if isinstance(error, type):
            types.append(error)
    return tuple(types)


_TRANSPORT_ERRORS = _transport_error_types()


def _retryable(exc: BaseException) -> bool:
    """Transient failures only: timeouts, refused or dropped connections, 429 and 5xx."""
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code == 429 or exc.status_code >= 500
    return False


def _retry_after(exc: BaseException) -> float | None:
    """The seconds a 429 or 503 asks the client to wait (``retry-after-ms``, or ``Retry-After`` in seconds or as an
    HTTP date), or ``None``: retrying sooner only meets the same refusal."""
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    try:
        if (milliseconds := headers.get("retry-after-ms")) is not None:
            return max(0.0, float(milliseconds) / 1000)
        if (given := headers.get("retry-after")) is None:
            return None
        try:
            return max(0.0, float(given))
        except ValueError:
            return max(0.0, (email.utils.parsedate_to_datetime(given) - datetime.now(UTC)).total_seconds())
    except (ValueError, TypeError):  # a header no one can read: the policy's backoff alone
        return None


def _estimate_tokens(text: str) -> int:
    # about four characters per token for English BPE vocabularies; used only when a server reports no usage
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _estimate_prompt(messages: list[Message]) -> int:
    return sum(_estimate_tokens(message.content) + 4 for message in messages)  # +4: role and separators


class _Attempts:
    """Counts tenacity's attempts for the result and for errors."""

    def __init__(self) -> None:
        self.count = 0

    def before(self, state: RetryCallState) -> None:
        self.count = state.attempt_number


# -- the client ---------------------------------------------------------------------------------------------


class OpenAIChatModel:
    """A `ChatModel` for one model card, through the official ``openai`` SDK (one reused client per card).

    ``api_key`` overrides the card's ``api_key_env``; it is kept private and never shown."""

    def __init__(self, card: ModelCard, retry: RetryPolicy = RetryPolicy(), *, api_key: str | None = None) -> None:
        self.card = card
        self.retry = retry
        self.id = card.id
        key = api_key if api_key is not None else self._key_from_environment(card)
        # SecretStr: the key shows as '**********' in any repr, vars() or debugger view of this object
        self.__key = SecretStr(key) if key is not None else None
        self._sync_client: openai.OpenAI | None = None
        self._async_client: openai.AsyncOpenAI | None = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"OpenAIChatModel(id={self.id!r}, model={self.card.model!r}, base_url={self.card.base_url!r})"

    @staticmethod
    def _key_from_environment(card: ModelCard) -> str | None:
        if card.api_key_env and os.environ.get(card.api_key_env):
            return os.environ[card.api_key_env]
        if card.base_url is not None:
            return NO_KEY_PLACEHOLDER
        return None  # the OpenAI API without a key: refused at call time with a message naming the variable

    # -- clients, built lazily and reused ---------------------------------------------------------------

    def _require_key(self) -> str:
        if self.__key is None:
            variable = self.card.api_key_env or "OPENAI_API_KEY"
            raise ModelError(
                f"model {self.id!r} needs an API key: set the environment variable {variable} "
                f"(field 'api_key_env' of the model card names it)",
                model_id=self.id,
            )
        return self.__key.get_secret_value()

    @property
    def client(self) -> openai.OpenAI:
        if self._sync_client is None:
            self._sync_client = openai.OpenAI(
                api_key=self._require_key(), base_url=self.card.base_url, max_retries=0, timeout=self.retry.timeout_s
            )
        return self._sync_client

    @property
    def async_client(self) -> openai.AsyncOpenAI:
        """The async client of the running event loop: httpx's async connections belong to the loop that
        opened them, and sync callers may run each call in a fresh loop (``asyncio.run``)."""
        loop = asyncio.get_running_loop()
        if self._async_client is None or self._async_loop is not loop:
            self._async_client = openai.AsyncOpenAI(
                api_key=self._require_key(), base_url=self.card.base_url, max_retries=0, timeout=self.retry.timeout_s
            )
            self._async_loop = loop
        return self._async_client

    def close(self) -> None:
        """Close the HTTP connections of the sync client (the async one closes with its event loop)."""
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None

    # -- requests and results -----------------------------------------------------------------------------

    def _request(self, messages: list[Message], options: ChatOptions) -> dict[str, Any]:
        request: dict[str, Any] = {
            "model": self.card.model,
            "messages": [{"role": message.role, "content": message.content} for message in messages],
            "temperature": options.temperature,
            "timeout": options.timeout_s or self.retry.timeout_s,
        }
        if options.max_tokens is not None:
            request["max_tokens"] = options.max_tokens
        if options.stop:
            request["stop"] = list(options.stop)
        if options.seed is not None:
            request["seed"] = options.seed
        if options.json_schema is not None:
            response_format = response_format_for(self.card, options.json_schema)
            if response_format is not None:
                request["response_format"] = response_format
        return request

    def _finish(
        self,
        text: str | None,
        options: ChatOptions,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        started: float,
        attempts: int,
        finish_reason: str | None,
    ) -> ChatResult:
        try:
            text = self._checked_text(text, options, finish_reason)
        except ModelError as exc:
            # the answer came back and was paid for before it was refused: the error carries what it cost
            raise self._tag(self._billed(exc, prompt_tokens, completion_tokens), attempts) from None
        return ChatResult(
            text=text,
            model_id=self.id,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cost_usd=self.card.cost_usd(prompt_tokens, completion_tokens),
            latency_ms=(time.perf_counter() - started) * 1000,
            attempts=attempts,
            finish_reason=finish_reason,
        )

    def _checked_text(self, text: str | None, options: ChatOptions, finish_reason: str | None) -> str:
        """The answer's text as the caller gets it; `ModelOutputError` when it is empty or not in the form asked."""
        if text is None or not text.strip():
            raise ModelOutputError(
                f"model {self.id!r} returned an empty answer (finish_reason={finish_reason!r})", model_id=self.id
            )
        if options.json_schema is not None and options.check_schema:
            if finish_reason == "length":
                raise ModelOutputError(
                    f"model {self.id!r} was cut off at max_tokens={options.max_tokens} before its JSON was "
                    "complete; bound the schema's strings (maxLength) and raise max_tokens above that bound",
                    model_id=self.id,
                )
            value, text = extract_json(text, model_id=self.id)
            _validate_schema(value, options.json_schema, self.id)
        return text

    def _from_completion(
        self, completion: Any, messages: list[Message], options: ChatOptions, started: float, attempts: int
    ) -> ChatResult:
        usage = getattr(completion, "usage", None)
        prompt_tokens = getattr(usage, "prompt_tokens", None) if usage is not None else None
        completion_tokens = getattr(usage, "completion_tokens", None) if usage is not None else None
        choices = getattr(completion, "choices", None)
        if not choices:
            error = ModelOutputError(f"model {self.id!r} returned no choices", model_id=self.id)
            raise self._tag(self._billed(error, prompt_tokens or 0, completion_tokens or 0), attempts)
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None) if message is not None else None
        return self._finish(
            text,
            options,
            prompt_tokens=prompt_tokens if prompt_tokens is not None else _estimate_prompt(messages),
            completion_tokens=completion_tokens if completion_tokens is not None else _estimate_tokens(text or ""),
            started=started,
            attempts=attempts,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    # -- errors -------------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        key = self.__key.get_secret_value() if self.__key is not None else None
        if key and key != NO_KEY_PLACEHOLDER:
            text = text.replace(key, "***")
            if len(key) > 8:  # servers echo keys partly masked ("sk-abc***wxyz"): hide the visible ends too
                text = text.replace(key[:6], "***").replace(key[-4:], "***")
        return _KEY_LIKE.sub("***", text)

    @staticmethod
    def _tag(error: ModelError, attempts: int) -> ModelError:
        error.attempts = attempts  # type: ignore[attr-defined]
        return error

    def _billed(self, error: ModelError, prompt_tokens: int, completion_tokens: int) -> ModelError:
        """``error`` carrying what its call was billed, priced as a `ChatResult` is."""
        error.prompt_tokens, error.completion_tokens = prompt_tokens, completion_tokens
        if prompt_tokens or completion_tokens:
            error.cost_usd = self.card.cost_usd(prompt_tokens, completion_tokens)
        return error

    def _map_error(self, exc: BaseException, attempts: int, timeout_s: float) -> ModelError:
        where = f"model {self.id!r}" + (f" at {self.card.base_url}" if self.card.base_url else "")
        tries = f"after {attempts} attempt{'s' if attempts != 1 else ''}"
        error: ModelError
        if isinstance(exc, ModelError):
            error = exc
        elif isinstance(exc, openai.APITimeoutError):
            error = ModelTimeoutError(f"{where} timed out (timeout {timeout_s:g} s) {tries}", model_id=self.id)
        elif isinstance(exc, (openai.APIConnectionError, *_TRANSPORT_ERRORS)):
            cause = exc if not isinstance(exc, openai.APIConnectionError) else exc.__cause__ or exc.__context__
            detail = f": {type(cause).__name__}: {cause}" if cause else ""
            error = ModelUnavailableError(f"{where} cannot be reached {tries}{self._scrub(detail)}", model_id=self.id)
        elif isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            message = self._scrub(_status_message(exc))
            if status == 429 or status >= 500:
                error = ModelUnavailableError(f"{where} answered HTTP {status} {tries}: {message}", model_id=self.id)
            elif status in (401, 403):
                variable = self.card.api_key_env or "(none: set field 'api_key_env')"
                error = ModelError(
                    f"{where} refused the API key (HTTP {status}); check the variable {variable}: {message}",
                    model_id=self.id,
                )
            else:
                error = ModelError(f"{where} refused the request (HTTP {status}): {message}", model_id=self.id)
        else:
            error = ModelError(f"{where} failed: {type(exc).__name__}: {self._scrub(str(exc))[:300]}", model_id=self.id)
        return self._tag(error, attempts)

    # -- retrying -----------------------------------------------------------------------------------------

    def _retry_kwargs(self, attempts: _Attempts) -> dict[str, Any]:
        return retrying(self.retry, _retryable, _retry_after) | {"before": attempts.before, "before_sleep": self._log_retry}

    def _log_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.info("model %s: attempt %d failed (%s); retrying", self.id, state.attempt_number, type(exc).__name__)

    def _with_retries(self, call: Callable[[], Any], timeout_s: float) -> tuple[Any, int]:
        attempts = _Attempts()
        try:
            for attempt in Retrying(**self._retry_kwargs(attempts)):
                with attempt:
                    value = call()
            return value, attempts.count
        except ModelError:
            raise
        except Exception as exc:
            raise self._map_error(exc, attempts.count, timeout_s) from None

    async def _with_retries_async(self, call: Callable[[], Any], timeout_s: float) -> tuple[Any, int]:
        attempts = _Attempts()
        try:
            async for attempt in AsyncRetrying(**self._retry_kwargs(attempts)):
                with attempt:
                    value = await call()
            return value, attempts.count
        except ModelError:
            raise
        except Exception as exc:
            raise self._map_error(exc, attempts.count, timeout_s) from None

    # -- the ChatModel protocol ---------------------------------------------------------------------------

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        """One chat call, retried on transient failures; raises a `ModelError` subclass on failure."""
        options = options or ChatOptions()
        request = self._request(messages, options)
        started = time.perf_counter()
        completion, attempts = self._with_retries(
            lambda: self.client.chat.completions.create(**request), request["timeout"]
        )
        return self._from_completion(completion, messages, options, started, attempts)

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        """The async twin of `chat`."""
        options = options or ChatOptions()
        request = self._request(messages, options)
        started = time.perf_counter()
        completion, attempts = await self._with_retries_async(
            lambda: self.async_client.chat.completions.create(**request), request["timeout"]
        )
        return self._from_completion(completion, messages, options, started, attempts)

    def stream(self, messages: list[Message], options: ChatOptions | None = None) -> Iterator[ChatChunk]:
        """The answer piece by piece; the last chunk carries the whole `ChatResult` with usage and cost.

        Opening the stream is retried like a call; once text has been yielded a failure is raised as is."""
        options = options or ChatOptions()
        request = self._request(messages, options) | {"stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        stream, attempts = self._with_retries(
            lambda: self.client.chat.completions.create(**request), request["timeout"]
        )
        collector = _StreamCollector()
        try:
            with stream:
                for chunk in stream:
                    delta = collector.add(chunk)
                    if delta:
                        yield ChatChunk(delta=delta)
        except ModelError:
            raise
        except Exception as exc:
            raise self._map_error(exc, attempts, request["timeout"]) from None
        yield ChatChunk(delta="", result=self._from_stream(collector, messages, options, started, attempts))

    async def astream(self, messages: list[Message], options: ChatOptions | None = None) -> AsyncIterator[ChatChunk]:
        """The async twin of `stream`."""
        options = options or ChatOptions()
        request = self._request(messages, options) | {"stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        stream, attempts = await self._with_retries_async(
            lambda: self.async_client.chat.completions.create(**request), request["timeout"]
        )
        collector = _StreamCollector()
        try:
            async with stream:
                async for chunk in stream:
                    delta = collector.add(chunk)
                    if delta:
                        yield ChatChunk(delta=delta)
        except ModelError:
            raise
        except Exception as exc:
            raise self._map_error(exc, attempts, request["timeout"]) from None
        yield ChatChunk(delta="", result=self._from_stream(collector, messages, options, started, attempts))

    def _from_stream(
        self, collector: _StreamCollector, messages: list[Message], options: ChatOptions, started: float, attempts: int
    ) -> ChatResult:
        if collector.chunks == 0:
            message = f"model {self.id!r} streamed nothing"
            window, prompt = self.card.context_window, _estimate_prompt(messages)
            if window is not None and prompt + (options.max_tokens or 0) >= window:
                # llama.cpp's server ends a stream silently when the prompt does not fit: say the likely cause
                message += f"; the prompt (about {prompt} tokens) likely exceeds its context window of {window} tokens"
            raise self._tag(ModelOutputError(message, model_id=self.id), attempts)
        if collector.finish_reason is None:
            # every server sends a finish_reason on its last chunk (llama.cpp and vLLM as OpenAI do): a stream that
            # ends without one was cut (the server closed the connection mid-answer), so it is a dropped connection,
            # not a shorter answer
            raise self._tag(
                ModelUnavailableError(
                    f"model {self.id!r}: the stream ended before the model finished (no finish_reason after "
                    f"{collector.deltas} streamed pieces); the server closed the connection mid-answer",
                    model_id=self.id,
                ),
                attempts,
            )
        text = "".join(collector.parts)
        # servers that ignore stream_options report no usage: count instead (one streamed delta is one token
        # on llama.cpp and vLLM; prompts are estimated from their length)
        prompt_tokens = collector.prompt_tokens
        if prompt_tokens is None:
            prompt_tokens = _estimate_prompt(messages)
        completion_tokens = collector.completion_tokens
        if completion_tokens is None:
            completion_tokens = collector.deltas
        return self._finish(
            text,
            options,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            started=started,
            attempts=attempts,
            finish_reason=collector.finish_reason,
        )


def _status_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            return str(inner["message"])[:300]
        if isinstance(inner, str):
            return inner[:300]
        if body.get("detail"):
            return str(body["detail"])[:300]
    return str(getattr(exc, "message", exc))[:300]


class _StreamCollector:
    """Accumulates streamed chunks: the text, the finish reason and the usage when the server sends it."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.chunks = 0
        self.deltas = 0
        self.finish_reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None

    def add(self, chunk: Any) -> str:
        self.chunks += 1
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.prompt_tokens = getattr(usage, "prompt_tokens", None)
            self.completion_tokens = getattr(usage, "completion_tokens", None)
        delta_text = ""
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None) if delta is not None else None
            if content:
                delta_text += content
                self.deltas += 1
            if getattr(choice, "finish_reason", None):
                self.finish_reason = choice.finish_reason
        if delta_text:
            self.parts.append(delta_text)
        return delta_text


# -- fallbacks ----------------------------------------------------------------------------------------------


class FallbackChatModel:
    """Models tried in order: the next one answers when a model still fails (any `ModelError`) after its own
    retries. The result's ``model_id`` names the model that answered and ``attempts`` adds up every try."""

    def __init__(self, models: list[ChatModel]) -> None:
        if not models:
            raise PolicyError("FallbackChatModel.models: at least one model is needed (got an empty list)")
        self.models = list(models)
        self.id = self.models[0].id

    def __repr__(self) -> str:
        return f"FallbackChatModel({[model.id for model in self.models]!r})"

    def _give_up(self, failures: list[ModelError], attempts: int) -> ModelError:
        last = failures[-1]
        summary = "; ".join(f"{error.model_id}: {error}" for error in failures)
        # every answer that came back was paid for, whichever model gave it: the cost is unknown when one price is
        billed = [failure for failure in failures if failure.prompt_tokens or failure.completion_tokens]
        costs = [failure.cost_usd for failure in billed if failure.cost_usd is not None]
        error = type(last)(
            f"every model failed ({len(failures)} tried): {summary}",
            model_id=last.model_id,
            prompt_tokens=sum(failure.prompt_tokens for failure in billed),
            completion_tokens=sum(failure.completion_tokens for failure in billed),
            cost_usd=sum(costs) if billed and len(costs) == len(billed) else None,
        )
        error.attempts = attempts  # type: ignore[attr-defined]
        return error

    def chat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        failures: list[ModelError] = []
        attempts = 0
        for model in self.models:
            try:
                result = model.chat(messages, options)
            except ModelError as exc:
                failures.append(exc)
                attempts += getattr(exc, "attempts", 1)
                log.info("fallback: %s failed (%s); trying the next model", model.id, exc.code)
                continue
            return result.model_copy(update={"attempts": attempts + result.attempts})
        raise self._give_up(failures, attempts)

    async def achat(self, messages: list[Message], options: ChatOptions | None = None) -> ChatResult:
        failures: list[ModelError] = []
        attempts = 0
        for model in self.models:
            try:
                result = await model.achat(messages, options)
            except ModelError as exc:
                failures.append(exc)
                attempts += getattr(exc, "attempts", 1)
                continue
            return result.model_copy(update={"attempts": attempts + result.attempts})
        raise self._give_up(failures, attempts)

    def stream(self, messages: list[Message], options: ChatOptions | None = None) -> Iterator[ChatChunk]:
        """Streams from the first model that starts answering; a model failing mid-answer is not replaced
        (its text has already been shown), and its error is raised."""
        failures: list[ModelError] = []
        attempts = 0
        for model in self.models:
            streamer = getattr(model, "stream", None)
            started = False
            try:
                if streamer is None:
                    result = model.chat(messages, options)
                    yield ChatChunk(delta=result.text)
                    yield ChatChunk(delta="", result=result.model_copy(update={"attempts": attempts + result.attempts}))
                    return
                for chunk in streamer(messages, options):
                    started = True
                    if chunk.result is not None:
                        chunk = chunk.model_copy(
                            update={
                                "result": chunk.result.model_copy(update={"attempts": attempts + chunk.result.attempts})
                            }
                        )
                    yield chunk
                return
            except ModelError as exc:
                if started:
                    raise
                failures.append(exc)
                attempts += getattr(exc, "attempts", 1)
        raise self._give_up(failures, attempts)

    async def astream(self, messages: list[Message], options: ChatOptions | None = None) -> AsyncIterator[ChatChunk]:
        """The async twin of `stream`."""
        failures: list[ModelError] = []
        attempts = 0
        for model in self.models:
            streamer = getattr(model, "astream", None)
            started = False
            try:
                if streamer is None:
                    result = await model.achat(messages, options)
                    yield ChatChunk(delta=result.text)
                    yield ChatChunk(delta="", result=result.model_copy(update={"attempts": attempts + result.attempts}))
                    return
                async for chunk in streamer(messages, options):
                    started = True
                    if chunk.result is not None:
                        chunk = chunk.model_copy(
                            update={
                                "result": chunk.result.model_copy(update={"attempts": attempts + chunk.result.attempts})
                            }
                        )
                    yield chunk
                return
            except ModelError as exc:
                if started:
                    raise
                failures.append(exc)
                attempts += getattr(exc, "attempts", 1)
        raise self._give_up(failures, attempts)


# -- from cards ---------------------------------------------------------------------------------------------


def model_for_card(card: ModelCard, retry: RetryPolicy = RetryPolicy()) -> ChatModel:
    """The `ChatModel` for a card. Local cards get Orchestra's embedded llama.cpp server, started on first use
    and restarted once if it dies during a call."""
    if card.local:
        from orchestra.local import LocalChatModel

        return LocalChatModel(card, retry)
    return OpenAIChatModel(card, retry)

"""Structured LLM answers from any OpenAI-compatible endpoint: validated, retried, budgeted, cached.

:class:`LLMClient` wraps the ``openai`` SDK (``base_url`` may be OpenAI, Azure OpenAI, vLLM,
Ollama or a llama.cpp server) and adds what the agents need around one chat completion:

* **Structured output.** ``response_format`` is a *strict* ``json_schema`` built with
  ``to_strict_json_schema(schema)`` (every field required, ``additionalProperties: false``), the
  same schema ``client.chat.completions.parse()`` sends; ``llm.structured_output = json_object``
  sends ``{"type": "json_object"}`` instead (servers without json_schema support) and puts the
  schema into the system message. The answer is always validated with
  ``schema.model_validate_json``; nothing the model returns is used unvalidated.
* **One retry layer** (tenacity; the SDK's own retries are off): up to ``llm.max_retries``
  retries on 429, 408, 409, 5xx, timeouts, connection failures, and unusable answers (not JSON,
  not the schema, truncated with ``finish_reason == "length"``, no choice). Other statuses (400,
  401, 403, 404, 422, a 429 ``insufficient_quota``) fail at once with an
  :class:`~patchpilot.tools.llm.errors.LLMRequestError` that names the endpoint and the model.
  Waits:
  exponential backoff with jitter from ``backoff`` seconds (capped at ``max_wait``) for
  transient failures; a server's ``Retry-After``/``retry-after-ms`` exactly; an unusable answer
  is retried at once.
* **A total deadline per call** (``llm.deadline`` seconds, default 30) covering the connection,
  every read (a server dripping one byte a second included), every retry and every wait: no
  wait starts that would end past it (a ``Retry-After`` longer than the time left ends the call
  at once), and the network layer (:mod:`patchpilot.tools.llm.transport`) bounds each connect, read
  and
  write by the time left. ``llm.timeout`` stays the limit of each single network operation.
  Past the deadline the call fails with :class:`~patchpilot.tools.llm.errors.LLMUnavailableError`
  (so
  :func:`try_complete` returns an :class:`~patchpilot.tools.llm.models.LLMFallback` saying so).
* **A response size cap** (``llm.max_response_bytes``, default 1 MiB, after decompression),
  enforced while the body is read (a larger ``Content-Length`` is refused before reading it):
  :class:`~patchpilot.tools.llm.errors.LLMOutputError`, not retried.
* **A per-run budget** of requests (``llm.max_calls_per_run``, every attempt counts) and tokens
  (``llm.max_tokens_per_run``, prompt + completion as reported by the endpoint), checked before
  each request: :class:`~patchpilot.tools.llm.errors.LLMBudgetExceeded`. Create one client per run
  and
  share it (it is thread-safe); :attr:`LLMClient.usage` is the run's :class:`LLMUsage`.
* **A response cache** (``llm.cache``): ``<cache_dir>/llm/<sha256>.json`` keyed by the model,
  task, prompt version, messages and the strict schema; written atomically, and re-validated
  when read (an entry that no longer validates is dropped and the endpoint asked again).
  Changing a prompt's ``version`` is what invalidates its cached answers.
* **Reasoning models and older servers.** The token limit goes as ``max_completion_tokens``
  (``max_tokens`` is deprecated, and refused by OpenAI's o-series and gpt-5 models), with
  ``temperature`` (``llm.temperature``) and, when set, ``reasoning_effort``. A 400 that refuses
  ``max_completion_tokens`` (older vLLM and other servers), ``max_tokens`` or ``temperature``
  as unsupported is answered by sending the request once more with ``max_tokens`` /
  ``max_completion_tokens`` / no temperature, and the adjustment is remembered per endpoint and
  model, for the process and in ``<cache_dir>/llm/endpoints.json``
  (:mod:`patchpilot.tools.llm.params`): later calls and processes send the right request at
  once. Any other 400 fails as before; at most one adjustment per parameter per call.
  ``llm.token_limit_param`` and ``llm.temperature: null`` fix the shape instead.
* **Tool calling.** :meth:`LLMClient.complete_with_tools` is one turn of OpenAI tool calling
  (the chat agent's, :mod:`patchpilot.graphs.chat_agent`) under the same deadline, size cap,
  retries, budget and request-shape adaptation; it returns the model's text or its requested
  calls (:class:`ToolTurn`, arguments unparsed) and caches nothing.
* **Gateway headers** (``llm.headers``): sent on every chat and embedding request, with
  ``${ENV:NAME}`` replaced from the environment when the client is made (never logged).

No LLM configured (``llm.base_url`` unset) means no client: :func:`make_client` returns ``None``
and every agent runs its deterministic core. Agents call :func:`try_complete`, which never
raises an :class:`~patchpilot.tools.llm.errors.LLMError` but returns an
:class:`~patchpilot.tools.llm.models.LLMFallback` so the run report can say the LLM was not used
and why::

    from patchpilot.prompts import as_json, fence, load_prompt
    from patchpilot.tools.llm import LLMFallback, make_client, try_complete

    client = make_client(settings.llm, cache_dir=settings.cache_dir, run_id=run_id)
    prompt = load_prompt("intake")
    answer = try_complete(
        client, prompt.name, prompt.version, prompt.messages(request=fence("request", text)),
        IntakeAnswer,
    )
    if isinstance(answer, LLMFallback):
        plan = deterministic_plan(...)          # and report answer.reason
    else:
        plan = checked_against_inventory(answer.value)  # validate before use, run nothing
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict, TypeVar, Unpack, cast
from urllib.parse import urlsplit, urlunsplit

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
)

if TYPE_CHECKING:  # the SDK is imported where a call needs it (~0.4 s; none without an LLM)
    import openai
    from openai.types.chat import ChatCompletionMessage, ChatCompletionMessageParam
    from openai.types.chat.completion_create_params import ResponseFormat

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import utcnow
from patchpilot.core.resources import ClosingContext
from patchpilot.core.settings import LLMSettings
from patchpilot.tools.llm.errors import (
    LLMBudgetExceeded,
    LLMConfigError,
    LLMError,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailableError,
)
from patchpilot.tools.llm.models import LLMFallback, LLMResult, LLMUsage, TokenUsage
from patchpilot.tools.llm.params import (
    PARAMS_FILE,
    ParamMemory,
    RequestShape,
    TokenParam,
    rejected_parameter,
)
from patchpilot.tools.llm.transport import ResponseRefused, deadline_scope, make_http_client

__all__ = [
    "DEFAULT_MAX_WAIT",
    "CallOptions",
    "LLMClient",
    "RequestedToolCall",
    "ToolTurn",
    "make_client",
    "try_complete",
]

_log = structlog.get_logger(__name__)

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

DEFAULT_MAX_WAIT: Final = 30.0
"""Cap in seconds on any single backoff wait between attempts (a server's ``Retry-After`` is
honoured exactly when it fits within the call's deadline, else the call ends at once)."""

_DEADLINE_SLACK: Final = 0.05
"""A network timeout this close to the deadline is the deadline's doing."""

NO_KEY_PLACEHOLDER: Final = "not-needed"
"""Sent as the API key when its variable is unset (the SDK insists on one; local servers
ignore it)."""

_ROLES: Final = frozenset({"system", "developer", "user", "assistant"})
_RETRY_STATUSES: Final = frozenset({408, 409, 429})
_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_DETAIL_MAX: Final = 300
_LIMIT_PARAMS: Final[tuple[TokenParam, ...]] = ("max_completion_tokens", "max_tokens")
"""``llm.token_limit_param`` values that fix the parameter (``auto`` learns it)."""


class CallOptions(TypedDict, total=False):
    """Per-call overrides of :meth:`LLMClient.complete` (``None`` or absent: the setting)."""

    temperature: float | None
    """Overrides ``llm.temperature``."""
    max_tokens: int | None
    """Overrides ``llm.max_tokens`` (sent as the token-limit parameter)."""


class _Retryable(Exception):
    """A failure worth another attempt; after the last one it becomes an LLMError."""

    def __init__(
        self,
        reason: str,
        *,
        kind: Literal["unavailable", "output"],
        retry_after: float | None = None,
    ) -> None:
        self.reason = reason
        self.kind = kind
        self.retry_after = retry_after
        super().__init__(reason)


@dataclass(slots=True)
class _Call:
    """Book-keeping for one ``complete``/``embed`` call across its attempts."""

    task: str
    deadline: float
    """When the call must be over (``time.monotonic()``), retries and waits included."""
    attempts: int = 0
    usage: TokenUsage = field(default_factory=TokenUsage)

    def left(self) -> float:
        """Seconds left before the deadline (negative once it has passed)."""
        return self.deadline - time.monotonic()


class RequestedToolCall(BaseModel):
    """One tool call as the model asked for it (unvalidated: the caller checks it)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="the model's call id ('' when it gave none)")
    name: str = Field(description="the tool's name ('' for a call that is not a function)")
    arguments: str = Field(description="the arguments as the JSON text the model wrote")


class ToolTurn(BaseModel):
    """One model turn of tool calling (:meth:`LLMClient.complete_with_tools`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str | None = Field(default=None, description="the model's text, if any")
    tool_calls: tuple[RequestedToolCall, ...] = ()
    finish_reason: str = ""
    model: str = ""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    attempts: int = 0


class LLMClient(ClosingContext):
    """Structured answers from an OpenAI-compatible endpoint (see the module docstring).

    Args:
        settings: The endpoint, model, limits and switches (``Settings.llm``); ``base_url``
            must be set (use :func:`make_client` to get ``None`` when it is not).
        cache_dir: The cache root (``Settings.cache_dir``); answers go to ``cache_dir/llm``.
            ``None`` disables the cache, as does ``settings.cache = False``.
        run_id: Bound to every log event of this client.
        backoff: First exponential-backoff wait in seconds (doubled per attempt, jittered);
            small values make tests fast.
        max_wait: Cap on any single backoff wait (a ``Retry-After`` is honoured only when it
            fits within ``llm.deadline``; else the call ends at once).
        sleep: The sleep function (tests inject one that records the waits).

    Raises:
        LLMConfigError: ``settings.base_url`` is unset or not an http(s) URL, or a header of
            ``llm.headers`` names an unset environment variable.
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        cache_dir: Path | None,
        run_id: str | None = None,
        backoff: float = 1.0,
        max_wait: float = DEFAULT_MAX_WAIT,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if settings.base_url is None:
            raise LLMConfigError(
                "no llm.base_url configured; use make_client(), which returns None so the "
                "agents run their deterministic core",
                model=settings.model,
            )
        if urlsplit(settings.base_url).scheme.lower() not in ("http", "https"):
            raise LLMConfigError(  # LLMSettings refuses it too; never send anything elsewhere
                "llm.base_url must be an http:// or https:// URL", model=settings.model
            )
        try:
            headers = settings.resolved_headers(os.environ)
        except ConfigError as exc:
            raise LLMConfigError(str(exc), model=settings.model) from exc
        self._settings = settings
        self._base_url = _redact(settings.base_url)
        self._cache_dir = cache_dir / "llm" if cache_dir is not None and settings.cache else None
        # learned request shapes persist whenever there is a cache root (they hold no answer)
        self._params = ParamMemory(cache_dir / "llm" / PARAMS_FILE if cache_dir else None)
        self._run_id = run_id
        self._backoff = max(backoff, 0.0)
        self._max_wait = max(max_wait, 0.0)
        self._sleep = sleep
        self._random = random.Random()  # noqa: S311 - jitter, not cryptography
        self._lock = threading.Lock()
        self._usage = LLMUsage()
        from openai import OpenAI

        self._openai = OpenAI(
            base_url=settings.base_url,
            api_key=os.environ.get(settings.api_key_env) or NO_KEY_PLACEHOLDER,
            timeout=settings.timeout,
            max_retries=0,  # tenacity below is the one retry layer
            default_headers=headers or None,
            # bounds every connect/read/write by the call's deadline and caps the body size
            http_client=make_http_client(
                max_response_bytes=settings.max_response_bytes, timeout=settings.timeout
            ),
        )
        self._log = _log.bind(run_id=run_id, model=settings.model, base_url=self._base_url)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the HTTP connections (also on leaving ``with LLMClient(...) as client``)."""
        self._openai.close()

    # ------------------------------------------------------------------ properties

    @property
    def settings(self) -> LLMSettings:
        """The settings this client was made with."""
        return self._settings

    @property
    def run_id(self) -> str | None:
        """The run this client belongs to."""
        return self._run_id

    @property
    def usage(self) -> LLMUsage:
        """What this client (the run) has spent so far."""
        with self._lock:
            return self._usage

    # ------------------------------------------------------------------ public API

    def complete(
        self,
        task: str,
        prompt_version: str,
        messages: Sequence[Mapping[str, str]],
        schema: type[T],
        **options: Unpack[CallOptions],
    ) -> LLMResult[T]:
        """Ask for a structured answer and validate it against ``schema``.

        Args:
            task: What is asked (the prompt's name); logged, cached by, reported.
            prompt_version: The prompt's version; part of the cache key.
            messages: Chat messages, each ``{"role": ..., "content": ...}``.
            schema: The pydantic model the answer must validate against.
            **options: ``temperature`` and ``max_tokens`` for this call (:class:`CallOptions`).

        Returns:
            The validated answer with its accounting.

        Raises:
            LLMBudgetExceeded: The run's call or token budget is spent (nothing was sent).
            LLMRequestError: The endpoint refused the request (400, 401, 403, 404...), after
                at most one adjustment per refused parameter (see the module docstring).
            LLMUnavailableError: 429/5xx/timeouts/connection failures outlasted the retries,
                or ``llm.deadline`` passed (a ``Retry-After`` beyond it included).
            LLMOutputError: Every answer was unusable (not JSON, not the schema, truncated),
                or one was larger than ``llm.max_response_bytes``.
            LLMConfigError: ``messages`` is malformed.
        """
        call = self._new_call(task)
        try:
            chat = _check_messages(messages, self._error_context(task))
            from openai.lib._pydantic import to_strict_json_schema

            strict = to_strict_json_schema(schema)
            key = _cache_key(self._settings.model, task, prompt_version, chat, strict)
            hit = self._cache_get(key, task, prompt_version, schema)
            if hit is not None:
                return hit
            request = self._request_messages(chat, schema, strict)
            response_format = self._response_format(schema, strict)
            temperature = options.get("temperature")
            max_tokens = options.get("max_tokens")
            attempt = functools.partial(
                self._chat_once,
                call,
                request,
                response_format,
                schema,
                self._settings.temperature if temperature is None else temperature,
                self._settings.max_tokens if max_tokens is None else max_tokens,
            )
            value, model, content = self._with_retries(call, attempt)
        except LLMError as exc:
            self._count(failures=1)
            self._log.warning(
                "llm_call_failed",
                task=task,
                prompt_version=prompt_version,
                attempts=call.attempts,
                error=type(exc).__name__,
                reason=exc.reason,
            )
            raise
        self._cache_put(key, model, task, prompt_version, content)
        self._log.info(
            "llm.call",
            task=task,
            prompt_version=prompt_version,
            attempts=call.attempts,
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
            cached=False,
        )
        return LLMResult(
            value=value,
            task=task,
            prompt_version=prompt_version,
            model=model,
            usage=call.usage,
            cached=False,
            attempts=call.attempts,
        )

    def try_complete(
        self,
        task: str,
        prompt_version: str,
        messages: Sequence[Mapping[str, str]],
        schema: type[T],
        **options: Unpack[CallOptions],
    ) -> LLMResult[T] | LLMFallback:
        """:meth:`complete`, but any :class:`LLMError` becomes an :class:`LLMFallback`.

        The agent then runs its deterministic core and the run reports ``fallback.reason``.
        Programming errors (e.g. a schema the SDK cannot make strict) still raise.
        """
        try:
            return self.complete(task, prompt_version, messages, schema, **options)
        except LLMError as exc:
            self._count(fallbacks=1)
            self._log.warning("llm.fallback", task=task, error=type(exc).__name__)
            return LLMFallback(task=task, reason=str(exc), error=type(exc).__name__)

    # ------------------------------------------------------------------ tool calling

    def complete_with_tools(
        self,
        task: str,
        prompt_version: str,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]],
        **options: Unpack[CallOptions],
    ) -> ToolTurn:
        """One turn of OpenAI tool calling: the model answers in text or asks for tool calls.

        Every bound of :meth:`complete` holds: ``llm.deadline`` for the whole call, the
        response size cap, the retries (an answer with neither text nor a tool call, or cut at
        the token limit, is retried like an unusable structured answer), the run's call and
        token budget, and the reasoning-model request shape (``max_completion_tokens`` /
        ``max_tokens`` / no temperature, learned per endpoint). Nothing is cached: tool results
        change between calls. The tool calls are returned as the model wrote them (arguments
        as unparsed JSON text): the caller validates them before running anything.

        Args:
            task: What is asked (the prompt's name); logged and reported.
            prompt_version: The prompt's version; logged.
            messages: OpenAI chat messages: ``system``/``developer``/``user`` with text,
                ``assistant`` with text and/or ``tool_calls``, ``tool`` with ``tool_call_id``.
            tools: OpenAI ``{"type": "function", "function": {...}}`` entries; empty: none
                offered (the model must answer in text).
            **options: ``temperature`` and ``max_tokens`` for this call (:class:`CallOptions`).

        Raises:
            LLMBudgetExceeded, LLMRequestError, LLMUnavailableError, LLMOutputError: as for
                :meth:`complete`.
            LLMConfigError: ``messages`` or ``tools`` are malformed.
        """
        call = self._new_call(task)
        try:
            chat = _check_tool_messages(messages, self._error_context(task))
            offered = _check_tools(tools, self._error_context(task))
            temperature = options.get("temperature")
            max_tokens = options.get("max_tokens")
            turn = self._with_retries(
                call,
                functools.partial(
                    self._tools_once,
                    call,
                    chat,
                    offered,
                    self._settings.temperature if temperature is None else temperature,
                    self._settings.max_tokens if max_tokens is None else max_tokens,
                ),
            )
        except LLMError as exc:
            self._count(failures=1)
            self._log.warning(
                "llm.tools.failed",
                task=task,
                prompt_version=prompt_version,
                attempts=call.attempts,
                error=type(exc).__name__,
            )
            raise
        self._log.info(
            "llm.tools.call",
            task=task,
            prompt_version=prompt_version,
            attempts=call.attempts,
            tools_offered=len(offered),
            tool_calls=len(turn.tool_calls),
            prompt_tokens=call.usage.prompt_tokens,
            completion_tokens=call.usage.completion_tokens,
        )
        return turn.model_copy(update={"usage": call.usage, "attempts": call.attempts})

    def _tools_once(
        self,
        call: _Call,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        temperature: float | None,
        max_tokens: int,
    ) -> ToolTurn:
        extra: dict[str, Any] = {"tools": tools, "tool_choice": "auto"} if tools else {}
        message, finish_reason, model = self._chat_message(
            call, messages, extra, temperature, max_tokens
        )
        calls: list[RequestedToolCall] = []
        for item in message.tool_calls or ():
            function = getattr(item, "function", None)  # custom (non-function) calls: none
            name = getattr(function, "name", None)
            arguments = getattr(function, "arguments", None)
            if not isinstance(name, str) or not isinstance(arguments, str):
                calls.append(RequestedToolCall(id=item.id or "", name="", arguments=""))
                continue
            calls.append(RequestedToolCall(id=item.id or "", name=name, arguments=arguments))
        content = message.content if message.content and message.content.strip() else None
        if content is None and not calls:
            raise _Retryable("the answer has neither text nor a tool call", kind="output")
        return ToolTurn(
            content=content,
            tool_calls=tuple(calls),
            finish_reason=finish_reason,
            model=model,
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Embed ``texts`` with ``llm.embeddings_model`` (same retries and budget as chat).

        Args:
            texts: The texts, in order.

        Returns:
            One vector per text, in the order given (``[]`` for no texts, without a request).

        Raises:
            LLMConfigError: ``llm.embeddings_model`` is unset.
            LLMBudgetExceeded, LLMRequestError, LLMUnavailableError, LLMOutputError: as for
                :meth:`complete`.
        """
        model = self._settings.embeddings_model
        if model is None:
            raise LLMConfigError(
                "no llm.embeddings_model configured; set it or use the offline hashing "
                "embeddings (memory.embedding = hashing)",
                base_url=self._base_url,
                model=self._settings.model,
                task="embeddings",
            )
        if isinstance(texts, str):
            raise LLMConfigError("embed() takes a sequence of texts, not one string")
        if not texts:
            return []
        call = self._new_call("embeddings")
        try:
            vectors = self._with_retries(
                call, functools.partial(self._embed_once, call, model, list(texts))
            )
        except LLMError as exc:
            self._count(failures=1)
            self._log.warning("llm.embed_failed", attempts=call.attempts, error=type(exc).__name__)
            raise
        self._log.info(
            "llm_embed", texts=len(texts), attempts=call.attempts, tokens=call.usage.total_tokens
        )
        return vectors

    # ------------------------------------------------------------------ one attempt

    def _chat_message(
        self,
        call: _Call,
        messages: Sequence[Mapping[str, Any]],
        extra: Mapping[str, Any],
        temperature: float | None,
        max_tokens: int,
    ) -> tuple[ChatCompletionMessage, str, str]:
        """One chat completion request (adapting its parameters to what the endpoint accepts,
        at most once each), its usage spent, and the first choice's message checked: cut,
        filtered or refused answers become errors. Returns the message, its finish reason and
        the model that answered."""
        shape = self._request_shape()
        adjusted: set[str] = set()
        while True:
            body: dict[str, Any] = {
                "model": self._settings.model,
                "messages": cast("list[ChatCompletionMessageParam]", list(messages)),
                **extra,
                shape.limit_param: max_tokens,
            }
            if temperature is not None and shape.send_temperature:
                body["temperature"] = temperature
            if self._settings.reasoning_effort is not None:
                body["reasoning_effort"] = self._settings.reasoning_effort
            try:
                response = self._send(call, functools.partial(self._create_chat, body))
            except LLMRequestError as exc:
                better = self._adjusted_shape(call, shape, exc, adjusted)
                if better is None:
                    raise
                shape = better
                continue
            break
        from openai.types.chat import ChatCompletion

        if not isinstance(response, ChatCompletion):
            raise LLMOutputError(
                f"the endpoint answered {type(response).__name__}, not a chat completion",
                **self._error_context(call.task, call.attempts),
            )
        if response.usage is not None:
            self._spend(
                call,
                TokenUsage(
                    prompt_tokens=response.usage.prompt_tokens or 0,
                    completion_tokens=response.usage.completion_tokens or 0,
                ),
            )
        if not response.choices:
            raise _Retryable("the answer has no choices", kind="output")
        choice = response.choices[0]
        message = choice.message
        if choice.finish_reason == "length":
            raise _Retryable(
                f"the answer was cut at {shape.limit_param}={max_tokens} (finish_reason "
                "'length'; a reasoning model spends part of it thinking: raise llm.max_tokens)",
                kind="output",
            )
        if choice.finish_reason == "content_filter":
            raise LLMOutputError(
                "the endpoint's content filter withheld the answer",
                **self._error_context(call.task, call.attempts),
            )
        if message.refusal:
            raise LLMOutputError(
                f"the model refused: {_clip(message.refusal)}",
                **self._error_context(call.task, call.attempts),
            )
        return message, str(choice.finish_reason), response.model or self._settings.model

    def _chat_once(
        self,
        call: _Call,
        messages: list[dict[str, str]],
        response_format: ResponseFormat,
        schema: type[T],
        temperature: float | None,
        max_tokens: int,
    ) -> tuple[T, str, str]:
        message, _finish, model = self._chat_message(
            call, messages, {"response_format": response_format}, temperature, max_tokens
        )
        content = message.content
        if not content or not content.strip():
            raise _Retryable("the answer is empty", kind="output")
        try:
            value = schema.model_validate_json(_strip_fences(content))
        except ValidationError as exc:
            raise _Retryable(
                f"the answer is not a valid {schema.__name__}: {_summarise(exc)}", kind="output"
            ) from exc
        return value, model, content

    def _create_chat(self, body: dict[str, Any], timeout: float) -> object:
        """One chat completion request (the SDK checks nothing we did not check already)."""
        return self._openai.chat.completions.create(**body, timeout=timeout)

    def _request_shape(self) -> RequestShape:
        """The shape to send: what the settings fix, else what was learned, else defaults."""
        learned = self._params.recall(self._base_url, self._settings.model) or RequestShape()
        fixed = self._settings.token_limit_param
        if fixed in _LIMIT_PARAMS:
            learned = RequestShape(fixed, learned.send_temperature)
        return learned

    def _adjusted_shape(
        self, call: _Call, shape: RequestShape, exc: LLMRequestError, adjusted: set[str]
    ) -> RequestShape | None:
        """The shape without the parameter ``exc`` refuses as unsupported, remembered; or
        ``None`` when ``exc`` is another error, or the parameter was adjusted already (by this
        call) or is fixed by the settings."""
        import openai

        cause = exc.__cause__
        if not isinstance(cause, openai.APIStatusError):
            return None
        param = rejected_parameter(cause.status_code, cause.body, cause.message)
        if param is None or not shape.sends(param):
            return None
        group = "temperature" if param == "temperature" else "token_limit"
        if group in adjusted or (
            group == "token_limit" and self._settings.token_limit_param in _LIMIT_PARAMS
        ):
            return None
        adjusted.add(group)
        better = shape.without(param)
        self._params.remember(self._base_url, self._settings.model, better)
        self._log.warning(
            "llm.params.adjusted",
            task=call.task,
            refused=param,
            limit_param=better.limit_param,
            send_temperature=better.send_temperature,
            remembered=str(self._params.path) if self._params.path else "process",
        )
        return better

    def _embed_once(self, call: _Call, model: str, texts: list[str]) -> list[list[float]]:
        response = self._send(
            call,
            lambda timeout: self._openai.embeddings.create(
                model=model, input=texts, encoding_format="float", timeout=timeout
            ),
        )
        if response.usage is not None:
            self._spend(call, TokenUsage(prompt_tokens=response.usage.prompt_tokens or 0))
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(texts) or any(not item.embedding for item in data):
            raise _Retryable(
                f"asked for {len(texts)} embeddings, got {len(data)} (or empty ones)",
                kind="output",
            )
        return [[float(x) for x in item.embedding] for item in data]

    def _send(self, call: _Call, request: Callable[[float], R]) -> R:
        """Check the deadline and the budget, count the request, send it within the time left,
        and classify what went wrong.

        ``request`` gets the per-operation timeout to use; every network operation it makes is
        also bounded by the call's deadline
        (:func:`~patchpilot.tools.llm.transport.deadline_scope`).
        """
        import openai

        left = call.left()
        if left <= 0:
            raise self._deadline_error(call)
        self._reserve(call)
        try:
            with deadline_scope(call.deadline):
                return request(min(self._settings.timeout, left))
        except openai.APITimeoutError as exc:
            if call.left() <= _DEADLINE_SLACK:
                raise self._deadline_error(call) from exc
            raise _Retryable(
                f"no answer within llm.timeout={self._settings.timeout:g} s", kind="unavailable"
            ) from exc
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, ResponseRefused):  # the same request would get the same
                raise LLMOutputError(
                    f"answer refused: {cause}; the limit is llm.max_response_bytes="
                    f"{self._settings.max_response_bytes}",
                    **self._error_context(call.task, call.attempts),
                ) from exc
            if call.left() <= _DEADLINE_SLACK:
                raise self._deadline_error(call) from exc
            raise _Retryable(
                f"cannot reach the endpoint: {_clip(str(cause) or type(cause).__name__)}",
                kind="unavailable",
            ) from exc
        except openai.APIStatusError as exc:
            raise self._status_error(call, exc) from exc
        except openai.OpenAIError as exc:
            raise LLMError(
                f"{type(exc).__name__}: {_clip(str(exc))}",
                **self._error_context(call.task, call.attempts),
            ) from exc

    def _deadline_error(self, call: _Call) -> LLMUnavailableError:
        attempts = f"{call.attempts} attempt{'s' if call.attempts != 1 else ''}"
        return LLMUnavailableError(
            f"no complete answer within llm.deadline={self._settings.deadline:g} s "
            f"({attempts}); the endpoint is too slow or stalled",
            **self._error_context(call.task, call.attempts),
        )

    def _status_error(self, call: _Call, exc: openai.APIStatusError) -> Exception:
        status = exc.status_code
        detail = _error_detail(exc)
        if (status in _RETRY_STATUSES or status >= 500) and exc.code != "insufficient_quota":
            return _Retryable(
                f"HTTP {status}: {detail}",
                kind="unavailable",
                retry_after=_retry_after(exc.response.headers),
            )
        env = self._settings.api_key_env
        if status == 401:
            hint = (
                f"the endpoint rejected the API key; put a valid key in ${env} "
                f"(currently {'set' if os.environ.get(env) else 'unset'})"
            )
        elif status == 403:
            hint = f"the key in ${env} may not use this model or endpoint"
        elif status == 404:
            hint = "check llm.base_url (it usually ends in /v1) and llm.model"
        elif status == 429:
            hint = "the account's quota is exhausted; retrying will not help"
        elif (refused := rejected_parameter(status, exc.body, exc.message)) is not None:
            other = "max_tokens" if refused == "max_completion_tokens" else "max_completion_tokens"
            hint = (
                "the model takes no temperature: set llm.temperature: null"
                if refused == "temperature"
                else f"the server takes no {refused}: set llm.token_limit_param to {other}"
            )
        elif (
            status in (400, 422)
            and self._settings.structured_output == "json_schema"
            and any(word in detail.lower() for word in ("response_format", "json_schema"))
        ):
            hint = (
                "if this server does not support response_format json_schema, "
                "set llm.structured_output = json_object"
            )
        else:
            hint = ""
        reason = f"{detail.rstrip('.')}; {hint}" if hint else detail
        return LLMRequestError(
            reason,
            status=status,
            base_url=self._base_url,
            model=self._settings.model,
            task=call.task,
            attempts=call.attempts,
        )

    # ------------------------------------------------------------------ retries

    def _with_retries(self, call: _Call, attempt: Callable[[], R]) -> R:
        max_attempts = self._settings.max_retries + 1
        retrying = Retrying(
            # the wait is computed first: no wait starts that would end past the deadline
            stop=stop_after_attempt(max_attempts) | stop_before_delay(max(call.left(), 0.0)),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            before_sleep=functools.partial(self._before_sleep, call),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            error = LLMOutputError if exc.kind == "output" else LLMUnavailableError
            attempts = f"{call.attempts} attempt{'s' if call.attempts != 1 else ''}"
            deadline = f"llm.deadline={self._settings.deadline:g} s"
            left = max(call.left(), 0.0)
            if call.attempts >= max_attempts:
                why = f"gave up after {attempts}; llm.max_retries={self._settings.max_retries}"
            elif exc.retry_after is not None and exc.retry_after >= left:
                why = (
                    f"the endpoint asks to retry after {_seconds(exc.retry_after)} s, beyond "
                    f"the {_seconds(left)} s left of {deadline}; gave up after {attempts}"
                )
            else:
                why = (
                    f"no time left within {deadline} for another attempt; gave up after {attempts}"
                )
            raise error(
                f"{exc.reason} ({why})", **self._error_context(call.task, call.attempts)
            ) from exc

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable):
            if exc.retry_after is not None:
                return exc.retry_after  # honoured exactly, or not at all (see the stop rule)
            if exc.kind == "output":
                return 0.0  # the endpoint is fine; ask again at once
        ceiling = min(self._backoff * 2.0 ** (state.attempt_number - 1), self._max_wait)
        return ceiling / 2 + self._random.uniform(0.0, ceiling / 2)

    def _before_sleep(self, call: _Call, state: RetryCallState) -> None:
        self._count(retries=1)
        exc = state.outcome.exception() if state.outcome else None
        self._log.warning(
            "llm_retry",
            task=call.task,
            attempt=state.attempt_number,
            max_attempts=self._settings.max_retries + 1,
            reason=getattr(exc, "reason", str(exc)),
            wait_s=round(state.next_action.sleep, 3) if state.next_action else None,
        )

    # ------------------------------------------------------------------ budget and usage

    def _reserve(self, call: _Call) -> None:
        """Refuse before sending when the run's budget is spent; else count the request."""
        settings = self._settings
        refused: tuple[str, int, int] | None = None
        with self._lock:
            usage = self._usage
            if usage.calls >= settings.max_calls_per_run:
                refused = ("calls", usage.calls, settings.max_calls_per_run)
            elif usage.total_tokens >= settings.max_tokens_per_run:
                refused = ("tokens", usage.total_tokens, settings.max_tokens_per_run)
            else:
                self._usage = usage.model_copy(update={"calls": usage.calls + 1})
        if refused is not None:
            raise LLMBudgetExceeded(
                *refused, base_url=self._base_url, model=settings.model, task=call.task
            )
        call.attempts += 1

    def _spend(self, call: _Call, spent: TokenUsage) -> None:
        call.usage = call.usage + spent
        with self._lock:
            usage = self._usage
            self._usage = usage.model_copy(
                update={
                    "prompt_tokens": usage.prompt_tokens + spent.prompt_tokens,
                    "completion_tokens": usage.completion_tokens + spent.completion_tokens,
                }
            )

    def _count(self, **increments: int) -> None:
        with self._lock:
            usage = self._usage
            self._usage = usage.model_copy(
                update={name: getattr(usage, name) + n for name, n in increments.items()}
            )

    def _new_call(self, task: str) -> _Call:
        return _Call(task, deadline=time.monotonic() + self._settings.deadline)

    def _error_context(self, task: str, attempts: int = 0) -> dict[str, Any]:
        return {
            "base_url": self._base_url,
            "model": self._settings.model,
            "task": task,
            "attempts": attempts,
        }

    # ------------------------------------------------------------------ request shape

    def _response_format(self, schema: type[BaseModel], strict: dict[str, Any]) -> ResponseFormat:
        if self._settings.structured_output == "json_object":
            return {"type": "json_object"}
        return {
            "type": "json_schema",
            "json_schema": {"name": _schema_name(schema), "strict": True, "schema": strict},
        }

    def _request_messages(
        self, messages: list[dict[str, str]], schema: type[BaseModel], strict: dict[str, Any]
    ) -> list[dict[str, str]]:
        """The messages as sent: with ``json_object`` the schema must travel in the prompt."""
        if self._settings.structured_output != "json_object":
            return messages
        instruction = (
            f"Answer with one JSON object, and nothing else, that validates against this JSON "
            f"schema ({_schema_name(schema)}):\n"
            + json.dumps(strict, separators=(",", ":"), sort_keys=True)
        )
        if messages and messages[0]["role"] in ("system", "developer"):
            first = messages[0]
            return [{**first, "content": f"{first['content']}\n\n{instruction}"}, *messages[1:]]
        return [{"role": "system", "content": instruction}, *messages]

    # ------------------------------------------------------------------ cache

    def _cache_path(self, key: str) -> Path | None:
        return self._cache_dir / f"{key}.json" if self._cache_dir is not None else None

    def _cache_get(
        self, key: str, task: str, prompt_version: str, schema: type[T]
    ) -> LLMResult[T] | None:
        path = self._cache_path(key)
        if path is None or not path.is_file():
            return None
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            content = entry["content"]
            model = entry.get("model") or self._settings.model
            if not isinstance(content, str) or not isinstance(model, str):
                raise TypeError("content and model must be strings")
            value = schema.model_validate_json(_strip_fences(content))
        except (OSError, ValueError, TypeError, KeyError) as exc:  # ValidationError: ValueError
            self._log.warning(
                "llm_cache_entry_dropped", task=task, path=str(path), reason=_clip(str(exc))
            )
            path.unlink(missing_ok=True)
            return None
        self._count(cache_hits=1)
        self._log.info("llm.call", task=task, prompt_version=prompt_version, cached=True)
        return LLMResult(
            value=value,
            task=task,
            prompt_version=prompt_version,
            model=model,
            usage=TokenUsage(),
            cached=True,
            attempts=0,
        )

    def _cache_put(
        self, key: str, model: str, task: str, prompt_version: str, content: str
    ) -> None:
        path = self._cache_path(key)
        if path is None:
            return
        entry = {
            "key": key,
            "model": model,
            "task": task,
            "prompt_version": prompt_version,
            "created_at": utcnow().isoformat(),
            "content": content,
        }
        data = json.dumps(entry, ensure_ascii=False, indent=2).encode("utf-8")
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError as exc:  # a cache that cannot be written costs a request next time
            self._log.warning("llm.cache_write_failed", path=str(path), reason=str(exc))
        finally:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- module API


def make_client(
    settings: LLMSettings,
    *,
    cache_dir: Path | None = None,
    run_id: str | None = None,
    backoff: float = 1.0,
    max_wait: float = DEFAULT_MAX_WAIT,
    sleep: Callable[[float], None] = time.sleep,
) -> LLMClient | None:
    """The run's LLM client, or ``None`` when no LLM is configured (``llm.base_url`` unset).

    ``None`` is the normal, supported case: every agent then runs its deterministic core
    (:func:`try_complete` turns ``None`` into an :class:`LLMFallback`). Arguments as for
    :class:`LLMClient`; usually ``make_client(settings.llm, cache_dir=settings.cache_dir,
    run_id=run_id)``.
    """
    if not settings.configured:
        _log.info("llm.not_configured", run_id=run_id)
        return None
    return LLMClient(
        settings,
        cache_dir=cache_dir,
        run_id=run_id,
        backoff=backoff,
        max_wait=max_wait,
        sleep=sleep,
    )


def try_complete(
    client: LLMClient | None,
    task: str,
    prompt_version: str,
    messages: Sequence[Mapping[str, str]],
    schema: type[T],
    **options: Unpack[CallOptions],
) -> LLMResult[T] | LLMFallback:
    """Ask ``client`` (maybe ``None``) for a structured answer; never raises an LLMError.

    Returns:
        The validated answer, or an :class:`LLMFallback` naming why there is none (no LLM
        configured, budget spent, endpoint unreachable, unusable answers...): the caller runs
        its deterministic core and reports ``reason``.
    """
    if client is None:
        return LLMFallback(task=task, reason="no LLM configured (llm.base_url is unset)")
    return client.try_complete(task, prompt_version, messages, schema, **options)


# --------------------------------------------------------------------------- helpers


def _check_messages(
    messages: Sequence[Mapping[str, str]], context: Mapping[str, Any]
) -> list[dict[str, str]]:
    if isinstance(messages, str | bytes) or not messages:
        raise LLMConfigError("messages must be a non-empty list of {role, content}", **context)
    checked: list[dict[str, str]] = []
    for index, message in enumerate(messages):
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES or not isinstance(content, str) or set(message) - {"role", "content"}:
            raise LLMConfigError(
                f"message {index} must be {{role: one of {sorted(_ROLES)}, content: str}}, "
                f"got keys {sorted(message)} and role {role!r}",
                **context,
            )
        checked.append({"role": role, "content": content})
    return checked


_TOOL_ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool"})


def _check_tool_messages(
    messages: Sequence[Mapping[str, Any]], context: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Tool-calling messages, checked for shape (the roles, text, tool calls, tool results)."""
    if isinstance(messages, str | bytes) or not messages:
        raise LLMConfigError("messages must be a non-empty list of chat messages", **context)
    checked: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role = message.get("role")
        content = message.get("content")
        ok = role in _TOOL_ROLES and (isinstance(content, str) or content is None)
        if role == "assistant":
            ok = ok and set(message) <= {"role", "content", "tool_calls"}
            ok = ok and (isinstance(content, str) or bool(message.get("tool_calls")))
        elif role == "tool":
            ok = ok and isinstance(content, str) and isinstance(message.get("tool_call_id"), str)
            ok = ok and set(message) <= {"role", "content", "tool_call_id"}
        else:
            ok = ok and isinstance(content, str) and set(message) <= {"role", "content"}
        if not ok:
            raise LLMConfigError(
                f"message {index} is not a valid {role!r} chat message (keys {sorted(message)})",
                **context,
            )
        checked.append(dict(message))
    return checked


def _check_tools(
    tools: Sequence[Mapping[str, Any]], context: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """OpenAI function tools, checked for shape (type, a valid unique name, parameters)."""
    checked: list[dict[str, Any]] = []
    names: set[str] = set()
    for index, tool in enumerate(tools):
        function = tool.get("function")
        name = function.get("name") if isinstance(function, Mapping) else None
        if (
            tool.get("type") != "function"
            or not isinstance(function, Mapping)
            or not isinstance(name, str)
            or not 0 < len(name) <= 64
            or set(name) - _NAME_CHARS
            or name in names
            or not isinstance(function.get("parameters", {}), Mapping)
        ):
            raise LLMConfigError(
                f"tool {index} is not an OpenAI function tool with a unique name "
                "(^[a-zA-Z0-9_-]{1,64}$) and a parameters schema",
                **context,
            )
        names.add(name)
        checked.append(dict(tool))
    return checked


def _cache_key(
    model: str,
    task: str,
    prompt_version: str,
    messages: list[dict[str, str]],
    schema: dict[str, Any],
) -> str:
    identity = {
        "model": model,
        "task": task,
        "prompt_version": prompt_version,
        "messages": messages,
        "schema": schema,
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _schema_name(schema: type[BaseModel]) -> str:
    """A ``json_schema.name`` the API accepts (``^[a-zA-Z0-9_-]{1,64}$``)."""
    name = "".join(ch if ch in _NAME_CHARS else "_" for ch in schema.__name__)[:64]
    return name or "answer"


def _strip_fences(content: str) -> str:
    """The JSON inside a Markdown code fence, as small local models like to send it."""
    text = content.strip()
    if text.startswith("```") and text.endswith("```") and len(text) >= 6:
        body = text[3:-3]
        first_line, _, rest = body.partition("\n")
        return rest if first_line.strip().isalpha() or not first_line.strip() else body
    return text


def _summarise(exc: ValidationError, limit: int = 3) -> str:
    parts = []
    for error in exc.errors(include_url=False)[:limit]:
        where = ".".join(str(part) for part in error["loc"]) or "answer"
        parts.append(f"{where}: {error['msg']}")
    more = exc.error_count() - limit
    return "; ".join(parts) + (f" (+{more} more)" if more > 0 else "")


def _error_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return _clip(str(message) if message else exc.message)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000.0
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds):
            return max(seconds, 0.0)
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _seconds(value: float) -> str:
    """``3600``, ``29.9``, ``0.5``: seconds for a message."""
    return f"{value:.1f}".removesuffix(".0")


def _redact(url: str) -> str:
    """The URL without user:password (safe to log and to put in messages)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def _clip(text: str, limit: int = _DETAIL_MAX) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"

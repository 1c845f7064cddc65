"""A scripted OpenAI-compatible server on loopback, speaking the real wire format over real HTTP.

Tests point :class:`~patchpilot.tools.llm.client.LLMClient` (or anything using the ``openai`` SDK)
at
:attr:`LLMTestServer.base_url` and script what the "model" answers, faults included::

    from tests.llm_server import LLMTestServer, answer, rate_limit, truncated

    with LLMTestServer([rate_limit(retry_after=2), truncated({"risk": "high"}),
                        answer({"risk": "high"})]) as server:
        client = LLMClient(server.settings(), cache_dir=None, sleep=waits.append)
        client.complete("assess", "1", messages, Assessment)
        server.chat_requests[0]["response_format"]["json_schema"]["strict"]  # True

Endpoints (with or without the ``/v1`` prefix): ``POST /v1/chat/completions`` (a full
``chat.completion`` object with ``usage``), ``POST /v1/embeddings`` (deterministic unit vectors
derived from a hash of each text; ``encoding_format`` float or base64), ``GET /v1/models``.
Every request is recorded (:attr:`LLMTestServer.requests`). Any ``Authorization`` header is
accepted unless ``api_key`` is given.

Answers come from a queue of steps (:meth:`LLMTestServer.enqueue`), then from the ``responder``
callable (``responder(request_json) -> Step | None``). With neither, the server answers 400
``test_server_script_exhausted`` (never retried by the client, so an unexpected extra call fails
fast) and counts it in :attr:`LLMTestServer.unexpected`. Steps:

* normal answers: :func:`answer` (a string, or an object serialised to JSON),
  :func:`tool_calls`, and the bad answers :func:`truncated` (cut mid-JSON, ``finish_reason``
  ``length``), :func:`schema_violation` (valid JSON of the wrong shape), :func:`not_json`;
* faults: :func:`rate_limit` (429 with ``Retry-After`` and OpenAI's error body),
  :func:`server_error` (500 by default), :func:`http_error` / :func:`unauthorized` /
  :func:`not_found` / :func:`bad_request`, the parameter refusals :func:`unsupported_parameter`
  / :func:`unsupported_value` (OpenAI's) and :func:`extra_input` (a strict older server's),
  :func:`timeout` (sleeps longer than the client's
  timeout, then answers late), :func:`disconnect` (closes the connection without an answer);
* hostile servers: :func:`drip` (a valid answer sent a byte at a time, one per interval, from
  the status line on or after the headers: every read is quick, the whole never ends) and
  :func:`huge` (a body of any size streamed from one reused block, with or without
  ``Content-Length``, optionally a gzip bomb). :attr:`LLMTestServer.streamed_bytes` and
  :attr:`LLMTestServer.streams_ended` tell how much of them was sent before the client hung up.

Which request parameters the "model" takes is the server's ``dialect``:

* ``lenient`` (the default): anything;
* ``reasoning``: an OpenAI reasoning model (o-series, gpt-5): a request with ``max_tokens``,
  or with a ``temperature`` other than 1, is answered 400 with OpenAI's own error body
  (:func:`unsupported_parameter`, :func:`unsupported_value`); ``max_completion_tokens`` is
  taken;
* ``legacy``: an older OpenAI-compatible server with a strict request model: a request with
  ``max_completion_tokens`` is answered 400 the way such a server (vLLM-style error object,
  pydantic's "Extra inputs are not permitted") does (:func:`extra_input`).

A refused request consumes no scripted step; it is recorded (and counted in
:attr:`LLMTestServer.refused`) like any other.

Requests in absolute form (``POST http://host/v1/...``, as sent to a proxy) are served too, so
the server can stand in for an HTTP proxy.

Also runnable for manual tests, on loopback only::

    python -m tests.llm_server --port 8099 --script steps.json [--default '{"ok": true}'] \
        [--dialect reasoning]

where ``steps.json`` is a list of steps as JSON (see :func:`step_from_json`), e.g.
``[{"fault": "rate_limit", "retry_after": 1}, {"content": {"risk": "low"}}]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import signal
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import structlog
from pydantic import BaseModel

from patchpilot.core.settings import LLMSettings

__all__ = [
    "Answer",
    "Dialect",
    "Fault",
    "LLMTestServer",
    "RecordedRequest",
    "Responder",
    "Step",
    "ToolCall",
    "answer",
    "bad_request",
    "disconnect",
    "drip",
    "extra_input",
    "http_error",
    "huge",
    "main",
    "not_found",
    "not_json",
    "rate_limit",
    "schema_violation",
    "server_error",
    "step_from_json",
    "timeout",
    "tool_calls",
    "truncated",
    "unauthorized",
    "unsupported_parameter",
    "unsupported_value",
]

_log = structlog.get_logger(__name__)

LOOPBACK = "127.0.0.1"
DEFAULT_MODEL = "test-model"


# --------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call the "model" asks for."""

    name: str
    arguments: str
    """The arguments as the JSON text the API carries."""
    call_id: str = ""


@dataclass(frozen=True, slots=True)
class Answer:
    """A 200 answer (which may still be a bad one: truncated, wrong shape, not JSON)."""

    content: str | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: str = "stop"
    prompt_tokens: int | None = None
    """``usage.prompt_tokens``; by default about a token per 4 characters of the messages."""
    completion_tokens: int | None = None
    """``usage.completion_tokens``; by default about a token per 4 characters answered."""
    model: str | None = None
    """The model named in the answer; by default the one requested."""
    refusal: str | None = None
    delay: float = 0.0
    """Seconds to wait before answering."""
    gzip: bool = False
    """Send the answer gzip-compressed (``Content-Encoding: gzip``)."""


@dataclass(frozen=True, slots=True)
class Fault:
    """A failure: an HTTP error status, a late answer (timeout), a dropped connection, a
    dripping answer or a huge body."""

    kind: Literal["http", "timeout", "disconnect", "drip", "huge"]
    status: int = 500
    body: Mapping[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    seconds: float = 0.0
    """For ``timeout``: the silence; for ``drip``: the pause between two pieces."""
    then: Answer | None = None
    """For ``timeout``: what is (uselessly) sent once the sleep is over; for ``drip``: what
    is dripped."""
    chunk: int = 1
    """For ``drip``: bytes per piece."""
    headers_first: bool = False
    """For ``drip``: send the status line and headers at once, drip only the body."""
    size: int = 0
    """For ``huge``: the body's size in bytes (decompressed, for ``gzip``)."""
    announce_length: bool = True
    """For ``huge``: send ``Content-Length`` (else the body ends when the connection closes)."""
    gzip: bool = False
    """For ``huge``: send the body gzip-compressed (``Content-Encoding: gzip``): a bomb."""


Step = Answer | Fault
Dialect = Literal["lenient", "reasoning", "legacy"]
"""Which request parameters the server takes (see the module docstring)."""
Responder = Callable[[dict[str, Any]], Step | None]
"""Called with the request's JSON body when the queue is empty; ``None``: no answer left."""


def _json_text(content: object) -> str:
    if isinstance(content, BaseModel):
        return content.model_dump_json()
    if isinstance(content, str):
        return content
    return json.dumps(content)


def answer(
    content: str | BaseModel | Mapping[str, Any] | Sequence[Any] | None,
    *,
    finish_reason: str = "stop",
    prompt_tokens: int | None = None,
    completion_tokens: int | None = None,
    model: str | None = None,
    delay: float = 0.0,
    gzip: bool = False,
) -> Answer:
    """A normal answer: a string as is, a pydantic model or JSON-able object serialised."""
    return Answer(
        content=None if content is None else _json_text(content),
        finish_reason=finish_reason,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        model=model,
        delay=delay,
        gzip=gzip,
    )


def tool_calls(*calls: tuple[str, Mapping[str, Any]], **usage: int) -> Answer:
    """An answer asking for tool calls: ``tool_calls(("get_host", {"name": "web-1"}))``."""
    return Answer(
        tool_calls=tuple(
            ToolCall(name=name, arguments=json.dumps(args), call_id=f"call_{index}")
            for index, (name, args) in enumerate(calls, start=1)
        ),
        finish_reason="tool_calls",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


def truncated(content: str | BaseModel | Mapping[str, Any] | None = None) -> Answer:
    """An answer cut mid-JSON: half of ``content``'s JSON text, ``finish_reason`` ``length``."""
    text = _json_text(content if content is not None else {"summary": "cut " * 20, "items": [1]})
    return Answer(content=text[: max(1, len(text) // 2)], finish_reason="length")


def schema_violation(content: str | Mapping[str, Any] | Sequence[Any] | None = None) -> Answer:
    """Valid JSON that does not match the requested schema (missing fields, wrong types)."""
    return Answer(content=_json_text(content if content is not None else {"unexpected": 42}))


def not_json(text: str = "Sure! Here is the plan you asked for: patch everything.") -> Answer:
    """Prose instead of JSON."""
    return Answer(content=text)


def _error_body(
    message: str, error_type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def http_error(
    status: int,
    message: str,
    *,
    error_type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Fault:
    """An HTTP error status with OpenAI's body ``{"error": {message, type, param, code}}``."""
    return Fault(
        kind="http",
        status=status,
        body=_error_body(message, error_type, code, param),
        headers=tuple((headers or {}).items()),
    )


def unsupported_parameter(param: str = "max_tokens") -> Fault:
    """OpenAI's 400 for a parameter the model does not take (``max_tokens`` on a reasoning
    model: "Unsupported parameter: 'max_tokens' is not supported with this model. Use
    'max_completion_tokens' instead.")."""
    advice = " Use 'max_completion_tokens' instead." if param == "max_tokens" else ""
    return http_error(
        400,
        f"Unsupported parameter: '{param}' is not supported with this model.{advice}",
        code="unsupported_parameter",
        param=param,
    )


def unsupported_value(param: str = "temperature", value: object = 0) -> Fault:
    """OpenAI's 400 for a value the model does not take (a reasoning model's temperature)."""
    return http_error(
        400,
        f"Unsupported value: '{param}' does not support {json.dumps(value)} with this model. "
        "Only the default (1) value is supported.",
        code="unsupported_value",
        param=param,
    )


def extra_input(param: str = "max_completion_tokens", value: object = 1024) -> Fault:
    """A strict older server's 400 for a parameter it does not know: a vLLM-style error
    object (not wrapped in ``error``) carrying pydantic's "Extra inputs are not permitted"."""
    detail = [
        {
            "type": "extra_forbidden",
            "loc": ["body", param],
            "msg": "Extra inputs are not permitted",
            "input": value,
        }
    ]
    return Fault(
        kind="http",
        status=400,
        body={
            "object": "error",
            "message": json.dumps(detail),
            "type": "BadRequestError",
            "param": None,
            "code": 400,
        },
    )


def _refusal(dialect: Dialect, body: Mapping[str, Any]) -> Fault | None:
    """The 400 a server of ``dialect`` answers to ``body``, or None when it takes it."""
    if dialect == "reasoning":
        if "max_tokens" in body:
            return unsupported_parameter("max_tokens")
        temperature = body.get("temperature")
        if temperature is not None and temperature != 1:
            return unsupported_value("temperature", temperature)
    elif dialect == "legacy" and "max_completion_tokens" in body:
        return extra_input("max_completion_tokens", body["max_completion_tokens"])
    return None


def rate_limit(
    retry_after: float | str | None = 1,
    *,
    retry_after_ms: float | None = None,
    code: str = "rate_limit_exceeded",
) -> Fault:
    """A 429 with ``Retry-After`` (seconds, or an HTTP date as a string; ``None``: no header).

    ``code="insufficient_quota"`` is OpenAI's "quota exhausted" 429, which retrying cannot fix.
    """
    headers: dict[str, str] = {}
    if retry_after is not None:
        if isinstance(retry_after, str):
            headers["Retry-After"] = retry_after
        elif float(retry_after).is_integer():
            headers["Retry-After"] = str(int(retry_after))
        else:
            headers["Retry-After"] = str(retry_after)
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    return http_error(
        429,
        "Rate limit reached for requests. Please try again later.",
        error_type="requests",
        code=code,
        headers=headers,
    )


def server_error(status: int = 500, message: str = "The server had an error.") -> Fault:
    """A 5xx (500 by default) with OpenAI's error body."""
    return http_error(status, message, error_type="server_error")


def unauthorized() -> Fault:
    """A 401 as OpenAI sends for a bad key."""
    return http_error(401, "Incorrect API key provided.", code="invalid_api_key")


def not_found(message: str = "The model does not exist or you do not have access to it.") -> Fault:
    """A 404 (unknown model or wrong path)."""
    return http_error(404, message, code="model_not_found")


def bad_request(message: str = "Invalid parameter: 'response_format'.") -> Fault:
    """A 400 (e.g. a server that does not support ``json_schema``)."""
    return http_error(400, message, code="invalid_request")


def timeout(seconds: float = 5.0, *, then: Answer | None = None) -> Fault:
    """Say nothing for ``seconds`` (set it above the client's timeout), then answer late."""
    return Fault(kind="timeout", seconds=seconds, then=then or answer({"late": True}))


def disconnect() -> Fault:
    """Close the connection without any answer (the client sees a connection error)."""
    return Fault(kind="disconnect")


def drip(
    content: str | BaseModel | Mapping[str, Any] | None = None,
    *,
    interval: float = 1.0,
    chunk: int = 1,
    headers_first: bool = False,
) -> Fault:
    """A valid answer sent ``chunk`` bytes every ``interval`` seconds (a slow-loris server).

    From the status line on (``headers_first=False``: even the headers never end), or the
    headers at once and then the body. Each read the client makes succeeds quickly; only a
    total deadline ends it.
    """
    return Fault(
        kind="drip",
        seconds=interval,
        chunk=max(1, chunk),
        headers_first=headers_first,
        then=answer(content if content is not None else {"dripped": True}),
    )


def huge(
    size: int = 50 * 1024 * 1024, *, announce_length: bool = True, gzip: bool = False
) -> Fault:
    """A 200 with a ``size``-byte body, streamed (the server itself stays small).

    ``announce_length=False`` sends no ``Content-Length`` (the body ends when the connection
    closes: only counting while reading can refuse it); ``gzip=True`` sends ``size`` bytes
    gzip-compressed (about a thousandth of it on the wire): a decompression bomb.
    """
    return Fault(kind="huge", size=size, announce_length=announce_length, gzip=gzip)


def step_from_json(obj: Mapping[str, Any]) -> Step:
    """A step from its JSON form (the ``--script`` file of the CLI).

    ``{"content": ...}`` (string or object) is an answer, ``{"tool_calls": [{"name": ...,
    "arguments": {...}}]}`` a tool call, and ``{"fault": NAME, ...}`` one of ``rate_limit``
    (``retry_after``), ``server_error`` (``status``, ``message``), ``http_error`` (``status``,
    ``message``, ``code``, ``param``), ``unsupported_parameter`` (``param``),
    ``unsupported_value`` (``param``, ``value``), ``extra_input`` (``param``),
    ``unauthorized``, ``not_found``, ``bad_request``, ``timeout``
    (``seconds``), ``disconnect``, ``drip`` (``content``, ``interval``, ``chunk``,
    ``headers_first``), ``huge`` (``size``, ``announce_length``, ``gzip``), ``truncated`` /
    ``schema_violation`` / ``not_json`` (``content``).

    Raises:
        ValueError: an unknown fault or malformed step.
    """
    fault = obj.get("fault")
    if fault is None:
        if "tool_calls" in obj:
            calls = [(str(c["name"]), dict(c.get("arguments", {}))) for c in obj["tool_calls"]]
            return tool_calls(*calls)
        if "content" not in obj:
            raise ValueError(f"a step needs 'content', 'tool_calls' or 'fault': {dict(obj)}")
        return answer(
            obj["content"],
            finish_reason=str(obj.get("finish_reason", "stop")),
            prompt_tokens=obj.get("prompt_tokens"),
            completion_tokens=obj.get("completion_tokens"),
        )
    builders: dict[str, Callable[[], Step]] = {
        "rate_limit": lambda: rate_limit(obj.get("retry_after", 1)),
        "server_error": lambda: server_error(
            int(obj.get("status", 500)), str(obj.get("message", "The server had an error."))
        ),
        "http_error": lambda: http_error(
            int(obj["status"]),
            str(obj.get("message", "error")),
            code=obj.get("code"),
            param=obj.get("param"),
        ),
        "unsupported_parameter": lambda: unsupported_parameter(str(obj.get("param", "max_tokens"))),
        "unsupported_value": lambda: unsupported_value(
            str(obj.get("param", "temperature")), obj.get("value", 0)
        ),
        "extra_input": lambda: extra_input(str(obj.get("param", "max_completion_tokens"))),
        "unauthorized": unauthorized,
        "not_found": not_found,
        "bad_request": bad_request,
        "timeout": lambda: timeout(float(obj.get("seconds", 5.0))),
        "disconnect": disconnect,
        "drip": lambda: drip(
            obj.get("content"),
            interval=float(obj.get("interval", 1.0)),
            chunk=int(obj.get("chunk", 1)),
            headers_first=bool(obj.get("headers_first", False)),
        ),
        "huge": lambda: huge(
            int(obj.get("size", 50 * 1024 * 1024)),
            announce_length=bool(obj.get("announce_length", True)),
            gzip=bool(obj.get("gzip", False)),
        ),
        "truncated": lambda: truncated(obj.get("content")),
        "schema_violation": lambda: schema_violation(obj.get("content")),
        "not_json": lambda: not_json(str(obj.get("content", "Sure! Here you go."))),
    }
    if fault not in builders:
        raise ValueError(f"unknown fault {fault!r}; one of {sorted(builders)}")
    return builders[fault]()


# --------------------------------------------------------------------------- the server


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    """Header names lower-cased."""
    body: Any
    """The parsed JSON body (``None`` for GET or an unparsable body)."""
    received_at: float = field(default_factory=time.monotonic)


class LLMTestServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 (see the module docstring).

    Args:
        steps: The first chat-completion answers, in order.
        responder: Answers chat completions once ``steps`` are used up.
        model: Named by ``GET /v1/models`` and by :meth:`settings`.
        port: 0 (the default) picks a free port.
        embedding_dim: Length of the embedding vectors (unless a request asks ``dimensions``).
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get a 401.
        dialect: Which chat parameters are taken (see the module docstring).
    """

    def __init__(
        self,
        steps: Iterable[Step] = (),
        *,
        responder: Responder | None = None,
        model: str = DEFAULT_MODEL,
        port: int = 0,
        embedding_dim: int = 8,
        api_key: str | None = None,
        dialect: Dialect = "lenient",
    ) -> None:
        self.model = model
        self.dialect: Dialect = dialect
        self.responder = responder
        self.embedding_dim = embedding_dim
        self.api_key = api_key
        self._port = port
        self._queues: dict[str, deque[Step]] = {"chat": deque(steps), "embeddings": deque()}
        self._requests: list[RecordedRequest] = []
        self._unexpected = 0
        self._refused = 0
        self._streamed = 0
        self._streams_ended = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Listen on 127.0.0.1 and serve in a background thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer((LOOPBACK, self._port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"llm-test-server-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; requests still sleeping (timeouts, delays) are woken and dropped."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ addresses

    @property
    def port(self) -> int:
        """The port listened on (after :meth:`start`)."""
        if self._httpd is None:
            raise RuntimeError("the LLM test server is not running")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``: what ``llm.base_url`` should be."""
        return f"http://{LOOPBACK}:{self.port}/v1"

    def settings(self, **overrides: Any) -> LLMSettings:
        """LLM settings pointing here: 5 s timeout, 2 retries, cache off; ``overrides`` win."""
        values: dict[str, Any] = {
            "base_url": self.base_url,
            "model": self.model,
            "timeout": 5.0,
            "max_retries": 2,
            "cache": False,
        }
        values.update(overrides)
        return LLMSettings(**values)

    # ------------------------------------------------------------------ scripting

    def enqueue(self, *steps: Step) -> None:
        """Append chat-completion steps."""
        with self._lock:
            self._queues["chat"].extend(steps)

    def enqueue_embeddings(self, *steps: Step) -> None:
        """Append embedding steps (faults; an :class:`Answer` means "answer normally")."""
        with self._lock:
            self._queues["embeddings"].extend(steps)

    @property
    def pending(self) -> int:
        """Chat steps not used yet."""
        with self._lock:
            return len(self._queues["chat"])

    # ------------------------------------------------------------------ what was received

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order."""
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat-completion requests, in order."""
        return [r.body for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        """The JSON bodies of the embedding requests, in order."""
        return [r.body for r in self.requests if r.path.endswith("/embeddings")]

    @property
    def unexpected(self) -> int:
        """Requests that found no scripted step (answered 400)."""
        with self._lock:
            return self._unexpected

    @property
    def refused(self) -> int:
        """Chat requests refused for a parameter the ``dialect`` does not take."""
        with self._lock:
            return self._refused

    @property
    def streamed_bytes(self) -> int:
        """Bytes of :func:`drip` and :func:`huge` answers written so far (all of them)."""
        with self._lock:
            return self._streamed

    @property
    def streams_ended(self) -> int:
        """:func:`drip` and :func:`huge` answers over: sent in full, or the client hung up."""
        with self._lock:
            return self._streams_ended

    def wait_streams_ended(self, count: int = 1, timeout: float = 10.0) -> bool:
        """Wait until ``count`` drip/huge answers are over; False on ``timeout``."""
        until = time.monotonic() + timeout
        while self.streams_ended < count:
            if time.monotonic() > until:
                return False
            time.sleep(0.02)
        return True

    # ------------------------------------------------------------------ used by the handler

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_step(self, endpoint: str, body: dict[str, Any]) -> Step | None:
        if endpoint == "chat" and (refusal := _refusal(self.dialect, body)) is not None:
            with self._lock:
                self._refused += 1
            return refusal
        with self._lock:
            queue = self._queues[endpoint]
            if queue:
                return queue.popleft()
        if endpoint == "chat" and self.responder is not None:
            step = self.responder(body)
            if step is not None:
                return step
        if endpoint == "embeddings":
            return None
        with self._lock:
            self._unexpected += 1
        return Fault(
            kind="http",
            status=400,
            body=_error_body(
                "llm test server: no scripted answer left for this request",
                "invalid_request_error",
                "test_server_script_exhausted",
            ),
        )

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False when the server is stopping."""
        return not self._stopping.wait(max(seconds, 0.0))

    def _streamed_some(self, count: int) -> None:
        with self._lock:
            self._streamed += count

    def _stream_ended(self) -> None:
        with self._lock:
            self._streams_ended += 1


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: LLMTestServer


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    server_version = "patchpilot-llm-test/1"

    def log_message(self, format: str, *args: Any) -> None:
        _log.debug("llm_test_server_request", line=format % args)

    # ------------------------------------------------------------------ routing

    def do_GET(self) -> None:
        owner = self.server.owner
        path = _path(self.path)
        owner._record(RecordedRequest("GET", path, _headers(self), None))
        if not self._authorised():
            return
        if _route(path) == "/models":
            self._send_json(
                200,
                {
                    "object": "list",
                    "data": [
                        {
                            "id": owner.model,
                            "object": "model",
                            "created": 0,
                            "owned_by": "patchpilot-tests",
                        }
                    ],
                },
            )
            return
        self._send_json(404, _error_body(f"no route GET {path}", "invalid_request_error", None))

    def do_POST(self) -> None:
        owner = self.server.owner
        path = _path(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        owner._record(RecordedRequest("POST", path, _headers(self), body))
        if not self._authorised():
            return
        if not isinstance(body, dict):
            self._send_json(
                400, _error_body("the body must be a JSON object", "invalid_request_error", None)
            )
            return
        route = _route(path)
        if route == "/chat/completions":
            self._chat(body)
        elif route == "/embeddings":
            self._embeddings(body)
        else:
            self._send_json(
                404, _error_body(f"no route POST {path}", "invalid_request_error", None)
            )

    def _authorised(self) -> bool:
        key = self.server.owner.api_key
        if key is None or self.headers.get("Authorization") == f"Bearer {key}":
            return True
        self._play(unauthorized(), {})
        return False

    # ------------------------------------------------------------------ endpoints

    def _chat(self, body: dict[str, Any]) -> None:
        step = self.server.owner._next_step("chat", body)
        assert step is not None  # chat always gets a step (exhaustion is a 400 fault)
        self._play(step, body)

    def _embeddings(self, body: dict[str, Any]) -> None:
        step = self.server.owner._next_step("embeddings", body)
        if isinstance(step, Fault):
            self._play(step, body)
            return
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else [str(item) for item in raw or []]
        dim = int(body.get("dimensions") or self.server.owner.embedding_dim)
        base64_format = body.get("encoding_format") == "base64"
        data = []
        for index, text in enumerate(texts):
            vector = _vector(text, dim)
            encoded: list[float] | str = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii")
                if base64_format
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": encoded})
        tokens = sum(max(1, len(text.split())) for text in texts)
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": body.get("model") or self.server.owner.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    # ------------------------------------------------------------------ steps

    def _play(self, step: Step, body: dict[str, Any]) -> None:
        owner = self.server.owner
        if isinstance(step, Answer):
            if step.delay and not owner._wait(step.delay):
                return
            self._send_json(200, _completion(step, body, owner.model), gzip=step.gzip)
        elif step.kind == "http":
            self._send_json(step.status, dict(step.body or {}), headers=step.headers)
        elif step.kind == "timeout":
            if owner._wait(step.seconds) and step.then is not None:
                self._send_json(200, _completion(step.then, body, owner.model))
        elif step.kind in ("drip", "huge"):
            self.close_connection = True
            try:
                if step.kind == "drip":
                    self._drip(step, body)
                else:
                    self._huge(step)
            except OSError:  # the client hung up: the point of these faults
                pass
            finally:
                owner._stream_ended()
        else:  # disconnect: no status line at all
            self.close_connection = True

    def _raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()
        self.server.owner._streamed_some(len(data))

    def _drip(self, step: Fault, body: dict[str, Any]) -> None:
        owner = self.server.owner
        assert step.then is not None
        payload = json.dumps(_completion(step.then, body, owner.model)).encode("utf-8")
        head = _head(
            200, [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        data = payload if step.headers_first else head + payload
        if step.headers_first:
            self._raw(head)
        for start in range(0, len(data), step.chunk):
            if start and not owner._wait(step.seconds):
                return
            self._raw(data[start : start + step.chunk])

    def _huge(self, step: Fault) -> None:
        block = b" " * 65536
        blocks, rest = divmod(step.size, len(block))
        headers = [("Content-Type", "application/json")]
        if step.gzip:  # compressed up front: about a thousandth of the size
            packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            parts = [packer.compress(block) for _ in range(blocks)]
            data = b"".join([*parts, packer.compress(block[:rest]), packer.flush()])
            headers += [("Content-Encoding", "gzip"), ("Content-Length", str(len(data)))]
            self._raw(_head(200, headers) + data)
            return
        if step.announce_length:
            headers.append(("Content-Length", str(step.size)))
        self._raw(_head(200, headers))
        for _ in range(blocks):
            if self.server.owner._stopping.is_set():
                return
            self._raw(block)
        self._raw(block[:rest])

    def _send_json(
        self,
        status: int,
        payload: Mapping[str, Any],
        headers: Iterable[tuple[str, str]] = (),
        *,
        gzip: bool = False,
    ) -> None:
        data = json.dumps(payload).encode("utf-8")
        if gzip:
            packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            data = packer.compress(data) + packer.flush()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            if gzip:
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:  # the client gave up (timeout fault): nobody to answer
            self.close_connection = True


def _route(path: str) -> str:
    return path.removeprefix("/v1") or "/"


def _path(target: str) -> str:
    """The path of a request target, in origin form or in absolute form (via a proxy)."""
    if target.startswith(("http://", "https://")):
        return urlsplit(target).path or "/"
    return target.split("?", 1)[0]


def _head(status: int, headers: Iterable[tuple[str, str]]) -> bytes:
    """A raw HTTP/1.1 status line and headers (the connection closes after the answer)."""
    lines = [f"HTTP/1.1 {status} OK", *(f"{name}: {value}" for name, value in headers)]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def _headers(handler: BaseHTTPRequestHandler) -> dict[str, str]:
    return {name.lower(): value for name, value in handler.headers.items()}


def _completion(step: Answer, body: Mapping[str, Any], default_model: str) -> dict[str, Any]:
    messages = body.get("messages") or []
    prompt_chars = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
    answered = (step.content or "") + "".join(c.arguments for c in step.tool_calls)
    prompt_tokens = step.prompt_tokens if step.prompt_tokens is not None else prompt_chars // 4 + 1
    completion_tokens = (
        step.completion_tokens if step.completion_tokens is not None else len(answered) // 4 + 1
    )
    message: dict[str, Any] = {
        "role": "assistant",
        "content": step.content,
        "refusal": step.refusal,
    }
    if step.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.call_id or f"call_{index}",
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for index, call in enumerate(step.tool_calls, start=1)
        ]
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-{digest}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": step.model or body.get("model") or default_model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": step.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": None,
    }


def _vector(text: str, dim: int) -> list[float]:
    """A deterministic unit vector for ``text`` (equal texts, equal vectors)."""
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        block = hashlib.sha256(f"{counter}\x00{text}".encode()).digest()
        values.extend(
            int.from_bytes(block[i : i + 4], "big") / 2**31 - 1.0 for i in range(0, 32, 4)
        )
        counter += 1
    values = values[:dim]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    """Serve on 127.0.0.1 until interrupted (SIGINT/SIGTERM)."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.llm_server",
        description="Scripted OpenAI-compatible test server (loopback only).",
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: any free)")
    parser.add_argument("--script", type=Path, help="JSON file: a list of steps")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="model name to report")
    parser.add_argument(
        "--default",
        metavar="JSON",
        help="content answered once the script is used up (else: HTTP 400)",
    )
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY'")
    parser.add_argument(
        "--dialect",
        choices=["lenient", "reasoning", "legacy"],
        default="lenient",
        help="reasoning: refuse max_tokens and temperature != 1 (OpenAI's o-series/gpt-5); "
        "legacy: refuse max_completion_tokens (older servers)",
    )
    args = parser.parse_args(argv)

    steps: list[Step] = []
    if args.script is not None:
        script = json.loads(args.script.read_text(encoding="utf-8"))
        if not isinstance(script, list):
            parser.error("--script must hold a JSON list of steps")
        steps = [step_from_json(item) for item in script]
    responder: Responder | None = None
    if args.default is not None:
        fallback = answer(args.default)

        def responder(_body: dict[str, Any]) -> Step:
            return fallback

    done = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    with LLMTestServer(
        steps,
        responder=responder,
        model=args.model,
        port=args.port,
        api_key=args.api_key,
        dialect=args.dialect,
    ) as server:
        _log.info("llm_test_server_listening", base_url=server.base_url, steps=len(steps))
        done.wait()
        _log.info("llm_test_server_stopped", requests=len(server.requests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Bounded HTTP for LLM calls: one total deadline per call, and a cap on the response size.

httpx2 (the HTTP client of the ``openai`` SDK) only has *per-operation* timeouts: a server that
sends one byte a second never trips a 30 s read timeout, and a 50 MB body is buffered whole.
This module closes both gaps with the extension points httpx2 and httpcore2 offer, so the SDK
itself is used unchanged (``OpenAI(http_client=make_http_client(...))``):

* **Deadline.** A :class:`httpcore2.NetworkBackend` wraps the default one: every connect,
  TLS handshake, read and write gets ``min(its own timeout, time left)`` and none starts once
  the deadline has passed (it raises the matching ``httpcore2`` timeout, which the SDK reports
  as ``APITimeoutError``). The deadline is an absolute :func:`time.monotonic` instant set for
  the current thread/context by :func:`deadline_scope`; outside a scope nothing changes.
  Status line and headers are bounded too (they go through the same reads), and so is a
  dripping proxy. Not bounded: the DNS lookup, which the OS does in ``getaddrinfo``.
* **Size.** :class:`GuardedTransport` refuses a ``Content-Length`` above the cap before reading
  the body and counts the body while it is read, raising :class:`ResponseRefused` as soon as
  it passes the cap; gzip/deflate answers are decompressed here, at most ``cap + 1`` bytes at a
  time, so a compression bomb is refused the same way. Other encodings are refused (only
  ``gzip, deflate`` are asked for). The SDK reports :class:`ResponseRefused` as an
  ``APIConnectionError`` whose ``__cause__`` it is.

Use::

    http = make_http_client(max_response_bytes=settings.max_response_bytes)
    sdk = openai.OpenAI(base_url=..., http_client=http, max_retries=0)
    with deadline_scope(time.monotonic() + settings.deadline):
        sdk.chat.completions.create(...)
"""

from __future__ import annotations

import ssl
import time
import zlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Final

import httpcore2
import httpx2

__all__ = [
    "ACCEPT_ENCODING",
    "GuardedTransport",
    "ResponseRefused",
    "deadline_left",
    "deadline_scope",
    "make_http_client",
]

ACCEPT_ENCODING: Final = "gzip, deflate"
"""What is asked for: the encodings :class:`GuardedTransport` can decode within the cap."""

_DECODED: Final = frozenset({"gzip", "x-gzip", "deflate"})
_IDENTITY: Final = frozenset({"", "identity"})

_DEADLINE: ContextVar[float | None] = ContextVar("patchpilot_llm_deadline", default=None)


class ResponseRefused(httpx2.RequestError):
    """A response refused while it was being read (too large, or an unsupported encoding).

    Retrying would fetch the same thing: callers should not retry.
    """


# --------------------------------------------------------------------------- deadline


@contextmanager
def deadline_scope(deadline: float) -> Iterator[None]:
    """Bound every network operation of this thread/context to ``deadline`` (monotonic)."""
    token = _DEADLINE.set(deadline)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def deadline_left() -> float | None:
    """Seconds left before the current scope's deadline (``None`` outside a scope)."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def _bounded(
    timeout: float | None, error: type[httpcore2.TimeoutException], what: str
) -> float | None:
    left = deadline_left()
    if left is None:
        return timeout
    if left <= 0:
        raise error(f"the call's deadline passed before {what}")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore2.NetworkStream):
    """A network stream whose every operation ends by the current deadline."""

    def __init__(self, inner: httpcore2.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout, httpcore2.ReadTimeout, "a read"))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, httpcore2.WriteTimeout, "a write"))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout, "the TLS handshake")
        return _DeadlineStream(self._inner.start_tls(ssl_context, server_hostname, bounded))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore2.NetworkBackend):
    """The default backend, with every connection made by and bounded to the deadline."""

    def __init__(self, inner: httpcore2.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout, "connecting")
        stream = self._inner.connect_tcp(host, port, bounded, local_address, socket_options)
        return _DeadlineStream(stream)

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        bounded = _bounded(timeout, httpcore2.ConnectTimeout, "connecting")
        return _DeadlineStream(self._inner.connect_unix_socket(path, bounded, socket_options))

    def sleep(self, seconds: float) -> None:
        left = deadline_left()
        self._inner.sleep(seconds if left is None else max(0.0, min(seconds, left)))


# --------------------------------------------------------------------------- size


class _CappedStream(httpx2.SyncByteStream):
    """The body, decoded if need be, refused as soon as it passes ``limit`` bytes."""

    def __init__(self, inner: httpx2.SyncByteStream, limit: int, *, decode: bool) -> None:
        self._inner = inner
        self._limit = limit
        # MAX_WBITS | 32: a gzip or a zlib header, detected from the first bytes
        self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32) if decode else None

    def __iter__(self) -> Iterator[bytes]:
        left = self._limit
        for chunk in self._inner:
            data = self._decode(chunk, left)
            left -= len(data)
            if left < 0:
                raise self._too_large()
            if data:
                yield data
        if self._decoder is not None:
            data = self._decoder.flush(left + 1)
            if len(data) > left:
                raise self._too_large()
            if data:
                yield data

    def _decode(self, chunk: bytes, left: int) -> bytes:
        if self._decoder is None:
            return chunk
        try:
            # never more than one byte past the cap, whatever the compression ratio
            return self._decoder.decompress(chunk, left + 1)
        except zlib.error as exc:
            raise ResponseRefused(f"the compressed response does not decode: {exc}") from exc

    def _too_large(self) -> ResponseRefused:
        return ResponseRefused(f"the response is larger than {self._limit} bytes")

    def close(self) -> None:
        self._inner.close()


class GuardedTransport(httpx2.HTTPTransport):
    """:class:`httpx2.HTTPTransport` with the deadline backend and the response size cap.

    Args:
        max_response_bytes: Largest body accepted, after decompression.
        **kwargs: As for :class:`httpx2.HTTPTransport` (``verify``, ``proxy``, ``limits``...).
    """

    def __init__(self, *, max_response_bytes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._max_response_bytes = max_response_bytes
        # httpx2 builds the httpcore2 pool (plain, HTTP proxy or SOCKS) from its own options
        # but does not take a network backend; the pool makes every connection through this
        # attribute, so wrapping it here bounds them all.
        pool = self._pool
        if not isinstance(pool._network_backend, httpcore2.NetworkBackend):  # pragma: no cover
            raise TypeError("httpcore2's connection pool has no network backend to wrap")
        pool._network_backend = _DeadlineBackend(pool._network_backend)

    @property
    def max_response_bytes(self) -> int:
        """Largest body accepted."""
        return self._max_response_bytes

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Send ``request``; the response's body is capped (and decoded) while it is read."""
        response = super().handle_request(request)
        limit = self._max_response_bytes
        length = response.headers.get("content-length", "").strip()
        encoding = response.headers.get("content-encoding", "").strip().lower()
        refusal = None
        if length.isdigit() and int(length) > limit:
            refusal = f"the response announces {int(length)} bytes, more than {limit}"
        elif encoding not in _DECODED and encoding not in _IDENTITY:
            refusal = (
                f"the response uses Content-Encoding {encoding[:40]!r}; only "
                f"{ACCEPT_ENCODING} or none is accepted"
            )
        if refusal is not None:
            response.close()  # the body is never read: the connection is dropped
            raise ResponseRefused(refusal, request=request)
        stream = response.stream
        if not isinstance(stream, httpx2.SyncByteStream):  # pragma: no cover
            raise TypeError("a sync transport answered with an async stream")
        headers = response.headers
        if encoding in _DECODED:  # decoded here: httpx2 must not decode it again
            headers = httpx2.Headers(
                [
                    (name, value)
                    for name, value in response.headers.raw
                    if name.lower() not in (b"content-encoding", b"content-length")
                ]
            )
        return httpx2.Response(
            status_code=response.status_code,
            headers=headers,
            stream=_CappedStream(stream, limit, decode=encoding in _DECODED),
            extensions=response.extensions,
        )


class _GuardedClient(httpx2.Client):
    """An :class:`httpx2.Client` whose every transport is a :class:`GuardedTransport`.

    httpx2 makes one transport for direct connections and one per proxy of the environment
    (``HTTPS_PROXY``, ``NO_PROXY``...) through these two factory methods; overriding them keeps
    the environment's proxies working, each one guarded too.
    """

    def __init__(self, *, max_response_bytes: int, **kwargs: Any) -> None:
        self._guard_bytes = max_response_bytes  # read by the factories during __init__
        super().__init__(**kwargs)

    def _init_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
        transport = kwargs.pop("transport", None)
        if isinstance(transport, httpx2.BaseTransport):
            return transport
        return GuardedTransport(*args, max_response_bytes=self._guard_bytes, **kwargs)

    def _init_proxy_transport(self, *args: Any, **kwargs: Any) -> httpx2.BaseTransport:
        if args:
            kwargs["proxy"], args = args[0], args[1:]
        return GuardedTransport(*args, max_response_bytes=self._guard_bytes, **kwargs)


def make_http_client(
    *, max_response_bytes: int, timeout: float = 30.0, follow_redirects: bool = True
) -> httpx2.Client:
    """An :class:`httpx2.Client` for the ``openai`` SDK: deadline-aware and size-capped.

    Args:
        max_response_bytes: Largest response body accepted (after decompression).
        timeout: Default per-operation timeout (calls normally pass their own).
        follow_redirects: As the SDK's own client does by default.
    """
    return _GuardedClient(
        max_response_bytes=max_response_bytes,
        timeout=httpx2.Timeout(timeout),
        follow_redirects=follow_redirects,
        headers={"Accept-Encoding": ACCEPT_ENCODING},
    )

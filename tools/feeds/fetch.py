"""Download feeds over HTTPS: conditional, cached, size-limited, retried.

:class:`FeedFetcher` downloads one feed document per call (NVD: every page of a query, merged
into one document) into an on-disk cache::

    <cache_dir>/<kind>/<sha256(url)[:16]>-<file name>             the document
    <cache_dir>/<kind>/<sha256(url)[:16]>-<file name>.meta.json   url, etag, last_modified,
                                                                   fetched_at, sha256, size

* **Conditional requests.** The cached ETag / Last-Modified (or the ``validators`` given) are
  sent as ``If-None-Match`` / ``If-Modified-Since``; a ``304 Not Modified`` returns the cached
  file (``data=None``, ``from_cache=True``).
* **Retries** (tenacity) on HTTP 429, 5xx and connection errors (refused, reset, a body cut
  short): ``Retry-After`` (seconds or an HTTP date) is honoured, otherwise exponential backoff;
  every wait is capped (60 s by default). Then :class:`FeedFetchError`. Other 4xx statuses fail
  at once.
* **Size limit.** ``Content-Length`` is checked up front and the streamed body is counted; past
  ``max_bytes`` the download is aborted with :class:`FeedError`.
* **NVD paging** follows ``startIndex`` / ``resultsPerPage`` / ``totalResults``; the API key is
  read from ``NVD_API_KEY`` and sent as the ``apiKey`` header. Secrets are never logged or
  written to the cache (URLs are logged without credentials or secret-looking parameters).
"""

from __future__ import annotations

import email.utils
import functools
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from patchpilot.core.errors import FeedError, FeedFetchError
from patchpilot.core.feeds import FeedKind
from patchpilot.core.models import utcnow
from patchpilot.core.resources import ClosingContext
from patchpilot.tools.feeds._common import DEFAULT_MAX_BYTES, load_json, sha256_hex
from patchpilot.tools.feeds.debian import DLA_LIST_URL, DSA_LIST_URL, TRACKER_JSON_URL
from patchpilot.tools.feeds.epss import EPSS_URL
from patchpilot.tools.feeds.kev import KEV_URL
from patchpilot.tools.feeds.nvd import NVD_URL
from patchpilot.tools.feeds.osv import OSV_DEBIAN_URL

__all__ = ["FEED_URLS", "NVD_API_KEY_ENV", "FeedFetcher", "FetchResult"]

_log = structlog.get_logger(__name__)

FEED_URLS: Final[dict[FeedKind, str]] = {
    FeedKind.DEBIAN_DSA: DSA_LIST_URL,
    FeedKind.DEBIAN_DLA: DLA_LIST_URL,
    FeedKind.DEBIAN_JSON: TRACKER_JSON_URL,
    FeedKind.OSV: OSV_DEBIAN_URL,
    FeedKind.KEV: KEV_URL,
    FeedKind.EPSS: EPSS_URL,
    FeedKind.NVD: NVD_URL,
}
"""The live default URL of each feed."""

NVD_API_KEY_ENV: Final = "NVD_API_KEY"
NVD_MAX_PAGE: Final = 2000
"""Largest ``resultsPerPage`` the NVD CVE API 2.0 accepts."""

_USER_AGENT: Final = "patchpilot-feeds/0.1 (+https://github.com/patchpilot)"
_SECRET_PARAM_RE: Final = re.compile(r"key|token|secret|passw|sig|auth", re.IGNORECASE)
_SAFE_NAME_RE: Final = re.compile(r"[^A-Za-z0-9._-]+")
_HEADER_VALUE_RE: Final = re.compile(r"^[\x20-\x7e]{1,1024}$")


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one :meth:`FeedFetcher.fetch`.

    Attributes:
        kind: The feed.
        url: The URL fetched (without credentials).
        data: The document, or ``None`` when the server answered 304 (use ``path``).
        etag: The ETag to send next time, if any.
        last_modified: The Last-Modified value to send next time, if any.
        fetched_at: When the server was asked (UTC).
        from_cache: True when the cached copy is current (HTTP 304).
        path: The cached document on disk (``None`` only after a 304 with no cached copy).
        sha256: Digest of the document, when known.
    """

    kind: FeedKind
    url: str
    data: bytes | None
    etag: str | None
    last_modified: str | None
    fetched_at: datetime
    from_cache: bool
    path: Path | None
    sha256: str | None = None


class _Retryable(Exception):
    """A transient failure: retried, then turned into FeedFetchError."""

    def __init__(
        self, reason: str, *, status: int | None = None, retry_after: float | None = None
    ) -> None:
        self.reason = reason
        self.status = status
        self.retry_after = retry_after
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class _Got:
    status: int
    body: bytes | None
    etag: str | None
    last_modified: str | None


class FeedFetcher(ClosingContext):
    """Downloads feeds with conditional requests, retries, a size limit and a disk cache.

    Args:
        cache_dir: Where documents and their ``.meta.json`` sidecars are kept.
        client: An ``httpx.Client`` to use (tests, proxies); one is created (and closed by
            :meth:`close`) when omitted.
        max_bytes: Largest document accepted (decompressed size); NVD: all pages together.
        timeout: Per-request timeout in seconds (connect, read, write, pool).
        max_attempts: Attempts per request before :class:`FeedFetchError`.
        backoff: First exponential-backoff wait in seconds (doubled per attempt).
        max_wait: Cap on any single wait, including a server's ``Retry-After``.
        sleep: The sleep function (injected by tests).
        nvd_page_delay: Pause between NVD pages; defaults to NVD's advice (6 s without an API
            key, 0.6 s with one).

    Example::

        with FeedFetcher(Path("~/.cache/patchpilot/feeds").expanduser()) as fetcher:
            result = fetcher.fetch(FeedKind.KEV)
            batch = parse_fetched(result)
    """

    def __init__(
        self,
        cache_dir: Path,
        *,
        client: httpx.Client | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        timeout: float = 60.0,
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        nvd_page_delay: float | None = None,
    ) -> None:
        if max_bytes <= 0 or max_attempts < 1 or timeout <= 0:
            raise ValueError("max_bytes, timeout and max_attempts must be positive")
        self._cache_dir = Path(cache_dir)
        self._owns_client = client is None
        self._client = client or httpx.Client(headers={"User-Agent": _USER_AGENT})
        self._max_bytes = max_bytes
        self._timeout = timeout
        self._max_attempts = max_attempts
        self._backoff = max(backoff, 0.0)
        self._max_wait = max(max_wait, 0.0)
        self._sleep = sleep
        self._nvd_page_delay = nvd_page_delay

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Close the HTTP client if this fetcher created it."""
        if self._owns_client:
            self._client.close()

    # ------------------------------------------------------------------ public API

    def fetch(
        self,
        kind: FeedKind,
        url: str | None = None,
        *,
        validators: tuple[str | None, str | None] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> FetchResult:
        """Download a feed document (conditionally) into the cache.

        Args:
            kind: The feed.
            url: Its URL; :data:`FEED_URLS` ``[kind]`` by default.
            validators: ``(etag, last_modified)`` to send; by default those of the cached copy.
                Ignored for NVD, whose API does not support conditional requests.
            params: Extra query parameters (NVD: e.g. ``lastModStartDate``/``lastModEndDate``).

        Returns:
            The result; ``data`` is ``None`` on a 304 (the cached copy at ``path`` is current).

        Raises:
            FeedFetchError: On a network failure or HTTP error status after the retries.
            FeedError: If the document exceeds ``max_bytes`` (or an NVD page is malformed).
        """
        kind = FeedKind(kind)
        target = url or FEED_URLS[kind]
        scheme = urlsplit(target).scheme.lower()
        if scheme not in ("http", "https"):
            raise FeedFetchError(_redact(target), f"unsupported URL scheme {scheme!r}")
        if kind is FeedKind.NVD:
            return self._fetch_nvd(target, dict(params or {}))
        return self._fetch_document(kind, target, validators=validators, params=dict(params or {}))

    def cached(
        self, kind: FeedKind, url: str | None = None, *, params: Mapping[str, str] | None = None
    ) -> FetchResult | None:
        """Return the cached copy of a feed without touching the network.

        Args:
            kind: The feed.
            url: Its URL; :data:`FEED_URLS` ``[kind]`` by default.
            params: The query parameters it was fetched with.

        Returns:
            The cached document, or ``None`` when there is none.
        """
        kind = FeedKind(kind)
        target = url or FEED_URLS[kind]
        data_path, meta_path = self._cache_paths(kind, target, dict(params or {}))
        meta = self._read_meta(meta_path)
        if meta is None or not data_path.is_file():
            return None
        data = data_path.read_bytes()
        return FetchResult(
            kind=kind,
            url=_redact(target),
            data=data,
            etag=_str_or_none(meta.get("etag")),
            last_modified=_str_or_none(meta.get("last_modified")),
            fetched_at=_meta_time(meta) or utcnow(),
            from_cache=True,
            path=data_path,
            sha256=sha256_hex(data),
        )

    # ------------------------------------------------------------------ single documents

    def _fetch_document(
        self,
        kind: FeedKind,
        url: str,
        *,
        validators: tuple[str | None, str | None] | None,
        params: dict[str, str],
    ) -> FetchResult:
        safe = _redact(url)
        data_path, meta_path = self._cache_paths(kind, url, params)
        meta = self._read_meta(meta_path) if data_path.is_file() else None
        if validators is not None:
            etag, last_modified = validators
        elif meta is not None:
            etag = _str_or_none(meta.get("etag"))
            last_modified = _str_or_none(meta.get("last_modified"))
        else:
            etag = last_modified = None
        headers: dict[str, str] = {}
        if etag and _HEADER_VALUE_RE.match(etag):
            headers["If-None-Match"] = etag
        if last_modified and _HEADER_VALUE_RE.match(last_modified):
            headers["If-Modified-Since"] = last_modified

        got = self._get(url, headers=headers, params=params, limit=self._max_bytes)
        fetched_at = utcnow()
        if got.status == 304:
            if not headers:
                raise FeedFetchError(safe, "HTTP 304 to an unconditional request", status=304)
            # The cached copy is only "current" if it is the document the validators name.
            have_copy = (
                meta is not None
                and data_path.is_file()
                and _str_or_none(meta.get("etag")) == etag
                and _str_or_none(meta.get("last_modified")) == last_modified
            )
            if have_copy and meta is not None:
                meta["checked_at"] = fetched_at.isoformat()
                self._write(meta_path, _meta_bytes(meta))
            _log.info("feed.not_modified", feed=kind.value, url=safe, cached=have_copy)
            return FetchResult(
                kind=kind,
                url=safe,
                data=None,
                etag=got.etag or etag,
                last_modified=got.last_modified or last_modified,
                fetched_at=fetched_at,
                from_cache=True,
                path=data_path if have_copy else None,
                sha256=_str_or_none(meta.get("sha256")) if have_copy and meta else None,
            )
        body = got.body or b""
        digest = sha256_hex(body)
        meta_path.unlink(missing_ok=True)  # never leave old validators beside a new document
        self._write(data_path, body)
        self._write(
            meta_path,
            _meta_bytes(
                {
                    "kind": kind.value,
                    "url": safe,
                    "etag": got.etag,
                    "last_modified": got.last_modified,
                    "fetched_at": fetched_at.isoformat(),
                    "sha256": digest,
                    "size": len(body),
                }
            ),
        )
        _log.info("feed.fetched", feed=kind.value, url=safe, bytes=len(body), sha256=digest)
        return FetchResult(
            kind=kind,
            url=safe,
            data=body,
            etag=got.etag,
            last_modified=got.last_modified,
            fetched_at=fetched_at,
            from_cache=False,
            path=data_path,
            sha256=digest,
        )

    # ------------------------------------------------------------------ NVD paging

    def _fetch_nvd(self, url: str, params: dict[str, str]) -> FetchResult:
        safe = _redact(url)
        api_key = os.environ.get(NVD_API_KEY_ENV, "").strip()
        headers = {"apiKey": api_key} if api_key else {}
        delay = self._nvd_page_delay
        if delay is None:
            delay = 0.6 if api_key else 6.0
        try:
            per_page = int(params.pop("resultsPerPage", NVD_MAX_PAGE))
        except ValueError:
            raise FeedFetchError(safe, "resultsPerPage must be an integer") from None
        per_page = min(max(per_page, 1), NVD_MAX_PAGE)
        params.pop("startIndex", None)

        start, total, pages, size = 0, -1, 0, 0
        vulnerabilities: list[Any] = []
        stamp: object = None
        while True:
            if pages:
                self._sleep(delay)
            query = {**params, "resultsPerPage": str(per_page), "startIndex": str(start)}
            got = self._get(
                url,
                headers=headers,
                params=query,
                limit=self._max_bytes - size,
                follow_redirects=not api_key,  # never forward the key to another host
            )
            if got.status != 200 or got.body is None:
                raise FeedFetchError(
                    safe, f"unexpected HTTP {got.status} for a page", status=got.status
                )
            size += len(got.body)
            where = f"{safe} (startIndex {start})"
            page = load_json(got.body, source=where)
            items, page_total = _nvd_page(page, start, source=where)
            if pages and page_total != total:
                raise FeedFetchError(
                    safe,
                    f"totalResults changed from {total} to {page_total} while paging "
                    "(NVD data changed during the download); retry later",
                )
            total = page_total
            vulnerabilities.extend(items)
            stamp = page.get("timestamp", stamp)
            pages += 1
            start += len(items)
            if start >= total:
                break
            if not items:
                raise FeedFetchError(safe, f"empty page at startIndex {start} of {total}")

        merged = {
            "resultsPerPage": len(vulnerabilities),
            "startIndex": 0,
            "totalResults": total,
            "format": "NVD_CVE",
            "version": "2.0",
            "timestamp": stamp,
            "vulnerabilities": vulnerabilities,
        }
        body = json.dumps(merged, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        fetched_at = utcnow()
        digest = sha256_hex(body)
        data_path, meta_path = self._cache_paths(FeedKind.NVD, url, params)
        meta_path.unlink(missing_ok=True)
        self._write(data_path, body)
        self._write(
            meta_path,
            _meta_bytes(
                {
                    "kind": FeedKind.NVD.value,
                    "url": _redact(_with_query(url, params)),
                    "etag": None,
                    "last_modified": None,
                    "fetched_at": fetched_at.isoformat(),
                    "sha256": digest,
                    "size": len(body),
                    "pages": pages,
                    "total_results": total,
                }
            ),
        )
        _log.info("feed.fetched", feed="nvd", url=safe, pages=pages, cves=len(vulnerabilities))
        return FetchResult(
            kind=FeedKind.NVD,
            url=safe,
            data=body,
            etag=None,
            last_modified=None,
            fetched_at=fetched_at,
            from_cache=False,
            path=data_path,
            sha256=digest,
        )

    # ------------------------------------------------------------------ HTTP with retries

    def _get(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        limit: int,
        follow_redirects: bool = True,
    ) -> _Got:
        retrying = Retrying(
            stop=stop_after_attempt(self._max_attempts),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            sleep=self._sleep,
            before_sleep=functools.partial(self._before_sleep, _redact(url)),
            reraise=True,
        )
        try:
            return retrying(self._get_once, url, headers, params, limit, follow_redirects)
        except _Retryable as exc:
            raise FeedFetchError(
                _redact(url), exc.reason, status=exc.status, attempts=self._max_attempts
            ) from None

    def _get_once(
        self,
        url: str,
        headers: Mapping[str, str],
        params: Mapping[str, str],
        limit: int,
        follow_redirects: bool,
    ) -> _Got:
        safe = _redact(url)
        try:
            with self._client.stream(
                "GET",
                url,
                headers=dict(headers),
                params=dict(params) or None,
                timeout=self._timeout,
                follow_redirects=follow_redirects,
            ) as response:
                status = response.status_code
                etag = _header(response, "ETag")
                last_modified = _header(response, "Last-Modified")
                if status == 304:
                    return _Got(304, None, etag, last_modified)
                if status == 429 or status >= 500:
                    raise _Retryable(
                        f"HTTP {status} {response.reason_phrase}".rstrip(),
                        status=status,
                        retry_after=_retry_after(response.headers.get("Retry-After")),
                    )
                if status != 200:
                    raise FeedFetchError(
                        safe, f"HTTP {status} {response.reason_phrase}".rstrip(), status=status
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > limit:
                    raise FeedError(
                        f"Content-Length {declared} exceeds the size limit of {limit} bytes",
                        source=safe,
                    )
                body = bytearray()
                for chunk in response.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise FeedError(
                            f"download aborted: body exceeds the size limit of {limit} bytes",
                            source=safe,
                        )
                return _Got(200, bytes(body), etag, last_modified)
        except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects) as exc:
            raise FeedFetchError(safe, f"{type(exc).__name__}: {exc}") from None
        except httpx.DecodingError as exc:
            raise FeedError(f"cannot decode the response body: {exc}", source=safe) from None
        except httpx.TransportError as exc:
            raise _Retryable(f"{type(exc).__name__}: {exc}") from None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_wait)
        return float(min(self._backoff * 2 ** (state.attempt_number - 1), self._max_wait))

    def _before_sleep(self, url: str, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        _log.warning(
            "feed.fetch.retry",
            url=url,
            attempt=state.attempt_number,
            max_attempts=self._max_attempts,
            reason=getattr(exc, "reason", str(exc)),
            wait_s=round(state.next_action.sleep, 3) if state.next_action else None,
        )

    # ------------------------------------------------------------------ cache

    def _cache_paths(
        self, kind: FeedKind, url: str, params: Mapping[str, str]
    ) -> tuple[Path, Path]:
        identity = _with_query(url, params)
        digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
        name = _SAFE_NAME_RE.sub("_", urlsplit(url).path.rsplit("/", 1)[-1])[:64].strip("._")
        data_path = self._cache_dir / kind.value / f"{digest}-{name or 'feed'}"
        return data_path, data_path.with_name(data_path.name + ".meta.json")

    @staticmethod
    def _read_meta(path: Path) -> dict[str, Any] | None:
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            _log.warning("feed.cache_meta_unreadable", path=str(path))
            return None
        return meta if isinstance(meta, dict) else None

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
        try:
            tmp.write_bytes(data)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- helpers


def _nvd_page(page: object, start: int, *, source: str) -> tuple[list[Any], int]:
    if not isinstance(page, dict):
        raise FeedError("an NVD page must be a JSON object", source=source)
    items, total, index = (
        page.get("vulnerabilities"),
        page.get("totalResults"),
        page.get("startIndex"),
    )
    if not isinstance(items, list):
        raise FeedError("not an NVD CVE API 2.0 page: no 'vulnerabilities' list", source=source)
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise FeedError(f"malformed totalResults {total!r}", source=source)
    if index is not None and index != start:
        raise FeedError(f"asked for startIndex {start}, got {index!r}", source=source)
    return items, total


def _header(response: httpx.Response, name: str) -> str | None:
    value = response.headers.get(name)
    return value if value and _HEADER_VALUE_RE.match(value) else None


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _redact(url: str) -> str:
    """The URL without user:password and with secret-looking query values masked."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = urlencode(
        [
            (key, "***" if _SECRET_PARAM_RE.search(key) else value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
        ]
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _with_query(url: str, params: Mapping[str, str]) -> str:
    if not params:
        return url
    separator = "&" if urlsplit(url).query else "?"
    return url + separator + urlencode(sorted(params.items()))


def _meta_bytes(meta: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(meta), indent=2, sort_keys=True).encode("utf-8")


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _meta_time(meta: Mapping[str, Any]) -> datetime | None:
    value = meta.get("fetched_at")
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

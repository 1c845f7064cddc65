"""FeedFetcher against a real HTTP server on 127.0.0.1 serving the real feed samples.

The server (``http.server.ThreadingHTTPServer`` in a thread, random port) plays a script per
path: a list of responses consumed in order (the last one repeats). Waits are recorded by an
injected ``sleep`` instead of slept, so retries cost no time.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import structlog

from patchpilot.tools.feeds import FeedError, FeedFetcher, FeedFetchError, FeedKind, parse_fetched
from patchpilot.tools.feeds.fetch import _redact, _retry_after

pytestmark = pytest.mark.integration


@dataclass
class Reply:
    """One scripted response."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drop_after: int | None = None  # close the socket after this many body bytes
    length: bool = True  # send Content-Length
    not_modified_if: str | None = None  # answer 304 when If-None-Match equals this


@dataclass
class Seen:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class Server:
    """The scripted server and what it saw."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def script(self, path: str, *replies: Reply) -> str:
        with self.lock:
            self.scripts[path] = list(replies)
        return self.url(path)

    def next_reply(self, key: str) -> Reply | None:
        with self.lock:
            replies = self.scripts.get(key)
            if not replies:
                return None
            return replies.pop(0) if len(replies) > 1 else replies[0]

    def requests(self, path: str) -> list[Seen]:
        return [s for s in self.seen if s.path == path]


def _handler(server: Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # silence stderr
            return

        def handle(self) -> None:
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):  # the client hung up: expected here
                self.close_connection = True

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            with server.lock:
                server.seen.append(
                    Seen(parts.path, query, {k.lower(): v for k, v in self.headers.items()})
                )
            key = parts.path
            if "startIndex" in query:  # NVD paging: one script per page
                key = f"{parts.path}?startIndex={query['startIndex'][0]}"
            reply = server.next_reply(key)
            try:
                self._send(reply)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _send(self, reply: Reply | None) -> None:
            if reply is None:
                reply = Reply(404, b"not found")
            if (
                reply.not_modified_if is not None
                and self.headers.get("If-None-Match") == reply.not_modified_if
            ):
                self.send_response(304)
                self.send_header("ETag", reply.not_modified_if)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if reply.length:
                self.send_header("Content-Length", str(len(reply.body)))
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            body = reply.body if reply.drop_after is None else reply.body[: reply.drop_after]
            self.wfile.write(body)
            self.wfile.flush()
            if reply.drop_after is not None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

    return Handler


@pytest.fixture(scope="module")
def http_server() -> Iterator[Server]:
    server = Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="feed-test-http", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture
def server(http_server: Server) -> Server:
    with http_server.lock:
        http_server.scripts.clear()
        http_server.seen.clear()
    return http_server


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def fetcher(tmp_path: Path, waits: list[float]) -> Iterator[FeedFetcher]:
    client = httpx.Client(trust_env=False)  # no proxy from the environment for 127.0.0.1
    with FeedFetcher(
        tmp_path / "cache",
        client=client,
        max_bytes=8 * 1024 * 1024,
        timeout=10.0,
        max_attempts=3,
        backoff=0.5,
        max_wait=2.0,
        sleep=waits.append,
        nvd_page_delay=0.0,
    ) as fetcher:
        yield fetcher
    client.close()


@pytest.fixture(scope="module")
def kev_bytes(shared_dir: Path) -> bytes:
    return (shared_dir / "feeds/kev/known_exploited_vulnerabilities.json").read_bytes()


# --------------------------------------------------------------------------- conditional + cache


def test_etag_then_304_uses_the_cache(
    server: Server, fetcher: FeedFetcher, kev_bytes: bytes, tmp_path: Path
) -> None:
    etag = '"kev-2025.08.25"'
    url = server.script(
        "/kev.json",
        Reply(
            body=kev_bytes,
            headers={"ETag": etag, "Last-Modified": "Mon, 25 Aug 2025 17:04:19 GMT"},
            not_modified_if=etag,
        ),
    )
    first = fetcher.fetch(FeedKind.KEV, url)
    assert first.data == kev_bytes
    assert (first.etag, first.last_modified, first.from_cache) == (
        etag,
        "Mon, 25 Aug 2025 17:04:19 GMT",
        False,
    )
    assert first.path is not None
    assert first.path.read_bytes() == kev_bytes
    assert first.path.is_relative_to(tmp_path / "cache" / "kev")
    meta = json.loads(first.path.with_name(first.path.name + ".meta.json").read_text())
    assert meta["url"] == url
    assert meta["etag"] == etag
    assert meta["size"] == len(kev_bytes)
    assert len(parse_fetched(first).kev) == 1404

    second = fetcher.fetch(FeedKind.KEV, url)
    assert second.data is None
    assert second.from_cache is True
    assert second.path == first.path
    requests = server.requests("/kev.json")
    assert len(requests) == 2
    assert "if-none-match" not in requests[0].headers
    assert requests[1].headers["if-none-match"] == etag
    assert requests[1].headers["if-modified-since"] == "Mon, 25 Aug 2025 17:04:19 GMT"
    batch = parse_fetched(second)
    assert len(batch.kev) == 1404
    assert batch.etag == etag
    cached = fetcher.cached(FeedKind.KEV, url)
    assert cached is not None
    assert cached.data == kev_bytes


def test_explicit_validators(server: Server, fetcher: FeedFetcher) -> None:
    url = server.script("/dsa", Reply(body=b"x", not_modified_if='"v1"'))
    result = fetcher.fetch(FeedKind.DEBIAN_DSA, url, validators=('"v1"', None))
    assert result.data is None
    assert result.from_cache is True
    assert result.path is None  # nothing cached yet: the caller's own copy is current
    assert "if-modified-since" not in server.requests("/dsa")[0].headers


def test_changed_document_replaces_the_cache(server: Server, fetcher: FeedFetcher) -> None:
    url = server.script(
        "/doc",
        Reply(body=b"v1", headers={"ETag": '"1"'}, not_modified_if='"1"'),
        Reply(body=b"v2", headers={"ETag": '"2"'}, not_modified_if='"2"'),
    )
    first = fetcher.fetch(FeedKind.DEBIAN_DLA, url)
    second = fetcher.fetch(FeedKind.DEBIAN_DLA, url)  # sent If-None-Match "1"; got v2
    assert (first.data, second.data, second.etag) == (b"v1", b"v2", '"2"')
    assert second.path is not None
    assert second.path.read_bytes() == b"v2"
    third = fetcher.fetch(FeedKind.DEBIAN_DLA, url)
    assert third.from_cache
    assert third.path == second.path
    assert [r.headers.get("if-none-match") for r in server.requests("/doc")] == [None, '"1"', '"2"']


def test_304_for_other_validators_does_not_serve_a_different_cached_copy(
    server: Server, fetcher: FeedFetcher
) -> None:
    url = server.script("/doc", Reply(body=b"v1", headers={"ETag": '"1"'}, not_modified_if='"9"'))
    assert fetcher.fetch(FeedKind.DEBIAN_DLA, url).data == b"v1"
    # The caller's own copy is version "9"; the cache holds "1": the cache is not that copy.
    result = fetcher.fetch(FeedKind.DEBIAN_DLA, url, validators=('"9"', None))
    assert result.data is None
    assert result.path is None


def test_real_dsa_list_over_http(server: Server, fetcher: FeedFetcher, shared_dir: Path) -> None:
    data = (shared_dir / "feeds/debian/DSA_list_2025-02-13.txt").read_bytes()
    url = server.script("/data/DSA/list", Reply(body=data, headers={"Content-Type": "text/plain"}))
    batch = parse_fetched(fetcher.fetch(FeedKind.DEBIAN_DSA, url))
    assert len(batch.advisories) == 7702
    assert batch.source == url


def test_redirect_is_followed(server: Server, fetcher: FeedFetcher, shared_dir: Path) -> None:
    data = (shared_dir / "feeds/epss/epss_scores-2023-03-07.csv.gz").read_bytes()
    server.script(
        "/epss_scores-2023-03-07.csv.gz",
        Reply(body=data, headers={"Content-Type": "application/gzip"}),
    )
    url = server.script(
        "/epss_scores-current.csv.gz",
        Reply(302, headers={"Location": "/epss_scores-2023-03-07.csv.gz"}),
    )
    batch = parse_fetched(fetcher.fetch(FeedKind.EPSS, url))
    assert len(batch.epss) == 2
    assert batch.published_at == datetime(2023, 3, 7, tzinfo=UTC)


# --------------------------------------------------------------------------- retries


def test_429_with_retry_after_then_200(
    server: Server, fetcher: FeedFetcher, waits: list[float], kev_bytes: bytes
) -> None:
    url = server.script(
        "/kev.json", Reply(429, b"slow down", {"Retry-After": "1"}), Reply(body=kev_bytes)
    )
    result = fetcher.fetch(FeedKind.KEV, url)
    assert result.data == kev_bytes
    assert waits == [1.0]
    assert len(server.requests("/kev.json")) == 2


def test_retry_after_is_capped(server: Server, fetcher: FeedFetcher, waits: list[float]) -> None:
    url = server.script("/x", Reply(503, headers={"Retry-After": "3600"}), Reply(body=b"{}"))
    fetcher.fetch(FeedKind.KEV, url)
    assert waits == [2.0]  # max_wait


def test_retry_after_http_date(server: Server, fetcher: FeedFetcher, waits: list[float]) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    url = server.script("/x", Reply(429, headers={"Retry-After": when}), Reply(body=b"{}"))
    fetcher.fetch(FeedKind.KEV, url)
    assert waits == [2.0]


def test_500_then_200_uses_backoff(
    server: Server, fetcher: FeedFetcher, waits: list[float]
) -> None:
    url = server.script("/x", Reply(500), Reply(502), Reply(body=b"ok"))
    assert fetcher.fetch(FeedKind.KEV, url).data == b"ok"
    assert waits == [0.5, 1.0]  # exponential backoff


def test_500_forever_is_a_fetch_error(
    server: Server, fetcher: FeedFetcher, waits: list[float], tmp_path: Path
) -> None:
    url = server.script("/x", Reply(500, b"boom"))
    with pytest.raises(FeedFetchError, match=r"after 3 attempts: HTTP 500") as info:
        fetcher.fetch(FeedKind.KEV, url)
    assert isinstance(info.value, ConnectionError)
    assert (info.value.status, info.value.attempts) == (500, 3)
    assert len(server.requests("/x")) == 3
    assert len(waits) == 2
    assert not any((tmp_path / "cache").rglob("*-x"))  # nothing cached


def test_404_fails_at_once(server: Server, fetcher: FeedFetcher, waits: list[float]) -> None:
    url = server.url("/missing")
    with pytest.raises(FeedFetchError, match="HTTP 404") as info:
        fetcher.fetch(FeedKind.KEV, url)
    assert info.value.status == 404
    assert len(server.requests("/missing")) == 1
    assert waits == []


def test_dropped_connection_is_retried(
    server: Server, fetcher: FeedFetcher, kev_bytes: bytes
) -> None:
    url = server.script("/kev.json", Reply(body=kev_bytes, drop_after=1000), Reply(body=kev_bytes))
    assert fetcher.fetch(FeedKind.KEV, url).data == kev_bytes
    assert len(server.requests("/kev.json")) == 2


def test_dropped_connection_forever_is_a_fetch_error(
    server: Server, fetcher: FeedFetcher, kev_bytes: bytes
) -> None:
    url = server.script("/kev.json", Reply(body=kev_bytes, drop_after=1000))
    with pytest.raises(FeedFetchError, match=r"after 3 attempts: RemoteProtocolError"):
        fetcher.fetch(FeedKind.KEV, url)
    assert len(server.requests("/kev.json")) == 3


def test_connection_refused(fetcher: FeedFetcher, waits: list[float]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(FeedFetchError, match=r"after 3 attempts: ConnectError"):
        fetcher.fetch(FeedKind.KEV, f"http://127.0.0.1:{port}/kev.json")
    assert len(waits) == 2


def test_non_http_url_is_refused(fetcher: FeedFetcher) -> None:
    with pytest.raises(FeedFetchError, match="unsupported URL scheme 'file'"):
        fetcher.fetch(FeedKind.KEV, "file:///etc/passwd")


# --------------------------------------------------------------------------- size limit


def test_oversized_content_length_is_refused(
    server: Server, tmp_path: Path, waits: list[float]
) -> None:
    url = server.script("/big", Reply(body=b"x" * 5000))
    with httpx.Client(trust_env=False) as client:
        small = FeedFetcher(
            tmp_path / "c", client=client, max_bytes=1000, timeout=5.0, sleep=waits.append
        )
        with pytest.raises(FeedError, match=r"Content-Length 5000 exceeds the size limit of 1000"):
            small.fetch(FeedKind.KEV, url)
    assert len(server.requests("/big")) == 1  # not retried
    assert not (tmp_path / "c" / "kev").exists()


def test_oversized_streamed_body_is_aborted(
    server: Server, tmp_path: Path, waits: list[float]
) -> None:
    url = server.script("/big", Reply(body=b"x" * 50_000, length=False))
    with httpx.Client(trust_env=False) as client:
        small = FeedFetcher(
            tmp_path / "c", client=client, max_bytes=1000, timeout=5.0, sleep=waits.append
        )
        with pytest.raises(
            FeedError, match=r"download aborted: body exceeds the size limit of 1000"
        ):
            small.fetch(FeedKind.KEV, url)


# --------------------------------------------------------------------------- NVD paging


def _serve_nvd(server: Server, shared_dir: Path) -> str:
    pages = shared_dir / "feeds/nvd"
    for start, name in ((0, "page-0-3.json"), (3, "page-3-3.json"), (6, "page-6-3.json")):
        server.script(
            f"/rest/json/cves/2.0?startIndex={start}", Reply(body=(pages / name).read_bytes())
        )
    return server.url("/rest/json/cves/2.0")


def test_nvd_paging_across_three_pages(
    server: Server,
    fetcher: FeedFetcher,
    shared_dir: Path,
    waits: list[float],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "00000000-test-key-do-not-log"
    monkeypatch.setenv("NVD_API_KEY", secret)
    url = _serve_nvd(server, shared_dir)
    with structlog.testing.capture_logs() as logs:
        result = fetcher.fetch(
            FeedKind.NVD,
            url,
            params={"resultsPerPage": "3", "lastModStartDate": "2023-11-01T00:00:00.000"},
        )
    requests = server.requests("/rest/json/cves/2.0")
    assert [r.query["startIndex"] for r in requests] == [["0"], ["3"], ["6"]]
    assert all(r.query["resultsPerPage"] == ["3"] for r in requests)
    assert all(r.query["lastModStartDate"] == ["2023-11-01T00:00:00.000"] for r in requests)
    assert all(r.headers["apikey"] == secret for r in requests)
    assert waits == [0.0, 0.0]  # the injected page delay
    assert result.data is not None
    merged = json.loads(result.data)
    assert merged["totalResults"] == 8
    assert len(merged["vulnerabilities"]) == 8
    batch = parse_fetched(result)
    assert len(batch.cvss) == 5
    assert {score.version for _, score in batch.cvss} == {"3.0", "3.1"}
    # the key is never logged nor cached
    assert secret not in repr(logs)
    assert result.path is not None
    for file in result.path.parent.iterdir():
        assert secret.encode() not in file.read_bytes()


def test_nvd_key_is_never_sent_across_a_redirect(
    server: Server, fetcher: FeedFetcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NVD_API_KEY", "secret-key")
    server.script("/elsewhere", Reply(body=b"{}"))
    url = server.script(
        "/rest/json/cves/2.0?startIndex=0", Reply(302, headers={"Location": "/elsewhere"})
    )
    with pytest.raises(FeedFetchError, match="HTTP 302"):
        fetcher.fetch(FeedKind.NVD, url.split("?")[0])
    assert server.requests("/elsewhere") == []


def test_nvd_without_key_sends_no_header(
    server: Server, fetcher: FeedFetcher, shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NVD_API_KEY", raising=False)
    url = _serve_nvd(server, shared_dir)
    fetcher.fetch(FeedKind.NVD, url, params={"resultsPerPage": "3"})
    assert all("apikey" not in r.headers for r in server.requests("/rest/json/cves/2.0"))


def test_nvd_page_retried_then_paging_continues(
    server: Server, fetcher: FeedFetcher, shared_dir: Path, waits: list[float]
) -> None:
    url = _serve_nvd(server, shared_dir)
    page = (shared_dir / "feeds/nvd/page-3-3.json").read_bytes()
    server.script(
        "/rest/json/cves/2.0?startIndex=3",
        Reply(503, headers={"Retry-After": "1"}),
        Reply(body=page),
    )
    result = fetcher.fetch(FeedKind.NVD, url, params={"resultsPerPage": "3"})
    assert result.data is not None
    assert len(json.loads(result.data)["vulnerabilities"]) == 8
    assert waits == [0.0, 1.0, 0.0]


def test_nvd_changing_total_is_an_error(
    server: Server, fetcher: FeedFetcher, shared_dir: Path
) -> None:
    url = _serve_nvd(server, shared_dir)
    page = json.loads((shared_dir / "feeds/nvd/page-3-3.json").read_bytes())
    page["totalResults"] = 9
    server.script("/rest/json/cves/2.0?startIndex=3", Reply(body=json.dumps(page).encode()))
    with pytest.raises(FeedFetchError, match="totalResults changed from 8 to 9"):
        fetcher.fetch(FeedKind.NVD, url, params={"resultsPerPage": "3"})


def test_nvd_empty_page_before_the_end_is_an_error(
    server: Server, fetcher: FeedFetcher, shared_dir: Path
) -> None:
    url = _serve_nvd(server, shared_dir)
    page = json.loads((shared_dir / "feeds/nvd/page-3-3.json").read_bytes())
    page["vulnerabilities"] = []
    server.script("/rest/json/cves/2.0?startIndex=3", Reply(body=json.dumps(page).encode()))
    with pytest.raises(FeedFetchError, match="empty page at startIndex 3 of 8"):
        fetcher.fetch(FeedKind.NVD, url, params={"resultsPerPage": "3"})


def test_nvd_truncated_page_is_a_feed_error(
    server: Server, fetcher: FeedFetcher, shared_dir: Path
) -> None:
    url = _serve_nvd(server, shared_dir)
    server.script(
        "/rest/json/cves/2.0?startIndex=3", Reply(body=b'{"resultsPerPage": 3, "vulnerabi')
    )
    with pytest.raises(FeedError, match=r"startIndex 3\), line 1: not valid JSON"):
        fetcher.fetch(FeedKind.NVD, url, params={"resultsPerPage": "3"})


# --------------------------------------------------------------------------- helpers


def test_retry_after_parsing() -> None:
    assert _retry_after("7") == 7.0
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    past = format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)
    assert _retry_after(past) == 0.0
    future = format_datetime(datetime.now(UTC) + timedelta(seconds=100), usegmt=True)
    assert 90 < (_retry_after(future) or 0) <= 100


def test_redact_hides_credentials() -> None:
    assert (
        _redact("https://user:pw@example.org/x?apiKey=s3cret&q=1")
        == "https://example.org/x?apiKey=%2A%2A%2A&q=1"
    )

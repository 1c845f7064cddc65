"""Hostile LLM endpoints cannot stall a call: total deadline, response size cap, http(s) only.

Real HTTP on loopback against the scripted server (``tests/llm_server.py``): slow-drip servers,
hanging servers, long ``Retry-After``, 50 MB bodies and gzip bombs. Timed assertions use
generous bounds ("within the deadline plus 5 s"); memory is measured with tracemalloc.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import httpx2
import pytest
from pydantic import BaseModel, ValidationError

from patchpilot.core.errors import ConfigError
from patchpilot.core.settings import LLMSettings, load_settings
from patchpilot.tools.llm import (
    LLMClient,
    LLMConfigError,
    LLMFallback,
    LLMResult,
    LLMUnavailableError,
)
from patchpilot.tools.llm.transport import ResponseRefused, deadline_scope, make_http_client
from tests.llm_server import (
    LLMTestServer,
    answer,
    drip,
    huge,
    rate_limit,
    server_error,
    step_from_json,
    timeout,
)


class Assessment(BaseModel):
    host: str
    risk: Literal["low", "medium", "high"]
    reasons: list[str] = []


GOOD = {"host": "web-1", "risk": "high", "reasons": ["CVE-2024-0001 is exploited"]}
MESSAGES = [{"role": "user", "content": "Assess openssl on web-1."}]
SLACK = 5.0
"""Generous margin over a deadline for timed assertions."""
MIB = 1024 * 1024


@pytest.fixture
def llm_server() -> Iterator[LLMTestServer]:
    with LLMTestServer() as server:
        yield server


def client_for(server: LLMTestServer, **overrides: Any) -> LLMClient:
    """A client sleeping for real (deadlines are real time), with a fast backoff."""
    return LLMClient(server.settings(**overrides), cache_dir=None, backoff=0.01)


def timed_ask(client: LLMClient) -> tuple[LLMResult[Assessment] | LLMFallback, float]:
    started = time.monotonic()
    with client:
        outcome = client.try_complete("assess", "1", MESSAGES, Assessment)
    return outcome, time.monotonic() - started


# --------------------------------------------------------------------------- deadline


@pytest.mark.parametrize("headers_first", [False, True], ids=["whole-answer", "body-only"])
def test_slow_drip_ends_at_the_deadline_with_a_fallback(
    llm_server: LLMTestServer, headers_first: bool
) -> None:
    # ~600 bytes at a byte every 0.5 s: five minutes, and every single read is quick
    llm_server.enqueue(drip(GOOD, interval=0.5, headers_first=headers_first), answer(GOOD))
    client = client_for(llm_server, deadline=2.0, timeout=30.0, max_retries=3)

    outcome, elapsed = timed_ask(client)

    assert isinstance(outcome, LLMFallback)
    assert outcome.error == "LLMUnavailableError"
    assert "llm.deadline=2 s" in outcome.reason
    assert 1.5 <= elapsed < 2.0 + SLACK
    assert len(llm_server.chat_requests) == 1  # the deadline is spent: no retry
    assert llm_server.pending == 1
    assert llm_server.wait_streams_ended()  # the client hung up; the server noticed


def test_hanging_server_costs_one_deadline_not_timeouts_times_retries(
    llm_server: LLMTestServer,
) -> None:
    llm_server.enqueue(*(timeout(seconds=60) for _ in range(4)))
    client = client_for(llm_server, deadline=1.5, timeout=30.0, max_retries=3)

    outcome, elapsed = timed_ask(client)

    assert isinstance(outcome, LLMFallback)
    assert "no complete answer within llm.deadline=1.5 s (1 attempt)" in outcome.reason
    assert elapsed < 1.5 + SLACK
    assert len(llm_server.chat_requests) == 1


def test_retries_and_their_waits_share_the_deadline(llm_server: LLMTestServer) -> None:
    # each attempt times out after 0.4 s; six retries would take over 2.8 s
    llm_server.enqueue(*(timeout(seconds=60) for _ in range(7)))
    client = client_for(llm_server, deadline=1.5, timeout=0.4, max_retries=6)

    outcome, elapsed = timed_ask(client)

    assert isinstance(outcome, LLMFallback)
    assert outcome.error == "LLMUnavailableError"
    assert "llm.deadline=1.5 s" in outcome.reason
    assert elapsed < 1.5 + SLACK
    assert 2 <= len(llm_server.chat_requests) < 7


def test_long_retry_after_falls_back_at_once(llm_server: LLMTestServer) -> None:
    # the defect: a 429 with Retry-After: 94 held `ask` for 94 s
    llm_server.enqueue(rate_limit(retry_after=94), answer(GOOD))
    client = client_for(llm_server)  # the default deadline: 30 s

    outcome, elapsed = timed_ask(client)

    assert isinstance(outcome, LLMFallback)
    assert "retry after 94 s, beyond the" in outcome.reason
    assert "llm.deadline=30 s" in outcome.reason
    assert elapsed < SLACK
    assert len(llm_server.chat_requests) == 1


def test_retry_after_that_fits_is_waited_for(llm_server: LLMTestServer) -> None:
    llm_server.enqueue(rate_limit(retry_after=1), answer(GOOD))
    client = client_for(llm_server, deadline=10.0)

    outcome, elapsed = timed_ask(client)

    assert isinstance(outcome, LLMResult)
    assert outcome.attempts == 2
    assert 0.9 <= elapsed < 1.0 + SLACK
    (first, second) = llm_server.requests
    assert second.received_at - first.received_at >= 0.9


def test_backoff_that_would_outlast_the_deadline_is_not_started(
    llm_server: LLMTestServer,
) -> None:
    llm_server.enqueue(server_error(), answer(GOOD))
    client = LLMClient(llm_server.settings(deadline=1.0), cache_dir=None, backoff=20.0)

    outcome, elapsed = timed_ask(client)

    assert isinstance(outcome, LLMFallback)
    assert "HTTP 500" in outcome.reason
    assert "no time left within llm.deadline=1 s" in outcome.reason
    assert elapsed < SLACK
    assert len(llm_server.chat_requests) == 1


def test_embeddings_have_the_same_deadline(llm_server: LLMTestServer) -> None:
    llm_server.enqueue_embeddings(timeout(seconds=60))
    client = client_for(llm_server, deadline=1.0, timeout=30.0, embeddings_model="e")

    started = time.monotonic()
    with client, pytest.raises(LLMUnavailableError, match=r"llm\.deadline=1 s"):
        client.embed(["openssl"])
    assert time.monotonic() - started < 1.0 + SLACK


def test_deadline_holds_through_an_environment_proxy(
    llm_server: LLMTestServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the test server stands in for an HTTP proxy: env proxies still work, and are bounded
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{llm_server.port}")
    settings = LLMSettings(
        base_url="http://llm.invalid/v1", model="m", cache=False, deadline=1.5, timeout=30.0
    )
    llm_server.enqueue(answer(GOOD), drip(GOOD, interval=0.5))

    with LLMClient(settings, cache_dir=None, backoff=0.01) as client:
        served = client.try_complete("assess", "1", MESSAGES, Assessment)
        started = time.monotonic()
        dripped = client.try_complete("assess", "2", MESSAGES, Assessment)
        elapsed = time.monotonic() - started

    assert isinstance(served, LLMResult)
    assert served.value.host == "web-1"
    assert llm_server.requests[0].headers["host"] == "llm.invalid"
    assert isinstance(dripped, LLMFallback)
    assert "llm.deadline=1.5 s" in dripped.reason
    assert elapsed < 1.5 + SLACK


def test_transport_bounds_any_request_in_a_deadline_scope(llm_server: LLMTestServer) -> None:
    llm_server.enqueue(drip(GOOD, interval=0.5))
    started = time.monotonic()
    with (
        make_http_client(max_response_bytes=MIB) as http,
        deadline_scope(time.monotonic() + 1.0),
        pytest.raises(httpx2.TimeoutException),
    ):
        http.post(f"{llm_server.base_url}/chat/completions", json={"messages": []})
    assert time.monotonic() - started < 1.0 + SLACK


# --------------------------------------------------------------------------- size cap


@pytest.mark.parametrize(
    "step",
    [
        pytest.param(huge(50 * MIB), id="announced"),
        pytest.param(huge(50 * MIB, announce_length=False), id="unannounced"),
        pytest.param(huge(50 * MIB, gzip=True), id="gzip-bomb"),
    ],
)
def test_huge_answer_is_refused_while_reading_without_buffering_it(
    llm_server: LLMTestServer, step: Any
) -> None:
    llm_server.enqueue(step, answer(GOOD))
    client = client_for(llm_server, max_retries=2)

    tracemalloc.start()
    try:
        outcome, elapsed = timed_ask(client)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert isinstance(outcome, LLMFallback)
    assert outcome.error == "LLMOutputError"
    assert "llm.max_response_bytes=1048576" in outcome.reason
    assert peak < 16 * MIB  # a 50 MB body, buffered, is 50 MB and more
    assert elapsed < 30.0
    assert len(llm_server.chat_requests) == 1  # the same request would get the same: no retry
    assert llm_server.pending == 1
    assert llm_server.wait_streams_ended()
    assert llm_server.streamed_bytes < 25 * MIB  # the client hung up long before the end


def test_response_size_cap_is_exact(llm_server: LLMTestServer) -> None:
    small = {**GOOD, "reasons": ["x" * 100]}
    big = {**GOOD, "reasons": ["x" * 5000]}
    llm_server.enqueue(answer(small), answer(big), answer(GOOD))
    client = client_for(llm_server, max_response_bytes=4096)

    with client:
        kept = client.try_complete("assess", "1", MESSAGES, Assessment)
        refused = client.try_complete("assess", "2", MESSAGES, Assessment)

    assert isinstance(kept, LLMResult)
    assert isinstance(refused, LLMFallback)
    assert "more than 4096" in refused.reason
    assert len(llm_server.chat_requests) == 2


def test_compressed_answer_within_the_cap_is_decoded(llm_server: LLMTestServer) -> None:
    llm_server.enqueue(answer(GOOD, gzip=True))
    client = client_for(llm_server)

    outcome, _ = timed_ask(client)

    assert isinstance(outcome, LLMResult)
    assert outcome.value.reasons == GOOD["reasons"]
    assert llm_server.requests[0].headers["accept-encoding"] == "gzip, deflate"


def test_compressed_answer_over_the_cap_once_decoded_is_refused(
    llm_server: LLMTestServer,
) -> None:
    big = {**GOOD, "reasons": ["x" * 20_000]}  # compresses to well under 4 KiB
    llm_server.enqueue(answer(big, gzip=True))

    outcome, _ = timed_ask(client_for(llm_server, max_response_bytes=4096))

    assert isinstance(outcome, LLMFallback)
    assert "larger than 4096 bytes" in outcome.reason


def test_transport_refusal_is_a_request_error(llm_server: LLMTestServer) -> None:
    llm_server.enqueue(huge(64 * 1024, announce_length=False))
    with make_http_client(max_response_bytes=1024) as http, pytest.raises(ResponseRefused):
        http.post(f"{llm_server.base_url}/chat/completions", json={"messages": []})
    assert issubclass(ResponseRefused, httpx2.RequestError)


# --------------------------------------------------------------------------- settings


def test_new_settings_defaults() -> None:
    settings = LLMSettings()
    assert settings.deadline == 30.0
    assert settings.max_response_bytes == MIB


@pytest.mark.parametrize(
    "url",
    [
        "ftp://llm.example/v1",
        "file:///etc/passwd",
        "file:relative",
        "llm-server",
        "localhost:8000/v1",
        "http://",
        "https:///v1",
        "http://host:99999/v1",
        "http://bad host/v1",
        "http://host/v1\x1b[2J",
        "https://" + "a" * 2100 + ".example/v1",
    ],
)
def test_non_http_base_url_is_refused_at_load_naming_the_key(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "settings.yaml"
    config.write_text(json.dumps({"llm": {"base_url": url}}))  # JSON is YAML
    with pytest.raises(ConfigError) as from_file:
        load_settings(config)
    assert from_file.value.key == "llm.base_url"
    assert "http:// or https://" in str(from_file.value) or "host" in str(from_file.value)

    monkeypatch.setenv("PATCHPILOT_LLM__BASE_URL", url)
    with pytest.raises(ConfigError) as from_env:
        load_settings()
    assert from_env.value.key == "llm.base_url"


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:11434/v1", "https://api.openai.com/v1", "HTTPS://host.example"]
)
def test_http_base_urls_are_accepted(url: str) -> None:
    assert LLMSettings(base_url=url).base_url == url


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("deadline", float("inf")),
        ("deadline", float("nan")),
        ("deadline", 0),
        ("deadline", 601),
        ("timeout", float("nan")),
        ("max_response_bytes", 10),
        ("max_response_bytes", 10**12),
    ],
)
def test_deadline_and_size_settings_are_bounded(key: str, value: float) -> None:
    with pytest.raises(ValidationError) as caught:
        LLMSettings(**{key: value})
    assert caught.value.errors()[0]["loc"] == (key,)


def test_bounded_settings_fail_at_load_naming_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHPILOT_LLM__DEADLINE", "inf")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.key == "llm.deadline"


def test_client_never_sends_to_a_non_http_url_even_unvalidated() -> None:
    settings = LLMSettings.model_construct(base_url="file:///etc/passwd")
    with pytest.raises(LLMConfigError, match=r"llm\.base_url"):
        LLMClient(settings, cache_dir=None)


# --------------------------------------------------------------------------- the test server


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ({"fault": "drip", "interval": 0.5, "headers_first": True}, "drip"),
        ({"fault": "huge", "size": 1024, "gzip": True}, "huge"),
    ],
)
def test_new_steps_from_json(obj: dict[str, Any], kind: str) -> None:
    step = step_from_json(obj)
    assert getattr(step, "kind", None) == kind

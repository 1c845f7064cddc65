"""LLMClient against the scripted OpenAI-compatible server on loopback (real HTTP, real SDK).

No assertion depends on wall time: waits are recorded by an injected ``sleep``, and every
retry scenario is asserted through request counts, recorded waits and usage counters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any, Literal

import openai
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.settings import LLMSettings
from patchpilot.tools.llm import (
    LLMBudgetExceeded,
    LLMClient,
    LLMConfigError,
    LLMError,
    LLMFallback,
    LLMOutputError,
    LLMRequestError,
    LLMResult,
    LLMUnavailableError,
    LLMUsage,
    make_client,
    try_complete,
)
from tests.llm_server import (
    Answer,
    LLMTestServer,
    answer,
    bad_request,
    disconnect,
    http_error,
    not_found,
    not_json,
    rate_limit,
    schema_violation,
    server_error,
    step_from_json,
    timeout,
    tool_calls,
    truncated,
    unauthorized,
)


class Assessment(BaseModel):
    """The schema the tests ask for."""

    host: str
    risk: Literal["low", "medium", "high"]
    reasons: list[str] = []


GOOD = {"host": "web-1", "risk": "high", "reasons": ["CVE-2024-0001 is exploited"]}
MESSAGES = [
    {"role": "system", "content": "You assess patches."},
    {"role": "user", "content": "Assess openssl on web-1."},
]
BACKOFF = 0.01

MakeClient = Callable[..., LLMClient]


@pytest.fixture
def llm_server() -> Iterator[LLMTestServer]:
    with LLMTestServer() as server:
        yield server


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def make(llm_server: LLMTestServer, waits: list[float]) -> Iterator[MakeClient]:
    """Build clients on the server; waits are recorded, never slept; clients closed after."""
    made: list[LLMClient] = []

    def build(*, cache_dir: Path | None = None, **overrides: Any) -> LLMClient:
        client = LLMClient(
            llm_server.settings(**overrides),
            cache_dir=cache_dir,
            run_id="run-test",
            backoff=BACKOFF,
            sleep=waits.append,
        )
        made.append(client)
        return client

    yield build
    for client in made:
        client.close()


def ask(client: LLMClient, version: str = "1") -> LLMResult[Assessment]:
    return client.complete("assess", version, MESSAGES, Assessment)


# --------------------------------------------------------------------------- the happy path


def test_structured_answer_is_parsed_and_validated(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(answer(GOOD, prompt_tokens=40, completion_tokens=12))
    result = ask(make())

    assert result.value == Assessment.model_validate(GOOD)
    assert (result.task, result.prompt_version, result.model) == ("assess", "1", "test-model")
    assert result.cached is False
    assert result.attempts == 1
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (40, 12)
    assert result.usage.total_tokens == 52


def test_strict_json_schema_and_messages_are_sent(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(answer(GOOD))
    ask(make(max_tokens=256, temperature=0.2))

    (request,) = llm_server.chat_requests
    assert request["model"] == "test-model"
    assert request["messages"] == MESSAGES
    assert request["max_completion_tokens"] == 256  # max_tokens is deprecated
    assert "max_tokens" not in request
    assert "reasoning_effort" not in request  # only when llm.reasoning_effort is set
    assert request["temperature"] == 0.2
    response_format = request["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["name"] == "Assessment"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    assert schema == to_strict_json_schema(Assessment)
    assert schema["additionalProperties"] is False
    assert sorted(schema["required"]) == ["host", "reasons", "risk"]  # defaults too


def test_api_key_comes_from_the_named_variable(
    llm_server: LLMTestServer, make: MakeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    llm_server.enqueue(answer(GOOD), answer(GOOD))
    ask(make())
    monkeypatch.setenv("PP_TEST_LLM_KEY", "sk-test-123")
    ask(make(api_key_env="PP_TEST_LLM_KEY"))

    first, second = (r.headers["authorization"] for r in llm_server.requests)
    assert first == "Bearer not-needed"
    assert second == "Bearer sk-test-123"


def test_json_object_mode_sends_the_schema_in_the_system_message(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(answer(GOOD))
    result = ask(make(structured_output="json_object"))

    assert result.value.host == "web-1"
    (request,) = llm_server.chat_requests
    assert request["response_format"] == {"type": "json_object"}
    system = request["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You assess patches.")
    assert '"additionalProperties":false' in system["content"]
    assert request["messages"][1:] == MESSAGES[1:]


def test_json_in_a_markdown_fence_is_accepted(llm_server: LLMTestServer, make: MakeClient) -> None:
    llm_server.enqueue(answer(f"```json\n{json.dumps(GOOD)}\n```"))
    assert ask(make()).value.risk == "high"


# --------------------------------------------------------------------------- retries


def test_rate_limit_honours_retry_after_then_succeeds(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float]
) -> None:
    llm_server.enqueue(rate_limit(retry_after=2), answer(GOOD))
    client = make()
    result = ask(client)

    assert result.attempts == 2
    assert waits == [2.0]
    assert len(llm_server.chat_requests) == 2
    assert client.usage.retries == 1
    assert client.usage.calls == 2


@pytest.mark.parametrize(
    ("step_kwargs", "expected"),
    [
        pytest.param({"retry_after": None, "retry_after_ms": 1500}, 1.5, id="retry-after-ms"),
        pytest.param(
            {"retry_after": format_datetime(datetime(2000, 1, 1, tzinfo=UTC), usegmt=True)},
            0.0,
            id="http-date-past",
        ),
    ],
)
def test_retry_after_forms(
    llm_server: LLMTestServer,
    make: MakeClient,
    waits: list[float],
    step_kwargs: dict[str, Any],
    expected: float,
) -> None:
    llm_server.enqueue(rate_limit(**step_kwargs), answer(GOOD))
    ask(make())
    assert waits == [expected]


def test_retry_after_http_date_within_the_deadline_is_honoured(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float]
) -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=8), usegmt=True)
    llm_server.enqueue(rate_limit(retry_after=when), answer(GOOD))
    ask(make(deadline=30))
    (wait,) = waits
    assert 5.0 <= wait <= 8.0  # an HTTP date has a resolution of one second


@pytest.mark.parametrize(
    "step_kwargs",
    [
        pytest.param({"retry_after": 3600}, id="seconds"),
        pytest.param({"retry_after": None, "retry_after_ms": 90_000}, id="retry-after-ms"),
        pytest.param(
            {"retry_after": format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)},
            id="http-date",
        ),
    ],
)
def test_retry_after_beyond_the_deadline_falls_back_at_once(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float], step_kwargs: dict[str, Any]
) -> None:
    llm_server.enqueue(rate_limit(**step_kwargs), answer(GOOD))
    outcome = make(deadline=30).try_complete("assess", "1", MESSAGES, Assessment)

    assert isinstance(outcome, LLMFallback)
    assert outcome.error == "LLMUnavailableError"
    assert "HTTP 429" in outcome.reason
    assert "retry after" in outcome.reason
    assert "llm.deadline=30 s" in outcome.reason
    assert waits == []  # never waited, never retried early against the server's wish
    assert len(llm_server.chat_requests) == 1
    assert llm_server.pending == 1


def test_rate_limit_without_retry_after_backs_off_with_jitter(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float]
) -> None:
    llm_server.enqueue(rate_limit(retry_after=None), rate_limit(retry_after=None), answer(GOOD))
    ask(make())

    assert len(waits) == 2
    assert BACKOFF / 2 <= waits[0] <= BACKOFF
    assert BACKOFF <= waits[1] <= 2 * BACKOFF


def test_server_error_then_success(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float]
) -> None:
    llm_server.enqueue(server_error(), server_error(503), answer(GOOD))
    result = ask(make())

    assert result.attempts == 3
    assert len(waits) == 2
    assert len(llm_server.chat_requests) == 3


def test_timeout_then_success(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float]
) -> None:
    llm_server.enqueue(timeout(seconds=5), answer(GOOD))
    client = make(timeout=0.5)
    result = ask(client)

    assert result.value.host == "web-1"
    assert result.attempts == 2
    assert len(waits) == 1
    assert client.usage.retries == 1


def test_dropped_connection_then_success(llm_server: LLMTestServer, make: MakeClient) -> None:
    llm_server.enqueue(disconnect(), answer(GOOD))
    assert ask(make()).attempts == 2


def test_unreachable_endpoint_gives_up_as_unavailable(waits: list[float]) -> None:
    with LLMTestServer() as server:
        settings = server.settings(max_retries=1)
    # the server is gone: connection refused on every attempt
    with (
        LLMClient(settings, cache_dir=None, backoff=BACKOFF, sleep=waits.append) as client,
        pytest.raises(LLMUnavailableError, match="cannot reach the endpoint") as caught,
    ):
        ask(client)
    assert caught.value.attempts == 2
    assert len(waits) == 1


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(truncated(GOOD), id="truncated"),
        pytest.param(schema_violation(), id="schema-violation"),
        pytest.param(schema_violation({**GOOD, "risk": "catastrophic"}), id="bad-enum"),
        pytest.param(not_json(), id="not-json"),
        pytest.param(answer(""), id="empty"),
    ],
)
def test_unusable_answer_then_success_retries_at_once(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float], bad: Any
) -> None:
    llm_server.enqueue(bad, answer(GOOD))
    result = ask(make())

    assert result.attempts == 2
    assert result.value.risk == "high"
    assert waits == [0.0]


def test_schema_violation_every_time_gives_up(llm_server: LLMTestServer, make: MakeClient) -> None:
    llm_server.enqueue(*(schema_violation() for _ in range(3)))
    client = make(max_retries=2)

    with pytest.raises(LLMOutputError, match="not a valid Assessment") as caught:
        ask(client)

    error = caught.value
    assert isinstance(error, PatchpilotError)
    assert isinstance(error, RuntimeError)  # LangGraph's default policy will not retry it
    assert not isinstance(error, ConnectionError)
    assert error.attempts == 3
    assert error.task == "assess"
    assert len(llm_server.chat_requests) == 3
    assert client.usage.failures == 1
    assert client.usage.retries == 2


def test_try_complete_returns_a_fallback_with_the_reason(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(*(schema_violation() for _ in range(2)))
    client = make(max_retries=1)

    outcome = client.try_complete("assess", "1", MESSAGES, Assessment)

    assert isinstance(outcome, LLMFallback)
    assert outcome.task == "assess"
    assert outcome.error == "LLMOutputError"
    assert "not a valid Assessment" in outcome.reason
    assert client.usage.fallbacks == 1
    assert client.usage.failures == 1


def test_server_errors_every_time_give_up_as_unavailable(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(server_error(), server_error(), server_error())
    outcome = try_complete(make(max_retries=2), "assess", "1", MESSAGES, Assessment)

    assert isinstance(outcome, LLMFallback)
    assert outcome.error == "LLMUnavailableError"
    assert "HTTP 500" in outcome.reason
    assert len(llm_server.chat_requests) == 3


@pytest.mark.parametrize(
    ("fault", "status", "hint"),
    [
        pytest.param(unauthorized(), 401, "OPENAI_API_KEY", id="401"),
        pytest.param(http_error(403, "Forbidden."), 403, "may not use this model", id="403"),
        pytest.param(not_found(), 404, "llm.base_url", id="404"),
        pytest.param(bad_request(), 400, "structured_output = json_object", id="400"),
        pytest.param(
            rate_limit(retry_after=None, code="insufficient_quota"), 429, "quota", id="quota"
        ),
    ],
)
def test_client_errors_are_not_retried(
    llm_server: LLMTestServer,
    make: MakeClient,
    waits: list[float],
    fault: Any,
    status: int,
    hint: str,
) -> None:
    llm_server.enqueue(fault, answer(GOOD))

    with pytest.raises(LLMRequestError) as caught:
        ask(make())

    error = caught.value
    assert error.status == status
    assert hint in str(error)
    assert llm_server.base_url in str(error)
    assert "test-model" in str(error)
    assert len(llm_server.chat_requests) == 1
    assert waits == []
    assert llm_server.pending == 1


def test_refusal_is_not_retried(llm_server: LLMTestServer, make: MakeClient) -> None:
    llm_server.enqueue(Answer(refusal="I cannot help with that."), answer(GOOD))

    with pytest.raises(LLMOutputError, match="refused"):
        ask(make())
    assert len(llm_server.chat_requests) == 1


def test_bad_messages_are_refused_before_sending(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    client = make()
    with pytest.raises(LLMConfigError, match="message 0"):
        client.complete("assess", "1", [{"role": "robot", "content": "x"}], Assessment)
    with pytest.raises(LLMConfigError):
        client.complete("assess", "1", [], Assessment)
    assert llm_server.requests == []


# --------------------------------------------------------------------------- budget and usage


def test_call_budget_is_enforced_before_sending(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(answer(GOOD), answer(GOOD), answer(GOOD))
    client = make(max_calls_per_run=2)
    ask(client)
    ask(client)

    with pytest.raises(LLMBudgetExceeded, match="max_calls_per_run") as caught:
        ask(client)
    assert (caught.value.limit, caught.value.used, caught.value.allowed) == ("calls", 2, 2)
    assert len(llm_server.chat_requests) == 2
    assert llm_server.pending == 1


def test_retries_count_against_the_call_budget(llm_server: LLMTestServer, make: MakeClient) -> None:
    llm_server.enqueue(server_error(), server_error(), answer(GOOD))
    client = make(max_calls_per_run=2, max_retries=5)

    outcome = client.try_complete("assess", "1", MESSAGES, Assessment)

    assert isinstance(outcome, LLMFallback)
    assert outcome.error == "LLMBudgetExceeded"
    assert len(llm_server.chat_requests) == 2


def test_token_budget_is_enforced_before_sending(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(
        answer(GOOD, prompt_tokens=600, completion_tokens=300),
        answer(GOOD, prompt_tokens=100, completion_tokens=50),
        answer(GOOD),
    )
    client = make(max_tokens_per_run=1000)
    ask(client)  # 900 used
    ask(client)  # 1050 used: this one was allowed to start below the budget

    with pytest.raises(LLMBudgetExceeded, match="tokens budget") as caught:
        ask(client)
    assert (caught.value.used, caught.value.allowed) == (1050, 1000)
    assert len(llm_server.chat_requests) == 2


def test_usage_accumulates_over_calls_and_retries(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.enqueue(
        answer(GOOD, prompt_tokens=10, completion_tokens=5),
        truncated(GOOD),
        answer(GOOD, prompt_tokens=20, completion_tokens=7),
    )
    client = make()
    first = ask(client)
    second = ask(client)

    assert first.usage.total_tokens == 15
    assert second.attempts == 2
    assert second.usage.prompt_tokens > 20  # the truncated attempt's tokens count too
    usage = client.usage
    assert isinstance(usage, LLMUsage)
    assert usage.calls == 3
    assert usage.retries == 1
    assert usage.prompt_tokens == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert usage.completion_tokens == first.usage.completion_tokens + (
        second.usage.completion_tokens
    )
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.model_dump()["total_tokens"] == usage.total_tokens
    assert (usage.failures, usage.cache_hits, usage.fallbacks) == (0, 0, 0)


# --------------------------------------------------------------------------- cache


def test_identical_call_is_served_from_the_cache(
    llm_server: LLMTestServer, make: MakeClient, tmp_path: Path
) -> None:
    llm_server.enqueue(answer(GOOD), answer({**GOOD, "risk": "low"}))
    client = make(cache=True, cache_dir=tmp_path)

    first = ask(client)
    second = ask(client)

    assert len(llm_server.chat_requests) == 1
    assert first.cached is False
    assert second.cached is True
    assert second.attempts == 0
    assert second.usage.total_tokens == 0
    assert second.value == first.value
    assert client.usage.cache_hits == 1
    assert client.usage.calls == 1
    (entry,) = (tmp_path / "llm").glob("*.json")
    assert json.loads(entry.read_text())["prompt_version"] == "1"

    # another client (a later run) reads the same cache
    assert ask(make(cache=True, cache_dir=tmp_path)).cached is True
    assert len(llm_server.chat_requests) == 1


def test_new_prompt_version_misses_the_cache(
    llm_server: LLMTestServer, make: MakeClient, tmp_path: Path
) -> None:
    llm_server.enqueue(answer(GOOD), answer({**GOOD, "risk": "low"}))
    client = make(cache=True, cache_dir=tmp_path)

    ask(client, version="1")
    result = ask(client, version="2")

    assert result.cached is False
    assert result.value.risk == "low"
    assert len(llm_server.chat_requests) == 2
    assert len(list((tmp_path / "llm").glob("*.json"))) == 2


def test_cache_entry_that_no_longer_validates_is_dropped(
    llm_server: LLMTestServer, make: MakeClient, tmp_path: Path
) -> None:
    llm_server.enqueue(answer(GOOD), answer(GOOD))
    ask(make(cache=True, cache_dir=tmp_path))
    (entry,) = (tmp_path / "llm").glob("*.json")
    record = json.loads(entry.read_text())
    entry.write_text(json.dumps({**record, "content": '{"host": "web-1"}'}))

    result = ask(make(cache=True, cache_dir=tmp_path))

    assert result.cached is False
    assert len(llm_server.chat_requests) == 2
    assert Assessment.model_validate_json(json.loads(entry.read_text())["content"]) == result.value


def test_cache_off_by_setting_or_without_a_directory(
    llm_server: LLMTestServer, make: MakeClient, tmp_path: Path
) -> None:
    llm_server.enqueue(*(answer(GOOD) for _ in range(4)))
    for client in (make(cache=False, cache_dir=tmp_path), make(cache=True, cache_dir=None)):
        ask(client)
        assert ask(client).cached is False
    assert len(llm_server.chat_requests) == 4
    assert not (tmp_path / "llm").exists()


# --------------------------------------------------------------------------- not configured


def test_no_llm_configured_means_no_client() -> None:
    settings = LLMSettings()
    assert settings.configured is False
    assert make_client(settings, cache_dir=None, run_id="r") is None

    outcome = try_complete(None, "assess", "1", MESSAGES, Assessment)
    assert outcome == LLMFallback(
        task="assess", reason="no LLM configured (llm.base_url is unset)", error=None
    )
    with pytest.raises(LLMConfigError, match="base_url"):
        LLMClient(settings, cache_dir=None)


def test_make_client_builds_a_working_client(llm_server: LLMTestServer, tmp_path: Path) -> None:
    llm_server.enqueue(answer(GOOD))
    client = make_client(llm_server.settings(), cache_dir=tmp_path, run_id="r-1")
    assert client is not None
    with client:
        outcome = try_complete(client, "assess", "1", MESSAGES, Assessment)
        assert client.run_id == "r-1"
    assert isinstance(outcome, LLMResult)
    assert outcome.value.host == "web-1"


def test_errors_share_the_llm_base() -> None:
    for error in (
        LLMBudgetExceeded,
        LLMConfigError,
        LLMOutputError,
        LLMRequestError,
        LLMUnavailableError,
    ):
        assert issubclass(error, LLMError)
        assert issubclass(error, PatchpilotError)
        assert not issubclass(error, ConnectionError)


# --------------------------------------------------------------------------- embeddings


def test_embeddings(llm_server: LLMTestServer, make: MakeClient) -> None:
    client = make(embeddings_model="embed-test")
    vectors = client.embed(["openssl", "libc6", "openssl"])

    assert len(vectors) == 3
    assert all(len(v) == llm_server.embedding_dim for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-6
    (request,) = llm_server.embedding_requests
    assert request["model"] == "embed-test"
    assert request["input"] == ["openssl", "libc6", "openssl"]
    assert request["encoding_format"] == "float"
    assert client.usage.calls == 1
    assert client.usage.prompt_tokens == 3


def test_embeddings_retry_and_edge_cases(
    llm_server: LLMTestServer, make: MakeClient, waits: list[float]
) -> None:
    client = make(embeddings_model="embed-test")
    assert client.embed([]) == []
    assert llm_server.requests == []

    llm_server.enqueue_embeddings(server_error(502))
    assert len(client.embed(["a"])) == 1
    assert len(waits) == 1
    assert len(llm_server.embedding_requests) == 2

    with pytest.raises(LLMConfigError, match="embeddings_model"):
        make().embed(["a"])


# --------------------------------------------------------------------------- the test server


def test_server_speaks_the_sdk_wire_format(llm_server: LLMTestServer) -> None:
    llm_server.enqueue(
        tool_calls(("get_host", {"name": "web-1"})),
        answer("plain text", finish_reason="stop"),
    )
    with openai.OpenAI(base_url=llm_server.base_url, api_key="k", max_retries=0) as sdk:
        assert [m.id for m in sdk.models.list()] == ["test-model"]
        called = sdk.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "which host?"}]
        )
        plain = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        vectors = sdk.embeddings.create(model="e", input=["x"])  # base64 by default

    assert called.choices[0].finish_reason == "tool_calls"
    (call,) = called.choices[0].message.tool_calls or []
    assert call.type == "function"
    assert (call.function.name, json.loads(call.function.arguments)) == (
        "get_host",
        {"name": "web-1"},
    )
    assert plain.choices[0].message.content == "plain text"
    assert plain.model == "m"
    assert plain.usage is not None
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens
    assert len(vectors.data[0].embedding) == llm_server.embedding_dim


def test_server_responder_exhaustion_and_api_key() -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> Any:
        seen.append(body)
        return answer({**GOOD, "host": body["messages"][-1]["content"]})

    with LLMTestServer([rate_limit(retry_after=0)], responder=responder, api_key="s3cret") as srv:
        with (
            openai.OpenAI(base_url=srv.base_url, api_key="wrong", max_retries=0) as sdk,
            pytest.raises(openai.AuthenticationError),
        ):
            sdk.models.list()
        with openai.OpenAI(base_url=srv.base_url, api_key="s3cret", max_retries=0) as sdk:
            with pytest.raises(openai.RateLimitError) as limited:
                sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "a"}])
            assert limited.value.response.headers["retry-after"] == "0"
            assert limited.value.code == "rate_limit_exceeded"
            made = sdk.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "db-1"}]
            )
            assert json.loads(made.choices[0].message.content or "")["host"] == "db-1"
            srv.responder = None
            with pytest.raises(openai.BadRequestError, match="no scripted answer"):
                sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "b"}])
        assert srv.unexpected == 1
        assert len(seen) == 1


@pytest.mark.parametrize(
    ("obj", "kind"),
    [
        ({"content": {"a": 1}}, "answer"),
        ({"tool_calls": [{"name": "f", "arguments": {"x": 1}}]}, "answer"),
        ({"fault": "rate_limit", "retry_after": 2}, "http"),
        ({"fault": "server_error", "status": 503}, "http"),
        ({"fault": "timeout", "seconds": 1}, "timeout"),
        ({"fault": "disconnect"}, "disconnect"),
        ({"fault": "truncated", "content": {"a": "bcdefgh"}}, "answer"),
        ({"fault": "schema_violation"}, "answer"),
    ],
)
def test_steps_from_json(obj: dict[str, Any], kind: str) -> None:
    step = step_from_json(obj)
    assert getattr(step, "kind", "answer") == kind


def test_step_from_json_rejects_unknown_faults() -> None:
    with pytest.raises(ValueError, match="unknown fault"):
        step_from_json({"fault": "meteor"})


def test_one_client_shared_by_threads_counts_every_call(
    llm_server: LLMTestServer, make: MakeClient
) -> None:
    llm_server.responder = lambda body: answer(
        {**GOOD, "host": body["messages"][-1]["content"]}, prompt_tokens=3, completion_tokens=2
    )
    client = make()
    hosts = [f"web-{i}" for i in range(8)]

    def one(host: str) -> str:
        messages = [{"role": "user", "content": host}]
        return client.complete("assess", "1", messages, Assessment).value.host

    with ThreadPoolExecutor(max_workers=4) as pool:
        answered = list(pool.map(one, hosts))

    assert answered == hosts
    assert client.usage.calls == 8
    assert client.usage.total_tokens == 8 * 5

"""Reasoning models, older servers and gateway headers, against the scripted server over HTTP.

The server's ``dialect`` plays an OpenAI reasoning model (400 with OpenAI's own error bodies to
``max_tokens`` and to a ``temperature`` other than 1) or an older strict server (400 to
``max_completion_tokens``). What the client learns is asserted on the requests the server
received, for the same client, a new client, a "new process" (the process memory dropped, only
``endpoints.json`` left) and a real new process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel, ValidationError
from structlog.testing import capture_logs

from patchpilot.core.errors import ConfigError
from patchpilot.core.settings import LLMSettings, Settings, load_settings
from patchpilot.tools.llm import LLMClient, LLMConfigError, LLMFallback, LLMRequestError
from patchpilot.tools.llm.params import (
    PARAMS_FILE,
    ParamMemory,
    RequestShape,
    rejected_parameter,
)
from patchpilot.tools.memory.embeddings import embedding_function
from tests.llm_server import (
    Dialect,
    Fault,
    LLMTestServer,
    Step,
    answer,
    bad_request,
    extra_input,
    http_error,
    step_from_json,
    unsupported_parameter,
)

REPO = Path(__file__).resolve().parents[2]


class Assessment(BaseModel):
    host: str
    risk: Literal["low", "medium", "high"]


GOOD = {"host": "web-1", "risk": "high"}
MESSAGES = [
    {"role": "system", "content": "You assess patches."},
    {"role": "user", "content": "Assess openssl on web-1."},
]


@pytest.fixture(autouse=True)
def fresh_process_memory() -> Iterator[None]:
    """Every test starts as a new process would (nothing learned in memory)."""
    ParamMemory.forget_process()
    yield
    ParamMemory.forget_process()


def serve(dialect: Dialect) -> LLMTestServer:
    """A server of ``dialect`` that answers GOOD to every request it takes."""
    return LLMTestServer(responder=lambda _body: answer(GOOD), dialect=dialect)


def client_for(server: LLMTestServer, cache: Path | None, **overrides: Any) -> LLMClient:
    return LLMClient(
        server.settings(**overrides), cache_dir=cache, backoff=0.0, sleep=lambda _s: None
    )


def ask(client: LLMClient) -> Assessment:
    return client.complete("assess", "1", MESSAGES, Assessment).value


def limits(request: dict[str, Any]) -> tuple[str | None, object]:
    """(the token parameter sent, the temperature sent or "absent")."""
    names = [k for k in ("max_tokens", "max_completion_tokens") if k in request]
    assert len(names) <= 1, f"both token parameters sent: {request}"
    return (names[0] if names else None), request.get("temperature", "absent")


def remembered(cache: Path) -> list[dict[str, Any]]:
    data = json.loads((cache / "llm" / PARAMS_FILE).read_text())
    assert data["version"] == 1
    return list(data["endpoints"])


# --------------------------------------------------------------------------- reasoning model


def test_reasoning_model_answers_after_dropping_temperature_and_is_remembered(
    tmp_path: Path,
) -> None:
    with serve("reasoning") as server:
        client = client_for(server, tmp_path)
        with capture_logs() as logs:
            result = client.complete("assess", "1", MESSAGES, Assessment)

        assert result.value == Assessment.model_validate(GOOD)
        assert result.attempts == 2  # the refused request counts (budget), but is no retry
        assert (client.usage.calls, client.usage.retries, client.usage.failures) == (2, 0, 0)
        first, second = server.chat_requests
        assert limits(first) == ("max_completion_tokens", 0.0)
        assert limits(second) == ("max_completion_tokens", "absent")
        assert server.refused == 1
        (event,) = [e for e in logs if e["event"] == "llm.params.adjusted"]
        assert (event["refused"], event["send_temperature"]) == ("temperature", False)

        # the same client, a new client of this process: the adjusted request at once
        ask(client)
        ask(client_for(server, None))
        assert [limits(r) for r in server.chat_requests[2:]] == [
            ("max_completion_tokens", "absent")
        ] * 2
        assert server.refused == 1
        base_url = server.base_url

    (entry,) = remembered(tmp_path)
    assert (entry["base_url"], entry["model"]) == (base_url, "test-model")
    assert (entry["limit_param"], entry["send_temperature"]) == ("max_completion_tokens", False)


def test_a_new_process_reads_what_was_learned_from_the_file(tmp_path: Path) -> None:
    with serve("reasoning") as server:
        ask(client_for(server, tmp_path))
        assert server.refused == 1
        ParamMemory.forget_process()  # what a new process knows: the file only

        ask(client_for(server, tmp_path))
        assert server.refused == 1
        assert limits(server.chat_requests[-1]) == ("max_completion_tokens", "absent")


def test_a_real_new_process_sends_the_adjusted_request_at_once(tmp_path: Path) -> None:
    with serve("reasoning") as server:
        ask(client_for(server, tmp_path))
        before = len(server.chat_requests)
        script = (
            "import sys\n"
            "from patchpilot.core.settings import LLMSettings\n"
            "from patchpilot.tools.llm import LLMClient\n"
            "from tests.unit.test_llm_params import MESSAGES, Assessment\n"
            "settings = LLMSettings.model_validate_json(sys.argv[1])\n"
            "with LLMClient(settings, cache_dir=__import__('pathlib').Path(sys.argv[2])) as c:\n"
            "    print(c.complete('assess', '1', MESSAGES, Assessment).value.host)\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
        done = subprocess.run(
            [sys.executable, "-c", script, server.settings().model_dump_json(), str(tmp_path)],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.splitlines()[-1] == "web-1"  # after the client's log lines
        (request,) = server.chat_requests[before:]
        assert limits(request) == ("max_completion_tokens", "absent")
        assert server.refused == 1


def test_max_tokens_learned_elsewhere_is_switched_back_for_a_reasoning_model(
    tmp_path: Path,
) -> None:
    """Both parameters adjusted in one call (one each): three requests, then an answer."""
    with serve("reasoning") as server:
        ParamMemory(tmp_path / "llm" / PARAMS_FILE).remember(
            server.base_url, "test-model", RequestShape("max_tokens", True)
        )
        ParamMemory.forget_process()
        client = client_for(server, tmp_path)
        assert ask(client).host == "web-1"

        assert [limits(r) for r in server.chat_requests] == [
            ("max_tokens", 0.0),
            ("max_completion_tokens", 0.0),
            ("max_completion_tokens", "absent"),
        ]
    (entry,) = remembered(tmp_path)
    assert (entry["limit_param"], entry["send_temperature"]) == ("max_completion_tokens", False)


def test_explicit_settings_fix_the_request(tmp_path: Path) -> None:
    with serve("reasoning") as server:
        ask(client_for(server, tmp_path, temperature=None, reasoning_effort="low"))
        (request,) = server.chat_requests
        assert limits(request) == ("max_completion_tokens", "absent")
        assert request["reasoning_effort"] == "low"
        assert server.refused == 0
    assert not (tmp_path / "llm" / PARAMS_FILE).exists()  # nothing to learn


# --------------------------------------------------------------------------- older servers


def test_legacy_server_gets_max_tokens_after_one_refusal(tmp_path: Path) -> None:
    with serve("legacy") as server:
        client = client_for(server, tmp_path, max_tokens=300)
        assert ask(client).host == "web-1"
        ask(client)
        ask(client_for(server, tmp_path, max_tokens=300))

        assert [limits(r) for r in server.chat_requests] == [
            ("max_completion_tokens", 0.0),
            ("max_tokens", 0.0),
            ("max_tokens", 0.0),
            ("max_tokens", 0.0),
        ]
        assert server.chat_requests[1]["max_tokens"] == 300
        assert server.refused == 1
    (entry,) = remembered(tmp_path)
    assert (entry["limit_param"], entry["send_temperature"]) == ("max_tokens", True)


def test_legacy_server_with_the_parameter_fixed_in_the_settings(tmp_path: Path) -> None:
    with serve("legacy") as server:
        ask(client_for(server, tmp_path, token_limit_param="max_tokens"))
        (request,) = server.chat_requests
        assert limits(request) == ("max_tokens", 0.0)

        fixed = client_for(server, tmp_path, token_limit_param="max_completion_tokens")
        with pytest.raises(LLMRequestError) as refused:
            ask(fixed)
        assert refused.value.status == 400
        assert "set llm.token_limit_param to max_tokens" in str(refused.value)
        assert len(server.chat_requests) == 2  # fixed by the settings: not adjusted


# --------------------------------------------------------------------------- what stays an error


def test_an_unrelated_400_is_not_retried(tmp_path: Path) -> None:
    with LLMTestServer([bad_request("Invalid parameter: 'response_format'.")]) as server:
        outcome = client_for(server, tmp_path).try_complete("assess", "1", MESSAGES, Assessment)
        assert isinstance(outcome, LLMFallback)
        assert outcome.error == "LLMRequestError"
        assert len(server.chat_requests) == 1
    assert not (tmp_path / "llm" / PARAMS_FILE).exists()


def test_a_400_about_a_value_of_the_parameter_is_not_an_unsupported_parameter(
    tmp_path: Path,
) -> None:
    too_many = http_error(
        400,
        "max_completion_tokens is too large: 100000. This model supports at most 16384.",
        code="invalid_value",
        param="max_completion_tokens",
    )
    with LLMTestServer([too_many]) as server:
        with pytest.raises(LLMRequestError, match="too large"):
            ask(client_for(server, tmp_path))
        assert len(server.chat_requests) == 1


def test_a_server_refusing_both_token_parameters_fails_after_one_switch(tmp_path: Path) -> None:
    def refuse_either(body: dict[str, Any]) -> Step:
        if "max_tokens" in body:
            return unsupported_parameter("max_tokens")
        return extra_input("max_completion_tokens")

    with LLMTestServer(responder=refuse_either) as server:
        with pytest.raises(LLMRequestError) as refused:
            ask(client_for(server, tmp_path))
        assert [limits(r)[0] for r in server.chat_requests] == [
            "max_completion_tokens",
            "max_tokens",
        ]
        assert "set llm.token_limit_param" in str(refused.value)


# --------------------------------------------------------------------------- the detection


OPENAI_MAX_TOKENS = {
    "message": "Unsupported parameter: 'max_tokens' is not supported with this model. "
    "Use 'max_completion_tokens' instead.",
    "type": "invalid_request_error",
    "param": "max_tokens",
    "code": "unsupported_parameter",
}
OPENAI_TEMPERATURE = {
    "message": "Unsupported value: 'temperature' does not support 0 with this model. "
    "Only the default (1) value is supported.",
    "type": "invalid_request_error",
    "param": "temperature",
    "code": "unsupported_value",
}


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, OPENAI_MAX_TOKENS, "max_tokens"),
        (400, {"error": OPENAI_MAX_TOKENS}, "max_tokens"),
        (400, OPENAI_TEMPERATURE, "temperature"),
        # a proxy that drops param and code: the message alone
        (
            400,
            {"message": OPENAI_MAX_TOKENS["message"], "code": "invalid_request_body"},
            "max_tokens",
        ),
        (
            400,
            {"message": "Unsupported parameter: 'temperature' is not supported with this model."},
            "temperature",
        ),
        (400, extra_input("max_completion_tokens").body, "max_completion_tokens"),
        (
            422,
            {"message": "Unrecognized request argument supplied: max_completion_tokens"},
            "max_completion_tokens",
        ),
        (400, {"message": "max_tokens must be at least 1", "param": "max_tokens"}, None),
        (400, {"message": "Invalid parameter: 'response_format'."}, None),
        (400, {"message": "unknown field max_tokens_per_run"}, None),  # not the parameter
        (401, OPENAI_MAX_TOKENS, None),
        (400, "Unsupported parameter: 'max_tokens'", None),  # a body that is not an object
    ],
)
def test_rejected_parameter(status: int, body: object, expected: str | None) -> None:
    message = body.get("message", "") if isinstance(body, dict) else ""
    assert rejected_parameter(status, body, f"Error code: {status} - {message}") == expected


def test_server_refusal_steps_from_json() -> None:
    for obj, param in [
        ({"fault": "unsupported_parameter", "param": "max_tokens"}, "max_tokens"),
        ({"fault": "unsupported_value", "param": "temperature", "value": 0.2}, "temperature"),
        ({"fault": "extra_input"}, "max_completion_tokens"),
    ]:
        step = step_from_json(obj)
        assert isinstance(step, Fault)
        assert step.status == 400
        assert rejected_parameter(step.status, step.body, "") == param


# --------------------------------------------------------------------------- the file


def test_an_unreadable_file_is_ignored_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "llm" / PARAMS_FILE
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 7, "endpoints": "everything"}')
    with serve("legacy") as server:
        with capture_logs() as logs:
            ask(client_for(server, tmp_path))
        assert any(e["event"] == "llm.params.file_ignored" for e in logs)
        assert len(server.chat_requests) == 2
    (entry,) = remembered(tmp_path)
    assert entry["limit_param"] == "max_tokens"


def test_concurrent_writers_keep_every_entry(tmp_path: Path) -> None:
    path = tmp_path / "llm" / PARAMS_FILE

    def learn(index: int) -> None:
        ParamMemory(path).remember(f"http://10.0.0.{index}/v1", "m", RequestShape("max_tokens"))

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(learn, range(16)))
    assert sorted(e["base_url"] for e in remembered(tmp_path)) == sorted(
        f"http://10.0.0.{i}/v1" for i in range(16)
    )
    ParamMemory.forget_process()
    assert ParamMemory(path).recall("http://10.0.0.3/v1", "m") == RequestShape("max_tokens")
    assert ParamMemory(path).recall("http://10.0.0.3/v1", "other-model") is None


# --------------------------------------------------------------------------- gateway headers


def test_gateway_headers_reach_chat_and_embeddings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GW_TOKEN", "tok-123")
    headers = {"X-Gateway-Key": "${ENV:GW_TOKEN}", "X-Team": "patching ${ENV:GW_TOKEN}!"}
    with LLMTestServer(responder=lambda _b: answer(GOOD)) as server:
        with client_for(server, None, headers=headers, embeddings_model="embed-test") as client:
            ask(client)
            client.embed(["openssl"])
        settings = Settings(
            home=tmp_path,
            llm=server.settings(headers=headers, embeddings_model="embed-test"),
            memory={"embedding": "openai"},
        )
        embedding_function(settings)(["libc6"])

        chat, embed, memory = server.requests
        for request in (chat, embed, memory):
            assert request.headers["x-gateway-key"] == "tok-123"
            assert request.headers["x-team"] == "patching tok-123!"
            assert request.headers["authorization"].startswith("Bearer ")  # not replaced
        assert memory.path.endswith("/embeddings")


def test_an_unset_header_variable_fails_naming_it_not_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GW_TOKEN", raising=False)
    settings = LLMSettings(base_url="http://127.0.0.1:9/v1", headers={"X-Key": "${ENV:GW_TOKEN}"})
    with pytest.raises(LLMConfigError, match=r"'X-Key'.*GW_TOKEN.*unset"):
        LLMClient(settings, cache_dir=None)
    monkeypatch.setenv("GW_TOKEN", "line\r\nInjected: yes")
    with pytest.raises(LLMConfigError, match="CR, LF") as bad:
        LLMClient(settings, cache_dir=None)
    assert "Injected" not in str(bad.value)


def test_authorization_header_only_when_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="allow_authorization_header"):
        LLMSettings(headers={"authorization": "Basic abc"})
    monkeypatch.setenv("GW_BASIC", "Basic Z3c6cGFzcw==")
    with LLMTestServer([answer(GOOD)]) as server:
        headers = {"Authorization": "${ENV:GW_BASIC}"}
        ask(client_for(server, None, headers=headers, allow_authorization_header=True))
        (request,) = server.requests
        assert request.headers["authorization"] == "Basic Z3c6cGFzcw=="


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({"X Bad": "v"}, "not an HTTP token"),
        ({"X-Ok": "a\r\nX-Evil: 1"}, "CR, LF"),
        ({"X-Ok": "caf\u00e9"}, "printable ASCII"),
        ({"Host": "evil.example"}, "set by patchpilot"),
        ({"Accept-Encoding": "br"}, "set by patchpilot"),
        ({"X-Ok": "${HOME}"}, "ENV:NAME"),
        ({"X-A": "1", "x-a": "2"}, "twice"),
    ],
)
def test_bad_headers_are_refused_at_load(
    headers: dict[str, str], reason: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATCHPILOT_LLM__HEADERS", json.dumps(headers))
    with pytest.raises(ConfigError, match=reason) as bad:
        load_settings()
    assert bad.value.key is not None
    assert bad.value.key.startswith("llm.headers")


def test_patchpilot_prefixed_header_variables_are_not_taken_for_typos(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATCHPILOT_LLM__HEADERS", json.dumps({"X-K": "${ENV:PATCHPILOT_GW}"}))
    monkeypatch.setenv("PATCHPILOT_GW", "secret")
    settings = load_settings()
    assert settings.llm.header_env_names() == ["PATCHPILOT_GW"]
    assert settings.llm.resolved_headers(os.environ) == {"X-K": "secret"}

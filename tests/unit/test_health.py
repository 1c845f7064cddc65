"""patchpilot.tools.health: models, URL templates, polling, and each kind against fakes."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import CommandResult, Host
from patchpilot.tools.health import (
    CHECK_ADAPTER,
    CommandCheck,
    HttpCheck,
    ProcessCheck,
    render_url,
    run_check,
    run_checks,
)
from tests.fakes import ScriptedTransport

HOST = Host(name="canary-1", address="127.0.0.1", port=23611)


def _result(code: int = 0, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(host="", argv=("x",), exit_code=code, stdout=out, stderr=err)


def _client(statuses: list[int], body: str = "ok") -> tuple[httpx.Client, list[str]]:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        return httpx.Response(status, text=body)

    return httpx.Client(transport=httpx.MockTransport(handler)), seen


def test_discriminated_union_loads_each_kind() -> None:
    checks = [
        CHECK_ADAPTER.validate_python({"kind": "http", "url": "http://{address}:8080/health"}),
        CHECK_ADAPTER.validate_python({"kind": "command", "argv": ["true"]}),
        CHECK_ADAPTER.validate_python({"kind": "process", "name": "python3.11"}),
    ]
    assert [type(c) for c in checks] == [HttpCheck, CommandCheck, ProcessCheck]
    with pytest.raises(ValidationError):
        CHECK_ADAPTER.validate_python({"kind": "shell", "script": "rm -rf /"})


@pytest.mark.parametrize(
    "url",
    [
        "http://{address.__class__}/",
        "http://{acme_port}/",
        "http://{address!r}/",
        "http://{address:>10}/",
        "file:///etc/passwd",
        "http://{address",
    ],
)
def test_url_templates_are_restricted(url: str) -> None:
    with pytest.raises(ValidationError):
        HttpCheck(url=url)
    with pytest.raises(ValidationError):
        HttpCheck(url="http://{address}/", url_overrides={"web-1": url})


def test_render_url_with_overrides_and_ipv6() -> None:
    check = HttpCheck(
        url="http://{address}:8080/health",
        url_overrides={"canary-1": "http://{address}:24611/health?h={name}"},
    )
    assert render_url(check, HOST) == "http://127.0.0.1:24611/health?h=canary-1"
    web = Host(name="web-1", address="::1")
    assert render_url(check, web) == "http://[::1]:8080/health"


@pytest.mark.parametrize(
    "argv", [["sh", "-c", "a\nb"], ["bad\x00"], ["-rf"], [""]]
)  # fmt: skip
def test_command_check_argv_is_validated(argv: list[str]) -> None:
    with pytest.raises(ValidationError):
        CommandCheck(argv=argv)
    with pytest.raises(ValidationError):
        CommandCheck(argv=[])


@pytest.mark.parametrize("name", ["-x", "a b", "a;b", "x" * 16, ""])
def test_process_names_are_validated(name: str) -> None:
    with pytest.raises(ValidationError):
        ProcessCheck(name=name)


def test_http_check_polls_until_healthy() -> None:
    client, seen = _client([503, 503, 200])
    pauses: list[float] = []
    transport = ScriptedTransport(lambda argv: _result(), name="canary-1")
    check = HttpCheck(url="http://{address}:24611/health", retries=5, interval_s=0.2)
    result = run_check(check, transport, HOST, client=client, sleep=pauses.append)
    assert result.ok
    assert result.attempts == 3
    assert result.status_code == 200
    assert pauses == [0.2, 0.2]
    assert seen[0] == "http://127.0.0.1:24611/health"
    assert transport.calls == []


def test_http_check_fails_after_its_retries() -> None:
    client, _ = _client([503])
    check = HttpCheck(url="http://{address}/health", retries=2, interval_s=0)
    transport = ScriptedTransport(lambda argv: _result(), name="canary-1")
    result = run_check(check, transport, HOST, client=client, sleep=lambda _: None)
    assert not result.ok
    assert result.attempts == 3
    assert result.detail == "HTTP 503, expected 200"


def test_http_check_body_and_latency() -> None:
    transport = ScriptedTransport(lambda argv: _result(), name="canary-1")
    client, _ = _client([200], body="status: degraded")
    body = HttpCheck(url="http://{address}/", body_contains="status: ok", retries=0)
    result = run_check(body, transport, HOST, client=client)
    assert not result.ok
    assert "body does not contain" in result.detail
    fast = HttpCheck(url="http://{address}/", max_latency_ms=0.000001, retries=0)
    result = run_check(fast, transport, HOST, client=client)
    assert not result.ok
    assert result.detail.startswith("latency")


def test_http_check_connection_refused_is_a_failure_not_an_exception() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = httpx.Client(transport=httpx.MockTransport(refuse))
    transport = ScriptedTransport(lambda argv: _result(), name="canary-1")
    check = HttpCheck(url="http://{address}/", retries=1, interval_s=0)
    result = run_check(check, transport, HOST, client=client, sleep=lambda _: None)
    assert not result.ok
    assert result.attempts == 2
    assert "ConnectError" in result.detail


def test_http_check_needs_the_host() -> None:
    transport = ScriptedTransport(lambda argv: _result(), name="canary-1")
    with pytest.raises(ConfigError):
        run_check(HttpCheck(url="http://{address}/"), transport)


def test_command_check_runs_the_argv_on_the_host() -> None:
    transport = ScriptedTransport(
        lambda argv: _result(3, "acme-web is not running\n"), name="canary-1", root=False
    )
    check = CommandCheck(argv=("service", "acme-web", "status"), sudo=True, retries=1, interval_s=0)
    result = run_check(check, transport, sleep=lambda _: None)
    assert not result.ok
    assert result.exit_code == 3
    assert result.attempts == 2
    assert result.detail == "exit 3, expected 0: acme-web is not running"
    assert transport.calls[0][-3:] == ("service", "acme-web", "status")
    assert transport.calls[0][:2] == ("sudo", "-n")


def test_process_check_uses_a_constant_script() -> None:
    transport = ScriptedTransport(lambda argv: _result(0, "436\n"), name="canary-1")
    result = run_check(ProcessCheck(name="python3.11"), transport)
    assert result.ok
    assert result.detail == "running: pid 436"
    argv = transport.calls[0]
    assert argv[:2] == ("sh", "-c")
    assert argv[3:] == ("sh", "python3.11")
    assert "python3.11" not in argv[2]
    missing = ScriptedTransport(lambda argv: _result(1), name="canary-1")
    result = run_check(ProcessCheck(name="nginx", retries=0), missing)
    assert not result.ok
    assert result.detail == "no process named 'nginx'"


def test_run_checks_runs_every_check() -> None:
    transport = ScriptedTransport(lambda argv: _result(1), name="canary-1")
    results = run_checks(
        [CommandCheck(argv=("false",)), ProcessCheck(name="sshd", retries=0)], transport
    )
    assert [r.ok for r in results] == [False, False]

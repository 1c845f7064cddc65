"""Graph traces leave the machine only when ``tracing.enabled`` says so.

The end-to-end tests run a real LangGraph graph in a new process that starts the way the CLI
does (``Context.settings``: settings, logging, then the tracing guard), with
``LANGSMITH_TRACING=true`` and ``LANGSMITH_ENDPOINT`` pointing at an HTTP server on loopback
that records whatever LangSmith sends it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import structlog
from structlog.testing import capture_logs

from patchpilot.core.errors import ConfigError
from patchpilot.core.settings import TracingSettings, load_settings
from patchpilot.core.tracing import CREDENTIALS, TRACING_FLAGS, apply_tracing

REPO = Path(__file__).resolve().parents[2]
SECRET = "lsv2_pt_do-not-leak-0123456789"

GRAPH = """
from typing import TypedDict

from langgraph.graph import END, START, StateGraph

from patchpilot.cli.app import Context

Context(None, {}).settings  # what every CLI command does first


class State(TypedDict):
    host: str


def check(state: State) -> State:
    return {"host": state["host"] + "-checked"}


graph = StateGraph(State)
graph.add_node("check", check)
graph.add_edge(START, "check")
graph.add_edge("check", END)
print(graph.compile().invoke({"host": "web-1.prod.example"})["host"])
"""


@dataclass
class Collector:
    """An HTTP server on loopback that records every request and answers ``{}``."""

    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""


@pytest.fixture
def collector() -> Iterator[Collector]:
    yield from _serve()


@pytest.fixture
def decoy() -> Iterator[Collector]:
    yield from _serve()


def _serve() -> Iterator[Collector]:
    seen = Collector()

    class Handler(BaseHTTPRequestHandler):
        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with seen.lock:
                seen.requests.append((self.command, self.path, body))
            data = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = _any

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    seen.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run_graph(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PATCHPILOT_", "LANGSMITH_", "LANGCHAIN_"))
    }
    done = subprocess.run(
        [sys.executable, "-c", GRAPH],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**base, "PATCHPILOT_HOME": str(home), **env},
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-1] == "web-1.prod.example-checked"
    return done


# --------------------------------------------------------------------------- end to end


def test_environment_tracing_sends_nothing_when_the_setting_is_off(
    collector: Collector, tmp_path: Path
) -> None:
    done = run_graph(
        tmp_path,
        LANGSMITH_TRACING="true",
        LANGCHAIN_TRACING_V2="true",
        LANGSMITH_ENDPOINT=collector.url,
        LANGSMITH_API_KEY=SECRET,
    )
    assert collector.requests == []  # not a run, not even GET /info
    assert "llm.tracing.disabled" in done.stderr
    for name in ("LANGSMITH_TRACING", "LANGCHAIN_TRACING_V2", "LANGSMITH_API_KEY"):
        assert name in done.stderr
    assert SECRET not in done.stderr + done.stdout


def test_the_setting_sends_the_trace_to_its_own_endpoint(
    collector: Collector, decoy: Collector, tmp_path: Path
) -> None:
    run_graph(
        tmp_path,
        PATCHPILOT_TRACING__ENABLED="true",
        PATCHPILOT_TRACING__ENDPOINT=collector.url,
        PATCHPILOT_TRACING__PROJECT="patchpilot-test",
        LANGSMITH_ENDPOINT=decoy.url,  # the environment's endpoint loses to the setting's
        LANGSMITH_DISABLE_RUN_COMPRESSION="true",
    )
    runs = [
        body for method, path, body in collector.requests if method == "POST" and "/runs" in path
    ]
    assert runs, f"no trace received: {[(m, p) for m, p, _ in collector.requests]}"
    sent = b"".join(runs)
    assert b"web-1.prod.example" in sent
    assert b"patchpilot-test" in sent
    assert decoy.requests == []


def test_the_cli_neutralises_tracing_before_any_command(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PATCHPILOT_", "LANGSMITH_", "LANGCHAIN_"))
    }
    env.update(PATCHPILOT_HOME=str(tmp_path), LANGSMITH_TRACING="true", LANGCHAIN_API_KEY=SECRET)
    done = subprocess.run(
        [sys.executable, "-m", "patchpilot", "runs", "-f", "json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "llm.tracing.disabled" in done.stderr
    assert "LANGCHAIN_API_KEY" in done.stderr
    assert SECRET not in done.stderr + done.stdout


# --------------------------------------------------------------------------- the guard


def test_off_neutralises_every_spelling_and_removes_the_keys() -> None:
    environ = {
        "LANGSMITH_TRACING_V2": "true",  # read before LANGCHAIN_TRACING_V2 by langsmith
        "LANGCHAIN_TRACING": "true",
        "LANGSMITH_API_KEY": SECRET,
        "LANGCHAIN_API_KEY": SECRET,
        "LANGSMITH_RUNS_ENDPOINTS": '{"https://replica.example": "key"}',
        "LANGSMITH_OTEL_ENABLED": "true",
        "LANGSMITH_PROJECT": "kept",
        "PATH": "/usr/bin",
    }
    with capture_logs() as logs:
        state = apply_tracing(TracingSettings(), environ)

    assert not state.enabled
    assert state.requested
    assert all(environ[flag] == "false" for flag in TRACING_FLAGS)
    assert not any(name in environ for name in CREDENTIALS)
    assert "LANGSMITH_RUNS_ENDPOINTS" not in environ
    assert "LANGSMITH_OTEL_ENABLED" not in environ
    assert (environ["LANGSMITH_PROJECT"], environ["PATH"]) == ("kept", "/usr/bin")
    assert set(state.neutralised) == {
        "LANGSMITH_TRACING_V2",
        "LANGCHAIN_TRACING",
        "LANGSMITH_API_KEY",
        "LANGCHAIN_API_KEY",
        "LANGSMITH_RUNS_ENDPOINTS",
        "LANGSMITH_OTEL_ENABLED",
    }
    (event,) = logs
    assert (event["event"], event["log_level"]) == ("llm.tracing.disabled", "warning")
    assert SECRET not in repr(event)


def test_off_without_tracing_variables_only_logs_at_debug() -> None:
    environ: dict[str, str] = {"LANGSMITH_TRACING": "false"}
    saved = structlog.get_config()
    structlog.reset_defaults()  # an earlier test may have configured an INFO level filter
    try:
        with capture_logs() as logs:
            state = apply_tracing(TracingSettings(), environ)
    finally:
        structlog.configure(**saved)
    assert (state.requested, state.neutralised) == (False, ())
    assert [e["log_level"] for e in logs] == ["debug"]


def test_on_sets_the_variables_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {
        "LANGCHAIN_TRACING_V2": "false",
        "LANGCHAIN_TRACING": "true",
        "LANGCHAIN_ENDPOINT": "https://elsewhere.example",
        "LANGSMITH_RUNS_ENDPOINTS": '{"https://replica.example": "key"}',
        "PP_TRACE_KEY": SECRET,
    }
    settings = TracingSettings(
        enabled=True,
        endpoint="https://smith.internal.example",
        project="fleet",
        api_key_env="PP_TRACE_KEY",
    )
    state = apply_tracing(settings, environ)

    assert state.enabled
    assert environ["LANGSMITH_TRACING"] == environ["LANGCHAIN_TRACING_V2"] == "true"
    assert "LANGCHAIN_TRACING" not in environ  # v1: LangChain refuses it
    assert environ["LANGSMITH_ENDPOINT"] == "https://smith.internal.example"
    assert "LANGCHAIN_ENDPOINT" not in environ
    assert "LANGSMITH_RUNS_ENDPOINTS" not in environ
    assert environ["LANGSMITH_PROJECT"] == "fleet"
    assert environ["LANGSMITH_API_KEY"] == SECRET


def test_tracing_settings_load_and_are_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert load_settings().tracing == TracingSettings()
    config = tmp_path / "config.yaml"
    config.write_text("tracing:\n  enabled: true\n  endpoint: file:///etc/passwd\n")
    with pytest.raises(ConfigError, match="http") as bad:
        load_settings(config)
    assert bad.value.key == "tracing.endpoint"
    monkeypatch.setenv("PATCHPILOT_TRACING__API_KEY_ENV", "PATCHPILOT_TRACE_KEY")
    monkeypatch.setenv("PATCHPILOT_TRACE_KEY", "x")  # named by the setting: not a typo
    assert load_settings().tracing.api_key_env == "PATCHPILOT_TRACE_KEY"

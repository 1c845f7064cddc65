"""The LLM test server as a CLI (``python -m tests.llm_server``), driven by LLMClient over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import BaseModel

from patchpilot.core.settings import LLMSettings
from patchpilot.tools.llm import LLMClient

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0


class Verdict(BaseModel):
    host: str
    risk: str


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def cli_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    script = tmp_path / "steps.json"
    script.write_text(
        json.dumps(
            [
                {"fault": "server_error", "status": 503},
                {"content": {"host": "web-1", "risk": "high"}},
            ]
        )
    )
    port = _free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.llm_server",
            "--port",
            str(port),
            "--script",
            str(script),
            "--default",
            json.dumps({"host": "db-1", "risk": "low"}),
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited early: {(tmp_path / 'server.log').read_text()}")
            try:
                if httpx.get(f"{base_url}/models", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the LLM test server did not start in time")
            time.sleep(0.05)
        yield base_url, proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def test_cli_server_plays_its_script(
    cli_server: tuple[str, subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    base_url, proc = cli_server
    waits: list[float] = []
    settings = LLMSettings(base_url=base_url, model="local-model", timeout=5.0, cache=False)
    messages = [{"role": "user", "content": "assess web-1"}]
    with LLMClient(settings, cache_dir=None, backoff=0.01, sleep=waits.append) as client:
        first = client.complete("assess", "1", messages, Verdict)
        second = client.complete("assess", "1", messages, Verdict)

    assert first.value == Verdict(host="web-1", risk="high")
    assert first.attempts == 2
    assert len(waits) == 1
    assert first.model == "local-model"
    assert second.value == Verdict(host="db-1", risk="low")

    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert b"llm_test_server_stopped" in (tmp_path / "server.log").read_bytes()

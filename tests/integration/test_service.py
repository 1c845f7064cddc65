"""``patchpilot serve`` on the lab, end to end, as separate processes.

Users are added with the CLI (``patchpilot users add``; the token is the last line of its
output); the service runs as its own process on a free loopback port; an operator creates the
acme-web 1.1.0 run through the API; it waits for approval (web-1 is tagged prod); the
operator's own approval and a viewer's are refused (403), a request without a token gets 401;
an approver approves; the service completes the run with no further call; dpkg on every host
shows 1.1.0; the audit log names both users. The lab is restored afterwards (acme-web 1.0.0
everywhere, held on db-1), as in tests/integration/test_run.py.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from patchpilot.core.audit import read_events

if TYPE_CHECKING:
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

RESTORE = [
    "env",
    "DEBIAN_FRONTEND=noninteractive",
    "apt-get",
    "install",
    "-y",
    "--allow-downgrades",
    "--allow-change-held-packages",
]
LAB_HOSTS = ("canary-1", "web-1", "db-1")


def _version(lab: LabHandle, host: str) -> str:
    done = lab.exec(host, ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", "acme-web"])
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def restore_lab(lab: LabHandle) -> Iterator[None]:
    """Finalizer: acme-web 1.0.0 everywhere, held again on db-1."""
    yield
    for host in lab.hosts:
        lab.exec(host.name, ["dpkg", "--configure", "-a", "--force-confold"])
        if not _version(lab, host.name).startswith("1.0.0 "):
            done = lab.exec(host.name, [*RESTORE, "acme-web=1.0.0"])
            assert done.returncode == 0, done.stderr
    lab.exec("db-1", ["apt-mark", "hold", "acme-web"])
    assert _version(lab, "db-1") == "1.0.0 hi"


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
    env.update(
        PATCHPILOT_HOME=str(home),
        PATCHPILOT_DISCOVERY__CHANGELOGS="none",
        PATCHPILOT_FEEDS__AUTO_UPDATE="false",
    )
    return env


def add_user(home: Path, name: str, role: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "patchpilot", "users", "add", name, "--role", role],
        capture_output=True,
        text=True,
        env=_env(home),
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def service(lab: LabHandle, tmp_path: Path) -> Iterator[tuple[Path, str, dict[str, str]]]:
    """``patchpilot serve`` on the lab: (home, base URL, tokens by user)."""
    home = tmp_path / "home"
    doc = yaml.safe_load(lab.lab.policy_path.read_text())
    doc["schedule"] = {
        **doc.get("schedule", {}),
        "rings": [
            {"name": "canary", "tags": ["canary"]},
            {"name": "early", "hosts": ["web-*"]},
            {"name": "broad"},
        ],
    }
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(doc))
    tokens = {
        name: add_user(home, name, role)
        for name, role in (("otto", "operator"), ("vera", "viewer"), ("anna", "approver"))
    }
    port = free_port()
    log_file = tmp_path / "serve.log"
    with log_file.open("wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "patchpilot",
                "serve",
                "--inventory",
                str(lab.inventory_path),
                "--policy",
                str(policy),
                "--port",
                str(port),
            ],
            env=_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            assert server.poll() is None, log_file.read_text()[-3000:]
            try:
                if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("the service did not answer in 60 s:\n" + log_file.read_text()[-3000:])
        yield home, base, tokens
    finally:
        server.send_signal(signal.SIGTERM)  # only the process this fixture started
        try:
            server.wait(timeout=120)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        # shown by pytest when the test failed: what the service logged
        warnings = [line for line in log_file.read_text().splitlines() if '"debug"' not in line]
        print("\n".join(warnings[-60:]))


def _until(
    client: httpx.Client, run_id: str, headers: dict[str, str], done: set[str], minutes: float
) -> dict[str, Any]:
    deadline = time.monotonic() + minutes * 60
    while True:
        response = client.get(
            f"/api/v1/runs/{run_id}/wait", params={"timeout": 30}, headers=headers
        )
        assert response.status_code == 200, response.text
        doc: dict[str, Any] = response.json()
        if doc["status"] in done:
            return doc
        assert time.monotonic() < deadline, f"run still {doc['status']}"
        time.sleep(1)


def test_an_api_run_waits_for_an_approver_and_the_service_completes_it(
    lab: LabHandle, service: tuple[Path, str, dict[str, str]]
) -> None:
    home, base, tokens = service
    lab.exec("db-1", ["apt-mark", "unhold", "acme-web"])

    def auth(who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[who]}"}

    with httpx.Client(base_url=base, timeout=90) as client:
        assert client.post("/api/v1/runs", json={"only": ["acme-web=1.1.0"]}).status_code == 401
        created = client.post(
            "/api/v1/runs", json={"only": ["acme-web=1.1.0"], "limit": "all"}, headers=auth("otto")
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        assert created.json()["status"]

        waiting = _until(client, run_id, auth("vera"), {"awaiting_approval"} | _ENDED, 10)
        assert waiting["status"] == "awaiting_approval", waiting.get("reason")
        assert any("web-1 is tagged prod" in r for r in waiting["approval"]["reasons"])
        assert {h: _version(lab, h)[:5] for h in LAB_HOSTS} == dict.fromkeys(LAB_HOSTS, "1.0.0")

        listed = client.get("/api/v1/approvals", headers=auth("vera")).json()["approvals"]
        assert [(a["run_id"], a["requested_by"]) for a in listed] == [(run_id, "otto")]

        path = f"/api/v1/approvals/{run_id}/approve"
        assert client.post(path, json={"comment": "mine"}, headers=auth("otto")).status_code == 403
        assert client.post(path, json={"comment": "me"}, headers=auth("vera")).status_code == 403
        assert client.post(path, json={"comment": "anon"}).status_code == 401
        approved = client.post(path, json={"comment": "canary first"}, headers=auth("anna"))
        assert approved.status_code == 200, approved.text

        # no further call but reads: the service continues the run by itself
        done = _until(client, run_id, auth("vera"), _ENDED, 15)
    assert done["status"] == "completed", done.get("reason")
    assert {d["host"]: d["status"] for d in done["deployments"]} == dict.fromkeys(
        LAB_HOSTS, "installed"
    )
    for host in LAB_HOSTS:
        assert _version(lab, host) == "1.1.0 ii"
    events = read_events(home / "audit.log", run_id=run_id)
    actors = {e.actor for e in events}
    assert {"otto", "anna"} <= actors
    granted = next(e for e in events if e.action == "approval.granted")
    assert granted.actor == "anna"
    assert granted.details["comment"] == "canary first"


_ENDED = {"completed", "partial", "failed", "halted", "rejected", "cancelled"}

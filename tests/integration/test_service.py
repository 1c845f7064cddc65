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

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import yaml

from patchpilot.core.audit import read_events
from tests.integration.test_run import (
    _version,
    restore_lab,  # noqa: F401 - autouse: acme-web 1.0.0 everywhere afterwards, as the run tests
)
from tests.receivers import Mailbox, Receiver

if TYPE_CHECKING:
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

LAB_HOSTS = ("canary-1", "web-1", "db-1")


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


@dataclass
class Service:
    """``patchpilot serve`` on the lab, as its own process; started, killed and started again
    by the test (only the process it started, by pid)."""

    home: Path
    inventory: Path
    policy: Path
    logs: Path
    port: int = field(default_factory=free_port)
    tokens: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    @property
    def log_file(self) -> Path:
        return self.logs / f"serve-{self.starts}.log"

    def start(self, **env: str) -> None:
        """Start the service (``env``: extra environment, e.g. failpoints); wait until it
        answers /api/v1/health."""
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        with self.log_file.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "patchpilot",
                    "serve",
                    "--inventory",
                    str(self.inventory),
                    "--policy",
                    str(self.policy),
                    "--port",
                    str(self.port),
                ],
                env=_env(self.home) | env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        for _ in range(300):
            assert self.process.poll() is None, self.log_file.read_text()[-3000:]
            try:
                if httpx.get(f"{self.base}/api/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        pytest.fail("the service did not answer in 60 s:\n" + self.log_file.read_text()[-3000:])

    def kill(self) -> None:
        """``kill -9`` of the service (no cleanup runs)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=60)

    def stop(self) -> None:
        """SIGTERM, then (after 2 minutes) SIGKILL; prints what the service logged."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for number in range(1, self.starts + 1):
            lines = (self.logs / f"serve-{number}.log").read_text().splitlines()
            warnings = [line for line in lines if '"debug"' not in line]
            print(f"--- serve start {number}\n" + "\n".join(warnings[-60:]))


@pytest.fixture
def service(lab: LabHandle, tmp_path: Path) -> Iterator[Service]:
    """The service for the lab (not started; the users otto operator, vera viewer, anna
    approver exist; three rings: canary, web-*, the rest)."""
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
    service = Service(home=home, inventory=lab.inventory_path, policy=policy, logs=tmp_path)
    service.tokens = {
        name: add_user(home, name, role)
        for name, role in (("otto", "operator"), ("vera", "viewer"), ("anna", "approver"))
    }
    try:
        yield service
    finally:
        service.stop()


def configure(service: Service, settings: dict[str, Any]) -> None:
    """Write the service's settings file (HOME/config.yaml) before it starts."""
    (service.home / "config.yaml").write_text(yaml.safe_dump(settings))


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


_ENDED = {"completed", "partial", "failed", "halted", "rejected", "cancelled"}


def _upgrades(lab: LabHandle, host: str, old: str, new: str) -> int:
    """How many times dpkg.log says acme-web was upgraded from ``old`` to ``new``."""
    log = lab.exec(host, ["cat", "/var/log/dpkg.log"]).stdout
    return sum(1 for line in log.splitlines() if f" upgrade acme-web:all {old} {new}" in line)


def test_an_api_run_waits_for_an_approver_the_service_completes_it_and_people_are_told(
    lab: LabHandle, service: Service, receiver: Receiver, mailbox: Mailbox
) -> None:
    configure(
        service,
        {
            "notifications": {
                "webhooks": [{"url": receiver.url}],
                "smtp": {
                    "host": "127.0.0.1",
                    "port": mailbox.port,
                    "sender": "patchpilot@example.org",
                    "to": ["ops@example.org"],
                },
                "backoff": 0.1,
            }
        },
    )
    service.start()
    auth = service.auth
    lab.exec("db-1", ["apt-mark", "unhold", "acme-web"])

    with httpx.Client(base_url=service.base, timeout=90) as client:
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

        # the people who decide are told, by webhook and by e-mail, with no call from the test
        hook = json.loads(receiver.wait_for(1)[0]["raw"])
        assert (hook["event"], hook["run_id"]) == ("awaiting-approval", run_id)
        assert "acme-web 1.0.0 -> 1.1.0" in hook["detail"]
        (mail,) = mailbox.wait_for(1)
        assert mail["Subject"].startswith(f"[patchpilot] awaiting-approval: Run {run_id}")

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
        events = read_events(service.home / "audit.log", run_id=run_id)
        assert {"otto", "anna"} <= {e.actor for e in events}
        granted = next(e for e in events if e.action == "approval.granted")
        assert granted.actor == "anna"
        assert granted.details["comment"] == "canary first"

        # the broken release on the canary alone (no prod host: no approval): rolled back,
        # and the rollback reaches the webhook and the mailbox too
        broken = client.post(
            "/api/v1/runs",
            json={"only": ["acme-web=1.2.0"], "limit": "canary-1"},
            headers=auth("otto"),
        )
        assert broken.status_code == 202, broken.text
        halted = _until(client, broken.json()["run_id"], auth("vera"), _ENDED, 10)
    assert halted["status"] == "halted", halted.get("reason")
    assert [(d["host"], d["status"]) for d in halted["deployments"]] == [
        ("canary-1", "rolled_back")
    ]
    assert _version(lab, "canary-1") == "1.1.0 ii"
    hooks = [json.loads(h["raw"]) for h in receiver.wait_for(3)]
    rolled = next(h for h in hooks if h["event"] == "rolled-back")
    assert rolled["run_id"] == halted["run_id"]
    assert "canary-1: acme-web 1.2.0 rolled back to 1.1.0" in rolled["detail"]
    subjects = [m["Subject"] for m in mailbox.wait_for(3)]
    assert any(s.startswith("[patchpilot] rolled-back:") for s in subjects), subjects
    # every event once: the approval was announced once, not again after the restart of work
    assert [h["event"] for h in hooks].count("awaiting-approval") == 1


def test_kill_9_of_the_service_mid_rollout_then_a_restart_completes_the_run_once_per_host(
    lab: LabHandle, service: Service
) -> None:
    lab.exec("db-1", ["apt-mark", "unhold", "acme-web"])
    before = {h: _upgrades(lab, h, "1.0.0", "1.1.0") for h in LAB_HOSTS}
    # the service kills itself (SIGKILL, as kill -9) right after the 2nd host's install
    service.start(PATCHPILOT_FAILPOINTS="deploy.after_install#2")
    auth = service.auth
    with httpx.Client(base_url=service.base, timeout=90) as client:
        created = client.post(
            "/api/v1/runs", json={"only": ["acme-web=1.1.0"]}, headers=auth("otto")
        )
        assert created.status_code == 202, created.text
        run_id = created.json()["run_id"]
        waiting = _until(client, run_id, auth("vera"), {"awaiting_approval"} | _ENDED, 10)
        assert waiting["status"] == "awaiting_approval", waiting.get("reason")
        approved = client.post(
            f"/api/v1/approvals/{run_id}/approve", json={"comment": "go"}, headers=auth("anna")
        )
        assert approved.status_code == 200, approved.text
        assert service.process is not None
        assert service.process.wait(timeout=600) == -signal.SIGKILL
    installed = [h for h in LAB_HOSTS if _version(lab, h).startswith("1.1.0")]
    assert len(installed) == 2, {h: _version(lab, h) for h in LAB_HOSTS}

    service.start()  # no failpoint: the executor resumes the interrupted run by itself
    with httpx.Client(base_url=service.base, timeout=90) as client:
        done = _until(client, run_id, auth("vera"), _ENDED, 10)
    assert done["status"] == "completed", done.get("reason")
    for host in LAB_HOSTS:
        assert _version(lab, host) == "1.1.0 ii"
        assert _upgrades(lab, host, "1.0.0", "1.1.0") == before[host] + 1, host
        audit = lab.exec(host, ["dpkg", "--audit"])
        assert audit.returncode == 0, audit.stderr
        assert not audit.stdout.strip(), audit.stdout
    assert {d["host"]: d["status"] for d in done["deployments"]} == dict.fromkeys(
        LAB_HOSTS, "installed"
    )


def test_a_scan_schedule_fires_on_time_once_per_occurrence_across_a_restart(
    service: Service,
) -> None:
    configure(service, {"service": {"tick": 0.5}})
    service.start()
    # two occurrences, 30 s apart, starting in 15 s (an RRULE with its own DTSTART, UTC)
    first = (datetime.now(UTC) + timedelta(seconds=15)).replace(microsecond=0)
    rule = f"DTSTART:{first:%Y%m%dT%H%M%S}\nRRULE:FREQ=SECONDLY;INTERVAL=30;COUNT=2"
    with httpx.Client(base_url=service.base, timeout=90) as client:
        created = client.post(
            "/api/v1/schedules",
            json={"kind": "scan", "rrule": rule, "timezone": "UTC", "missed": "skip"},
            headers=service.auth("otto"),
        )
        assert created.status_code == 201, created.text
        schedule_id = created.json()["id"]
        first_run = _scheduled_runs(client, service, schedule_id, count=1, seconds=120)[0]
    # kill -9 in the middle (between the two occurrences), then start it again
    service.kill()
    service.start()
    with httpx.Client(base_url=service.base, timeout=90) as client:
        runs = _scheduled_runs(client, service, schedule_id, count=2, seconds=120)
        time.sleep(3)  # a few more ticks: nothing fires twice
        runs = _scheduled_runs(client, service, schedule_id, count=2, seconds=0)
        assert runs[0]["run_id"] == first_run["run_id"]
        for run in runs:
            done = _until(client, run["run_id"], service.auth("vera"), _ENDED, 5)
            assert done["status"] == "completed", done.get("reason")
            assert done["trigger"] == "schedule"
    started = [datetime.fromisoformat(r["started_at"]) for r in runs]
    due = [first, first + timedelta(seconds=30)]
    for at, when in zip(started, due, strict=True):
        assert when <= at < when + timedelta(seconds=20), (at, when)  # on time: a few ticks


def _scheduled_runs(
    client: httpx.Client, service: Service, schedule_id: str, *, count: int, seconds: float
) -> list[dict[str, Any]]:
    """The runs ``schedule_id`` started, oldest first, once there are ``count`` (waiting at
    most ``seconds``); more than ``count`` fails at once."""
    deadline = time.monotonic() + seconds
    while True:
        listed = client.get("/api/v1/runs", params={"limit": 100}, headers=service.auth("vera"))
        assert listed.status_code == 200, listed.text
        runs = [
            r
            for r in reversed(listed.json()["runs"])
            if r["params"].get("schedule_id") == schedule_id
        ]
        assert len(runs) <= count, runs
        if len(runs) == count:
            return runs
        assert time.monotonic() < deadline, f"{len(runs)} of {count} scheduled runs started"
        time.sleep(0.5)

"""Patch runs that must not report success, wedge or run what they should not (issue 11).

* Hosts not reached (a closed loopback port, a changed host key on a real sshd) are failures of
  the run: none reached is ``failed`` (exit 4), some is ``partial`` (exit 3); their compliance is
  ``unknown``, never ``not-applicable``.
* Outside text is bounded at the boundary: an oversize or escape-laden ``--comment`` is refused
  (exit 2) before anything is decided or deployed; a decision recorded past the boundary (an
  older client, another tool) still lets the run finish.
* An unexpected error after a deployment ends the run ``failed`` with the reason, and
  ``patchpilot resume`` finishes it without patching any host twice.
* ``run -t local`` needs no inventory, and no run prints a checkpoint deserialization warning.

Everything goes through the real CLI in subprocesses, against a real sshd on loopback
(``sshd_server``) or the session's lab fleet (``lab``); ``restore_canary`` puts acme-web 1.0.0
back on canary-1 after each test.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
import yaml

from patchpilot.core.audit import read_events
from tests.integration.conftest import SSHServer, keygen

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
    "acme-web=1.0.0",
]
SERDE_WARNINGS = ("deserializ", "allowlist", "allowed_msgpack_modules")


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "PATCHPILOT_HOME": str(home),
        "PATCHPILOT_DISCOVERY__CHANGELOGS": "none",
        "PATCHPILOT_SSH__CONNECT_RETRIES": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=full,
        timeout=900,
        check=False,
    )


def run_json(home: Path, *args: str, expect: int, **env: str) -> dict[str, Any]:
    res = cli(home, *args, "--format", "json", **env)
    assert res.returncode == expect, f"exit {res.returncode}\n{res.stdout}\n{res.stderr[-3000:]}"
    assert not any(w in res.stderr.lower() for w in SERDE_WARNINGS), res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when the socket closes


def _version(lab: LabHandle, host: str, package: str = "acme-web") -> str:
    done = lab.exec(host, ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", package])
    return done.stdout.strip()


def _upgrades(lab: LabHandle, host: str) -> int:
    log = lab.exec(host, ["cat", "/var/log/dpkg.log"]).stdout
    return sum(1 for line in log.splitlines() if " upgrade acme-web:all 1.0.0 1.1.0" in line)


def lab_policy(lab: LabHandle, tmp_path: Path, **approvals: Any) -> Path:
    """The lab's policy (acme-web health checks) with ``approvals`` changed."""
    doc = yaml.safe_load(lab.lab.policy_path.read_text())
    doc["approvals"] = {**doc.get("approvals", {}), "tags": [], **approvals}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def restore_canary(lab: LabHandle) -> Iterator[None]:
    """Finalizer: acme-web 1.0.0 on canary-1 again."""
    yield
    if not _version(lab, "canary-1").startswith("1.0.0 "):
        done = lab.exec("canary-1", RESTORE)
        assert done.returncode == 0, done.stderr
    assert _version(lab, "canary-1") == "1.0.0 ii"


# --------------------------------------------------------------------------- hosts not reached


def test_a_run_that_reaches_no_host_fails_with_exit_4(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    ports = [closed_port(), closed_port()]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        "".join(f"[127.0.0.1]:{p} {sshd_server.host_public_key}\n" for p in ports)
    )
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "defaults": {
                    "user": sshd_server.user,
                    "key_file": str(sshd_server.user_key),
                    "known_hosts": str(known_hosts),
                },
                "hosts": {
                    f"gone-{i}": {"address": "127.0.0.1", "port": p} for i, p in enumerate(ports, 1)
                },
            }
        )
    )
    home = tmp_path / "home"
    args = ("run", "-i", str(inventory), "--offline", "--only", "acme-web=1.1.0")

    doc = run_json(home, *args, expect=4)
    assert doc["status"] == "failed"
    assert doc["reason"].startswith("none of the 2 targeted host(s) could be reached: gone-1: ")
    assert "refused" in doc["reason"]
    assert [u["host"] for u in doc["unreachable"]] == ["gone-1", "gone-2"]
    assert doc["compliance"] == {"gone-1": "unknown", "gone-2": "unknown"}
    assert doc["plan"] is None
    assert "could not be reached" in doc["hint"]

    runs = run_json(home, "runs", expect=0)["runs"]
    assert (runs[0]["run_id"], runs[0]["status"]) == (doc["run_id"], "failed")
    report = run_json(home, "report", doc["run_id"], expect=0)
    assert report["status"] == "failed"
    assert {h["name"]: (h["status"], h["compliance"]) for h in report["hosts"]} == {
        "gone-1": ("unreachable", "unknown"),
        "gone-2": ("unreachable", "unknown"),
    }
    assert [u["host"] for u in report["unreachable"]] == ["gone-1", "gone-2"]

    table = cli(home, *args)  # the table output exits the same way and names the hosts
    assert table.returncode == 4, table.stderr
    assert "gone-1 not reached" in table.stderr
    assert "compliance: gone-1 unknown, gone-2 unknown" in table.stdout


def test_a_changed_host_key_is_a_failure_of_the_run(sshd_server: SSHServer, tmp_path: Path) -> None:
    other = keygen(tmp_path / "other_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{sshd_server.known_hosts_name} {other}\n")
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "hosts": {
                    "moved": {
                        "address": sshd_server.address,
                        "port": sshd_server.port,
                        "user": sshd_server.user,
                        "key_file": str(sshd_server.user_key),
                        "known_hosts": str(known_hosts),
                    }
                }
            }
        )
    )
    logins = sshd_server.accepted_logins()
    doc = run_json(
        tmp_path / "home",
        "run",
        "-i",
        str(inventory),
        "--offline",
        "--only",
        "acme-web=1.1.0",
        expect=4,
        PATCHPILOT_SSH__USE_AGENT="false",
        PATCHPILOT_SSH__LOOK_FOR_KEYS="false",
    )
    assert doc["status"] == "failed"
    (entry,) = doc["unreachable"]
    assert entry["host"] == "moved"
    assert "host key" in entry["error"].lower()
    assert doc["compliance"] == {"moved": "unknown"}
    assert sshd_server.accepted_logins() == logins  # refused before any login


@pytest.mark.usefixtures("restore_canary")
def test_some_hosts_not_reached_the_others_deploy_and_the_run_is_partial(
    lab: LabHandle, tmp_path: Path
) -> None:
    inv = yaml.safe_load(lab.inventory_path.read_text())
    port = closed_port()
    inv["hosts"] = {
        "canary-1": inv["hosts"]["canary-1"],
        "gone-1": {"address": "127.0.0.1", "port": port},
    }
    inv.pop("groups", None)
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump(inv))
    home = tmp_path / "home"
    doc = run_json(
        home,
        "run",
        "-i",
        str(inventory),
        "--policy",
        str(lab_policy(lab, tmp_path)),
        "--offline",
        "--only",
        "acme-web=1.1.0",
        expect=3,
    )
    assert doc["status"] == "partial"
    assert doc["reason"] == (
        f"1 of 2 targeted host(s) could not be reached: gone-1: connection refused on "
        f"127.0.0.1:{port} (gave up after 1 attempt)"
    )
    assert {d["host"]: d["status"] for d in doc["deployments"]} == {"canary-1": "installed"}
    assert doc["compliance"] == {"canary-1": "installed", "gone-1": "unknown"}
    assert [u["host"] for u in doc["unreachable"]] == ["gone-1"]
    assert _version(lab, "canary-1") == "1.1.0 ii"
    report = run_json(home, "report", doc["run_id"], expect=0)
    assert report["status"] == "partial"
    assert {h["name"]: h["compliance"] for h in report["hosts"]} == {
        "canary-1": "installed",
        "gone-1": "unknown",
    }


# --------------------------------------------------------------------------- outside text


def _waiting_run(lab: LabHandle, tmp_path: Path, home: Path) -> str:
    """A run on canary-1 stopped at its approval (acme-web 1.0.0 -> 1.1.0)."""
    doc = run_json(
        home,
        "run",
        "-i",
        str(lab.inventory_path),
        "--policy",
        str(lab_policy(lab, tmp_path, always=True)),
        "--offline",
        "--limit",
        "canary-1",
        "--only",
        "acme-web=1.1.0",
        expect=6,
    )
    run_id: str = doc["run_id"]
    return run_id


@pytest.mark.usefixtures("restore_canary")
def test_an_oversize_or_escape_laden_comment_is_refused_before_anything_happens(
    lab: LabHandle, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    run_id = _waiting_run(lab, tmp_path, home)
    refused = [
        ("approve", "x" * 2001),
        ("reject", "no " * 35_000),  # ~100 KB
        ("approve", "ok \x1b[2J\x1b[31mrooted"),
    ]
    for command, comment in refused:
        res = cli(home, command, run_id, "--comment", comment)
        assert res.returncode == 2, (command, res.stderr[-2000:])
        assert "--comment" in res.stderr
        assert "\x1b" not in res.stderr  # the refusal never echoes the escape sequence
    # Nothing happened: still pending, nothing decided or audited, nothing deployed.
    (pending,) = run_json(home, "approvals", expect=0)["approvals"]
    assert (pending["run_id"], pending["status"]) == (run_id, "pending")
    assert run_json(home, "runs", expect=0)["runs"][0]["status"] == "awaiting_approval"
    actions = [e.action for e in read_events(home / "audit.log", run_id=run_id)]
    assert not {"approval.granted", "approval.rejected", "deploy.started"} & set(actions)
    assert _version(lab, "canary-1") == "1.0.0 ii"

    # The longest accepted comment deploys and finishes the run (the memory clips nothing
    # it cannot hold; the decision is recorded in full).
    longest = "y" * 2000
    done = run_json(home, "approve", run_id, "--comment", longest, expect=0)
    assert done["status"] == "completed", done["reason"]
    assert done["approval"]["comment"] == longest
    assert _version(lab, "canary-1") == "1.1.0 ii"


@pytest.mark.usefixtures("restore_canary")
@pytest.mark.parametrize(
    ("status", "comment", "expect", "final", "version"),
    # a 100 KB rejection runs on scripted hosts: tests/unit/test_graph_run.py
    # (test_a_100kb_rejection_comment_ends_the_run_rejected_with_a_clipped_reason)
    [("approved", "ok " * 3_000, 0, "completed", "1.1.0 ii")],
    ids=["9000-char-approval"],
)
def test_a_decision_recorded_past_the_boundary_still_lets_the_run_finish(
    lab: LabHandle,
    tmp_path: Path,
    status: Literal["approved", "rejected"],
    comment: str,
    expect: int,
    final: str,
    version: str,
) -> None:
    # An older client (or any tool writing the store) recorded a decision whose comment is
    # over every limit: the run must finish, never stay awaiting_approval or running.
    from patchpilot.core.settings import load_settings
    from patchpilot.core.store import Store

    home = tmp_path / "home"
    run_id = _waiting_run(lab, tmp_path, home)
    with Store(load_settings(home=home).store_path) as store:
        store.decide_approval(run_id, status, by="legacy-client", comment=comment)
    doc = run_json(home, "resume", run_id, expect=expect)
    assert doc["status"] == final, doc["reason"]
    assert _version(lab, "canary-1") == version
    assert run_json(home, "runs", expect=0)["runs"][0]["status"] == final
    if final == "rejected":
        assert len(doc["reason"]) < 2100  # the comment is clipped in the run's reason


@pytest.mark.usefixtures("restore_canary")
# run.finish:raise (and this one) also run on scripted hosts: tests/unit/test_graph_run.py
@pytest.mark.parametrize("failpoint", ["run.after_ring:raise"])
def test_an_error_after_the_deployment_fails_the_run_and_resume_finishes_it(
    lab: LabHandle, tmp_path: Path, failpoint: str
) -> None:
    home = tmp_path / "home"
    upgrades = _upgrades(lab, "canary-1")
    args = (
        "run",
        "-i",
        str(lab.inventory_path),
        "--policy",
        str(lab_policy(lab, tmp_path)),
        "--offline",
        "--limit",
        "canary-1",
        "--only",
        "acme-web=1.1.0",
    )
    failed = run_json(home, *args, expect=1, PATCHPILOT_FAILPOINTS=failpoint)
    assert failed["status"] == "failed"
    step = "deploy_ring" if "after_ring" in failpoint else "finish"
    assert failed["reason"].startswith(f"{step} failed: FailpointError: failpoint ")
    assert f"patchpilot resume {failed['run_id']}" in failed["hint"]
    assert _version(lab, "canary-1") == "1.1.0 ii"  # the deployment happened
    run_id = failed["run_id"]
    assert run_json(home, "runs", expect=0)["runs"][0]["status"] == "failed"  # never "running"
    report = run_json(home, "report", run_id, expect=0)
    assert report["status"] == "failed"
    assert f"{step} failed: FailpointError" in report["reason"]
    assert "run.failed" in [e.action for e in read_events(home / "audit.log", run_id=run_id)]

    done = run_json(home, "resume", run_id, expect=0)
    assert done["status"] == "completed", done["reason"]
    assert {d["host"]: d["status"] for d in done["deployments"]} == {"canary-1": "installed"}
    assert done["compliance"] == {"canary-1": "installed"}
    events = read_events(home / "audit.log", run_id=run_id)
    assert [e.host for e in events if e.action == "deploy.started"] == ["canary-1"]  # once
    assert _upgrades(lab, "canary-1") - upgrades == 1
    assert run_json(home, "runs", expect=0)["runs"][0]["status"] == "completed"


# --------------------------------------------------------------------------- local, serde


def test_run_local_needs_no_inventory_and_prints_no_checkpoint_warning(
    tmp_path: Path, shared_dir: Path
) -> None:
    home = tmp_path / "home"
    # Feeds in the store put FeedStatus records in the checkpointed state (the type that was
    # missing from the allowlist and made every run warn).
    epss = shared_dir / "feeds" / "epss" / "epss_scores-2023-03-07.csv.gz"
    imported = cli(home, "feeds", "import", "epss", str(epss))
    assert imported.returncode == 0, imported.stderr
    doc = run_json(
        home,
        "run",
        "-t",
        "local",
        "--offline",
        "--dry-run",
        "--only",
        "patchpilot-no-such-package",
        expect=1,
    )
    # a name that matches nothing is never a silent "completed" (issue 14)
    assert doc["status"] == "failed"
    assert doc["hosts"] == ["local"]
    assert doc["plan"]["unmatched_only"] == ["patchpilot-no-such-package"]
    assert "no pending update matches patchpilot-no-such-package" in doc["hint"]
    again = cli(home, "report", doc["run_id"], "--format", "json")
    assert again.returncode == 0, again.stderr
    assert not any(w in again.stderr.lower() for w in SERDE_WARNINGS), again.stderr

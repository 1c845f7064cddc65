"""``patchpilot run`` on the lab: plan, test, approve from another process, deploy in rings.

Every test drives the real CLI in subprocesses (as a person or a scheduler would) against the
session's 3-host lab, with its own PATCHPILOT_HOME and an explicit policy derived from the
lab's policy (which has the per-host acme-web health checks). Each test leaves the lab as it
found it: acme-web 1.0.0 everywhere, held on db-1 (``restore_lab``).

Only what needs real hosts is here (a real rollout, rollback, security update, kill -9 and
hold); the graph's other flows (the error threshold, a predicted removal, the maintenance
window, dry runs, reject, expiry...) run hermetically in tests/unit/test_graph_run.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
BROKEN_HOOK = "/etc/apt/apt.conf.d/99patchpilot-test-broken"


def _version(lab: LabHandle, host: str, package: str = "acme-web") -> str:
    done = lab.exec(host, ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", package])
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def restore_lab(lab: LabHandle) -> Iterator[None]:
    """Finalizer: no broken hook, acme-web 1.0.0 everywhere, held again on db-1."""
    yield
    for host in lab.hosts:
        lab.exec(host.name, ["rm", "-f", BROKEN_HOOK])
        lab.exec(host.name, ["dpkg", "--configure", "-a", "--force-confold"])
        if not _version(lab, host.name).startswith("1.0.0 "):
            done = lab.exec(host.name, [*RESTORE, "acme-web=1.0.0"])
            assert done.returncode == 0, done.stderr
    lab.exec("db-1", ["apt-mark", "hold", "acme-web"])
    assert _version(lab, "db-1") == "1.0.0 hi"


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = {
        **os.environ,
        "PATCHPILOT_HOME": str(home),
        "PATCHPILOT_DISCOVERY__CHANGELOGS": "none",
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
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def policy(lab: LabHandle, tmp_path: Path, **changes: Any) -> Path:
    """The lab's policy with top-level sections updated (``approvals``, ``schedule``...)."""
    doc = yaml.safe_load(lab.lab.policy_path.read_text())
    for section, values in changes.items():
        doc[section] = {**doc.get(section, {}), **values}
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def health(lab: LabHandle, host: str) -> str:
    return httpx.get(f"http://127.0.0.1:{lab.host(host).acme_port}/health", timeout=5).text.strip()


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {d["host"]: d["status"] for d in doc["deployments"]}


def test_rollout_in_rings_after_an_approval_from_a_second_process(
    lab: LabHandle, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    lab.exec("db-1", ["apt-mark", "unhold", "acme-web"])
    rings = [
        {"name": "canary", "tags": ["canary"]},
        {"name": "early", "hosts": ["web-*"]},
        {"name": "broad"},
    ]
    pol = policy(lab, tmp_path, schedule={"rings": rings})
    args = ("run", "-i", str(lab.inventory_path), "--policy", str(pol), "--offline")

    waiting = run_json(home, *args, "--only", "acme-web=1.1.0", expect=6)
    run_id = waiting["run_id"]
    assert waiting["status"] == "awaiting_approval"
    assert waiting["waiting"] == "approval"
    assert f"patchpilot approve {run_id}" in waiting["hint"]
    assert [(i["host"], i["to"]) for i in waiting["plan"]["items"]] == [
        ("canary-1", "1.1.0"),
        ("db-1", "1.1.0"),
        ("web-1", "1.1.0"),
    ]
    assert any("web-1 is tagged prod" in r for r in waiting["approval"]["reasons"])
    assert set(statuses(waiting).values()) == {"pending"}
    assert {h: _version(lab, h)[:5] for h in ("canary-1", "web-1", "db-1")} == dict.fromkeys(
        ("canary-1", "web-1", "db-1"), "1.0.0"
    )  # nothing deployed before the approval, not even the canary

    listed = run_json(home, "approvals", expect=0)
    assert [(a["run_id"], a["status"]) for a in listed["approvals"]] == [(run_id, "pending")]

    done = run_json(home, "approve", run_id, "--comment", "canary first", expect=0)
    assert done["status"] == "completed", done["reason"]
    assert statuses(done) == {"canary-1": "installed", "db-1": "installed", "web-1": "installed"}
    assert [(r["name"], r["hosts"], r["status"]) for r in done["rings"]] == [
        ("canary", ["canary-1"], "done"),
        ("early", ["web-1"], "done"),
        ("broad", ["db-1"], "done"),
    ]
    for host in ("canary-1", "web-1", "db-1"):
        assert _version(lab, host) == "1.1.0 ii"
        assert health(lab, host) == "OK acme-web 1.1.0"

    report = run_json(home, "report", run_id, expect=0)
    assert {
        d["host"]: (d["from"], d["to"], d["status"]) for d in report["deployments"]
    } == dict.fromkeys(("canary-1", "db-1", "web-1"), ("1.0.0", "1.1.0", "installed"))
    assert {h["name"]: h["compliance"] for h in report["hosts"]} == dict.fromkeys(
        ("canary-1", "db-1", "web-1"), "installed"
    )
    events = read_events(home / "audit.log", run_id=run_id)
    actions = [e.action for e in events]
    assert actions.index("approval.requested") < actions.index("approval.granted")
    granted = next(e for e in events if e.action == "approval.granted")
    assert granted.details["comment"] == "canary first"
    assert granted.actor
    ring_order = [e.details["ring"] for e in events if e.action == "ring.started"]
    assert ring_order == ["canary", "early", "broad"]
    twice = cli(home, "approve", run_id)
    assert twice.returncode == 1
    assert "already approved" in twice.stderr


def test_a_broken_version_is_rolled_back_on_the_canary_and_the_rollout_halts(
    lab: LabHandle, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    assert lab.exec("canary-1", [*RESTORE, "acme-web=1.1.0"]).returncode == 0
    pol = policy(lab, tmp_path, approvals={"tags": []})
    args = ("run", "-i", str(lab.inventory_path), "--policy", str(pol), "--offline")

    doc = run_json(home, *args, "--only", "acme-web=1.2.0", expect=7)
    assert doc["status"] == "halted"
    assert "health check failed on canary-1" in doc["reason"]
    rows = {d["host"]: d for d in doc["deployments"]}
    assert (rows["canary-1"]["from"], rows["canary-1"]["status"]) == ("1.1.0", "rolled_back")
    assert "HTTP 503" in rows["canary-1"]["reason"]
    assert "rolled back to acme-web=1.1.0" in rows["canary-1"]["reason"]
    assert rows["web-1"]["status"] == "pending"
    assert [r["status"] for r in doc["rings"] if r["hosts"]] == ["halted", "not-started"]
    assert _version(lab, "canary-1") == "1.1.0 ii"
    assert health(lab, "canary-1") == "OK acme-web 1.1.0"
    assert _version(lab, "web-1") == "1.0.0 ii"  # never touched
    assert doc["compliance"]["canary-1"] == "failed"

    actions = [e.action for e in read_events(home / "audit.log", run_id=doc["run_id"])]
    for expected in ("health.failed", "rollback.done", "ring.halted", "baseline.rejected"):
        assert expected in actions
    rejected = run_json(home, "baseline", "rejections", expect=0)
    assert [(r["package"], r["version"]) for r in rejected["rejections"]] == [("acme-web", "1.2.0")]

    # The rejected version is not planned again until a person clears it.
    retry = run_json(home, *args, "--only", "acme-web=1.2.0", expect=0)
    assert retry["plan"]["items"] == []
    excluded = {
        (e["host"], e["exclusion"]) for e in retry["plan"]["excluded"] if e["package"] == "acme-web"
    }
    assert excluded == {("canary-1", "rejected"), ("web-1", "rejected"), ("db-1", "held")}
    cleared = cli(home, "baseline", "clear", "acme-web=1.2.0", "--comment", "fixed upstream")
    assert cleared.returncode == 0, cleared.stderr
    assert run_json(home, "baseline", "rejections", expect=0)["rejections"] == []


def test_a_real_debian_security_update_goes_through_the_same_path(
    lab: LabHandle, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    before = _version(lab, "canary-1", "libexpat1").split()[0]
    pol = policy(lab, tmp_path)
    try:
        doc = run_json(
            home,
            "run",
            "-i",
            str(lab.inventory_path),
            "--policy",
            str(pol),
            "--offline",
            "--limit",
            "canary-1",
            "--only",
            "libexpat1",
            expect=0,
        )
        (item,) = doc["plan"]["items"]
        assert (item["package"], item["from"], item["rule"]) == (
            "libexpat1",
            before,
            "security-updates",
        )
        assert item["origin"] == "security"
        assert statuses(doc) == {"canary-1": "installed"}
        assert _version(lab, "canary-1", "libexpat1") == f"{item['to']} ii"
        assert health(lab, "canary-1").startswith("OK acme-web")
    finally:
        lab.exec("canary-1", [*RESTORE, f"libexpat1={before}"])
    assert _version(lab, "canary-1", "libexpat1") == f"{before} ii"


def _upgrades(lab: LabHandle, host: str) -> int:
    log = lab.exec(host, ["cat", "/var/log/dpkg.log"]).stdout
    return sum(1 for line in log.splitlines() if " upgrade acme-web:all 1.0.0 1.1.0" in line)


def test_kill_9_mid_wave_then_resume_patches_no_host_twice(lab: LabHandle, tmp_path: Path) -> None:
    home = tmp_path / "home"
    lab.exec("db-1", ["apt-mark", "unhold", "acme-web"])
    hosts = ("canary-1", "db-1", "web-1")
    upgrades_before = {h: _upgrades(lab, h) for h in hosts}
    pol = policy(
        lab,
        tmp_path,
        approvals={"tags": []},
        schedule={
            "rings": [{"name": "all"}],
            "waves": [3],
            "rate": {"max_concurrency": 1, "max_errors": 0},
        },
    )
    args = ("run", "-i", str(lab.inventory_path), "--policy", str(pol), "--offline")
    # One host at a time: canary-1 finishes, db-1 is killed right after its install.
    killed = cli(
        home, *args, "--only", "acme-web=1.1.0", PATCHPILOT_FAILPOINTS="deploy.after_install#2"
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    runs = run_json(home, "runs", expect=0)["runs"]
    run_id = runs[0]["run_id"]
    assert runs[0]["status"] == "running"
    assert _version(lab, "web-1") == "1.0.0 ii"  # never started

    done = run_json(home, "resume", run_id, expect=0)
    assert done["status"] == "completed", done["reason"]
    assert statuses(done) == dict.fromkeys(hosts, "installed")
    for host in hosts:
        assert _version(lab, host) == "1.1.0 ii"
        assert lab.exec(host, ["dpkg", "--audit"]).stdout == ""
        assert _upgrades(lab, host) - upgrades_before[host] == 1, host
    events = read_events(home / "audit.log", run_id=run_id)
    started = [e.host for e in events if e.action == "deploy.started"]
    assert started.count("canary-1") == 1  # finished before the kill: reused, not redeployed
    assert started.count("db-1") == 2  # in flight at the kill: inspected again
    assert any(e.action == "deploy.resumed_at_target" and e.host == "db-1" for e in events)


def test_a_held_package_is_reported_not_silently_skipped(lab: LabHandle, tmp_path: Path) -> None:
    home = tmp_path / "home"
    doc = run_json(
        home,
        "run",
        "-i",
        str(lab.inventory_path),
        "--policy",
        str(lab.lab.policy_path),
        "--offline",
        "--limit",
        "db-1",
        "--only",
        "acme-web=1.1.0",
        expect=0,
    )
    assert doc["plan"]["items"] == []
    (held,) = [e for e in doc["plan"]["excluded"] if e["exclusion"] == "held"]
    assert (held["host"], held["package"]) == ("db-1", "acme-web")
    assert "held on db-1" in doc["reason"]
    assert doc["plan"]["unmatched_only"] == []
    assert doc["compliance"] == {"db-1": "missing"}, "a hold keeps a known fix off the host"
    assert _version(lab, "db-1") == "1.0.0 hi"

    # Issue 13: the held package's exposure stays visible in the scan, as ``held``.
    scan = run_json(
        home,
        "scan",
        "-i",
        str(lab.inventory_path),
        "--offline",
        "-l",
        "db-1",
        expect=0,
        PATCHPILOT_DISCOVERY__CHANGELOGS="all",  # the CVE comes from the update's changelog
    )
    (acme,) = [f for f in scan["findings"] if f["source_package"] == "acme-web"]
    assert (acme["host"], acme["fix_state"], acme["fixed_version"]) == ("db-1", "held", "1.3.0")
    assert "CVE-2024-99901" in acme["cves"]
    assert not acme["actionable"]
    (update,) = [u for u in scan["hosts"][0]["pending_updates"] if u["package"] == "acme-web"]
    assert update["held"] is True


def test_only_a_source_name_plans_its_binaries_and_not_before_waits(
    lab: LabHandle, tmp_path: Path
) -> None:
    """Issue 14: ``--only zlib`` (the source, as advisories name it) plans zlib1g; a name that
    matches nothing ends ``failed`` with a question; ``--not-before`` makes the run wait."""
    home = tmp_path / "home"
    common = ["-i", str(lab.inventory_path), "--policy", str(lab.lab.policy_path), "--offline"]
    doc = run_json(home, "run", *common, "--limit", "canary-1", "--only", "zlib", "--dry-run",
                   expect=0)  # fmt: skip
    items = doc["plan"]["items"]
    assert "zlib1g" in {i["package"] for i in items}, doc["plan"]
    assert all(i["origin"] == "security" for i in items)
    assert all("--only zlib names its source package" in i["reason"] for i in items)
    assert doc["plan"]["unmatched_only"] == []

    miss = run_json(home, "run", *common, "--limit", "canary-1", "--only", "zlibc", "--dry-run",
                    expect=1)  # fmt: skip
    assert miss["status"] == "failed"
    assert miss["plan"]["unmatched_only"] == ["zlibc"]
    assert "zlib is the source of zlib1g" in miss["plan"]["suggestions"]["zlibc"]
    assert miss["hint"].startswith("--only matched nothing: no pending update matches zlibc")

    later = "2099-01-01T00:00+00:00"
    pol = policy(lab, tmp_path, approvals={"tags": []})
    waiting = run_json(home, "run", "-i", str(lab.inventory_path), "--policy", str(pol),
                       "--offline", "--limit", "canary-1", "--only", "zlib",
                       "--not-before", later, expect=7)  # fmt: skip
    assert waiting["waiting"] == "window"
    assert waiting["not_before"] == "2099-01-01T00:00:00+00:00"
    assert "not before Thu 2099-01-01 00:00" in waiting["reason"]
    assert {d["status"] for d in waiting["deployments"]} == {"pending"}
    bad = cli(home, "run", *common, "--limit", "canary-1", "--not-before", "25:00")
    assert bad.returncode == 2
    assert "not a time of day" in bad.stderr

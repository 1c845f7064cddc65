"""Compliance against SLAs on the lab, end to end (issue 18, "Done means", first item).

The real CLI in subprocesses against the session's bookworm hosts, with its own
PATCHPILOT_HOME, ``--offline`` (no feed: findings come from the hosts' repository metadata,
the ``-security`` suite, and the updates' changelogs) and the lab's policy with an exposure
bound (``internet: 14`` days, so web-1's due dates differ from the others') and without the
post-patch analysis (not what is tested here). One scan, one run, one scan:

1. after the first scan every host is non-compliant, each item due on first seen + the
   policy's days (severity, SSVC, exposure: computed here from the policy file), with the
   Contract's fields;
2. a run on canary-1 of every source package its items name (acme-web, whose lab changelog
   names the made-up CVE-2024-99901, pinned to the healthy 1.1.0), then the scan: canary-1 is
   ``compliant``, each item fixed by the run at the deployment's finish and the MTTR is the
   mean of fixed_at - first_seen;
3. one of web-1's security updates installed by hand with apt before that scan: fixed
   ``external`` at the scan, web-1's other items still open.

``restore_packages`` puts every package of canary-1 and web-1 back to its version before the
test (apt downgrades from the bookworm suite, acme-web to 1.0.0) and checks it did.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from patchpilot.core.settings import load_settings
from patchpilot.core.store import Store

if TYPE_CHECKING:
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

HOSTS = ("canary-1", "db-1", "web-1")
TOUCHED = ("canary-1", "web-1")
APT = ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y"]
BY_HAND = ("zlib", "xz-utils", "pcre2", "libzstd", "expat")
"""Source packages with one binary on the lab hosts: one is upgraded on web-1 by hand."""


def _installed(lab: LabHandle, host: str) -> dict[str, str]:
    done = lab.exec(host, ["dpkg-query", "-W", "-f", "${Package} ${Version} ${db:Status-Abbrev}\n"])
    assert done.returncode == 0, done.stderr
    rows = (line.split() for line in done.stdout.splitlines())
    return {r[0]: r[1] for r in rows if len(r) == 3 and r[2][1] == "i"}


@pytest.fixture
def restore_packages(lab: LabHandle) -> Iterator[None]:
    """Finalizer: every package of canary-1 and web-1 at its version before the test."""
    before = {host: _installed(lab, host) for host in TOUCHED}
    yield
    for host, versions in before.items():
        lab.exec(host, ["dpkg", "--configure", "-a", "--force-confold"])
        now = _installed(lab, host)
        changed = [f"{p}={v}" for p, v in sorted(versions.items()) if now.get(p) != v]
        if changed:
            done = lab.exec(host, [*APT, "--allow-downgrades", *changed])
            assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        added = sorted(set(now) - set(versions))
        if added:
            lab.exec(
                host, ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "purge", "-y", *added]
            )
        assert _installed(lab, host) == versions, host


def cli(home: Path, policy: Path, *args: str) -> dict[str, Any]:
    env = {
        **os.environ,
        "PATCHPILOT_HOME": str(home),
        "PATCHPILOT_POLICY": str(policy),  # scan, run and compliance: one policy
        "PATCHPILOT_DISCOVERY__CHANGELOGS": "all",  # acme-web's CVE is in its changelog
    }
    done = subprocess.run(
        [sys.executable, "-m", "patchpilot", *args, "--format", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, (
        f"{args[0]}: exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _days(item: dict[str, Any]) -> float:
    return (_moment(item["fixed_at"]) - _moment(item["first_seen"])).total_seconds() / 86400


def expected_due(item: dict[str, Any], sla: dict[str, Any], inventory: dict[str, Any]) -> date:
    """First seen (UTC day) + the fewest days among the policy's bounds that apply."""
    host = inventory["hosts"][item["host"]]
    bounds = (
        sla["severity"].get(item["severity"]),
        sla["ssvc"].get(item["ssvc"]),
        (sla.get("exposure") or {}).get(host["exposure"]),
        (sla.get("criticality") or {}).get(host["criticality"]),
    )
    days = min(d for d in bounds if d is not None)
    return _moment(item["first_seen"]).date() + timedelta(days=days)


def by_key(doc: dict[str, Any], host: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(i["package"], i["advisory"]): i for i in doc["items"] if i["host"] == host}


def test_compliance_on_the_lab_scan_run_by_hand_scan(
    lab: LabHandle, tmp_path: Path, restore_packages: None
) -> None:
    home = tmp_path / "home"
    policy_doc = yaml.safe_load(lab.lab.policy_path.read_text())
    policy_doc["analysis"] = {"enabled": False}
    policy_doc["sla_days"]["exposure"] = {"internet": 14}
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(policy_doc))
    sla = policy_doc["sla_days"]
    inventory = yaml.safe_load(lab.inventory_path.read_text())
    inv = ("-i", str(lab.inventory_path), "--offline")

    # 1. After a scan: every host non-compliant, due dates from the policy, the Contract.
    scan = cli(home, policy, "scan", *inv)
    first = cli(home, policy, "compliance")
    assert {h["name"] for h in first["hosts"]} == set(HOSTS)
    for row in first["hosts"]:
        assert {"name", "state", "open", "overdue", "oldest_due"} <= set(row)
        assert row["state"] in ("non_compliant", "overdue"), row
        assert row["open"] > 0
    assert {"attainment", "mttr_days", "median_ttr_days"} <= set(first["sla"])
    assert first["sla"]["mttr_days"] is None  # nothing fixed yet
    for item in first["items"]:
        assert {"host", "advisory", "cves", "first_seen", "due", "fixed_at", "state"} <= set(item)
        assert (item["state"], item["fixed_at"], item["kev"]) == ("non_compliant", None, False)
        assert item["due"] == expected_due(item, sla, inventory).isoformat(), item
    web_dues = {i["due"] for i in first["items"] if i["host"] == "web-1"}
    assert web_dues == {
        (_moment(i["first_seen"]).date() + timedelta(days=14)).isoformat()
        for i in first["items"]
        if i["host"] == "web-1"
    }, "web-1 is internet-facing: 14 days"
    canary = by_key(first, "canary-1")
    sources = {package for package, _ in canary}
    assert {"acme-web", "openssl"} <= sources
    (acme,) = [i for (p, _), i in canary.items() if p == "acme-web"]
    assert "CVE-2024-99901" in acme["cves"]  # from acme-web 1.1.0's changelog

    # 2. A run of canary-1's security updates (acme-web to the healthy 1.1.0).
    only = [
        a for s in sorted(sources) for a in ("--only", "acme-web=1.1.0" if s == "acme-web" else s)
    ]
    run = cli(home, policy, "run", *inv, "--limit", "canary-1", "--security-only", *only)
    run_id = run["run_id"]
    assert run["status"] == "completed", run["reason"]
    assert {d["status"] for d in run["deployments"] if d["host"] == "canary-1"} == {"installed"}
    assert not [e for e in run["plan"]["excluded"] if e["exclusion"] == "not-security"]
    assert _installed(lab, "canary-1")["acme-web"] == "1.1.0"

    # 3. On web-1, one security update installed by hand (outside patchpilot).
    web = by_key(first, "web-1")
    (web_host,) = [h for h in scan["hosts"] if h["name"] == "web-1"]
    binaries: dict[str, list[str]] = {}
    for update in web_host["pending_updates"]:
        binaries.setdefault(update["source_package"], []).append(update["package"])
    by_hand = next(s for s in BY_HAND if len(binaries.get(s, ())) == 1)
    (manual_key,) = [k for k in web if k[0] == by_hand]
    manual = lab.exec("web-1", [*APT, "--only-upgrade", binaries[by_hand][0]])
    assert manual.returncode == 0, manual.stderr[-2000:]

    confirm = cli(home, policy, "scan", *inv, "--limit", "canary-1:web-1")
    after = cli(home, policy, "compliance")
    confirmed_at = _moment(confirm["run"]["started_at"])  # a scan observes at its start
    with Store(load_settings(home=home).store_path) as store:
        (deployment,) = [d for d in store.deployments(run_id) if d.host == "canary-1"]
    assert deployment.finished_at is not None

    states = {h["name"]: h for h in after["hosts"]}
    assert (states["canary-1"]["state"], states["canary-1"]["open"]) == ("compliant", 0)
    assert states["canary-1"]["fixed"] == len(canary)
    fixed_canary = by_key(after, "canary-1")
    assert set(fixed_canary) == set(canary)
    for item in fixed_canary.values():
        assert (item["state"], item["fixed_by"]) == ("compliant", run_id), item
        fixed_at = _moment(item["fixed_at"])
        assert abs((fixed_at - deployment.finished_at).total_seconds()) <= 1.0, item
        assert _moment(item["confirmed_at"]) == confirmed_at

    web_after = by_key(after, "web-1")
    external = web_after[manual_key]
    assert (external["state"], external["fixed_by"]) == ("compliant", "external")
    assert _moment(external["fixed_at"]) == confirmed_at
    still_open = {k: i for k, i in web_after.items() if k != manual_key}
    assert set(still_open) == set(web) - {manual_key}
    assert {i["state"] for i in still_open.values()} == {"non_compliant"}
    assert (states["web-1"]["state"], states["web-1"]["open"]) == (
        "non_compliant",
        len(web) - 1,
    )
    assert states["db-1"]["state"] == "non_compliant"

    fixed = [i for i in after["items"] if i["fixed_at"] is not None]
    assert len(fixed) == len(canary) + 1
    # MTTR and median: days from first seen to fixed_at, as the document rounds them (2 places)
    durations = [_days(i) for i in fixed]
    assert after["sla"]["mttr_days"] == round(statistics.fmean(durations), 2)
    assert after["sla"]["median_ttr_days"] == round(statistics.median(durations), 2)
    assert after["sla"]["attainment"] == 100.0
    only_canary = cli(home, policy, "compliance", "--host", "canary-1")
    mean = statistics.fmean(_days(i) for i in fixed_canary.values())
    assert only_canary["sla"]["mttr_days"] == round(mean, 2)
    assert only_canary["sla"]["fixed_by_patchpilot"] == len(canary)
    # the durations at a finer grain than the MTTR's two places: the Kaplan-Meier steps
    curve = only_canary["survival"]["curve"]
    assert {p["days"] for p in curve[1:]} == {round(_days(i), 3) for i in fixed_canary.values()}
    assert (sum(p["fixed"] for p in curve), curve[-1]["open"]) == (len(canary), 0.0)

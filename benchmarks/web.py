"""Page weight and speed of the web dashboard's fleet page (issue 16).

Fills a fresh data directory per size (default 1,000 and 10,000 hosts): an inventory, one
discovery snapshot per host (3 pending updates, 1 a security one; 1 host in 50 unreachable in a
later scan), 5 findings per host with risk (severities and due dates spread, 1 in 10 hosts with
a KEV finding), a few days of scan history; then renders ``GET /`` (the real app:
:func:`patchpilot.api.create_app` plus :func:`patchpilot.web.install`, a viewer's bearer token,
FastAPI's TestClient in-process) ``--repeat`` times and prints the median time, the slowest,
and the page's size in bytes, next to the targets (1,000 hosts: under 300 ms and under 2 MB;
the page shows 200 hosts, so size stays flat beyond that). Filling is not timed. No
assertions: the figures go in the note.

    .venv/bin/python benchmarks/web.py [--hosts 1000 10000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import yaml
from fastapi.testclient import TestClient

from patchpilot.api import create_app
from patchpilot.app import users
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.logging import configure_logging
from patchpilot.core.models import (
    Ecosystem,
    Finding,
    FixState,
    HostFacts,
    KEVEntry,
    OSFamily,
    OSInfo,
    PendingUpdate,
    RiskAssessment,
    RiskFactor,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.settings import load_settings
from patchpilot.core.store import Store, finding_key
from patchpilot.web import install

REPO = Path(__file__).resolve().parents[1]
TARGET_MS = 300.0
TARGET_BYTES = 2 * 1024 * 1024
SEVERITIES = (Severity.CRITICAL, Severity.HIGH, Severity.MEDIUM, Severity.LOW, Severity.HIGH)
DAYS = 5


def _facts(host: str, n: int) -> HostFacts:
    return HostFacts(
        host=host,
        os=OSInfo(
            id="debian",
            version_id="12",
            version_codename="bookworm",
            pretty_name="Debian GNU/Linux 12 (bookworm)",
            family=OSFamily.DEBIAN,
        ),
        kernel="6.1.0-21-amd64",
        reboot_required=n % 7 == 0,
        package_count=500,
        source_package_count=300,
        ecosystem=Ecosystem.DEBIAN,
    )


def _pending(n: int) -> list[PendingUpdate]:
    return [
        PendingUpdate(
            name=f"pkg-{i}",
            arch="amd64",
            installed_version="1.0-1",
            candidate_version="1.0-2",
            origins=("Debian-Security:12/stable-security" if i == 0 else "Debian:12/stable",),
            security=i == 0,
        )
        for i in range(3)
    ]


def fill(home: Path, hosts: int) -> str:
    """Fill ``home`` for ``hosts`` hosts; returns a viewer's token."""
    now = utcnow()
    names = [f"host-{n:05d}" for n in range(hosts)]
    (home / "inventory.yaml").write_text(
        yaml.safe_dump(
            {
                "hosts": {
                    name: {"address": "127.0.0.1", "tags": ["prod" if n % 3 else "staging"]}
                    for n, name in enumerate(names)
                }
            }
        )
    )
    with Store(home / "patchpilot.db", synchronous="NORMAL") as store:
        token = users.add_user(store, "bench", "viewer", actor="bench")
        store.import_batch(
            FeedBatch(
                kind=FeedKind.KEV,
                source="bench:kev",
                fetched_at=now,
                sha256=hashlib.sha256(b"kev").hexdigest(),
                kev=(("CVE-2026-0001", KEVEntry(date_added=now.date(), due_date=now.date())),),
            )
        )
        for day in range(DAYS, 0, -1):
            run_id = f"2026010{DAYS - day + 1}T000000Z-{day:06x}"
            store.create_run(
                run_id, kind="scan", target="all", params={}, started_at=now - timedelta(days=day)
            )
            if day == DAYS:  # the discovery snapshots once (what the page reads is the latest)
                for n, name in enumerate(names):
                    store.save_host_snapshot(run_id, _facts(name, n), [], _pending(n))
            elif day == 1:
                for name in names[::50]:
                    store.record_host_failure(run_id, name, "HostConnectError", "refused")
            findings: dict[str, list[Finding]] = {}
            risks: list[RiskAssessment] = []
            for n, name in enumerate(names):
                mine = []
                for i, severity in enumerate(SEVERITIES[: 5 - (n + day) % 3]):
                    f = Finding(
                        host=name,
                        source_package=f"src-{i}",
                        binary_packages=(f"src-{i}",),
                        installed_source_version="1.0-1",
                        advisory_id=f"DSA-{1000 + i}-1",
                        cves=("CVE-2026-0001",) if i == 0 and n % 10 == 0 else (),
                        fix=FixState.fixed("1.0-2"),
                        fix_reachable=True,
                        severity=severity,
                        first_seen=now - timedelta(days=DAYS),
                    )
                    mine.append(f)
                    risks.append(
                        RiskAssessment(
                            finding_key=finding_key(f),
                            score=90.0 - 15 * i,
                            factors=(
                                RiskFactor(
                                    name="severity",
                                    value=severity.value,
                                    known=True,
                                    weight=1,
                                    contribution=10,
                                ),
                            ),
                            ssvc=SSVCOutcome.ATTEND,
                            due_date=(now + timedelta(days=(n % 30) - 10 + i)).date(),
                            rationale="bench",
                        )
                    )
                findings[name] = mine
            store.replace_findings_bulk(run_id, findings)
            store.save_risk(run_id, risks)
            store.finish_run(run_id, status="completed", summary={})
    return token


def measure(hosts: int, repeat: int) -> tuple[float, float, int, float]:
    """(median ms, slowest ms, page bytes, fill seconds) for a fleet of ``hosts``."""
    with tempfile.TemporaryDirectory(prefix="pp-web-bench-") as tmp:
        home = Path(tmp)
        started = time.perf_counter()
        token = fill(home, hosts)
        filled = time.perf_counter() - started
        settings = load_settings(None, home=str(home))
        app = create_app(
            settings,
            inventory=home / "inventory.yaml",
            policy=REPO / "configs" / "policy.yaml",
        )
        install(app)
        headers = {"Authorization": f"Bearer {token}"}
        times: list[float] = []
        size = 0
        with TestClient(app) as client:
            warm = client.get("/", headers=headers)  # the token's argon2 check, the inventory
            assert warm.status_code == 200, warm.text[:500]
            for _ in range(repeat):
                begin = time.perf_counter()
                response = client.get("/", headers=headers)
                times.append((time.perf_counter() - begin) * 1000)
                size = len(response.content)
        return statistics.median(times), max(times), size, filled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    configure_logging("warning", "console")
    logging.disable(logging.INFO)
    print(f"fleet page (GET /, 200 hosts a page), median of {args.repeat} renders")
    print(f"target for 1,000 hosts: under {TARGET_MS:.0f} ms and {TARGET_BYTES // 1024} KiB")
    for hosts in args.hosts:
        median, slowest, size, filled = measure(hosts, args.repeat)
        verdict = ""
        if hosts <= 1000:
            ok = median < TARGET_MS and size < TARGET_BYTES
            verdict = "  (meets the target)" if ok else "  (MISSES the target)"
        print(
            f"{hosts:>6} hosts: median {median:7.1f} ms, slowest {slowest:7.1f} ms, "
            f"{size / 1024:7.1f} KiB{verdict}  [filled in {filled:.1f} s]"
        )


if __name__ == "__main__":
    main()

"""With no feed at all, a whole scan ranks findings by what the hosts themselves say.

Real scan graph, store and changelog fetcher on scripted Debian hosts
(:class:`tests.fakes.FakeDebianHost`): changelogs with their ``urgency=`` and CVEs, a listening
sshd that loads libssl3, a cron that loads libxml2, and a tool nothing runs. The lab proves the
same on real hosts (tests/integration/test_lab_discovery.py).
"""

from __future__ import annotations

from pathlib import Path

from patchpilot.app.report import pending_json
from patchpilot.core.models import ChangelogUrgency, Exposure, Host
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.graphs.scan import ScanContext, start_scan
from patchpilot.tools.changelog import ChangelogFetcher
from tests.fakes import FakeDebianHost, fleet_factory

REPO = Path(__file__).resolve().parents[2]
HOSTS = [
    Host(name="web-1", address="127.0.0.1", criticality=4, exposure=Exposure.INTERNET),
    Host(name="canary-1", address="127.0.0.1", criticality=2, exposure=Exposure.INTERNAL),
]


def changelog(source: str, version: str, urgency: str, cves: int, previous: str) -> str:
    ids = ", ".join(f"CVE-2025-{1000 + i}" for i in range(cves))
    return (
        f"{source} ({version}) bookworm-security; urgency={urgency}\n\n"
        f"  * Security fixes: {ids}.\n\n"
        " -- Security Team <team@security.debian.org>  Mon, 06 Jan 2025 00:00:00 +0000\n\n"
        f"{source} ({previous}) bookworm; urgency=low\n\n"
        "  * Release.\n\n"
        " -- Maintainer <m@example.org>  Mon, 02 Dec 2024 00:00:00 +0000\n"
    )


def fleet() -> dict[str, FakeDebianHost]:
    installed = {"libssl3": "3.0.1-1", "libxml2": "2.9.1-1", "tool": "1.0-1"}
    available = {
        "libssl3": ["3.0.1-1", "3.0.2-1"],
        "libxml2": ["2.9.1-1", "2.9.2-1"],
        "tool": ["1.0-1", "1.0-2"],
    }
    changelogs = {
        "libssl3": changelog("libssl3", "3.0.2-1", "high", 12, "3.0.1-1"),
        "libxml2": changelog("libxml2", "2.9.2-1", "medium", 3, "2.9.1-1"),
        "tool": changelog("tool", "1.0-2", "low", 1, "1.0-1"),
    }
    return {
        h.name: FakeDebianHost(
            h.name,
            installed,
            available,
            security=frozenset(installed),
            listening={812: ("sshd", "0.0.0.0", 22)},
            loaded={812: ["libssl3"], 900: ["libxml2"]},
            changelogs=changelogs,
        )
        for h in HOSTS
    }


def test_with_no_feeds_findings_differ_for_reasons_a_person_would_give(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    with Store(settings.store_path) as store:
        context = ScanContext(
            settings=settings,
            store=store,
            policy=load_policy(REPO / "configs" / "policy.yaml"),
            changelogs=ChangelogFetcher(settings.cache_dir),
            transport_factory=fleet_factory(fleet()),
        )
        summary = start_scan(HOSTS, context, target="all", offline=True, run_id="scan-1")[1]
        assert summary["mode"] == "repository-metadata"
        records = store.findings(run_id="scan-1")
        snapshot = store.load_host_snapshot("scan-1", "web-1")
    assert snapshot is not None
    urgency = {u.name: u.urgency for u in snapshot.pending}
    assert urgency == {
        "libssl3": ChangelogUrgency.HIGH,
        "libxml2": ChangelogUrgency.MEDIUM,
        "tool": ChangelogUrgency.LOW,
    }
    assert {pending_json(u)["urgency"] for u in snapshot.pending} == {"high", "medium", "low"}

    ranked = sorted(
        (
            (r.risk.score, r.finding.host, r.finding.source_package, r.risk.rationale)
            for r in records
            if r.risk is not None
        ),
        reverse=True,
    )
    assert len(ranked) == 6
    # every finding of the fleet has its own score (before: one score per host)
    assert len({score for score, *_ in ranked}) == 6
    by_key = {(host, source): (score, why) for score, host, source, why in ranked}
    for host in ("web-1", "canary-1"):
        ssl, xml, tool = (by_key[(host, s)] for s in ("libssl3", "libxml2", "tool"))
        assert ssl[0] > xml[0] > tool[0], host
        assert ssl[1].startswith("deciding factor: loaded by sshd listening on 0.0.0.0:22 (+")
        assert "changelog urgency high; 12 CVEs fixed" in ssl[1]
        assert "restart of running processes needed (libssl3 loaded)" in ssl[1]
        assert "loaded by a running process that listens on nothing" in xml[1]
        assert "loaded by no running process" in tool[1]
        assert "no restart needed" in tool[1]
    # the internet-facing host's reachable libssl3 comes first in the fleet
    assert ranked[0][1:3] == ("web-1", "libssl3")
    assert all(why.startswith("deciding factor: ") for *_, why in ranked)

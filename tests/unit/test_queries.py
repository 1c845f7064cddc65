"""The read-only question tools (tools/queries) on a real SQLite store, filled as a scan fills it.

Three hosts (``canary-1`` staging, ``web-1`` and ``db-1`` prod) scanned once: web-1 needs a
reboot and a service restart and has an overdue KEV finding; db-1 holds acme-web (its 1.1.0
update is held, its finding's fix is held); runs, an approval, outcomes and feeds besides.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.inventory import Inventory
from patchpilot.core.models import (
    DeletedLibraryUse,
    Finding,
    FixState,
    Host,
    HostFacts,
    InstalledPackage,
    KEVEntry,
    OSFamily,
    OSInfo,
    PendingUpdate,
    RiskAssessment,
    Severity,
    SSVCOutcome,
    UpdateOrigin,
)
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store, finding_key
from patchpilot.tools.queries import CATALOG, QueryContext, QueryResult, call_tool

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
T0 = NOW - timedelta(days=2)
SCAN = "20261129T120000Z-aaa111"
PATCH = "20261130T120000Z-bbb222"
KEV_CVE = "CVE-2026-1111"

HOSTS = [
    Host(name="canary-1", address="127.0.0.1", tags=frozenset({"staging", "canary", "web"})),
    Host(name="web-1", address="127.0.0.1", tags=frozenset({"prod", "web"})),
    Host(name="db-1", address="127.0.0.1", tags=frozenset({"prod", "db"})),
]
OS = OSInfo(id="debian", version_id="12", version_codename="bookworm", family=OSFamily.DEBIAN)


def _facts(host: str, **changes: Any) -> HostFacts:
    base: dict[str, Any] = {
        "host": host,
        "os": OS,
        "kernel": "6.1.0-28-amd64",
        "reboot_required": False,
        "package_count": 3,
        "source_package_count": 2,
        "held_packages": (),
        "deleted_library_users": (),
        "services_needing_restart": (),
    }
    return HostFacts.model_validate(base | changes)


def _pkg(name: str, version: str, source: str) -> InstalledPackage:
    return InstalledPackage(
        name=name, version=version, source_name=source, source_version=version, ecosystem="debian"
    )


def _update(name: str, source: str, to: str, **changes: Any) -> PendingUpdate:
    base: dict[str, Any] = {
        "name": name,
        "arch": "amd64",
        "installed_version": "1.0.0" if source == "acme-web" else "3.0.1",
        "candidate_version": to,
        "security": True,
        "origin": UpdateOrigin.SECURITY,
        "source_name": source,
    }
    return PendingUpdate.model_validate(base | changes)


SSL = _update("libssl3", "openssl", "3.0.2", cves=(KEV_CVE,))
ACME_HELD = _update(
    "acme-web",
    "acme-web",
    "1.1.0",
    security=False,
    origin=UpdateOrigin.THIRD_PARTY,
    held=True,
)
CURL = _update(
    "curl", "curl", "7.88.1-10+deb12u8", security=False, origin=UpdateOrigin.POINT_RELEASE
)


def _finding(host: str, source: str, binaries: tuple[str, ...], **changes: Any) -> Finding:
    base: dict[str, Any] = {
        "host": host,
        "source_package": source,
        "binary_packages": binaries,
        "installed_source_version": "3.0.1" if source == "openssl" else "1.0.0",
        "advisory_id": f"DSA-{source}-1",
        "cves": (KEV_CVE,) if source == "openssl" else ("CVE-2026-2222",),
        "fix": FixState.fixed("3.0.2" if source == "openssl" else "1.1.0"),
        "fix_reachable": True,
        "severity": Severity.HIGH,
        "first_seen": T0,
    }
    return Finding.model_validate(base | changes)


def _risk(finding: Finding, due: date, score: float) -> RiskAssessment:
    return RiskAssessment(
        finding_key=finding_key(finding),
        score=score,
        factors=(),
        ssvc=SSVCOutcome.ACT,
        due_date=due,
        rationale="test",
    )


def _batch(kind: FeedKind, **kw: Any) -> FeedBatch:
    return FeedBatch(
        kind=kind,
        source=f"{kind.value}.json",
        fetched_at=kw.pop("fetched_at", datetime.now(UTC)),
        sha256=hashlib.sha256(kind.value.encode()).hexdigest(),
        **kw,
    )


def fill(store: Store) -> None:
    """The scan, a patch run waiting for approval, an outcome, a rejection and feeds."""
    store.create_run(SCAN, kind="scan", target="all", params={}, started_at=T0)
    store.save_host_snapshot(
        SCAN,
        _facts(
            "web-1",
            reboot_required=True,
            reboot_required_pkgs=("libssl3",),
            deleted_library_users=(
                DeletedLibraryUse(
                    pid=42, command="sshd", libraries=("/usr/lib/libssl.so.3",), service="ssh"
                ),
            ),
        ),
        [_pkg("libssl3", "3.0.1", "openssl"), _pkg("curl", "7.88.1", "curl")],
        [SSL, CURL],
    )
    store.save_host_snapshot(
        SCAN,
        _facts("db-1", held_packages=("acme-web",)),
        [_pkg("libssl3", "3.0.1", "openssl"), _pkg("acme-web", "1.0.0", "acme-web")],
        [SSL, ACME_HELD],
    )
    store.save_host_snapshot(SCAN, _facts("canary-1"), [_pkg("acme-web", "1.0.0", "acme-web")], [])
    web_ssl = _finding("web-1", "openssl", ("libssl3",), severity=Severity.CRITICAL)
    db_ssl = _finding("db-1", "openssl", ("libssl3",))
    db_acme = _finding(
        "db-1", "acme-web", ("acme-web",), fix=FixState.fixed("1.1.0").held(), severity="medium"
    )
    store.replace_findings(SCAN, "web-1", [web_ssl])
    store.replace_findings(SCAN, "db-1", [db_ssl, db_acme])
    store.replace_findings(SCAN, "canary-1", [])
    store.save_risk(
        SCAN,
        [
            _risk(web_ssl, NOW.date() - timedelta(days=3), 91.0),
            _risk(db_ssl, NOW.date() + timedelta(days=5), 70.0),
            _risk(db_acme, NOW.date() + timedelta(days=20), 40.0),
        ],
    )
    store.import_batch(
        _batch(
            FeedKind.KEV,
            kev=((KEV_CVE, KEVEntry(date_added=date(2026, 11, 1), due_date=date(2026, 11, 22))),),
        )
    )
    store.import_batch(_batch(FeedKind.EPSS, fetched_at=datetime(2020, 1, 1, tzinfo=UTC), epss=()))
    store.create_run(
        PATCH, kind="run", target="prod", params={"hosts": ["web-1", "db-1"]}, started_at=NOW
    )
    store.set_run_status(PATCH, "awaiting_approval")
    store.request_approval(
        PATCH,
        "plan-1",
        "0" * 64,
        ["requested in chat"],
        {"items": [{"host": "web-1", "package": "libssl3", "to": "3.0.2"}]},
        requested_at=NOW,
        expires_at=NOW + timedelta(days=1),
    )
    store.record_outcome(
        "20261101T000000Z-ccc333", "canary-1", "acme-web", "1.0.0", "1.1.0", "rollback",
        "health check failed: http 500", at=T0,
    )  # fmt: skip


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.store_path) as opened:
        fill(opened)
        yield opened


def context_for(settings: Settings, store: Store, **extra: Any) -> QueryContext:
    return QueryContext(
        settings=settings, store=store, inventory=Inventory(HOSTS), extra={"now": NOW, **extra}
    )


@pytest.fixture
def context(settings: Settings, store: Store) -> QueryContext:
    return context_for(settings, store)


def ask(context: QueryContext, tool: str, **arguments: Any) -> QueryResult:
    result = call_tool(context, tool, arguments)
    assert result.error is None, result.error
    assert result.understood_as
    assert result.total == len(result.rows)
    return result


# --------------------------------------------------------------------------- the catalog


def test_every_tool_has_a_schema_the_llm_agent_can_use() -> None:
    assert {
        "pending_updates", "findings", "reboot_needed", "holds", "runs", "approvals",
        "history", "feeds",
    } <= set(CATALOG)  # fmt: skip
    for tool in CATALOG.values():
        schema = tool.openai_schema()["function"]
        assert schema["name"] == tool.name
        assert schema["parameters"]["type"] == "object"
        assert schema["parameters"].get("additionalProperties") is False


@pytest.mark.parametrize(
    ("tool", "arguments", "problem"),
    [
        ("no_such_tool", {}, "no tool 'no_such_tool'"),
        ("pending_updates", {"hosts": ["db-1; rm -rf /"]}, "hosts.0"),
        ("pending_updates", {"everything": True}, "everything"),
        ("findings", {"severity_at_least": "apocalyptic"}, "severity_at_least"),
        ("findings", {"cves": ["CVE-nope"]}, "not a CVE id"),
        ("findings", {"packages": [{"name": "acme web"}]}, "packages.0.name"),
        ("runs", {"limit": 10_000}, "limit"),
        ("approvals", {"status": "maybe"}, "status"),
        ("history", {"host": "../etc"}, "host"),
    ],
)
def test_bad_arguments_are_an_error_result_never_an_exception(
    context: QueryContext, tool: str, arguments: dict[str, Any], problem: str
) -> None:
    result = call_tool(context, tool, arguments)
    assert result.error is not None
    assert problem in result.error
    assert result.rows == ()


def test_a_model_may_send_no_arguments_at_all(context: QueryContext) -> None:
    for name in ("pending_updates", "findings", "reboot_needed", "holds", "runs", "feeds"):
        assert call_tool(context, name, None).error is None


# --------------------------------------------------------------------------- pending updates


def test_security_updates_pending_on_one_host(context: QueryContext) -> None:
    result = ask(context, "pending_updates", hosts=["db-1"], security_only=True)
    assert [(r["host"], r["package"], r["candidate"]) for r in result.rows] == [
        ("db-1", "libssl3", "3.0.2")
    ]
    assert result.understood_as == "security updates on db-1"
    assert "1 security updates on 1 of 1 scanned host(s)" in result.text


def test_pending_on_a_tag_shows_held_updates_marked(context: QueryContext) -> None:
    result = ask(context, "pending_updates", tags=["prod"])
    assert {(r["host"], r["package"]) for r in result.rows} == {
        ("db-1", "libssl3"), ("db-1", "acme-web"), ("web-1", "libssl3"), ("web-1", "curl"),
    }  # fmt: skip
    held = [r for r in result.rows if r["held"]]
    assert [(r["host"], r["package"]) for r in held] == [("db-1", "acme-web")]
    assert "acme-web 1.0.0 -> 1.1.0 (third-party, held)" in result.text
    assert "hosts tagged prod" in result.understood_as
    unheld = ask(context, "pending_updates", tags=["prod"], include_held=False)
    assert all(not r["held"] for r in unheld.rows)


def test_pending_by_origin_and_by_source_name(context: QueryContext) -> None:
    result = ask(context, "pending_updates", origin="point-release")
    assert [r["package"] for r in result.rows] == ["curl"]
    by_source = ask(context, "pending_updates", packages=[{"name": "openssl"}])
    assert {(r["host"], r["package"]) for r in by_source.rows} == {
        ("db-1", "libssl3"),
        ("web-1", "libssl3"),
    }


def test_tags_without_an_inventory_are_reported_not_guessed(
    settings: Settings, store: Store
) -> None:
    bare = QueryContext(settings=settings, store=store)
    result = ask(bare, "pending_updates", tags=["prod"])
    assert result.rows == ()
    assert "tag prod (no inventory loaded)" in result.text
    by_name = ask(bare, "pending_updates", hosts=["web-1"])
    assert {r["host"] for r in by_name.rows} == {"web-1"}


def test_no_scan_yet_says_so(settings: Settings, tmp_path: Path) -> None:
    with Store(tmp_path / "empty.db") as empty:
        result = ask(context_for(settings, empty), "pending_updates")
        assert result.text.startswith("No scanned host")
        assert ask(context_for(settings, empty), "findings").text.startswith("No scan yet")


def test_the_latest_snapshot_of_each_host_wins(context: QueryContext, store: Store) -> None:
    later = "20261201T000000Z-ddd444"
    store.create_run(later, kind="scan", target="web-1", params={}, started_at=NOW)
    store.save_host_snapshot(later, _facts("web-1"), [], [])
    result = ask(context, "pending_updates")
    assert {r["host"] for r in result.rows} == {"db-1"}  # web-1 is up to date now
    reboot = ask(context, "reboot_needed")
    assert reboot.rows == ()


# --------------------------------------------------------------------------- findings


def test_overdue_findings(context: QueryContext) -> None:
    result = ask(context, "findings", overdue=True)
    assert [(r["host"], r["source_package"], r["overdue"]) for r in result.rows] == [
        ("web-1", "openssl", True)
    ]
    assert "OVERDUE" in result.text
    assert "overdue" in result.understood_as


def test_kev_findings_on_the_fleet(context: QueryContext) -> None:
    result = ask(context, "findings", kev_only=True)
    assert {r["host"] for r in result.rows} == {"web-1", "db-1"}
    assert all(r["kev"] and KEV_CVE in r["cves"] for r in result.rows)
    assert "2 in KEV" in result.text
    assert "No KEV catalog is imported" not in result.text


def test_kev_question_without_a_kev_catalog_says_it_cannot_tell(tmp_path: Path) -> None:
    """Fail closed: "no finding in KEV" is not claimed when no catalog was ever imported."""
    settings = load_settings(home=tmp_path / "bare")
    with Store(settings.store_path) as bare:
        bare.create_run("r1", kind="scan", target="all", params={}, started_at=NOW)
        result = ask(context_for(settings, bare), "findings", kev_only=True)
    assert result.rows == ()
    assert "No KEV catalog is imported" in result.text


def test_findings_by_severity_fix_state_scope_and_binary_name(context: QueryContext) -> None:
    critical = ask(context, "findings", severity_at_least="critical")
    assert [r["host"] for r in critical.rows] == ["web-1"]
    held = ask(context, "findings", fix_state="held")
    assert [(r["host"], r["source_package"]) for r in held.rows] == [("db-1", "acme-web")]
    prod_db = ask(context, "findings", tags=["prod", "db"], tag_match="all")
    assert {r["host"] for r in prod_db.rows} == {"db-1"}
    by_binary = ask(context, "findings", packages=[{"name": "libssl3"}])
    assert {r["source_package"] for r in by_binary.rows} == {"openssl"}
    actionable = ask(context, "findings", actionable=True)
    assert {r["source_package"] for r in actionable.rows} == {"openssl"}
    by_cve = ask(context, "findings", cves=["cve-2026-2222"])
    assert [r["source_package"] for r in by_cve.rows] == ["acme-web"]
    unknown_run = call_tool(context, "findings", {"run_id": "20200101T000000Z-000000"})
    assert unknown_run.error is not None
    assert "no run" in unknown_run.error


# --------------------------------------------------------------------------- reboot, holds


def test_hosts_needing_a_reboot_or_a_restart(context: QueryContext) -> None:
    result = ask(context, "reboot_needed")
    (row,) = result.rows
    assert row["host"] == "web-1"
    assert row["reboot_packages"] == ["libssl3"]
    assert row["restart_services"] == ["ssh"]
    assert "1 of 3 scanned host(s) need a reboot: web-1" in result.text
    assert "web-1: restart ssh" in result.text


def test_holds_show_the_update_and_findings_they_keep(context: QueryContext) -> None:
    result = ask(context, "holds")
    (row,) = result.rows
    assert (row["host"], row["package"], row["held_update"]) == ("db-1", "acme-web", "1.1.0")
    assert row["findings"] == ["DSA-acme-web-1"]
    assert row["fix_blocked"] is True
    assert "apt-mark unhold" in result.text


# --------------------------------------------------------------------------- runs, approvals


def test_runs_and_pending_approvals(context: QueryContext) -> None:
    runs = ask(context, "runs")
    assert [r["run_id"] for r in runs.rows] == [PATCH, SCAN]
    patch_runs = ask(context, "runs", kind="run")
    assert [r["run_id"] for r in patch_runs.rows] == [PATCH]
    approvals = ask(context, "approvals")
    (row,) = approvals.rows
    assert (row["run_id"], row["status"], row["hosts"]) == (PATCH, "pending", ["web-1"])
    assert approvals.text.startswith("1 run(s) waiting for approval")


def test_an_approval_past_its_deadline_shows_expired_without_recording_it(
    settings: Settings, store: Store
) -> None:
    later = context_for(settings, store)
    later.extra["now"] = NOW + timedelta(days=2)
    result = ask(later, "approvals", status="expired")
    assert [r["status"] for r in result.rows] == ["expired"]
    assert store.approvals("pending")  # read-only: still pending in the store


# --------------------------------------------------------------------------- history, feeds


class _Memory:
    """A stand-in for VectorMemory.recall (the real one needs Chroma and an embedder)."""

    def recall(self, query: str, *, kinds: Any, k: int) -> list[Any]:
        from patchpilot.tools.memory.records import Recalled

        return [
            Recalled(
                id="incident:1",
                kind="incidents",
                text="acme-web 1.1.0 broke the login page on canary-1",
                metadata={},
                distance=0.1,
            ),
            Recalled(id="incident:2", kind="incidents", text="unrelated", metadata={}, distance=1),
        ]


def test_history_of_a_package_with_memory(settings: Settings, store: Store) -> None:
    context = context_for(settings, store, memory=_Memory())
    result = ask(context, "history", packages=[{"name": "acme-web"}])
    sources = [r["source"] for r in result.rows]
    assert sources == ["outcome", "memory"]
    assert result.rows[0]["status"] == "rollback"
    assert "[incident:1] acme-web 1.1.0 broke the login page" in result.text
    assert "unrelated" not in result.text
    bare = ask(context_for(settings, store), "history", packages=[{"name": "acme-web"}])
    assert "no memory configured" in bare.text


def test_feed_freshness(context: QueryContext) -> None:
    result = ask(context, "feeds")
    assert {r["feed"]: r["stale"] for r in result.rows} == {"kev": False, "epss": True}
    assert "1 stale: epss" in result.text
    stale = ask(context, "feeds", stale_only=True)
    assert [r["feed"] for r in stale.rows] == ["epss"]


def test_untrusted_strings_are_inert_in_the_text(settings: Settings, store: Store) -> None:
    run = "20261202T000000Z-eee555"
    store.create_run(run, kind="scan", target="all", params={}, started_at=NOW + timedelta(hours=1))
    evil = _update("evil", "evil\x1b[2J", "1.0\x1b]0;pwned\x07")
    store.save_host_snapshot(run, _facts("canary-1"), [], [evil.model_copy()])
    result = ask(context_for(settings, store), "pending_updates", hosts=["canary-1"])
    assert "\x1b" not in result.text
    assert "\\x1b" in result.text

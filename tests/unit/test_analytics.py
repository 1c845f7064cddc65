"""Process analytics (patchpilot/app/analytics.py) on a real SQLite store with synthetic patch
runs: stage durations, lead time, hosts per hour, rates, approval wait, the bottleneck in plain
words and its suggestion; ``patchpilot analytics`` and ``GET /api/v1/analytics``; the
predicted impact of a plan's waves from past deployments."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from patchpilot.api import create_app
from patchpilot.app import users
from patchpilot.app.analytics import (
    SUGGESTIONS,
    analytics,
    human_seconds,
    percentile,
    predicted_impact,
)
from patchpilot.core.errors import InvalidInputError
from patchpilot.core.plan import PatchPlan, PlanItem
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store
from patchpilot.core.store.schema import to_db_time

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
WAITS_H = (18, 19, 20)  # approval waits of the three ended runs


def _end_run(store: Store, run_id: str, status: str, at: datetime) -> None:
    """``finish_run`` stamps the wall clock; the synthetic history needs its own end time."""
    store.finish_run(run_id, status=status, summary={"status": status})
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET finished_at = ? WHERE run_id = ?", (to_db_time(at), run_id))


def _stage(
    store: Store, run_id: str, stage: Any, start: datetime, seconds: float, **kw: Any
) -> None:
    store.stage_started(run_id, stage, at=start, **kw)
    store.stage_ended(run_id, stage, at=start + timedelta(seconds=seconds), **kw)


def _host(
    store: Store,
    run_id: str,
    host: str,
    ring: str,
    at: datetime,
    *,
    status: str = "installed",
    seconds: float = 600,
    packages: tuple[str, ...] = ("openssl",),
    services: tuple[str, ...] = ("nginx",),
) -> None:
    items = [{"host": host, "package": p} for p in packages]
    store.deployment_started(run_id, host, ring, items, at=at)
    result = {
        "host": host,
        "dry_run": False,
        "items": [{"package": p, "status": status} for p in packages],
        "restarts": [{"host": host, "service": s, "ok": True, "exit_code": 0} for s in services],
        "duration_s": seconds,
    }
    store.deployment_finished(run_id, host, ring, result, at=at + timedelta(seconds=seconds))


def patch_run(store: Store, number: int, wait_h: float, *, status: str = "completed") -> str:
    """A patch run started ``number`` days after T0: discovery 10 min, planning 5 min, testing
    15 min, an approval wait of ``wait_h`` hours, ring canary 30 min, ring broad 60 min."""
    start = T0 + timedelta(days=number)
    rid = f"20260504T0800{number:02d}Z-00000{number}"
    store.create_run(rid, kind="run", target="all", params={}, started_at=start)
    _stage(store, rid, "discovery", start, 600)
    _stage(store, rid, "planning", start + timedelta(seconds=600), 300)
    _stage(store, rid, "testing", start + timedelta(seconds=900), 900)
    asked = start + timedelta(seconds=1800)
    _stage(store, rid, "awaiting_approval", asked, wait_h * 3600)
    store.request_approval(
        rid, f"plan-{number}", "hash", ["policy"], {}, requested_at=asked,
        expires_at=asked + timedelta(days=2),
    )  # fmt: skip
    decided = asked + timedelta(hours=wait_h)
    store.decide_approval(rid, "approved", by="alice", at=decided)
    _stage(store, rid, "deployment", decided, 1800, ring="canary")
    _host(store, rid, "canary-1", "canary", decided, seconds=300)
    broad = decided + timedelta(seconds=1800)
    _stage(store, rid, "deployment", broad, 3600, ring="broad")
    _host(store, rid, "web-1", "broad", broad, seconds=600)
    _host(
        store, rid, "web-2", "broad", broad, seconds=900,
        status="rolled_back" if status == "partial" else "installed",
    )  # fmt: skip
    end = broad + timedelta(seconds=3600)
    _stage(store, rid, "finish", end, 0)
    _end_run(store, rid, status, end)
    return rid


def fill(store: Store) -> list[str]:
    """Three ended runs (the last partial: web-2 rolled back), one still waiting for approval,
    one patch run older than 90 days and a scan (neither counted)."""
    runs = [
        patch_run(store, 1, WAITS_H[0]),
        patch_run(store, 2, WAITS_H[1]),
        patch_run(store, 3, WAITS_H[2], status="partial"),
    ]
    waiting = T0 + timedelta(days=5)
    store.create_run(
        "20260509T080000Z-0000aa", kind="run", target="all", params={}, started_at=waiting
    )
    store.stage_started("20260509T080000Z-0000aa", "awaiting_approval", at=waiting)
    store.set_run_status("20260509T080000Z-0000aa", "awaiting_approval")
    old = T0 - timedelta(days=120)
    store.create_run("20260104T080000Z-0000bb", kind="run", target="all", params={}, started_at=old)
    _stage(store, "20260104T080000Z-0000bb", "testing", old, 99_999)
    _end_run(store, "20260104T080000Z-0000bb", "completed", old + timedelta(days=2))
    store.create_run("20260510T080000Z-0000cc", kind="scan", target="all", params={}, started_at=T0)
    _end_run(store, "20260510T080000Z-0000cc", "completed", T0 + timedelta(hours=1))
    return runs


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.db") as s:
        yield s


def test_no_runs_says_so(store: Store) -> None:
    result = analytics(store, now=NOW)
    assert result.runs == result.ended_runs == 0
    assert result.text == "no patch runs recorded in the last 90 days"
    assert result.bottleneck is None
    assert result.stages == ()
    assert result.suggestions == ()
    assert result.hosts_per_hour is None
    assert result.rollback_rate is None


def test_stage_durations_lead_time_and_rates(store: Store) -> None:
    fill(store)
    result = analytics(store, now=NOW)
    assert (result.runs, result.ended_runs) == (4, 3)
    assert result.statuses == {"completed": 2, "partial": 1}
    leads = [w * 3600 + 7200 for w in WAITS_H]  # 30 min before the wait, 90 min after it
    assert result.lead_time.count == 3
    assert result.lead_time.median_s == 19 * 3600 + 7200
    assert result.lead_time.total_s == sum(leads)
    assert result.lead_time.p90_s == round(percentile(leads, 0.9) or 0)
    stages = {s.stage: s for s in result.stages}
    assert list(stages) == [
        "discovery", "planning", "testing", "awaiting_approval", "deployment", "finish",
    ]  # fmt: skip
    assert (stages["discovery"].median_s, stages["discovery"].total_s) == (600, 1800)
    assert stages["testing"].runs == 3  # the old run's 99,999 s testing is outside 90 days
    assert stages["deployment"].median_s == 5400  # both rings of a run, summed
    approval = stages["awaiting_approval"]
    assert approval.median_s == 19 * 3600
    assert approval.total_s == 57 * 3600
    assert approval.share == round(57 * 3600 / sum(leads), 4)
    rings = {r.stage: r for r in result.rings}
    assert (rings["ring canary"].median_s, rings["ring broad"].median_s) == (1800, 3600)
    assert result.hosts_deployed == 9
    assert result.hosts_per_hour == 2.0  # 9 hosts in 3 x 1.5 h of deployment
    assert result.rollback_rate == round(1 / 9, 4)
    assert result.failure_rate == 0.0
    assert result.run_failure_rate == round(1 / 3, 4)


def test_the_bottleneck_in_plain_words_and_what_would_shorten_it(store: Store) -> None:
    fill(store)
    result = analytics(store, now=NOW)
    assert result.bottleneck is not None
    assert result.bottleneck.stage == "awaiting_approval"
    assert result.bottleneck.text == "approval waits are 90 % of lead time; median 19 h"
    assert result.suggestions[0] == SUGGESTIONS["awaiting_approval"]
    assert "approver groups" in result.suggestions[0]
    assert result.suggestions[-1].startswith("rollbacks: 11 % of deployed hosts")
    assert result.text.endswith("bottleneck: approval waits are 90 % of lead time; median 19 h")
    wait = result.approval_wait
    assert (wait.requests, wait.decided, wait.pending, wait.expired) == (3, 3, 0, 0)
    assert (wait.median_s, wait.total_s) == (19 * 3600, 57 * 3600)


def test_a_window_wait_bottleneck_suggests_wider_windows(store: Store) -> None:
    start = T0
    rid = "20260504T080000Z-0000dd"
    store.create_run(rid, kind="run", target="all", params={}, started_at=start)
    _stage(store, rid, "planning", start, 600)
    _stage(store, rid, "awaiting_window", start + timedelta(seconds=600), 8 * 3600, ring="canary")
    _stage(store, rid, "deployment", start + timedelta(hours=9), 1800, ring="canary")
    _end_run(store, rid, "completed", start + timedelta(hours=10))
    result = analytics(store, now=NOW)
    assert result.bottleneck is not None
    assert result.bottleneck.text == (
        "waits for a maintenance window are 80 % of lead time; median 8.0 h"
    )
    assert result.suggestions == (SUGGESTIONS["awaiting_window"],)
    assert result.approval_wait.requests == 0
    assert result.approval_wait.median_s is None


def test_deterministic_and_bounded(store: Store) -> None:
    fill(store)
    first = analytics(store, now=NOW).document()
    assert analytics(store, now=NOW).document() == first
    assert first["schema"] == "patchpilot.analytics/v1"
    assert analytics(store, since_days=7, now=NOW).runs == 2  # days 3 and 5 after T0
    with pytest.raises(InvalidInputError):
        analytics(store, since_days=0)


def test_helpers() -> None:
    assert percentile([3, 1, 2, 4], 0.5) == 2.5
    assert percentile([10.0], 0.9) == 10.0
    assert percentile([0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100], 0.9) == 90.0
    assert (human_seconds(None), human_seconds(30), human_seconds(5400)) == ("-", "30 s", "1.5 h")


# --------------------------------------------------------------------------- interfaces


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "home"))
    return load_settings(None)


def _stable(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("generated_at", "approval_wait", "runs")}


def test_cli_table_and_json(home: Settings) -> None:
    from patchpilot.cli.main import app

    with Store(home.store_path) as store:
        fill(store)
    runner = CliRunner()
    # the CLI's "now" is the real clock: the synthetic runs are within --since 3650 days
    result = runner.invoke(app, ["analytics", "--since", "3650", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ended_runs"] == 4  # the old run too, with 3650 days: its 2 days of lead time
    assert doc["bottleneck"]["text"] == "approval waits are 51 % of lead time; median 19 h"
    table = runner.invoke(app, ["analytics", "--since", "3650"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "bottleneck: approval waits are" in table.stdout
    assert "ring canary" in table.stdout
    assert "approver groups" in table.stdout
    empty = runner.invoke(app, ["analytics", "--since", "1"])
    assert empty.exit_code == 0
    assert "no patch runs recorded in the last 1 days" in empty.stdout
    assert runner.invoke(app, ["analytics", "--since", "0"]).exit_code == 2


def test_api_returns_the_cli_document(home: Settings, tmp_path: Path) -> None:
    from patchpilot.app.analytics import analytics as app_analytics

    inventory = tmp_path / "inventory.yaml"
    inventory.write_text(yaml.safe_dump({"hosts": {"web-1": {"address": "127.0.0.1"}}}))
    with Store(home.store_path) as store:
        fill(store)
        token = users.add_user(store, "vera", "viewer", actor="admin")
        app = create_app(
            home, inventory=inventory, policy=REPO / "configs" / "policy.yaml", store=store
        )
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get(
                "/api/v1/analytics",
                params={"since": 3650},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert response.status_code == 200, response.text
            assert _stable(response.json()) == _stable(
                app_analytics(store, since_days=3650).document()
            )
            assert client.get("/api/v1/analytics").status_code == 401
            bad = client.get(
                "/api/v1/analytics",
                params={"since": 0},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert bad.status_code == 422


# --------------------------------------------------------------------------- predicted impact


def _item(host: str, package: str) -> PlanItem:
    return PlanItem(
        host=host, package=package, from_version="1.0-1", to_version="1.0-2",
        rule="approved-packages", reason="test",
    )  # fmt: skip


def test_predicted_impact_per_wave_from_past_deployments(store: Store) -> None:
    fill(store)  # openssl deployments: 300 s (canary-1), 600 s (web-1), 900 s (web-2), 3 times
    plan = PatchPlan.create(
        run_id="20260601T000000Z-000001",
        created_at=NOW,
        items=[
            _item("canary-1", "openssl"),
            *(_item(f"web-{i}", "openssl") for i in range(1, 5)),
            _item("web-4", "curl"),
        ],
    )
    impact = predicted_impact(
        plan,
        store,
        rings=[("canary", ["canary-1"]), ("broad", ["web-1", "web-2", "web-3", "web-4", "db-9"])],
        serial=(1, "50%"),
        max_concurrency=2,
    )
    assert impact.history == 9
    waves = [(w.ring, w.wave, w.hosts, w.hosts_in_flight) for w in impact.waves]
    assert waves == [
        ("canary", 1, ("canary-1",), 1),
        ("broad", 1, ("web-1",), 1),
        ("broad", 2, ("web-2", "web-3"), 2),
        ("broad", 3, ("web-4",), 1),
    ]
    canary = impact.waves[0]
    assert canary.services == ("nginx",)
    assert canary.packages == ("openssl",)
    assert canary.expected_seconds == 600  # median of 300, 300, 300, 600 x3, 900 x3
    assert impact.waves[2].expected_seconds == 600  # two hosts at once: one batch
    last = impact.waves[3]
    assert last.packages == ("curl", "openssl")
    assert last.expected_seconds == 600  # curl was never deployed: openssl's median stands
    assert last.basis == "slowest median of 1 of 2 packages"
    assert impact.expected_seconds == 4 * 600
    assert impact.document()["schema"] == "patchpilot.impact/v1"


def test_predicted_impact_without_history(store: Store) -> None:
    plan = PatchPlan.create(
        run_id="20260601T000000Z-000002", created_at=NOW, items=[_item("web-1", "openssl")]
    )
    impact = predicted_impact(plan, store)
    assert [(w.ring, w.hosts, w.services) for w in impact.waves] == [("all", ("web-1",), ())]
    assert impact.waves[0].expected_seconds is None
    assert impact.waves[0].basis == "no past deployment of these packages"
    assert impact.history == 0

"""Stage durations of patch runs: the store's ``run_stages`` (patchpilot/core/store/stages.py),
written by the run graph's nodes through the run context's recorder, shown in the run document
(``stages``) and exported as ``patchpilot_stage_duration_seconds`` (patchpilot/app/metrics.py).

Real SQLite store and checkpoints, real run graph on the scripted fleet of tests/fakes.py; the
run's clock is a controlled one, so every duration is exact (no timing).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from patchpilot.app import runs
from patchpilot.app.documents import validate_run
from patchpilot.app.metrics import STAGE_BUCKETS, render_metrics
from patchpilot.core.audit import AuditLog
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store, StoreError
from patchpilot.core.store.schema import SCHEMA_VERSION
from patchpilot.core.store.stages import STAGES
from patchpilot.graphs.run import (
    ApprovalDecision,
    RunContext,
    StageRecorder,
    StoreStages,
    continue_run,
    start_run,
)
from tests.fakes import FakeDebianHost, fleet_factory
from tests.unit.test_graph_run import HOSTS, START, Clock, make_fleet, write_policy

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ONLY = [("acme-web", "1.1.0")]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def store(home: Path) -> Store:
    return Store(home / "patchpilot.db")


def context(
    settings: Settings, store: Store, policy: Policy, fleet: dict[str, FakeDebianHost], clock: Clock
) -> RunContext:
    return RunContext(
        settings=settings,
        store=store,
        policy=policy,
        transport_factory=fleet_factory(fleet),
        clock=clock,
        audit=AuditLog.for_settings(settings, actor="olivia"),
    )


# --------------------------------------------------------------------------- the store


def test_a_stage_keeps_its_earliest_start_and_its_latest_end(store: Store) -> None:
    assert store.schema_version == SCHEMA_VERSION
    store.stage_started("r1", "discovery", at=T0 + timedelta(seconds=5))
    store.stage_started("r1", "discovery", at=T0)  # a parallel host started earlier
    store.stage_ended("r1", "discovery", at=T0 + timedelta(seconds=30))
    store.stage_ended("r1", "discovery", at=T0 + timedelta(seconds=12))  # ended earlier
    store.stage_started("r1", "deployment", ring="canary", at=T0 + timedelta(minutes=1))
    [discovery, canary] = store.run_stages("r1")
    assert (discovery.stage, discovery.started_at, discovery.ended_at) == (
        "discovery",
        T0,
        T0 + timedelta(seconds=30),
    )
    assert discovery.seconds == 30
    assert (canary.stage, canary.ring, canary.ended_at, canary.seconds) == (
        "deployment",
        "canary",
        None,
        None,
    )
    assert store.ended_stages() == [discovery]
    assert store.run_stages("r2") == []


def test_an_end_before_the_start_counts_zero_and_bad_stages_are_refused(store: Store) -> None:
    store.stage_started("r1", "testing", at=T0)
    store.stage_ended("r1", "testing", at=T0 - timedelta(minutes=5))  # a clock stepped back
    [testing] = store.run_stages("r1")
    assert testing.seconds == 0
    with pytest.raises(StoreError, match="unknown stage"):
        store.stage_started("r1", "lunch", at=T0)  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="printable"):
        store.stage_started("r1", "deployment", ring="bad\nring", at=T0)
    assert [s.stage for s in store.run_stages("r1")] == ["testing"]


def test_a_cancel_request_is_stored_once_for_a_known_run(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown run"):
        store.request_cancel("r1", by="otto")
    store.create_run("r1", kind="run", target="all", params={})
    assert store.cancel_request("r1") is None
    assert store.request_cancel("r1", by="otto", at=T0)
    assert not store.request_cancel("r1", by="bob")  # the first request stands
    request = store.cancel_request("r1")
    assert request is not None
    assert (request.requested_by, request.requested_at) == ("otto", T0)
    with pytest.raises(StoreError, match="printable"):
        store.request_cancel("r1", by="x\x1b[31m")


# --------------------------------------------------------------------------- a run's stages


def test_a_run_records_each_stage_with_the_approval_wait_and_each_ring(
    home: Path, store: Store
) -> None:
    settings = Settings(home=home, feeds={"auto_update": False})
    policy = load_policy(write_policy(home))  # web-1 and db-1 are prod: it waits for approval
    fleet = make_fleet()
    clock = Clock(START)
    ctx = context(settings, store, policy, fleet, clock)
    ctx.stages = StoreStages(store, clock)
    waiting = start_run(HOSTS, ctx, target="all", policy=policy, only=ONLY)
    assert waiting.status == "awaiting_approval"
    assert waiting.interrupt is not None
    so_far = store.run_stages(waiting.run_id)
    assert [s.stage for s in so_far][-1] == "awaiting_approval"
    assert so_far[-1].ended_at is None  # still waiting
    clock.now = START + timedelta(hours=2)
    decision = ApprovalDecision(
        status="approved",
        by="alice",
        at=START + timedelta(hours=2),
        content_hash=waiting.interrupt["content_hash"],
    )
    done = continue_run(waiting.run_id, ctx, decision=decision)
    assert done.status == "completed", done.reason

    stages = store.run_stages(waiting.run_id)
    named = {(s.stage, s.ring): s for s in stages}
    assert set(named) == {
        ("discovery", None),
        ("sourcing", None),
        ("assessment", None),
        ("planning", None),
        ("testing", None),
        ("awaiting_approval", None),
        ("deployment", "canary"),
        ("deployment", "broad"),
        ("finish", None),
    }
    assert all(s.ended_at is not None for s in stages)
    assert named[("awaiting_approval", None)].seconds == 7200
    assert named[("discovery", None)].started_at == START
    assert named[("finish", None)].ended_at == START + timedelta(hours=2)
    assert [s.stage for s in stages][:2] == ["discovery", "sourcing"]  # in start order

    # the run document lists them (schema patchpilot.run/v1 validates it)
    document = runs.report(settings, store, waiting.run_id)
    assert document is not None
    validate_run(document)
    rows = {(s["name"], s["ring"]): s for s in document["stages"]}
    assert rows[("awaiting_approval", None)] == {
        "name": "awaiting_approval",
        "ring": None,
        "started_at": START.isoformat(),
        "ended_at": (START + timedelta(hours=2)).isoformat(),
        "seconds": 7200.0,
    }
    # ... and each wave's predicted impact, from the deployments this run just recorded
    impact = document["impact"]
    assert impact["schema"] == "patchpilot.impact/v1"
    waves = [(w["ring"], w["hosts"], w["packages"]) for w in impact["waves"]]
    assert list(dict.fromkeys(ring for ring, _, _ in waves)) == ["canary", "broad"]
    assert all(packages == ["acme-web"] for _, _, packages in waves)
    assert sorted(h for _, hosts, _ in waves for h in hosts) == sorted(
        d["host"] for d in document["deployments"]
    )
    assert impact["history"] == len(document["deployments"])


def test_a_bare_context_records_nothing_and_the_use_case_records_in_the_store(
    home: Path, store: Store
) -> None:
    settings = Settings(home=home, feeds={"auto_update": False})
    policy = load_policy(write_policy(home, approvals={"tags": []}))
    fleet = make_fleet()
    bare = context(settings, store, policy, fleet, Clock(START))
    assert type(bare.stages) is StageRecorder  # hermetic tests need nothing
    result = start_run(HOSTS, bare, target="all", policy=policy, only=ONLY)
    assert result.status == "completed"
    assert store.run_stages(result.run_id) == []

    again = runs.start(
        settings,
        store,
        HOSTS,
        actor="olivia",
        target="all",
        policy=policy,
        only=[("acme-web", "1.2.0")],  # fails its health check on canary-1: halted
        offline=True,
        make_context=lambda frozen: context(settings, store, frozen, fleet, Clock(START)),
    )
    assert again.status == "halted"
    recorded = {(s.stage, s.ring) for s in store.run_stages(again.run_id)}
    assert ("deployment", "canary") in recorded
    assert ("deployment", "broad") not in recorded  # never started
    assert ("finish", None) in recorded


# --------------------------------------------------------------------------- /metrics


def test_metrics_export_the_stage_durations_from_the_store(store: Store) -> None:
    for run, minutes in (("r1", 2), ("r2", 90)):
        store.stage_started(run, "awaiting_approval", at=T0)
        store.stage_ended(run, "awaiting_approval", at=T0 + timedelta(minutes=minutes))
        store.stage_started(run, "deployment", ring="canary", at=T0)
        store.stage_ended(run, "deployment", ring="canary", at=T0 + timedelta(seconds=3))
    store.stage_started("r2", "deployment", ring="broad", at=T0)
    store.stage_ended("r2", "deployment", ring="broad", at=T0 + timedelta(seconds=40))
    store.stage_started("r3", "testing", at=T0)  # still going on: not counted
    body, content_type = render_metrics(store, now=T0)
    assert content_type.startswith("text/plain")
    [family] = [
        f
        for f in text_string_to_metric_families(body.decode())
        if f.name == "patchpilot_stage_duration_seconds"
    ]
    assert family.type == "histogram"
    samples: dict[tuple[str, str, str], float] = {
        (s.name, s.labels["stage"], s.labels.get("le", "")): s.value for s in family.samples
    }
    total = "patchpilot_stage_duration_seconds"
    assert samples[(total + "_count", "awaiting_approval", "")] == 2
    assert samples[(total + "_sum", "awaiting_approval", "")] == 2 * 60 + 90 * 60
    assert samples[(total + "_bucket", "awaiting_approval", "300.0")] == 1
    assert samples[(total + "_bucket", "awaiting_approval", "3600.0")] == 1
    assert samples[(total + "_bucket", "awaiting_approval", "14400.0")] == 2
    assert samples[(total + "_bucket", "awaiting_approval", "+Inf")] == 2
    # every ring's deployment counts as the deployment stage
    assert samples[(total + "_count", "deployment", "")] == 3
    assert samples[(total + "_sum", "deployment", "")] == 3 + 3 + 40
    assert samples[(total + "_bucket", "deployment", "5.0")] == 2
    assert {stage for _, stage, _ in samples} == {"awaiting_approval", "deployment"}
    buckets = [le for name, stage, le in samples if stage == "deployment" and le]
    assert len(buckets) == len(STAGE_BUCKETS) + 1
    assert set(STAGES) >= {stage for _, stage, _ in samples}

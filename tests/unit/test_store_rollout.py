"""Rollout state in the store: migration 3, per-host deployments, approvals, rejections."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from patchpilot.core.store import (
    ApprovalRecord,
    DeploymentRecord,
    RejectionRecord,
    Store,
    StoreError,
)
from patchpilot.core.store import schema as store_schema

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
ITEMS: list[dict[str, Any]] = [{"package": "acme-web", "from": "1.0.0", "to": "1.2.0"}]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store with one deploy run ``r1``."""
    with Store(tmp_path / "s.db") as s:
        s.create_run("r1", kind="deploy", target="all", params={}, started_at=T0)
        yield s


def _ask(store: Store, run_id: str = "r1", plan_id: str = "p1", **kw: Any) -> ApprovalRecord:
    args: dict[str, Any] = {
        "content_hash": "sha256:aa",
        "reasons": ["kernel update", "ring prod"],
        "payload": {"hosts": 3, "at": T0},
        "requested_at": T0,
        "expires_at": T0 + HOUR,
    }
    args.update(kw)
    content_hash = args.pop("content_hash")
    reasons = args.pop("reasons")
    payload = args.pop("payload")
    return store.request_approval(run_id, plan_id, content_hash, reasons, payload, **args)


def _count(store: Store, table: str) -> int:
    # ``table`` is one of this module's literal table names.
    return int(store._conn().execute(f"SELECT count(*) FROM {table}").fetchone()[0])


# --------------------------------------------------------------------------- schema / migration


def _v2_database(path: Path) -> None:
    """A store as the previous patchpilot wrote it: schema version 2, a run and an outcome."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert store_schema.migrate(conn, store_schema.MIGRATIONS[:2]) == (0, 2)
        conn.execute(
            "INSERT INTO runs (run_id, kind, target, params, status, started_at)"
            " VALUES ('old', 'deploy', 'all', '{}', 'running', '2026-01-01T00:00:00.000000+00:00')"
        )
        conn.execute(
            "INSERT INTO deployment_outcomes (run_id, host, package, to_version, status,"
            " recorded_at) VALUES ('old', 'web-1', 'acme-web', '1.2.0', 'success',"
            " '2026-01-01T00:00:00.000000+00:00')"
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_schema_version_three_adds_the_rollout_tables() -> None:
    assert store_schema.SCHEMA_VERSION == len(store_schema.MIGRATIONS) >= 3
    statements = " ".join(store_schema.MIGRATIONS[2])
    for table in ("run_deployments", "approvals", "baseline_rejections"):
        assert f"CREATE TABLE {table}" in statements


def test_version_two_store_migrates_forward_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    _v2_database(path)
    with Store(path) as store:
        assert store.schema_version == store_schema.SCHEMA_VERSION
        run = store.get_run("old")
        assert run is not None
        assert run.status == "running"
        assert len(store.outcomes("acme-web", "1.2.0")) == 1
        tables = {r[0] for r in store._conn().execute("SELECT name FROM sqlite_master")}
        assert {"run_deployments", "approvals", "baseline_rejections"} <= tables
        assert {
            "approvals_one_pending",
            "approvals_by_status",
            "baseline_rejections_active",
            "run_deployments_by_start",
        } <= tables
        # The new methods work on the run written by the old version.
        store.deployment_started("old", "web-1", "canary", ITEMS, at=T0)
        _ask(store, "old")
        store.reject_version("acme-web", "1.2.0", reason="health", run_id="old", at=T0)
    with Store(path) as store:  # reopening does not migrate again
        assert store.schema_version == store_schema.SCHEMA_VERSION
        assert [d.host for d in store.deployments("old")] == ["web-1"]
        approval = store.approval("old")
        assert approval is not None
        assert approval.status == "pending"
        assert [r.spec for r in store.active_rejections()] == ["acme-web=1.2.0"]


def test_deleting_a_run_drops_its_deployments_and_approvals_but_not_rejections(
    store: Store,
) -> None:
    store.deployment_started("r1", "web-1", "canary", ITEMS, at=T0)
    _ask(store)
    store.reject_version("acme-web", "1.2.0", reason="health", run_id="r1", at=T0)
    with store._transaction("delete run") as conn:
        conn.execute("DELETE FROM runs WHERE run_id = 'r1'")
    assert store.deployments("r1") == []
    assert store.approval("r1") is None
    assert len(store.active_rejections()) == 1


@pytest.mark.parametrize(
    "statement",
    [
        # a done row needs its finish time and result, a running row has neither
        "INSERT INTO run_deployments (run_id, host, ring, state, items, started_at)"
        " VALUES ('r1', 'h', 'canary', 'done', '[]', 't')",
        "INSERT INTO run_deployments (run_id, host, ring, state, items, started_at)"
        " VALUES ('r1', 'h', 'canary', 'paused', '[]', 't')",
        "INSERT INTO approvals (run_id, plan_id, content_hash, status, reasons, payload,"
        " requested_at, expires_at) VALUES ('r1', 'p', 'h', 'approved', '[]', '{}', 't', 'u')",
        "INSERT INTO approvals (run_id, plan_id, content_hash, status, reasons, payload,"
        " requested_at, expires_at) VALUES ('r1', 'p', 'h', 'maybe', '[]', '{}', 't', 'u')",
        "INSERT INTO baseline_rejections (package, version, reason, run_id, rejected_at,"
        " cleared_at) VALUES ('p', '1', 'r', 'r1', 't', 'u')",
    ],
)
def test_check_constraints_guard_the_tables(store: Store, statement: str) -> None:
    with pytest.raises(sqlite3.IntegrityError):
        store._conn().execute(statement)


def test_at_most_one_pending_approval_and_active_rejection_per_key(store: Store) -> None:
    conn = store._conn()
    insert_approval = (
        "INSERT INTO approvals (run_id, plan_id, content_hash, status, reasons, payload,"
        " requested_at, expires_at) VALUES ('r1', ?, 'h', 'pending', '[]', '{}', 't', 'u')"
    )
    conn.execute(insert_approval, ("p1",))
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert_approval, ("p2",))
    insert_rejection = (
        "INSERT INTO baseline_rejections (package, version, reason, run_id, rejected_at)"
        " VALUES ('p', '1', 'r', 'r1', 't')"
    )
    conn.execute(insert_rejection)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(insert_rejection)


# --------------------------------------------------------------------------- set_run_status


def test_set_run_status_changes_only_the_status(store: Store) -> None:
    store.set_run_status("r1", "awaiting_approval")
    run = store.get_run("r1")
    assert run is not None
    assert (run.status, run.finished_at, run.summary) == ("awaiting_approval", None, None)
    store.set_run_status("r1", "running")
    run = store.get_run("r1")
    assert run is not None
    assert run.status == "running"
    assert run.started_at == T0


def test_set_run_status_refuses_unknown_runs_and_empty_status(store: Store) -> None:
    with pytest.raises(StoreError, match="unknown run 'nope'"):
        store.set_run_status("nope", "running")
    with pytest.raises(StoreError, match="status is empty"):
        store.set_run_status("r1", " ")
    run = store.get_run("r1")
    assert run is not None
    assert run.status == "running"


# --------------------------------------------------------------------------- deployments


def test_deployment_lifecycle(store: Store) -> None:
    store.deployment_started("r1", "web-1", "canary", ITEMS, at=T0)
    (running,) = store.deployments("r1")
    assert running == DeploymentRecord(
        run_id="r1",
        host="web-1",
        ring="canary",
        state="running",
        items=ITEMS,
        started_at=T0,
        finished_at=None,
        result=None,
    )
    store.deployment_finished("r1", "web-1", "canary", {"ok": True, "at": T0}, at=T0 + HOUR)
    (done,) = store.deployments("r1")
    assert done.state == "done"
    assert done.items == ITEMS  # kept from the start
    assert done.started_at == T0
    assert done.finished_at == T0 + HOUR
    assert done.result == {"ok": True, "at": "2026-11-01T12:00:00Z"}


def test_restarting_a_running_host_replaces_ring_items_and_start(store: Store) -> None:
    store.deployment_started("r1", "web-1", "canary", ITEMS, at=T0)
    store.deployment_started("r1", "web-1", "prod", [], at=T0 + HOUR)
    (row,) = store.deployments("r1")
    assert (row.state, row.ring, row.items, row.started_at) == ("running", "prod", [], T0 + HOUR)


def test_a_done_host_is_never_reopened(store: Store) -> None:
    store.deployment_started("r1", "web-1", "canary", ITEMS, at=T0)
    store.deployment_finished("r1", "web-1", "canary", {"ok": True}, at=T0 + HOUR)
    before = store.deployments("r1")
    store.deployment_started("r1", "web-1", "prod", [{"package": "x"}], at=T0 + 2 * HOUR)
    assert store.deployments("r1") == before
    assert before[0].state == "done"


def test_finishing_without_a_start_inserts_a_done_row(store: Store) -> None:
    store.deployment_finished("r1", "web-2", "prod", {"ok": False, "error": "boom"}, at=T0)
    (row,) = store.deployments("r1")
    assert (row.state, row.ring, row.items) == ("done", "prod", [])
    assert row.started_at == row.finished_at == T0
    assert row.result == {"ok": False, "error": "boom"}


def test_finishing_again_replaces_the_result(store: Store) -> None:
    store.deployment_finished("r1", "web-1", "canary", {"ok": False}, at=T0)
    store.deployment_finished("r1", "web-1", "canary", {"ok": True}, at=T0 + HOUR)
    (row,) = store.deployments("r1")
    assert (row.result, row.finished_at) == ({"ok": True}, T0 + HOUR)


def test_deployments_are_ordered_by_start_then_host_and_scoped_to_the_run(store: Store) -> None:
    store.create_run("r2", kind="deploy", target="all", params={})
    store.deployment_started("r1", "web-2", "prod", [], at=T0 + HOUR)
    store.deployment_started("r1", "web-9", "canary", [], at=T0)
    store.deployment_started("r1", "web-1", "prod", [], at=T0 + HOUR)
    store.deployment_started("r2", "web-0", "canary", [], at=T0)
    assert [d.host for d in store.deployments("r1")] == ["web-9", "web-1", "web-2"]
    assert [d.host for d in store.deployments("r2")] == ["web-0"]
    assert store.deployments("unknown") == []


def test_naive_times_are_taken_as_utc(store: Store) -> None:
    store.deployment_started("r1", "web-1", "canary", [], at=datetime(2026, 11, 1, 12, 0))
    (row,) = store.deployments("r1")
    assert row.started_at == T0
    assert row.started_at.tzinfo is not None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.deployment_started("nope", "h", "canary", []), "unknown run 'nope'"),
        (lambda s: s.deployment_finished("nope", "h", "canary", {}), "unknown run 'nope'"),
        (lambda s: s.deployment_started("", "h", "canary", []), "run_id is empty"),
        (lambda s: s.deployment_started("r1", "", "canary", []), "host is empty"),
        (lambda s: s.deployment_finished("r1", "h", " ", {}), "ring is empty"),
        (lambda s: s.deployment_started("r1", "h", "canary", ["x"]), "list of mappings"),
        (lambda s: s.deployment_started("r1", "h", "canary", "ab"), "list of mappings"),
        (
            lambda s: s.deployment_started("r1", "h", "canary", [{"x": object()}]),
            "cannot be stored as JSON",
        ),
        (lambda s: s.deployment_finished("r1", "h", "canary", ["x"]), "must be a mapping"),
    ],
)
def test_invalid_deployments_are_refused(
    store: Store, call: Callable[[Store], None], message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        call(store)
    assert _count(store, "run_deployments") == 0


# --------------------------------------------------------------------------- approvals


def test_request_approval_records_a_pending_request(store: Store) -> None:
    record = _ask(store)
    assert record == ApprovalRecord(
        run_id="r1",
        plan_id="p1",
        content_hash="sha256:aa",
        status="pending",
        reasons=("kernel update", "ring prod"),
        payload={"hosts": 3, "at": "2026-11-01T12:00:00Z"},
        requested_at=T0,
        expires_at=T0 + HOUR,
    )
    assert store.approval("r1") == record
    assert store.approvals() == [record]


def test_request_approval_is_idempotent_whatever_the_status(store: Store) -> None:
    first = _ask(store)
    again = _ask(
        store, reasons=["other"], payload={}, requested_at=T0 + HOUR, expires_at=T0 + 2 * HOUR
    )
    assert again == first
    decided = store.decide_approval("r1", "rejected", by="bob", at=T0 + HOUR / 2)
    assert _ask(store) == decided  # a decision is never reopened
    assert decided.status == "rejected"
    assert _count(store, "approvals") == 1


def test_a_run_waits_for_one_plan_at_a_time(store: Store) -> None:
    _ask(store, plan_id="p1")
    with pytest.raises(StoreError, match="already waits for approval of plan p1"):
        _ask(store, plan_id="p2", requested_at=T0 + HOUR / 2)
    store.decide_approval("r1", "expired", by="patchpilot", at=T0 + HOUR)
    second = _ask(store, plan_id="p2", requested_at=T0 + HOUR, expires_at=T0 + 3 * HOUR)
    assert store.approval("r1") == second  # the latest request
    assert [a.plan_id for a in store.approvals(None)] == ["p1", "p2"]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"run_id": "nope"}, "unknown run 'nope'"),
        ({"run_id": ""}, "run_id is empty"),
        ({"plan_id": ""}, "plan_id is empty"),
        ({"content_hash": ""}, "content_hash is empty"),
        ({"reasons": "not a list"}, "reasons must be a list of strings"),
        ({"reasons": [1]}, "reasons must be a list of strings"),
        ({"payload": [1]}, "payload must be a mapping"),
        ({"expires_at": T0}, "must be after requested_at"),
    ],
)
def test_invalid_approval_requests_are_refused(
    store: Store, kw: dict[str, Any], message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        _ask(store, **kw)
    assert _count(store, "approvals") == 0


@pytest.mark.parametrize("decision", ["approved", "rejected", "expired"])
def test_decide_approval(store: Store, decision: Any) -> None:
    _ask(store)
    record = store.decide_approval("r1", decision, by="alice", comment="ok", at=T0 + HOUR / 2)
    assert (record.status, record.decided_by, record.comment) == (decision, "alice", "ok")
    assert record.decided_at == T0 + HOUR / 2
    assert store.approval("r1") == record
    assert store.approvals() == []
    assert store.approvals(decision) == [record]


def test_deciding_twice_names_the_winning_decision(store: Store) -> None:
    _ask(store)
    store.decide_approval("r1", "approved", by="alice", comment="lgtm", at=T0 + HOUR / 2)
    with pytest.raises(
        StoreError,
        match=r"run r1 has no pending approval \(plan p1: it was approved by alice at"
        r" 2026-11-01T12:30:00\+00:00: 'lgtm'\)",
    ):
        store.decide_approval("r1", "rejected", by="bob")
    approval = store.approval("r1")
    assert approval is not None
    assert (approval.status, approval.decided_by) == ("approved", "alice")


def test_deciding_an_expired_one_says_so(store: Store) -> None:
    _ask(store)
    store.decide_approval("r1", "expired", by="patchpilot", at=T0 + 2 * HOUR)
    with pytest.raises(StoreError, match=r"it expired at 2026-11-01T13:00:00\+00:00"):
        store.decide_approval("r1", "approved", by="alice")


def test_decide_without_a_request(store: Store) -> None:
    with pytest.raises(StoreError, match="run r1 never asked for approval"):
        store.decide_approval("r1", "approved", by="alice")
    with pytest.raises(StoreError, match="unknown run 'nope'"):
        store.decide_approval("nope", "approved", by="alice")


def test_a_request_past_its_deadline_cannot_be_approved(store: Store) -> None:
    _ask(store)
    with pytest.raises(StoreError, match=r"expired at .* can no longer be approved"):
        store.decide_approval("r1", "approved", by="alice", at=T0 + HOUR)
    approval = store.approval("r1")
    assert approval is not None
    assert approval.status == "pending"
    # ...but it can be rejected or recorded as expired.
    expired = store.decide_approval("r1", "expired", by="patchpilot", at=T0 + HOUR)
    assert expired.status == "expired"


def test_a_request_before_its_deadline_can_be_approved(store: Store) -> None:
    _ask(store)
    record = store.decide_approval("r1", "approved", by="alice", at=T0 + HOUR - timedelta(0, 1))
    assert record.status == "approved"


@pytest.mark.parametrize(
    ("status", "by", "message"),
    [("pending", "alice", "unknown decision 'pending'"), ("approved", "", "by is empty")],
)
def test_invalid_decisions_are_refused(store: Store, status: Any, by: str, message: str) -> None:
    _ask(store)
    with pytest.raises(StoreError, match=message):
        store.decide_approval("r1", status, by=by)
    approval = store.approval("r1")
    assert approval is not None
    assert approval.status == "pending"


def test_approvals_filter_and_order(store: Store) -> None:
    store.create_run("r2", kind="deploy", target="all", params={})
    store.create_run("r3", kind="deploy", target="all", params={})
    _ask(store, "r2", requested_at=T0 + HOUR, expires_at=T0 + 2 * HOUR)
    _ask(store, "r1")
    _ask(store, "r3", requested_at=T0 + HOUR / 2)
    store.decide_approval("r3", "rejected", by="bob", at=T0 + HOUR)
    assert [a.run_id for a in store.approvals()] == ["r1", "r2"]
    assert [a.run_id for a in store.approvals("pending")] == ["r1", "r2"]
    assert [a.run_id for a in store.approvals("rejected")] == ["r3"]
    assert [a.run_id for a in store.approvals(None)] == ["r1", "r3", "r2"]
    assert store.approvals("approved") == []
    with pytest.raises(StoreError, match="unknown approval status 'bogus'"):
        store.approvals("bogus")  # type: ignore[arg-type]
    assert store.approval("nope") is None


def test_expired_at(store: Store) -> None:
    record = _ask(store)
    assert not record.expired_at(T0)
    assert not record.expired_at(T0 + HOUR - timedelta(microseconds=1))
    assert record.expired_at(T0 + HOUR)
    assert record.expired_at(datetime(2026, 11, 1, 14, 0))  # naive: UTC
    decided = store.decide_approval("r1", "rejected", by="bob", at=T0)
    assert not decided.expired_at(T0 + 2 * HOUR)  # only pending requests expire


def test_records_are_frozen(store: Store) -> None:
    record = _ask(store)
    with pytest.raises(ValueError, match="frozen"):
        record.status = "approved"  # type: ignore[misc]


# --------------------------------------------------------------------------- concurrency


def _race(path: Path, deciders: list[tuple[str, str]]) -> tuple[list[ApprovalRecord], list[str]]:
    """Decide ``r1``'s approval from one thread and one Store (connection) per decider."""
    stores = [Store(path) for _ in deciders]
    barrier = threading.Barrier(len(deciders))
    won: list[ApprovalRecord] = []
    lost: list[str] = []
    lock = threading.Lock()

    def decide(store: Store, status: Any, by: str) -> None:
        barrier.wait()
        try:
            record = store.decide_approval("r1", status, by=by)
        except StoreError as exc:
            with lock:
                lost.append(str(exc))
        else:
            with lock:
                won.append(record)

    threads = [
        threading.Thread(target=decide, args=(s, status, by))
        for s, (status, by) in zip(stores, deciders, strict=True)
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        for s in stores:
            s.close()
    return won, lost


def test_two_stores_deciding_at_once_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.create_run("r1", kind="deploy", target="all", params={})
        _ask(store, requested_at=datetime.now(UTC), expires_at=datetime.now(UTC) + HOUR)
    won, lost = _race(path, [("approved", "alice"), ("rejected", "bob")])
    assert len(won) == 1
    assert len(lost) == 1
    winner = won[0]
    assert f"it was {winner.status} by {winner.decided_by}" in lost[0]
    with Store(path) as store:
        approval = store.approval("r1")
        assert approval == winner


def test_many_deciders_exactly_one_wins(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with Store(path) as store:
        store.create_run("r1", kind="deploy", target="all", params={})
        _ask(store, requested_at=datetime.now(UTC), expires_at=datetime.now(UTC) + HOUR)
    deciders = [("approved", f"person-{i}") for i in range(8)]
    won, lost = _race(path, deciders)
    assert len(won) == 1
    assert len(lost) == 7
    assert all("has no pending approval" in message for message in lost)


def test_one_store_shared_by_threads_also_has_one_winner(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        store.create_run("r1", kind="deploy", target="all", params={})
        _ask(store, requested_at=datetime.now(UTC), expires_at=datetime.now(UTC) + HOUR)
        barrier = threading.Barrier(4)
        results: list[str] = []

        def decide(by: str) -> None:
            barrier.wait()
            try:
                store.decide_approval("r1", "approved", by=by)
                results.append("won")
            except StoreError:
                results.append("lost")

        threads = [threading.Thread(target=decide, args=(f"p{i}",)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(results) == ["lost", "lost", "lost", "won"]


# --------------------------------------------------------------------------- baseline rejections


def test_reject_version_and_spec(store: Store) -> None:
    record = store.reject_version(
        "acme-web", "1.2.0", reason="health check failed", run_id="r1", at=T0
    )
    assert record == RejectionRecord(
        package="acme-web",
        version="1.2.0",
        reason="health check failed",
        run_id="r1",
        rejected_at=T0,
    )
    assert record.spec == "acme-web=1.2.0"
    assert record.active
    assert store.active_rejections() == [record]


def test_reject_version_is_idempotent_while_active(store: Store) -> None:
    first = store.reject_version("acme-web", "1.2.0", reason="health", run_id="r1", at=T0)
    again = store.reject_version("acme-web", "1.2.0", reason="other", run_id="r9", at=T0 + HOUR)
    assert again == first
    assert _count(store, "baseline_rejections") == 1


def test_rejection_needs_no_known_run(store: Store) -> None:
    record = store.reject_version("acme-web", "1.2.0", reason="health", run_id="gone")
    assert record.run_id == "gone"


def test_clear_and_reject_again(store: Store) -> None:
    store.reject_version("acme-web", "1.2.0", reason="health", run_id="r1", at=T0)
    cleared = store.clear_rejection("acme-web", "1.2.0", by="alice", at=T0 + HOUR)
    assert (cleared.cleared_by, cleared.cleared_at, cleared.active) == ("alice", T0 + HOUR, False)
    assert store.active_rejections() == []
    again = store.reject_version(
        "acme-web", "1.2.0", reason="failed again", run_id="r1", at=T0 + 2 * HOUR
    )
    assert (again.reason, again.rejected_at, again.active) == ("failed again", T0 + 2 * HOUR, True)
    assert store.active_rejections() == [again]
    assert _count(store, "baseline_rejections") == 2  # the cleared one is history


def test_clearing_what_is_not_rejected_lists_the_active_ones(store: Store) -> None:
    with pytest.raises(StoreError, match=r"acme-web=1\.2\.0 is not rejected; no version is"):
        store.clear_rejection("acme-web", "1.2.0", by="alice")
    store.reject_version("acme-web", "1.2.0", reason="health", run_id="r1", at=T0)
    store.reject_version("acme-db", "9.1", reason="health", run_id="r1", at=T0 + HOUR)
    store.clear_rejection("acme-web", "1.2.0", by="alice", at=T0 + HOUR)
    with pytest.raises(
        StoreError,
        match=r"acme-web=1\.2\.0 is not rejected \(its rejection was cleared by alice at"
        r" 2026-11-01T13:00:00\+00:00\); active rejections: acme-db=9\.1",
    ):
        store.clear_rejection("acme-web", "1.2.0", by="bob")


def test_active_rejections_oldest_first(store: Store) -> None:
    store.reject_version("b", "2", reason="r", run_id="r1", at=T0 + HOUR)
    store.reject_version("a", "1", reason="r", run_id="r1", at=T0 + 2 * HOUR)
    store.reject_version("c", "3", reason="r", run_id="r1", at=T0)
    assert [r.spec for r in store.active_rejections()] == ["c=3", "b=2", "a=1"]


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.reject_version("", "1", reason="r", run_id="r1"), "package is empty"),
        (lambda s: s.reject_version("p", "", reason="r", run_id="r1"), "version is empty"),
        (lambda s: s.reject_version("p", "1", reason="", run_id="r1"), "reason is empty"),
        (lambda s: s.reject_version("p", "1", reason="r", run_id=""), "run_id is empty"),
        (lambda s: s.clear_rejection("p", "1", by=""), "by is empty"),
        (lambda s: s.clear_rejection("", "1", by="a"), "package is empty"),
    ],
)
def test_invalid_rejections_are_refused(
    store: Store, call: Callable[[Store], object], message: str
) -> None:
    with pytest.raises(StoreError, match=message):
        call(store)
    assert _count(store, "baseline_rejections") == 0

"""Deployment outcomes in the store: migration 2 (``deployment_outcomes``) and its two methods."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from patchpilot.core.store import Store, StoreError
from patchpilot.core.store import schema as store_schema
from patchpilot.core.store.records import Outcome, OutcomeStatus

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _v1_database(path: Path) -> None:
    """A store as the previous patchpilot wrote it: schema version 1, with a run."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        assert store_schema.migrate(conn, store_schema.MIGRATIONS[:1]) == (0, 1)
        conn.execute(
            "INSERT INTO runs (run_id, kind, target, params, status, started_at)"
            " VALUES ('old', 'scan', 'all', '{}', 'succeeded', '2026-01-01T00:00:00.000000+00:00')"
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


def test_schema_version_two_adds_deployment_outcomes() -> None:
    assert store_schema.SCHEMA_VERSION == len(store_schema.MIGRATIONS) >= 2
    statements = " ".join(store_schema.MIGRATIONS[1])
    assert "CREATE TABLE deployment_outcomes" in statements


def test_version_one_store_migrates_forward_and_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    _v1_database(path)
    with Store(path) as store:
        assert store.schema_version == store_schema.SCHEMA_VERSION
        assert store.get_run("old") is not None
        columns = [r[1] for r in store._conn().execute("PRAGMA table_info(deployment_outcomes)")]
        assert columns == [
            "id",
            "run_id",
            "host",
            "package",
            "from_version",
            "to_version",
            "status",
            "error",
            "recorded_at",
        ]
        store.record_outcome("r1", "web-1", "acme-web", "1.0.0", "1.2.0", "failure", "x", at=T0)
    with Store(path) as store:  # reopening does not migrate again
        assert store.schema_version == store_schema.SCHEMA_VERSION
        assert len(store.outcomes("acme-web", "1.2.0")) == 1


def test_record_and_query_outcomes(tmp_path: Path) -> None:
    with Store(tmp_path / "p.db") as store:
        first = store.record_outcome(
            "r1", "web-1", "acme-web", "1.0.0", "1.2.0", OutcomeStatus.FAILURE, "health", at=T0
        )
        assert first == Outcome(
            run_id="r1",
            host="web-1",
            package="acme-web",
            from_version="1.0.0",
            to_version="1.2.0",
            status=OutcomeStatus.FAILURE,
            error="health",
            at=T0,
        )
        store.record_outcome(
            "r2", "canary-1", "acme-web", None, "1.2.0", "success", at=T0 + timedelta(hours=1)
        )
        store.record_outcome("r1", "web-1", "acme-web", "1.0.0", "1.1.0", "success", at=T0)
        store.record_outcome("r1", "web-1", "acme-agent", "1.0.0", "1.2.0", "success", at=T0)
        got = store.outcomes("acme-web", "1.2.0")
        assert [(o.run_id, o.host, o.status) for o in got] == [
            ("r1", "web-1", OutcomeStatus.FAILURE),
            ("r2", "canary-1", OutcomeStatus.SUCCESS),
        ]
        assert got[1].from_version is None
        assert store.outcomes("acme-web", "9.9") == []


def test_recording_again_replaces_the_status(tmp_path: Path) -> None:
    with Store(tmp_path / "p.db") as store:
        store.record_outcome("r1", "web-1", "acme-web", "1.0.0", "1.2.0", "failure", "down", at=T0)
        store.record_outcome(
            "r1", "web-1", "acme-web", "1.0.0", "1.2.0", "rollback", "rolled back to 1.0.0"
        )
        (only,) = store.outcomes("acme-web", "1.2.0")
        assert only.status is OutcomeStatus.ROLLBACK
        assert only.error == "rolled back to 1.0.0"
        assert only.at > T0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("r1", "web-1", "acme-web", "1.0.0", "1.2.0", "broken"), "unknown outcome status"),
        (("", "web-1", "acme-web", "1.0.0", "1.2.0", "success"), "run_id is empty"),
        (("r1", "web-1", "acme-web", "1.0.0", "", "success"), "to_version is empty"),
    ],
)
def test_invalid_outcomes_are_refused(
    tmp_path: Path, args: tuple[str, str, str, str, str, str], message: str
) -> None:
    with Store(tmp_path / "p.db") as store:
        with pytest.raises(StoreError, match=message):
            store.record_outcome(*args)
        assert store._conn().execute("SELECT count(*) FROM deployment_outcomes").fetchone() == (0,)


def test_status_check_constraint_guards_the_table(tmp_path: Path) -> None:
    with Store(tmp_path / "p.db") as store, pytest.raises(sqlite3.IntegrityError):
        store._conn().execute(
            "INSERT INTO deployment_outcomes (run_id, host, package, to_version, status,"
            " recorded_at) VALUES ('r', 'h', 'p', '1', 'maybe', 't')"
        )

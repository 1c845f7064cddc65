"""The store's SQLite schema and its forward migrations (``PRAGMA user_version``).

``MIGRATIONS[i]`` takes a database from version ``i`` to ``i + 1``; a new database runs them
all. Each migration is a tuple of single statements, run inside the caller's transaction
(never ``executescript``, which would commit half-way). Never edit a released migration:
append a new one.

Conventions: timestamps are UTC ISO-8601 text with microseconds (``2024-05-01T12:00:00.000000
+00:00``), so text order is time order; ``release`` is ``''`` for advisories that are not
scoped to a release; JSON documents (``doc`` columns) hold the full pydantic record, and the
other columns copy the fields that queries filter, join or sort on.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from typing import Final

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "current_version",
    "from_db_time",
    "migrate",
    "to_db_time",
]


def to_db_time(moment: datetime) -> str:
    """Normalise a datetime to the stored text form (naive datetimes are taken as UTC).

    Args:
        moment: Any datetime.

    Returns:
        UTC ISO-8601 text with microseconds; text order is time order.
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_db_time(text: str) -> datetime:
    """Parse a stored timestamp (an aware UTC datetime)."""
    return datetime.fromisoformat(text)


_V1: Final[tuple[str, ...]] = (
    # ---------------------------------------------------------------- counters
    # ``advisories_generation`` increases whenever merged advisories change (index caches).
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
    "INSERT INTO meta (key, value) VALUES ('advisories_generation', 0)",
    # ---------------------------------------------------------------- feeds
    """
    CREATE TABLE feeds (
        id            INTEGER PRIMARY KEY,
        kind          TEXT NOT NULL,
        source        TEXT NOT NULL,
        fetched_at    TEXT NOT NULL,
        published_at  TEXT,
        sha256        TEXT NOT NULL,
        etag          TEXT,
        last_modified TEXT,
        records       INTEGER NOT NULL CHECK (records >= 0),
        imported_at   TEXT NOT NULL
    )
    """,
    "CREATE INDEX feeds_by_source ON feeds (kind, source, fetched_at)",
    "CREATE INDEX feeds_by_sha256 ON feeds (kind, sha256)",
    # ---------------------------------------------------------------- advisories
    # One row per key: the merged advisory (see patchpilot.core.store.merge).
    """
    CREATE TABLE advisories (
        id             INTEGER PRIMARY KEY,
        ecosystem      TEXT NOT NULL,
        release        TEXT NOT NULL,
        source_package TEXT NOT NULL,
        advisory_id    TEXT NOT NULL,
        fix_status     TEXT NOT NULL,
        fix_version    TEXT,
        severity       TEXT NOT NULL,
        feed           TEXT NOT NULL,
        winner         INTEGER NOT NULL,
        doc            TEXT NOT NULL,
        UNIQUE (ecosystem, release, source_package, advisory_id),
        CHECK ((fix_status = 'fixed') = (fix_version IS NOT NULL))
    )
    """,
    # ``winner`` is the advisory_records row whose state is the merged state (no FK: the two
    # rows are written in one transaction, the advisory first).
    # Provenance: every distinct record any feed stated for a key. A record stated again
    # (same feed, source, record id and fix state) moves its row forward in time when the batch
    # is newer; ``content`` hashes the record without provenance.fetched_at, so the row (and
    # the provenance's fetched_at: when the statement was first seen) is rewritten only when
    # the feed changed what it says.
    """
    CREATE TABLE advisory_records (
        id          INTEGER PRIMARY KEY,
        advisory    INTEGER NOT NULL REFERENCES advisories (id) ON DELETE CASCADE,
        feed        TEXT NOT NULL,
        source      TEXT NOT NULL,
        record_id   TEXT NOT NULL,
        fix_status  TEXT NOT NULL,
        fix_version TEXT NOT NULL,
        seen_at     TEXT NOT NULL,
        import_id   INTEGER NOT NULL REFERENCES feeds (id),
        seq         INTEGER NOT NULL,
        content     TEXT NOT NULL,
        doc         TEXT NOT NULL,
        UNIQUE (advisory, feed, source, record_id, fix_status, fix_version)
    )
    """,
    """
    CREATE TABLE advisory_cves (
        advisory INTEGER NOT NULL REFERENCES advisories (id) ON DELETE CASCADE,
        cve      TEXT NOT NULL,
        PRIMARY KEY (advisory, cve)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX advisory_cves_by_cve ON advisory_cves (cve)",
    # ---------------------------------------------------------------- enrichment
    """
    CREATE TABLE cvss (
        cve        TEXT NOT NULL,
        kind       TEXT NOT NULL,
        version    TEXT NOT NULL,
        source     TEXT NOT NULL,
        vector     TEXT NOT NULL,
        base_score REAL NOT NULL,
        fetched_at TEXT NOT NULL,
        import_id  INTEGER NOT NULL REFERENCES feeds (id),
        doc        TEXT NOT NULL,
        PRIMARY KEY (cve, kind, version, source)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE epss (
        cve         TEXT PRIMARY KEY,
        probability REAL NOT NULL,
        percentile  REAL NOT NULL,
        score_date  TEXT NOT NULL,
        import_id   INTEGER NOT NULL REFERENCES feeds (id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE kev (
        cve                  TEXT PRIMARY KEY,
        date_added           TEXT NOT NULL,
        due_date             TEXT NOT NULL,
        known_ransomware_use INTEGER,
        fetched_at           TEXT NOT NULL,
        import_id            INTEGER NOT NULL REFERENCES feeds (id)
    ) WITHOUT ROWID
    """,
    # ---------------------------------------------------------------- runs
    """
    CREATE TABLE runs (
        seq         INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL UNIQUE,
        kind        TEXT NOT NULL,
        target      TEXT NOT NULL,
        params      TEXT NOT NULL,
        status      TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        summary     TEXT
    )
    """,
    "CREATE INDEX runs_by_start ON runs (started_at, seq)",
    # ---------------------------------------------------------------- discovery snapshots
    """
    CREATE TABLE run_hosts (
        run_id        TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        host          TEXT NOT NULL,
        ok            INTEGER NOT NULL CHECK (ok IN (0, 1)),
        error_type    TEXT,
        message       TEXT,
        package_count INTEGER,
        facts         TEXT,
        recorded_at   TEXT NOT NULL,
        PRIMARY KEY (run_id, host)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE host_packages (
        run_id         TEXT NOT NULL,
        host           TEXT NOT NULL,
        name           TEXT NOT NULL,
        version        TEXT NOT NULL,
        arch           TEXT NOT NULL,
        source_name    TEXT NOT NULL,
        source_version TEXT NOT NULL,
        state          TEXT NOT NULL,
        ecosystem      TEXT NOT NULL,
        epoch          INTEGER,
        module         TEXT,
        FOREIGN KEY (run_id, host) REFERENCES run_hosts (run_id, host) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX host_packages_by_host ON host_packages (run_id, host)",
    """
    CREATE TABLE host_pending (
        run_id            TEXT NOT NULL,
        host              TEXT NOT NULL,
        doc               TEXT NOT NULL,
        FOREIGN KEY (run_id, host) REFERENCES run_hosts (run_id, host) ON DELETE CASCADE
    )
    """,
    "CREATE INDEX host_pending_by_host ON host_pending (run_id, host)",
    # ---------------------------------------------------------------- findings and risk
    # A finding set says "this run assessed this host" (even with zero findings).
    """
    CREATE TABLE finding_sets (
        run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        host        TEXT NOT NULL,
        recorded_at TEXT NOT NULL,
        PRIMARY KEY (run_id, host)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX finding_sets_by_host ON finding_sets (host)",
    """
    CREATE TABLE findings (
        run_id         TEXT NOT NULL,
        host           TEXT NOT NULL,
        source_package TEXT NOT NULL,
        advisory_id    TEXT NOT NULL,
        finding_key    TEXT NOT NULL,
        severity_rank  INTEGER NOT NULL,
        unknown_severity INTEGER NOT NULL CHECK (unknown_severity IN (0, 1)),
        fix_status     TEXT NOT NULL,
        fix_reachable  INTEGER CHECK (fix_reachable IN (0, 1)),
        cves           TEXT NOT NULL,
        doc            TEXT NOT NULL,
        PRIMARY KEY (run_id, host, source_package, advisory_id),
        FOREIGN KEY (run_id, host) REFERENCES finding_sets (run_id, host) ON DELETE CASCADE
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE finding_first_seen (
        host           TEXT NOT NULL,
        source_package TEXT NOT NULL,
        advisory_id    TEXT NOT NULL,
        first_seen     TEXT NOT NULL,
        PRIMARY KEY (host, source_package, advisory_id)
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE risk (
        run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        finding_key TEXT NOT NULL,
        score       REAL NOT NULL,
        ssvc        TEXT NOT NULL,
        due_date    TEXT,
        doc         TEXT NOT NULL,
        PRIMARY KEY (run_id, finding_key)
    ) WITHOUT ROWID
    """,
)

_V2: Final[tuple[str, ...]] = (
    # ---------------------------------------------------------------- deployment outcomes
    # What happened when a run installed ``package`` ``to_version`` on ``host`` (compatibility
    # testing reads them back by package and version: a prior failure or rollback is a risk).
    # One row per (run, host, package, target version): recording it again (a resumed run, or
    # a failure that was then rolled back) replaces the status. No foreign key to ``runs``: the
    # history outlives any clean-up of old runs.
    """
    CREATE TABLE deployment_outcomes (
        id           INTEGER PRIMARY KEY,
        run_id       TEXT NOT NULL,
        host         TEXT NOT NULL,
        package      TEXT NOT NULL,
        from_version TEXT,
        to_version   TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('success', 'failure', 'rollback')),
        error        TEXT,
        recorded_at  TEXT NOT NULL,
        UNIQUE (run_id, host, package, to_version)
    )
    """,
    "CREATE INDEX deployment_outcomes_by_version"
    " ON deployment_outcomes (package, to_version, recorded_at)",
)

_V3: Final[tuple[str, ...]] = (
    # ---------------------------------------------------------------- rollout: per-host progress
    # What a deploy run did on each host, so a resumed run skips the hosts already ``done``
    # (a ``done`` row is never reopened). ``items`` is the JSON list of plan items the host
    # was given, ``result`` the JSON document of how it ended (set when ``done``).
    """
    CREATE TABLE run_deployments (
        run_id      TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        host        TEXT NOT NULL,
        ring        TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('running', 'done')),
        items       TEXT NOT NULL,
        started_at  TEXT NOT NULL,
        finished_at TEXT,
        result      TEXT,
        PRIMARY KEY (run_id, host),
        CHECK ((state = 'done') = (finished_at IS NOT NULL)),
        CHECK ((state = 'done') = (result IS NOT NULL))
    ) WITHOUT ROWID
    """,
    "CREATE INDEX run_deployments_by_start ON run_deployments (run_id, started_at, host)",
    # ---------------------------------------------------------------- rollout: approvals
    # A run waiting for a person to approve plan ``plan_id`` (``content_hash`` pins what was
    # shown). Decided from another process: ``pending`` moves to a decision in one
    # ``UPDATE ... WHERE status = 'pending'``, so two deciders cannot both win. At most one
    # pending approval per run, so "the run's pending approval" is never ambiguous.
    """
    CREATE TABLE approvals (
        run_id       TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
        plan_id      TEXT NOT NULL,
        content_hash TEXT NOT NULL,
        status       TEXT NOT NULL
                     CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
        reasons      TEXT NOT NULL,
        payload      TEXT NOT NULL,
        requested_at TEXT NOT NULL,
        expires_at   TEXT NOT NULL,
        decided_at   TEXT,
        decided_by   TEXT,
        comment      TEXT,
        PRIMARY KEY (run_id, plan_id),
        CHECK ((status = 'pending') = (decided_at IS NULL)),
        CHECK ((decided_at IS NULL) = (decided_by IS NULL))
    )
    """,
    "CREATE UNIQUE INDEX approvals_one_pending ON approvals (run_id) WHERE status = 'pending'",
    "CREATE INDEX approvals_by_status ON approvals (status, requested_at)",
    "CREATE INDEX approvals_by_run ON approvals (run_id, requested_at)",
    # ---------------------------------------------------------------- rollout: baseline rejections
    # A version that failed its health check after a patch stays rejected until a person clears
    # it; at most one active (uncleared) row per (package, version), cleared rows are history.
    # No foreign key to ``runs``: a rejection must outlive any clean-up of old runs.
    """
    CREATE TABLE baseline_rejections (
        id          INTEGER PRIMARY KEY,
        package     TEXT NOT NULL,
        version     TEXT NOT NULL,
        reason      TEXT NOT NULL,
        run_id      TEXT NOT NULL,
        rejected_at TEXT NOT NULL,
        cleared_at  TEXT,
        cleared_by  TEXT,
        CHECK ((cleared_at IS NULL) = (cleared_by IS NULL))
    )
    """,
    "CREATE UNIQUE INDEX baseline_rejections_active"
    " ON baseline_rejections (package, version) WHERE cleared_at IS NULL",
    "CREATE INDEX baseline_rejections_by_time ON baseline_rejections (rejected_at, id)",
)

# Version 4: a decision records how it was made: ``decided_via`` is the parser that read the
# person's words (``cli``: the approve/reject command; ``grammar``: chat words read by the
# deterministic grammar; never an LLM) and ``decided_words`` those words, verbatim (bounded).
_V4: Final[tuple[str, ...]] = (
    "ALTER TABLE approvals ADD COLUMN decided_via TEXT",
    "ALTER TABLE approvals ADD COLUMN decided_words TEXT",
)

# Version 5 (the service's executor, :mod:`patchpilot.app.executor`): work waiting for a worker.
# ``kind`` is ``start`` (a new patch run), ``continue`` (a run after a decision, a crash or its
# window) or ``scan``; ``request`` its JSON parameters. A worker claims one with
# ``UPDATE ... WHERE status = 'queued'`` in a write transaction, so no job is claimed twice;
# ``owner`` names the executor holding it (its lock file tells whether it is alive). At most
# one queued or claimed job per run.
_V5: Final[tuple[str, ...]] = (
    """
    CREATE TABLE jobs (
        id          INTEGER PRIMARY KEY,
        run_id      TEXT NOT NULL,
        kind        TEXT NOT NULL CHECK (kind IN ('start', 'continue', 'scan')),
        request     TEXT NOT NULL,
        actor       TEXT NOT NULL,
        status      TEXT NOT NULL
                    CHECK (status IN ('queued', 'claimed', 'done', 'failed', 'cancelled')),
        owner       TEXT,
        created_at  TEXT NOT NULL,
        claimed_at  TEXT,
        finished_at TEXT,
        error       TEXT,
        CHECK (status <> 'claimed' OR owner IS NOT NULL),
        CHECK (status <> 'queued' OR owner IS NULL)
    )
    """,
    "CREATE UNIQUE INDEX jobs_one_active ON jobs (run_id) WHERE status IN ('queued', 'claimed')",
    "CREATE INDEX jobs_by_status ON jobs (status, id)",
)

# Version 6 (users, roles and tokens, :mod:`patchpilot.core.store.users`; approvals by N
# distinct people, :mod:`patchpilot.core.store.votes`). ``users``: one row per person (``role``
# one of :class:`patchpilot.core.auth.Role`); a disabled user keeps their row (the audit log
# names them) and authenticates no more. ``user_tokens``: API tokens, ``token_id`` is the
# token's public prefix (finds the row), ``hash`` the argon2 hash of the whole token (the
# token itself is never stored); ``revoked_at`` set when replaced. ``approval_votes``: each
# person's decision on a pending approval, at most one per (run, plan, voter).
_V6: Final[tuple[str, ...]] = (
    """
    CREATE TABLE users (
        name          TEXT PRIMARY KEY,
        role          TEXT NOT NULL CHECK (role IN ('viewer', 'operator', 'approver', 'admin')),
        disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
        password_hash TEXT,
        created_at    TEXT NOT NULL,
        created_by    TEXT NOT NULL,
        changed_at    TEXT NOT NULL,
        changed_by    TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE user_tokens (
        token_id    TEXT PRIMARY KEY,
        user_name   TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        hash        TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        created_by  TEXT NOT NULL,
        revoked_at  TEXT,
        last_used_at TEXT
    ) WITHOUT ROWID
    """,
    "CREATE INDEX user_tokens_by_user ON user_tokens (user_name, created_at)",
    """
    CREATE TABLE approval_votes (
        run_id     TEXT NOT NULL,
        plan_id    TEXT NOT NULL,
        voter      TEXT NOT NULL,
        decision   TEXT NOT NULL CHECK (decision IN ('approved', 'rejected')),
        comment    TEXT,
        via        TEXT,
        words      TEXT,
        voted_at   TEXT NOT NULL,
        PRIMARY KEY (run_id, plan_id, voter),
        FOREIGN KEY (run_id, plan_id) REFERENCES approvals (run_id, plan_id) ON DELETE CASCADE
    ) WITHOUT ROWID
    """,
)

# Version 7 (schedules, :mod:`patchpilot.core.store.schedules`): ``schedules`` holds each
# schedule's JSON document (:class:`patchpilot.core.schedules.Schedule`). ``schedule_occurrences``
# is the exactly-once key: one row per (schedule, occurrence start), inserted in the claiming
# transaction, so two schedulers (threads or processes) racing for an occurrence cannot both
# win; ``status`` is how it was claimed (``on-time``, ``late``) or that it was ``missed``
# (skipped, with the ``reason``). No foreign key: the history outlives a removed schedule.
_V7: Final[tuple[str, ...]] = (
    """
    CREATE TABLE schedules (
        id         TEXT PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('scan', 'run')),
        enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        created_at TEXT NOT NULL,
        doc        TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE schedule_occurrences (
        schedule_id   TEXT NOT NULL,
        occurrence_at TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('scan', 'run')),
        timezone      TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('on-time', 'late', 'missed')),
        reason        TEXT,
        window_end    TEXT NOT NULL,
        cutoff_at     TEXT NOT NULL,
        claimed_at    TEXT NOT NULL,
        run_id        TEXT,
        PRIMARY KEY (schedule_id, occurrence_at)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX schedule_occurrences_by_claim ON schedule_occurrences (claimed_at)",
)

# Version 8 (the web dashboard's logins, :mod:`patchpilot.core.store.sessions`). A password is
# the argon2id hash in ``users.password_hash`` (added with v6, set since v8);
# ``password_changed_at`` says when it was last set. ``web_sessions``: one row per login;
# ``id_hash`` is the SHA-256 of the session id the cookie carries (the id itself is never
# stored), ``csrf`` the session's CSRF token; a session counts until ``expires_at`` unless
# ``ended_at`` is set (logout, a new password, a disabled user).
_V8: Final[tuple[str, ...]] = (
    "ALTER TABLE users ADD COLUMN password_changed_at TEXT",
    """
    CREATE TABLE web_sessions (
        id_hash    TEXT PRIMARY KEY,
        user_name  TEXT NOT NULL REFERENCES users (name) ON DELETE CASCADE,
        csrf       TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        ended_at   TEXT,
        client     TEXT
    ) WITHOUT ROWID
    """,
    "CREATE INDEX web_sessions_by_user ON web_sessions (user_name, expires_at)",
)

# Version 9 (stage durations and cancel requests, :mod:`patchpilot.core.store.stages`).
# ``run_stages``: when each stage of a patch run started and ended (``stage`` one of
# :data:`~patchpilot.core.store.stages.STAGES`; ``ring`` the ring of a ``deployment`` or
# ``awaiting_window`` stage, else ''). A stage that runs again (a resumed step, hosts fanned
# out in parallel) keeps its earliest start and its latest end. ``run_cancels``: a person asked
# a running run to stop at its next safe point (before the next host starts); whoever drives
# the run (any worker, any process) reads it there. No foreign keys: the history outlives a
# run's clean-up and a request may precede the run's first checkpoint.
_V9: Final[tuple[str, ...]] = (
    """
    CREATE TABLE run_stages (
        run_id     TEXT NOT NULL,
        stage      TEXT NOT NULL,
        ring       TEXT NOT NULL DEFAULT '',
        started_at TEXT NOT NULL,
        ended_at   TEXT,
        PRIMARY KEY (run_id, stage, ring)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX run_stages_by_stage ON run_stages (stage, ended_at)",
    """
    CREATE TABLE run_cancels (
        run_id       TEXT PRIMARY KEY,
        requested_by TEXT NOT NULL,
        requested_at TEXT NOT NULL
    ) WITHOUT ROWID
    """,
)

# Version 10 (compliance history against SLAs, :mod:`patchpilot.core.store.compliance`).
# ``compliance_items``: one row per episode of an item, (host, source package, advisory):
# opened when a scan first sees it with a fix to install, fixed (``fixed_at``, ``fixed_by``: a
# run id or ``external``) when a later scan of the host no longer sees it; at most one open
# episode per item (a fixed item seen again opens a new one). ``due``/``sla``: the due date
# from the SLA policy at first sight and the bound that set it (it only ever moves earlier).
# ``compliance_events``: each item's state changes over time (``notified_at``: when a breach
# was announced). ``compliance_scans``: the (run, host) observations already applied, so the
# history is kept exactly once whoever applies them. No foreign keys to runs: the history
# outlives a run's clean-up.
_V10: Final[tuple[str, ...]] = (
    """
    CREATE TABLE compliance_items (
        id             INTEGER PRIMARY KEY,
        host           TEXT NOT NULL,
        source_package TEXT NOT NULL,
        advisory_id    TEXT NOT NULL,
        cves           TEXT NOT NULL,
        binaries       TEXT NOT NULL,
        severity       TEXT NOT NULL,
        ssvc           TEXT,
        kev            INTEGER NOT NULL CHECK (kev IN (0, 1)),
        first_seen     TEXT NOT NULL,
        opened_run     TEXT NOT NULL,
        due            TEXT,
        sla            TEXT NOT NULL,
        last_seen      TEXT NOT NULL,
        last_run       TEXT NOT NULL,
        candidate_run  TEXT,
        candidate_at   TEXT,
        fixed_at       TEXT,
        fixed_by       TEXT,
        confirmed_at   TEXT,
        confirmed_run  TEXT,
        CHECK ((fixed_at IS NULL) = (fixed_by IS NULL)),
        CHECK ((fixed_at IS NULL) = (confirmed_at IS NULL))
    )
    """,
    "CREATE UNIQUE INDEX compliance_items_open"
    " ON compliance_items (host, source_package, advisory_id) WHERE fixed_at IS NULL",
    "CREATE INDEX compliance_items_by_host ON compliance_items (host, first_seen)",
    """
    CREATE TABLE compliance_events (
        id          INTEGER PRIMARY KEY,
        item        INTEGER NOT NULL REFERENCES compliance_items (id) ON DELETE CASCADE,
        at          TEXT NOT NULL,
        state       TEXT NOT NULL CHECK (state IN
                    ('compliant', 'non_compliant', 'overdue', 'accepted', 'unknown')),
        run_id      TEXT,
        detail      TEXT,
        notified_at TEXT
    )
    """,
    "CREATE UNIQUE INDEX compliance_events_once ON compliance_events (item, at, state)",
    "CREATE INDEX compliance_events_by_state ON compliance_events (state, at)",
    """
    CREATE TABLE compliance_scans (
        run_id     TEXT NOT NULL,
        host       TEXT NOT NULL,
        at         TEXT NOT NULL,
        ok         INTEGER NOT NULL CHECK (ok IN (0, 1)),
        applied_at TEXT NOT NULL,
        PRIMARY KEY (run_id, host)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX compliance_scans_by_host ON compliance_scans (host, at)",
)

# Version 11 (load history, :mod:`patchpilot.core.store.load`). ``load_samples``: one row per
# (host, sample time) of a ``load`` schedule: 1-minute load, busy CPU fraction, available memory
# and PSI cpu (NULL: the host has no such signal). ``schedules`` and ``schedule_occurrences``
# are rebuilt (SQLite cannot change a CHECK) so their ``kind`` may also be ``load``; rows and
# the occurrence index are kept as they were.
_V11: Final[tuple[str, ...]] = (
    """
    CREATE TABLE load_samples (
        host             TEXT NOT NULL,
        at               TEXT NOT NULL,
        load1            REAL,
        cpu              REAL,
        memory_available REAL,
        psi_cpu          REAL,
        schedule_id      TEXT,
        PRIMARY KEY (host, at)
    ) WITHOUT ROWID
    """,
    "CREATE INDEX load_samples_by_time ON load_samples (at)",
    """
    CREATE TABLE schedules_v11 (
        id         TEXT PRIMARY KEY,
        kind       TEXT NOT NULL CHECK (kind IN ('scan', 'run', 'load')),
        enabled    INTEGER NOT NULL CHECK (enabled IN (0, 1)),
        created_at TEXT NOT NULL,
        doc        TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    "INSERT INTO schedules_v11 (id, kind, enabled, created_at, doc)"
    " SELECT id, kind, enabled, created_at, doc FROM schedules",
    "DROP TABLE schedules",
    "ALTER TABLE schedules_v11 RENAME TO schedules",
    """
    CREATE TABLE schedule_occurrences_v11 (
        schedule_id   TEXT NOT NULL,
        occurrence_at TEXT NOT NULL,
        kind          TEXT NOT NULL CHECK (kind IN ('scan', 'run', 'load')),
        timezone      TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('on-time', 'late', 'missed')),
        reason        TEXT,
        window_end    TEXT NOT NULL,
        cutoff_at     TEXT NOT NULL,
        claimed_at    TEXT NOT NULL,
        run_id        TEXT,
        PRIMARY KEY (schedule_id, occurrence_at)
    ) WITHOUT ROWID
    """,
    "INSERT INTO schedule_occurrences_v11 (schedule_id, occurrence_at, kind, timezone, status,"
    " reason, window_end, cutoff_at, claimed_at, run_id) SELECT schedule_id, occurrence_at,"
    " kind, timezone, status, reason, window_end, cutoff_at, claimed_at, run_id"
    " FROM schedule_occurrences",
    "DROP TABLE schedule_occurrences",
    "ALTER TABLE schedule_occurrences_v11 RENAME TO schedule_occurrences",
    "CREATE INDEX schedule_occurrences_by_claim ON schedule_occurrences (claimed_at)",
)

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    _V1, _V2, _V3, _V4, _V5, _V6, _V7, _V8, _V9, _V10, _V11,
)  # fmt: skip
"""``MIGRATIONS[i]`` migrates a database from schema version ``i`` to ``i + 1``."""

SCHEMA_VERSION: Final[int] = len(MIGRATIONS)
"""The schema version this code writes."""


def current_version(conn: sqlite3.Connection) -> int:
    """Read ``PRAGMA user_version``.

    Args:
        conn: An open connection.

    Returns:
        The database's schema version (0 for a new, empty database).
    """
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(
    conn: sqlite3.Connection, migrations: tuple[tuple[str, ...], ...] | None = None
) -> tuple[int, int]:
    """Bring the schema up to date; the caller holds a write transaction.

    Args:
        conn: A connection inside ``BEGIN IMMEDIATE`` (so two processes cannot both migrate).
        migrations: The migration steps (default :data:`MIGRATIONS`, read at call time).

    Returns:
        (version before, version after).

    Raises:
        ValueError: If the database is newer than ``migrations`` know (written by a newer
            patchpilot); nothing is changed.
        sqlite3.Error: If a statement fails (the caller rolls back).
    """
    steps = MIGRATIONS if migrations is None else migrations
    before = current_version(conn)
    target = len(steps)
    if before > target:
        raise ValueError(
            f"schema version {before} is newer than this patchpilot understands ({target}); "
            "upgrade patchpilot or use another store"
        )
    for version in range(before, target):
        for statement in steps[version]:
            conn.execute(statement)
    if target != before:
        # PRAGMA takes no parameters; ``target`` is an int computed here, never user input.
        conn.execute(f"PRAGMA user_version = {int(target)}")
    return before, target

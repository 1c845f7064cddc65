"""The SQLite store: feeds and merged advisories, enrichment, runs, host snapshots, findings.

One database file (``Settings.store_path``) in WAL mode, with foreign keys on and a busy
timeout, so several threads and processes can read while one writes. Each thread gets its own
connection; every write is one explicit ``BEGIN IMMEDIATE`` transaction that either commits
whole or rolls back whole (a failed write leaves the store as it was). The schema is versioned
with ``PRAGMA user_version`` and migrated forward on open (:mod:`patchpilot.core.store.schema`).

Bulk data (inventories, findings, outcomes) lives here; graph state carries only run ids.
Feed text (advisory summaries...) is untrusted data: stored and returned, never interpreted,
and SQL only ever receives it as bound parameters.
"""

from __future__ import annotations

import gc
import json
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal, Self

import structlog
from pydantic_core import to_json

from patchpilot.core.feeds import FEED_MAX_AGE, FeedBatch, FeedKind, FeedStatus
from patchpilot.core.models import (
    CVE_RE,
    CVSS,
    EPSS,
    Advisory,
    Ecosystem,
    Enrichment,
    Finding,
    FixStatus,
    HostFacts,
    InstalledPackage,
    InstallState,
    KEVEntry,
    PendingUpdate,
    Provenance,
    RiskAssessment,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.store.importer import BatchImporter, ImportCounters, read_source_records
from patchpilot.core.store.records import (
    FindingRecord,
    HostResult,
    HostSnapshot,
    ImportStats,
    Outcome,
    OutcomeStatus,
    RunRecord,
    StoreError,
    finding_key,
)
from patchpilot.core.store.rollout import RolloutMixin
from patchpilot.core.store.schema import from_db_time, migrate, to_db_time

__all__ = ["Store"]

log = structlog.get_logger(__name__)

_SYNCHRONOUS: Final[dict[str, str]] = {
    "FULL": "PRAGMA synchronous = FULL",
    "NORMAL": "PRAGMA synchronous = NORMAL",
}

# A finding is "in KEV" when any of its CVEs (the advisory id included when it is a CVE) is.
_KEV_EXPR: Final = "EXISTS (SELECT 1 FROM json_each(f.cves) AS j JOIN kev AS v ON v.cve = j.value)"

# For each host, its latest run with a finding set where the host did not fail.
_LATEST_SCOPE: Final = """
    SELECT run_id, host FROM (
        SELECT fs.run_id, fs.host,
               row_number() OVER (
                   PARTITION BY fs.host ORDER BY r.started_at DESC, r.seq DESC
               ) AS rn
        FROM finding_sets AS fs JOIN runs AS r ON r.run_id = fs.run_id
        WHERE NOT EXISTS (
            SELECT 1 FROM run_hosts AS h
            WHERE h.run_id = fs.run_id AND h.host = fs.host AND h.ok = 0
        ) AND (:host IS NULL OR fs.host = :host)
    ) WHERE rn = 1
"""
_RUN_SCOPE: Final = """
    SELECT run_id, host FROM finding_sets
    WHERE run_id = :run_id AND (:host IS NULL OR host = :host)
"""
_FINDINGS_SELECT: Final = """
    SELECT f.doc, k.doc,
           EXISTS (SELECT 1 FROM json_each(f.cves) AS j JOIN kev AS v ON v.cve = j.value)
    FROM scope AS s
    JOIN findings AS f ON f.run_id = s.run_id AND f.host = s.host
    LEFT JOIN risk AS k ON k.run_id = f.run_id AND k.finding_key = f.finding_key
"""
_FINDINGS_ORDER: Final = (
    " ORDER BY k.score IS NULL, k.score DESC, f.host, f.source_package, f.advisory_id"
)


_Index = dict[str, tuple[Advisory, ...]]


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many objects that form no cycles.

    Building tens of thousands of pydantic models otherwise triggers repeated full
    collections over everything already built (about 3x slower). The previous state is
    restored; the pause is process-wide but brief, and reference counting still frees memory.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _json(value: Any) -> str:
    """JSON text for run params/summaries (datetimes, paths, enums and models included)."""
    return to_json(value).decode()


_SEVERITY_RANK: Final[Mapping[Severity, int]] = {s: s.rank for s in Severity}
_FIX_STATUS_TEXT: Final[Mapping[FixStatus, str]] = {s: s.value for s in FixStatus}
_SSVC_TEXT: Final[Mapping[SSVCOutcome, str]] = {s: s.value for s in SSVCOutcome}
_UPSERT_FIRST_SEEN: Final = (
    "INSERT INTO finding_first_seen (host, source_package, advisory_id, first_seen)"
    " VALUES (?, ?, ?, ?) ON CONFLICT (host, source_package, advisory_id) DO UPDATE"
    " SET first_seen = min(finding_first_seen.first_seen, excluded.first_seen)"
)


class _WriteMemo:
    """Column text derived from finding fields during one write, memoised by value identity.

    Fleet findings share field values (one first-seen time per scan, an advisory's CVEs), so
    the text is built once per distinct object. Each entry holds its values, so no id is
    reused by another object while the memo lives (one write).
    """

    def __init__(self) -> None:
        self._times: dict[int, tuple[datetime, str]] = {}
        self._cves: dict[tuple[int, int], tuple[tuple[str, tuple[str, ...]], str]] = {}

    def db_time(self, moment: datetime) -> str:
        """:func:`to_db_time`."""
        hit = self._times.get(id(moment))
        if hit is not None:
            return hit[1]
        text = to_db_time(moment)
        self._times[id(moment)] = (moment, text)
        return text

    def cves(self, advisory_id: str, cves: tuple[str, ...]) -> str:
        """The ``cves`` column: the advisory id when it is a CVE, then the CVEs, once each."""
        key = (id(advisory_id), id(cves))
        hit = self._cves.get(key)
        if hit is not None:
            return hit[1]
        ids = list(cves)
        if CVE_RE.match(advisory_id):
            ids.insert(0, advisory_id)
        text = json.dumps(list(dict.fromkeys(ids)))
        self._cves[key] = ((advisory_id, cves), text)
        return text


PUBLISHED_LAG = timedelta(days=7)
"""Slack on a file-imported feed's own date: feeds do not publish every day."""


class Store(RolloutMixin):
    """patchpilot's SQLite store; safe to share between threads.

    Example::

        with Store(settings.store_path) as store:
            stats = store.import_batch(batch)
            index = store.advisory_index(Ecosystem.DEBIAN, "bookworm")

    Every method raises :class:`StoreError` when SQLite fails or the data is refused; a
    failed write changes nothing. The rollout methods (per-host deployment progress,
    approvals, baseline rejections) are in :class:`patchpilot.core.store.rollout.RolloutMixin`.
    """

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = 30.0,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        index_cache_size: int = 4,
    ) -> None:
        """Open (creating the parent directories and schema if needed) the store at ``path``.

        Args:
            path: The database file (``Settings.store_path``); not ``:memory:``, since each
                thread opens its own connection.
            busy_timeout_s: How long a connection waits for another writer's lock.
            synchronous: ``FULL`` (default) makes every commit durable across power loss;
                ``NORMAL`` is faster and, in WAL mode, may lose the last commits (never
                corrupts).
            index_cache_size: How many :meth:`advisory_index` results (per ecosystem and
                release) to keep in memory, reused until advisories change (0: none).

        Raises:
            StoreError: If the file cannot be opened, is not a store, or was written by a
                newer patchpilot.
        """
        if synchronous not in _SYNCHRONOUS:
            raise StoreError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._synchronous = _SYNCHRONOUS[synchronous]
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self._index_cache_size = max(0, index_cache_size)
        self._index_cache: OrderedDict[tuple[str, str], tuple[int, _Index]] = OrderedDict()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the store directory {self.path.parent}: {exc}"
            ) from exc
        try:
            with self._transaction("schema migration") as conn:
                before, after = migrate(conn)
        except ValueError as exc:
            self.close()
            raise StoreError(f"{self.path}: {exc}") from exc
        except StoreError:
            self.close()
            raise
        if before != after:
            log.info("store.migrated", path=str(self.path), before=before, after=after)

    # ------------------------------------------------------------------ connections

    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use."""
        if self._closed:
            raise StoreError(f"the store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        try:
            # isolation_level=None: no implicit transactions; we issue BEGIN/COMMIT ourselves.
            # check_same_thread=False only so close() may close it from another thread; each
            # connection is used by the thread that opened it.
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA foreign_keys = ON")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            conn.execute(self._synchronous)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from exc
        if str(mode).lower() != "wal":
            log.warning("store.no_wal", path=str(self.path), journal_mode=mode)
        with self._lock:
            if self._closed:
                conn.close()
                raise StoreError(f"the store {self.path} is closed")
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @contextmanager
    def _transaction(self, what: str, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One explicit transaction on this thread's connection: commit, or roll back all.

        Args:
            what: Names the operation in error messages.
            write: ``BEGIN IMMEDIATE`` (take the write lock now) or a deferred read snapshot.

        Raises:
            StoreError: For SQLite errors (chained); other exceptions propagate unchanged.
        """
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        except sqlite3.Error as exc:
            raise StoreError(f"{what}: cannot start a transaction: {exc}") from exc
        try:
            yield conn
        except BaseException as exc:
            self._rollback(conn, what)
            if isinstance(exc, sqlite3.Error):
                raise StoreError(f"{what} failed and was rolled back: {exc}") from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn, what)
            raise StoreError(f"{what}: commit failed, rolled back: {exc}") from exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection, what: str) -> None:
        if not conn.in_transaction:
            return
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # pragma: no cover - connection already broken
            log.error("store.rollback_failed", operation=what, error=str(exc))

    def close(self) -> None:
        """Close every connection (of every thread). Further calls raise StoreError."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
            self._index_cache.clear()
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error as exc:  # pragma: no cover - nothing more to do
                log.warning("store.close_failed", error=str(exc))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        """The database's ``PRAGMA user_version`` (equals ``SCHEMA_VERSION`` once open)."""
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

    # ------------------------------------------------------------------ feeds: import

    def import_batch(self, batch: FeedBatch) -> ImportStats:
        """Import one feed document in one transaction: all of it, or nothing.

        Advisories are merged per key (see :mod:`patchpilot.core.store.merge`); every record is
        kept as provenance. CVSS/KEV values replace older ones of the same CVE (per feed kind
        for CVSS), EPSS the ones with an older or equal ``score_date``. A document already
        imported (same kind and sha256) changes no data; only its feed row's ``fetched_at``
        and validators move forward, so it counts as a fresh check.

        Args:
            batch: The parsed document.

        Returns:
            What changed.

        Raises:
            StoreError: For an invalid fixed version, a malformed CVE id or a SQLite error;
                the store is then unchanged.
        """
        started = time.perf_counter()
        counters = ImportCounters()
        what = f"import of {batch.kind.value} {batch.source}"
        with self._transaction(what) as conn:
            duplicate = self._touch_duplicate(conn, batch)
            if not duplicate:
                feed_id = self._insert_feed(conn, batch)
                counters = BatchImporter(conn, batch, feed_id).run()
        stats = ImportStats(
            kind=batch.kind,
            source=batch.source,
            sha256=batch.sha256,
            duplicate=duplicate,
            advisories=len(batch.advisories),
            created=counters.created,
            changed=counters.changed,
            fix_changed=counters.fix_changed,
            unchanged=counters.unchanged,
            provenance_only=counters.provenance_only,
            cvss=counters.cvss,
            epss=counters.epss,
            kev=counters.kev,
            enrichment_skipped=counters.skipped,
            seconds=time.perf_counter() - started,
        )
        log.info("store.feed_imported", **stats.model_dump(mode="json"))
        return stats

    @staticmethod
    def _records_in(batch: FeedBatch) -> int:
        return len(batch.advisories) + len(batch.cvss) + len(batch.epss) + len(batch.kev)

    def _touch_duplicate(self, conn: sqlite3.Connection, batch: FeedBatch) -> bool:
        """If this document was imported before, refresh its feed row and return True."""
        rows = conn.execute(
            "SELECT id, source, fetched_at, records FROM feeds WHERE kind = ? AND sha256 = ?",
            (batch.kind.value, batch.sha256),
        ).fetchall()
        if not rows:
            return False
        fetched = to_db_time(batch.fetched_at)
        same_source = [row for row in rows if row[1] == batch.source]
        if same_source:
            feed_id, _, previous, _ = max(same_source, key=lambda row: (row[2], row[0]))
            if fetched > previous:
                conn.execute(
                    "UPDATE feeds SET fetched_at = ?, etag = ?, last_modified = ? WHERE id = ?",
                    (fetched, batch.etag, batch.last_modified, feed_id),
                )
        else:
            # The same document read from another place: note the source, change no data.
            self._insert_feed(conn, batch, records=int(rows[0][3]))
        log.info(
            "store.feed_duplicate",
            kind=batch.kind.value,
            source=batch.source,
            sha256=batch.sha256,
        )
        return True

    def _insert_feed(
        self, conn: sqlite3.Connection, batch: FeedBatch, records: int | None = None
    ) -> int:
        row = conn.execute(
            "INSERT INTO feeds (kind, source, fetched_at, published_at, sha256, etag,"
            " last_modified, records, imported_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            (
                batch.kind.value,
                batch.source,
                to_db_time(batch.fetched_at),
                to_db_time(batch.published_at) if batch.published_at else None,
                batch.sha256,
                batch.etag,
                batch.last_modified,
                self._records_in(batch) if records is None else records,
                to_db_time(utcnow()),
            ),
        ).fetchone()
        return int(row[0])

    # ------------------------------------------------------------------ feeds: read

    def feed_status(self, now: datetime | None = None) -> list[FeedStatus]:
        """The newest import of every (kind, source), flagged stale per ``FEED_MAX_AGE``.

        Age of a feed fetched over HTTP is measured from ``fetched_at`` (a re-fetch refreshes
        it). A feed imported from a file can be arbitrarily old whenever it is imported, so its
        age is measured from the document's own date (``published_at``: the newest advisory,
        the catalog release, the EPSS score date) with :data:`PUBLISHED_LAG` of slack for the
        feed's normal publishing rhythm.

        Args:
            now: The reference time (default: now, UTC).

        Returns:
            One status per (kind, source), sorted by kind then source. Feeds never imported
            are absent.
        """
        reference = now or utcnow()
        if reference.tzinfo is None:
            reference = reference.replace(tzinfo=UTC)
        rows = self._conn().execute(
            "SELECT kind, source, fetched_at, published_at, records, sha256 FROM feeds AS f"
            " WHERE id = (SELECT g.id FROM feeds AS g WHERE g.kind = f.kind"
            " AND g.source = f.source ORDER BY g.fetched_at DESC, g.id DESC LIMIT 1)"
            " ORDER BY kind, source"
        )
        statuses: list[FeedStatus] = []
        for kind_text, source, fetched, published, records, sha256 in rows:
            try:
                kind = FeedKind(kind_text)
            except ValueError:
                log.warning("store.unknown_feed_kind", kind=kind_text, source=source)
                continue
            fetched_at = from_db_time(fetched)
            published_at = from_db_time(published) if published else None
            max_age = FEED_MAX_AGE[kind]
            if published_at is not None and not source.startswith(("http://", "https://")):
                stale = reference - published_at > max_age + PUBLISHED_LAG
            else:
                stale = reference - fetched_at > max_age
            statuses.append(
                FeedStatus(
                    kind=kind,
                    source=source,
                    fetched_at=fetched_at,
                    published_at=published_at,
                    records=records,
                    sha256=sha256,
                    stale=stale,
                    max_age_days=max_age.total_seconds() / 86400,
                )
            )
        return statuses

    def feed_validators(self, kind: FeedKind, source: str) -> tuple[str | None, str | None] | None:
        """HTTP validators of the newest import from ``source`` (for a conditional GET).

        Args:
            kind: The feed kind.
            source: The URL or path it was read from.

        Returns:
            (etag, last_modified), or None when nothing was imported from there.
        """
        row = (
            self._conn()
            .execute(
                "SELECT etag, last_modified FROM feeds WHERE kind = ? AND source = ?"
                " ORDER BY fetched_at DESC, id DESC LIMIT 1",
                (kind.value, source),
            )
            .fetchone()
        )
        return None if row is None else (row[0], row[1])

    def has_advisories(self, ecosystem: Ecosystem | None = None) -> bool:
        """Tell whether any advisory (of ``ecosystem``, if given) is stored."""
        value = ecosystem.value if ecosystem is not None else None
        row = (
            self._conn()
            .execute(
                "SELECT EXISTS (SELECT 1 FROM advisories WHERE ? IS NULL OR ecosystem = ?)",
                (value, value),
            )
            .fetchone()
        )
        return bool(row[0])

    def advisories_for(
        self, ecosystem: Ecosystem, release: str | None, source_package: str
    ) -> list[Advisory]:
        """Merged advisories of one source package in one release.

        Args:
            ecosystem: The ecosystem.
            release: The release (codename, version, Alpine branch); None selects only
                advisories that are not release-scoped (e.g. PyPI). Matching is exact.
            source_package: The source package name.

        Returns:
            Merged advisories (fixed and unfixed), sorted by advisory id; the provenance of
            each is its winning record's.
        """
        rows = self._conn().execute(
            "SELECT doc FROM advisories WHERE ecosystem = ? AND release = ?"
            " AND source_package = ? ORDER BY advisory_id",
            (ecosystem.value, release or "", source_package),
        )
        return [Advisory.model_validate_json(doc) for (doc,) in rows]

    def advisory_index(
        self, ecosystem: Ecosystem, release: str | None
    ) -> dict[str, list[Advisory]]:
        """Every merged advisory of one release, by source package (to match many hosts).

        The parsed index is cached in memory (see ``index_cache_size``) and reused until any
        import, from any process, changes a merged advisory (a counter in the database).

        Args:
            ecosystem: The ecosystem.
            release: The release; None for advisories that are not release-scoped.

        Returns:
            source package -> its advisories sorted by id (fresh lists; the advisories are
            frozen and shared).
        """
        key = (ecosystem.value, release or "")
        with self._transaction("advisory index", write=False) as conn:
            (generation,) = conn.execute(
                "SELECT value FROM meta WHERE key = 'advisories_generation'"
            ).fetchone()
            with self._lock:
                cached = self._index_cache.get(key)
            if cached is not None and cached[0] == generation:
                index = cached[1]
            else:
                built: dict[str, list[Advisory]] = {}
                rows = conn.execute(
                    "SELECT source_package, doc FROM advisories WHERE ecosystem = ?"
                    " AND release = ? ORDER BY source_package, advisory_id",
                    key,
                )
                with _gc_paused():
                    for package, doc in rows:
                        built.setdefault(package, []).append(Advisory.model_validate_json(doc))
                index = {package: tuple(items) for package, items in built.items()}
                if self._index_cache_size:
                    with self._lock:
                        self._index_cache[key] = (int(generation), index)
                        self._index_cache.move_to_end(key)
                        while len(self._index_cache) > self._index_cache_size:
                            self._index_cache.popitem(last=False)
        # Advisories are frozen; fresh lists keep callers from altering the cached index.
        return {package: list(items) for package, items in index.items()}

    def advisories_by_cve(self, cve: str) -> list[Advisory]:
        """Merged advisories that name ``cve`` (as id or alias), in every ecosystem.

        Args:
            cve: A CVE id.

        Returns:
            Advisories sorted by ecosystem, release, source package and id.
        """
        rows = self._conn().execute(
            "SELECT a.doc FROM advisory_cves AS c JOIN advisories AS a ON a.id = c.advisory"
            " WHERE c.cve = ? ORDER BY a.ecosystem, a.release, a.source_package, a.advisory_id",
            (cve,),
        )
        return [Advisory.model_validate_json(doc) for (doc,) in rows]

    def advisory_provenance(
        self, ecosystem: Ecosystem, release: str | None, source_package: str, advisory_id: str
    ) -> list[Provenance]:
        """Provenance of every record that contributed to one merged advisory.

        Args:
            ecosystem: The ecosystem.
            release: The release, or None.
            source_package: The source package.
            advisory_id: The advisory id.

        Returns:
            The winning record's provenance first, then the others newest first; empty when
            the key is unknown.
        """
        with self._transaction("advisory provenance", write=False) as conn:
            row = conn.execute(
                "SELECT id, winner FROM advisories WHERE ecosystem = ? AND release = ?"
                " AND source_package = ? AND advisory_id = ?",
                (ecosystem.value, release or "", source_package, advisory_id),
            ).fetchone()
            if row is None:
                return []
            records = read_source_records(conn, int(row[0]))
        # Winner first (as stored), then the others, most recently stated first.
        records.sort(key=lambda r: (r.row == row[1], r.order), reverse=True)
        return [r.advisory.provenance for r in records]

    def enrichment(self, cves: Iterable[str]) -> dict[str, Enrichment]:
        """CVSS, EPSS and KEV data of the given CVEs.

        Args:
            cves: CVE ids (duplicates and non-CVE ids are ignored).

        Returns:
            CVE -> enrichment, only for CVEs with at least one known value.
        """
        wanted = json.dumps(list(dict.fromkeys(c for c in cves if CVE_RE.match(c))))
        if wanted == "[]":
            return {}
        cvss: dict[str, list[CVSS]] = {}
        epss: dict[str, EPSS] = {}
        kev: dict[str, KEVEntry] = {}
        with self._transaction("enrichment read", write=False) as conn:
            for cve, doc in conn.execute(
                "SELECT cve, doc FROM cvss WHERE cve IN (SELECT value FROM json_each(?))"
                " ORDER BY cve, version, kind, source",
                (wanted,),
            ):
                cvss.setdefault(cve, []).append(CVSS.model_validate_json(doc))
            for cve, probability, percentile, score_date in conn.execute(
                "SELECT cve, probability, percentile, score_date FROM epss"
                " WHERE cve IN (SELECT value FROM json_each(?))",
                (wanted,),
            ):
                epss[cve] = EPSS(
                    probability=probability,
                    percentile=percentile,
                    score_date=date.fromisoformat(score_date),
                )
            for cve, added, due, ransomware in conn.execute(
                "SELECT cve, date_added, due_date, known_ransomware_use FROM kev"
                " WHERE cve IN (SELECT value FROM json_each(?))",
                (wanted,),
            ):
                kev[cve] = KEVEntry(
                    date_added=date.fromisoformat(added),
                    due_date=date.fromisoformat(due),
                    known_ransomware_use=None if ransomware is None else bool(ransomware),
                )
        known = sorted(set(cvss) | set(epss) | set(kev))
        return {
            cve: Enrichment(
                cve=cve, cvss=tuple(cvss.get(cve, ())), epss=epss.get(cve), kev=kev.get(cve)
            )
            for cve in known
        }

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        run_id: str,
        *,
        kind: str,
        target: str,
        params: dict[str, Any],
        started_at: datetime | None = None,
    ) -> None:
        """Record the start of a run (status ``running``).

        Calling it again for the same run id, kind and target (a resumed graph node) is a
        no-op.

        Args:
            run_id: Unique id.
            kind: ``scan``, ``plan``, ``deploy``...
            target: The inventory target or host pattern.
            params: JSON-serialisable parameters.
            started_at: Start time (default now).

        Raises:
            StoreError: If the run id exists with another kind or target.
        """
        with self._transaction(f"create run {run_id}") as conn:
            row = conn.execute(
                "SELECT kind, target FROM runs WHERE run_id = ?", (run_id,)
            ).fetchone()
            if row is not None:
                if (row[0], row[1]) != (kind, target):
                    raise StoreError(f"run {run_id} exists already as a {row[0]} run of {row[1]!r}")
                return
            conn.execute(
                "INSERT INTO runs (run_id, kind, target, params, status, started_at)"
                " VALUES (?, ?, ?, ?, 'running', ?)",
                (run_id, kind, target, _json(params), to_db_time(started_at or utcnow())),
            )

    def finish_run(self, run_id: str, *, status: str, summary: dict[str, Any]) -> None:
        """Record the end of a run.

        Args:
            run_id: The run.
            status: Final status (``succeeded``, ``failed``, ``partial``...).
            summary: JSON-serialisable summary.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._transaction(f"finish run {run_id}") as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE run_id = ?",
                (status, to_db_time(utcnow()), _json(summary), run_id),
            )
            if cursor.rowcount != 1:
                raise StoreError(f"unknown run {run_id!r}")

    def set_run_status(self, run_id: str, status: str) -> None:
        """Change only the status of a run (``awaiting_approval``, ``running`` again...).

        Unlike :meth:`finish_run`, the finish time and summary are left as they are.

        Args:
            run_id: The run.
            status: The new status.

        Raises:
            StoreError: If the run is unknown or the status is empty.
        """
        if not status or not status.strip():
            raise StoreError(f"set status of run {run_id}: status is empty")
        with self._transaction(f"set status of run {run_id}") as conn:
            cursor = conn.execute("UPDATE runs SET status = ? WHERE run_id = ?", (status, run_id))
            if cursor.rowcount != 1:
                raise StoreError(f"unknown run {run_id!r}; create_run() it first")

    _RUN_COLUMNS: Final = (
        "SELECT run_id, kind, target, params, status, started_at, finished_at, summary FROM runs"
    )

    @staticmethod
    def _run(row: tuple[Any, ...]) -> RunRecord:
        run_id, kind, target, params, status, started, finished, summary = row
        return RunRecord(
            run_id=run_id,
            kind=kind,
            target=target,
            params=json.loads(params),
            status=status,
            started_at=from_db_time(started),
            finished_at=from_db_time(finished) if finished else None,
            summary=json.loads(summary) if summary is not None else None,
        )

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        """The most recent runs, newest first."""
        rows = self._conn().execute(
            self._RUN_COLUMNS + " ORDER BY started_at DESC, seq DESC LIMIT ?", (limit,)
        )
        return [self._run(row) for row in rows]

    def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or None if unknown."""
        row = self._conn().execute(self._RUN_COLUMNS + " WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else self._run(row)

    @staticmethod
    def _require_run(conn: sqlite3.Connection, run_id: str) -> None:
        if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
            raise StoreError(f"unknown run {run_id!r}; create_run() it first")

    # ------------------------------------------------------------------ discovery snapshots

    def save_host_snapshot(
        self,
        run_id: str,
        facts: HostFacts,
        packages: Sequence[InstalledPackage],
        pending: Sequence[PendingUpdate],
        warnings: Sequence[str] = (),
    ) -> None:
        """Save what discovery found on one host; replaces that (run, host) entirely.

        Args:
            run_id: The run (must exist).
            facts: The host's facts (``facts.host`` names the host).
            packages: Installed packages.
            pending: Upgrades its package manager offers.
            warnings: What discovery could not collect (kept as the host's message).

        Raises:
            StoreError: If the run is unknown.
        """
        host = facts.host
        with self._transaction(f"save snapshot of {host} in run {run_id}") as conn:
            self._require_run(conn, run_id)
            conn.execute("DELETE FROM run_hosts WHERE run_id = ? AND host = ?", (run_id, host))
            conn.execute(
                "INSERT INTO run_hosts (run_id, host, ok, package_count, facts, message,"
                " recorded_at) VALUES (?, ?, 1, ?, ?, ?, ?)",
                (
                    run_id,
                    host,
                    len(packages),
                    facts.model_dump_json(),
                    "\n".join(warnings) or None,
                    to_db_time(utcnow()),
                ),
            )
            conn.executemany(
                "INSERT INTO host_packages (run_id, host, name, version, arch, source_name,"
                " source_version, state, ecosystem, epoch, module)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        host,
                        p.name,
                        p.version,
                        p.arch,
                        p.source_name,
                        p.source_version,
                        p.state.value,
                        p.ecosystem.value,
                        p.epoch,
                        p.module,
                    )
                    for p in packages
                ],
            )
            conn.executemany(
                "INSERT INTO host_pending (run_id, host, doc) VALUES (?, ?, ?)",
                [(run_id, host, u.model_dump_json()) for u in pending],
            )

    @staticmethod
    def _package(row: tuple[Any, ...]) -> InstalledPackage:
        name, version, arch, source_name, source_version, state, ecosystem, epoch, module = row
        return InstalledPackage(
            name=name,
            version=version,
            arch=arch,
            source_name=source_name,
            source_version=source_version,
            state=InstallState(state),
            ecosystem=Ecosystem(ecosystem),
            epoch=epoch,
            module=module,
        )

    def load_host_snapshot(self, run_id: str, host: str) -> HostSnapshot | None:
        """What discovery saved for ``host`` in ``run_id``.

        Returns:
            The snapshot (packages and pending updates in saved order), or None when none was
            saved (or the host failed).
        """
        with self._transaction(f"load snapshot of {host}", write=False) as conn:
            row = conn.execute(
                "SELECT facts FROM run_hosts WHERE run_id = ? AND host = ? AND ok = 1",
                (run_id, host),
            ).fetchone()
            if row is None:
                return None
            packages = tuple(
                self._package(row)
                for row in conn.execute(
                    "SELECT name, version, arch, source_name, source_version, state, ecosystem,"
                    " epoch, module FROM host_packages WHERE run_id = ? AND host = ?"
                    " ORDER BY rowid",
                    (run_id, host),
                )
            )
            pending = tuple(
                PendingUpdate.model_validate_json(doc)
                for (doc,) in conn.execute(
                    "SELECT doc FROM host_pending WHERE run_id = ? AND host = ? ORDER BY rowid",
                    (run_id, host),
                )
            )
        return HostSnapshot(
            facts=HostFacts.model_validate_json(row[0]), packages=packages, pending=pending
        )

    def record_host_failure(self, run_id: str, host: str, error_type: str, message: str) -> None:
        """Record that discovery failed on ``host`` (replaces any snapshot of that run/host).

        Args:
            run_id: The run (must exist).
            host: The host.
            error_type: The exception class name, e.g. ``HostKeyError``.
            message: The (actionable) error message.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._transaction(f"record failure of {host} in run {run_id}") as conn:
            self._require_run(conn, run_id)
            conn.execute("DELETE FROM run_hosts WHERE run_id = ? AND host = ?", (run_id, host))
            conn.execute(
                "INSERT INTO run_hosts (run_id, host, ok, error_type, message, recorded_at)"
                " VALUES (?, ?, 0, ?, ?, ?)",
                (run_id, host, error_type, message, to_db_time(utcnow())),
            )

    def host_results(self, run_id: str, *, details: bool = False) -> list[HostResult]:
        """Discovery outcome of every host of a run, sorted by host.

        Args:
            run_id: The run.
            details: also load each reachable host's facts and pending updates (not its
                package inventory).
        """
        conn = self._conn()
        rows = conn.execute(
            "SELECT host, ok, error_type, message, package_count, facts FROM run_hosts"
            " WHERE run_id = ? ORDER BY host",
            (run_id,),
        ).fetchall()
        pending: dict[str, list[PendingUpdate]] = {}
        if details:
            for host, doc in conn.execute(
                "SELECT host, doc FROM host_pending WHERE run_id = ? ORDER BY rowid", (run_id,)
            ):
                pending.setdefault(host, []).append(PendingUpdate.model_validate_json(doc))
        results = []
        for host, ok, error_type, message, package_count, facts in rows:
            results.append(
                HostResult(
                    host=host,
                    ok=bool(ok),
                    error_type=error_type,
                    message=None if ok else message,
                    warnings=tuple(message.split("\n")) if ok and message else (),
                    package_count=package_count,
                    facts=HostFacts.model_validate_json(facts) if details and facts else None,
                    pending=tuple(pending.get(host, ())),
                )
            )
        return results

    # ------------------------------------------------------------------ findings and risk

    def replace_findings(self, run_id: str, host: str, findings: Sequence[Finding]) -> None:
        """Save the complete findings of one host in one run (replacing earlier ones).

        An empty sequence is a result too: the host was assessed and has no findings, so it
        hides older findings from :meth:`findings`. Each finding's ``first_seen`` becomes the
        earliest ever recorded for (host, source package, advisory id).

        Args:
            run_id: The run (must exist).
            host: The host; every finding must be of it.
            findings: All its findings, at most one per (source package, advisory id).

        Raises:
            StoreError: If the run is unknown, a finding is of another host, or two findings
                share a key.
        """
        self.replace_findings_bulk(run_id, {host: findings})

    def replace_findings_bulk(
        self, run_id: str, findings_by_host: Mapping[str, Sequence[Finding]]
    ) -> None:
        """:meth:`replace_findings` for many hosts in one transaction (fleet-scale writes).

        Raises:
            StoreError: as :meth:`replace_findings`; nothing is written then.
        """
        for host, findings in findings_by_host.items():
            self._check_findings(run_id, host, findings)
        with self._transaction(
            f"replace findings of {len(findings_by_host)} host(s) in run {run_id}"
        ) as conn:
            self._require_run(conn, run_id)
            self._write_findings(conn, run_id, findings_by_host)

    @staticmethod
    def _check_findings(run_id: str, host: str, findings: Sequence[Finding]) -> None:
        seen: set[tuple[str, str]] = set()
        for finding in findings:
            if finding.host != host:
                raise StoreError(f"finding {finding_key(finding)} is not of host {host!r}")
            key = (finding.source_package, finding.advisory_id)
            if key in seen:
                raise StoreError(f"duplicate finding {finding_key(finding)} in run {run_id}")
            seen.add(key)

    @staticmethod
    def _write_findings(
        conn: sqlite3.Connection, run_id: str, findings_by_host: Mapping[str, Sequence[Finding]]
    ) -> None:
        """Replace the finding sets of the hosts (checked: own findings, distinct keys).

        Each stored ``first_seen`` is the earliest ever recorded for (host, source package,
        advisory id): the recorded ones are read in one query, and only new or earlier
        times are written.
        """
        memo = _WriteMemo()
        conn.executemany(
            "DELETE FROM finding_sets WHERE run_id = ? AND host = ?",
            [(run_id, host) for host in findings_by_host],
        )
        conn.executemany(
            "INSERT INTO finding_sets (run_id, host, recorded_at) VALUES (?, ?, ?)",
            [(run_id, host, to_db_time(utcnow())) for host in findings_by_host],
        )
        assessed = [host for host, findings in findings_by_host.items() if findings]
        recorded: dict[tuple[str, str, str], str] = {
            (host, package, advisory): seen
            for host, package, advisory, seen in conn.execute(
                "SELECT host, source_package, advisory_id, first_seen FROM finding_first_seen"
                " WHERE host IN (SELECT value FROM json_each(?))",
                (json.dumps(assessed),),
            )
        }
        first_seen_rows: list[tuple[str, str, str, str]] = []
        rows: list[tuple[Any, ...]] = []
        for host, findings in findings_by_host.items():
            for finding in findings:
                source, advisory_id = finding.source_package, finding.advisory_id
                first_seen = memo.db_time(finding.first_seen)
                earliest = recorded.get((host, source, advisory_id))
                if earliest is None or first_seen < earliest:
                    # As the upsert's min(): TEXT compares by bytes, UTF-8 keeps code point order.
                    first_seen_rows.append((host, source, advisory_id, first_seen))
                    earliest = first_seen
                stored = finding
                if earliest != first_seen:
                    stored = finding.model_copy(update={"first_seen": from_db_time(earliest)})
                reachable = finding.fix_reachable
                severity = finding.severity
                rank = _SEVERITY_RANK.get(severity)
                if rank is None:
                    rank = severity.rank
                status = finding.fix.status
                status_text = _FIX_STATUS_TEXT.get(status)
                if status_text is None:
                    status_text = status.value
                rows.append(
                    (
                        run_id,
                        host,
                        source,
                        advisory_id,
                        f"{host}|{source}|{advisory_id}",  # finding_key(): host is checked
                        rank,
                        int(severity is Severity.UNKNOWN),
                        status_text,
                        None if reachable is None else int(reachable),
                        memo.cves(advisory_id, finding.cves),
                        stored.model_dump_json(),
                    )
                )
        conn.executemany(_UPSERT_FIRST_SEEN, first_seen_rows)
        conn.executemany(
            "INSERT INTO findings (run_id, host, source_package, advisory_id, finding_key,"
            " severity_rank, unknown_severity, fix_status, fix_reachable, cves, doc)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )

    def first_seen_map(self, host: str) -> dict[tuple[str, str], datetime]:
        """(source package, advisory id) -> earliest ``first_seen`` ever recorded for ``host``."""
        rows = self._conn().execute(
            "SELECT source_package, advisory_id, first_seen FROM finding_first_seen WHERE host = ?",
            (host,),
        )
        return {(package, advisory): from_db_time(seen) for package, advisory, seen in rows}

    def save_risk(self, run_id: str, assessments: Sequence[RiskAssessment]) -> None:
        """Save risk assessments of a run's findings (keyed by ``finding_key``; replaces).

        Args:
            run_id: The run (must exist).
            assessments: The assessments.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._transaction(f"save risk of run {run_id}") as conn:
            self._require_run(conn, run_id)
            conn.executemany(
                "INSERT INTO risk (run_id, finding_key, score, ssvc, due_date, doc)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (run_id, finding_key) DO UPDATE SET"
                " score = excluded.score, ssvc = excluded.ssvc, due_date = excluded.due_date,"
                " doc = excluded.doc",
                [
                    (
                        run_id,
                        a.finding_key,
                        a.score,
                        _SSVC_TEXT.get(a.ssvc) or a.ssvc.value,
                        a.due_date.isoformat() if a.due_date else None,
                        a.model_dump_json(),
                    )
                    for a in assessments
                ],
            )

    # ------------------------------------------------------------------ deployment outcomes

    def record_outcome(
        self,
        run_id: str,
        host: str,
        package: str,
        from_version: str | None,
        to_version: str,
        status: OutcomeStatus | str,
        error: str | None = None,
        *,
        at: datetime | None = None,
    ) -> Outcome:
        """Record how installing ``package`` ``to_version`` on ``host`` ended in a run.

        Recording the same run, host, package and target version again replaces the status,
        error and time (a resumed run, or a failure that was then rolled back).

        Args:
            run_id: The deployment run (not checked against ``runs``: history outlives runs).
            host: The host.
            package: The binary package.
            from_version: The version installed before (``None``: a new install).
            to_version: The version installed (the plan item's target).
            status: ``success``, ``failure`` or ``rollback``.
            error: Why it failed or was rolled back.
            at: When (default now).

        Returns:
            The recorded outcome.

        Raises:
            StoreError: If the status is unknown, a field is empty, or SQLite fails.
        """
        try:
            state = OutcomeStatus(status)
        except ValueError:
            raise StoreError(
                f"unknown outcome status {status!r} (success, failure or rollback)"
            ) from None
        for label, value in (("run_id", run_id), ("host", host), ("package", package)):
            if not value:
                raise StoreError(f"record_outcome: {label} is empty")
        if not to_version:
            raise StoreError("record_outcome: to_version is empty")
        when = to_db_time(at or utcnow())
        with self._transaction(f"record outcome of {package} {to_version} on {host}") as conn:
            conn.execute(
                "INSERT INTO deployment_outcomes (run_id, host, package, from_version,"
                " to_version, status, error, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, host, package, to_version) DO UPDATE SET"
                " from_version = excluded.from_version, status = excluded.status,"
                " error = excluded.error, recorded_at = excluded.recorded_at",
                (run_id, host, package, from_version, to_version, state.value, error, when),
            )
        return Outcome(
            run_id=run_id,
            host=host,
            package=package,
            from_version=from_version,
            to_version=to_version,
            status=state,
            error=error,
            at=from_db_time(when),
        )

    def recent_outcomes(
        self, *, package: str | None = None, host: str | None = None, limit: int = 50
    ) -> list[Outcome]:
        """Recorded outcomes, newest first, optionally of one package and/or one host."""
        rows = self._conn().execute(
            "SELECT run_id, host, package, from_version, to_version, status, error, recorded_at"
            " FROM deployment_outcomes WHERE (?1 IS NULL OR package = ?1)"
            " AND (?2 IS NULL OR host = ?2) ORDER BY recorded_at DESC, id DESC LIMIT ?3",
            (package, host, limit),
        )
        return [self._outcome(row) for row in rows]

    def outcomes(self, package: str, version: str) -> list[Outcome]:
        """Every recorded outcome of ``package`` at ``version`` (any host, any run), oldest first.

        This is :class:`patchpilot.agents.testing.OutcomeHistory` as a plain store query.
        """
        rows = self._conn().execute(
            "SELECT run_id, host, package, from_version, to_version, status, error, recorded_at"
            " FROM deployment_outcomes WHERE package = ? AND to_version = ?"
            " ORDER BY recorded_at, id",
            (package, version),
        )
        return [self._outcome(row) for row in rows]

    @staticmethod
    def _outcome(row: tuple[Any, ...]) -> Outcome:
        run_id, host, name, before, after, status, error, recorded = row
        return Outcome(
            run_id=run_id,
            host=host,
            package=name,
            from_version=before,
            to_version=after,
            status=OutcomeStatus(status),
            error=error,
            at=from_db_time(recorded),
        )

    def findings(
        self,
        *,
        run_id: str | None = None,
        host: str | None = None,
        min_severity: Severity | None = None,
        min_score: float | None = None,
        kev: bool | None = None,
        fix_status: FixStatus | None = None,
        actionable: bool | None = None,
        include_unknown_severity: bool = True,
    ) -> list[FindingRecord]:
        """Query findings with their risk.

        Args:
            run_id: One run's findings; None: for each host, the findings of its latest run
                (by start time) that recorded findings for it and where it did not fail.
            host: Only this host.
            min_severity: Severity at least this. Findings of ``unknown`` severity are kept
                unless ``include_unknown_severity`` is False (unknown is never "low").
            min_score: Risk score at least this (findings without a saved risk are dropped).
            kev: Only findings with (True) / without (False) a CVE in the KEV catalog.
            fix_status: Only this fix state.
            actionable: Only findings that are (True) / are not (False) actionable: fixed
                and reachable.
            include_unknown_severity: See ``min_severity``.

        Returns:
            Records sorted by risk score (highest first, unscored last), host, source
            package and advisory id.
        """
        params: dict[str, Any] = {"run_id": run_id, "host": host}
        clauses: list[str] = []
        if min_severity is not None:
            params["min_rank"] = min_severity.rank
            clauses.append(
                "(f.severity_rank >= :min_rank OR f.unknown_severity = 1)"
                if include_unknown_severity
                else "f.severity_rank >= :min_rank"
            )
        if min_score is not None:
            params["min_score"] = min_score
            clauses.append("k.score >= :min_score")
        if kev is not None:
            params["kev"] = int(kev)
            clauses.append(_KEV_EXPR + " = :kev")
        if fix_status is not None:
            params["fix_status"] = fix_status.value
            clauses.append("f.fix_status = :fix_status")
        if actionable is not None:
            actionable_expr = "(f.fix_status = 'fixed' AND coalesce(f.fix_reachable, 0) = 1)"
            clauses.append(actionable_expr if actionable else "NOT " + actionable_expr)
        # Only constant SQL fragments are concatenated; every value is a bound parameter.
        sql = (
            "WITH scope AS ("
            + (_LATEST_SCOPE if run_id is None else _RUN_SCOPE)
            + ")"
            + _FINDINGS_SELECT
            + (" WHERE " + " AND ".join(clauses) if clauses else "")
            + _FINDINGS_ORDER
        )
        rows = self._conn().execute(sql, params)
        with _gc_paused():
            return [
                FindingRecord(
                    finding=Finding.model_validate_json(doc),
                    risk=RiskAssessment.model_validate_json(risk) if risk is not None else None,
                    kev=bool(in_kev),
                )
                for doc, risk, in_kev in rows
            ]

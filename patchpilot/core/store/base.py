"""What every repository of the store shares: the connections, transactions and helpers.

:class:`StoreBase` opens the database (one connection per thread, WAL, foreign keys, a busy
timeout), migrates the schema forward and runs each operation in one explicit transaction
(:meth:`StoreBase._transaction`: ``BEGIN IMMEDIATE`` ... ``COMMIT``, or ``ROLLBACK`` of all).
Each repository (:mod:`~patchpilot.core.store.feeds`, :mod:`~patchpilot.core.store.advisories`,
:mod:`~patchpilot.core.store.runs`, :mod:`~patchpilot.core.store.hosts`,
:mod:`~patchpilot.core.store.findings`, :mod:`~patchpilot.core.store.outcomes`,
:mod:`~patchpilot.core.store.rollout`) is a class over it, and
:class:`patchpilot.core.store.Store` is all of them at once: one object, one set of
connections.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from pydantic_core import to_json

from patchpilot.core.models import Advisory, utcnow
from patchpilot.core.resources import ClosingContext
from patchpilot.core.store.records import StoreError
from patchpilot.core.store.schema import migrate, to_db_time

__all__ = ["AdvisoryIndex", "StoreBase", "db_now", "json_text", "require_run"]

log = structlog.get_logger(__name__)

_SYNCHRONOUS: Final[dict[str, str]] = {
    "FULL": "PRAGMA synchronous = FULL",
    "NORMAL": "PRAGMA synchronous = NORMAL",
}

AdvisoryIndex = dict[str, tuple[Advisory, ...]]
"""source package -> its merged advisories: one parsed release, as the index cache holds it."""


def json_text(value: Any) -> str:
    """JSON text for run params/summaries (datetimes, paths, enums and models included)."""
    return to_json(value).decode()


def db_now(at: datetime | None = None) -> str:
    """The stored text of ``at`` (default: now, UTC)."""
    return to_db_time(at if at is not None else utcnow())


def require_run(conn: sqlite3.Connection, run_id: str, what: str | None = None) -> None:
    """Refuse an unknown run id (``what``, when given, names the operation in the message)."""
    if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
        prefix = f"{what}: " if what else ""
        raise StoreError(f"{prefix}unknown run {run_id!r}; create_run() it first")


class StoreBase(ClosingContext):
    """The open database every repository works on; safe to share between threads.

    Holds this thread's connection (:meth:`_conn`), the transaction helper
    (:meth:`_transaction`), :meth:`close` (``with`` closes too) and the advisory index
    cache (filled by :class:`~patchpilot.core.store.advisories.AdvisoriesRepository`,
    cleared on close). Every method raises :class:`StoreError` when SQLite fails or the data
    is refused; a failed write changes nothing.
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
        self._index_cache: OrderedDict[tuple[str, str], tuple[int, AdvisoryIndex]] = OrderedDict()
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

    @property
    def schema_version(self) -> int:
        """The database's ``PRAGMA user_version`` (equals ``SCHEMA_VERSION`` once open)."""
        return int(self._conn().execute("PRAGMA user_version").fetchone()[0])

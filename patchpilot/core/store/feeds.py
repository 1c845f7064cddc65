"""Feed imports and what the store knows about each feed.

:class:`FeedsRepository` imports one parsed feed document in one transaction
(:meth:`~FeedsRepository.import_batch`, the merge itself is :mod:`patchpilot.core.store.importer`)
and reports each feed's freshness and HTTP validators (``feeds`` table).
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta

import structlog

from patchpilot.core.feeds import FEED_MAX_AGE, FeedBatch, FeedKind, FeedStatus
from patchpilot.core.models import (
    utcnow,
)
from patchpilot.core.store.base import StoreBase
from patchpilot.core.store.importer import BatchImporter, ImportCounters
from patchpilot.core.store.records import (
    ImportStats,
)
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["PUBLISHED_LAG", "FeedsRepository"]

log = structlog.get_logger(__name__)

PUBLISHED_LAG = timedelta(days=7)
"""Slack on a file-imported feed's own date: feeds do not publish every day."""


class FeedsRepository(StoreBase):
    """Feed imports (all or nothing) and feed freshness; part of ``Store``."""

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

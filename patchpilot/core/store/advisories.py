"""Reading merged advisories and their enrichment (CVSS, EPSS, KEV).

:class:`AdvisoriesRepository` answers per package, per release (the cached
:meth:`~AdvisoriesRepository.advisory_index` used to match many hosts), per CVE, and with the
provenance of every record behind a merged advisory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date

from patchpilot.core.models import (
    CVE_RE,
    CVSS,
    EPSS,
    Advisory,
    Ecosystem,
    Enrichment,
    KEVEntry,
    Provenance,
)
from patchpilot.core.resources import gc_paused
from patchpilot.core.store.base import StoreBase
from patchpilot.core.store.importer import read_source_records

__all__ = ["AdvisoriesRepository"]


class AdvisoriesRepository(StoreBase):
    """Merged advisories, their provenance and enrichment; part of ``Store``."""

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
                with gc_paused():
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

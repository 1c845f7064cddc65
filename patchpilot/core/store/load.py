"""Load history of the hosts, and the read-only history queries analytics and forecasts use.

``load_samples`` (schema version 11): one row per (host, sample time), written by the
``load`` schedules (:func:`patchpilot.app.load.collect_load`): the host's 1-minute load
average, busy CPU fraction, available memory and CPU pressure (PSI ``some avg10``) as the
host's read-only sampler (:mod:`patchpilot.tools.metrics.host`) measured them; a signal the
host does not have is ``NULL``. The rows are kept as history: ``patchpilot schedules
suggest`` ranks the slots of the maintenance windows by them.

The other methods only read tables other repositories write (``finding_first_seen``,
``run_deployments``), for :mod:`patchpilot.app.forecast` and :mod:`patchpilot.app.analytics`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from patchpilot.core.store.base import StoreBase
from patchpilot.core.store.records import DeploymentRecord, StoreError
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = [
    "MAX_HISTORY_ROWS",
    "FirstSeen",
    "LoadRepository",
    "LoadSample",
]

MAX_HISTORY_ROWS: Final = 2_000_000
"""Most rows one history query returns."""

_MAX_HOST: Final = 253


class LoadSample(BaseModel):
    """One load reading of one host (``None``: the host has no such signal)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field(min_length=1, max_length=_MAX_HOST)
    at: AwareDatetime
    load1: float | None = Field(default=None, ge=0, description="1-minute load average")
    cpu: float | None = Field(default=None, ge=0, le=1, description="busy CPU fraction")
    memory_available: float | None = Field(default=None, ge=0, description="bytes")
    psi_cpu: float | None = Field(default=None, ge=0, le=100, description="PSI cpu some avg10")
    schedule_id: str | None = Field(default=None, max_length=64, description="who collected it")

    @field_validator("host")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.isprintable():
            raise ValueError("a host name must be printable")
        return value

    @field_validator("load1", "cpu", "memory_available", "psi_cpu")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("a reading must be a finite number")
        return value


class FirstSeen(BaseModel):
    """When a host was first seen affected by an advisory (``finding_first_seen``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    source_package: str
    advisory_id: str
    first_seen: AwareDatetime


_INSERT_SAMPLE: Final = (
    "INSERT OR IGNORE INTO load_samples (host, at, load1, cpu, memory_available, psi_cpu,"
    " schedule_id) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_SELECT_SAMPLES: Final = (
    "SELECT host, at, load1, cpu, memory_available, psi_cpu, schedule_id FROM load_samples"
    " WHERE at >= ?1 AND (?2 IS NULL OR host IN (SELECT value FROM json_each(?2)))"
    " ORDER BY at, host LIMIT ?3"
)


def _sample(
    row: tuple[str, str, float | None, float | None, float | None, float | None, str | None],
) -> LoadSample:
    host, at, load1, cpu, memory, psi, schedule_id = row
    return LoadSample(
        host=host,
        at=from_db_time(at),
        load1=load1,
        cpu=cpu,
        memory_available=memory,
        psi_cpu=psi,
        schedule_id=schedule_id,
    )


class LoadRepository(StoreBase):
    """``load_samples`` and read-only history queries; part of ``Store``."""

    def record_load_samples(self, samples: Sequence[LoadSample]) -> int:
        """Store ``samples`` in one transaction; returns how many were new (a sample of the
        same host at the same instant is kept once: the first one stands)."""
        if not samples:
            return 0
        rows = [
            (
                s.host,
                to_db_time(s.at),
                s.load1,
                s.cpu,
                s.memory_available,
                s.psi_cpu,
                s.schedule_id,
            )
            for s in samples
        ]
        with self._transaction(f"record {len(rows)} load samples") as conn:
            before = conn.total_changes
            conn.executemany(_INSERT_SAMPLE, rows)
            return conn.total_changes - before

    def load_samples(
        self,
        *,
        hosts: Sequence[str] | None = None,
        since: datetime | None = None,
        limit: int = MAX_HISTORY_ROWS,
    ) -> list[LoadSample]:
        """Load samples (of ``hosts``, taken at or after ``since``), oldest first.

        Raises:
            StoreError: more than 10,000 host names asked for at once.
        """
        names = None if hosts is None else sorted(set(hosts))
        if names is not None and len(names) > 10_000:
            raise StoreError("ask for the load of at most 10,000 hosts at once")
        if names is not None and not names:
            return []
        params = (
            to_db_time(since) if since is not None else "",
            json.dumps(names) if names is not None else None,
            max(0, limit),
        )
        with self._transaction("read load samples", write=False) as conn:
            rows = conn.execute(_SELECT_SAMPLES, params).fetchall()
        return [_sample(row) for row in rows]

    def first_seen_history(
        self, *, since: datetime | None = None, limit: int = MAX_HISTORY_ROWS
    ) -> list[FirstSeen]:
        """Every (host, source package, advisory) and when it was first seen, oldest first."""
        with self._transaction("read first-seen history", write=False) as conn:
            rows = conn.execute(
                "SELECT host, source_package, advisory_id, first_seen FROM finding_first_seen"
                " WHERE first_seen >= ? ORDER BY first_seen, host, source_package, advisory_id"
                " LIMIT ?",
                (to_db_time(since) if since is not None else "", max(0, limit)),
            ).fetchall()
        return [
            FirstSeen(host=h, source_package=s, advisory_id=a, first_seen=from_db_time(t))
            for h, s, a, t in rows
        ]

    def finished_deployments(
        self, *, since: datetime | None = None, limit: int = MAX_HISTORY_ROWS
    ) -> list[DeploymentRecord]:
        """The hosts' deployments that ended (every run), oldest end first."""
        with self._transaction("read finished deployments", write=False) as conn:
            rows = conn.execute(
                "SELECT run_id, host, ring, state, items, started_at, finished_at, result"
                " FROM run_deployments WHERE finished_at IS NOT NULL AND finished_at >= ?"
                " ORDER BY finished_at, run_id, host LIMIT ?",
                (to_db_time(since) if since is not None else "", max(0, limit)),
            ).fetchall()
        return [
            DeploymentRecord(
                run_id=run_id,
                host=host,
                ring=ring,
                state=state,
                items=json.loads(items),
                started_at=from_db_time(started),
                finished_at=from_db_time(finished),
                result=json.loads(result) if result is not None else None,
            )
            for run_id, host, ring, state, items, started, finished, result in rows
        ]

"""Stage durations and cancel requests of patch runs (schema version 9).

``run_stages``: when each stage of a run started and ended, written by the run graph's nodes
through the run context's stage recorder (:class:`patchpilot.graphs.run.StoreStages`) as they
happen, so every process and every reader (the run document, ``/metrics``, analytics) sees the
same figures. A stage that runs again (a step resumed after a crash, hosts fanned out in
parallel, an ``approve`` step run once to ask and once to read the decision) keeps its
earliest start and its latest end.

``run_cancels``: a person asked a running run to stop. The request is a row, never process
memory, so whichever worker or process drives the run sees it at its next safe point (before
the next host starts: :mod:`patchpilot.graphs.run`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.store.base import StoreBase, db_now
from patchpilot.core.store.records import StoreError
from patchpilot.core.store.schema import from_db_time

__all__ = [
    "MAX_STAGE_ROWS",
    "STAGES",
    "CancelRequest",
    "Stage",
    "StageRecord",
    "StagesRepository",
]

Stage = Literal[
    "discovery",
    "sourcing",
    "assessment",
    "planning",
    "testing",
    "awaiting_approval",
    "awaiting_window",
    "deployment",
    "analysis",
    "finish",
]
"""A stage of a patch run (``awaiting_window``, ``deployment`` and ``analysis`` once per ring;
``awaiting_approval`` of a ring: a person decides on its marginal or nodata analysis)."""

STAGES: Final[tuple[Stage, ...]] = get_args(Stage)
"""Every stage, in the order a run goes through them."""

MAX_STAGE_ROWS: Final = 1_000_000
"""Most stage rows read at once (``/metrics``)."""

_MAX_RING: Final = 200
_MAX_ACTOR: Final = 200


class StageRecord(BaseModel):
    """One stage of one run: when it started and (once it has) ended."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    stage: Stage
    ring: str | None = Field(default=None, description="the ring (deployment, awaiting_window)")
    started_at: datetime
    ended_at: datetime | None = None

    @property
    def seconds(self) -> float | None:
        """How long it took (``None`` while it goes on)."""
        if self.ended_at is None:
            return None
        return max(0.0, (self.ended_at - self.started_at).total_seconds())

    def document(self) -> dict[str, object]:
        """The run document's ``stages[]`` entry."""
        seconds = self.seconds
        return {
            "name": self.stage,
            "ring": self.ring,
            "started_at": self.started_at.isoformat(),
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "seconds": round(seconds, 3) if seconds is not None else None,
        }


class CancelRequest(BaseModel):
    """Someone asked a running run to stop at its next safe point."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: str
    requested_by: str
    requested_at: datetime


def _check(stage: str, ring: str | None) -> str:
    if stage not in STAGES:
        raise StoreError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    ring = ring or ""
    if len(ring) > _MAX_RING or not ring.isprintable():
        raise StoreError("a stage's ring must be printable and at most 200 characters")
    return ring


def _stage(row: tuple[str, str, str, str, str | None]) -> StageRecord:
    run_id, stage, ring, started, ended = row
    return StageRecord(
        run_id=run_id,
        stage=stage,  # type: ignore[arg-type,unused-ignore]  # checked on write (_check)
        ring=ring or None,
        started_at=from_db_time(started),
        ended_at=from_db_time(ended) if ended else None,
    )


_SELECT: Final = "SELECT run_id, stage, ring, started_at, ended_at FROM run_stages"


class StagesRepository(StoreBase):
    """``run_stages`` and ``run_cancels``; part of ``Store``."""

    # ------------------------------------------------------------------ stages

    def stage_started(
        self, run_id: str, stage: Stage, *, ring: str | None = None, at: datetime | None = None
    ) -> None:
        """Record that ``stage`` (of ``ring``) of ``run_id`` starts; an earlier start stays.

        Raises:
            StoreError: an unknown stage, or a ring that is not printable text.
        """
        ring_key = _check(stage, ring)
        when = db_now(at)
        with self._transaction(f"start stage {stage} of {run_id}") as conn:
            conn.execute(
                "INSERT INTO run_stages (run_id, stage, ring, started_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (run_id, stage, ring) DO UPDATE"
                " SET started_at = MIN(started_at, excluded.started_at)",
                (run_id, stage, ring_key, when),
            )

    def stage_ended(
        self, run_id: str, stage: Stage, *, ring: str | None = None, at: datetime | None = None
    ) -> None:
        """Record that ``stage`` (of ``ring``) of ``run_id`` ends; a later end stays.

        A stage never recorded as started starts and ends at ``at``.

        Raises:
            StoreError: an unknown stage, or a ring that is not printable text.
        """
        ring_key = _check(stage, ring)
        when = db_now(at)
        with self._transaction(f"end stage {stage} of {run_id}") as conn:
            conn.execute(
                "INSERT INTO run_stages (run_id, stage, ring, started_at, ended_at)"
                " VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (run_id, stage, ring) DO UPDATE SET ended_at ="
                " MAX(started_at, COALESCE(ended_at, excluded.ended_at), excluded.ended_at)",
                (run_id, stage, ring_key, when, when),
            )

    def run_stages(self, run_id: str) -> list[StageRecord]:
        """The stages of ``run_id`` in the order they started (stages that started at the same
        instant in the order a run goes through them)."""
        with self._transaction(f"read stages of {run_id}", write=False) as conn:
            rows = conn.execute(_SELECT + " WHERE run_id = ?", (run_id,)).fetchall()
        stages = [_stage(row) for row in rows]
        return sorted(stages, key=lambda s: (s.started_at, STAGES.index(s.stage), s.ring or ""))

    def ended_stages(self, *, limit: int = MAX_STAGE_ROWS) -> list[StageRecord]:
        """Every stage that has ended, of every run (newest end first, at most ``limit``)."""
        with self._transaction("read ended stages", write=False) as conn:
            rows = conn.execute(
                _SELECT + " WHERE ended_at IS NOT NULL ORDER BY ended_at DESC LIMIT ?",
                (max(0, limit),),
            ).fetchall()
        return [_stage(row) for row in rows]

    # ------------------------------------------------------------------ cancel requests

    def request_cancel(self, run_id: str, *, by: str, at: datetime | None = None) -> bool:
        """Ask ``run_id`` to stop at its next safe point. False: it was asked already (the
        first request stands).

        Raises:
            StoreError: unknown run, or ``by`` is empty or not printable.
        """
        if not by or len(by) > _MAX_ACTOR or not by.isprintable():
            raise StoreError("who cancels must be printable and at most 200 characters")
        with self._transaction(f"cancel run {run_id}") as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone() is None:
                raise StoreError(f"unknown run {run_id!r}")
            cursor = conn.execute(
                "INSERT OR IGNORE INTO run_cancels (run_id, requested_by, requested_at)"
                " VALUES (?, ?, ?)",
                (run_id, by, db_now(at)),
            )
        return cursor.rowcount == 1

    def cancel_request(self, run_id: str) -> CancelRequest | None:
        """The request to stop ``run_id`` (``None``: nobody asked)."""
        row = (
            self._conn()
            .execute(
                "SELECT run_id, requested_by, requested_at FROM run_cancels WHERE run_id = ?",
                (run_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return CancelRequest(run_id=row[0], requested_by=row[1], requested_at=from_db_time(row[2]))

"""patchpilot's SQLite store: feeds and merged advisories, enrichment, runs, findings, rollouts.

    from patchpilot.core.store import Store, finding_key

    with Store(settings.store_path) as store:
        store.import_batch(batch)
        advisories = store.advisories_for(Ecosystem.DEBIAN, "bookworm", "openssl")

See :mod:`patchpilot.core.store.core` for the :class:`Store` facade and its repositories
(:mod:`~patchpilot.core.store.feeds`, :mod:`~patchpilot.core.store.advisories`,
:mod:`~patchpilot.core.store.runs`, :mod:`~patchpilot.core.store.hosts`,
:mod:`~patchpilot.core.store.findings`, :mod:`~patchpilot.core.store.outcomes` and
:mod:`~patchpilot.core.store.rollout` for rollout state: per-host deployment progress,
approvals, baseline rejections), :mod:`patchpilot.core.store.base` for the shared connection
and transaction helpers, :mod:`patchpilot.core.store.merge` for the advisory merge rule and
:mod:`patchpilot.core.store.schema` for the tables and migrations.
"""

from __future__ import annotations

from patchpilot.core.store.core import Store
from patchpilot.core.store.merge import SourceRecord, merge_records, pick_winner
from patchpilot.core.store.records import (
    ApprovalDecision,
    ApprovalRecord,
    ApprovalStatus,
    DeploymentRecord,
    DeploymentState,
    FindingRecord,
    HostResult,
    HostSnapshot,
    ImportStats,
    RejectionRecord,
    RunRecord,
    StoreError,
    finding_key,
)
from patchpilot.core.store.schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "ApprovalDecision",
    "ApprovalRecord",
    "ApprovalStatus",
    "DeploymentRecord",
    "DeploymentState",
    "FindingRecord",
    "HostResult",
    "HostSnapshot",
    "ImportStats",
    "RejectionRecord",
    "RunRecord",
    "SourceRecord",
    "Store",
    "StoreError",
    "finding_key",
    "merge_records",
    "pick_winner",
]

"""patchpilot's SQLite store: feeds and merged advisories, enrichment, runs, findings, rollouts.

    from patchpilot.store import Store, finding_key

    with Store(settings.store_path) as store:
        store.import_batch(batch)
        advisories = store.advisories_for(Ecosystem.DEBIAN, "bookworm", "openssl")

See :mod:`patchpilot.store.core` for the store, :mod:`patchpilot.store.rollout` for rollout
state (per-host deployment progress, approvals, baseline rejections),
:mod:`patchpilot.store.merge` for the advisory merge rule and :mod:`patchpilot.store.schema`
for the tables and migrations.
"""

from __future__ import annotations

from patchpilot.store.core import Store
from patchpilot.store.merge import SourceRecord, merge_records, pick_winner
from patchpilot.store.records import (
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
from patchpilot.store.schema import SCHEMA_VERSION

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

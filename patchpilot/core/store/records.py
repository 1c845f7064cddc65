"""Records the store returns (runs, host snapshots, findings, import statistics) and its error.

:class:`StoreError` is defined in :mod:`patchpilot.core.errors` and re-exported here.

All of them are frozen pydantic models: a read from the store is a fact as of that read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.errors import StoreError
from patchpilot.core.feeds import FeedKind
from patchpilot.core.models import (
    Finding,
    HostFacts,
    InstalledPackage,
    PendingUpdate,
    RiskAssessment,
)

__all__ = [
    "ApprovalDecision",
    "ApprovalRecord",
    "ApprovalStatus",
    "DeploymentRecord",
    "DeploymentState",
    "FindingRecord",
    "HostResult",
    "HostSnapshot",
    "ImportStats",
    "Outcome",
    "OutcomeStatus",
    "RejectionRecord",
    "RunRecord",
    "StoreError",
    "finding_key",
]


def finding_key(finding: Finding) -> str:
    """The stable key of a finding: ``host|source_package|advisory_id``.

    ``RiskAssessment.finding_key`` uses the same key, so risk joins findings on it.

    Args:
        finding: The finding.

    Returns:
        The key, e.g. ``"web-1|openssh|DSA-5724-1"``.
    """
    return f"{finding.host}|{finding.source_package}|{finding.advisory_id}"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImportStats(_Frozen):
    """What one :meth:`Store.import_batch` did.

    Advisory records are counted once each; a key (ecosystem, release, source package,
    advisory id) counts in exactly one of ``created``, ``changed`` or ``unchanged`` per record
    that touched it.
    """

    kind: FeedKind
    source: str
    sha256: str
    duplicate: bool = Field(
        default=False,
        description="the same document (kind, sha256) was imported before: no data changed",
    )
    advisories: int = Field(default=0, ge=0, description="advisory records in the batch")
    created: int = Field(default=0, ge=0, description="advisory keys seen for the first time")
    changed: int = Field(default=0, ge=0, description="merged advisories that changed")
    fix_changed: int = Field(default=0, ge=0, description="... of which the fix state changed")
    unchanged: int = Field(default=0, ge=0, description="merged advisories left as they were")
    provenance_only: int = Field(
        default=0, ge=0, description="records kept as provenance only (they did not win)"
    )
    cvss: int = Field(default=0, ge=0, description="CVEs whose CVSS scores were written")
    epss: int = Field(default=0, ge=0, description="EPSS scores written")
    kev: int = Field(default=0, ge=0, description="KEV entries written")
    enrichment_skipped: int = Field(
        default=0, ge=0, description="CVSS/EPSS/KEV values older than the stored ones, ignored"
    )
    seconds: float = Field(default=0.0, ge=0.0)


class RunRecord(_Frozen):
    """One patchpilot run (scan, plan, deploy...)."""

    run_id: str
    kind: str
    target: str
    params: dict[str, Any]
    status: str
    started_at: datetime
    finished_at: datetime | None = None
    summary: dict[str, Any] | None = None


class HostSnapshot(_Frozen):
    """What discovery saved for one host in one run."""

    facts: HostFacts
    packages: tuple[InstalledPackage, ...]
    pending: tuple[PendingUpdate, ...]


class HostResult(_Frozen):
    """The discovery outcome of one host in one run."""

    host: str
    ok: bool
    error_type: str | None = None
    message: str | None = None
    package_count: int | None = Field(default=None, description="None when discovery failed")
    warnings: tuple[str, ...] = Field(
        default=(), description="what discovery could not collect on a reachable host"
    )
    facts: HostFacts | None = Field(default=None, description="loaded with details=True")
    pending: tuple[PendingUpdate, ...] = Field(
        default=(), description="pending updates, loaded with details=True"
    )


class FindingRecord(_Frozen):
    """A stored finding with its risk assessment (if saved) and whether any CVE is in KEV."""

    finding: Finding
    risk: RiskAssessment | None
    kev: bool


class OutcomeStatus(StrEnum):
    """How installing one package version on one host ended."""

    SUCCESS = "success"
    """Installed and healthy."""
    FAILURE = "failure"
    """The install or its health check failed (and was not rolled back)."""
    ROLLBACK = "rollback"
    """It failed and the host was rolled back to the recorded versions."""


class Outcome(_Frozen):
    """One recorded deployment outcome (``deployment_outcomes`` row)."""

    run_id: str
    host: str
    package: str
    from_version: str | None = Field(description="installed before; None = new install")
    to_version: str
    status: OutcomeStatus
    error: str | None = None
    at: datetime = Field(description="when it was recorded (UTC)")


DeploymentState = Literal["running", "done"]
"""A host's progress in a deploy run: started (maybe interrupted), or finished."""

ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]
"""Where an approval request stands; only ``pending`` can still change."""

ApprovalDecision = Literal["approved", "rejected", "expired"]
"""What :meth:`Store.decide_approval` may move a pending approval to."""


class DeploymentRecord(_Frozen):
    """What a deploy run did on one host (``run_deployments`` row).

    A ``done`` host is skipped when the run resumes; a ``running`` one was started and may
    have been interrupted half-way.
    """

    run_id: str
    host: str
    ring: str
    state: DeploymentState
    items: list[dict[str, Any]] = Field(description="the plan items the host was given (JSON)")
    started_at: datetime
    finished_at: datetime | None = None
    result: dict[str, Any] | None = Field(default=None, description="how it ended (when done)")


class ApprovalRecord(_Frozen):
    """A run's request for a person to approve a plan (``approvals`` row)."""

    run_id: str
    plan_id: str
    content_hash: str = Field(description="hash of the plan content the person is shown")
    status: ApprovalStatus
    reasons: tuple[str, ...] = Field(description="why the plan needs a person")
    payload: dict[str, Any]
    requested_at: datetime
    expires_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    comment: str | None = None
    decided_via: str | None = Field(
        default=None,
        description="the parser that read the decision (cli, grammar; patchpilot for expiry)",
    )
    decided_words: str | None = Field(
        default=None, description="the person's own words that made the decision"
    )

    def expired_at(self, now: datetime) -> bool:
        """Tell whether the request is still pending but past its deadline at ``now``.

        Args:
            now: The reference time (a naive datetime is taken as UTC).

        Returns:
            True when ``status`` is ``pending`` and ``now >= expires_at``.
        """
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        return self.status == "pending" and now >= self.expires_at


class RejectionRecord(_Frozen):
    """A package version rejected as a baseline after a failed health check.

    Active (``cleared_at`` is None) until a person clears it.
    """

    package: str
    version: str
    reason: str
    run_id: str = Field(description="the run whose health check failed")
    rejected_at: datetime
    cleared_at: datetime | None = None
    cleared_by: str | None = None

    @property
    def spec(self) -> str:
        """``package=version``, e.g. ``"acme-web=1.2.0"``."""
        return f"{self.package}={self.version}"

    @property
    def active(self) -> bool:
        """True until a person clears the rejection."""
        return self.cleared_at is None

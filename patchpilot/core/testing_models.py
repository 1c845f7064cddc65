"""Compatibility-test results: what installing a frozen plan would do, per host and per item.

Built by ``patchpilot.agents.testing.test_plan`` from one read-only ``apt-get -s`` simulation per
host;
core models only (no agent imports), so the graph, the CLI and the deployment can read them.

Vocabulary:

* :class:`Classification`: what the host's apt transaction does (``upgrades-only``,
  ``new-packages``, ``removals``, ``held``, ``downgrades``, ``conffile-prompt-possible``,
  ``services-restart``, ``reboot-needed``). A host's items are installed in one apt
  transaction, so every item of a host carries the whole transaction's classification.
* :class:`ItemStatus`: ``ready``, ``blocked`` (needs a person's approval first),
  ``already-current`` (a no-op), ``failed-prediction`` (apt refused, or the item is not part of
  the transaction) or ``unreachable``.
* :class:`RiskLevel`: ``low``, ``medium``, ``high``, each with human reasons.
"""

from __future__ import annotations

from enum import StrEnum
from typing import ClassVar, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from patchpilot.core.plan import PredictedEffects
from patchpilot.core.store.records import Outcome, OutcomeStatus

__all__ = [
    "Classification",
    "ExtraChange",
    "HostPrediction",
    "ItemPrediction",
    "ItemStatus",
    "Outcome",
    "OutcomeStatus",
    "RiskLevel",
    "TestReport",
]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Classification(StrEnum):
    """What a host's simulated apt transaction does."""

    UPGRADES_ONLY = "upgrades-only"
    """Only upgrades of installed, not held packages: nothing new, removed, held or downgraded."""
    NEW_PACKAGES = "new-packages"
    """Installs packages that are not installed yet (new dependencies)."""
    REMOVALS = "removals"
    """Removes (or purges) installed packages."""
    HELD = "held"
    """Changes a package that is on hold (``apt-mark hold``)."""
    DOWNGRADES = "downgrades"
    """Installs an older version (a planned rollback, or a dependency apt would downgrade)."""
    CONFFILE_PROMPT = "conffile-prompt-possible"
    """A changed package has a locally modified conffile (kept: ``--force-confold``)."""
    SERVICES_RESTART = "services-restart"
    """A changed package ships services (init scripts or units) that will restart."""
    REBOOT_NEEDED = "reboot-needed"
    """A touched package matches the reboot name rule (kernel, libc6, systemd, dbus)."""


class RiskLevel(StrEnum):
    """Predicted risk of deploying an item."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    @property
    def rank(self) -> int:
        """0 (low) to 2 (high), for ``max``."""
        return _RISK_RANK[self]


_RISK_RANK = {RiskLevel.LOW: 0, RiskLevel.MEDIUM: 1, RiskLevel.HIGH: 2}


class ItemStatus(StrEnum):
    """Whether an item may go on to deployment, per the prediction."""

    READY = "ready"
    """The simulation installs it as planned and policy does not stop it."""
    BLOCKED = "blocked"
    """Removals or held packages that policy allows only with a person's approval."""
    ALREADY_CURRENT = "already-current"
    """The host has the target version already (deploying it is a no-op)."""
    FAILED = "failed-prediction"
    """apt refused the simulation (unknown version, broken dependencies...) or the item is not
    part of the transaction (not installed, kept back)."""
    UNREACHABLE = "unreachable"
    """The host could not be reached (or is not in the inventory)."""


class ExtraChange(_Frozen):
    """A package apt would also change that is not a plan item of the host (a dependency)."""

    package: str
    action: Literal["upgrade", "install", "downgrade", "reinstall", "remove"]
    from_version: str | None = Field(description="installed version; None for a new install")
    to_version: str | None = Field(description="version after; None for a removal")


class ItemPrediction(_Frozen):
    """The prediction for one plan item."""

    host: str
    package: str
    from_version: str | None
    to_version: str
    status: ItemStatus
    classifications: tuple[Classification, ...] = Field(
        default=(), description="of the host's whole transaction (installed together)"
    )
    services: tuple[str, ...] = Field(default=(), description="services that will restart")
    risk: RiskLevel
    reasons: tuple[str, ...] = Field(description="why this status and risk, for people")
    blocked: bool = False
    needs_approval: bool = Field(
        default=False, description="blocked, and a person's approval would unblock it"
    )

    @property
    def key(self) -> tuple[str, str]:
        """``(host, package)``, as :attr:`patchpilot.core.plan.PlanItem.key`."""
        return (self.host, self.package)


class HostPrediction(_Frozen):
    """The simulation of one host's part of the plan and what it predicts."""

    host: str
    status: Literal["simulated", "failed", "unreachable"]
    error: str | None = Field(default=None, description="apt's or the transport's reason")
    requested: tuple[str, ...] = Field(default=(), description="the NAME=VERSION pins simulated")
    allow_downgrades: bool = False
    classifications: tuple[Classification, ...] = ()
    removals: tuple[str, ...] = ()
    held: tuple[str, ...] = ()
    new_packages: tuple[str, ...] = ()
    services: tuple[str, ...] = Field(default=(), description="every service that will restart")
    modified_conffiles: tuple[str, ...] = Field(default=(), description="conffile paths")
    reboot_packages: tuple[str, ...] = ()
    extra_changes: tuple[ExtraChange, ...] = ()
    warnings: tuple[str, ...] = ()
    items: tuple[ItemPrediction, ...]

    @property
    def effects(self) -> PredictedEffects:
        """The host's predicted removals, held changes and reboot (for approvals)."""
        return PredictedEffects(
            removals=bool(self.removals),
            held=bool(self.held),
            reboot=Classification.REBOOT_NEEDED in self.classifications,
        )

    @property
    def risk(self) -> RiskLevel:
        """The highest risk of its items (low when it has none)."""
        return max((i.risk for i in self.items), key=lambda r: r.rank, default=RiskLevel.LOW)


class TestReport(_Frozen):
    """The compatibility test of a frozen plan: one :class:`HostPrediction` per plan host."""

    __test__: ClassVar[bool] = False  # not a pytest test class

    plan_id: str
    content_hash: str = Field(description="the plan's content hash: which plan was tested")
    tested_at: AwareDatetime
    hosts: tuple[HostPrediction, ...] = Field(description="sorted by host name")

    @property
    def items(self) -> tuple[ItemPrediction, ...]:
        """Every item prediction, by host then package."""
        return tuple(i for h in self.hosts for i in h.items)

    def item(self, host: str, package: str) -> ItemPrediction:
        """The prediction of one plan item.

        Raises:
            KeyError: the plan has no such item.
        """
        for prediction in self.items:
            if prediction.key == (host, package):
                return prediction
        raise KeyError((host, package))

    def host(self, name: str) -> HostPrediction:
        """The prediction of one host.

        Raises:
            KeyError: the plan has no item on that host.
        """
        for prediction in self.hosts:
            if prediction.host == name:
                return prediction
        raise KeyError(name)

    @property
    def blocked(self) -> tuple[ItemPrediction, ...]:
        """Items that must not be deployed without a person's approval."""
        return tuple(i for i in self.items if i.blocked)

    @property
    def deployable(self) -> tuple[ItemPrediction, ...]:
        """Items predicted to install as planned with no approval needed (status ``ready``)."""
        return tuple(i for i in self.items if i.status is ItemStatus.READY)

    def predicted_effects(self) -> dict[str, PredictedEffects]:
        """Host -> predicted effects, for ``patchpilot.agents.planning.approval_required``.

        Hosts whose simulation failed or that were unreachable are left out (nothing known).
        """
        return {h.host: h.effects for h in self.hosts if h.status == "simulated"}

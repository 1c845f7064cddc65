"""Deployment agent: install a frozen plan host by host, verify, and roll back on failure.

Deterministic core only (no LLM, no graph, no CLI). Two entry points:

* :func:`deploy_host` patches one host through one transport and the package manager of its
  items' ecosystem (:class:`patchpilot.tools.packages.PackageManager`; on Debian apt/dpkg, whose
  steps are named below)::

      pre-checks      dpkg repair when dpkg is broken (PackageManager.repair), items already at the
                      target are skipped (idempotent), simulate the exact install (refuse held
                      packages, removals, requested packages that are not installed), record the
                      pre-state of every package the transaction touches, health checks before
                      (an unhealthy host is not patched)
      dry run         stops after the simulation and the pre-state, before any health check:
                      items are ``pending`` and their reason says what would be installed and
                      which health checks would run (none runs: a check may be a command);
                      nothing changed
      install         install_exact(NAME=VER..., allow_held=False, allow_removals=False,
                      allow_downgrades only when a plan item is itself a downgrade)
      verify          dpkg post-state == targets, restart the services the changed packages
                      ship (SimulationResult.restart_services) that were running before the
                      install (a stopped one, or a oneshot, stays stopped), health checks after
      self-heal       on any failure after the install started: dpkg repair if needed, reinstall
                      the recorded pre-state versions (PackageManager.rollback), restart, re-check
                      health; items are ``rolled_back`` (or ``failed`` with both reasons when the
                      rollback failed too, or when nothing had changed)
      reboot          RebootRequired after a good install: ``never`` -> the items' compliance is
                      ``installed-pending-reboot``; ``if-needed`` -> the same, and the note says
                      that patchpilot does not reboot hosts yet (not implemented: the lab hosts
                      cannot reboot)

  Every step writes an audit event (:mod:`patchpilot.core.audit`).

* :func:`deploy_ring` patches one ring: Ansible-style waves (``policy.schedule.waves``) as
  barriers, SSM rate control across the ring (:class:`patchpilot.agents.scheduling.RateController`:
  ramp 1,
  2, 4 ... up to ``max_concurrency``; once errors exceed ``max_errors`` nothing new starts,
  in-flight hosts finish). A host with a failed or rolled-back item is an error. Hosts never
  started are reported ``pending``. :func:`rejected_after_failure` lists the versions to reject
  in the baseline after a health-check failure.

Rollback limits: packages the transaction newly installed (no pre-state version) are left in
place (removals are never allowed here) and named in the reason; conffiles kept by
``--force-confold`` are untouched either way.
"""

from __future__ import annotations

import shlex
import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from typing import Any, Literal

import httpx
import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from patchpilot.agents.scheduling import RateController, waves
from patchpilot.core import versions
from patchpilot.core.audit import AuditLog
from patchpilot.core.errors import (
    CommandFailedError,
    ConfigError,
    FactParseError,
    InvalidVersionError,
    PatchpilotError,
    TransportError,
    UnsupportedPlatformError,
)
from patchpilot.core.failpoints import failpoint
from patchpilot.core.models import Ecosystem, Host
from patchpilot.core.plan import ComplianceState, PlanItem, compliance_state
from patchpilot.core.policy import Policy
from patchpilot.core.schedule import RebootPolicy
from patchpilot.core.settings import Settings
from patchpilot.tools.facts import RebootRequired, gather
from patchpilot.tools.health import (
    CheckResult,
    CommandCheck,
    HttpCheck,
    ProcessCheck,
    render_url,
    run_checks,
)
from patchpilot.tools.packages import (
    InstallResult,
    PackageManager,
    RepairResult,
    ServiceResult,
    SimulationResult,
    manager_for_items,
    restart_service,
    service_running,
)
from patchpilot.tools.transport import Transport, TransportFactory, open_transport

__all__ = [
    "AnyCheck",
    "DeployCause",
    "HostDeployment",
    "ItemDeployment",
    "ItemStatus",
    "RingHooks",
    "RingResult",
    "TransportFactory",
    "deploy_host",
    "deploy_ring",
    "describe_check",
    "rejected_after_failure",
    "roll_back_host",
]

log = structlog.get_logger(__name__)

AnyCheck = HttpCheck | CommandCheck | ProcessCheck
"""A health check (:data:`patchpilot.tools.health.HealthCheck` without the discriminator
annotation)."""


ItemStatus = Literal["installed", "failed", "rolled_back", "skipped", "pending"]
"""What happened to one plan item on one host."""

DeployCause = Literal[
    "at-target", "newer", "unhealthy-before", "dry-run", "not-started", "simulation", "blocked",
    "repair", "install", "post-state", "restart", "health", "transport", "analysis",
]  # fmt: skip
"""Why an item has its status (``None`` for a plain successful install)."""

_ERROR_STATUSES: frozenset[str] = frozenset({"failed", "rolled_back"})


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ItemDeployment(_Frozen):
    """The outcome of one plan item on one host."""

    host: str
    package: str
    from_version: str | None = Field(description="installed before the deployment (None: absent)")
    to_version: str = Field(description="the plan's target")
    status: ItemStatus
    reason: str | None = None
    cause: DeployCause | None = None
    compliance: ComplianceState


class HostDeployment(_Frozen):
    """What :func:`deploy_host` did on one host."""

    host: str
    dry_run: bool
    items: tuple[ItemDeployment, ...]
    pre_versions: dict[str, str | None] = Field(
        default_factory=dict, description="every package the change touches, before"
    )
    post_versions: dict[str, str | None] = Field(
        default_factory=dict, description="the same packages at the end (after any rollback)"
    )
    health_before: tuple[CheckResult, ...] = ()
    health_after: tuple[CheckResult, ...] = ()
    health_after_rollback: tuple[CheckResult, ...] = ()
    repair: RepairResult | None = None
    install: InstallResult | None = None
    rollback: InstallResult | None = None
    restarts: tuple[ServiceResult, ...] = ()
    reboot_required: bool = False
    reboot_note: str | None = None
    reason: str | None = Field(default=None, description="host-level summary of a problem")
    started_at: AwareDatetime
    duration_s: float = 0.0

    @property
    def status(self) -> ItemStatus:
        """Worst item status: failed > rolled_back > installed > pending > skipped."""
        statuses = {i.status for i in self.items}
        order: tuple[ItemStatus, ...] = ("failed", "rolled_back", "installed", "pending")
        for status in order:
            if status in statuses:
                return status
        return "skipped"

    @property
    def ok(self) -> bool:
        """No item failed or was rolled back (rate control counts the host as an error)."""
        return not any(i.status in _ERROR_STATUSES for i in self.items)


class RingResult(_Frozen):
    """What :func:`deploy_ring` did on one ring."""

    ring: str
    hosts: tuple[HostDeployment, ...] = Field(description="every host of the ring, ring order")
    waves: tuple[tuple[str, ...], ...] = Field(description="host names per wave")
    halted: bool = False
    reason: str | None = None
    errors: int = 0
    reject: list[tuple[str, str]] = Field(
        default_factory=list, description="(package, version) to reject in the baseline"
    )
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Not halted and no host had an error."""
        return not self.halted and all(h.ok for h in self.hosts)


# --------------------------------------------------------------------------- helpers


def _same(a: str | None, b: str, ecosystem: Ecosystem = Ecosystem.DEBIAN) -> bool:
    if a is None:
        return False
    try:
        return versions.compare(ecosystem, a, b) == 0
    except InvalidVersionError:
        return a == b


def _newer(a: str | None, b: str, ecosystem: Ecosystem = Ecosystem.DEBIAN) -> bool:
    if a is None:
        return False
    try:
        return versions.compare(ecosystem, a, b) > 0
    except InvalidVersionError:
        return False


def _is_downgrade(item: PlanItem) -> bool:
    """The plan itself asks for an older version (only then are downgrades allowed)."""
    return _newer(item.from_version, item.to_version, item.ecosystem)


def _failed_checks(results: Iterable[CheckResult]) -> str | None:
    bad = [f"{r.kind} {r.target}: {r.detail}" for r in results if not r.ok]
    return "; ".join(bad) if bad else None


def _check_dump(results: Iterable[CheckResult]) -> list[dict[str, object]]:
    return [{"kind": r.kind, "target": r.target, "ok": r.ok, "detail": r.detail} for r in results]


def describe_check(check: AnyCheck, host: Host) -> str:
    """What ``check`` would verify on ``host``, in words (for a dry run, which runs none)."""
    if isinstance(check, HttpCheck):
        try:
            url = render_url(check, host)
        except PatchpilotError:
            url = check.url_overrides.get(host.name, check.url)
        body = f" containing {check.body_contains!r}" if check.body_contains else ""
        return f"HTTP {url} answers {check.expect_status}{body}"
    if isinstance(check, CommandCheck):
        root = " (as root)" if check.sudo else ""
        return f"command `{shlex.join(check.argv)}`{root} exits {check.expect_exit}"
    return f"process {check.name} runs"


def _pins(pairs: Iterable[tuple[str, str]]) -> list[str]:
    return [f"{name}={version}" for name, version in pairs]


def _now() -> datetime:
    return datetime.now(UTC)


class _HostRun:
    """The state of one :func:`deploy_host` call (a helper; not thread-shared)."""

    def __init__(
        self,
        host: Host,
        items: Sequence[PlanItem],
        checks: Sequence[AnyCheck],
        *,
        dry_run: bool,
        reboot_policy: RebootPolicy,
        audit: AuditLog,
        http_client: httpx.Client | None,
        manager: PackageManager,
        approved: bool = False,
        resumed: bool = False,
    ) -> None:
        self.host = host
        self.pm = manager
        self.approved = approved
        self.resumed = resumed
        self.resumed_at_target: set[str] = set()
        self.items = list(items)
        self.checks = list(checks)
        self.dry_run = dry_run
        self.reboot_policy = reboot_policy
        self.audit = audit
        self.client = http_client
        self.log = structlog.get_logger(__name__).bind(agent="deployment", host=host.name)
        self.started_at = _now()
        self.started = time.monotonic()
        self.outcomes: dict[str, ItemDeployment] = {}
        self.current: dict[str, str | None] = {}
        self.fields: dict[str, Any] = {}

    # -- recording
    def event(self, action: str, *, package: str | None = None, **details: object) -> None:
        self.audit.record(action, host=self.host.name, package=package, details=details)

    def set_item(
        self,
        item: PlanItem,
        status: ItemStatus,
        *,
        reason: str | None,
        cause: DeployCause | None,
        installed: str | None,
        reboot_pending: bool = False,
    ) -> None:
        compliance = compliance_state(
            installed,
            item.to_version,
            failed=status in _ERROR_STATUSES,
            reboot_pending=reboot_pending and status == "installed",
        )
        self.outcomes[item.package] = ItemDeployment(
            host=self.host.name,
            package=item.package,
            from_version=self.current.get(item.package, item.from_version),
            to_version=item.to_version,
            status=status,
            reason=reason,
            cause=cause,
            compliance=compliance,
        )

    def set_all(
        self,
        items: Iterable[PlanItem],
        status: ItemStatus,
        *,
        reason: str,
        cause: DeployCause,
        post: Mapping[str, str | None] | None = None,
    ) -> None:
        for item in items:
            installed = (post or self.current).get(item.package, self.current.get(item.package))
            self.set_item(item, status, reason=reason, cause=cause, installed=installed)

    def result(self, *, reason: str | None = None) -> HostDeployment:
        duration = round(time.monotonic() - self.started, 3)
        outcome = HostDeployment(
            host=self.host.name,
            dry_run=self.dry_run,
            items=tuple(self.outcomes[i.package] for i in self.items if i.package in self.outcomes),
            reason=reason,
            started_at=self.started_at,
            duration_s=duration,
            **self.fields,
        )
        self.event(
            "deploy.finished",
            status=outcome.status,
            ok=outcome.ok,
            dry_run=self.dry_run,
            reason=reason,
            items={i.package: i.status for i in outcome.items},
            duration_s=duration,
        )
        self.log.info("deploy.host.end", status=outcome.status, ok=outcome.ok, duration_s=duration)
        return outcome

    # -- steps
    def health(self, transport: Transport, phase: str) -> tuple[CheckResult, ...]:
        results = tuple(run_checks(self.checks, transport, self.host, client=self.client))
        failed = _failed_checks(results)
        self.event(
            "health.failed" if failed else "health.passed",
            phase=phase,
            checks=_check_dump(results),
        )
        return results

    def same(self, a: str | None, b: str) -> bool:
        return _same(a, b, self.pm.ecosystem)

    def newer(self, a: str | None, b: str) -> bool:
        return _newer(a, b, self.pm.ecosystem)

    def repair_first(self, transport: Transport) -> str | None:
        """Repair the package database when it is broken; the reason when that failed."""
        repair = self.pm.repair(transport)
        if not repair.needed:
            return None
        self.fields["repair"] = repair
        db = self.pm.database
        self.event(
            f"{db}.repaired" if repair.ok else f"{db}.repair_failed",
            packages=list(repair.packages),
            journal_pending=repair.journal_pending,
            reason=repair.reason,
        )
        if repair.ok:
            return None
        return f"{self.pm.database} is in a broken state and repair failed: {repair.reason}"

    def still_to_do(self, transport: Transport) -> list[PlanItem]:
        """Read the installed versions; skip items at (or above) their target (idempotence)."""
        self.current = self.pm.installed_versions(transport, [i.package for i in self.items])
        todo: list[PlanItem] = []
        cause: DeployCause
        for item in self.items:
            now = self.current[item.package]
            if (
                self.resumed
                and self.same(now, item.to_version)
                and item.from_version is not None
                and not self.same(item.from_version, item.to_version)
            ):
                # An interrupted attempt got this far: verify it like a fresh install (health
                # checks, rollback to the plan's from_version on failure).
                self.resumed_at_target.add(item.package)
                self.current[item.package] = item.from_version
                self.event("deploy.resumed_at_target", package=item.package, installed=now)
                todo.append(item)
                continue
            if self.same(now, item.to_version):
                reason, cause = "already at the target", "at-target"
            elif not _is_downgrade(item) and self.newer(now, item.to_version):
                reason, cause = f"already newer ({now}) than the target", "newer"
            else:
                todo.append(item)
                continue
            self.set_item(item, "skipped", reason=reason, cause=cause, installed=now)
            self.event("deploy.skipped", package=item.package, installed=now, reason=reason)
        return todo

    def execute(self, transport: Transport) -> HostDeployment:
        """Run every step on an open transport (see the module docstring)."""
        names = [i.package for i in self.items]
        if not self.dry_run and (broken := self.repair_first(transport)) is not None:
            self.set_all(self.items, "failed", reason=broken, cause="repair")
            self.event("deploy.failed", reason=broken)
            return self.result(reason=broken)
        todo = self.still_to_do(transport)
        if not todo:
            return self.result()

        downgrade = any(_is_downgrade(i) for i in todo)
        only_upgrade = not downgrade and all(self.current[i.package] is not None for i in todo)
        pairs = [(i.package, i.to_version) for i in todo]
        try:
            sim = self.pm.simulate(
                transport, pairs, allow_downgrades=downgrade, only_upgrade=only_upgrade
            )
        except (CommandFailedError, FactParseError) as exc:
            reason = f"simulation failed: {exc}"
            self.set_all(todo, "failed", reason=reason, cause="simulation")
            self.event("deploy.failed", reason=reason, phase="simulation")
            return self.result(reason=reason)
        self.event(
            "deploy.simulated",
            requested=_pins(pairs),
            changes=[f"{c.name} {c.from_version} -> {c.to_version}" for c in sim.changes],
            removals=[r.name for r in sim.removals],
            held=list(sim.held),
            services=list(sim.restart_services),
            reboot_hint=sim.reboot_hint,
        )
        blocked = self.blocked(sim, todo)
        if blocked is not None:
            self.set_all(todo, "failed", reason=blocked, cause="blocked")
            self.event("deploy.failed", reason=blocked, phase="simulation")
            return self.result(reason=blocked)

        touched = list(
            dict.fromkeys([*names, *(c.name for c in sim.changes), *(r.name for r in sim.removals)])
        )
        pre = self.pm.installed_versions(transport, touched)
        pre.update({p: self.current[p] for p in self.resumed_at_target})
        self.fields["pre_versions"] = pre
        self.event("deploy.prestate", versions=pre)

        if self.dry_run:
            return self.dry_run_result(todo, pairs, pre)

        before = self.health(transport, "before")
        self.fields["health_before"] = before
        unhealthy = _failed_checks(before)
        if unhealthy is not None and not self.resumed_at_target:
            reason = f"host unhealthy before patching, not patched: {unhealthy}"
            self.set_all(todo, "skipped", reason=reason, cause="unhealthy-before")
            self.fields["post_versions"] = pre
            return self.result(reason=reason)

        return self.install(transport, todo, pairs, sim, touched, pre, downgrade, only_upgrade)

    def dry_run_result(
        self,
        todo: Sequence[PlanItem],
        pairs: Sequence[tuple[str, str]],
        pre: Mapping[str, str | None],
    ) -> HostDeployment:
        """A dry run ends here: no health check runs (one may be a command); say what would."""
        would = [describe_check(check, self.host) for check in self.checks]
        checks = (
            "; health checks not run (dry run), would check: " + ", ".join(would)
            if would
            else "; no health checks configured"
        )
        for item in todo:
            reason = (
                f"dry run: would install {item.to_version} "
                f"(installed: {self.current[item.package] or 'none'}){checks}"
            )
            self.set_item(
                item, "pending", reason=reason, cause="dry-run",
                installed=self.current[item.package],
            )  # fmt: skip
        self.event("health.not_run", dry_run=True, would_check=would)
        self.event("deploy.pending", requested=_pins(pairs), dry_run=True)
        self.fields["post_versions"] = dict(pre)
        return self.result()

    def blocked(self, sim: SimulationResult, todo: Sequence[PlanItem]) -> str | None:
        problems: list[str] = []
        if sim.held and not self.approved:
            problems.append(f"changes held package(s) {', '.join(sim.held)}")
        if sim.removals and not self.approved:
            problems.append(f"would remove {', '.join(r.name for r in sim.removals)}")
        skipped = [i.package for i in todo if i.package in sim.skipped_not_installed]
        if skipped:
            problems.append(f"not installed, so --only-upgrade skips {', '.join(skipped)}")
        if not problems:
            return None
        return "refused before install: " + "; ".join(problems) + " (needs an approved plan)"

    def install(
        self,
        transport: Transport,
        todo: Sequence[PlanItem],
        pairs: Sequence[tuple[str, str]],
        sim: SimulationResult,
        touched: Sequence[str],
        pre: Mapping[str, str | None],
        downgrade: bool,
        only_upgrade: bool,
    ) -> HostDeployment:
        services = self.running_before(transport, sim.restart_services)
        self.event("deploy.installing", requested=_pins(pairs), downgrades=downgrade)
        result = self.pm.install_exact(
            transport,
            pairs,
            allow_downgrades=downgrade,
            allow_held=self.approved,
            allow_removals=self.approved,
            only_upgrade=only_upgrade,
        )
        failpoint("deploy.after_install")
        self.fields["install"] = result
        failure: tuple[DeployCause, str] | None = None
        if not result.ok:
            failure = ("install", f"install failed ({result.failure}): {result.reason}")
        post = self.pm.installed_versions(transport, touched)
        if failure is None:
            wrong = [
                f"{i.package} is {post.get(i.package) or 'not installed'}, wanted {i.to_version}"
                for i in todo
                if not self.same(post.get(i.package), i.to_version)
            ]
            if wrong:
                failure = ("post-state", "post-state mismatch: " + "; ".join(wrong))
        if failure is None:
            for item in todo:
                self.event(
                    "deploy.installed",
                    package=item.package,
                    from_version=pre.get(item.package),
                    to_version=item.to_version,
                )
            restarts = self.restart(transport, services)
            bad = [r for r in restarts if not r.ok]
            if bad:
                detail = "; ".join(f"{r.service} exited {r.exit_code}" for r in bad)
                failure = ("restart", f"service restart failed: {detail}")
        if failure is None:
            after = self.health(transport, "after")
            self.fields["health_after"] = after
            unhealthy = _failed_checks(after)
            if unhealthy is not None:
                failure = ("health", f"health check failed after install: {unhealthy}")
        if failure is not None:
            self.event("deploy.failed", reason=failure[1], cause=failure[0])
            return self.roll_back(transport, todo, services, touched, pre, failure)

        self.fields["post_versions"] = post
        reboot_pending, note = self.reboot(transport)
        for item in todo:
            self.set_item(
                item, "installed", reason=note, cause=None, installed=post.get(item.package),
                reboot_pending=reboot_pending,
            )  # fmt: skip
        return self.result()

    def running_before(self, transport: Transport, services: Iterable[str]) -> tuple[str, ...]:
        """Of the services the changed packages ship, those to restart after the change: the
        ones running now, or whose state is unknown. A stopped service stays stopped (an
        administrator stopped it, or it is a oneshot such as ``apt-daily-upgrade``, which a
        restart would run: an unattended upgrade in the middle of a deployment)."""
        keep: list[str] = []
        for service in services:
            try:
                running = service_running(transport, service)
            except TransportError as exc:  # no answer in time: restart it, as before
                self.log.warning("service.status_unknown", service=service, error=str(exc))
                running = None
            if running is False:
                self.event("service.not_running", service=service)
            else:
                keep.append(service)
        return tuple(keep)

    def restart(self, transport: Transport, services: Iterable[str]) -> list[ServiceResult]:
        results: list[ServiceResult] = []
        for service in services:
            try:
                outcome = restart_service(transport, service)
            except TransportError as exc:  # a timeout: the service did not come back
                outcome = ServiceResult(
                    host=transport.name, service=service, ok=False, exit_code=-1,
                    output_tail=str(exc),
                )  # fmt: skip
            results.append(outcome)
            self.event(
                "service.restarted" if outcome.ok else "service.restart_failed",
                service=service,
                exit_code=outcome.exit_code,
            )
        self.fields["restarts"] = (*self.fields.get("restarts", ()), *results)
        return results

    def reboot(self, transport: Transport) -> tuple[bool, str | None]:
        try:
            status = gather(transport, RebootRequired())
        except PatchpilotError as exc:
            note = f"reboot status unknown: {exc}"
            self.log.warning("deploy.reboot.status_unknown", error=str(exc))
            self.fields["reboot_note"] = note
            return False, None
        if not status.required:
            return False, None
        if self.reboot_policy is RebootPolicy.IF_NEEDED:
            note = (
                "reboot required; policy if-needed, but automatic reboots are not implemented: "
                "reboot the host inside the window"
            )
        else:
            note = "reboot required; policy never: installed, pending reboot"
        self.fields["reboot_required"] = True
        self.fields["reboot_note"] = note
        self.event(
            "reboot.pending", policy=self.reboot_policy.value, packages=list(status.packages)
        )
        return True, note

    def roll_back(
        self,
        transport: Transport,
        todo: Sequence[PlanItem],
        services: Iterable[str],
        touched: Sequence[str],
        pre: Mapping[str, str | None],
        failure: tuple[DeployCause, str],
    ) -> HostDeployment:
        cause, reason = failure
        self.event("rollback.started", reason=reason, to=dict(pre))
        repair = self.pm.repair(transport)
        if repair.needed:
            self.fields["repair"] = repair
            db = self.pm.database
            self.event(
                f"{db}.repaired" if repair.ok else f"{db}.repair_failed",
                packages=list(repair.packages),
                reason=repair.reason,
            )
        now = self.pm.installed_versions(transport, touched)
        restore = [(p, v) for p, v in pre.items() if v is not None and not self.same(now.get(p), v)]
        left = [p for p, v in pre.items() if v is None and now.get(p) is not None]
        rollback_error: str | None = None
        if restore:
            rolled = self.pm.rollback(transport, restore)
            self.fields["rollback"] = rolled
            if not rolled.ok:
                rollback_error = f"rollback failed ({rolled.failure}): {rolled.reason}"
            else:
                self.restart(transport, services)
        after = self.health(transport, "after-rollback")
        self.fields["health_after_rollback"] = after
        unhealthy = _failed_checks(after)
        if rollback_error is None and unhealthy is not None:
            rollback_error = f"still unhealthy after rollback: {unhealthy}"
        post = self.pm.installed_versions(transport, touched)
        self.fields["post_versions"] = post
        leftover = f"; left installed (removals are not allowed): {', '.join(left)}" if left else ""
        status: ItemStatus
        if rollback_error is not None:
            status = "failed"
            full = f"{reason}; {rollback_error}{leftover}"
            self.event("rollback.failed", reason=full)
        elif restore:
            status = "rolled_back"
            full = f"{reason}; rolled back to {', '.join(_pins(restore))}{leftover}"
            self.event("rollback.done", restored=_pins(restore), reason=reason)
        else:
            status = "failed"
            full = f"{reason}; nothing to roll back (host unchanged){leftover}"
            self.event("rollback.done", restored=[], reason=reason)
        self.set_all(todo, status, reason=full, cause=cause, post=post)
        return self.result(reason=full)


def deploy_host(
    host: Host,
    items: Sequence[PlanItem],
    settings: Settings,
    checks: Sequence[AnyCheck],
    *,
    dry_run: bool,
    reboot_policy: RebootPolicy,
    audit: AuditLog,
    transport_factory: TransportFactory = open_transport,
    http_client: httpx.Client | None = None,
    approved: bool = False,
    resumed: bool = False,
) -> HostDeployment:
    """Deploy one host's plan items (see the module docstring for the steps).

    Args:
        host: the inventory host.
        items: its plan items (every ``item.host`` must be ``host.name``, one per package).
        settings: patchpilot settings (transport).
        checks: health checks run before, after the install and after a rollback.
        dry_run: simulate and pre-check only; items end ``pending``, nothing changes.
        reboot_policy: ``never`` records ``installed-pending-reboot`` when the host wants a
            reboot; ``if-needed`` does the same and says so in ``reboot_note``: automatic
            reboots are **not implemented** (the lab hosts cannot reboot).
        audit: the audit log (bind it to the run id).
        transport_factory: opens the host's transport (tests pass a scripted one).
        http_client: an ``httpx.Client`` reused by HTTP checks.
        approved: a person approved this host's predicted removals and held-package changes:
            apt may change held packages and remove packages (else both are refused).
        resumed: an earlier attempt on this host was interrupted (the orchestrator died): items
            already at their target but whose plan ``from_version`` differs are verified like a
            fresh install (health checks; rollback to ``from_version`` on failure) instead of
            being skipped as no-ops.

    Returns:
        A :class:`HostDeployment`; it never raises for host problems: an unreachable host
        (``TransportError``) makes every item ``failed`` with cause ``transport``.

    Raises:
        ConfigError: an item belongs to another host, or a package is listed twice.
        AuditError: the audit log cannot be written (nothing is done without a record).
    """
    packages = [i.package for i in items]
    if len(set(packages)) != len(packages):
        raise ConfigError(f"{host.name}: a package is listed twice in {packages}")
    strangers = sorted({i.host for i in items} - {host.name})
    if strangers:
        raise ConfigError(f"deploy_host({host.name!r}) got items of {strangers}")
    try:
        manager = manager_for_items(host.name, (i.ecosystem for i in items))
    except UnsupportedPlatformError as exc:
        reason = f"host error: {exc}"
        audit.record("deploy.failed", host=host.name, details={"reason": reason})
        return _every_item(
            host, items, status="failed", cause="simulation", reason=reason,
            dry_run=dry_run, failed=True,
        )  # fmt: skip
    run = _HostRun(
        host,
        items,
        checks,
        dry_run=dry_run,
        reboot_policy=reboot_policy,
        audit=audit,
        http_client=http_client,
        manager=manager,
        approved=approved,
        resumed=resumed,
    )
    run.log.info("deploy.host.start", items=_pins((i.package, i.to_version) for i in items))
    run.event(
        "deploy.started",
        dry_run=dry_run,
        requested=_pins((i.package, i.to_version) for i in items),
        reboot_policy=reboot_policy.value,
        approved=approved,
        resumed=resumed,
    )
    if not items:
        return run.result(reason="nothing to deploy")
    try:
        with transport_factory(host, settings) as transport:
            return run.execute(transport)
    except TransportError as exc:
        reason = f"host error: {exc}"
        run.log.warning("deploy.host.error", error=str(exc), error_type=type(exc).__name__)
        pending = [i for i in items if i.package not in run.outcomes]
        run.set_all(pending, "failed", reason=reason, cause="transport")
        run.event("deploy.failed", reason=reason, cause="transport")
        return run.result(reason=reason)


def roll_back_host(
    host: Host,
    items: Sequence[PlanItem],
    deployment: HostDeployment,
    settings: Settings,
    checks: Sequence[AnyCheck],
    *,
    reason: str,
    audit: AuditLog,
    cause: DeployCause = "analysis",
    transport_factory: TransportFactory = open_transport,
) -> HostDeployment:
    """Roll back a host that :func:`deploy_host` patched, after the fact (post-patch analysis).

    The same self-heal as a failed install (``_HostRun.roll_back``): dpkg repair if needed,
    reinstall the recorded pre-state versions (``deployment.pre_versions``), restart the
    services the install restarted, health checks after the rollback. The items ``deployment``
    installed end ``rolled_back`` (``failed`` when the rollback failed) with ``reason`` first
    and ``cause``; the other items keep their outcome. Never raises for host problems (a
    transport error makes the items ``failed``).
    """
    installed = {i.package for i in deployment.items if i.status == "installed"}
    todo = [i for i in items if i.package in installed]
    if not todo:
        return deployment
    pre = dict(deployment.pre_versions)
    services = tuple(dict.fromkeys(r.service for r in deployment.restarts))
    manager = manager_for_items(host.name, (i.ecosystem for i in todo))
    run = _HostRun(
        host, todo, checks, dry_run=False, reboot_policy=RebootPolicy.NEVER, audit=audit,
        http_client=None, manager=manager,
    )  # fmt: skip
    run.current = {i.package: pre.get(i.package, i.from_version) for i in todo}
    run.event("rollback.requested", reason=reason, cause=cause)
    try:
        with transport_factory(host, settings) as transport:
            rolled = run.roll_back(transport, todo, services, list(pre), pre, (cause, reason))
    except TransportError as exc:
        why = f"{reason}; rollback failed: host error: {exc}"
        run.set_all(todo, "failed", reason=why, cause=cause)
        run.event("rollback.failed", reason=why)
        rolled = run.result(reason=why)
    changed = {i.package: i for i in rolled.items}
    return deployment.model_copy(
        update={
            "items": tuple(changed.get(i.package, i) for i in deployment.items),
            "post_versions": {**deployment.post_versions, **rolled.post_versions},
            "health_after_rollback": rolled.health_after_rollback,
            "rollback": rolled.rollback,
            "restarts": (*deployment.restarts, *rolled.restarts),
            "reason": rolled.reason,
            "duration_s": round(deployment.duration_s + rolled.duration_s, 3),
        }
    )


# --------------------------------------------------------------------------- rings


def rejected_after_failure(deployments: Iterable[HostDeployment]) -> list[tuple[str, str]]:
    """``(package, version)`` pairs to reject in the baseline until a person clears them.

    A version is rejected when its item failed its health check after the install (cause
    ``health``), whether the rollback succeeded (``rolled_back``) or not (``failed``). When a
    host installed several items at once they are all rejected: the failure cannot be pinned
    on one of them. Sorted, without duplicates.
    """
    found = {
        (item.package, item.to_version)
        for deployment in deployments
        for item in deployment.items
        if item.cause == "health" and item.status in _ERROR_STATUSES
    }
    return sorted(found)


def _every_item(
    host: Host,
    items: Sequence[PlanItem],
    *,
    status: ItemStatus,
    cause: DeployCause,
    reason: str,
    dry_run: bool,
    failed: bool,
) -> HostDeployment:
    """A host whose items all ended the same way before anything was installed."""
    return HostDeployment(
        host=host.name,
        dry_run=dry_run,
        items=tuple(
            ItemDeployment(
                host=host.name,
                package=i.package,
                from_version=i.from_version,
                to_version=i.to_version,
                status=status,
                reason=reason,
                cause=cause,
                compliance=ComplianceState.FAILED
                if failed
                else compliance_state(i.from_version, i.to_version),
            )
            for i in items
        ),
        reason=reason,
        started_at=_now(),
    )


def _not_started(
    host: Host, items: Sequence[PlanItem], reason: str, audit: AuditLog, dry_run: bool
) -> HostDeployment:
    audit.record("deploy.not_started", host=host.name, details={"reason": reason})
    return _every_item(
        host,
        items,
        status="pending",
        cause="not-started",
        reason=reason,
        dry_run=dry_run,
        failed=False,
    )


def _crashed(host: Host, items: Sequence[PlanItem], exc: BaseException) -> HostDeployment:
    reason = f"deployment crashed: {type(exc).__name__}: {exc}"
    return _every_item(
        host, items, status="failed", cause="transport", reason=reason, dry_run=False, failed=True
    )


class RingHooks:
    """What the caller of :func:`deploy_ring` decides and records, as one object.

    Subclass it and override what you need; the defaults run no health check, never refuse a
    start, approve nothing and record nothing. :func:`deploy_ring` calls :meth:`checks_for`
    and :meth:`approved` from worker threads, the others from its own (the caller's) thread.
    """

    def checks_for(self, host: Host) -> Sequence[AnyCheck]:
        """The health checks of ``host`` (run before, after the install, after a rollback)."""
        return ()

    def may_start(self) -> str | None:
        """Asked before every dispatch; a reason (e.g. the maintenance window's cutoff passed)
        halts the ring: nothing new starts, in-flight hosts finish."""
        return None

    def approved(self, host: Host) -> bool:
        """Whether a person approved the host's predicted removals / held-package changes."""
        return False

    def on_host_start(self, host: Host) -> None:
        """Called just before ``host`` is dispatched (e.g. to record it is in progress)."""

    def on_host_done(self, deployment: HostDeployment) -> None:
        """Called as each host finishes (e.g. to checkpoint it)."""


class _CallbackHooks(RingHooks):
    """:class:`RingHooks` from :func:`deploy_ring`'s older keyword arguments."""

    def __init__(
        self,
        checks_for: Callable[[Host], Sequence[AnyCheck]] | None,
        on_host_done: Callable[[HostDeployment], None] | None,
        on_host_start: Callable[[Host], None] | None,
        may_start: Callable[[], str | None] | None,
        approved: Callable[[Host], bool] | None,
    ) -> None:
        self._checks_for = checks_for
        self._on_host_done = on_host_done
        self._on_host_start = on_host_start
        self._may_start = may_start
        self._approved = approved

    def checks_for(self, host: Host) -> Sequence[AnyCheck]:
        return self._checks_for(host) if self._checks_for is not None else ()

    def may_start(self) -> str | None:
        return self._may_start() if self._may_start is not None else None

    def approved(self, host: Host) -> bool:
        return self._approved(host) if self._approved is not None else False

    def on_host_start(self, host: Host) -> None:
        if self._on_host_start is not None:
            self._on_host_start(host)

    def on_host_done(self, deployment: HostDeployment) -> None:
        if self._on_host_done is not None:
            self._on_host_done(deployment)


def deploy_ring(
    ring_hosts: Sequence[Host],
    items_by_host: Mapping[str, Sequence[PlanItem]],
    settings: Settings,
    policy: Policy,
    checks_for: Callable[[Host], Sequence[AnyCheck]] | None = None,
    *,
    dry_run: bool,
    audit: AuditLog,
    on_host_done: Callable[[HostDeployment], None] | None = None,
    ring: str = "ring",
    transport_factory: TransportFactory = open_transport,
    on_host_start: Callable[[Host], None] | None = None,
    may_start: Callable[[], str | None] | None = None,
    approved: Callable[[Host], bool] | None = None,
    resumed: Collection[str] = (),
    done: Mapping[str, HostDeployment] | None = None,
    hooks: RingHooks | None = None,
) -> RingResult:
    """Deploy one ring: waves as barriers, SSM rate control across the ring.

    The ring is split with :func:`patchpilot.agents.scheduling.waves` (``policy.schedule.waves``);
    one
    :class:`~patchpilot.agents.scheduling.RateController` (``len(ring_hosts)``,
    ``policy.schedule.rate.max_concurrency``, ``policy.schedule.rate.max_errors``) spans every
    wave, so its ramp (1, 2, 4 ... up to the cap) and its error count carry over. A wave starts
    only when the previous one has finished. A host is an error when an item ``failed`` or was
    ``rolled_back``; when errors exceed ``max_errors`` nothing new is dispatched, in-flight
    hosts finish, and the ring is ``halted``. Hosts never started are ``pending``
    (cause ``not-started``). Hosts without items are reported ``skipped`` and not dispatched.

    Args:
        ring_hosts: the ring's hosts, in deployment order.
        items_by_host: plan items per host name.
        settings: patchpilot settings.
        policy: the policy (schedule waves, rate and reboot).
        hooks: the caller's decisions and records (:class:`RingHooks`: health checks, may a
            host start, approvals, host started, host done). Prefer it to the five callbacks
            ``checks_for``, ``on_host_done``, ``on_host_start``, ``may_start``, ``approved``
            (kept for compatibility, each as the hook of the same name); give one or the other.
        checks_for: the health checks of a host.
        dry_run: see :func:`deploy_host`.
        audit: the audit log.
        on_host_done: called (in the caller's thread) as each host finishes, e.g. to checkpoint.
        ring: the ring's name (for the result and the audit log).
        transport_factory: see :func:`deploy_host`.
        on_host_start: called (in the caller's thread) just before a host is dispatched, e.g. to
            record that it is in progress.
        may_start: asked before every dispatch; a reason (e.g. the maintenance window's cutoff
            passed) halts the ring: nothing new starts, in-flight hosts finish.
        approved: whether a person approved a host's predicted removals / held changes
            (``deploy_host(approved=...)``); default: nobody did.
        resumed: hosts whose earlier attempt was interrupted (``deploy_host(resumed=True)``).
        done: results of hosts that finished in an earlier attempt of this run: reused as they
            are, never deployed again (they still count for rate control).

    A health-check failure after a patch halts the ring whatever ``max_errors`` allows: the
    version is bad, more hosts must not get it.

    Returns:
        A :class:`RingResult` with every host in ring order and the versions to reject.
    """
    callbacks = (checks_for, on_host_done, on_host_start, may_start, approved)
    if hooks is None:
        hooks = _CallbackHooks(*callbacks)
    elif any(c is not None for c in callbacks):
        raise ConfigError("deploy_ring: give hooks or the callback arguments, not both")
    started = time.monotonic()
    rlog = structlog.get_logger(__name__).bind(agent="deployment", ring=ring)
    schedule = policy.schedule
    batches = waves(list(ring_hosts), schedule.waves) if ring_hosts else []
    active = [h for h in ring_hosts if items_by_host.get(h.name)]
    controller = RateController(
        len(active), schedule.rate.max_concurrency, schedule.rate.max_errors
    )
    audit.record(
        "ring.started",
        details={
            "ring": ring,
            "dry_run": dry_run,
            "waves": [[h.name for h in b] for b in batches],
            "max_concurrency": schedule.rate.max_concurrency,
            "max_errors": schedule.rate.max_errors,
        },
    )
    results: dict[str, HostDeployment] = {}

    def finish(deployment: HostDeployment) -> None:
        results[deployment.host] = deployment
        hooks.on_host_done(deployment)

    earlier = dict(done or {})

    def work(host: Host) -> HostDeployment:
        if host.name in earlier:
            rlog.info("deploy.host.done_earlier", host=host.name, status=earlier[host.name].status)
            return earlier[host.name]
        return deploy_host(
            host,
            items_by_host.get(host.name, ()),
            settings,
            hooks.checks_for(host),
            dry_run=dry_run,
            reboot_policy=schedule.reboot,
            audit=audit,
            transport_factory=transport_factory,
            approved=hooks.approved(host),
            resumed=host.name in resumed,
        )

    def start(host: Host) -> str | None:
        if host.name not in earlier:
            reason = hooks.may_start()
            if reason is not None:
                return reason
            hooks.on_host_start(host)
        return None

    def health_halt(deployment: HostDeployment) -> str | None:
        bad = rejected_after_failure([deployment])
        if not bad:
            return None
        return f"health check failed on {deployment.host} after installing {', '.join(_pins(bad))}"

    _run_waves(
        batches,
        controller,
        lambda host: bool(items_by_host.get(host.name)),
        work,
        finish,
        idle=lambda host: _idle(host, audit, dry_run),
        crashed=lambda host, exc: _crashed(host, items_by_host.get(host.name, ()), exc),
        on_wave_done=lambda n: audit.record("ring.wave_done", details={"ring": ring, "wave": n}),
        ring=ring,
        start=start,
        halt_on=health_halt,
    )
    halted = controller.halted
    reason = controller.halt_reason
    for host in ring_hosts:
        if host.name not in results:
            items = items_by_host.get(host.name, ())
            finish(_not_started(host, items, f"not started: {reason}", audit, dry_run))
    ordered = tuple(results[h.name] for h in ring_hosts)
    reject = rejected_after_failure(ordered)
    errors = sum(1 for d in ordered if not d.ok)
    if halted:
        failed_hosts = [d.host for d in ordered if not d.ok]
        audit.record(
            "ring.halted",
            details={"ring": ring, "reason": reason, "failed_hosts": failed_hosts},
        )
        rlog.warning("deploy.ring.halted", reason=reason, failed_hosts=failed_hosts)
    for package, version in reject:
        audit.record(
            "baseline.reject_proposed",
            package=package,
            details={"ring": ring, "version": version, "reason": "failed its health check"},
        )
    duration = round(time.monotonic() - started, 3)
    audit.record(
        "ring.done",
        details={
            "ring": ring,
            "halted": halted,
            "errors": errors,
            "statuses": {d.host: d.status for d in ordered},
            "duration_s": duration,
        },
    )
    return RingResult(
        ring=ring,
        hosts=ordered,
        waves=tuple(tuple(h.name for h in b) for b in batches),
        halted=halted,
        reason=reason,
        errors=errors,
        reject=reject,
        duration_s=duration,
    )


def _run_waves(
    batches: Sequence[Sequence[Host]],
    controller: RateController,
    has_items: Callable[[Host], bool],
    work: Callable[[Host], HostDeployment],
    finish: Callable[[HostDeployment], None],
    *,
    idle: Callable[[Host], HostDeployment],
    crashed: Callable[[Host, BaseException], HostDeployment],
    on_wave_done: Callable[[int], object],
    ring: str,
    start: Callable[[Host], str | None] = lambda host: None,
    halt_on: Callable[[HostDeployment], str | None] = lambda deployment: None,
) -> None:
    """Dispatch waves one after the other under ``controller`` (see :func:`deploy_ring`).

    Dispatching and completion accounting happen in this thread only, so a failure is recorded
    (and the controller halted) before any other host can be started.
    """
    rlog = structlog.get_logger(__name__).bind(agent="deployment", ring=ring)
    with ThreadPoolExecutor(
        max_workers=controller.concurrency_cap, thread_name_prefix=f"deploy-{ring}"
    ) as pool:
        for number, batch in enumerate(batches, start=1):
            if controller.halted:
                break
            rlog.info("deploy.wave.start", wave=number, hosts=[h.name for h in batch])
            queue = deque(batch)
            running: dict[Future[HostDeployment], Host] = {}
            while queue or running:
                while queue and not has_items(queue[0]):
                    finish(idle(queue.popleft()))  # nothing to do: not dispatched, no error
                while queue and controller.can_dispatch():
                    refused = start(queue[0])
                    if refused is not None:
                        controller.halt(refused)
                        break
                    if not controller.try_dispatch(queue[0].name):
                        break
                    host = queue.popleft()
                    running[pool.submit(work, host)] = host
                if not running:
                    break  # halted: the rest of the wave never starts
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    host = running.pop(future)
                    try:
                        deployment = future.result()
                    except Exception as exc:  # a bug must not leave the ring half-accounted
                        rlog.exception("deploy.host.crashed", host=host.name)
                        deployment = crashed(host, exc)
                    if (why := halt_on(deployment)) is not None:
                        controller.halt(why)  # first, so the ring says why, not just "errors"
                    controller.finished(host.name, ok=deployment.ok)
                    finish(deployment)
            on_wave_done(number)


def _idle(host: Host, audit: AuditLog, dry_run: bool) -> HostDeployment:
    audit.record("deploy.skipped", host=host.name, details={"reason": "nothing to deploy"})
    return HostDeployment(
        host=host.name, dry_run=dry_run, items=(), reason="nothing to deploy", started_at=_now()
    )

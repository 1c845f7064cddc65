"""Compatibility testing: predict what a frozen plan will do on every host before anything changes.

Deterministic core (no LLM): for every host of the plan, one transport and one read-only
simulation through the host's package manager (:meth:`PackageManager.simulate
<patchpilot.tools.packages.base.PackageManager.simulate>`, chosen by the items' ecosystem; on
Debian a simulated install plus the services and modified conffiles of the changed packages)
of exactly that host's items, then a pure
classification (:func:`classify_host`) and a risk per item. Best effort per host: an unreachable
host or a simulation apt refuses marks that host's items and never stops the others; bounded
concurrency (``settings.concurrency``).

Decisions (documented contract):

* **One transaction per host.** A host's items are installed together, so every item of a host
  carries the whole transaction's classification (a removal pulled in by one item blocks all
  items of that host: they cannot be installed without it).
* **Simulation flags.** ``--allow-downgrades`` only when an item's ``to_version`` is older than
  its ``from_version`` (a planned rollback); ``--only-upgrade`` unless an item is a new install
  (``from_version`` None). A downgrade apt would make that is not a planned item is reported
  (``downgrades``, medium risk).
* **Policy.** ``policy.approvals.on_removals`` / ``on_held`` read as "allowed only with a
  person's approval": when true, an item whose transaction removes packages or changes a held
  package is ``blocked`` with ``needs_approval=True``; when false, policy allows it (not blocked,
  the risk stays high). Nothing here approves anything; ``approval_required(plan, hosts, policy,
  report.predicted_effects())`` gives the same reasons for the approval checkpoint.
* **Risk.** ``high``: removals, held packages, a reboot hint, a recorded failure or rollback of
  the same package version on any host, or no prediction at all (simulation failed, host
  unreachable). ``medium``: new packages, a possible conffile prompt, restarts of services
  shipped by packages other than the plan items (dependencies), unplanned downgrades. ``low``:
  otherwise. Restarting the item's *own* services is the normal effect of updating a daemon
  (health checks verify it): it is classified (``services-restart``) and explained, but does not
  raise the risk by itself.
* **History.** :class:`OutcomeHistory` is queried once per distinct ``(package, to_version)``
  (:class:`patchpilot.core.store.Store` implements it); a failing query is a warning, not an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, Literal, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.errors import (
    CommandFailedError,
    InvalidVersionError,
    PatchpilotError,
    TransportError,
)
from patchpilot.core.models import Host, utcnow
from patchpilot.core.plan import PatchPlan, PlanItem
from patchpilot.core.policy import Policy
from patchpilot.core.settings import Settings
from patchpilot.core.testing_models import (
    Classification,
    ExtraChange,
    HostPrediction,
    ItemPrediction,
    ItemStatus,
    Outcome,
    OutcomeStatus,
    RiskLevel,
    TestReport,
)
from patchpilot.core.versions import compare
from patchpilot.tools.packages import PackageChange, SimulationResult, manager_for_items
from patchpilot.tools.transport import TransportFactory, open_transport

__all__ = [
    "CompatibilityJudgment",
    "ItemJudgment",
    "OutcomeHistory",
    "classify_host",
    "failed_host",
    "is_downgrade",
    "judge_compatibility",
    "load_history",
    "recall_similar",
    "simulate_host",
    "test_plan",
]

# Bind per call, not at import: a logger bound before configure_logging() ignores its level.
log = structlog.get_logger(__name__)

History = Mapping[tuple[str, str], Sequence[Outcome]]
"""``(package, version)`` -> recorded outcomes of that exact version (any host)."""


class OutcomeHistory(Protocol):
    """Recorded deployment outcomes (``Store.outcomes`` is the plain store query)."""

    def outcomes(self, package: str, version: str) -> list[Outcome]:
        """Every recorded outcome of ``package`` at exactly ``version``, on any host."""
        ...


def is_downgrade(item: PlanItem) -> bool:
    """Whether the item installs an older version than the installed one (a rollback).

    Raises:
        InvalidVersionError: a version is not valid in the item's ecosystem.
    """
    return item.from_version is not None and (
        compare(item.ecosystem, item.to_version, item.from_version) < 0
    )


def _base(name: str) -> str:
    return name.partition(":")[0]


def _first_error_line(exc: CommandFailedError) -> str:
    """apt's own reason (its ``E:`` lines), else the exception text."""
    lines = [ln.strip() for ln in exc.stderr.splitlines() if ln.strip().startswith("E:")]
    return "; ".join(lines) if lines else str(exc)


# --------------------------------------------------------------------------- history


def load_history(
    items: Iterable[PlanItem], history: OutcomeHistory | None
) -> tuple[dict[tuple[str, str], tuple[Outcome, ...]], tuple[str, ...]]:
    """Query ``history`` once per distinct ``(package, to_version)`` of ``items``.

    Returns:
        The outcomes by ``(package, version)`` and warnings for queries that failed.
    """
    found: dict[tuple[str, str], tuple[Outcome, ...]] = {}
    warnings: list[str] = []
    if history is None:
        return found, ()
    for key in sorted({(i.package, i.to_version) for i in items}):
        try:
            found[key] = tuple(history.outcomes(*key))
        except Exception as exc:  # history is advisory: never fail the test for it
            warnings.append(f"outcome history of {key[0]} {key[1]} unavailable: {exc}")
    return found, tuple(warnings)


def _history_reasons(item: PlanItem, history: History | None) -> tuple[list[str], list[str]]:
    """(high-risk reasons, informational reasons) from recorded outcomes of the item's version."""
    outcomes = (history or {}).get((item.package, item.to_version), ())
    bad = [o for o in outcomes if o.status in (OutcomeStatus.FAILURE, OutcomeStatus.ROLLBACK)]
    high = []
    for o in bad:
        verb = "failed" if o.status is OutcomeStatus.FAILURE else "was rolled back"
        where = f"{o.host} (this host)" if o.host == item.host else o.host
        text = (
            f"{item.package} {item.to_version} {verb} on {where} in run {o.run_id} "
            f"({o.at.isoformat(timespec='seconds')})"
        )
        high.append(text + (f": {o.error}" if o.error else ""))
    good = sorted({o.host for o in outcomes if o.status is OutcomeStatus.SUCCESS})
    info = (
        [f"{item.package} {item.to_version} was installed successfully on {', '.join(good)}"]
        if good
        else []
    )
    return high, info


# --------------------------------------------------------------------------- classification


def _extra_changes(items: Sequence[PlanItem], result: SimulationResult) -> list[ExtraChange]:
    names = {i.package for i in items}
    actions: list[tuple[Literal["upgrade", "install", "downgrade", "reinstall"], PackageChange]]
    actions = [
        *(("upgrade", c) for c in result.upgrades),
        *(("install", c) for c in result.installs),
        *(("downgrade", c) for c in result.downgrades),
        *(("reinstall", c) for c in result.reinstalls),
    ]
    extra = [
        ExtraChange(package=c.name, action=a, from_version=c.from_version, to_version=c.to_version)
        for a, c in actions
        if _base(c.name) not in names
    ]
    extra += [
        ExtraChange(package=r.name, action="remove", from_version=r.version, to_version=None)
        for r in result.removals
    ]
    return sorted(extra, key=lambda e: (e.package, e.action))


def _host_classes(
    items: Sequence[PlanItem], result: SimulationResult
) -> tuple[Classification, ...]:
    classes: list[Classification] = []
    if result.installs:
        classes.append(Classification.NEW_PACKAGES)
    if result.removals:
        classes.append(Classification.REMOVALS)
    if result.held:
        classes.append(Classification.HELD)
    if result.downgrades:
        classes.append(Classification.DOWNGRADES)
    if not classes and (result.upgrades or result.reinstalls):
        classes.insert(0, Classification.UPGRADES_ONLY)
    if result.modified_conffiles:
        classes.append(Classification.CONFFILE_PROMPT)
    if result.restart_services:
        classes.append(Classification.SERVICES_RESTART)
    if result.reboot_hint:
        classes.append(Classification.REBOOT_NEEDED)
    return tuple(classes)


def _services_of(result: SimulationResult, names: Iterable[str]) -> tuple[str, ...]:
    wanted = set(names)
    found = (
        s
        for package, services in (result.services or {}).items()
        if _base(package) in wanted
        for s in services or ()
    )
    return tuple(dict.fromkeys(found))


def _effect_reasons(
    items: Sequence[PlanItem],
    result: SimulationResult,
    item: PlanItem,
    extra: Sequence[ExtraChange],
) -> tuple[list[str], list[str], list[str]]:
    """(high, medium, low) reasons from the host's transaction, seen from ``item``."""
    high: list[str] = []
    medium: list[str] = []
    low: list[str] = []
    planned_downgrades = {i.package for i in items if is_downgrade(i)}
    if result.removals:
        removed = ", ".join(f"{r.name} {r.version or ''}".strip() for r in result.removals)
        high.append(f"the host's transaction removes {removed}")
    if result.held:
        own = item.package in {_base(n) for n in result.held}
        held = ", ".join(result.held)
        high.append(
            f"{item.package} is held (apt-mark hold)"
            if own and len(result.held) == 1
            else f"the host's transaction changes held package(s) {held}"
        )
    if result.reboot_hint:
        high.append(f"a reboot is likely: it touches {', '.join(result.reboot_packages)}")
    if result.installs:
        new = ", ".join(c.name for c in result.installs)
        medium.append(f"installs {len(result.installs)} new package(s): {new}")
    unplanned = [c for c in result.downgrades if _base(c.name) not in planned_downgrades]
    if unplanned:
        medium.append(
            "apt would also downgrade "
            + ", ".join(f"{c.name} {c.from_version} -> {c.to_version}" for c in unplanned)
        )
    if item.package in planned_downgrades:
        low.append(f"planned downgrade {item.from_version} -> {item.to_version} (a rollback)")
    if result.modified_conffiles:
        paths = ", ".join(f"{c.path} ({c.package})" for c in result.modified_conffiles)
        medium.append(
            f"locally modified conffile(s) {paths}: dpkg may prompt (the local file is kept)"
        )
    plan_names = {i.package for i in items}
    other_services = _services_of(result, {_base(c.name) for c in result.changes} - plan_names)
    if other_services:
        medium.append(
            f"restarts service(s) of packages outside the plan: {', '.join(other_services)}"
        )
    own_services = _services_of(result, plan_names)
    if own_services:
        low.append(f"restarts {', '.join(own_services)} (checked by the health checks)")
    deps = [e for e in extra if e.action == "upgrade"]
    if deps:
        low.append(
            "also upgrades "
            + ", ".join(f"{e.package} {e.from_version} -> {e.to_version}" for e in deps)
        )
    return high, medium, low


def _risk(high: Sequence[str], medium: Sequence[str]) -> RiskLevel:
    if high:
        return RiskLevel.HIGH
    return RiskLevel.MEDIUM if medium else RiskLevel.LOW


def _predict_item(
    item: PlanItem,
    items: Sequence[PlanItem],
    result: SimulationResult,
    classes: tuple[Classification, ...],
    extra: Sequence[ExtraChange],
    policy: Policy,
    history: History | None,
) -> ItemPrediction:
    hist_high, hist_info = _history_reasons(item, history)
    common = {
        "host": item.host,
        "package": item.package,
        "from_version": item.from_version,
        "to_version": item.to_version,
    }
    current = {_base(n) for n in result.already_current}
    change = next((c for c in result.changes if _base(c.name) == item.package), None)
    problem: str | None = None
    if item.package in current and change is None:
        return ItemPrediction(
            **common,
            status=ItemStatus.ALREADY_CURRENT,
            risk=_risk(hist_high, ()),
            reasons=(f"{item.package} {item.to_version} is installed already", *hist_high),
        )
    if change is None:
        if item.package in {_base(n) for n in result.skipped_not_installed}:
            problem = f"{item.package} is not installed: --only-upgrade skips it"
        elif item.package in {_base(n) for n in result.kept_back}:
            problem = f"apt keeps {item.package} back (dependencies cannot be satisfied)"
        else:
            problem = f"the simulation does not install {item.package} {item.to_version}"
    elif change.to_version != item.to_version:
        problem = f"apt would install {item.package} {change.to_version}, not {item.to_version}"
    if problem is not None:
        return ItemPrediction(
            **common,
            status=ItemStatus.FAILED,
            classifications=classes,
            risk=RiskLevel.HIGH,
            reasons=(problem, *hist_high),
        )

    high, medium, low = _effect_reasons(items, result, item, extra)
    high += hist_high
    low += hist_info
    blocks: list[str] = []
    rules = policy.approvals
    if result.removals:
        if rules.on_removals:
            blocks.append("predicted removals need a person's approval (approvals.on_removals)")
        else:
            low.append("removals allowed by policy (approvals.on_removals is false)")
    if result.held:
        if rules.on_held:
            blocks.append("changing a held package needs a person's approval (approvals.on_held)")
        else:
            low.append("held package change allowed by policy (approvals.on_held is false)")
    if not (high or medium or low) and Classification.UPGRADES_ONLY in classes:
        low.append("upgrades only: nothing new, removed, held or downgraded")
    reasons = [*(f"blocked: {b}" for b in blocks), *high, *medium, *low]
    return ItemPrediction(
        **common,
        status=ItemStatus.BLOCKED if blocks else ItemStatus.READY,
        classifications=classes,
        services=_services_of(result, {_base(c.name) for c in result.changes}),
        risk=_risk(high, medium),
        reasons=tuple(reasons),
        blocked=bool(blocks),
        needs_approval=bool(blocks),
    )


def classify_host(
    host: str,
    items: Sequence[PlanItem],
    result: SimulationResult,
    policy: Policy,
    *,
    history: History | None = None,
    allow_downgrades: bool = False,
    warnings: Sequence[str] = (),
) -> HostPrediction:
    """Classify one host's simulated transaction and predict each of its items (pure).

    Args:
        host: The host name.
        items: The host's plan items (the ones simulated).
        result: The simulation of exactly those items (``PackageManager.simulate``).
        policy: ``policy.approvals.on_removals`` / ``on_held`` decide what blocks.
        history: Recorded outcomes by ``(package, version)`` (:func:`load_history`).
        allow_downgrades: Whether the simulation allowed downgrades (reported only).
        warnings: Carried into the prediction (e.g. a history query that failed).

    Returns:
        The host's prediction; see the module docstring for the rules.
    """
    classes = _host_classes(items, result)
    extra = _extra_changes(items, result)
    predictions = tuple(
        _predict_item(i, items, result, classes, extra, policy, history)
        for i in sorted(items, key=lambda i: i.package)
    )
    return HostPrediction(
        host=host,
        status="simulated",
        requested=result.requested,
        allow_downgrades=allow_downgrades,
        classifications=classes,
        removals=tuple(r.name for r in result.removals),
        held=result.held,
        new_packages=tuple(c.name for c in result.installs),
        services=result.restart_services,
        modified_conffiles=tuple(c.path for c in result.modified_conffiles),
        reboot_packages=result.reboot_packages,
        extra_changes=tuple(extra),
        warnings=tuple(warnings),
        items=predictions,
    )


def failed_host(
    host: str,
    items: Sequence[PlanItem],
    status: Literal["failed", "unreachable"],
    error: str,
    *,
    history: History | None = None,
    allow_downgrades: bool = False,
    warnings: Sequence[str] = (),
) -> HostPrediction:
    """The prediction of a host that could not be simulated: every item is high risk.

    Args:
        host: The host name.
        items: Its plan items.
        status: ``failed`` (apt refused: items ``failed-prediction``) or ``unreachable``.
        error: apt's or the transport's reason.
        history: Recorded outcomes (their reasons are still given).
        allow_downgrades: Whether the simulation was to allow downgrades.
        warnings: Carried into the prediction.
    """
    item_status = ItemStatus.UNREACHABLE if status == "unreachable" else ItemStatus.FAILED
    lead = "host unreachable" if status == "unreachable" else "simulation failed"
    predictions = tuple(
        ItemPrediction(
            host=host,
            package=i.package,
            from_version=i.from_version,
            to_version=i.to_version,
            status=item_status,
            risk=RiskLevel.HIGH,
            reasons=(f"no prediction: {lead}: {error}", *_history_reasons(i, history)[0]),
        )
        for i in sorted(items, key=lambda i: i.package)
    )
    return HostPrediction(
        host=host,
        status=status,
        error=error,
        requested=tuple(f"{i.package}={i.to_version}" for i in items),
        allow_downgrades=allow_downgrades,
        warnings=tuple(warnings),
        items=predictions,
    )


# --------------------------------------------------------------------------- simulation


def simulate_host(
    name: str,
    items: Sequence[PlanItem],
    host: Host | None,
    settings: Settings,
    policy: Policy,
    *,
    history: History | None = None,
    warnings: Sequence[str] = (),
    transport_factory: TransportFactory = open_transport,
) -> HostPrediction:
    """Simulate one host's items over one transport and classify them; never raises.

    Args:
        name: The plan's host name.
        items: The host's plan items.
        host: The inventory host (``None``: not in the inventory: its items are unreachable).
        settings: Transport settings.
        policy: Passed to :func:`classify_host`.
        history: Recorded outcomes by ``(package, version)``.
        warnings: Carried into the prediction.
        transport_factory: Opens the host's transport (tests pass a scripted one).
    """
    hlog = log.bind(agent="testing", host=name)
    if host is None:
        hlog.warning("testing.not_in_inventory")
        return failed_host(
            name,
            items,
            "unreachable",
            f"{name} is not in the inventory given to the test",
            history=history,
            warnings=warnings,
        )
    pins = [(i.package, i.to_version) for i in items]
    downgrades = False
    try:
        manager = manager_for_items(name, (i.ecosystem for i in items))
        downgrades = any(is_downgrade(i) for i in items)
        only_upgrade = all(i.from_version is not None for i in items)
        with transport_factory(host, settings) as transport:
            result = manager.simulate(
                transport, pins, allow_downgrades=downgrades, only_upgrade=only_upgrade
            )
    except CommandFailedError as exc:
        reason = _first_error_line(exc)
        hlog.warning("testing.simulation_failed", error=reason, exit_code=exc.exit_code)
        return failed_host(
            name,
            items,
            "failed",
            reason,
            history=history,
            allow_downgrades=downgrades,
            warnings=warnings,
        )
    except TransportError as exc:
        hlog.warning("testing.unreachable", error=str(exc), error_type=type(exc).__name__)
        return failed_host(
            name,
            items,
            "unreachable",
            str(exc),
            history=history,
            allow_downgrades=downgrades,
            warnings=warnings,
        )
    except Exception as exc:  # one broken host must never stop the plan's test
        if isinstance(exc, PatchpilotError | InvalidVersionError):
            hlog.warning("testing.failed", error=str(exc), error_type=type(exc).__name__)
            message = str(exc)
        else:
            hlog.exception("testing.unexpected_error")
            message = f"unexpected {type(exc).__name__}: {exc}"
        return failed_host(
            name,
            items,
            "failed",
            message,
            history=history,
            allow_downgrades=downgrades,
            warnings=warnings,
        )
    prediction = classify_host(
        name,
        items,
        result,
        policy,
        history=history,
        allow_downgrades=downgrades,
        warnings=warnings,
    )
    hlog.info(
        "testing.simulated",
        classifications=[c.value for c in prediction.classifications],
        risk=prediction.risk.value,
        blocked=[i.package for i in prediction.items if i.blocked],
        extra_changes=len(prediction.extra_changes),
    )
    return prediction


def test_plan(
    plan: PatchPlan,
    hosts: Sequence[Host],
    settings: Settings,
    policy: Policy,
    *,
    history: OutcomeHistory | None = None,  # noqa: PT028 (not a pytest test)
    transport_factory: TransportFactory = open_transport,  # noqa: PT028
) -> TestReport:
    """Simulate every host's part of ``plan`` (read-only) and predict each item.

    Args:
        plan: The frozen plan.
        hosts: The inventory hosts (a plan host missing here is ``unreachable``).
        settings: Transport settings and ``concurrency`` (hosts simulated at once).
        policy: ``approvals.on_removals`` / ``on_held`` decide what is blocked.
        history: Recorded outcomes (``Store`` implements it); ``None``: no history rule.
        transport_factory: Opens each host's transport (the run graph passes its context's,
            tests a scripted one).

    Returns:
        One :class:`HostPrediction` per plan host (sorted by name), never raising for one host.

    Example::

        report = test_plan(plan, hosts, settings, policy, history=store)
        report.item("db-1", "acme-agent").status      # ItemStatus.BLOCKED
        approval_required(plan, hosts, policy, report.predicted_effects())
    """
    tlog = log.bind(agent="testing", plan_id=plan.plan_id)
    known, warnings = load_history(plan.items, history)
    for warning in warnings:
        tlog.warning("testing.history_unavailable", warning=warning)
    by_name = {h.name: h for h in hosts}
    names = plan.hosts
    predictions: dict[str, HostPrediction] = {}
    if names:
        workers = min(settings.concurrency, len(names))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="testing") as pool:
            futures = {
                pool.submit(
                    simulate_host,
                    name,
                    plan.items_for(name),
                    by_name.get(name),
                    settings,
                    policy,
                    history=known,
                    transport_factory=transport_factory,
                    warnings=[
                        w
                        for w in warnings
                        if any(f"of {i.package} {i.to_version} " in w for i in plan.items_for(name))
                    ],
                ): name
                for name in names
            }
            for future in as_completed(futures):
                predictions[futures[future]] = future.result()
    report = TestReport(
        plan_id=plan.plan_id,
        content_hash=plan.content_hash,
        tested_at=utcnow(),
        hosts=tuple(predictions[n] for n in names),
    )
    tlog.info(
        "testing.done",
        hosts=len(names),
        items=len(report.items),
        blocked=len(report.blocked),
        high=sum(1 for i in report.items if i.risk is RiskLevel.HIGH),
    )
    return report


# The name starts with ``test``: tell pytest it is not a test when a test module imports it.
test_plan.__test__ = False  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- memory + LLM


class ItemJudgment(BaseModel):
    """The LLM's compatibility judgment of one plan item."""

    model_config = ConfigDict(extra="forbid")

    host: str
    package: str
    risk: RiskLevel
    reasons: list[str] = Field(max_length=5)
    cited: list[str] = Field(max_length=10)


class CompatibilityJudgment(BaseModel):
    """What the ``testing`` prompt returns."""

    model_config = ConfigDict(extra="forbid")

    items: list[ItemJudgment]


def recall_similar(
    memory: Any, items: Sequence[PlanItem], k: int = 3
) -> dict[str, list[dict[str, Any]]]:
    """Past outcomes and incidents of each item's package, from the vector memory.

    Keyed ``package=version``; each entry has the recalled ``id`` (cited in reasons), its
    ``kind``, ``text`` and ``distance``. A failing memory is a warning, not an error.
    """
    found: dict[str, list[dict[str, Any]]] = {}
    if memory is None:
        return found
    for package, version in sorted({(i.package, i.to_version) for i in items}):
        try:
            recalled = memory.recall(
                f"{package} {version} upgrade outcome", kinds=("outcomes", "incidents"), k=k * 3
            )
        except PatchpilotError as exc:
            log.warning("testing.memory_unavailable", error=str(exc))
            return found
        same = [r for r in recalled if r.metadata.get("package") == package][:k]
        if same:
            found[f"{package}={version}"] = [
                {"id": r.id, "kind": r.kind, "text": r.text, "distance": round(r.distance, 3)}
                for r in same
            ]
    return found


def judge_compatibility(
    report: TestReport,
    recalled: Mapping[str, Sequence[Mapping[str, Any]]],
    client: Any,
    changelogs: Mapping[str, str] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Ask the LLM to judge each item; keep only judgments the core allows.

    A judgment counts only for an item of the report, only if its risk is at least the core's
    (the model may raise a risk, never lower it), and only with citations among the ids
    recalled for that item. Returns ``({"host|package": judgment}, how)``.
    """
    from patchpilot.prompts import as_json, fence, load_prompt
    from patchpilot.tools.llm import LLMFallback, try_complete

    if client is None:
        return {}, {"by": "core", "reason": "no LLM configured"}
    prompt = load_prompt("testing")
    items = [
        {
            "host": i.host,
            "package": i.package,
            "from": i.from_version,
            "to": i.to_version,
            "status": i.status.value,
            "risk": i.risk.value,
            "classifications": [c.value for c in i.classifications],
            "services": list(i.services),
            "reasons": list(i.reasons),
        }
        for i in report.items
    ]
    messages = prompt.messages(
        items=as_json(items),
        changelogs=fence("changelog excerpts", as_json(dict(changelogs or {}))),
        memory=fence("past outcomes", as_json(dict(recalled))),
    )
    result = try_complete(client, "testing", prompt.version, messages, CompatibilityJudgment)
    if isinstance(result, LLMFallback):
        return {}, {"by": "core", "reason": result.reason}
    kept: dict[str, dict[str, Any]] = {}
    dropped: list[str] = []
    by_key = {(i.host, i.package): i for i in report.items}
    for j in result.value.items:
        core = by_key.get((j.host, j.package))
        if core is None:
            dropped.append(f"{j.host}/{j.package} is not in the plan")
            continue
        if j.risk.rank < core.risk.rank:
            dropped.append(
                f"{j.host}/{j.package}: may not lower {core.risk.value} to {j.risk.value}"
            )
            continue
        allowed = {r["id"] for r in recalled.get(f"{j.package}={core.to_version}", ())}
        kept[f"{j.host}|{j.package}"] = {
            "risk": j.risk.value,
            "reasons": [r[:300] for r in j.reasons],
            "cited": [c for c in j.cited if c in allowed],
        }
    how: dict[str, Any] = {
        "by": "llm",
        "model": result.model,
        "prompt": f"testing v{prompt.version}",
        "tokens": result.usage.total_tokens,
        "cached": result.cached,
    }
    if dropped:
        how["dropped"] = dropped
    return kept, how

"""The patch-run graph: the scan, then plan → test → schedule → approve → deploy rings → finish.

::

    START → begin ─Send─► discover_host → source ─Send─► assess_host → prioritize
                                                                          │
      END ◄─ finish ◄─(halted / last ring)─ deploy_ring ◄─ approve ◄─ schedule ◄─ test ◄─ plan_patch
                              ▲                 │  ▲
                              │                 │  └── analysis_baseline (baseline self)
                              │                 ▼
                              └─(next ring)── analysis → analysis_decision

* ``begin`` … ``prioritize`` are the scan graph's nodes (:mod:`patchpilot.graphs.scan`): the run
  starts
  from a fresh inventory of its hosts (dynamic scope: the targets are resolved when the run
  starts and logged).
* ``plan_patch`` freezes a :class:`~patchpilot.core.plan.PatchPlan` (id + content hash) with the
  policy baseline, the baseline rejections a person has not cleared yet, and ``--only``.
  ``test`` simulates it on every host (read-only); ``schedule`` resolves the rings and the
  maintenance window. These nodes have no side effects on hosts: they may run again.
* ``approve`` calls LangGraph ``interrupt()`` when the policy requires a person (prod hosts,
  criticality, predicted removals or held packages, ``always``). The payload is an
  :class:`ApprovalRequest` (the frozen plan, the test's verdicts, the reasons, the expiry); the
  pending approval is also written to the store (idempotently) so ``patchpilot approvals``
  lists it and another process decides it (``patchpilot approve RUN_ID``), which resumes the
  graph with ``Command(resume=decision)``, validated as an :class:`ApprovalDecision`
  (``interrupt(..., response_schema=ApprovalDecision)``). The decision is bound to the plan's
  content hash. A closed maintenance window interrupts with a :class:`WindowWait`, and so does
  a not-before time that has not come (``start_run(not_before=...)``: "tonight", "at 22:00",
  ``--not-before``): the deployment starts at ``max(not_before, next window opening)``.
* The assistance records and the LLM usage of each step are in the state, appended by a
  reducer (``Annotated[list, operator.add]``): a run resumed in another process (every
  ``approve``) keeps them, and the summary's ``llm_usage`` is the sum over every process that
  drove the run.
* ``deploy_ring`` deploys one ring per step (:func:`patchpilot.agents.deployment.deploy_ring`:
  waves, SSM
  rate control, health checks, automatic rollback) and loops to the next ring unless the ring
  halted. Outside the maintenance window it interrupts until ``patchpilot resume RUN_ID`` finds
  the window open. Every host's start and end are written to the store as they happen, so after
  ``kill -9`` a resumed run reuses finished hosts (never patched twice) and re-inspects the host
  that was in flight (dpkg audit/repair, then verify or roll back).
* Post-patch analysis (``policy.analysis``, off by default): after a ring's deployment,
  ``analysis`` waits the soak, samples the ring's patched hosts and the baseline (unpatched
  peers of later rings that get the same packages, over the same window; or, with ``self`` or
  no peer, the hosts' own window that ``analysis_baseline`` sampled before the ring was
  patched) through :attr:`RunContext.metrics` (bounded in time; a provider error is no data)
  and judges them (:func:`patchpilot.agents.analysis.judge`). ``analysis_decision`` acts:
  ``pass`` → next ring; ``fail`` → the ring's patched hosts roll back
  (:func:`patchpilot.agents.deployment.roll_back_host`, reason ``analysis failed: ...``), the
  versions are rejected in the baseline with the evidence, the run halts; ``marginal`` /
  ``nodata`` → an approval ``interrupt`` (an :class:`ApprovalRequest` with ``stage:
  analysis`` and the evidence) decided like the plan's (approve: continue; reject or expiry:
  roll the ring back and halt). Both analysis nodes are read-only: a crash during the soak
  re-runs the analysis on resume, never the deployment.
* Everything is checkpointed in SQLite (``durability="sync"``, ``thread_id = run_id``); a
  per-run lock file keeps two processes from driving the same run at once.
* Hosts that could not be reached (unreachable, a changed host key, refused authentication: at
  discovery or during the compatibility test) are failures of the run, never "nothing to do":
  none reached ends the run ``failed``; some reached lets the others proceed and a run that
  would have ``completed`` ends ``partial``. Their compliance is ``unknown``
  (:func:`unreached_hosts`).
* An unexpected error in any step (after a deployment, while recording a decision, an outcome
  or the report) ends the run ``failed`` with the reason, in the store and in the document;
  the checkpoint still says which step failed, so ``patchpilot resume RUN_ID`` runs it again and
  finishes the run (finished hosts are never patched twice). Recording into the vector memory is
  advisory and can never fail a run; text written there is clipped to the memory's limits.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, Protocol

import structlog
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from patchpilot.agents.analysis import AnalysisVerdict, Verdict, judge
from patchpilot.agents.deployment import (
    AnyCheck,
    HostDeployment,
    ItemDeployment,
    RingHooks,
    RingResult,
    TransportFactory,
    deploy_ring,
    roll_back_host,
)
from patchpilot.agents.intake.when import format_local, policy_timezone
from patchpilot.agents.planning import approval_required, build_plan, build_rollback_plan
from patchpilot.agents.scheduling import assign_rings, can_start, next_window
from patchpilot.agents.testing import judge_compatibility, recall_similar, test_plan
from patchpilot.core.audit import AuditLog
from patchpilot.core.errors import PatchpilotError
from patchpilot.core.failpoints import failpoint
from patchpilot.core.models import Host, PendingUpdate, utcnow
from patchpilot.core.plan import (
    ExcludedItem,
    ExclusionReason,
    PatchPlan,
    PlanItem,
    compliance_state,
    keep_security_updates,
)
from patchpilot.core.policy import Policy
from patchpilot.core.schedule import WindowSlot
from patchpilot.core.schedules import Trigger
from patchpilot.core.settings import Settings
from patchpilot.core.store import HostSnapshot, Store
from patchpilot.core.store.stages import Stage
from patchpilot.core.testing_models import ItemStatus, TestReport
from patchpilot.graphs.scan import (
    HostTask,
    RunBusyError,
    ScanContext,
    ScanState,
    _checkpointer,
    _config,
    assess_host_node,
    data_quality_summary,
    discover_host_node,
    fan_out_assessment,
    fan_out_discovery,
    new_run_id,
    open_memory,
    prioritize_node,
    run_lock,
    source,
    sum_usage,
    usage_since,
)
from patchpilot.tools.facts import gather
from patchpilot.tools.facts.apt_sources import AptCandidatePolicy
from patchpilot.tools.metrics import (
    MetricSeries,
    MetricSpec,
    MetricWindow,
    Providers,
    collect_hosts,
    pooled,
)
from patchpilot.tools.transport import open_transport

__all__ = [
    "ApprovalDecision",
    "ApprovalItem",
    "ApprovalRequest",
    "MetricsCollector",
    "MetricsFactory",
    "PreBaseline",
    "ProvidersCollector",
    "RingAnalysis",
    "RunBusyError",
    "RunContext",
    "RunInterrupt",
    "RunOutcome",
    "RunResult",
    "RunSnapshot",
    "RunState",
    "RunStatus",
    "StageRecorder",
    "StoreStages",
    "WindowResume",
    "WindowWait",
    "build_run_graph",
    "continue_run",
    "deployable_items",
    "load_run_state",
    "open_memory",
    "parse_interrupt",
    "result_of",
    "run_lock",
    "start_run",
    "unreached_hosts",
]

if TYPE_CHECKING:  # chromadb loads only when a run uses it
    from patchpilot.tools.memory import VectorMemory

log = structlog.get_logger(__name__)

RunStatus = Literal[
    "completed", "partial", "awaiting_approval", "halted", "failed", "rejected", "cancelled"
]
"""The run's status as the CLI reports it (stable contract). ``partial``: the run finished on
the hosts it reached, but some targeted hosts could not be reached; ``cancelled``: a person
cancelled it while it ran (it stopped before the next host started)."""

_MEMORY_TEXT = 8_000
"""The vector memory's longest text field (``patchpilot.tools.memory.records``): clip to it, never
fail."""
_REASON_TEXT = 2_000
"""Longest outside text (a comment, an error message) quoted in a run's reason."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApprovalDecision(_Frozen):
    """A person's decision on a run's approval checkpoint (the ``interrupt`` resume value)."""

    status: Literal["approved", "rejected", "expired"]
    by: str
    comment: str | None = None
    at: AwareDatetime
    content_hash: str = Field(description="the plan the person saw; must match the frozen plan")


class RingPlan(_Frozen):
    """A resolved ring: its name and host names in deployment order."""

    name: str
    hosts: tuple[str, ...]


class ApprovalItem(_Frozen):
    """One plan item as a person approves it, with the compatibility test's verdict."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    host: str
    package: str
    from_version: str | None = Field(alias="from")
    to: str
    rule: str
    cves: list[str] = Field(default_factory=list)
    test: str | None = None
    risk: str | None = None
    classifications: list[str] | None = None


class ApprovalRequest(_Frozen):
    """The approval ``interrupt`` payload: the frozen plan a person approves, and why.

    Stored as its JSON form (:meth:`payload`) with the pending approval, and the same JSON in
    :attr:`RunResult.interrupt` and :attr:`RunSnapshot.interrupts` (``kind: "approval"``).
    """

    kind: Literal["approval"] = "approval"
    run_id: str
    plan_id: str
    content_hash: str
    reasons: list[str]
    expires_at: AwareDatetime
    items: list[ApprovalItem]
    rings: list[RingPlan]
    stage: Literal["plan", "analysis"] = Field(
        default="plan",
        description="plan: approve the frozen plan before anything is deployed; analysis: a "
        "ring's post-patch analysis was marginal or had no data (approve: continue the "
        "rollout, reject: roll the ring back and halt)",
    )
    analysis: RingAnalysis | None = Field(
        default=None, description="the ring's analysis and its evidence (stage analysis)"
    )

    @field_serializer("expires_at")
    def _iso(self, value: datetime) -> str:
        return value.isoformat()

    def payload(self) -> dict[str, Any]:
        """The JSON form (as published since 0.1: items without a test verdict omit it; a plan
        approval has no ``stage`` nor ``analysis``)."""
        data = self.model_dump(mode="json", by_alias=True)
        for item in data["items"]:
            for key in ("test", "risk", "classifications"):
                if item[key] is None:
                    del item[key]
        if self.stage == "plan":
            del data["stage"]
        if self.analysis is None:
            del data["analysis"]
        return data


class WindowWait(_Frozen):
    """The maintenance-window ``interrupt`` payload: the ring waits for the window, or for the
    run's not-before time (``not_before`` set: a person asked for "tonight", "at 22:00"...)."""

    kind: Literal["window"] = "window"
    run_id: str
    reason: str
    ring: str
    not_before: AwareDatetime | None = Field(
        default=None, description="the run's not-before time, while it has not come"
    )

    def payload(self) -> dict[str, Any]:
        """The JSON form (``not_before`` only while the run waits for it)."""
        return self.model_dump(mode="json", exclude_none=True)


class WindowResume(_Frozen):
    """The resume value of a window wait: who asked to check the window again."""

    kind: Literal["window"] = "window"
    by: str


RunInterrupt = ApprovalRequest | WindowWait
"""What a run can wait on."""


def parse_interrupt(value: object) -> RunInterrupt:
    """A pending interrupt's payload as its model (a checkpoint from before the models holds
    the same JSON as a dict)."""
    if isinstance(value, ApprovalRequest | WindowWait):
        return value
    if isinstance(value, Mapping) and value.get("kind") == "approval":
        return ApprovalRequest.model_validate(dict(value))
    return WindowWait.model_validate(value)


class RingSummary(_Frozen):
    """What one ring did (details per host are in the store)."""

    ring: str
    halted: bool = False
    reason: str | None = None
    statuses: dict[str, str] = Field(default_factory=dict)
    rejected: tuple[str, ...] = Field(default=(), description="PKG=VERSION rejected after it")


class RunOutcome(_Frozen):
    """How the run ended (or why it is waiting)."""

    status: RunStatus
    reason: str | None = None


BaselineUsed = Literal["peers", "self", "none"]
"""What a ring's canary was compared with: unpatched peers of later rings over the same
window, the canary hosts' own window before the patch, or nothing (no data: a person
decides)."""


class PreBaseline(_Frozen):
    """A ring's own pre-patch window (baseline ``self``), sampled before its deployment."""

    ring: str
    hosts: tuple[str, ...]
    started_at: AwareDatetime
    series: dict[str, dict[str, MetricSeries]] = Field(
        default_factory=dict, description="host -> metric -> series"
    )
    problem: str | None = Field(default=None, description="why nothing was collected")


class RingAnalysis(_Frozen):
    """The post-patch analysis of one ring: who was compared with what, the judge's verdict
    with every metric's evidence, and what was done about it."""

    ring: str
    baseline_mode: BaselineUsed
    canary_hosts: tuple[str, ...]
    baseline_hosts: tuple[str, ...]
    started_at: AwareDatetime = Field(description="the sampling window's start (after the soak)")
    result: AnalysisVerdict
    action: Literal["continue", "rolled_back"] | None = Field(
        default=None, description="continue: the next ring; rolled_back: the ring rolled back"
    )
    decided_by: str | None = Field(
        default=None, description="who decided on a marginal or nodata analysis"
    )

    def document(self) -> dict[str, Any]:
        """The run document's ``analysis[]`` entry (``patchpilot.run/v1``)."""
        result = self.result
        return {
            "ring": self.ring,
            "verdict": result.verdict.value,
            "score": result.score,
            "baseline_mode": self.baseline_mode,
            "reason": result.reason,
            "canary_hosts": list(self.canary_hosts),
            "baseline_hosts": list(self.baseline_hosts),
            "started_at": self.started_at.isoformat(),
            "action": self.action,
            "decided_by": self.decided_by,
            "metrics": [
                {
                    "name": m.name,
                    "classification": m.classification.value,
                    "baseline": m.baseline.model_dump(mode="json"),
                    "canary": m.canary.model_dump(mode="json"),
                    "p_value": m.p_value,
                    "statistic": m.statistic,
                    "effect_size": m.effect_size,
                    "effect_measure": m.effect_measure,
                    "estimate": m.estimate,
                    "ci_low": m.ci_low,
                    "ci_high": m.ci_high,
                    "unit": m.unit,
                    "direction": m.direction,
                    "critical": m.critical,
                    "critical_failure": m.critical_failure,
                    "failed_measurements": m.failed_measurements,
                    "reason": m.reason,
                }
                for m in result.metrics
            ],
        }


ApprovalRequest.model_rebuild()


class RunState(ScanState):
    """The patch run's state: the scan's, plus the frozen plan and what happened to it."""

    policy: Policy
    only: list[tuple[str, str | None]] = Field(default_factory=list)
    rollback: dict[str, str] = Field(
        default_factory=dict, description="host -> version to go back to (for only[0]'s package)"
    )
    dry_run: bool = False
    limit: str | None = None
    must_approve: str | None = Field(
        default=None, description="a reason a person must approve whatever the policy says"
    )
    security_only: bool = Field(
        default=False,
        description="plan only updates that close a known security advisory "
        "(patchpilot.core.plan.keep_security_updates)",
    )
    not_before: AwareDatetime | None = Field(
        default=None,
        description="deployment starts no earlier (and only inside the policy's windows)",
    )
    window_end: AwareDatetime | None = Field(
        default=None, description="the schedule's window ends: the approval expires then at last"
    )
    cutoff_at: AwareDatetime | None = Field(
        default=None, description="the schedule's cutoff: no new host starts from then on"
    )
    plan: PatchPlan | None = None
    testing: TestReport | None = None
    window: WindowSlot | None = None
    approval_reasons: list[str] = Field(default_factory=list)
    approval: ApprovalDecision | None = None
    rings: list[RingPlan] = Field(default_factory=list)
    ring_index: int = 0
    ring_results: list[RingSummary] = Field(default_factory=list)
    outcome: RunOutcome | None = None
    recalled: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="package=version -> similar past outcomes (memory)"
    )
    judgments: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="host|package -> the LLM's compatibility judgment"
    )
    analysis_baselines: dict[str, PreBaseline] = Field(
        default_factory=dict, description="ring -> its pre-patch window (baseline self)"
    )
    analyses: list[RingAnalysis] = Field(
        default_factory=list, description="each analysed ring's verdict, in ring order"
    )


class StageRecorder:
    """Where a run's nodes say when each stage starts and ends: records nothing (hermetic
    tests need nothing; it never reads a clock). :class:`StoreStages` writes to the store."""

    def started(
        self, run_id: str, stage: Stage, *, ring: str | None = None, at: datetime | None = None
    ) -> None:
        """``stage`` (of ``ring``) of ``run_id`` starts (at ``at``, default now)."""

    def ended(
        self, run_id: str, stage: Stage, *, ring: str | None = None, at: datetime | None = None
    ) -> None:
        """``stage`` (of ``ring``) of ``run_id`` ends (at ``at``, default now)."""


class StoreStages(StageRecorder):
    """Stage times in the store's ``run_stages`` (:mod:`patchpilot.core.store.stages`):
    the run document, ``/metrics`` and analytics read them there. ``clock``: the run's."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = utcnow) -> None:
        self.store = store
        self.clock = clock

    def started(
        self, run_id: str, stage: Stage, *, ring: str | None = None, at: datetime | None = None
    ) -> None:
        self.store.stage_started(run_id, stage, ring=ring, at=at or self.clock())

    def ended(
        self, run_id: str, stage: Stage, *, ring: str | None = None, at: datetime | None = None
    ) -> None:
        self.store.stage_ended(run_id, stage, ring=ring, at=at or self.clock())


class MetricsCollector(Protocol):
    """Samples the analysis metrics of several hosts over one window (the run context's
    :attr:`RunContext.metrics` opens one per collection; tests script it)."""

    def collect(
        self,
        hosts: Sequence[Host],
        specs_for: Callable[[Host], Sequence[MetricSpec]],
        window: MetricWindow,
    ) -> Mapping[str, Mapping[str, MetricSeries]]:
        """``{host: {metric: series}}``, every host sampled over ``window`` at the same time."""
        ...

    def close(self) -> None:
        """Release what it opened (clients, transports)."""
        ...


MetricsFactory = Callable[[], MetricsCollector]
"""Opens a :class:`MetricsCollector` (:func:`patchpilot.app.contexts.run_context` gives the
real providers)."""


class ProvidersCollector:
    """A :class:`MetricsCollector` over the real providers
    (:func:`patchpilot.tools.metrics.collect_hosts`)."""

    def __init__(self, providers: Providers) -> None:
        self.providers = providers

    def collect(
        self,
        hosts: Sequence[Host],
        specs_for: Callable[[Host], Sequence[MetricSpec]],
        window: MetricWindow,
    ) -> Mapping[str, Mapping[str, MetricSeries]]:
        return collect_hosts(hosts, specs_for, window, self.providers)

    def close(self) -> None:
        self.providers.close()


@dataclass
class RunContext(ScanContext):
    """Run-time dependencies of a patch run (not checkpointed; rebuilt on resume).

    Build it with :meth:`ScanContext.create` (``RunContext.create(settings, store, policy)``),
    the one factory of a run's start and every resume; the audit log is the one under HOME
    unless :attr:`audit` is given. :attr:`stages` records nothing unless set (the use cases
    of :mod:`patchpilot.app.runs` set :class:`StoreStages`). :attr:`metrics` opens the
    post-patch analysis' metric collector (``None``: no providers, every analysis has no data
    and a person decides); :attr:`sleep` waits the soak; :attr:`analysis_timeout_s` bounds one
    collection (``None``: from the window, see :func:`collection_bound`).
    """

    audit: AuditLog | None = None
    transport_factory: TransportFactory = open_transport
    clock: Callable[[], datetime] = field(default=utcnow)
    stages: StageRecorder = field(default_factory=StageRecorder)
    metrics: MetricsFactory | None = None
    sleep: Callable[[float], None] = field(default=time.sleep)
    analysis_timeout_s: float | None = None

    def audit_log(self, run_id: str) -> AuditLog:
        """The audit log bound to ``run_id``."""
        base = self.audit or AuditLog.for_settings(self.settings)
        return base.bind(run_id=run_id)


# --------------------------------------------------------------------------- helpers


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters (an ellipsis says it was cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _stage(
    ctx: RunContext,
    run_id: str,
    stage: Stage,
    edge: Literal["start", "end"],
    *,
    ring: str | None = None,
    at: datetime | None = None,
) -> None:
    """Record a stage's start or end; recording never fails a run (a warning at worst)."""
    try:
        if edge == "start":
            ctx.stages.started(run_id, stage, ring=ring, at=at)
        else:
            ctx.stages.ended(run_id, stage, ring=ring, at=at)
    except Exception as exc:
        log.warning("run.stage_not_recorded", run_id=run_id, stage=stage, error=str(exc)[:500])


def _timed(stage: Stage, node: Callable[[Any, Any], dict[str, Any]]) -> Any:
    """``node`` (a scan step the run reuses) recording ``stage`` around it."""

    def timed(state: Any, runtime: Runtime[RunContext]) -> dict[str, Any]:
        _stage(runtime.context, state.run_id, stage, "start")
        update = node(state, runtime)
        _stage(runtime.context, state.run_id, stage, "end")
        return update

    timed.__name__ = getattr(node, "__name__", stage)
    timed.__doc__ = node.__doc__
    return timed


def _cancelled_by(ctx: RunContext, run_id: str) -> str | None:
    """Who asked this run to stop (``None``: nobody), read from the store every time, so a
    request made in any process is seen at the next safe point."""
    request = ctx.store.cancel_request(run_id)
    return request.requested_by if request is not None else None


def unreached_hosts(state: RunState) -> dict[str, str]:
    """Targeted hosts the run could not reach, with the reason, in inventory order.

    A host is not reached when its discovery failed (unreachable, host key refused or changed,
    authentication refused...) or when the compatibility test could not reach it. Such a host
    is a failure of the run and its compliance is ``unknown``.
    """
    reached = {s.host for s in state.statuses if s.stage != "failed"}
    errors = {s.host: s.error or "discovery failed" for s in state.statuses if s.stage == "failed"}
    found = {h: e for h, e in errors.items() if h not in reached}
    if state.testing is not None:
        for host in state.testing.hosts:
            if host.status == "unreachable" and host.host not in found:
                found[host.host] = f"compatibility test: {host.error or 'unreachable'}"
    return {h.name: found[h.name] for h in state.hosts if h.name in found}


def _not_reached_text(unreached: Mapping[str, str], total: int) -> str:
    """``none of the 3 targeted host(s) could be reached: web-1: …`` or ``1 of 3 host(s) …``."""
    shown = "; ".join(
        e if e.startswith(f"{h}: ") else f"{h}: {e}" for h, e in list(unreached.items())[:3]
    )
    more = f" (+{len(unreached) - 3} more)" if len(unreached) > 3 else ""
    head = (
        f"none of the {total} targeted host(s) could be reached"
        if len(unreached) == total
        else f"{len(unreached)} of {total} targeted host(s) could not be reached"
    )
    return _clip(f"{head}: {shown}{more}", _REASON_TEXT)


def deployable_items(
    plan: PatchPlan, testing: TestReport | None, approved: bool
) -> tuple[dict[str, list[PlanItem]], dict[tuple[str, str], str]]:
    """The plan items to deploy per host, and why the others are skipped.

    Items whose simulation failed or whose host was unreachable during the test are skipped;
    items the test blocked (removals, held packages) go only when a person approved the plan.
    """
    deploy: dict[str, list[PlanItem]] = {}
    skipped: dict[tuple[str, str], str] = {}
    for item in plan.items:
        prediction = None
        if testing is not None:
            try:
                prediction = testing.item(item.host, item.package)
            except KeyError:
                prediction = None
        if prediction is not None:
            why = "; ".join(prediction.reasons)
            if prediction.status in (ItemStatus.FAILED, ItemStatus.UNREACHABLE):
                skipped[item.key] = f"compatibility test: {prediction.status.value}: {why}"
                continue
            if prediction.status is ItemStatus.BLOCKED and not approved:
                skipped[item.key] = f"blocked by the compatibility test until approved: {why}"
                continue
        deploy.setdefault(item.host, []).append(item)
    return deploy, skipped


def _hosts(state: RunState) -> dict[str, Host]:
    return {h.name: h for h in state.hosts}


def _available(
    hosts: list[Host], names: list[str], ctx: RunContext
) -> dict[str, dict[str, list[str]]]:
    """Versions each host's repositories offer for ``names`` (``apt-cache policy``, read-only)."""
    found: dict[str, dict[str, list[str]]] = {}
    for host in hosts:
        try:
            with ctx.transport_factory(host, ctx.settings) as transport:
                policies = gather(transport, AptCandidatePolicy(names))
        except PatchpilotError as exc:
            log.warning("run.available_unknown", host=host.name, error=str(exc))
            continue
        found[host.name] = {
            name: [v.version for v in p.versions if v.sources] for name, p in policies.items()
        }
    return found


# --------------------------------------------------------------------------- nodes


def begin(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Record the run (idempotent) and log its resolved scope."""
    ctx = runtime.context
    names = [h.name for h in state.hosts]
    ctx.store.create_run(
        state.run_id,
        kind="run",
        target=state.target,
        params={
            "hosts": names,
            "limit": state.limit,
            "only": [f"{n}={v}" if v else n for n, v in state.only],
            "dry_run": state.dry_run,
            "not_before": state.not_before.isoformat() if state.not_before else None,
            "trigger": state.trigger,
            "schedule_id": state.schedule_id,
            "window_end": state.window_end.isoformat() if state.window_end else None,
            "cutoff_at": state.cutoff_at.isoformat() if state.cutoff_at else None,
        },
    )
    log.info("run.scope_resolved", run_id=state.run_id, target=state.target, hosts=names)
    ctx.audit_log(state.run_id).record(
        "run.started",
        details={
            "target": state.target,
            "hosts": names,
            "dry_run": state.dry_run,
            "trigger": state.trigger,
            "schedule_id": state.schedule_id,
        },
    )
    return {}


def plan_patch(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Freeze the plan: baseline + cleared-not-yet rejections + ``--only`` (no side effects).

    No host reached: nothing can be planned, the run fails (never "nothing to deploy").
    """
    ctx = runtime.context
    unreached = unreached_hosts(state)
    if state.hosts and len(unreached) == len(state.hosts):
        reason = _not_reached_text(unreached, len(state.hosts))
        log.warning("run.no_host_reached", run_id=state.run_id, hosts=sorted(unreached))
        return {"outcome": RunOutcome(status="failed", reason=reason)}
    store = ctx.store
    snapshots = {
        host.name: snapshot
        for host in state.hosts
        if (snapshot := store.load_host_snapshot(state.run_id, host.name)) is not None
    }
    discovered = [h for h in state.hosts if h.name in snapshots]
    pending: dict[str, list[PendingUpdate]] = {n: list(s.pending) for n, s in snapshots.items()}
    policy = state.policy
    rejections = [r.spec for r in store.active_rejections()]
    if rejections:
        baseline = policy.baseline.model_copy(
            update={"rejected_packages": (*policy.baseline.rejected_packages, *rejections)}
        )
        policy = policy.model_copy(update={"baseline": baseline})
        log.info("run.baseline_rejections", run_id=state.run_id, rejected=rejections)
    if state.rollback:
        package = state.only[0][0]
        installed: dict[str, str | None] = {
            name: next((p.version for p in snap.packages if p.name == package), None)
            for name, snap in snapshots.items()
        }
        plan = build_rollback_plan(
            state.run_id,
            package,
            {h: v for h, v in state.rollback.items() if h in installed},
            installed,
            _available(discovered, [package], ctx),
            now=ctx.clock(),
            reason=f"rollback of {package} requested ({state.target})",
        )
        return _planned(plan)
    pinned = {name for name, version in state.only if version}
    # A pinned source name (`--only zlib=VERSION`): ask for the versions of its binaries.
    pinned |= {
        u.name
        for snap in snapshots.values()
        for u in snap.pending
        if u.source_name in pinned
        or any(p.name == u.name and p.source_name in pinned for p in snap.packages)
    }
    available = _available(discovered, sorted(pinned), ctx) if pinned else None
    plan = build_plan(
        state.run_id,
        store.findings(run_id=state.run_id),
        pending,
        discovered,
        policy,
        only=state.only,
        now=ctx.clock(),
        available=available,
        installed={n: s.packages for n, s in snapshots.items()},
    )
    plan = _with_held(plan, state, snapshots)
    if state.security_only:
        plan = keep_security_updates(plan)
    return _planned(plan)


def _with_held(
    plan: PatchPlan, state: RunState, snapshots: Mapping[str, HostSnapshot]
) -> PatchPlan:
    """Say so when ``--only`` names a package a host holds (apt never offers it as an update):
    by its binary name or its source name (every held binary of that source)."""
    if not state.only:
        return plan
    planned = {i.key for i in plan.items} | {
        (e.host, e.package) for e in plan.excluded if e.exclusion is ExclusionReason.HELD
    }
    extra: list[ExcludedItem] = []
    held_somewhere: set[str] = set()
    for host_name, snapshot in snapshots.items():
        if not snapshot.facts.held_packages:
            continue
        for package in snapshot.packages:
            name = package.name
            if name not in snapshot.facts.held_packages or (host_name, name) in planned:
                continue
            spec = next(
                ((n, v) for n, v in state.only if n == name),
                next(((n, v) for n, v in state.only if n == package.source_name), None),
            )
            if spec is None:
                continue
            held_somewhere.add(spec[0])
            planned.add((host_name, name))
            extra.append(
                ExcludedItem(
                    host=host_name,
                    package=name,
                    from_version=package.version,
                    to_version=spec[1] or "(any)",
                    source_package=package.source_name,
                    exclusion=ExclusionReason.HELD,
                    reason=f"{name} is held on {host_name} (apt-mark hold): apt never "
                    "upgrades it; unhold it first if it should be patched",
                )
            )
    if not extra:
        return plan
    unmatched = [u for u in plan.unmatched_only if u.split("=")[0] not in held_somewhere]
    return PatchPlan.create(
        run_id=plan.run_id,
        created_at=plan.created_at,
        items=plan.items,
        excluded=(*plan.excluded, *extra),
        unmatched_only=unmatched,
        suggestions={k: v for k, v in plan.suggestions.items() if k in unmatched},
        up_to_date=[u for u in plan.up_to_date if u in unmatched],
    )


def _planned(plan: PatchPlan) -> dict[str, Any]:
    update: dict[str, Any] = {"plan": plan}
    if not plan.items:
        reason = "nothing to deploy: no pending update is approved by the baseline"
        explained = [e for e in plan.excluded if e.exclusion.value.startswith(("not-", "held"))]
        if explained and (
            len(explained) == len(plan.excluded)
            or any(e.exclusion is ExclusionReason.HELD for e in explained)
        ):
            reason = "nothing to deploy: " + "; ".join(e.reason for e in explained[:3])
        named = [e for e in plan.excluded if e.exclusion is not ExclusionReason.NOT_IN_ONLY]
        if named and len(named) < len(plan.excluded):
            # --only named packages: say why each of those was left out, not the baseline.
            reason = "nothing to deploy: " + "; ".join(e.reason for e in named[:3])
        unknown = [u for u in plan.unmatched_only if u not in plan.up_to_date]
        if unknown:
            # A name that matched nothing is a question for the person, never "completed".
            said = "; ".join(
                plan.suggestions.get(u, f"no pending update matches {u}") for u in unknown
            )
            update["outcome"] = RunOutcome(
                status="failed",
                reason=_clip(f"nothing to deploy: --only matched nothing: {said}", _REASON_TEXT),
            )
            return update
        if plan.up_to_date:
            reason = "nothing to deploy: " + "; ".join(
                plan.suggestions.get(u, u) for u in plan.up_to_date
            )
        update["outcome"] = RunOutcome(status="completed", reason=_clip(reason, _REASON_TEXT))
    return update


def after_plan(state: RunState) -> Literal["finish", "test"]:
    """No items: straight to ``finish``."""
    return "finish" if state.outcome is not None else "test"


def testing_node(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Simulate the frozen plan on every host (read-only)."""
    assert state.plan is not None
    ctx = runtime.context
    report = test_plan(
        state.plan,
        state.hosts,
        ctx.settings,
        state.policy,
        history=ctx.store,
        transport_factory=ctx.transport_factory,
    )
    recalled = recall_similar(ctx.memory, state.plan.items)
    before = ctx.llm.usage if ctx.llm is not None else None
    judgments, how = judge_compatibility(report, recalled, ctx.llm)
    return {
        "testing": report,
        "recalled": recalled,
        "judgments": judgments,
        "assistance": [{"task": "testing", **how}],
        "llm_usage": usage_since(before, ctx.llm),
    }


def schedule(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Resolve the rings (hosts with items only) and the current maintenance window."""
    assert state.plan is not None
    hosts = _hosts(state)
    targets = [hosts[name] for name in state.plan.hosts if name in hosts]
    rings = assign_rings(targets, state.policy.schedule.rings)
    now = runtime.context.clock()
    # The window the deployment can start in: the first one from the not-before time on.
    slot = next_window(state.policy.schedule, max(now, state.not_before or now))
    log.info(
        "run.scheduled",
        run_id=state.run_id,
        rings={r.name: [h.name for h in r.hosts] for r in rings},
        window=slot.model_dump(mode="json") if slot else None,
    )
    return {
        "rings": [RingPlan(name=r.name, hosts=tuple(h.name for h in r.hosts)) for r in rings],
        "window": slot,
    }


def approval_request(state: RunState, reasons: list[str], expires_at: datetime) -> ApprovalRequest:
    """What a person approves: the frozen plan, the test's verdicts, the reasons to ask."""
    assert state.plan is not None
    plan = state.plan
    testing = state.testing
    items = []
    for item in plan.items:
        verdict: dict[str, Any] = {}
        if testing is not None:
            try:
                p = testing.item(item.host, item.package)
                verdict = {
                    "test": p.status.value,
                    "risk": p.risk.value,
                    "classifications": [c.value for c in p.classifications],
                }
            except KeyError:
                pass
        items.append(
            ApprovalItem(
                host=item.host,
                package=item.package,
                from_version=item.from_version,
                to=item.to_version,
                rule=item.rule,
                cves=list(item.cves),
                **verdict,
            )
        )
    return ApprovalRequest(
        run_id=state.run_id,
        plan_id=plan.plan_id,
        content_hash=plan.content_hash,
        reasons=reasons,
        expires_at=expires_at,
        items=items,
        rings=list(state.rings),
    )


def approve(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Ask a person when policy says so (``interrupt``); resume with their decision.

    Before ``interrupt`` this node only writes idempotently (it runs again on resume).
    """
    assert state.plan is not None
    ctx = runtime.context
    plan = state.plan
    who = _cancelled_by(ctx, state.run_id)
    if who is not None:  # cancelled before anything was deployed: nothing to approve
        return _cancelled(state, ctx, who, from_ring=0)
    effects = state.testing.predicted_effects() if state.testing else None
    reasons = approval_required(plan, state.hosts, state.policy, effects)
    if state.must_approve and plan.items:
        reasons = [state.must_approve, *reasons]
    if not reasons:
        return {"approval_reasons": []}
    if state.dry_run:
        log.info("run.approval_would_be_required", run_id=state.run_id, reasons=reasons)
        return {"approval_reasons": reasons}
    audit = ctx.audit_log(state.run_id)
    existing = ctx.store.approval(state.run_id)
    if existing is None or existing.plan_id != plan.plan_id:
        now = ctx.clock()
        expires = now + timedelta(hours=state.policy.approvals.expires_after_hours)
        if state.window_end is not None:  # a scheduled run: at the latest when its window ends
            expires = min(expires, max(state.window_end, now))
        payload = approval_request(state, reasons, expires).payload()
        ctx.store.request_approval(
            state.run_id,
            plan.plan_id,
            plan.content_hash,
            reasons,
            payload,
            requested_at=now,
            expires_at=expires,
        )
        audit.record(
            "approval.requested",
            details={
                "plan_id": plan.plan_id,
                "content_hash": plan.content_hash,
                "reasons": reasons,
                "expires_at": expires.isoformat(),
            },
        )
        existing = ctx.store.approval(state.run_id)
    assert existing is not None
    if existing.status == "pending":
        ctx.store.set_run_status(state.run_id, "awaiting_approval")
    _stage(ctx, state.run_id, "awaiting_approval", "start", at=existing.requested_at)
    # The stored request (the same on every re-run of this node), validated back into its model;
    # the resume value is validated as an ApprovalDecision by interrupt() itself.
    decision = interrupt(
        ApprovalRequest.model_validate(existing.payload), response_schema=ApprovalDecision
    )
    _stage(ctx, state.run_id, "awaiting_approval", "end", at=decision.at)
    update: dict[str, Any] = {"approval_reasons": reasons, "approval": decision}
    if decision.content_hash != plan.content_hash:
        update["outcome"] = RunOutcome(
            status="rejected",
            reason=f"the approval was for another plan ({decision.content_hash[:12]}), not "
            f"{plan.content_hash[:12]}",
        )
    elif decision.status == "rejected":
        note = f": {_clip(decision.comment, _REASON_TEXT)}" if decision.comment else ""
        update["outcome"] = RunOutcome(status="rejected", reason=f"rejected by {decision.by}{note}")
    elif decision.status == "expired":
        update["outcome"] = RunOutcome(
            status="rejected", reason=f"the approval expired ({existing.expires_at.isoformat()})"
        )
    else:
        ctx.store.set_run_status(state.run_id, "running")
    return update


def after_approve(state: RunState) -> Literal["analysis_baseline", "deploy_ring", "finish"]:
    """Rejected or expired: ``finish``; else the first ring (its pre-patch window first when
    its analysis compares the hosts with themselves)."""
    if state.outcome is not None or not state.rings:
        return "finish"
    return _next_ring(state)


def _wait_reason(state: RunState, now: datetime) -> str | None:
    """Why no host may start at ``now`` (``None``: it may): the run's not-before time has not
    come, or the maintenance window is closed. The deployment starts at ``max(not_before, the
    next window opening)``."""
    schedule = state.policy.schedule
    passed = _cutoff_passed(state, now)
    if passed is not None:
        return passed
    if state.not_before is not None and now < state.not_before:
        tz = policy_timezone(schedule)
        reason = f"not before {format_local(state.not_before, tz)} (asked for)"
        slot = next_window(schedule, state.not_before)
        if slot is None:
            return f"{reason}; no maintenance window is scheduled after it"
        if not can_start(state.not_before, slot) and slot.start > state.not_before:
            reason += f"; then the maintenance window {slot.window} opens at " + format_local(
                slot.start, tz
            )
        return reason
    return _window_reason(next_window(schedule, now), now)


def _cutoff_passed(state: RunState, now: datetime) -> str | None:
    """Why no host may start any more: the scheduled window's cutoff has passed (``None``:
    not a scheduled run, or before its cutoff)."""
    if state.cutoff_at is None or now < state.cutoff_at:
        return None
    return (
        f"the cutoff of schedule {state.schedule_id or '?'}'s window "
        f"({state.cutoff_at.isoformat()}) has passed: no new host starts"
    )


def _window_reason(slot: WindowSlot | None, now: datetime) -> str | None:
    if can_start(now, slot):
        return None
    if slot is None:
        return "no maintenance window is open and none is scheduled"
    if slot.start > now:
        return f"outside the maintenance window: {slot.window} opens at {slot.start.isoformat()}"
    return f"maintenance window {slot.window} does not allow new hosts now (cutoff or blackout)"


class _RunRingHooks(RingHooks):
    """What the run decides and records for :func:`deploy_ring`: each host's health checks,
    the maintenance window before every start, the person's approval, and each host's start
    and end in the store (so a resume never deploys a finished host again)."""

    def __init__(
        self,
        state: RunState,
        ctx: RunContext,
        ring: str,
        items_by_host: Mapping[str, list[PlanItem]],
        done: Mapping[str, HostDeployment],
        approved: bool,
    ) -> None:
        self._state = state
        self._ctx = ctx
        self._ring = ring
        self._items = items_by_host
        self._done = done
        self._approved = approved
        self._hosts = _hosts(state)

    def checks_for(self, host: Host) -> Sequence[AnyCheck]:
        packages = [i.package for i in self._items.get(host.name, [])]
        return self._state.policy.checks_for(host, packages)

    def may_start(self) -> str | None:
        who = _cancelled_by(self._ctx, self._state.run_id)
        if who is not None:  # the safe point: no new host starts, in-flight ones finish
            return f"cancelled by {who}"
        if self._state.dry_run:
            return None
        return _wait_reason(self._state, self._ctx.clock())

    def approved(self, host: Host) -> bool:
        return self._approved

    def on_host_start(self, host: Host) -> None:
        items = [i.model_dump(mode="json") for i in self._items.get(host.name, [])]
        self._ctx.store.deployment_started(self._state.run_id, host.name, self._ring, items)

    def on_host_done(self, deployment: HostDeployment) -> None:
        if deployment.host in self._done:
            return
        store, run_id = self._ctx.store, self._state.run_id
        deployment = _skipped_if_cancelled(deployment)
        # The host's end first: whatever fails after it, a resume never deploys it again.
        store.deployment_finished(
            run_id, deployment.host, self._ring, deployment.model_dump(mode="json")
        )
        if not self._state.dry_run:
            _record_outcomes(store, run_id, deployment)
            _remember_deployment(
                self._ctx.memory, run_id, self._hosts.get(deployment.host), deployment
            )


def _wait_for_window(
    state: RunState, ctx: RunContext, ring: RingPlan, now: datetime
) -> dict[str, Any] | None:
    """Wait (``interrupt``) until a host may start: the not-before time has come and the
    window is open. Returns the update of a run whose cutoff passed while it waited."""
    rlog = log.bind(run_id=state.run_id, ring=ring.name)
    closed = _wait_reason(state, now)
    waited = False
    while closed is not None and not state.dry_run:
        # Each resume answers one interrupt; the time and the window are checked again then.
        ctx.store.set_run_status(state.run_id, "waiting_window")
        rlog.info("run.waiting_for_window", reason=closed)
        _stage(ctx, state.run_id, "awaiting_window", "start", ring=ring.name, at=now)
        waiting_for = state.not_before if state.not_before and now < state.not_before else None
        interrupt(
            WindowWait(run_id=state.run_id, reason=closed, ring=ring.name, not_before=waiting_for),
            response_schema=WindowResume,
        )
        waited = True
        now = ctx.clock()
        passed = _cutoff_passed(state, now)
        if passed is not None:  # the window's cutoff passed while waiting
            rlog.warning("run.cutoff_passed", reason=passed)
            _stage(ctx, state.run_id, "awaiting_window", "end", ring=ring.name, at=now)
            return {"outcome": RunOutcome(status="halted", reason=passed)}
        closed = _wait_reason(state, now)
    if waited:
        _stage(ctx, state.run_id, "awaiting_window", "end", ring=ring.name, at=now)
    return None


def deploy_ring_node(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Deploy the current ring; record each host in the store as it starts and ends."""
    assert state.plan is not None
    ctx = runtime.context
    store = ctx.store
    ring = state.rings[state.ring_index]
    rlog = log.bind(run_id=state.run_id, ring=ring.name)
    audit = ctx.audit_log(state.run_id)
    who = _cancelled_by(ctx, state.run_id)
    if who is not None:  # the safe point before a ring: none of its hosts starts
        rlog.info("run.cancelled", by=who)
        return _cancelled(state, ctx, who, from_ring=state.ring_index)
    now = ctx.clock()
    passed = _cutoff_passed(state, now)
    if passed is not None and not state.dry_run:
        later = [r.name for r in state.rings[state.ring_index :] if r.hosts]
        rlog.warning("run.cutoff_passed", reason=passed)
        return {
            "outcome": RunOutcome(
                status="halted",
                reason=f"{passed}; rings not started: {', '.join(later) or ring.name}",
            )
        }
    halted = _wait_for_window(state, ctx, ring, now)
    if halted is not None:
        return halted
    store.set_run_status(state.run_id, "running")

    hosts = _hosts(state)
    ring_hosts = [hosts[name] for name in ring.hosts if name in hosts]
    approved = state.approval is not None and state.approval.status == "approved"
    deploy, _skipped = deployable_items(state.plan, state.testing, approved)
    items_by_host = {h.name: deploy.get(h.name, []) for h in ring_hosts}
    records = {r.host: r for r in store.deployments(state.run_id)}
    done = {
        name: HostDeployment.model_validate(r.result)
        for name, r in records.items()
        if r.state == "done" and r.result is not None and name in items_by_host
    }
    resumed = {name for name, r in records.items() if r.state == "running"}
    if done or resumed:
        rlog.info("run.ring_resumed", done=sorted(done), interrupted=sorted(resumed))

    if ring.hosts:  # an empty ring deploys nothing: no stage
        _stage(ctx, state.run_id, "deployment", "start", ring=ring.name)
    result = deploy_ring(
        ring_hosts,
        items_by_host,
        ctx.settings,
        state.policy,
        dry_run=state.dry_run,
        audit=audit,
        ring=ring.name,
        transport_factory=ctx.transport_factory,
        resumed=resumed,
        done=done,
        hooks=_RunRingHooks(state, ctx, ring.name, items_by_host, done, approved),
    )
    if ring.hosts:  # an empty ring deploys nothing: no stage
        _stage(ctx, state.run_id, "deployment", "end", ring=ring.name)
    failpoint("run.after_ring")
    rejected = [] if state.dry_run else _reject(store, audit, state.run_id, result)
    summary = RingSummary(
        ring=ring.name,
        halted=result.halted,
        reason=result.reason,
        statuses={d.host: _skipped_if_cancelled(d).status for d in result.hosts},
        rejected=tuple(rejected),
    )
    update: dict[str, Any] = {
        "ring_index": state.ring_index + 1,
        "ring_results": [*state.ring_results, summary],
    }
    who = _cancelled_by(ctx, state.run_id)
    if result.halted and who is not None and result.reason == f"cancelled by {who}":
        return {**update, **_cancelled(state, ctx, who, from_ring=state.ring_index + 1)}
    if result.halted:
        later = [r.name for r in state.rings[state.ring_index + 1 :] if r.hosts]
        note = f"; rings not started: {', '.join(later)}" if later else ""
        update["outcome"] = RunOutcome(
            status="halted", reason=f"ring {ring.name} halted: {result.reason}{note}"
        )
    return update


_CANCELLED_BY = "not started: cancelled by "


def _skipped_if_cancelled(deployment: HostDeployment) -> HostDeployment:
    """A host the ring did not start because the run was cancelled: its items ``skipped``
    with the reason ``cancelled by NAME`` (the agent reports them ``pending``)."""
    reason = deployment.reason or ""
    if not reason.startswith(_CANCELLED_BY) or any(
        i.cause != "not-started" for i in deployment.items
    ):
        return deployment
    why = reason.removeprefix("not started: ")
    items = tuple(
        i.model_copy(update={"status": "skipped", "reason": why}) for i in deployment.items
    )
    return deployment.model_copy(update={"items": items, "reason": why})


def _cancelled(state: RunState, ctx: RunContext, who: str, *, from_ring: int) -> dict[str, Any]:
    """End a cancelled run: every planned host of ``rings[from_ring:]`` that has not finished
    is recorded ``skipped`` (reason ``cancelled by NAME``) and the outcome is ``cancelled``."""
    assert state.plan is not None
    store, run_id = ctx.store, state.run_id
    why = f"cancelled by {who}"
    approved = state.approval is not None and state.approval.status == "approved"
    deploy, _skipped = deployable_items(state.plan, state.testing, approved)
    done = {r.host for r in store.deployments(run_id) if r.state == "done"}
    later = state.rings[from_ring:] if state.rings else []
    names = [h for r in later for h in r.hosts] if later else list(deploy)
    ring_of = {h: r.name for r in state.rings for h in r.hosts}
    skipped: list[str] = []
    for name in names:
        items = deploy.get(name, [])
        if name in done or not items:
            continue
        deployment = HostDeployment(
            host=name,
            dry_run=state.dry_run,
            items=tuple(
                ItemDeployment(
                    host=name,
                    package=i.package,
                    from_version=i.from_version,
                    to_version=i.to_version,
                    status="skipped",
                    reason=why,
                    cause="not-started",
                    compliance=compliance_state(i.from_version, i.to_version),
                )
                for i in items
            ),
            reason=why,
            started_at=ctx.clock(),
        )
        store.deployment_finished(
            run_id, name, ring_of.get(name, "-"), deployment.model_dump(mode="json")
        )
        skipped.append(name)
    ctx.audit_log(run_id).record("run.cancelled", details={"by": who, "skipped": skipped})
    log.info("run.cancelled", run_id=run_id, by=who, skipped=skipped)
    note = f"; not started: {', '.join(skipped)}" if skipped else ""
    return {"outcome": RunOutcome(status="cancelled", reason=f"{why}{note}")}


def _record_outcomes(store: Store, run_id: str, deployment: HostDeployment) -> None:
    """Learning history: how each attempted item ended (``Store.outcomes``)."""
    for item in deployment.items:
        status = {"installed": "success", "rolled_back": "rollback", "failed": "failure"}.get(
            item.status
        )
        if status is not None and item.cause not in ("transport", "not-started"):
            store.record_outcome(
                run_id,
                item.host,
                item.package,
                item.from_version,
                item.to_version,
                status,
                item.reason if status != "success" else None,
            )


def _profile(host: Host | None) -> str | None:
    if host is None:
        return None
    tags = ", ".join(sorted(host.tags))
    return f"{tags}; criticality {host.criticality}; {host.exposure.value}"


def _remember_deployment(
    memory: VectorMemory | None,
    run_id: str,
    host: Host | None,
    deployment: HostDeployment,
    *,
    evidence: str | None = None,
) -> None:
    """Write the host's outcomes (and an incident for a failure) to the vector memory;
    ``evidence``: a post-patch analysis' metrics (names, medians, p-values) for the incident."""
    if memory is None:
        return
    from patchpilot.tools.memory import IncidentMemory, OutcomeMemory

    statuses: dict[str, Literal["success", "failure", "rollback"]] = {
        "installed": "success",
        "rolled_back": "rollback",
        "failed": "failure",
    }
    profile = _profile(host)
    try:
        for item in deployment.items:
            status = statuses.get(item.status)
            if status is None or item.cause in ("transport", "not-started"):
                continue
            memory.remember_outcome(
                OutcomeMemory(
                    run_id=run_id,
                    host=item.host,
                    host_profile=_clip(profile, _MEMORY_TEXT) if profile else None,
                    package=item.package,
                    from_version=item.from_version,
                    to_version=item.to_version,
                    status=status,
                    error=(_clip(item.reason, _MEMORY_TEXT) if item.reason else None)
                    if status != "success"
                    else None,
                )
            )
            if status != "success":
                memory.remember_incident(
                    IncidentMemory(
                        run_id=run_id,
                        host=item.host,
                        package=item.package,
                        version=item.to_version,
                        summary=_clip(
                            f"{item.package} {item.to_version} on {item.host} "
                            f"({item.cause or 'error'}): {item.reason}"
                            + (f"; evidence: {evidence}" if evidence else ""),
                            _MEMORY_TEXT,
                        ),
                    )
                )
    except Exception as exc:  # memory is advisory: never fail a deployment for it
        log.warning("run.memory_write_failed", run_id=run_id, error=_clip(str(exc), 500))


def _remember_run(memory: VectorMemory | None, state: RunState, outcome: RunOutcome) -> None:
    """The run's decision (plan, approval, result) as one memory item."""
    if memory is None or state.plan is None or not state.plan.items:
        return
    from patchpilot.tools.memory import DecisionMemory

    packages = sorted({f"{i.package} {i.to_version}" for i in state.plan.items})
    approval = state.approval
    why = [*state.approval_reasons]
    if approval is not None:
        why.append(
            f"{approval.status} by {approval.by}"
            + (f": {approval.comment}" if approval.comment else "")
        )
    try:
        memory.remember_decision(
            DecisionMemory(
                run_id=state.run_id,
                kind="plan",
                subject=", ".join(sorted({i.package for i in state.plan.items}))[:200],
                text=_clip(
                    f"run {state.run_id} planned {', '.join(packages)} on "
                    f"{', '.join(state.plan.hosts)}: {outcome.status}"
                    + (f" ({outcome.reason})" if outcome.reason else ""),
                    _MEMORY_TEXT,
                ),
                rationale=_clip("; ".join(why), _MEMORY_TEXT) or None,
            )
        )
    except Exception as exc:  # memory is advisory: never fail a run for it
        log.warning("run.memory_write_failed", run_id=state.run_id, error=_clip(str(exc), 500))


def _reject(store: Store, audit: AuditLog, run_id: str, result: RingResult) -> list[str]:
    """Reject in the baseline every version that failed its health check (until cleared)."""
    rejected: list[str] = []
    for package, version in result.reject:
        store.reject_version(
            package,
            version,
            reason=f"failed its health check in ring {result.ring} ({result.reason})",
            run_id=run_id,
        )
        audit.record(
            "baseline.rejected",
            package=package,
            details={"version": version, "ring": result.ring, "reason": result.reason},
        )
        rejected.append(f"{package}={version}")
    return rejected


# --------------------------------------------------------------------------- analysis

_COLLECTION_SLACK_S = 60.0
"""Added to a collection's longest expected time before it counts as hung (no data)."""


@dataclass(frozen=True)
class _AnalysisScope:
    """Who a ring's analysis compares, on which metrics."""

    canary: tuple[Host, ...]
    peers: tuple[Host, ...]
    packages: tuple[str, ...]
    specs: tuple[MetricSpec, ...]
    mode: BaselineUsed


def _analysis_scope(
    state: RunState, index: int, canary_names: Sequence[str]
) -> _AnalysisScope | None:
    """The analysis of ring ``index`` with ``canary_names`` patched (``None``: none to run:
    analysis off, a dry run or a rollback run, nothing patched, no metric selected).

    Peers are hosts of later rings that will get one of the same packages (so they run it,
    unpatched) and that the selected metrics apply to. ``baseline: peers`` without any falls
    back to ``baseline_fallback`` (``self``: the hosts' own pre-patch window).
    """
    config = state.policy.analysis
    if not config.enabled or state.dry_run or state.rollback or state.plan is None:
        return None
    hosts = _hosts(state)
    approved = state.approval is not None and state.approval.status == "approved"
    deploy, _skipped = deployable_items(state.plan, state.testing, approved)
    canary = tuple(hosts[n] for n in canary_names if n in hosts)
    packages = tuple(sorted({i.package for h in canary for i in deploy.get(h.name, [])}))
    if not canary or not packages:
        return None
    chosen = {m.name for h in canary for m in config.metrics_for(h, packages)}
    specs = tuple(m for m in config.metrics if m.name in chosen)
    if not specs:
        return None
    later = [n for ring in state.rings[index + 1 :] for n in ring.hosts]
    peers = tuple(
        hosts[n]
        for n in dict.fromkeys(later)
        if n in hosts
        and n not in canary_names
        and any(i.package in packages for i in deploy.get(n, []))
        and config.metrics_for(hosts[n], packages)
    )
    mode: BaselineUsed = config.baseline.value
    if mode == "peers" and not peers:
        fallback = config.baseline_fallback
        mode = fallback.value if fallback is not None else "none"
    return _AnalysisScope(
        canary=canary,
        peers=peers if mode == "peers" else (),
        packages=packages,
        specs=specs,
        mode=mode,
    )


def _ring_targets(state: RunState, index: int) -> list[str]:
    """The hosts of ring ``index`` with something to deploy (before it is deployed)."""
    if state.plan is None:
        return []
    approved = state.approval is not None and state.approval.status == "approved"
    deploy, _skipped = deployable_items(state.plan, state.testing, approved)
    return [n for n in state.rings[index].hosts if deploy.get(n)]


def _pre_baseline_due(state: RunState) -> bool:
    """Ring ``ring_index`` compares its hosts with themselves: sample them before the patch."""
    if state.ring_index >= len(state.rings):
        return False
    ring = state.rings[state.ring_index]
    if ring.name in state.analysis_baselines:
        return False
    scope = _analysis_scope(state, state.ring_index, _ring_targets(state, state.ring_index))
    return scope is not None and scope.mode == "self"


def _patched(state: RunState) -> tuple[int, list[str]] | None:
    """The ring deployed last and its patched hosts (``None``: no ring deployed yet)."""
    index = state.ring_index - 1
    if index < 0 or not state.ring_results or index >= len(state.rings):
        return None
    ring = state.rings[index]
    summary = state.ring_results[-1]
    if summary.ring != ring.name:
        return None
    return index, [n for n in ring.hosts if summary.statuses.get(n) == "installed"]


def _analysis_due(state: RunState) -> bool:
    """The ring deployed last has an analysis that has not run yet."""
    patched = _patched(state)
    if patched is None or state.ring_results[-1].halted:
        return False
    index, names = patched
    if any(a.ring == state.rings[index].name for a in state.analyses):
        return False
    return _analysis_scope(state, index, names) is not None


def collection_bound(window: MetricWindow, specs: Sequence[MetricSpec]) -> float:
    """How long one collection may take before it counts as hung: every sample at its
    interval plus the slowest metric's request timeout, plus a minute."""
    timeout = max((float(getattr(s, "timeout_s", 10.0)) for s in specs), default=10.0)
    return window.count * (window.interval_s + timeout) + _COLLECTION_SLACK_S


def _collect(
    ctx: RunContext,
    hosts: Sequence[Host],
    specs_for: Callable[[Host], Sequence[MetricSpec]],
    window: MetricWindow,
    specs: Sequence[MetricSpec],
) -> tuple[dict[str, dict[str, MetricSeries]], str | None]:
    """Sample ``hosts`` over ``window`` through the context's collector, bounded in time.

    Never raises: no collector, a provider error or a collection past its bound gives no
    samples and the reason (the judge's ``nodata``, never a pass).
    """
    if not hosts:
        return {}, None
    if ctx.metrics is None:
        return {}, "no metric providers on this run"
    bound = ctx.analysis_timeout_s or collection_bound(window, specs)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analysis-collect")
    collector: MetricsCollector | None = None
    try:
        collector = ctx.metrics()
        future = pool.submit(collector.collect, hosts, specs_for, window)
        found = future.result(timeout=bound)
        return {h: dict(series) for h, series in found.items()}, None
    except FuturesTimeout:
        return {}, f"metric collection did not finish within {bound:.0f} s"
    except Exception as exc:  # a provider error is no data, never a pass
        return {}, _clip(f"metric collection failed: {type(exc).__name__}: {exc}", 500)
    finally:
        if collector is not None:
            try:
                collector.close()
            except Exception as exc:
                log.warning("run.analysis_close_failed", error=_clip(str(exc), 500))
        pool.shutdown(wait=False, cancel_futures=True)


def _nodata_reasons(
    specs: Sequence[MetricSpec],
    sides: Mapping[str, tuple[Mapping[str, Mapping[str, MetricSeries]], Sequence[str]]],
    problem: Mapping[str, str | None],
) -> dict[str, str]:
    """Per metric, why a side has no samples (``side host: reason``), for the evidence."""
    reasons: dict[str, str] = {}
    for spec in specs:
        why: list[str] = []
        for side, (series, names) in sides.items():
            if problem.get(side):
                why.append(f"{side}: {problem[side]}")
                continue
            for name in names:
                got = series.get(name, {}).get(spec.name)
                if got is None:
                    why.append(f"{side} {name}: not measured")
                elif got.nodata:
                    why.append(f"{side} {name}: {got.nodata_reason or 'no samples'}")
        if why:
            reasons[spec.name] = _clip("; ".join(why), 1000)
    return reasons


def analysis_baseline(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Sample the next ring's hosts before they are patched (their analysis compares them with
    themselves: ``baseline: self``, or ``peers`` without any). Read-only: it may run again.

    The ring waits for its window first (so the window is the one just before the patch); a
    cancelled run or a passed cutoff samples nothing (``deploy_ring`` ends the run then).
    """
    ctx = runtime.context
    ring = state.rings[state.ring_index]
    if _cancelled_by(ctx, state.run_id) is not None or _cutoff_passed(state, ctx.clock()):
        return {}
    halted = _wait_for_window(state, ctx, ring, ctx.clock())
    if halted is not None:
        return halted
    names = _ring_targets(state, state.ring_index)
    scope = _analysis_scope(state, state.ring_index, names)
    if scope is None:
        return {}
    config = state.policy.analysis
    window = MetricWindow(start=ctx.clock(), interval_s=config.interval_s, count=config.count)
    log.info(
        "run.analysis_baseline",
        run_id=state.run_id,
        ring=ring.name,
        hosts=[h.name for h in scope.canary],
        metrics=[s.name for s in scope.specs],
    )
    series, problem = _collect(
        ctx,
        scope.canary,
        lambda host: config.metrics_for(host, scope.packages),
        window,
        scope.specs,
    )
    pre = PreBaseline(
        ring=ring.name,
        hosts=tuple(h.name for h in scope.canary),
        started_at=window.start,
        series=series,
        problem=problem,
    )
    return {"analysis_baselines": {**state.analysis_baselines, ring.name: pre}}


def after_analysis_baseline(state: RunState) -> Literal["deploy_ring", "finish"]:
    """The cutoff passed while waiting for the window: ``finish``; else deploy the ring."""
    return "finish" if state.outcome is not None else "deploy_ring"


def analysis_node(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Judge the ring just deployed: wait the soak, sample its patched hosts and the baseline
    over ``count`` x ``interval_s``, and judge them (:func:`patchpilot.agents.analysis.judge`).

    Read-only: after a crash (during the soak or the sampling) a resume runs it again; the
    ring is never deployed again. What to do about the verdict is :func:`analysis_decision`.
    """
    ctx = runtime.context
    patched = _patched(state)
    assert patched is not None
    index, names = patched
    ring = state.rings[index]
    scope = _analysis_scope(state, index, names)
    assert scope is not None
    config = state.policy.analysis
    rlog = log.bind(run_id=state.run_id, ring=ring.name)
    _stage(ctx, state.run_id, "analysis", "start", ring=ring.name)
    rlog.info("run.analysis_soak", soak_s=config.soak_s, baseline=scope.mode)
    ctx.sleep(config.soak_s)
    failpoint("run.analysis_soak")
    window = MetricWindow(start=ctx.clock(), interval_s=config.interval_s, count=config.count)
    canary_names = [h.name for h in scope.canary]
    peer_names = [h.name for h in scope.peers]
    measured, problem = _collect(
        ctx,
        [*scope.canary, *scope.peers],
        lambda host: config.metrics_for(host, scope.packages),
        window,
        scope.specs,
    )
    canary = pooled(measured, canary_names)
    problems: dict[str, str | None] = {"canary": problem}
    if scope.mode == "peers":
        base_series: Mapping[str, Mapping[str, MetricSeries]] = measured
        base_names = peer_names
        problems["baseline"] = problem
    elif scope.mode == "self":
        pre = state.analysis_baselines.get(ring.name)
        base_series = pre.series if pre is not None else {}
        base_names = canary_names
        problems["baseline"] = "no pre-patch window was sampled" if pre is None else pre.problem
    else:
        base_series, base_names = {}, []
        problems["baseline"] = "no unpatched peer and no baseline_fallback"
    baseline = pooled(base_series, base_names)
    reasons = _nodata_reasons(
        scope.specs,
        {"canary": (measured, canary_names), "baseline": (base_series, base_names)},
        problems,
    )
    verdict = judge(baseline, canary, scope.specs, config, nodata_reasons=reasons)
    _stage(ctx, state.run_id, "analysis", "end", ring=ring.name)
    entry = RingAnalysis(
        ring=ring.name,
        baseline_mode=scope.mode,
        canary_hosts=tuple(canary_names),
        baseline_hosts=tuple(base_names),
        started_at=window.start,
        result=verdict,
    )
    ctx.audit_log(state.run_id).record(
        "analysis.judged",
        details={
            "ring": ring.name,
            "verdict": verdict.verdict.value,
            "score": verdict.score,
            "baseline": scope.mode,
            "canary": canary_names,
            "baseline_hosts": base_names,
            "reason": verdict.reason,
            "metrics": {m.name: m.classification.value for m in verdict.metrics},
        },
    )
    rlog.info("run.analysis_judged", verdict=verdict.verdict.value, score=verdict.score)
    return {"analyses": [*state.analyses, entry]}


def _evidence_text(entry: RingAnalysis) -> str:
    """The analysis' evidence in one line (memory incidents, baseline rejections)."""

    def median(value: float | None, unit: str) -> str:
        if value is None:
            return "?"
        return f"{value * 1000:.1f} ms" if unit == "seconds" else f"{value:.4g}"

    parts = []
    for m in entry.result.metrics:
        p = f"p={m.p_value:.2g}" if m.p_value is not None else "p=n/a"
        failed = f", {m.failed_measurements} failed measurement(s)" if m.failed_measurements else ""
        parts.append(
            f"{m.name} {m.classification.value}: baseline median "
            f"{median(m.baseline.median, m.unit)} mean {median(m.baseline.mean, m.unit)} "
            f"(n={m.baseline.n}), canary median {median(m.canary.median, m.unit)} mean "
            f"{median(m.canary.mean, m.unit)} (n={m.canary.n}), {p}{failed}"
        )
    base = ", ".join(entry.baseline_hosts) or "none"
    return (
        f"post-patch analysis of ring {entry.ring} (canary {', '.join(entry.canary_hosts)}; "
        f"baseline {entry.baseline_mode}: {base}): {entry.result.verdict.value}, score "
        f"{entry.result.score:g}; " + "; ".join(parts)
    )


def _analysis_hash(state: RunState, entry: RingAnalysis) -> str:
    """What a person approves on a marginal analysis: the plan and this evidence."""
    assert state.plan is not None
    body = json.dumps(
        {"plan": state.plan.content_hash, "analysis": entry.model_dump(mode="json")},
        sort_keys=True,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def _ask_about_analysis(
    state: RunState, ctx: RunContext, entry: RingAnalysis
) -> tuple[ApprovalDecision, str]:
    """Ask a person (``interrupt``) whether the rollout continues after a marginal or nodata
    analysis, through the run's approval path (``patchpilot approve`` / ``reject``); the
    decision and the content hash asked about. Writes only idempotently before the interrupt.
    """
    assert state.plan is not None
    plan = state.plan
    plan_id = f"{plan.plan_id}/analysis/{entry.ring}"
    content_hash = _analysis_hash(state, entry)
    verdict = entry.result
    reasons = [
        _clip(
            f"post-patch analysis of ring {entry.ring}: {verdict.verdict.value} (score "
            f"{verdict.score:g}): {verdict.reason}; approve to continue the rollout, reject "
            f"to roll ring {entry.ring} back and halt",
            _REASON_TEXT,
        )
    ]
    existing = ctx.store.approval(state.run_id)
    if existing is None or existing.plan_id != plan_id:
        now = ctx.clock()
        expires = now + timedelta(hours=state.policy.approvals.expires_after_hours)
        if state.window_end is not None:
            expires = min(expires, max(state.window_end, now + timedelta(minutes=1)))
        request = approval_request(state, reasons, expires)
        request = request.model_copy(
            update={
                "plan_id": plan_id,
                "content_hash": content_hash,
                "items": [i for i in request.items if i.host in entry.canary_hosts],
                "stage": "analysis",
                "analysis": entry,
            }
        )
        ctx.store.request_approval(
            state.run_id,
            plan_id,
            content_hash,
            reasons,
            request.payload(),
            requested_at=now,
            expires_at=expires,
        )
        ctx.audit_log(state.run_id).record(
            "approval.requested",
            details={
                "plan_id": plan_id,
                "content_hash": content_hash,
                "reasons": reasons,
                "stage": "analysis",
                "expires_at": expires.isoformat(),
            },
        )
        existing = ctx.store.approval(state.run_id)
    assert existing is not None
    if existing.status == "pending":
        ctx.store.set_run_status(state.run_id, "awaiting_approval")
    _stage(
        ctx, state.run_id, "awaiting_approval", "start", ring=entry.ring, at=existing.requested_at
    )
    decision = interrupt(
        ApprovalRequest.model_validate(existing.payload), response_schema=ApprovalDecision
    )
    _stage(ctx, state.run_id, "awaiting_approval", "end", ring=entry.ring, at=decision.at)
    return decision, existing.content_hash


def analysis_decision(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Act on the ring's analysis: ``pass`` → the next ring; ``fail`` → roll the ring's
    patched hosts back, reject the version in the baseline with the evidence, halt;
    ``marginal`` / ``nodata`` → a person decides (approve: continue; reject or expiry: roll
    the ring back and halt, without a baseline rejection)."""
    ctx = runtime.context
    entry = state.analyses[-1]
    if entry.action is not None:
        return {}
    verdict = entry.result.verdict
    audit = ctx.audit_log(state.run_id)
    if verdict is Verdict.PASS:
        audit.record("analysis.passed", details={"ring": entry.ring, "score": entry.result.score})
        return {"analyses": [*state.analyses[:-1], entry.model_copy(update={"action": "continue"})]}
    if verdict is Verdict.FAIL:
        return _roll_back_ring(state, ctx, entry, reason=entry.result.reason, reject=True)
    decision, content_hash = _ask_about_analysis(state, ctx, entry)
    if decision.status == "approved" and decision.content_hash == content_hash:
        ctx.store.set_run_status(state.run_id, "running")
        audit.record(
            "analysis.continued",
            details={"ring": entry.ring, "verdict": verdict.value, "by": decision.by},
        )
        done = entry.model_copy(update={"action": "continue", "decided_by": decision.by})
        return {"analyses": [*state.analyses[:-1], done]}
    if decision.content_hash != content_hash:
        why = f"the decision was for other evidence ({decision.content_hash[:12]})"
    elif decision.status == "expired":
        why = "the approval to continue expired"
    else:
        note = f": {_clip(decision.comment, 500)}" if decision.comment else ""
        why = f"rejected by {decision.by}{note}"
    ctx.store.set_run_status(state.run_id, "running")
    return _roll_back_ring(
        state,
        ctx,
        entry,
        reason=f"{entry.result.reason}; {why}",
        reject=False,
        by=decision.by,
    )


def _roll_back_ring(
    state: RunState,
    ctx: RunContext,
    entry: RingAnalysis,
    *,
    reason: str,
    reject: bool,
    by: str | None = None,
) -> dict[str, Any]:
    """Roll the ring's patched hosts back (the deployment agent's rollback), record them,
    reject the versions in the baseline when ``reject`` (with the evidence), halt the run."""
    assert state.plan is not None
    store, run_id = ctx.store, state.run_id
    audit = ctx.audit_log(run_id)
    hosts = _hosts(state)
    approved = state.approval is not None and state.approval.status == "approved"
    deploy, _skipped = deployable_items(state.plan, state.testing, approved)
    records = {r.host: r for r in store.deployments(run_id)}
    summary = state.ring_results[-1]
    statuses = dict(summary.statuses)
    evidence = _evidence_text(entry)
    reason = _clip(reason, _REASON_TEXT)
    undone: list[tuple[str, str]] = []
    for name in entry.canary_hosts:
        record = records.get(name)
        host = hosts.get(name)
        if record is None or record.result is None or host is None:
            continue
        deployment = HostDeployment.model_validate(record.result)
        if not any(i.cause == "analysis" for i in deployment.items):  # not rolled back yet
            items = deploy.get(name, [])
            packages = [i.package for i in items]
            deployment = roll_back_host(
                host,
                items,
                deployment,
                ctx.settings,
                state.policy.checks_for(host, packages),
                reason=reason,
                audit=audit,
                transport_factory=ctx.transport_factory,
            )
            store.deployment_finished(run_id, name, entry.ring, deployment.model_dump(mode="json"))
            _record_outcomes(store, run_id, deployment)
            _remember_deployment(ctx.memory, run_id, host, deployment, evidence=evidence)
        statuses[name] = deployment.status
        undone += [(i.package, i.to_version) for i in deployment.items if i.cause == "analysis"]
    rejected: list[str] = []
    if reject:
        for package, version in sorted(set(undone)):
            store.reject_version(
                package,
                version,
                reason=_clip(f"failed post-patch analysis in ring {entry.ring}: {evidence}", 4000),
                run_id=run_id,
            )
            audit.record(
                "baseline.rejected",
                package=package,
                details={"version": version, "ring": entry.ring, "reason": entry.result.reason},
            )
            rejected.append(f"{package}={version}")
    audit.record(
        "analysis.rolled_back",
        details={"ring": entry.ring, "hosts": list(entry.canary_hosts), "reason": reason},
    )
    index = next(i for i, r in enumerate(state.rings) if r.name == entry.ring)
    later = [r.name for r in state.rings[index + 1 :] if r.hosts]
    note = f"; rings not started: {', '.join(later)}" if later else ""
    halted = summary.model_copy(
        update={
            "halted": True,
            "reason": reason,
            "statuses": statuses,
            "rejected": (*summary.rejected, *rejected),
        }
    )
    done = entry.model_copy(update={"action": "rolled_back", "decided_by": by})
    log.warning("run.analysis_rolled_back", run_id=run_id, ring=entry.ring, reason=reason)
    return {
        "ring_results": [*state.ring_results[:-1], halted],
        "analyses": [*state.analyses[:-1], done],
        "outcome": RunOutcome(
            status="halted",
            reason=_clip(
                f"ring {entry.ring} halted: {reason}; rolled back: "
                f"{', '.join(entry.canary_hosts)}{note}",
                _REASON_TEXT,
            ),
        ),
    }


def after_analysis(state: RunState) -> Literal["analysis_baseline", "deploy_ring", "finish"]:
    """Rolled back (halted): ``finish``; else the next ring."""
    return _next_ring(state)


def after_ring(
    state: RunState,
) -> Literal["analysis", "analysis_baseline", "deploy_ring", "finish"]:
    """The ring's post-patch analysis when it has one, else the next ring, or ``finish`` when
    halted or done."""
    if state.outcome is not None:
        return "finish"
    if _analysis_due(state):
        return "analysis"
    return _next_ring(state)


def _next_ring(state: RunState) -> Literal["analysis_baseline", "deploy_ring", "finish"]:
    """The next ring (its pre-patch window first for an analysis against ``self``)."""
    if state.outcome is not None or state.ring_index >= len(state.rings):
        return "finish"
    if _pre_baseline_due(state):
        return "analysis_baseline"
    return "deploy_ring"


def _final_outcome(state: RunState, unreached: Mapping[str, str]) -> RunOutcome:
    """The run's outcome, with the hosts it could not reach counted as failures."""
    outcome = state.outcome or RunOutcome(status="completed")
    if outcome.status != "completed" or not unreached:
        return outcome
    text = _not_reached_text(unreached, len(state.hosts))
    if len(unreached) == len(state.hosts):
        return RunOutcome(status="failed", reason=text)
    reason = f"{outcome.reason}; {text}" if outcome.reason else text
    return RunOutcome(status="partial", reason=reason)


def finish(state: RunState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Close the run: status and a summary in the store, an audit event."""
    ctx = runtime.context
    unreached = unreached_hosts(state)
    outcome = _final_outcome(state, unreached)
    statuses: dict[str, int] = {}
    for record in ctx.store.deployments(state.run_id):
        for item in (record.result or {}).get("items", []):
            statuses[item["status"]] = statuses.get(item["status"], 0) + 1
    summary = {
        "status": outcome.status,
        "reason": outcome.reason,
        "dry_run": state.dry_run,
        "plan_id": state.plan.plan_id if state.plan else None,
        "content_hash": state.plan.content_hash if state.plan else None,
        "items": len(state.plan.items) if state.plan else 0,
        "deployments": statuses,
        "hosts": len(state.hosts),
        "hosts_failed": list(unreached),
        "unreachable": dict(unreached),
        "rings": [r.model_dump(mode="json") for r in state.ring_results],
        "data_quality": data_quality_summary(state.data_quality),
    }
    if not state.dry_run:
        _remember_run(ctx.memory, state, outcome)
    before = ctx.llm.usage if ctx.llm is not None else None
    text, how = _summarize(state, outcome, ctx)
    mine = [{"task": "run_summary", **how}]
    spent = usage_since(before, ctx.llm)
    summary["summary_text"] = text
    summary["assistance"] = [*state.assistance, *mine]
    if ctx.llm is not None or state.llm_usage:
        # Every step's spending, in whichever process ran it (the start, `approve`, `resume`).
        summary["llm_usage"] = sum_usage([*state.llm_usage, *spent]).model_dump(mode="json")
    failpoint("run.finish")
    ctx.store.finish_run(state.run_id, status=outcome.status, summary=summary)
    ctx.audit_log(state.run_id).record(
        "run.finished", details={"status": outcome.status, "reason": outcome.reason}
    )
    log.info("run.finished", run_id=state.run_id, status=outcome.status, reason=outcome.reason)
    return {"outcome": outcome, "assistance": mine, "llm_usage": spent}


def _summarize(state: RunState, outcome: RunOutcome, ctx: RunContext) -> tuple[str, dict[str, Any]]:
    """The run's human summary (LLM-written when possible; never fails the run)."""
    from patchpilot.agents.reporting import summarize_run, summary_text
    from patchpilot.graphs.run_document import run_document

    snapshot = RunSnapshot(state=state, next=(), interrupts=())
    result = RunResult(run_id=state.run_id, status=outcome.status, reason=outcome.reason)
    document = run_document(
        result, snapshot, ctx.store.deployments(state.run_id), ctx.store.approval(state.run_id)
    )
    try:
        return summarize_run(document, ctx.llm)
    except Exception as exc:  # the summary is advisory: the deterministic one always works
        log.warning("run.summary_failed", run_id=state.run_id, error=_clip(str(exc), 500))
        return summary_text(document), {"by": "core", "reason": f"summary failed: {exc}"[:500]}


# --------------------------------------------------------------------------- wiring


def build_run_graph() -> StateGraph[RunState, RunContext, RunState, RunState]:
    """The uncompiled patch-run graph (compile it with a checkpointer)."""
    g = StateGraph(RunState, context_schema=RunContext)
    g.add_node("begin", begin)
    # The scan's nodes take Runtime[ScanContext]; RunContext is a ScanContext (Runtime is
    # invariant for the type checker, not at run time).
    # Stages are recorded around the steps (StageRecorder); approve and deploy_ring record
    # their waits and each ring's deployment themselves.
    g.add_node("discover_host", _timed("discovery", discover_host_node), input_schema=HostTask)
    g.add_node("source", _timed("sourcing", source))
    g.add_node("assess_host", _timed("assessment", assess_host_node), input_schema=HostTask)
    g.add_node("prioritize", _timed("assessment", prioritize_node))
    g.add_node("plan_patch", _timed("planning", plan_patch))
    g.add_node("test", _timed("testing", testing_node))
    g.add_node("schedule", _timed("planning", schedule))
    g.add_node("approve", approve)
    g.add_node("analysis_baseline", analysis_baseline)
    g.add_node("deploy_ring", deploy_ring_node)
    g.add_node("analysis", analysis_node)
    g.add_node("analysis_decision", analysis_decision)
    g.add_node("finish", _timed("finish", finish))
    g.add_edge(START, "begin")
    g.add_conditional_edges("begin", fan_out_discovery, ["discover_host"])
    g.add_edge("discover_host", "source")
    g.add_conditional_edges("source", fan_out_assessment, ["assess_host", "prioritize"])
    g.add_edge("assess_host", "prioritize")
    g.add_edge("prioritize", "plan_patch")
    g.add_conditional_edges("plan_patch", after_plan, ["test", "finish"])
    g.add_edge("test", "schedule")
    g.add_edge("schedule", "approve")
    g.add_conditional_edges(
        "approve", after_approve, ["analysis_baseline", "deploy_ring", "finish"]
    )
    g.add_conditional_edges("analysis_baseline", after_analysis_baseline, ["deploy_ring", "finish"])
    g.add_conditional_edges(
        "deploy_ring", after_ring, ["analysis", "analysis_baseline", "deploy_ring", "finish"]
    )
    g.add_edge("analysis", "analysis_decision")
    g.add_conditional_edges(
        "analysis_decision", after_analysis, ["analysis_baseline", "deploy_ring", "finish"]
    )
    g.add_edge("finish", END)
    return g


class RunResult(_Frozen):
    """Where a run stands after a call: finished, or waiting at an interrupt."""

    run_id: str
    status: RunStatus
    reason: str | None = None
    waiting: Literal["approval", "window"] | None = None
    interrupt: dict[str, Any] | None = None


def _result(
    run_id: str, values: dict[str, Any], interrupts: tuple[dict[str, Any], ...]
) -> RunResult:
    if interrupts:
        pending = parse_interrupt(interrupts[0])
        if isinstance(pending, ApprovalRequest):
            return RunResult(
                run_id=run_id,
                status="awaiting_approval",
                reason="; ".join(pending.reasons),
                waiting="approval",
                interrupt=pending.payload(),
            )
        return RunResult(
            run_id=run_id,
            status="halted",
            reason=pending.reason,
            waiting="window",
            interrupt=pending.payload(),
        )
    outcome = values.get("outcome")
    if isinstance(outcome, dict):
        outcome = RunOutcome.model_validate(outcome)
    if outcome is None:
        return RunResult(run_id=run_id, status="failed", reason="the run stopped unfinished")
    return RunResult(run_id=run_id, status=outcome.status, reason=outcome.reason)


def _drive(run_id: str, context: RunContext, payload: RunState | Command[Any] | None) -> RunResult:
    config = _config(run_id, context.settings)
    with run_lock(context.settings, run_id), _checkpointer(context.settings) as saver:
        graph = build_run_graph().compile(checkpointer=saver)
        try:
            graph.invoke(payload, config, context=context, durability="sync")
        except Exception as exc:  # any step, after any side effect: end in a status, resumable
            snapshot = graph.get_state(config)
            return _record_failure(run_id, context, exc, tuple(snapshot.next))
        snapshot = graph.get_state(config)
        return _result(
            run_id,
            dict(snapshot.values),
            tuple(_interrupt_json(i.value) for i in snapshot.interrupts),
        )


def _record_failure(
    run_id: str, context: RunContext, exc: Exception, pending: tuple[str, ...]
) -> RunResult:
    """End a run whose step raised: ``failed`` with the reason (store, audit log, result).

    The checkpoint is left as it is (the failed step is still the next one), so ``patchpilot
    resume RUN_ID`` runs that step again once the cause is fixed. Recording the failure must not
    fail in turn: a store or audit error here is logged and the failed result still returned.
    """
    where = ", ".join(pending) or "the run"
    reason = _clip(f"{where} failed: {type(exc).__name__}: {exc}", _REASON_TEXT)
    log.error("run.step_failed", run_id=run_id, step=where, error=reason)
    log.debug("run.step_failed_traceback", run_id=run_id, exc_info=exc)
    summary = {"status": "failed", "reason": reason, "failed_step": list(pending)}
    try:
        if context.store.get_run(run_id) is not None:
            context.store.finish_run(run_id, status="failed", summary=summary)
    except Exception as store_exc:
        log.error("run.failure_not_recorded", run_id=run_id, error=str(store_exc))
    try:
        context.audit_log(run_id).record("run.failed", details=summary)
    except Exception as audit_exc:
        log.error("run.failure_not_audited", run_id=run_id, error=str(audit_exc))
    return RunResult(run_id=run_id, status="failed", reason=reason)


def start_run(
    hosts: list[Host],
    context: RunContext,
    *,
    target: str,
    policy: Policy,
    only: list[tuple[str, str | None]] | None = None,
    dry_run: bool = False,
    offline: bool = True,
    refresh: bool = False,
    limit: str | None = None,
    run_id: str | None = None,
    rollback: dict[str, str] | None = None,
    must_approve: str | None = None,
    not_before: datetime | None = None,
    trigger: Trigger = "cli",
    schedule_id: str | None = None,
    window_end: datetime | None = None,
    cutoff_at: datetime | None = None,
    security_only: bool = False,
) -> RunResult:
    """Run the whole graph until it ends or waits (approval, window, not-before time).

    ``rollback`` (host -> version) plans a downgrade of ``only[0]``'s package instead of
    applying the baseline to pending updates. ``not_before`` (naive: UTC): no host starts
    before it; the deployment starts at ``max(not_before, the next window opening)`` (the run
    waits as for a closed window: ``waiting: window``, ``patchpilot resume`` continues it).
    Planning, testing and the approval happen at once, so a person can approve before then.
    ``trigger`` says what started the run (``schedule_id`` for a schedule); a scheduled run's
    approval expires at ``window_end`` at the latest and no host starts from ``cutoff_at`` on
    (aware datetimes). ``security_only``: plan only updates that close a known security
    advisory; the others are listed as excluded (``not a security update``).
    """
    if rollback and (not only or len(only) != 1):
        raise ValueError("a rollback names exactly one package in only")
    if not_before is not None and not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=UTC)  # ChatRequest.not_before is UTC
    run_id = run_id or new_run_id()
    state = RunState(
        run_id=run_id,
        target=target,
        hosts=hosts,
        offline=offline,
        refresh=refresh,
        policy=policy,
        only=list(only or []),
        dry_run=dry_run,
        limit=limit,
        rollback=dict(rollback or {}),
        must_approve=must_approve,
        not_before=not_before.astimezone(UTC) if not_before is not None else None,
        trigger=trigger,
        schedule_id=schedule_id,
        window_end=window_end.astimezone(UTC) if window_end is not None else None,
        cutoff_at=cutoff_at.astimezone(UTC) if cutoff_at is not None else None,
        security_only=security_only,
    )
    return _drive(run_id, context, state)


class RunSnapshot(BaseModel):
    """A run's checkpointed state, what runs next, and its pending interrupts (read-only)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    state: RunState
    next: tuple[str, ...]
    interrupts: tuple[dict[str, Any], ...]


def load_run_state(run_id: str, settings: Settings) -> RunSnapshot | None:
    """The run's last checkpoint (``None``: no such run in the checkpoints)."""
    with _checkpointer(settings) as saver:
        graph = build_run_graph().compile(checkpointer=saver)
        snapshot = graph.get_state(_config(run_id, settings))
    if not snapshot.values:
        return None
    return RunSnapshot(
        state=RunState.model_validate(dict(snapshot.values)),
        next=tuple(snapshot.next),
        interrupts=tuple(_interrupt_json(i.value) for i in snapshot.interrupts),
    )


def _interrupt_json(value: object) -> dict[str, Any]:
    """A pending interrupt's payload as JSON (the run document and the CLI read it)."""
    return parse_interrupt(value).payload()


def result_of(run_id: str, snapshot: RunSnapshot, *, failure: str | None = None) -> RunResult:
    """Where a run stands from its checkpoint alone (no side effects).

    ``failure``: the reason recorded when a step raised (the store's summary), shown instead of
    the generic "stopped before" for a run that stopped on an error.
    """
    if snapshot.interrupts:
        return _result(run_id, {}, snapshot.interrupts)
    if snapshot.next:
        return RunResult(
            run_id=run_id,
            status="failed",
            reason=(failure + "; " if failure else "")
            + f"the run stopped before {', '.join(snapshot.next)}"
            + ("" if failure else " (interrupted or crashed)")
            + "; `patchpilot resume` continues it",
        )
    return _result(run_id, {"outcome": snapshot.state.outcome}, ())


def continue_run(
    run_id: str, context: RunContext, *, decision: ApprovalDecision | None = None
) -> RunResult:
    """Resume a run: after a crash, with an approval decision, or to re-check the window.

    Raises:
        LookupError: no checkpoint for ``run_id``.
    """
    snap = load_run_state(run_id, context.settings)
    if snap is None:
        raise LookupError(f"no checkpoint for run {run_id}")
    if snap.interrupts:
        if isinstance(parse_interrupt(snap.interrupts[0]), ApprovalRequest):
            if decision is None:
                return _result(run_id, {}, snap.interrupts)
            resume: ApprovalDecision | WindowResume = ApprovalDecision.model_validate(decision)
        else:
            resume = WindowResume(by=context.audit_log(run_id).actor)
        return _drive(run_id, context, Command(resume=resume.model_dump(mode="json")))
    if not snap.next:
        return result_of(run_id, snap)
    return _drive(run_id, context, None)

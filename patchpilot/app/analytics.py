"""Process analytics of the patch runs, and the predicted impact of a plan's waves.

**Analytics** (:func:`analytics`, ``patchpilot analytics``, ``GET /api/v1/analytics``): from
the run records in the store, for the patch runs started in the last ``since_days`` days that
have ended:

- every stage's duration (``run_stages``: discovery, sourcing, assessment, planning, testing,
  awaiting approval, awaiting window, deployment, analysis, finish; the per-ring stages summed
  per run, and each ring's deployment on its own row): runs, median, p90 and total, and its
  share of the total lead time;
- lead time per run (start to end), hosts deployed per hour of deployment, the hosts'
  rollback and failure rates (``run_deployments``), the runs' failure rate (``failed``,
  ``halted``, ``partial``), and the approval wait (request to decision, ``approvals``);
- the **bottleneck**: the stage with the largest share of lead time, in plain words
  ("approval waits are 78 % of lead time; median 19 h"), and what would shorten it (a fixed
  rule table, :data:`SUGGESTIONS`).

Deterministic: the same store gives the same document (apart from ``generated_at``); medians
and p90 (linear interpolation) are computed here, rounded to the second.

**Predicted impact** (:func:`predicted_impact`): for each wave of each ring of a plan, the
hosts, how many are in flight at once (``rate.max_concurrency``), the services expected to
restart and the expected duration, from the past host deployments of the same packages
(``run_deployments``: their durations and restarted services).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from patchpilot.agents.scheduling import resolve_count, waves
from patchpilot.core.errors import InvalidInputError, UnknownTargetError
from patchpilot.core.models import utcnow
from patchpilot.core.plan import PatchPlan
from patchpilot.core.settings import Settings
from patchpilot.core.store import RunRecord, Store
from patchpilot.core.store.records import ApprovalRecord, DeploymentRecord
from patchpilot.core.store.stages import STAGES, StageRecord

__all__ = [
    "FAILED_RUN_STATUSES",
    "SCHEMA",
    "STAGE_WORDS",
    "SUGGESTIONS",
    "Analytics",
    "ImpactPrediction",
    "StageStats",
    "WaveImpact",
    "analytics",
    "human_seconds",
    "percentile",
    "predicted_impact",
    "run_impact",
]

SCHEMA: Final = "patchpilot.analytics/v1"
IMPACT_SCHEMA: Final = "patchpilot.impact/v1"
MAX_RUNS: Final = 100_000
"""Most patch runs one report reads."""
FAILED_RUN_STATUSES: Final = frozenset({"failed", "halted", "partial"})
"""Run statuses that count as a failed run."""
_ENDED: Final = frozenset({"completed", "failed", "halted", "partial", "rejected", "cancelled"})

STAGE_WORDS: Final[Mapping[str, str]] = {
    "discovery": "discovery",
    "sourcing": "sourcing (feeds)",
    "assessment": "assessment",
    "planning": "planning",
    "testing": "testing",
    "awaiting_approval": "approval waits",
    "awaiting_window": "waits for a maintenance window",
    "deployment": "deployment",
    "analysis": "post-patch analysis",
    "finish": "finishing",
}
"""How each stage is named in the bottleneck sentence."""

SUGGESTIONS: Final[Mapping[str, str]] = {
    "awaiting_approval": (
        "approvals: add approver groups per scope (policy approvals.groups) so the right "
        "people are asked, have notifications reach them (webhook, e-mail), and let low-risk "
        "rings go without a person (narrow approvals.tags / min_criticality to the rings that "
        "need one, approve canary-tested updates by baseline rules)"
    ),
    "awaiting_window": (
        "windows: widen the maintenance windows or add one (policy schedule.windows: longer "
        "duration, smaller cutoff, more days), or start runs shortly before a window opens "
        "(a run schedule aligned with it; `patchpilot schedules suggest` proposes quiet slots)"
    ),
    "testing": (
        "testing: test only what changed (--only, security updates), reuse the results of "
        "versions already tested (outcome history), or give the test hosts more capacity"
    ),
    "deployment": (
        "deployment: raise rate.max_concurrency and enlarge the waves (policy schedule.waves), "
        "or use fewer rings when the canary ring has passed for these packages before"
    ),
    "analysis": (
        "analysis: shorten the soak and sampling (policy analysis.soak_s, interval_s, count) "
        "for signals that settle quickly"
    ),
    "discovery": (
        "discovery: scan on a schedule so runs start from fresh inventories, raise the SSH "
        "concurrency, and keep `--refresh` (apt-get update) for when it is needed"
    ),
    "sourcing": (
        "sourcing: keep the advisory feeds fresh with a scheduled `patchpilot feeds update` so "
        "runs do not download them"
    ),
    "assessment": (
        "assessment: keep enrichment (EPSS, KEV) imported ahead of runs and limit the scope "
        "(--limit, --only) so fewer findings are assessed"
    ),
    "planning": "planning: simplify the baseline rules (fewer delayed approvals and exceptions)",
    "finish": "finishing: check the notification targets answer quickly",
}
"""What would shorten each stage (the rule table behind the suggestions)."""

_SHARE_WORTH_A_SUGGESTION: Final = 0.25
_ROLLBACKS_WORTH_A_SUGGESTION: Final = 0.05


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- helpers


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (0-1) of ``values`` by linear interpolation between the closest
    ranks (numpy's default); ``None`` for no values.

    >>> percentile([1, 2, 3, 4], 0.5), percentile([10, 20], 0.9), percentile([], 0.5)
    (2.5, 19.0, None)
    """
    if not values:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError("q must be between 0 and 1")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def human_seconds(seconds: float | None) -> str:
    """``42 s``, ``12 min``, ``19 h``, ``3.5 d`` (``-`` for none).

    >>> human_seconds(42), human_seconds(720), human_seconds(68400), human_seconds(302400)
    ('42 s', '12 min', '19 h', '3.5 d')
    """
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        hours = seconds / 3600
        return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"
    return f"{seconds / 86400:.1f} d"


def _r(value: float | None, digits: int = 0) -> float | None:
    return None if value is None else round(value, digits)


class Summary(_Model):
    """Count, median, p90 and total of a set of durations (seconds)."""

    count: int
    median_s: float | None
    p90_s: float | None
    total_s: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        """The summary of ``values``."""
        return cls(
            count=len(values),
            median_s=_r(statistics.median(values)) if values else None,
            p90_s=_r(percentile(values, 0.9)),
            total_s=round(sum(values)),
        )


class StageStats(_Model):
    """One stage (or one ring's deployment) over the runs."""

    stage: str = Field(description="the stage, or 'ring NAME' (that ring's deployment)")
    runs: int = Field(description="runs that went through it")
    median_s: float | None
    p90_s: float | None
    total_s: float
    share: float | None = Field(description="total_s / the runs' total lead time (0-1)")


class Bottleneck(_Model):
    """The stage with the largest share of lead time."""

    stage: str
    share: float
    median_s: float | None
    text: str


class ApprovalWait(_Model):
    """Approval requests of the runs: request to decision."""

    requests: int
    decided: int
    pending: int
    expired: int
    median_s: float | None
    p90_s: float | None
    total_s: float


class Analytics(_Model):
    """``patchpilot.analytics/v1``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=SCHEMA, alias="schema")
    generated_at: AwareDatetime
    since_days: int
    runs: int = Field(description="patch runs started in the period")
    ended_runs: int = Field(description="of those, the ones that have ended (the figures' base)")
    statuses: dict[str, int] = Field(description="ended runs by status")
    lead_time: Summary
    stages: tuple[StageStats, ...]
    rings: tuple[StageStats, ...]
    hosts_deployed: int
    hosts_per_hour: float | None = Field(description="hosts deployed per hour of deployment")
    rollback_rate: float | None = Field(description="deployed hosts rolled back (0-1)")
    failure_rate: float | None = Field(description="deployed hosts with a failed item (0-1)")
    run_failure_rate: float | None = Field(description="ended runs failed, halted or partial")
    approval_wait: ApprovalWait
    bottleneck: Bottleneck | None
    suggestions: tuple[str, ...]
    text: str = Field(description="the findings in plain words")

    def document(self) -> dict[str, Any]:
        """The JSON form."""
        return self.model_dump(mode="json", by_alias=True)


# --------------------------------------------------------------------------- analytics


def _per_run_stage_seconds(
    stages: Iterable[StageRecord],
) -> tuple[dict[str, float], dict[str, float]]:
    """(stage -> seconds summed over rings, ring -> deployment seconds) of one run."""
    by_stage: dict[str, float] = defaultdict(float)
    by_ring: dict[str, float] = defaultdict(float)
    for record in stages:
        seconds = record.seconds
        if seconds is None:
            continue
        by_stage[record.stage] += seconds
        if record.stage == "deployment":
            by_ring[record.ring or "all"] += seconds
    return dict(by_stage), dict(by_ring)


def _host_state(record: DeploymentRecord) -> str | None:
    """``rolled_back``, ``failed``, ``installed`` or None (nothing installed: dry run, skip)."""
    result = record.result or {}
    if result.get("dry_run"):
        return None
    statuses = {str(i.get("status")) for i in result.get("items", []) if isinstance(i, dict)}
    for status in ("failed", "rolled_back", "installed"):
        if status in statuses:
            return status
    return None


def _stats(name: str, values: list[float], lead_total: float) -> StageStats:
    summary = Summary.of(values)
    return StageStats(
        stage=name,
        runs=summary.count,
        median_s=summary.median_s,
        p90_s=summary.p90_s,
        total_s=summary.total_s,
        share=round(summary.total_s / lead_total, 4) if lead_total > 0 else None,
    )


def _approval_wait(records: Sequence[ApprovalRecord], now: datetime) -> ApprovalWait:
    waits = [
        (r.decided_at - r.requested_at).total_seconds()
        for r in records
        if r.decided_at is not None and r.status in ("approved", "rejected")
    ]
    summary = Summary.of([max(0.0, w) for w in waits])
    return ApprovalWait(
        requests=len(records),
        decided=len(waits),
        pending=sum(1 for r in records if r.status == "pending" and not r.expired_at(now)),
        expired=sum(1 for r in records if r.status == "expired" or r.expired_at(now)),
        median_s=summary.median_s,
        p90_s=summary.p90_s,
        total_s=summary.total_s,
    )


def _bottleneck(stages: Sequence[StageStats]) -> Bottleneck | None:
    ranked = [s for s in stages if s.share is not None and s.total_s > 0]
    if not ranked:
        return None
    top = min(ranked, key=lambda s: (-s.total_s, STAGES.index(s.stage)))
    share = top.share or 0.0
    words = STAGE_WORDS.get(top.stage, top.stage)
    verb = "are" if "waits" in words.split() else "is"
    text = f"{words} {verb} {share * 100:.0f} % of lead time; median {human_seconds(top.median_s)}"
    return Bottleneck(stage=top.stage, share=share, median_s=top.median_s, text=text)


def analytics(store: Store, *, since_days: int = 90, now: datetime | None = None) -> Analytics:
    """The process analytics of the patch runs started in the last ``since_days`` days.

    Raises:
        InvalidInputError: ``since_days`` outside 1..3650.
    """
    if not 1 <= since_days <= 3650:
        raise InvalidInputError("since", "give 1 to 3650 days")
    now = now or utcnow()
    start = now - timedelta(days=since_days)
    runs = [
        r
        for r in store.list_runs(limit=MAX_RUNS)
        if r.kind == "run" and r.started_at >= start and r.started_at <= now
    ]
    ended = sorted(
        (r for r in runs if r.status in _ENDED and r.finished_at is not None),
        key=lambda r: (r.started_at, r.run_id),
    )
    lead = [
        max(0.0, (r.finished_at - r.started_at).total_seconds()) for r in ended if r.finished_at
    ]
    lead_time = Summary.of(lead)
    lead_total = float(sum(lead))

    stage_values: dict[str, list[float]] = defaultdict(list)
    ring_values: dict[str, list[float]] = defaultdict(list)
    deployed = rolled = failed = 0
    for run in ended:
        by_stage, by_ring = _per_run_stage_seconds(store.run_stages(run.run_id))
        for stage, seconds in by_stage.items():
            stage_values[stage].append(seconds)
        for ring, seconds in by_ring.items():
            ring_values[ring].append(seconds)
        for record in store.deployments(run.run_id):
            state = _host_state(record)
            if state is None:
                continue
            deployed += 1
            rolled += state == "rolled_back"
            failed += state == "failed"

    stages = tuple(
        _stats(stage, stage_values[stage], lead_total) for stage in STAGES if stage in stage_values
    )
    rings = tuple(
        _stats(f"ring {ring}", ring_values[ring], lead_total) for ring in sorted(ring_values)
    )
    deploy_hours = sum(stage_values.get("deployment", [])) / 3600
    ended_ids = {r.run_id for r in ended}
    approvals = [a for a in store.approvals(None) if a.run_id in ended_ids]
    statuses: dict[str, int] = defaultdict(int)
    for run in ended:
        statuses[run.status] += 1
    bottleneck = _bottleneck(stages)
    rollback_rate = round(rolled / deployed, 4) if deployed else None
    result = Analytics(
        generated_at=now,
        since_days=since_days,
        runs=len(runs),
        ended_runs=len(ended),
        statuses=dict(sorted(statuses.items())),
        lead_time=lead_time,
        stages=stages,
        rings=rings,
        hosts_deployed=deployed,
        hosts_per_hour=round(deployed / deploy_hours, 2) if deployed and deploy_hours > 0 else None,
        rollback_rate=rollback_rate,
        failure_rate=round(failed / deployed, 4) if deployed else None,
        run_failure_rate=(
            round(sum(1 for r in ended if r.status in FAILED_RUN_STATUSES) / len(ended), 4)
            if ended
            else None
        ),
        approval_wait=_approval_wait(approvals, now),
        bottleneck=bottleneck,
        suggestions=_suggestions(stages, bottleneck, rollback_rate),
        text=_text(len(runs), ended, since_days, lead_time, bottleneck),
    )
    return result


def _suggestions(
    stages: Sequence[StageStats], bottleneck: Bottleneck | None, rollback_rate: float | None
) -> tuple[str, ...]:
    chosen: list[str] = []
    if bottleneck is not None:
        chosen.append(bottleneck.stage)
    for stage in sorted(stages, key=lambda s: -(s.share or 0.0)):
        share = stage.share or 0.0
        if share >= _SHARE_WORTH_A_SUGGESTION and stage.stage not in chosen:
            chosen.append(stage.stage)
    out = [SUGGESTIONS[s] for s in chosen if s in SUGGESTIONS]
    if rollback_rate is not None and rollback_rate >= _ROLLBACKS_WORTH_A_SUGGESTION:
        out.append(
            f"rollbacks: {rollback_rate * 100:.0f} % of deployed hosts were rolled back; test "
            "the packages that roll back (testing) and reject their versions in the baseline"
        )
    return tuple(out)


def _text(
    runs: int,
    ended: Sequence[RunRecord],
    since_days: int,
    lead: Summary,
    bottleneck: Bottleneck | None,
) -> str:
    if runs == 0:
        return f"no patch runs recorded in the last {since_days} days"
    if not ended:
        return f"{runs} patch run(s) in the last {since_days} days, none ended yet"
    text = (
        f"{len(ended)} ended patch run(s) in the last {since_days} days; median lead time "
        f"{human_seconds(lead.median_s)}"
    )
    if bottleneck is not None:
        text += f"; bottleneck: {bottleneck.text}"
    return text


# --------------------------------------------------------------------------- predicted impact


class WaveImpact(_Model):
    """What one wave of a ring is expected to do."""

    ring: str
    wave: int = Field(ge=1)
    hosts: tuple[str, ...]
    hosts_in_flight: int = Field(description="hosts patched at the same time")
    packages: tuple[str, ...]
    services: tuple[str, ...] = Field(
        description="services restarted when these packages were deployed before"
    )
    expected_seconds: float | None = Field(description="None: no past run of these packages")
    basis: str = Field(description="where the expectation comes from")


class ImpactPrediction(_Model):
    """``patchpilot.impact/v1``: the predicted impact of each wave of a plan."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=IMPACT_SCHEMA, alias="schema")
    run_id: str
    waves: tuple[WaveImpact, ...]
    expected_seconds: float | None = Field(description="all waves, one after the other")
    history: int = Field(description="past host deployments the expectations come from")

    def document(self) -> dict[str, Any]:
        """The JSON form."""
        return self.model_dump(mode="json", by_alias=True)


class _History:
    """Past host deployments: durations and restarted services per package set."""

    def __init__(self, records: Iterable[DeploymentRecord]) -> None:
        self.by_package: dict[str, list[float]] = defaultdict(list)
        self.by_set: dict[frozenset[str], list[float]] = defaultdict(list)
        self.services: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.seen: dict[str, int] = defaultdict(int)
        self.count = 0
        for record in records:
            result = record.result or {}
            if result.get("dry_run") or _host_state(record) is None:
                continue
            packages = frozenset(
                str(i["package"])
                for i in result.get("items", [])
                if isinstance(i, dict) and i.get("status") in ("installed", "failed", "rolled_back")
            )
            if not packages:
                continue
            seconds = float(result.get("duration_s") or 0.0)
            if seconds <= 0 and record.finished_at is not None:
                seconds = (record.finished_at - record.started_at).total_seconds()
            restarted = {
                str(r["service"]) for r in result.get("restarts", []) if isinstance(r, dict)
            }
            self.count += 1
            self.by_set[packages].append(seconds)
            for package in packages:
                self.by_package[package].append(seconds)
                self.seen[package] += 1
                for service in restarted:
                    self.services[package][service] += 1

    def host_seconds(self, packages: frozenset[str]) -> tuple[float | None, str]:
        exact = self.by_set.get(packages)
        if exact:
            return statistics.median(exact), f"median of {len(exact)} deployments of this set"
        known = [statistics.median(self.by_package[p]) for p in packages if self.by_package[p]]
        if not known:
            return None, "no past deployment of these packages"
        return max(known), f"slowest median of {len(known)} of {len(packages)} packages"

    def restarted(self, packages: Iterable[str]) -> set[str]:
        """Services restarted in at least half of the past deployments of a package."""
        out: set[str] = set()
        for package in packages:
            seen = self.seen.get(package, 0)
            for service, times in self.services.get(package, {}).items():
                if seen and times * 2 >= seen:
                    out.add(service)
        return out


def predicted_impact(
    plan: PatchPlan,
    store: Store,
    *,
    rings: Sequence[tuple[str, Sequence[str]]] | None = None,
    serial: int | str | Sequence[int | str] = (1, "50%"),
    max_concurrency: int | str = 2,
    history: Sequence[DeploymentRecord] | None = None,
) -> ImpactPrediction:
    """The expected impact of each wave of ``plan``.

    Args:
        plan: The frozen plan.
        store: Where past deployments are (``run_deployments``), unless ``history`` is given.
        rings: (ring name, host names in order) as the run resolved them; default one ring
            ``all`` of the plan's hosts.
        serial: The policy's ``schedule.waves``.
        max_concurrency: The policy's ``schedule.rate.max_concurrency``.
        history: Past host deployments to learn from (default: every finished one).
    """
    past = _History(history if history is not None else store.finished_deployments())
    packages_of: dict[str, set[str]] = defaultdict(set)
    for item in plan.items:
        packages_of[item.host].add(item.package)
    ordered = rings if rings is not None else [("all", sorted(packages_of))]
    impacts: list[WaveImpact] = []
    for ring, names in ordered:
        targets = [h for h in names if h in packages_of]
        if not targets:
            continue
        flight = max(1, resolve_count(max_concurrency, len(targets), round_up=True))
        for number, wave in enumerate(waves(targets, serial), 1):
            packages = sorted({p for h in wave for p in packages_of[h]})
            estimates = [past.host_seconds(frozenset(packages_of[h])) for h in wave]
            in_flight = min(flight, len(wave))
            seconds = _wave_seconds([e[0] for e in estimates], in_flight)
            bases = sorted({e[1] for e in estimates})
            impacts.append(
                WaveImpact(
                    ring=ring,
                    wave=number,
                    hosts=tuple(wave),
                    hosts_in_flight=in_flight,
                    packages=tuple(packages),
                    services=tuple(sorted(past.restarted(packages))),
                    expected_seconds=_r(seconds),
                    basis="; ".join(bases),
                )
            )
    known = [w.expected_seconds for w in impacts]
    total = None if not known or any(k is None for k in known) else sum(k or 0.0 for k in known)
    return ImpactPrediction(
        run_id=plan.run_id,
        waves=tuple(impacts),
        expected_seconds=_r(total),
        history=past.count,
    )


def _wave_seconds(estimates: Sequence[float | None], in_flight: int) -> float | None:
    """Hosts in batches of ``in_flight``, slowest first: the sum of each batch's slowest."""
    if not estimates or any(e is None for e in estimates):
        return None
    ordered = sorted((e or 0.0 for e in estimates), reverse=True)
    return sum(ordered[i] for i in range(0, len(ordered), in_flight))


def run_impact(settings: Settings, store: Store, run_id: str) -> ImpactPrediction:
    """The predicted impact of a patch run's plan, with its rings, waves and rate.

    Raises:
        UnknownTargetError: no checkpoint of that run, or it has no plan yet.
    """
    from patchpilot.graphs.run import load_run_state

    snapshot = load_run_state(run_id, settings)
    state = snapshot.state if snapshot is not None else None
    if state is None or state.plan is None:
        raise UnknownTargetError(
            f"no plan for run {run_id!r} (not a patch run, or not planned yet)", key="run"
        )
    schedule = state.policy.schedule
    return predicted_impact(
        state.plan,
        store,
        rings=[(r.name, r.hosts) for r in state.rings] or None,
        serial=schedule.waves,
        max_concurrency=schedule.rate.max_concurrency,
    )

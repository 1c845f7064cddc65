"""The scan graph: discover → source → assess → prioritize → report, checkpointed in SQLite.

::

    START → plan ─Send per host─► discover_host ─► source ─Send per host─► assess_host
                                                                              │
                          END ◄── report ◄── prioritize ◄────────────────────┘

* ``plan`` records the run; ``discover_host`` and ``assess_host`` fan out per host with ``Send``
  (bounded by ``max_concurrency``); an unreachable host is recorded as failed and the others go on.
* The state carries ids and summaries only. Packages, pending updates and findings live in the
  store, keyed by run id, so a 1,000-host run does not serialise its inventories into every
  checkpoint.
* Every step is checkpointed with ``durability="sync"`` under ``thread_id = run_id``: a run
  killed with ``kill -9`` resumes from its last completed step with :func:`resume_scan`, and
  per-host writes are idempotent (replace by run and host), so a re-run step changes nothing.
* Start and resume build their run-time dependencies with one factory,
  :meth:`ScanContext.create` (changelog fetcher, vector memory, LLM client, feed fetcher), so a
  resumed scan finds exactly what an uninterrupted one does; and both hold the run's lock file
  (:func:`run_lock`), so a scan is never driven by two processes at once.
"""

from __future__ import annotations

import enum
import fcntl
import operator
import os
import sqlite3
import types
import typing
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

import structlog
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Send
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.agents.assessment import (
    VerdictCache,
    apply_holds,
    assess_host,
    findings_from_pending,
)
from patchpilot.agents.assessment.verdicts import DataQualityWarning
from patchpilot.agents.discovery import discover_host
from patchpilot.agents.prioritization import HostSignals, assist_priorities, prioritize
from patchpilot.agents.sourcing import SourcingReport, ensure_feeds
from patchpilot.core.errors import PatchpilotError
from patchpilot.core.failpoints import failpoint
from patchpilot.core.models import Host
from patchpilot.core.policy import Policy
from patchpilot.core.schedules import Trigger
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store, finding_key
from patchpilot.tools.changelog import ChangelogFetcher
from patchpilot.tools.feeds import FeedFetcher
from patchpilot.tools.llm.models import LLMUsage
from patchpilot.tools.transport import TransportFactory, open_transport

__all__ = [
    "HostStatus",
    "LLMUsage",
    "RunBusyError",
    "ScanContext",
    "ScanState",
    "build_scan_graph",
    "checkpoint_types",
    "data_quality_summary",
    "feed_fetcher",
    "open_memory",
    "resume_scan",
    "run_lock",
    "start_scan",
    "sum_usage",
    "usage_since",
]

if TYPE_CHECKING:  # chromadb and openai load only when a run uses them
    from patchpilot.tools.llm import LLMClient
    from patchpilot.tools.memory import VectorMemory

log = structlog.get_logger(__name__)


class RunBusyError(PatchpilotError):
    """Another process is driving this run (scan or patch run) right now."""


class HostStatus(BaseModel):
    """One host's progress through the run (a summary; the data is in the store)."""

    model_config = ConfigDict(frozen=True)

    host: str
    stage: Literal["discovered", "failed", "assessed"]
    error: str | None = None
    findings: int = 0


class ScanState(BaseModel):
    """The scan run's state: ids and summaries only."""

    run_id: str
    target: str
    hosts: list[Host]
    offline: bool = True
    refresh: bool = Field(
        default=False, description="run apt-get update on each host before simulating"
    )
    trigger: Trigger = Field(default="cli", description="what started the run")
    schedule_id: str | None = Field(default=None, description="the schedule that started it")
    statuses: Annotated[list[HostStatus], operator.add] = Field(default_factory=list)
    sourcing: SourcingReport | None = None
    summary: dict[str, Any] | None = None
    data_quality: Annotated[list[DataQualityWarning], operator.add] = Field(
        default_factory=list,
        description="versions no ordering applies to, met while matching (appended per host; "
        "summarised by data_quality_summary into the run summary)",
    )
    assistance: Annotated[list[dict[str, Any]], operator.add] = Field(
        default_factory=list,
        description="per LLM task: by core or llm, model, prompt version, tokens, or why not "
        "(appended by each step: a step returns only its own records)",
    )
    llm_usage: Annotated[list[LLMUsage], operator.add] = Field(
        default_factory=list,
        description="what each LLM-assisted step spent, in whichever process ran it (summed "
        "by :func:`sum_usage`: a run resumed elsewhere still counts what its start spent)",
    )


class HostTask(BaseModel):
    """The payload of one per-host branch."""

    run_id: str
    host: Host
    mode: Literal["advisories", "repository-metadata"] = "advisories"
    refresh: bool = False


@dataclass
class ScanContext:
    """Run-time dependencies (not checkpointed; rebuilt on resume)."""

    settings: Settings
    store: Store
    policy: Policy
    fetcher: FeedFetcher | None = None
    verdicts: VerdictCache = field(default_factory=VerdictCache)
    changelogs: ChangelogFetcher | None = None
    memory: VectorMemory | None = None
    """The vector memory: past incidents are cited in the top findings' rationales."""
    llm: LLMClient | None = None
    """An LLM client (rationales, bounded raises); None: deterministic cores only."""
    on_progress: Callable[[str, str, bool], None] | None = None
    """Called as ``(stage, host, ok)`` when a host finishes ``discover`` or ``assess`` (from
    worker threads), e.g. to advance a progress bar."""
    transport_factory: TransportFactory = open_transport
    """Opens a host's transport (discovery, testing, deployment); tests pass a scripted one."""

    def progress(self, stage: str, host: str, ok: bool) -> None:
        """Report one host's step to :attr:`on_progress`, if set."""
        if self.on_progress is not None:
            self.on_progress(stage, host, ok)

    @classmethod
    def create(
        cls,
        settings: Settings,
        store: Store,
        policy: Policy,
        *,
        fetcher: FeedFetcher | None = None,
        memory: VectorMemory | None = None,
        llm: LLMClient | None = None,
    ) -> Self:
        """The context of a scan or a patch run, the same for its start and every resume.

        The one factory behind ``scan``, ``run``, ``approve``, ``reject``, ``resume`` and the
        chat: the changelog fetcher per ``discovery.changelogs``, the vector memory (opened here
        unless given; one that cannot open is a warning, as at the start), the LLM client when
        one is configured. The feed fetcher is made on demand by the ``source`` step when the
        run may fetch (:func:`feed_fetcher`); ``fetcher`` replaces it (tests).
        """
        if memory is None:
            memory = open_memory(settings)
        if llm is None:
            from patchpilot.tools.llm import make_client

            llm = make_client(settings.llm, cache_dir=settings.cache_dir)
        return cls(
            settings=settings,
            store=store,
            policy=policy,
            fetcher=fetcher,
            changelogs=None
            if settings.discovery.changelogs == "none"
            else ChangelogFetcher(settings.cache_dir),
            memory=memory,
            llm=llm,
        )


def open_memory(settings: Settings) -> VectorMemory | None:
    """The vector memory, or None (with a warning) when it cannot be opened."""
    from patchpilot.tools.memory import VectorMemory

    try:
        return VectorMemory.open(settings)
    except PatchpilotError as exc:
        log.warning("run.memory_unavailable", error=str(exc))
        return None


def feed_fetcher(settings: Settings) -> FeedFetcher:
    """The feed fetcher a run uses when it fetches missing feeds itself (one attempt each)."""
    return FeedFetcher(
        settings.cache_dir,
        max_bytes=settings.feeds.max_download_bytes,
        timeout=settings.feeds.timeout,
        max_attempts=1,
    )


_USAGE_FIELDS = tuple(
    name for name in LLMUsage.model_fields if name not in LLMUsage.model_computed_fields
)


def usage_since(before: LLMUsage | None, llm: LLMClient | None) -> list[LLMUsage]:
    """What ``llm`` spent since ``before`` (its usage when the step began), as a state update.

    An empty list when there is no client or nothing was spent, so a step's record in the state
    is exactly this process's spending for it.
    """
    if llm is None or before is None:
        return []
    after = llm.usage
    delta = LLMUsage(
        **{name: max(getattr(after, name) - getattr(before, name), 0) for name in _USAGE_FIELDS}
    )
    return [delta] if delta != LLMUsage() else []


def sum_usage(records: list[LLMUsage]) -> LLMUsage:
    """The sum of the steps' spending (over every process that drove the run)."""
    return LLMUsage(**{name: sum(getattr(r, name) for r in records) for name in _USAGE_FIELDS})


# --------------------------------------------------------------------------- nodes


def plan(state: ScanState, runtime: Runtime[ScanContext]) -> dict[str, Any]:
    """Record the run (idempotent) before any host is touched."""
    runtime.context.store.create_run(
        state.run_id,
        kind="scan",
        target=state.target,
        params={
            "hosts": [h.name for h in state.hosts],
            "offline": state.offline,
            "trigger": state.trigger,
            "schedule_id": state.schedule_id,
        },
    )
    log.info("scan.planned", run_id=state.run_id, hosts=len(state.hosts))
    return {}


def fan_out_discovery(state: ScanState) -> list[Send]:
    """One discovery branch per host."""
    return [
        Send("discover_host", HostTask(run_id=state.run_id, host=h, refresh=state.refresh))
        for h in state.hosts
    ]


def discover_host_node(state: HostTask, runtime: Runtime[ScanContext]) -> dict[str, Any]:
    """Inventory one host and store its snapshot; failure is recorded, not raised."""
    ctx = runtime.context
    store = ctx.store
    outcome = discover_host(
        state.host,
        ctx.settings,
        pending=True,
        refresh=state.refresh,
        changelogs=ctx.changelogs,
        transport_factory=ctx.transport_factory,
    )
    ctx.progress("discover", state.host.name, outcome.ok)
    if not outcome.ok or outcome.facts is None:
        store.record_host_failure(
            state.run_id, state.host.name, outcome.error_type or "Error", outcome.error or ""
        )
        return {"statuses": [HostStatus(host=state.host.name, stage="failed", error=outcome.error)]}
    store.save_host_snapshot(
        state.run_id,
        outcome.facts,
        outcome.packages,
        outcome.pending or (),
        warnings=outcome.warnings,
    )
    failpoint("scan.discovered")
    return {"statuses": [HostStatus(host=state.host.name, stage="discovered")]}


def source(state: ScanState, runtime: Runtime[ScanContext]) -> dict[str, Any]:
    """Make sure advisory data is there (or fall back to repository metadata).

    A run that may fetch (not ``offline``: the store had no advisories and ``feeds.auto_update``
    is on when it started) fetches the default feeds, on its start and on a resume alike.
    """
    ctx = runtime.context
    if state.offline:
        report = ensure_feeds(ctx.store, None)
    elif ctx.fetcher is not None:
        report = ensure_feeds(ctx.store, ctx.fetcher)
    else:
        with feed_fetcher(ctx.settings) as fetcher:
            report = ensure_feeds(ctx.store, fetcher)
    log.info("scan.sourced", run_id=state.run_id, mode=report.mode, stale=list(report.stale))
    failpoint("scan.sourced")
    return {"sourcing": report}


def fan_out_assessment(state: ScanState) -> list[Send]:
    """One assessment branch per discovered host."""
    discovered = {s.host for s in state.statuses if s.stage == "discovered"}
    mode = state.sourcing.mode if state.sourcing else "repository-metadata"
    sends = [
        Send("assess_host", HostTask(run_id=state.run_id, host=h, mode=mode))
        for h in state.hosts
        if h.name in discovered
    ]
    return sends or [Send("prioritize", state)]


def assess_host_node(state: HostTask, runtime: Runtime[ScanContext]) -> dict[str, Any]:
    """Match one host's stored inventory against advisories; store its findings."""
    ctx = runtime.context
    snapshot = ctx.store.load_host_snapshot(state.run_id, state.host.name)
    if snapshot is None:  # pragma: no cover - discovery stored it before this branch started
        return {"statuses": [HostStatus(host=state.host.name, stage="failed", error="no snapshot")]}
    failpoint("assess")
    first_seen = ctx.store.first_seen_map(state.host.name)
    facts = snapshot.facts
    quality: list[DataQualityWarning] = []
    if state.mode == "advisories" and facts.ecosystem is not None:
        index = ctx.store.advisory_index(facts.ecosystem, facts.os.release)
        result = assess_host(
            state.host.name,
            facts,
            snapshot.packages,
            index,
            pending=snapshot.pending,
            first_seen=first_seen,
            cache=ctx.verdicts,
        )
        findings = list(result.findings)
        # Security updates the host's own repositories offer that no advisory explains (the
        # feeds lag the archive, or do not cover it) are still reported, marked as such.
        explained = {f.source_package for f in findings}
        findings += [
            f
            for f in findings_from_pending(
                state.host.name, snapshot.packages, snapshot.pending, first_seen=first_seen
            )
            if f.source_package not in explained
        ]
        for source_package, reason in result.errors:
            log.warning(
                "assess.version_error", host=state.host.name, package=source_package, reason=reason
            )
        quality = list(result.data_quality)
    else:
        findings = findings_from_pending(
            state.host.name, snapshot.packages, snapshot.pending, first_seen=first_seen
        )
    findings = apply_holds(findings, facts.held_packages)
    ctx.store.replace_findings(state.run_id, state.host.name, findings)
    failpoint("scan.assessed")
    ctx.progress("assess", state.host.name, True)
    return {
        "statuses": [HostStatus(host=state.host.name, stage="assessed", findings=len(findings))],
        "data_quality": quality,
    }


def prioritize_node(state: ScanState, runtime: Runtime[ScanContext]) -> dict[str, Any]:
    """Score every finding of the run and store the assessments.

    Each finding also gets its host's own signals (changelog urgency, CVE count, loaded by a
    listening or running process, restart need), read from the host's stored snapshot.
    """
    ctx = runtime.context
    records = ctx.store.findings(run_id=state.run_id)
    hosts = {h.name: h for h in state.hosts}
    enrichment = ctx.store.enrichment({c for r in records for c in r.finding.cves})
    kev_loaded = any(s.kind.value == "kev" for s in ctx.store.feed_status())
    today = datetime.now(UTC).date()
    signals: dict[str, HostSignals] = {}
    for name in sorted({r.finding.host for r in records if r.finding.host in hosts}):
        snapshot = ctx.store.load_host_snapshot(state.run_id, name)
        signals[name] = (
            HostSignals.of(snapshot.facts, snapshot.packages, snapshot.pending)
            if snapshot is not None
            else HostSignals.of(None)
        )
    assessments = [
        prioritize(
            r.finding,
            [enrichment[c] for c in r.finding.cves if c in enrichment],
            hosts[r.finding.host],
            ctx.policy,
            today=today,
            kev_feed_loaded=kev_loaded,
            signals=signals[r.finding.host].for_finding(r.finding, ctx.policy),
        )
        for r in records
        if r.finding.host in hosts
    ]
    packages = {finding_key(r.finding): r.finding.source_package for r in records}
    before = ctx.llm.usage if ctx.llm is not None else None
    assessments, how = assist_priorities(
        assessments, packages, ctx.policy, memory=ctx.memory, client=ctx.llm
    )
    ctx.store.save_risk(state.run_id, assessments)
    failpoint("scan.prioritized")
    # In the state, not the context: a scan resumed after this step still reports it (the
    # reducer appends this step's records to the ones already there).
    return {
        "assistance": [{"task": "prioritization", **how}],
        "llm_usage": usage_since(before, ctx.llm),
    }


def report(state: ScanState, runtime: Runtime[ScanContext]) -> dict[str, Any]:
    """Close the run with a summary (counts only; the findings are in the store)."""
    ctx = runtime.context
    latest: dict[str, HostStatus] = {}
    order = {"discovered": 0, "failed": 1, "assessed": 2}
    for s in state.statuses:
        if s.host not in latest or order[s.stage] >= order[latest[s.host].stage]:
            latest[s.host] = s
    failed = sorted(h for h, s in latest.items() if s.stage == "failed")
    records = ctx.store.findings(run_id=state.run_id)
    by_severity: dict[str, int] = {}
    for r in records:
        by_severity[r.finding.severity.value] = by_severity.get(r.finding.severity.value, 0) + 1
    summary = {
        "hosts": len(state.hosts),
        "hosts_ok": len(state.hosts) - len(failed),
        "hosts_failed": failed,
        "findings": len(records),
        "actionable": sum(r.finding.actionable for r in records),
        "kev": sum(r.kev for r in records),
        "by_severity": by_severity,
        "mode": state.sourcing.mode if state.sourcing else None,
        "stale_feeds": list(state.sourcing.stale) if state.sourcing else [],
        "assistance": list(state.assistance),
        "data_quality": data_quality_summary(state.data_quality),
        "trigger": state.trigger,
        "schedule_id": state.schedule_id,
    }
    status = (
        "completed" if not failed else ("failed" if len(failed) == len(state.hosts) else "partial")
    )
    ctx.store.finish_run(state.run_id, status=status, summary=summary)
    log.info("scan.finished", run_id=state.run_id, status=status, findings=len(records))
    return {"summary": summary}


def data_quality_summary(warnings: list[DataQualityWarning]) -> list[dict[str, Any]]:
    """One entry per bad version record, with the hosts it was met on (sorted, JSON-ready).

    ``{source, record, package, version, problem, hosts}``; what the report shows as
    ``data.data_quality``. Duplicates (a step re-run on resume, one feed record met on many
    hosts) collapse into one entry.
    """
    hosts: dict[tuple[str, str, str, str, str], set[str]] = {}
    for w in warnings:
        seen = hosts.setdefault((w.source, w.record, w.package, w.version, w.problem), set())
        if w.host is not None:
            seen.add(w.host)
    return [
        {
            "source": source,
            "record": record,
            "package": package,
            "version": version,
            "problem": problem,
            "hosts": sorted(names),
        }
        for (source, record, package, version, problem), names in sorted(hosts.items())
    ]


# --------------------------------------------------------------------------- wiring


def build_scan_graph() -> StateGraph[ScanState, ScanContext, ScanState, ScanState]:
    """The uncompiled scan graph (compile it with a checkpointer)."""
    g = StateGraph(ScanState, context_schema=ScanContext)
    g.add_node("plan", plan)
    g.add_node("discover_host", discover_host_node, input_schema=HostTask)
    g.add_node("source", source)
    g.add_node("assess_host", assess_host_node, input_schema=HostTask)
    g.add_node("prioritize", prioritize_node)
    g.add_node("report", report)
    g.add_edge(START, "plan")
    g.add_conditional_edges("plan", fan_out_discovery, ["discover_host"])
    g.add_edge("discover_host", "source")  # fan-in: runs once all hosts are discovered
    g.add_conditional_edges("source", fan_out_assessment, ["assess_host", "prioritize"])
    g.add_edge("assess_host", "prioritize")
    g.add_edge("prioritize", "report")
    g.add_edge("report", END)
    return g


_CHECKPOINT_MODULES = (
    "patchpilot.agents.sourcing",
    "patchpilot.graphs.run",
    "patchpilot.graphs.scan",
    "patchpilot.core.models",
    "patchpilot.core.plan",
    "patchpilot.core.policy",
    "patchpilot.core.schedule",
    "patchpilot.core.testing_models",
    "patchpilot.core.store.records",
    "patchpilot.core.checks",
)


def checkpoint_types() -> list[type]:
    """Every pydantic model and enum our checkpoints may hold (the deserialization allowlist).

    Checkpoints are deserialized with an explicit allowlist (LangGraph's strict msgpack mode):
    a checkpoint file can only revive our own state types, never arbitrary classes. The list is
    the models and enums of :data:`_CHECKPOINT_MODULES` plus every model and enum their fields
    reach (e.g. ``patchpilot.core.feeds.FeedStatus`` inside a ``SourcingReport``), so a type added
    to the state can never be missing from it (LangGraph would warn and refuse to revive it).
    """
    import importlib

    found: dict[type, None] = {}
    for name in _CHECKPOINT_MODULES:
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and value.__module__ == name
                and issubclass(value, BaseModel | enum.Enum)
            ):
                _reach(value, found)
    return list(found)


def _reach(annotation: object, found: dict[type, None]) -> None:
    """Add ``annotation``'s models and enums (recursively through fields and type arguments)."""
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        if annotation in found or not issubclass(annotation, BaseModel | enum.Enum):
            return
        found[annotation] = None
        if issubclass(annotation, BaseModel):
            for info in annotation.model_fields.values():
                _reach(info.annotation, found)
        return
    for argument in typing.get_args(annotation):
        _reach(argument, found)


@contextmanager
def _checkpointer(settings: Settings) -> Iterator[SqliteSaver]:
    settings.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(settings.checkpoint_path, check_same_thread=False)
    serde = JsonPlusSerializer(allowed_msgpack_modules=None).with_msgpack_allowlist(
        checkpoint_types()
    )
    try:
        yield SqliteSaver(conn, serde=serde)
    finally:
        conn.close()


def new_run_id() -> str:
    """A sortable, unique run id (UTC timestamp + random suffix)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


def _config(run_id: str, settings: Settings) -> RunnableConfig:
    return {"configurable": {"thread_id": run_id}, "max_concurrency": settings.concurrency}


@contextmanager
def run_lock(settings: Settings, run_id: str) -> Iterator[None]:
    """Hold the run's lock file (``HOME/locks/RUN_ID.lock``) or fail at once.

    Every process that drives a run (scan or patch run: start, resume, approve, reject) holds
    it for as long as it drives the graph; the kernel releases it when the process dies, even
    by ``kill -9``.

    Raises:
        RunBusyError: another process holds it (it is driving this run right now).
    """
    folder = settings.home / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunBusyError(
                f"run {run_id} is being driven by another patchpilot process (pid {holder}); "
                "wait for it to finish or stop it first"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def start_scan(
    hosts: list[Host],
    context: ScanContext,
    *,
    target: str,
    offline: bool,
    run_id: str | None = None,
    refresh: bool = False,
    trigger: Trigger = "cli",
    schedule_id: str | None = None,
) -> tuple[str, dict[str, Any]]:
    """Run a scan to completion; returns (run id, summary).

    Args:
        hosts: the hosts to scan.
        context: run-time dependencies.
        target: what the user asked for (recorded with the run).
        offline: never fetch feeds.
        run_id: a run id to use (default: a new one).
        refresh: run ``apt-get update`` on every host before simulating upgrades.
        trigger: what started the scan (``schedule_id``: the schedule, for ``schedule``).
    """
    run_id = run_id or new_run_id()
    state = ScanState(
        run_id=run_id,
        target=target,
        hosts=hosts,
        offline=offline,
        refresh=refresh,
        trigger=trigger,
        schedule_id=schedule_id,
    )
    with run_lock(context.settings, run_id), _checkpointer(context.settings) as saver:
        graph = build_scan_graph().compile(checkpointer=saver)
        out = _invoke(graph, state, run_id, context)
    return run_id, dict(out.get("summary") or {})


def resume_scan(run_id: str, context: ScanContext) -> dict[str, Any]:
    """Continue an interrupted scan from its last checkpoint; returns the summary.

    ``context`` must come from the same factory as the start's (:meth:`ScanContext.create`).

    Raises:
        LookupError: no checkpoint exists for ``run_id``.
        RunBusyError: another process is driving the scan right now.
    """
    with run_lock(context.settings, run_id), _checkpointer(context.settings) as saver:
        graph = build_scan_graph().compile(checkpointer=saver)
        config = _config(run_id, context.settings)
        snapshot = graph.get_state(config)
        if not snapshot.values:
            raise LookupError(f"no checkpoint for run {run_id}")
        out = _invoke(graph, None, run_id, context) if snapshot.next else dict(snapshot.values)
    return dict(out.get("summary") or {})


def _invoke(
    graph: CompiledStateGraph[ScanState, ScanContext, ScanState, ScanState],
    payload: ScanState | None,
    run_id: str,
    context: ScanContext,
) -> dict[str, Any]:
    """Drive the scan; a step that raises leaves the run ``failed`` (with the reason), never
    ``running``, and re-raises. The checkpoint still names the step, so a resume runs it again.
    """
    config = _config(run_id, context.settings)
    try:
        return dict(graph.invoke(payload, config, context=context, durability="sync"))
    except Exception as exc:
        pending = ", ".join(graph.get_state(config).next) or "the scan"
        reason = f"{pending} failed: {type(exc).__name__}: {exc}"[:2000]
        log.error("scan.step_failed", run_id=run_id, error=reason)
        try:
            if context.store.get_run(run_id) is not None:
                context.store.finish_run(
                    run_id, status="failed", summary={"status": "failed", "reason": reason}
                )
        except Exception as store_exc:  # the original error matters more
            log.error("scan.failure_not_recorded", run_id=run_id, error=str(store_exc))
        raise

"""The service's run executor: a bounded pool of workers fed from the store, and a scheduler loop.

Runs never execute in an HTTP request: :meth:`Executor.submit_run` checks the request, records
the run (status ``queued``) and its job in the store and returns the run id at once; a worker
thread claims the job and drives the run with the use cases of :mod:`patchpilot.app.runs`
(scans: the scan graph) until it ends or waits (approval, window). All state is in the store
(the ``jobs`` queue, :mod:`patchpilot.core.store.jobs`) and the graphs' checkpoints, never in
this process, so a restarted service, or a second executor on the same database, continues
exactly what is left:

- **A job is claimed once**: ``UPDATE ... WHERE status = 'queued'`` in a write transaction.
- **At most one active run per host**: a new patch run whose hosts are in another active run
  (queued, running, awaiting approval, waiting for its window) is refused with
  :class:`~patchpilot.core.errors.HostBusyError` (the API answers 409); the check and the insert
  are one transaction. Scans only read, and are never refused.
- **Crash recovery** (:meth:`Executor.start`, and every tick): each executor holds a lock file
  (``HOME/locks/executor-OWNER.lock``) for its lifetime; jobs claimed by an executor whose lock
  is free (the kernel released it: the process died, even by ``kill -9``) go back to the queue.
  Runs left ``running`` with no job and a free run lock (a killed CLI or service) are
  continued. Continuing is idempotent: the graph resumes from its last checkpoint and the
  deployment agent skips every host whose deployment is recorded ``done``
  (:mod:`patchpilot.agents.deployment`), so no host is patched twice.
- **Approvals**: the API records a decision (:func:`patchpilot.app.approvals.record_decision`)
  and calls :meth:`Executor.continue_run`; a decision recorded by anyone whose run was not
  continued (the deciding process died, or the decision came while the run was still being
  driven) is continued by the next tick. Expired approvals are recorded ``expired`` by the
  tick's sweep and their runs continue to end ``rejected``.
- **Windows**: a run waiting for its window or not-before time is continued once that time
  has come.
- **Schedules**: every ``service.tick`` seconds the loop calls
  :func:`patchpilot.app.schedules.claim_due` (each occurrence is claimed exactly once, across
  restarts and executors) and submits what it returns (``trigger: schedule``); missed
  occurrences become ``schedule-missed`` notifications. A ``load`` occurrence starts no run: it
  samples each host's load (read-only, :func:`patchpilot.app.load.collect_load`) on a thread.
- **Notifications** (optional): after each job, the run document's events
  (:func:`patchpilot.app.notify.events_for_run`) go to :meth:`Notifier.emit`, which never
  blocks.
- **Cancel** (:meth:`Executor.cancel`, :func:`patchpilot.app.runs.cancel`): a queued run is
  cancelled before it starts; a run waiting for approval is rejected (it ends ``rejected``); a
  run waiting for its window is recorded ``cancelled`` and never continued by the executor. A
  run being driven right now gets a cancel request in the store: whichever worker or process
  drives it stops at the next safe point (before the next host starts; a host being installed
  finishes, with its health checks and rollback) and ends it ``cancelled``, the hosts not
  started ``skipped`` (``cancelled by NAME``). A scan being driven cannot be cancelled
  (:class:`~patchpilot.graphs.scan.RunBusyError`).
- **Chat changes** (``POST /api/v1/ask``): a change request becomes a run request
  (``trigger: chat``, with the chat's frozen policy, ``must_approve`` and any rollback) queued
  here like any other, so the request thread never drives a graph.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from patchpilot.app import runs
from patchpilot.app.approvals import expire
from patchpilot.core.audit import AuditLog
from patchpilot.core.errors import ConfigError, PatchpilotError, StoreError
from patchpilot.core.inventory import load_inventory, select_hosts
from patchpilot.core.models import Ecosystem, Host, utcnow
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.schedules import Occurrence, Trigger
from patchpilot.core.settings import Settings
from patchpilot.core.store import RunRecord, Store
from patchpilot.core.store.jobs import JobRecord
from patchpilot.core.validate import split_pin, validate_package_name
from patchpilot.graphs.run import RunBusyError, RunContext, load_run_state, run_lock
from patchpilot.graphs.scan import ScanContext, new_run_id, resume_scan, start_scan

if TYPE_CHECKING:
    from patchpilot.app.chat import ChangeOrder
    from patchpilot.app.notify import Notifier

__all__ = [
    "ClaimDue",
    "Executor",
    "RunContextFactory",
    "RunRequest",
    "ScanContextFactory",
    "ScanRequest",
    "Trigger",
    "chat_run_request",
]

log = structlog.get_logger(__name__)

RunContextFactory = Callable[[Settings, Store, Policy, str], RunContext]
"""``(settings, store, policy, actor) -> RunContext``: how a worker builds a run's context."""
ScanContextFactory = Callable[[Settings, Store, Policy], ScanContext]
"""``(settings, store, policy) -> ScanContext``: how a worker builds a scan's context."""
ClaimDue = Callable[[Store, datetime], Sequence[Occurrence]]
"""``claim_due(store, now)``: the schedule occurrences due now, each claimed exactly once."""

_OWNER_RE: Final = re.compile(r"^[0-9]{1,10}-[0-9a-f]{12}$")
_SETTLED_POLL_S: Final = 0.2
_MAX_TEXT: Final = 1000
SLA_CHECK_EVERY: Final = timedelta(minutes=1)
"""How often the tick looks for SLA breaches (it brings the compliance history up to date)."""
_SETTLED_STATUSES: Final = ("queued", "running")


def _printable(value: str | None, what: str) -> str | None:
    if value is not None and (not value.strip() or not value.isprintable()):
        raise ValueError(f"{what} must be printable and not empty")
    return value


def _only_item(spec: str) -> str:
    if "=" in spec:
        name, version = split_pin(spec, Ecosystem.DEBIAN)
        return f"{name}={version}"
    return validate_package_name(spec, Ecosystem.DEBIAN)


class RunRequest(BaseModel):
    """A patch run asked of the service (the API's ``POST /api/v1/runs`` body).

    ``only``: ``PKG`` or ``PKG=VERSION`` items (``--only``); ``limit``: an Ansible-style host
    pattern (``--limit``); ``target``: a host, group or tag (default all hosts).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str | None = Field(default=None, max_length=200, description="host, group or tag")
    limit: str | None = Field(default=None, max_length=_MAX_TEXT, description="host pattern")
    only: tuple[str, ...] = Field(default=(), max_length=200, description="PKG or PKG=VERSION")
    dry_run: bool = False
    offline: bool = Field(default=False, description="never fetch feeds")
    refresh: bool = Field(default=False, description="apt-get update on each host first")
    not_before: AwareDatetime | None = Field(default=None, description="no host starts before")
    security_only: bool = Field(
        default=False,
        description="plan only updates that close a known security advisory (the others are "
        "excluded: not a security update)",
    )
    rollback: dict[str, str] | None = Field(
        default=None,
        max_length=1000,
        description="host -> version: downgrade only[0]'s package (a chat rollback)",
    )
    must_approve: str | None = Field(
        default=None,
        max_length=_MAX_TEXT,
        description="a reason a person must approve whatever the policy says (the chat's)",
    )
    policy: Policy | None = Field(
        default=None,
        description="the policy this run uses (the chat's, e.g. with tonight's window); "
        "default: the service's policy file. Never taken from an API client.",
    )

    @field_validator("target", "limit", "must_approve")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _printable(value, "target, limit and must_approve")

    @model_validator(mode="after")
    def _rollback_names_one_package(self) -> RunRequest:
        if self.rollback is not None and len(self.only) != 1:
            raise ValueError("a rollback names exactly one package in only")
        return self

    @field_validator("only")
    @classmethod
    def _only(cls, items: tuple[str, ...]) -> tuple[str, ...]:
        try:
            return tuple(_only_item(i) for i in items)
        except PatchpilotError as exc:
            raise ValueError(str(exc)) from exc

    def only_items(self) -> list[tuple[str, str | None]]:
        """``only`` as (package, version or None) pairs."""
        pairs: list[tuple[str, str | None]] = []
        for item in self.only:
            name, _, version = item.partition("=")
            pairs.append((name, version or None))
        return pairs


class ScanRequest(BaseModel):
    """A scan asked of the service."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str | None = Field(default=None, max_length=200, description="host, group or tag")
    limit: str | None = Field(default=None, max_length=_MAX_TEXT, description="host pattern")
    offline: bool = Field(default=False, description="never fetch feeds")
    refresh: bool = Field(default=False, description="apt-get update on each host first")

    @field_validator("target", "limit")
    @classmethod
    def _text(cls, value: str | None) -> str | None:
        return _printable(value, "target and limit")


def chat_run_request(order: ChangeOrder) -> RunRequest:
    """The run request of a change asked in chat (``POST /api/v1/ask``): its hosts as the
    limit, its packages, rollback, time, the chat's approval reason and frozen policy."""
    not_before = order.not_before
    if not_before is not None and not_before.tzinfo is None:
        not_before = not_before.replace(tzinfo=UTC)  # ChatRequest.not_before is UTC
    return RunRequest(
        limit=":".join(h.name for h in order.hosts),
        only=tuple(f"{n}={v}" if v else n for n, v in order.only),
        dry_run=order.dry_run,
        not_before=not_before,
        security_only=order.security_only,
        rollback=order.rollback,
        must_approve=order.must_approve,
        policy=order.policy,
    )


def _default_run_context(
    settings: Settings, store: Store, policy: Policy, actor: str
) -> RunContext:
    from patchpilot.app.contexts import run_context

    return run_context(settings, store, policy, actor=actor)


def _default_scan_context(settings: Settings, store: Store, policy: Policy) -> ScanContext:
    from patchpilot.app.contexts import scan_context

    return scan_context(settings, store, policy)


def _default_claim_due() -> ClaimDue | None:
    try:
        from patchpilot.app.schedules import claim_due
    except ImportError:  # pragma: no cover - the schedules use case ships with the executor
        log.warning("executor.no_schedules", why="patchpilot.app.schedules is not installed")
        return None
    return claim_due


class Executor:
    """Runs, scans and continuations from the store's queue, on ``workers`` threads.

    Args:
        settings: The settings (``service.workers``, ``service.tick``, the store, checkpoints).
        inventory_path: The inventory the service manages (clients never pass paths).
        policy_path: The policy the service's new runs use.
        notifier: Where run events go (optional; never blocks).
        workers: Worker threads (default ``service.workers``).
        run_context_factory: Builds a run's context (default
            :func:`patchpilot.app.contexts.run_context`; tests inject scripted hosts).
        scan_context_factory: Builds a scan's context (default
            :func:`patchpilot.app.contexts.scan_context`).
        claim_due: The schedules' claim (default :func:`patchpilot.app.schedules.claim_due`).
        clock: The time the tick uses (expiry, windows, schedules).
    """

    def __init__(
        self,
        settings: Settings,
        inventory_path: Path,
        policy_path: Path,
        *,
        notifier: Notifier | None = None,
        workers: int | None = None,
        run_context_factory: RunContextFactory | None = None,
        scan_context_factory: ScanContextFactory | None = None,
        claim_due: ClaimDue | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.inventory_path = inventory_path
        self.policy_path = policy_path
        self.notifier = notifier
        self._sla_checked: datetime | None = None
        self.workers = workers if workers is not None else settings.service.workers
        if not 1 <= self.workers <= 64:
            raise ConfigError(f"workers must be 1 to 64, not {self.workers}", key="workers")
        self.tick_seconds = settings.service.tick
        self._run_context = run_context_factory or _default_run_context
        self._scan_context = scan_context_factory or _default_scan_context
        self._claim_due = claim_due if claim_due is not None else _default_claim_due()
        self._clock = clock
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._store = Store(settings.store_path)
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []
        self._owner_fd: int | None = None
        self._poll = min(1.0, self.tick_seconds)
        self._log = log.bind(owner=self.owner)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> list[str]:
        """Take this executor's lock, recover interrupted work, start the workers and the loop.

        Returns:
            The run ids recovery queued again (interrupted, or decided and not continued).
        """
        if self._threads:
            raise RuntimeError("the executor is started already")
        self._owner_fd = self._hold_owner_lock()
        recovered = self.recover()
        for i in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"patchpilot-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        ticker = threading.Thread(target=self._loop, name="patchpilot-scheduler", daemon=True)
        ticker.start()
        self._threads.append(ticker)
        self._log.info("executor.started", workers=self.workers, recovered=recovered)
        return recovered

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop taking jobs; wait (at most ``timeout`` s) for the running ones to end.

        A run cannot be interrupted mid-step: a job still running at the timeout keeps its
        claim (and this executor's lock stays held) until the process exits; the next
        executor's :meth:`start` then continues it from its checkpoint.

        Returns:
            True if every thread ended.
        """
        self._stopping.set()
        self._wake.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        done = not any(t.is_alive() for t in self._threads)
        if done:
            self._threads = []
            if self._owner_fd is not None:
                os.close(self._owner_fd)
                self._owner_fd = None
                with contextlib.suppress(OSError):
                    self._owner_path(self.owner).unlink()
            self._store.close()
        self._log.info("executor.stopped", clean=done)
        return done

    def __enter__(self) -> Executor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ requests

    def submit_run(
        self,
        request: RunRequest,
        *,
        actor: str,
        trigger: Trigger = "api",
        occurrence: Occurrence | None = None,
    ) -> str:
        """Queue a patch run; returns its run id at once (status ``queued``).

        ``occurrence``: the schedule occurrence that asked for it (``trigger`` is then
        ``schedule``): no host starts before its start or from its cutoff on, and the approval
        expires at its window's end at the latest (:func:`patchpilot.app.runs.start`).

        Raises:
            UnknownTargetError: the target or limit selects no host.
            ConfigError: the inventory or the policy does not load.
            HostBusyError: a host is in another active run (nothing queued).
        """
        hosts = self._hosts(request.target, request.limit)
        if request.policy is None:
            load_policy(self.policy_path)  # refuse a broken policy now, not in a worker
        run_id = new_run_id()
        not_before = request.not_before
        if occurrence is not None:
            trigger = "schedule"
            not_before = max(not_before or occurrence.at, occurrence.at)
        params = {  # as the graph records them (graphs/run.py begin), and who asked
            "limit": request.limit,
            "only": list(request.only),
            "dry_run": request.dry_run,
            "not_before": not_before.isoformat() if not_before else None,
            "trigger": trigger,
            "schedule_id": occurrence.schedule_id if occurrence else None,
            "window_end": occurrence.window_end.isoformat() if occurrence else None,
            "cutoff_at": occurrence.cutoff_at.isoformat() if occurrence else None,
            "security_only": request.security_only,
            "requested_by": actor,
        }
        self._enqueue(
            "run",
            run_id,
            request,
            hosts,
            params,
            {"occurrence": occurrence.document() if occurrence else None},
            actor=actor,
        )
        return run_id

    def submit_scan(
        self,
        request: ScanRequest,
        *,
        actor: str,
        trigger: Trigger = "api",
        schedule_id: str | None = None,
    ) -> str:
        """Queue a scan; returns its run id at once (status ``queued``).

        Raises:
            UnknownTargetError: the target or limit selects no host.
            ConfigError: the inventory does not load.
        """
        hosts = self._hosts(request.target, request.limit)
        run_id = new_run_id()
        params = {
            "offline": request.offline,
            "trigger": trigger,
            "schedule_id": schedule_id,
            "requested_by": actor,
        }
        self._enqueue(
            "scan", run_id, request, hosts, params, {"schedule_id": schedule_id}, actor=actor
        )
        return run_id

    def _enqueue(
        self,
        kind: Literal["run", "scan"],
        run_id: str,
        request: RunRequest | ScanRequest,
        hosts: Sequence[Host],
        params: dict[str, Any],
        extra: dict[str, Any],
        *,
        actor: str,
    ) -> None:
        """Record a queued run or scan and its job (one transaction), audit-log it
        (``run.queued`` / ``scan.queued``) and wake a worker."""
        trigger = params["trigger"]
        self._store.enqueue_run(
            run_id,
            kind=kind,
            target=request.target or "all",
            hosts=[h.name for h in hosts],
            params=params,
            request={
                "request": request.model_dump(mode="json"),
                "hosts": [h.model_dump(mode="json") for h in hosts],
                "trigger": trigger,
                **extra,
            },
            actor=actor,
        )
        AuditLog.for_settings(self.settings, actor=actor, run_id=run_id).record(
            f"{kind}.queued", details={"hosts": [h.name for h in hosts], **params}
        )
        self._log.info(f"executor.{kind}_queued", run_id=run_id, actor=actor, trigger=trigger)
        self._wake.set()

    def continue_run(self, run_id: str, *, actor: str) -> bool:
        """Queue ``run_id`` to be driven on (after a decision, or to re-check its window).

        Returns:
            True if queued; False if it has a queued or running job already (that job, or
            the next tick, continues it).

        Raises:
            StoreError: unknown run.
        """
        queued = self._store.enqueue_continue(run_id, actor=actor, reason="requested")
        self._log.info("executor.continue_requested", run_id=run_id, actor=actor, queued=queued)
        self._wake.set()
        return queued

    def cancel(self, run_id: str, *, actor: str) -> str:
        """Cancel a run (:func:`patchpilot.app.runs.cancel`); returns what happened.

        ``cancelled`` (it was queued or waiting for its window), ``rejected`` (it was waiting
        for approval: it ends ``rejected``) or ``cancelling`` (it is being driven: it stops
        before the next host starts and ends ``cancelled``).

        Raises:
            StoreError: unknown run, or it has ended already.
            RunBusyError: a scan being driven right now.
        """
        outcome = runs.cancel(self.settings, self._store, run_id, actor=actor)
        self._log.info("executor.cancel", run_id=run_id, actor=actor, outcome=outcome)
        self._wake.set()
        return outcome

    def wait(self, run_id: str, timeout: float) -> RunRecord | None:
        """Wait (at most ``timeout`` s) until the run is no longer queued or being driven.

        Returns:
            The run as it stands then (``None``: unknown run). A run still going at the
            timeout is returned as it is.
        """
        deadline = time.monotonic() + timeout
        while True:
            run = self._store.get_run(run_id)
            if run is None:
                return None
            busy = run.status in _SETTLED_STATUSES or self._store.active_job(run_id) is not None
            if not busy or time.monotonic() >= deadline:
                return run
            time.sleep(_SETTLED_POLL_S)

    # ------------------------------------------------------------------ recovery and ticks

    def recover(self) -> list[str]:
        """Queue again what a dead executor or process left: see the module. Returns run ids."""
        store = self._store
        recovered = self._release_dead_owners(store)
        recovered += self._queue_interrupted(store)
        recovered += self._queue_decided(store, utcnow(), grace=timedelta(0))
        if recovered:
            self._log.info("executor.recovered", runs=recovered)
            self._wake.set()
        return recovered

    def tick(self, now: datetime | None = None) -> None:
        """One scheduler tick: dead executors, expiries, decisions, windows, schedules."""
        now = now or self._clock()
        store = self._store
        grace = timedelta(seconds=max(10.0, 2 * self.tick_seconds))
        steps: list[tuple[str, Callable[[], object]]] = [
            ("recover", lambda: self._release_dead_owners(store)),
            ("interrupted", lambda: self._queue_interrupted(store)),
            ("expiry", lambda: self._expire_approvals(store, now)),
            ("decided", lambda: self._queue_decided(store, now, grace=grace)),
            ("windows", lambda: self._queue_opened_windows(store, now)),
            ("schedules", lambda: self._claim_schedules(store, now)),
            ("sla", lambda: self._notify_breaches(store, now)),
        ]
        for name, step in steps:
            try:
                step()
            except Exception as exc:  # one failing step must not stop the others or the loop
                self._log.error("executor.tick_failed", step=name, error=str(exc)[:_MAX_TEXT])
        self._wake.set()

    def _notify_breaches(self, store: Store, now: datetime) -> int:
        """Items that became overdue, each announced once (``sla-breached``); the compliance
        history is brought up to date first, so this runs at most every
        :data:`SLA_CHECK_EVERY` (not every tick)."""
        from patchpilot.app.compliance import claim_breaches
        from patchpilot.app.notify import sla_breached_event

        if self._sla_checked is not None and now - self._sla_checked < SLA_CHECK_EVERY:
            return 0
        self._sla_checked = now
        breaches = claim_breaches(
            store, settings=self.settings, policy=load_policy(self.policy_path), now=now
        )
        if self.notifier is not None:
            for breach in breaches:
                self.notifier.emit(sla_breached_event(breach, now=now))
        if breaches:
            self._log.info("executor.sla_breaches", count=len(breaches))
        return len(breaches)

    def _loop(self) -> None:
        while not self._stopping.wait(self.tick_seconds):
            self.tick()

    def _release_dead_owners(self, store: Store) -> list[str]:
        released: list[str] = []
        owners = {j.owner for j in store.jobs(status="claimed") if j.owner is not None}
        for owner in sorted(owners - {self.owner}):
            if self._owner_alive(owner):
                continue
            jobs = store.release_jobs(owner)
            self._log.warning(
                "executor.jobs_released", dead_owner=owner, runs=[j.run_id for j in jobs]
            )
            released += [j.run_id for j in jobs]
        return released

    def _queue_interrupted(self, store: Store) -> list[str]:
        """Runs left ``running``/``interrupted`` by a killed process: no job, run lock free."""
        queued: list[str] = []
        for run in store.runs_with_status("running", "interrupted"):
            if store.active_job(run.run_id) is not None or self._locked(run.run_id):
                continue
            if run.kind == "run" and load_run_state(run.run_id, self.settings) is None:
                reason = "interrupted before its first checkpoint; start it again"
                store.finish_run(run.run_id, status="failed", summary={"reason": reason})
                self._log.warning("executor.run_unrecoverable", run_id=run.run_id)
                continue
            actor = str(run.params.get("requested_by") or "patchpilot")
            if store.enqueue_continue(run.run_id, actor=actor, reason="interrupted"):
                self._log.warning("executor.run_interrupted", run_id=run.run_id, kind=run.kind)
                queued.append(run.run_id)
        return queued

    def _queue_decided(self, store: Store, now: datetime, *, grace: timedelta) -> list[str]:
        """Runs awaiting approval whose approval is decided (at least ``grace`` ago)."""
        queued: list[str] = []
        for run in store.runs_with_status("awaiting_approval", kind="run"):
            record = store.approval(run.run_id)
            if record is None or record.status == "pending" or record.decided_at is None:
                continue
            if record.decided_at > now - grace or store.active_job(run.run_id) is not None:
                continue
            if self._locked(run.run_id):
                continue
            actor = record.decided_by or "patchpilot"
            if store.enqueue_continue(run.run_id, actor=actor, reason="decided"):
                queued.append(run.run_id)
        return queued

    def _expire_approvals(self, store: Store, now: datetime) -> list[str]:
        expired: list[str] = []
        for record in store.approvals("pending"):
            if not record.expired_at(now):
                continue
            try:
                expire(store, self.settings, record, now)
            except StoreError as exc:  # decided meanwhile: that decision stands
                self._log.info("executor.expiry_lost", run_id=record.run_id, error=str(exc))
                continue
            store.enqueue_continue(record.run_id, actor="patchpilot", reason="approval expired")
            expired.append(record.run_id)
        return expired

    def _queue_opened_windows(self, store: Store, now: datetime) -> list[str]:
        queued: list[str] = []
        for run in store.runs_with_status("waiting_window", kind="run"):
            if store.active_job(run.run_id) is not None:
                continue
            snapshot = load_run_state(run.run_id, self.settings)
            if snapshot is None or not snapshot.interrupts:
                continue
            payload = snapshot.interrupts[0]
            if payload.get("kind") != "window":
                continue
            if not self._window_open(payload, snapshot.state.policy, now):
                continue
            if store.enqueue_continue(run.run_id, actor="patchpilot", reason="window"):
                queued.append(run.run_id)
        return queued

    @staticmethod
    def _window_open(payload: dict[str, Any], policy: Policy, now: datetime) -> bool:
        not_before = payload.get("not_before")
        if not_before is not None and datetime.fromisoformat(str(not_before)) > now:
            return False
        from patchpilot.agents.scheduling import can_start, next_window

        return can_start(now, next_window(policy.schedule, now))

    def _claim_schedules(self, store: Store, now: datetime) -> None:
        if self._claim_due is None:
            return
        for occurrence in self._claim_due(store, now):
            if not occurrence.runnable:
                self._notify_missed(occurrence)
                continue
            self._start_occurrence(store, occurrence)

    def _start_occurrence(self, store: Store, occurrence: Occurrence) -> None:
        schedule = occurrence.schedule
        if schedule is None:
            self._log.error("executor.occurrence_without_schedule", id=occurrence.schedule_id)
            return
        if schedule.kind == "load":  # read-only: sample each host's load, start no run
            self._collect_load(occurrence)
            return
        try:
            if schedule.kind == "scan":
                run_id = self.submit_scan(
                    ScanRequest(limit=schedule.limit),
                    actor=schedule.created_by,
                    trigger="schedule",
                    schedule_id=schedule.id,
                )
            else:
                run_id = self.submit_run(
                    RunRequest(
                        limit=schedule.limit, only=schedule.only, security_only=schedule.security
                    ),
                    actor=schedule.created_by,
                    trigger="schedule",
                    occurrence=occurrence.model_copy(update={"schedule": None}),
                )
        except PatchpilotError as exc:
            self._log.error(
                "executor.schedule_not_started",
                schedule_id=schedule.id,
                at=occurrence.at.isoformat(),
                error=str(exc)[:_MAX_TEXT],
            )
            self._notify_missed(occurrence, reason=f"not started: {exc}")
            return
        with contextlib.suppress(StoreError, AttributeError):
            store.attach_occurrence_run(schedule.id, occurrence.at, run_id)
        self._log.info(
            "executor.schedule_started", schedule_id=schedule.id, run_id=run_id, kind=schedule.kind
        )

    def _collect_load(self, occurrence: Occurrence) -> None:
        """A ``load`` occurrence: :func:`patchpilot.app.load.collect_load` of the schedule's
        hosts, on its own thread and store connection (the loop never waits for hosts)."""
        schedule = occurrence.schedule
        if schedule is None:
            return

        def collect() -> None:
            from patchpilot.app.load import collect_load

            store = Store(self.settings.store_path)
            try:
                hosts = self._hosts(None, schedule.limit)
                collect_load(self.settings, store, hosts, schedule_id=schedule.id)
            except Exception as exc:  # a failed collection must never stop the loop
                self._log.error(
                    "executor.load_failed", schedule_id=schedule.id, error=str(exc)[:_MAX_TEXT]
                )
            finally:
                store.close()

        thread = threading.Thread(target=collect, name=f"patchpilot-load-{schedule.id}")
        thread.daemon = True
        thread.start()
        self._log.info("executor.load_started", schedule_id=schedule.id)

    # ------------------------------------------------------------------ workers

    def _work(self) -> None:
        store = Store(self.settings.store_path)  # each worker its own store (connection)
        try:
            while not self._stopping.is_set():
                try:
                    job = store.claim_job(self.owner)
                except StoreError as exc:
                    self._log.error("executor.claim_failed", error=str(exc)[:_MAX_TEXT])
                    job = None
                if job is None:
                    self._wake.wait(self._poll)
                    self._wake.clear()
                    continue
                self._run_job(store, job)
        finally:
            store.close()

    def _run_job(self, store: Store, job: JobRecord) -> None:
        jlog = self._log.bind(run_id=job.run_id, job=job.id, kind=job.kind)
        before = store.get_run(job.run_id)
        jlog.info("executor.job_started", actor=job.actor)
        status: Literal["done", "failed"] = "done"
        error: str | None = None
        try:
            if job.kind == "start":
                self._start_run(store, job)
            elif job.kind == "scan":
                self._scan(store, job)
            else:
                self._continue(store, job.run_id, job.actor)
        except RunBusyError as exc:  # another process drives it: it settles there
            error = str(exc)
            jlog.info("executor.job_busy", error=error)
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"[:_MAX_TEXT]
            jlog.error("executor.job_failed", error=error)
            self._fail_run(store, job.run_id, error)
        after = store.get_run(job.run_id)
        if after is not None and (before is None or before.status != after.status):
            # before the job ends, so whoever waits for the run sees its events sent (queued:
            # never blocking); a crash in between re-runs a job that changes nothing
            self._notify(store, after)
        try:
            store.finish_job(job.id, status, error=error)
        except StoreError as exc:
            jlog.error("executor.job_not_recorded", error=str(exc))
        jlog.info("executor.job_finished", status=after.status if after else None)

    def _start_run(self, store: Store, job: JobRecord) -> None:
        if load_run_state(job.run_id, self.settings) is not None:
            # claimed before, by an executor that died after the run's first checkpoint
            self._continue(store, job.run_id, job.actor)
            return
        request = RunRequest.model_validate(job.request["request"])
        hosts = [Host.model_validate(h) for h in job.request["hosts"]]
        policy = request.policy or load_policy(self.policy_path)
        occurrence = job.request.get("occurrence")
        store.set_run_status(job.run_id, "running")
        runs.start(
            self.settings,
            store,
            hosts,
            actor=job.actor,
            target=request.target or "all",
            policy=policy,
            only=request.only_items(),
            dry_run=request.dry_run,
            offline=request.offline,
            refresh=request.refresh,
            limit=request.limit,
            not_before=request.not_before,
            run_id=job.run_id,
            make_context=lambda frozen: self._run_context(self.settings, store, frozen, job.actor),
            trigger=job.request.get("trigger", "api"),
            occurrence=Occurrence.model_validate(occurrence) if occurrence else None,
            security_only=request.security_only,
            rollback=request.rollback,
            must_approve=request.must_approve,
        )

    def _continue(self, store: Store, run_id: str, actor: str) -> None:
        run = store.get_run(run_id)
        if run is None:
            raise StoreError(f"unknown run {run_id!r}")
        if run.status == "cancelled":
            return
        if run.kind == "scan":
            context = self._scan_context(self.settings, store, load_policy(self.policy_path))
            resume_scan(run_id, context)
            return
        runs.resume(
            self.settings,
            store,
            run_id,
            actor=actor,
            make_context=lambda frozen: self._run_context(self.settings, store, frozen, actor),
        )

    def _scan(self, store: Store, job: JobRecord) -> None:
        request = ScanRequest.model_validate(job.request["request"])
        hosts = [Host.model_validate(h) for h in job.request["hosts"]]
        context = self._scan_context(self.settings, store, load_policy(self.policy_path))
        store.set_run_status(job.run_id, "running")
        with contextlib.suppress(LookupError):  # no checkpoint yet: start it below
            resume_scan(job.run_id, context)
            return
        fetch = self.settings.feeds.auto_update and not request.offline
        start_scan(
            hosts,
            context,
            target=request.target or "all",
            offline=not (fetch and not store.has_advisories()),
            run_id=job.run_id,
            refresh=request.refresh,
            trigger=job.request.get("trigger", "api"),
            schedule_id=job.request.get("schedule_id"),
        )

    def _fail_run(self, store: Store, run_id: str, reason: str) -> None:
        run = store.get_run(run_id)
        if run is None or run.status not in ("queued", "running"):
            return
        with contextlib.suppress(StoreError):
            store.finish_run(
                run_id, status="failed", summary={"status": "failed", "reason": reason}
            )

    # ------------------------------------------------------------------ notifications

    def _notify(self, store: Store, run: RunRecord) -> None:
        if self.notifier is None or run.kind != "run":
            return
        try:
            from patchpilot.app.notify import events_for_run

            document = runs.report(self.settings, store, run.run_id)
            if document is not None:
                self.notifier.emit_all(events_for_run(document))
        except Exception as exc:  # a notification must never fail a run
            self._log.warning("executor.notify_failed", run_id=run.run_id, error=str(exc))

    def _notify_missed(self, occurrence: Occurrence, reason: str | None = None) -> None:
        self._log.warning(
            "executor.schedule_missed",
            schedule_id=occurrence.schedule_id,
            at=occurrence.at.isoformat(),
            reason=reason or occurrence.reason,
        )
        if self.notifier is None:
            return
        try:
            from patchpilot.app.notify import schedule_missed_event

            self.notifier.emit(
                schedule_missed_event(
                    occurrence.schedule_id,
                    occurrence.at,
                    reason or occurrence.reason or "missed",
                )
            )
        except Exception as exc:  # a notification must never stop the loop
            self._log.warning("executor.notify_failed", error=str(exc))

    # ------------------------------------------------------------------ helpers

    def _hosts(self, target: str | None, limit: str | None) -> list[Host]:
        inventory = load_inventory(self.inventory_path, ssh=self.settings.ssh)
        return select_hosts(inventory, None if target in (None, "all") else target, limit)

    def _locked(self, run_id: str) -> bool:
        """True if a process holds the run's lock (it is driving the run right now)."""
        try:
            with run_lock(self.settings, run_id):
                return False
        except RunBusyError:
            return True

    def _owner_path(self, owner: str) -> Path:
        return self.settings.home / "locks" / f"executor-{owner}.lock"

    def _hold_owner_lock(self) -> int:
        path = self._owner_path(self.owner)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        return fd

    def _owner_alive(self, owner: str) -> bool:
        """True while executor ``owner`` holds its lock file (the kernel drops it at death)."""
        if not _OWNER_RE.match(owner):
            self._log.warning("executor.unknown_owner", owner=owner[:100])
            return True  # not ours to judge: never run a job twice
        path = self._owner_path(owner)
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        with contextlib.suppress(OSError):
            path.unlink()
        return False

"""CLI commands of patch runs: ``run``, ``approvals``, ``approve``, ``reject``, ``baseline``.

Registered on :data:`patchpilot.cli.app` when :mod:`patchpilot.cli` is imported. ``resume`` and
``report`` (in :mod:`patchpilot.cli`) call :func:`resume_patch_run` and :func:`print_run` for
runs of kind ``run``.

Exit codes of a patch run (added to those in :mod:`patchpilot.cli`):

====  ==========================================================================
0     completed, every deployed item installed (or nothing to do)
3     completed, but some items failed or were rolled back
6     awaiting approval (``patchpilot approve RUN_ID``)
7     halted (health-check failure, error threshold, maintenance window)
8     rejected (by a person, or the approval expired)
1     failed
====  ==========================================================================
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.markup import escape
from rich.table import Table

from graphs.run import (
    RunBusyError,
    RunContext,
    RunResult,
    load_run_state,
    result_of,
    start_run,
)
from patchpilot.approvals import DecisionSource, continue_waiting_run, decide, decision_of, expire
from patchpilot.audit import AuditLog, current_actor
from patchpilot.cli import (
    ExitCode,
    InventoryOpt,
    LimitOpt,
    OutputFormat,
    _Context,
    _emit_json,
    _fetcher,
    _host_progress,
    _inventory_for,
    _store,
    app,
    err,
    out,
)
from patchpilot.errors import ConfigError, PatchpilotError, UnknownTargetError
from patchpilot.inventory import select_hosts
from patchpilot.models import Ecosystem, utcnow
from patchpilot.policy import Policy, load_policy
from patchpilot.run_report import run_document
from patchpilot.settings import Settings
from patchpilot.store import Store
from patchpilot.text import inert
from tools.validate import split_pin, validate_package_name

__all__ = ["RUN_EXIT", "baseline_app", "print_run", "resume_patch_run"]

RUN_EXIT: dict[str, int] = {
    "completed": ExitCode.OK,
    "awaiting_approval": 6,
    "halted": 7,
    "rejected": 8,
    "failed": ExitCode.ERROR,
}
"""Exit code per run status (see the module docstring)."""

OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="Only this package (repeatable): NAME or NAME=VERSION (a version the host's "
        "repositories offer).",
    ),
]
RunFormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
CommentOpt = Annotated[str | None, typer.Option("--comment", "-m", help="Why (audit-logged).")]


def _parse_only(specs: list[str] | None) -> list[tuple[str, str | None]]:
    parsed: list[tuple[str, str | None]] = []
    for spec in specs or []:
        try:
            if "=" in spec:
                name, version = split_pin(spec, Ecosystem.DEBIAN)
                parsed.append((name, version))
            else:
                parsed.append((validate_package_name(spec, Ecosystem.DEBIAN), None))
        except PatchpilotError as exc:
            raise ConfigError(f"{spec!r}: {exc}", key="--only") from exc
    return parsed


def _context(settings: Settings, store: Store, policy: Policy, *, fetch: bool) -> RunContext:
    fetcher = _fetcher(settings, retries=1) if fetch else None
    return RunContext.create(settings, store, policy, fetcher=fetcher)


def print_run(store: Store, settings: Settings, result: RunResult, fmt: OutputFormat) -> int:
    """Print the run document (table or JSON); return the run's exit code."""
    snapshot = load_run_state(result.run_id, settings)
    records = store.deployments(result.run_id)
    document = run_document(result, snapshot, records, store.approval(result.run_id))
    if fmt is OutputFormat.JSON:
        _emit_json(document)
    else:
        _print_run_table(document)
    code = RUN_EXIT[result.status]
    if result.status == "completed" and any(
        d["status"] in ("failed", "rolled_back") for d in document["deployments"]
    ):
        code = ExitCode.PARTIAL
    return code


def _print_run_table(doc: dict[str, Any]) -> None:
    plan = doc["plan"]
    if plan is not None:
        rows = {(d["host"], d["package"]): d for d in doc["deployments"]}
        table = Table(
            title=f"plan {plan['plan_id']} ({len(plan['items'])} item(s), "
            f"{len(plan['excluded'])} excluded) sha256 {plan['content_hash'][:12]}",
            title_justify="left",
        )
        for col in ("ring", "host", "package", "from", "to", "test", "risk", "status", "reason"):
            table.add_column(col, overflow="fold")
        for item in plan["items"]:
            row = rows.get((item["host"], item["package"]), {})
            test = item.get("test") or {}
            status = row.get("status", "-")
            style = {"installed": "green", "failed": "red", "rolled_back": "yellow"}.get(status)
            table.add_row(
                escape(row.get("ring") or "-"),
                escape(item["host"]),
                escape(item["package"]),
                escape(item["from"] or "-"),
                escape(item["to"]),
                test.get("status", "-"),
                test.get("risk", "-"),
                f"[{style}]{status}[/]" if style else status,
                escape(row.get("reason") or ""),
            )
        out.print(table)
        if plan["unmatched_only"]:
            err.print(f"[yellow]--only matched nothing:[/] {', '.join(plan['unmatched_only'])}")
    for ring in doc["rings"]:
        note = f": {ring['reason']}" if ring["reason"] else ""
        out.print(
            f"ring {escape(ring['name'])} ({escape(', '.join(ring['hosts']) or 'no hosts')}): "
            f"{ring['status']}{escape(note)}"
        )
    if doc["compliance"]:
        out.print(
            "compliance: "
            + ", ".join(f"{escape(h)} {state}" for h, state in doc["compliance"].items())
        )
    approval = doc["approval"]
    if approval.get("reasons"):
        out.print("approval needed because:")
        for reason in approval["reasons"]:
            out.print(f"  - {escape(reason)}")
    if approval.get("decided_by"):
        out.print(
            f"approval {approval['status']} by {escape(approval['decided_by'])}"
            + (f": {escape(approval['comment'])}" if approval.get("comment") else "")
        )
    color = {"completed": "green", "awaiting_approval": "yellow", "halted": "red"}.get(
        doc["status"], "red"
    )
    reason = f" ({escape(doc['reason'])})" if doc["reason"] else ""
    out.print(f"run {doc['run_id']}: [{color}]{doc['status']}[/]{reason}")
    if doc["hint"]:
        out.print(f"[dim]{escape(doc['hint'])}[/]")


@app.command("run")
def run_cmd(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    target: Annotated[
        str | None, typer.Option("--target", "-t", help="A host, group or tag (default: all).")
    ] = None,
    limit: LimitOpt = None,
    only: OnlyOpt = None,
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Policy YAML (default: the settings' policy).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Plan, test and pre-check only; change nothing on hosts."),
    ] = False,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never fetch feeds; use the store as it is.")
    ] = False,
    refresh: Annotated[
        bool, typer.Option("--refresh", help="Run 'apt-get update' on each host first.")
    ] = False,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """Patch hosts: discover, assess, plan, test, schedule, approve, deploy in rings, report."""
    c: _Context = ctx.obj
    settings = c.settings
    specs = _parse_only(only)
    inv = _inventory_for(c, inventory, required=True)
    hosts = select_hosts(inv, None if target in (None, "all") else target, limit)
    policy = load_policy(policy_file or settings.policy_path)
    with _store(c) as store:
        fetch = settings.feeds.auto_update and not offline and not store.has_advisories()
        context = _context(settings, store, policy, fetch=fetch)
        with _host_progress(len(hosts), ("discover", "assess")) as on_progress:
            context.on_progress = on_progress
            result = start_run(
                hosts,
                context,
                target=target or "all",
                policy=policy,
                only=specs,
                dry_run=dry_run,
                offline=not fetch,
                refresh=refresh,
                limit=limit,
            )
        code = print_run(store, settings, result, fmt)
    raise typer.Exit(code)


def _make_context(c: _Context, store: Store) -> Callable[[Policy], RunContext]:
    return lambda policy: _context(c.settings, store, policy, fetch=False)


def _decide(
    ctx: typer.Context, run_id: str, status: Literal["approved", "rejected"], comment: str | None
) -> RunResult:
    c: _Context = ctx.obj
    with _store(c) as store:
        record = store.approval(run_id)
        if record is not None and record.status == "pending" and record.expired_at(utcnow()):
            err.print(f"[red]the approval of run {run_id} expired at {record.expires_at}[/]")
        return decide(
            c.settings,
            store,
            run_id,
            status,
            comment=comment,
            make_context=_make_context(c, store),
            source=DecisionSource(
                parser="cli",
                words=f"patchpilot {'approve' if status == 'approved' else 'reject'} {run_id}",
            ),
        )


def _finish(ctx: typer.Context, result: RunResult, fmt: OutputFormat) -> None:
    c: _Context = ctx.obj
    with _store(c) as store:
        code = print_run(store, c.settings, result, fmt)
    raise typer.Exit(code)


@app.command("approve")
def approve_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    comment: CommentOpt = None,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """Approve a run's frozen plan and continue the run in the foreground."""
    try:
        result = _decide(ctx, run_id, "approved", comment)
    except RunBusyError as exc:
        raise PatchpilotError(str(exc)) from exc
    _finish(ctx, result, fmt)


@app.command("reject")
def reject_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    comment: CommentOpt = None,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """Reject a run's plan: nothing is deployed and the run ends ``rejected``."""
    result = _decide(ctx, run_id, "rejected", comment)
    _finish(ctx, result, fmt)


@app.command("approvals")
def approvals_cmd(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Decided and expired ones too, not only pending.")
    ] = False,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """List runs waiting for approval (expired ones are marked expired and their runs end)."""
    c: _Context = ctx.obj
    settings = c.settings
    now = utcnow()
    with _store(c) as store:
        for record in store.approvals("pending"):
            if record.expired_at(now):
                expire(store, settings, record, now)
                expired = store.approval(record.run_id)
                assert expired is not None
                with contextlib.suppress(RunBusyError):
                    continue_waiting_run(
                        settings,
                        store,
                        record.run_id,
                        decision_of(expired),
                        _make_context(c, store),
                    )
        records = store.approvals(None if show_all else "pending")
    if fmt is OutputFormat.JSON:
        _emit_json(
            {
                "schema": "patchpilot.approvals/v1",
                "approvals": [r.model_dump(mode="json") for r in records],
            }
        )
        return
    table = Table(title=f"{len(records)} approval(s)", title_justify="left")
    for col in ("run", "status", "items", "hosts", "expires", "reasons", "decided"):
        table.add_column(col, overflow="fold")
    for r in records:
        items = r.payload.get("items", [])
        table.add_row(
            r.run_id,
            r.status,
            str(len(items)),
            ", ".join(sorted({i["host"] for i in items})),
            r.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            escape("; ".join(r.reasons)),
            escape(inert(f"{r.decided_by} via {r.decided_via or '?'}: {r.comment or ''}"))
            if r.decided_by
            else "-",
        )
    out.print(table)
    if any(r.status == "pending" for r in records):
        out.print("[dim]approve with `patchpilot approve RUN_ID --comment '...'`[/]")


def resume_patch_run(ctx: typer.Context, run_id: str, fmt: OutputFormat) -> None:
    """``patchpilot resume`` for a patch run: after a crash, an approval, or for the window."""
    c: _Context = ctx.obj
    settings = c.settings
    with _store(c) as store:
        record = store.approval(run_id)
        snapshot = load_run_state(run_id, settings)
        if snapshot is None:
            raise UnknownTargetError(f"no checkpoint for run {run_id}", key="run_id")
        decision = None
        if record is not None and any(i.get("kind") == "approval" for i in snapshot.interrupts):
            if record.status == "pending" and record.expired_at(utcnow()):
                expire(store, settings, record, utcnow())
                record = store.approval(run_id)
            if record is not None and record.status != "pending":
                decision = decision_of(record)
        try:
            result = continue_waiting_run(
                settings, store, run_id, decision, _make_context(c, store)
            )
        except RunBusyError as exc:
            raise PatchpilotError(str(exc)) from exc
        code = print_run(store, settings, result, fmt)
    raise typer.Exit(code)


def report_patch_run(store: Store, settings: Settings, run_id: str) -> dict[str, Any] | None:
    """The run document of a patch run from its checkpoint (``None``: no checkpoint)."""
    snapshot = load_run_state(run_id, settings)
    if snapshot is None:
        return None
    result = result_of(run_id, snapshot)
    return run_document(result, snapshot, store.deployments(run_id), store.approval(run_id))


baseline_app = typer.Typer(
    help="Baseline rejections: versions rejected after a failed health check.",
    no_args_is_help=True,
)
app.add_typer(baseline_app, name="baseline")


@baseline_app.command("rejections")
def rejections_cmd(ctx: typer.Context, fmt: RunFormatOpt = OutputFormat.TABLE) -> None:
    """List versions rejected until a person clears them."""
    c: _Context = ctx.obj
    with _store(c) as store:
        records = store.active_rejections()
    if fmt is OutputFormat.JSON:
        _emit_json(
            {
                "schema": "patchpilot.rejections/v1",
                "rejections": [r.model_dump(mode="json") for r in records],
            }
        )
        return
    table = Table(title=f"{len(records)} rejected version(s)", title_justify="left")
    for col in ("package", "version", "since", "run", "reason"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r.package,
            r.version,
            r.rejected_at.strftime("%Y-%m-%d %H:%M"),
            r.run_id,
            escape(r.reason),
        )
    out.print(table)


@baseline_app.command("clear")
def clear_cmd(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="PACKAGE=VERSION to allow again.")],
    comment: CommentOpt = None,
) -> None:
    """Clear a rejection: the version may be planned again."""
    c: _Context = ctx.obj
    name, version = _parse_only([spec])[0]
    if version is None:
        raise ConfigError("give PACKAGE=VERSION", key="spec")
    actor = current_actor()
    with _store(c) as store:
        record = store.clear_rejection(name, version, by=actor)
    AuditLog.for_settings(c.settings, actor=actor).record(
        "baseline.cleared",
        package=name,
        details={"version": version, "comment": comment, "rejected_by_run": record.run_id},
    )
    out.print(f"{escape(record.spec)} may be planned again")

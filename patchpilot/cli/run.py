"""CLI commands of patch runs: ``run``, ``approvals``, ``approve``, ``reject``, ``cancel``,
``baseline``.

Each command parses its options, calls a use case of :mod:`patchpilot.app.runs` or
:mod:`patchpilot.app.approvals` with the OS user as the acting identity, and prints.
``resume`` and ``report`` (in :mod:`patchpilot.cli.scan`) call :func:`resume_patch_run` and
:func:`print_run_table` for runs of kind ``run``. The run graph (langgraph) loads only when one
of these commands runs.

Exit codes of a patch run (added to those in :mod:`patchpilot.cli.app`):

====  ==========================================================================
0     completed, every deployed item installed (or nothing to do)
3     completed, but some items failed or were rolled back; or ``partial``: the
      hosts reached completed, some targeted hosts could not be reached
4     failed: no targeted host could be reached
6     awaiting approval (``patchpilot approve RUN_ID``)
7     halted (health-check failure, error threshold, maintenance window, or
      waiting for ``--not-before``: ``patchpilot resume RUN_ID`` continues it)
8     rejected (by a person, or the approval expired)
10    cancelled (``patchpilot cancel RUN_ID`` while it ran: the hosts not started are
      skipped)
1     failed (any other reason: ``patchpilot resume RUN_ID`` continues it); also a run
      whose ``--only`` names matched no pending update and that has nothing to deploy
      (the document's ``hint`` asks: "zlib is the source of zlib1g: patch zlib1g?")
2     a bad flag or input, refused before anything happened (e.g. a ``--comment``
      over 2,000 characters or with control characters)
====  ==========================================================================

A host that could not be reached (unreachable, changed or unknown host key, refused login) is a
failure of the run, never "nothing to deploy": its compliance is ``unknown`` and the document
lists it under ``unreachable``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from rich.table import Table

from patchpilot.cli.app import (
    Context,
    InventoryOpt,
    LimitOpt,
    OutputFormat,
    emit_json,
    err,
    host_progress,
    inventory_for,
    out,
    safe,
)
from patchpilot.core.audit import AuditLog
from patchpilot.core.auth import Action
from patchpilot.core.errors import ConfigError, InvalidInputError, PatchpilotError
from patchpilot.core.inventory import select_hosts
from patchpilot.core.models import Ecosystem, utcnow
from patchpilot.core.policy import load_policy
from patchpilot.core.store import Store
from patchpilot.core.text import MAX_COMMENT_LENGTH, bounded
from patchpilot.core.validate import split_pin, validate_package_name

if TYPE_CHECKING:
    from patchpilot.graphs.run import RunResult

__all__ = [
    "approvals_cmd",
    "approve_cmd",
    "baseline_app",
    "cancel_cmd",
    "print_run",
    "print_run_table",
    "reject_cmd",
    "resume_patch_run",
    "run_cmd",
]


OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="Only this package (repeatable): NAME or NAME=VERSION, NAME a binary package "
        "(zlib1g) or a source package as advisories name it (zlib: every binary of that "
        "source); VERSION one the host's repositories offer (for a source: the binaries built "
        "from that source version).",
    ),
]
NotBeforeOpt = Annotated[
    str | None,
    typer.Option(
        "--not-before",
        help="Deploy no earlier than this: HH:MM (the next time the clock shows it) or ISO 8601 "
        "(2026-12-24T22:00, optionally with an offset), in the policy's time zone. The run "
        "plans, tests and asks for approval now, then waits (exit 7) and `patchpilot resume` "
        "deploys once the time has come and the maintenance window is open.",
    ),
]
RunFormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
CommentOpt = Annotated[
    str | None,
    typer.Option(
        "--comment",
        "-m",
        help=f"Why (audit-logged; at most {MAX_COMMENT_LENGTH} characters, no control characters).",
    ),
]


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


def _comment(comment: str | None) -> str | None:
    """``--comment`` as given, or refused (exit 2) before anything is looked up or decided.

    The same bound as every decision path (:func:`patchpilot.core.text.bounded`): at most
    :data:`~patchpilot.core.text.MAX_COMMENT_LENGTH` characters, no control characters.
    """
    if comment is None:
        return None
    try:
        return bounded(comment, what="--comment")
    except InvalidInputError as exc:
        raise typer.BadParameter(exc.reason, param_hint="'--comment'") from exc


def print_run(store: Store, c: Context, result: RunResult, fmt: OutputFormat) -> int:
    """Print the run document (table or JSON); return the run's exit code."""
    from patchpilot.app import runs

    document = runs.document(c.settings, store, result)
    if fmt is OutputFormat.JSON:
        emit_json(document)
    else:
        print_run_table(document)
    return runs.exit_code(document)


def print_analysis(entry: dict[str, Any]) -> None:
    """One ring's post-patch analysis: verdict, baseline and each metric's evidence."""
    color = {"pass": "green", "marginal": "yellow", "nodata": "yellow"}.get(entry["verdict"], "red")
    base = ", ".join(entry["baseline_hosts"]) or "none"
    action = f", {entry['action']}" if entry.get("action") else ""
    out.print(
        f"analysis of ring {safe(entry['ring'])}: [{color}]{entry['verdict']}[/] score "
        f"{entry['score']:g} (baseline {entry['baseline_mode']}: {safe(base)}{action})"
    )
    table = Table(title_justify="left")
    for col in ("metric", "class", "baseline p50", "canary p50", "n", "p-value", "effect"):
        table.add_column(col, overflow="fold")
    for m in entry["metrics"]:
        b, c = m["baseline"], m["canary"]

        def num(value: float | None) -> str:
            return "-" if value is None else f"{value:.4g}"

        table.add_row(
            safe(m["name"]),
            m["classification"],
            num(b["median"]),
            num(c["median"]),
            f"{b['n']}/{c['n']}",
            num(m["p_value"]),
            num(m["effect_size"]),
        )
    out.print(table)
    if entry["verdict"] != "pass":
        out.print(f"  {safe(entry['reason'])}")


def print_run_table(doc: dict[str, Any]) -> None:
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
                safe(row.get("ring") or "-"),
                safe(item["host"]),
                safe(item["package"]),
                safe(item["from"] or "-"),
                safe(item["to"]),
                test.get("status", "-"),
                test.get("risk", "-"),
                f"[{style}]{status}[/]" if style else status,
                safe(row.get("reason") or ""),
            )
        out.print(table)
        if plan["unmatched_only"]:
            err.print(
                f"[yellow]--only matched nothing:[/] {safe(', '.join(plan['unmatched_only']))}"
            )
            for spec in plan["unmatched_only"]:
                said = plan.get("suggestions", {}).get(spec)
                if said:
                    err.print(f"  {safe(spec)}: {safe(said)}")
    if doc.get("not_before"):
        out.print(f"not before: {safe(doc['not_before'])}")
    for ring in doc["rings"]:
        note = f": {ring['reason']}" if ring["reason"] else ""
        out.print(
            f"ring {safe(ring['name'])} ({safe(', '.join(ring['hosts']) or 'no hosts')}): "
            f"{ring['status']}{safe(note)}"
        )
    for analysis in doc.get("analysis") or []:
        print_analysis(analysis)
    for entry in doc.get("unreachable", []):
        host, error = entry["host"], entry["error"]
        why = error.removeprefix(f"{host}: ")
        err.print(f"[red]✗ {safe(host)} not reached[/]: {safe(why)}")
    if doc["compliance"]:
        out.print(
            "compliance: "
            + ", ".join(f"{safe(h)} {state}" for h, state in doc["compliance"].items())
        )
    approval = doc["approval"]
    if approval.get("reasons"):
        out.print("approval needed because:")
        for reason in approval["reasons"]:
            out.print(f"  - {safe(reason)}")
    if approval.get("decided_by"):
        out.print(
            f"approval {approval['status']} by {safe(approval['decided_by'])}"
            + (f": {safe(approval['comment'])}" if approval.get("comment") else "")
        )
    color = {"completed": "green", "awaiting_approval": "yellow", "partial": "yellow"}.get(
        doc["status"], "red"
    )
    reason = f" ({safe(doc['reason'])})" if doc["reason"] else ""
    out.print(f"run {safe(doc['run_id'])}: [{color}]{safe(doc['status'])}[/]{reason}")
    if doc["hint"]:
        out.print(f"[dim]{safe(doc['hint'])}[/]")


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
    not_before: NotBeforeOpt = None,
    security_only: Annotated[
        bool,
        typer.Option(
            "--security-only",
            help="Plan only updates that close a known security advisory (a -security suite, "
            "CVEs or findings); the others are listed as excluded: not a security update.",
        ),
    ] = False,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """Patch hosts: discover, assess, plan, test, schedule, approve, deploy in rings, report."""
    from patchpilot.agents.intake.when import parse_not_before, policy_timezone
    from patchpilot.app import runs

    c: Context = ctx.obj
    settings = c.settings
    if not dry_run:
        c.require(Action.START)
    specs = _parse_only(only)
    # `-t local` is this machine: no inventory needed (never the default: patching this
    # machine is asked for by name).
    inv = inventory_for(c, inventory, required=target != "local")
    hosts = select_hosts(inv, None if target in (None, "all") else target, limit)
    policy = load_policy(policy_file or settings.policy_path)
    start_at = None
    if not_before is not None:
        try:
            start_at = parse_not_before(
                not_before, now=utcnow(), timezone=policy_timezone(policy.schedule)
            )
        except InvalidInputError as exc:
            raise typer.BadParameter(exc.reason, param_hint="'--not-before'") from exc
    with c.store() as store:
        with host_progress(len(hosts), ("discover", "assess")) as on_progress:
            result = runs.start(
                settings,
                store,
                hosts,
                actor=c.actor,
                target=target or "all",
                policy=policy,
                only=specs,
                dry_run=dry_run,
                offline=offline,
                refresh=refresh,
                limit=limit,
                on_progress=on_progress,
                not_before=start_at,
                security_only=security_only,
            )
        code = print_run(store, c, result, fmt)
    raise typer.Exit(code)


def _decide(
    ctx: typer.Context,
    run_id: str,
    status: Literal["approved", "rejected"],
    comment: str | None,
    fmt: OutputFormat,
) -> None:
    """Record the decision, continue the run in the foreground, print it, exit with its code."""
    from patchpilot.app.approvals import DecisionSource, decide
    from patchpilot.app.contexts import run_context_factory

    c: Context = ctx.obj
    c.require(Action.DECIDE)
    with c.store() as store:
        record = store.approval(run_id)
        if record is not None and record.status == "pending" and record.expired_at(utcnow()):
            err.print(f"[red]the approval of run {safe(run_id)} expired at {record.expires_at}[/]")
        result = decide(
            c.settings,
            store,
            run_id,
            status,
            comment=comment,
            make_context=run_context_factory(c.settings, store, actor=c.actor),
            source=DecisionSource(
                parser="cli",
                words=f"patchpilot {'approve' if status == 'approved' else 'reject'} {run_id}",
            ),
            actor=c.actor,
        )
        code = print_run(store, c, result, fmt)
    raise typer.Exit(code)


def approve_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    comment: CommentOpt = None,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """Approve a run's frozen plan and continue the run in the foreground."""
    _decide(ctx, run_id, "approved", _comment(comment), fmt)


def reject_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run waiting for approval.")],
    comment: CommentOpt = None,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """Reject a run's plan: nothing is deployed and the run ends ``rejected``."""
    _decide(ctx, run_id, "rejected", _comment(comment), fmt)


def approvals_cmd(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Decided and expired ones too, not only pending.")
    ] = False,
    fmt: RunFormatOpt = OutputFormat.TABLE,
) -> None:
    """List runs waiting for approval (expired ones are marked expired and their runs end)."""
    from patchpilot.app.approvals import list_approvals
    from patchpilot.app.contexts import run_context_factory

    c: Context = ctx.obj
    with c.store() as store:
        records = list_approvals(
            c.settings,
            store,
            actor=c.actor,
            include_decided=show_all,
            make_context=run_context_factory(c.settings, store, actor=c.actor),
        )
    if fmt is OutputFormat.JSON:
        emit_json(
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
            safe(r.run_id),
            r.status,
            str(len(items)),
            safe(", ".join(sorted({i["host"] for i in items}))),
            r.expires_at.strftime("%Y-%m-%d %H:%M UTC"),
            safe("; ".join(r.reasons)),
            safe(f"{r.decided_by} via {r.decided_via or '?'}: {r.comment or ''}")
            if r.decided_by
            else "-",
        )
    out.print(table)
    if any(r.status == "pending" for r in records):
        out.print("[dim]approve with `patchpilot approve RUN_ID --comment '...'`[/]")


def cancel_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to cancel.")],
) -> None:
    """Cancel a run: queued or waiting for its window, it ends ``cancelled``; waiting for
    approval, it is rejected; running (here or in the service), it stops before its next host
    starts (a host being installed finishes) and ends ``cancelled``."""
    from patchpilot.app import runs
    from patchpilot.core.intents import RUN_ID_RE

    if not RUN_ID_RE.fullmatch(run_id):
        raise typer.BadParameter("not a run id", param_hint="'RUN_ID'")
    c: Context = ctx.obj
    c.require(Action.CANCEL)
    with c.store() as store:
        outcome = runs.cancel(c.settings, store, run_id, actor=c.actor)
    said = {
        "cancelled": "cancelled",
        "rejected": "its approval is rejected: it ends rejected when continued (the service, "
        "or `patchpilot resume`)",
        "cancelling": "cancel requested: it stops before its next host starts",
    }[outcome]
    out.print(f"run {safe(run_id)}: {said}")


def resume_patch_run(ctx: typer.Context, run_id: str, fmt: OutputFormat) -> None:
    """``patchpilot resume`` for a patch run: after a crash, an approval, or for the window."""
    from patchpilot.app import runs

    c: Context = ctx.obj
    c.require(Action.START)
    with c.store() as store:
        result = runs.resume(c.settings, store, run_id, actor=c.actor)
        code = print_run(store, c, result, fmt)
    raise typer.Exit(code)


baseline_app = typer.Typer(
    help="Baseline rejections: versions rejected after a failed health check.",
    no_args_is_help=True,
)


@baseline_app.command("rejections")
def rejections_cmd(ctx: typer.Context, fmt: RunFormatOpt = OutputFormat.TABLE) -> None:
    """List versions rejected until a person clears them."""
    c: Context = ctx.obj
    with c.store() as store:
        records = store.active_rejections()
    if fmt is OutputFormat.JSON:
        emit_json(
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
            safe(r.package),
            safe(r.version),
            r.rejected_at.strftime("%Y-%m-%d %H:%M"),
            safe(r.run_id),
            safe(r.reason),
        )
    out.print(table)


@baseline_app.command("clear")
def clear_cmd(
    ctx: typer.Context,
    spec: Annotated[str, typer.Argument(help="PACKAGE=VERSION to allow again.")],
    comment: CommentOpt = None,
) -> None:
    """Clear a rejection: the version may be planned again."""
    c: Context = ctx.obj
    name, version = _parse_only([spec])[0]
    if version is None:
        raise ConfigError("give PACKAGE=VERSION", key="spec")
    actor = c.actor
    with c.store() as store:
        record = store.clear_rejection(name, version, by=actor)
    AuditLog.for_settings(c.settings, actor=actor).record(
        "baseline.cleared",
        package=name,
        details={"version": version, "comment": comment, "rejected_by_run": record.run_id},
    )
    out.print(f"{safe(record.spec)} may be planned again")

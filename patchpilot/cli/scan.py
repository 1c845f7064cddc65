"""``scan``, ``findings``, ``report``, ``runs``, ``resume``: scanning and what it found.

Each command parses its options, calls a use case of :mod:`patchpilot.app.scans` (or
:mod:`patchpilot.app.runs` for a patch run) and prints; the scan graph loads only when a scan
starts or resumes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from patchpilot.app.report import render_csv, render_markdown
from patchpilot.cli.app import (
    ConcurrencyOpt,
    Context,
    ExitCode,
    FormatOpt,
    InventoryOpt,
    LimitOpt,
    OutputFormat,
    ReportFormat,
    ReportFormatOpt,
    emit_json,
    err,
    host_progress,
    inventory_for,
    out,
    safe,
)
from patchpilot.cli.run import print_run_table, resume_patch_run
from patchpilot.core.errors import UnknownTargetError
from patchpilot.core.inventory import select_hosts
from patchpilot.core.models import FixStatus, Severity

if TYPE_CHECKING:
    from patchpilot.app.scans import ScanReport
    from patchpilot.core.store import FindingRecord

__all__ = ["findings_cmd", "report_cmd", "resume_cmd", "runs_cmd", "scan_cmd"]

MAX_RUNS_LISTED = 10_000
"""Largest ``runs --limit`` accepted."""
TOP_EXPLAINED = 5
"""How many findings the table report explains below the table."""


def _finite(value: float | None) -> float | None:
    """Refuse ``nan`` (click's range check lets it through: every comparison is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a number between 0 and 100")
    return value


def scan_cmd(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            "-t",
            help="'local', a host, a group or a tag (default: all "
            "hosts of the inventory, or local without one).",
        ),
    ] = None,
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    fmt: ReportFormatOpt = ReportFormat.TABLE,
    offline: Annotated[
        bool, typer.Option("--offline", help="Never fetch feeds; use the store as it is.")
    ] = False,
    fail_on: Annotated[
        Severity | None,
        typer.Option("--fail-on", help="Exit 5 if a finding has at least this severity."),
    ] = None,
    fail_on_score: Annotated[
        float | None,
        typer.Option(
            "--fail-on-score",
            min=0,
            max=100,
            callback=_finite,
            help="Exit 5 if a risk score reaches it (0-100).",
        ),
    ] = None,
    refresh: Annotated[
        bool,
        typer.Option(
            "--refresh",
            help="Run 'apt-get update' on each host first (needs sudo there); default: use the "
            "package lists the hosts already have.",
        ),
    ] = False,
    concurrency: ConcurrencyOpt = None,
) -> None:
    """Scan hosts: discover, source advisories, assess, prioritize and report (one run)."""
    from patchpilot.app import scans
    from patchpilot.core.store import Store

    c: Context = ctx.obj
    settings = c.settings
    if concurrency is not None:
        settings = settings.model_copy(update={"concurrency": concurrency})
    target = target or ("all" if (inventory or settings.inventory) else "local")
    inv = inventory_for(c, inventory, required=target != "local")
    hosts = select_hosts(inv, None if target == "all" else target, limit)
    with Store(settings.store_path) as store:
        with host_progress(len(hosts), ("discover", "assess")) as on_progress:
            run_id = scans.start(
                settings,
                store,
                hosts,
                actor=c.actor,
                target=target,
                offline=offline,
                refresh=refresh,
                on_progress=on_progress,
            )
        code = _print_scan_report(scans.report(store, run_id), fmt)
        if code == ExitCode.OK and scans.gate(
            store, run_id, fail_on=fail_on, fail_on_score=fail_on_score
        ):
            code = ExitCode.FINDINGS
    raise typer.Exit(code)


def _print_scan_report(report: ScanReport, fmt: ReportFormat) -> int:
    """Print a scan's report; return its exit code (3/4 when some/all hosts failed)."""
    _emit_report(report.document, report.records, fmt)
    failed = report.failed
    if fmt is ReportFormat.TABLE:
        for h in report.hosts:
            for warning in h.warnings:
                err.print(f"[yellow]! {safe(h.host)}[/]: {safe(warning)}")
    for h in failed:
        err.print(f"[red]✗ {safe(h.host)}[/]: {safe(h.message)}")
    if not report.hosts or not failed:
        return ExitCode.OK
    return ExitCode.ALL_FAILED if len(failed) == len(report.hosts) else ExitCode.PARTIAL


def _emit_report(
    document: dict[str, Any], records: Sequence[FindingRecord], fmt: ReportFormat
) -> None:
    if fmt is ReportFormat.JSON:
        emit_json(document)
    elif fmt is ReportFormat.CSV:
        sys.stdout.write(render_csv(records))
    elif fmt is ReportFormat.MARKDOWN:
        sys.stdout.write(render_markdown(document))
    else:
        _print_findings_table(document)


def _print_hosts_table(hosts: list[dict[str, Any]]) -> None:
    if not hosts:
        return
    table = Table(title=f"{len(hosts)} host(s)", title_justify="left")
    for col in ("host", "status", "os", "kernel", "reboot", "pending", "security", "CVEs"):
        table.add_column(col, overflow="fold")
    for h in hosts:
        pending = h["pending_updates"]
        security = [u for u in pending if u["security"]]
        cves = {c for u in pending for c in u["cves"]}
        status = safe(h["status"]) if h["status"] == "ok" else f"[red]{safe(h['status'])}[/]"
        table.add_row(
            safe(h["name"]),
            status,
            safe(h["os"] or "-"),
            safe(h["kernel"] or "-"),
            "-" if h["reboot_required"] is None else ("yes" if h["reboot_required"] else "no"),
            str(len(pending)) if h["ok"] else "-",
            str(len(security)) if h["ok"] else "-",
            str(len(cves)) if h["ok"] else "-",
        )
    out.print(table)


def _print_findings_table(document: dict[str, Any]) -> None:
    _print_hosts_table(document.get("hosts") or [])
    data = document["data"]
    if data.get("hint"):
        err.print(f"[yellow]note:[/] {safe(data['hint'])}")
    if data.get("stale_feeds"):
        err.print(f"[yellow]stale feeds:[/] {safe(', '.join(data['stale_feeds']))}")
    summary = document["summary"]
    table = Table(
        title=f"{summary['findings']} finding(s), {summary['actionable']} actionable, "
        f"{summary['kev']} in KEV",
        title_justify="left",
    )
    for col in (
        "score",
        "ssvc",
        "due",
        "host",
        "source",
        "installed",
        "fixed",
        "advisory",
        "CVEs",
    ):
        table.add_column(col, overflow="fold")
    for f in document["findings"]:
        risk = f["risk"] or {}
        cves = " ".join(f["cves"][:3]) + (f" +{len(f['cves']) - 3}" if len(f["cves"]) > 3 else "")
        table.add_row(
            safe(risk.get("score", "-")),
            safe(risk.get("ssvc", "-")),
            safe(risk.get("due") or "-"),
            safe(f["host"]),
            safe(f["source_package"]),
            safe(f["installed_version"]),
            safe(f["fixed_version"]) if f["fixed_version"] else f"[dim]{safe(f['fix_state'])}[/]",
            safe(f["advisory"]),
            safe(cves or "-"),
        )
    out.print(table)
    top = [f for f in document["findings"] if f["risk"]][:TOP_EXPLAINED]
    if top:
        out.print(f"[bold]Why the top {len(top)}:[/]")
        for f in top:
            out.print(
                f"  {f['risk']['score']:>5} {safe(f['host'])} {safe(f['source_package'])} "
                f"({safe(f['advisory'])}): {safe(f['risk']['rationale'])}"
            )
        out.print("[dim](every rationale: --format json, csv or markdown)[/]")


def findings_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Only this host.")] = None,
    severity: Annotated[
        Severity | None, typer.Option("--severity", help="At least this severity.")
    ] = None,
    kev: Annotated[
        bool | None, typer.Option("--kev/--no-kev", help="Only (or no) CISA KEV findings.")
    ] = None,
    fix_state: Annotated[
        FixStatus | None, typer.Option("--fix-state", help="Only this fix state.")
    ] = None,
    actionable: Annotated[
        bool, typer.Option("--actionable", help="Only fixed-and-reachable findings.")
    ] = False,
    run: Annotated[
        str | None, typer.Option("--run", help="A run id (default: each host's latest scan).")
    ] = None,
    fmt: ReportFormatOpt = ReportFormat.TABLE,
) -> None:
    """List stored findings with filters (latest scan of each host by default)."""
    from patchpilot.app import scans

    c: Context = ctx.obj
    with c.store() as store:
        report = scans.findings(
            store,
            run_id=run,
            host=host,
            min_severity=severity,
            kev=kev,
            fix_status=fix_state,
            actionable=True if actionable else None,
        )
    _emit_report(report.document, report.records, fmt)


def report_cmd(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest scan).")] = None,
    fmt: ReportFormatOpt = ReportFormat.TABLE,
) -> None:
    """Print the report of a scan run (table, JSON, CSV or Markdown)."""
    from patchpilot.app import scans

    c: Context = ctx.obj
    with c.store() as store:
        if run_id is None:
            run_id = scans.latest_run_id(store)
        run = store.get_run(run_id)
        if run is not None and run.kind == "run":
            _print_patch_run_report(c, run_id, fmt)
            return
        _print_scan_report(scans.report(store, run_id), fmt)


def _print_patch_run_report(c: Context, run_id: str, fmt: ReportFormat) -> None:
    """A patch run: the scan report plus its plan, deployments and per-host compliance."""
    from patchpilot.app import runs, scans

    with c.store() as store:
        combined, details = runs.patch_run_report(c.settings, store, run_id)
        if fmt is not ReportFormat.JSON or details is None:
            _print_scan_report(scans.report(store, run_id), fmt)
            if details is not None and fmt is ReportFormat.TABLE:
                print_run_table(details)
            return
    emit_json(combined)


def runs_cmd(
    ctx: typer.Context,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", min=1, max=MAX_RUNS_LISTED, help=f"How many (1-{MAX_RUNS_LISTED})."
        ),
    ] = 20,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """List runs, newest first (an unfinished one can be resumed)."""
    c: Context = ctx.obj
    with c.store() as store:
        runs = store.list_runs(limit=limit)
    if fmt is OutputFormat.JSON:
        emit_json(
            {"schema": "patchpilot.runs/v1", "runs": [r.model_dump(mode="json") for r in runs]}
        )
        return
    table = Table(title=f"{len(runs)} run(s)", title_justify="left")
    for col in ("run", "kind", "target", "status", "started", "finished", "findings"):
        table.add_column(col, overflow="fold")
    for r in runs:
        table.add_row(
            safe(r.run_id),
            safe(r.kind),
            safe(r.target),
            safe(r.status),
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.finished_at.strftime("%H:%M:%S") if r.finished_at else "-",
            safe((r.summary or {}).get("findings", "-")),
        )
    out.print(table)


def resume_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to continue (see `patchpilot runs`).")],
    fmt: ReportFormatOpt = ReportFormat.TABLE,
) -> None:
    """Continue an interrupted run from its last checkpoint."""
    from patchpilot.app import scans

    c: Context = ctx.obj
    with c.store() as store:
        run = store.get_run(run_id)
        if run is None:
            raise UnknownTargetError(f"no run {run_id!r}; see `patchpilot runs`", key="run_id")
    if run.kind == "run":
        resume_patch_run(
            ctx, run_id, OutputFormat.JSON if fmt is ReportFormat.JSON else OutputFormat.TABLE
        )
        return
    with c.store() as store:
        scans.resume(c.settings, store, run_id, actor=c.actor)
        code = _print_scan_report(scans.report(store, run_id), fmt)
    raise typer.Exit(code)

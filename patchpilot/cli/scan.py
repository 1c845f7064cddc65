"""``scan``, ``findings``, ``report``, ``runs``, ``resume``: scanning and what it found.

Each command parses its options, calls a use case of :mod:`patchpilot.app.scans` (or
:mod:`patchpilot.app.runs` for a patch run) and prints; the scan graph loads only when a scan
starts or resumes.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from patchpilot.app.gates import UnknownSeverity
from patchpilot.app.report import render_csv, render_markdown
from patchpilot.cli.app import (
    ConcurrencyOpt,
    Context,
    ExitCode,
    FormatOpt,
    InventoryOpt,
    LimitOpt,
    OutputFileOpt,
    OutputFormat,
    ReportFormat,
    ReportFormatOpt,
    emit_json,
    err,
    host_progress,
    inventory_for,
    json_text,
    out,
    safe,
    write_report_file,
)
from patchpilot.cli.run import print_run_table, resume_patch_run
from patchpilot.core.errors import UnknownTargetError
from patchpilot.core.inventory import select_hosts
from patchpilot.core.models import FixStatus, Severity

if TYPE_CHECKING:
    from patchpilot.app.scans import ScanReport
    from patchpilot.core.acceptance import Acceptances
    from patchpilot.core.store import FindingRecord, Store

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
        typer.Option(
            "--fail-on",
            help="Exit 5 if a finding has at least this severity (unknown severity counts: "
            "see --unknown-severity).",
        ),
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
    unknown_severity: Annotated[
        UnknownSeverity,
        typer.Option(
            "--unknown-severity",
            help="'fail' (default): a finding or pending security update of unknown severity "
            "matches any --fail-on threshold; 'ignore': only known severities count.",
        ),
    ] = UnknownSeverity.FAIL,
    require_feeds: Annotated[
        bool,
        typer.Option(
            "--require-feeds",
            help="Exit 9 when no advisory feed is imported or a feed is stale.",
        ),
    ] = False,
    concurrency: ConcurrencyOpt = None,
    output: OutputFileOpt = None,
) -> None:
    """Scan hosts: discover, source advisories, assess, prioritize and report (one run)."""
    from patchpilot.app import gates, scans
    from patchpilot.core.store import Store

    _check_output(fmt, output)
    c: Context = ctx.obj
    settings = c.settings
    if concurrency is not None:
        settings = settings.model_copy(update={"concurrency": concurrency})
    target = target or ("all" if (inventory or settings.inventory) else "local")
    inv = inventory_for(c, inventory, required=target != "local")
    hosts = select_hosts(inv, None if target == "all" else target, limit)
    accepted = _acceptances(c)  # a broken accept file stops here, before the scan
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
        code = _print_scan_report(
            scans.report(store, run_id, acceptances=accepted), fmt, store=store, output=output
        )
        problem = gates.feeds_problem(store) if require_feeds else None
        if problem is not None:
            err.print(f"[red]--require-feeds:[/] {safe(problem)}")
            if code == ExitCode.OK:
                code = ExitCode.FEEDS_UNUSABLE
        verdict = gates.gate(
            store,
            run_id,
            fail_on=fail_on,
            fail_on_score=fail_on_score,
            unknown_severity=unknown_severity,
            acceptances=accepted,
        )
        if verdict.failed:
            err.print(f"[red]{safe(verdict.reason)}[/]")
            if code == ExitCode.OK:
                code = ExitCode.FINDINGS
    raise typer.Exit(code)


def _print_scan_report(
    report: ScanReport, fmt: ReportFormat, *, store: Store, output: Path | None = None
) -> int:
    """Print a scan's report (or write it to ``output``); return its exit code (3/4 when
    some/all hosts failed)."""
    _emit_report(
        report.document, report.records, fmt, report.acceptances, store=store, output=output
    )
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


def _acceptances(c: Context) -> Acceptances:
    """The risk acceptances as they stand today (``patchpilot accept``)."""
    from patchpilot.app import acceptances

    return acceptances.load(c.settings)


def _check_output(fmt: ReportFormat, output: Path | None) -> None:
    """Refuse ``--output`` with the table (before any work): a table is for a terminal."""
    if output is not None and fmt is ReportFormat.TABLE:
        raise typer.BadParameter(
            "the table is for a terminal; with --output choose --format json, csv, markdown, "
            "sarif, cyclonedx or html",
            param_hint="'--output'",
        )


def _report_text(
    document: dict[str, Any],
    records: Sequence[FindingRecord],
    fmt: ReportFormat,
    acceptances: Acceptances | None,
    *,
    store: Store,
    run_id: str | None,
) -> str:
    """The report in ``fmt`` (any format but the table) as text."""
    if fmt is ReportFormat.CSV:
        return render_csv(records, acceptances)
    if fmt is ReportFormat.MARKDOWN:
        return render_markdown(document)
    if fmt is ReportFormat.SARIF:
        from patchpilot.app.exports import sarif_report

        return sarif_report(store, document)
    if fmt is ReportFormat.CYCLONEDX:
        from patchpilot.app.exports import cyclonedx_report

        return cyclonedx_report(store, document, run_id=run_id)
    if fmt is ReportFormat.HTML:
        from patchpilot.app.report_html import scan_report_html

        return scan_report_html(store, document)
    return json_text(document)


def _emit_report(
    document: dict[str, Any],
    records: Sequence[FindingRecord],
    fmt: ReportFormat,
    acceptances: Acceptances | None = None,
    *,
    store: Store,
    output: Path | None = None,
    run_id: str | None = None,
) -> None:
    """Print the report in ``fmt``, or write it to ``output`` (``run_id``: the run of stored
    findings, ``findings --run``, whose snapshots the CycloneDX components come from)."""
    if fmt is ReportFormat.TABLE:
        _print_findings_table(document)
        return
    text = _report_text(document, records, fmt, acceptances, store=store, run_id=run_id)
    if output is None:
        sys.stdout.write(text)
        return
    write_report_file(output, text)
    err.print(f"wrote the {fmt.value} report to {safe(output)}")


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
    fixes = document.get("fixes") or []
    accepted = any(g.get("accepted") for g in fixes)
    table = Table(
        title=f"{summary['findings']} finding(s) in {len(fixes)} fix(es) (one row per host "
        f"and upgrade), {summary['actionable']} actionable, {summary['kev']} in KEV"
        + (f", {summary.get('accepted', 0)} accepted" if accepted else ""),
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
        "advisories",
        "CVEs",
    ):
        table.add_column(col, overflow="fold")
    if accepted:
        table.add_column("accepted", overflow="fold")
    for g in fixes:
        state, whole = _accepted_cell(g)
        table.add_row(
            safe(g["score"] if g["score"] is not None else "-"),
            safe(g["ssvc"] or "-"),
            safe(g["due"] or "-"),
            safe(g["host"]),
            safe(g["source_package"]),
            safe(g["installed_version"]),
            _fixed_cell(g),
            safe(_first(g["advisories"], 2) or "-"),
            safe(_first(g["cves"], 3) or "-"),
            *([state] if accepted else []),
            style="dim" if whole else None,
        )
    out.print(table)
    top = [g for g in fixes if g["rationale"]][:TOP_EXPLAINED]
    if top:
        out.print(f"[bold]Why the top {len(top)}:[/]")
        for g in top:
            out.print(
                f"  {g['score']:>5} {safe(g['host'])} {safe(g['source_package'])} "
                f"({safe(_first(g['advisories'], 1))}): {safe(g['rationale'])}"
            )
        out.print("[dim](every finding and rationale: --format json, csv or markdown)[/]")


def _accepted_cell(group: dict[str, Any]) -> tuple[str, bool]:
    """The "accepted" cell of a fix group, and whether all its findings are accepted."""
    accepted = group.get("accepted")
    if not accepted:
        return "", False
    if accepted["findings"] == accepted["of"]:
        return f"accepted until {safe(accepted['until'])}", True
    return f"{accepted['findings']}/{accepted['of']} accepted", False


def _first(values: list[str], n: int) -> str:
    """The first ``n`` values and how many more, e.g. ``"DSA-1 DSA-2 +3"``."""
    more = f" +{len(values) - n}" if len(values) > n else ""
    return " ".join(values[:n]) + more


def _fixed_cell(finding: dict[str, Any]) -> str:
    """The "fixed" column: the version, marked when a hold keeps it off; else the state."""
    state, version = finding["fix_state"], finding["fixed_version"]
    if not version:
        return f"[dim]{safe(state)}[/]"
    if state != "fixed":
        return f"{safe(version)} [yellow]({safe(state)})[/]"
    return safe(version)


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
    output: OutputFileOpt = None,
) -> None:
    """List stored findings with filters (latest scan of each host by default)."""
    from patchpilot.app import scans

    _check_output(fmt, output)
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
            acceptances=_acceptances(c),
        )
        _emit_report(
            report.document,
            report.records,
            fmt,
            report.acceptances,
            store=store,
            output=output,
            run_id=run,
        )


def report_cmd(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest scan).")] = None,
    fmt: ReportFormatOpt = ReportFormat.TABLE,
    output: OutputFileOpt = None,
) -> None:
    """Print the report of a scan or patch run (table, JSON, CSV, Markdown, SARIF, CycloneDX or
    HTML: one self-contained page)."""
    from patchpilot.app import scans

    _check_output(fmt, output)
    c: Context = ctx.obj
    with c.store() as store:
        if run_id is None:
            run_id = scans.latest_run_id(store)
        run = store.get_run(run_id)
        if run is not None and run.kind == "run":
            _print_patch_run_report(c, run_id, fmt, output)
            return
        _print_scan_report(
            scans.report(store, run_id, acceptances=_acceptances(c)),
            fmt,
            store=store,
            output=output,
        )


def _print_patch_run_report(
    c: Context, run_id: str, fmt: ReportFormat, output: Path | None = None
) -> None:
    """A patch run: the scan report plus its plan, deployments and per-host compliance (JSON;
    HTML adds rings, waves, checks, analysis and stage durations; the other formats show its
    scan part)."""
    from patchpilot.app import runs, scans

    with c.store() as store:
        combined, details = runs.patch_run_report(c.settings, store, run_id)
        if fmt is ReportFormat.HTML and details is not None:
            from patchpilot.app.report_html import run_report_html

            page = run_report_html(c.settings, store, run_id, combined)
            if output is None:
                sys.stdout.write(page)
                return
            write_report_file(output, page)
            err.print(f"wrote the {fmt.value} report to {safe(output)}")
            return
        if fmt is not ReportFormat.JSON or details is None:
            _print_scan_report(
                scans.report(store, run_id, acceptances=_acceptances(c)),
                fmt,
                store=store,
                output=output,
            )
            if details is not None and fmt is ReportFormat.TABLE:
                print_run_table(details)
            return
    if output is None:
        emit_json(combined)
        return
    write_report_file(output, json_text(combined))
    err.print(f"wrote the {fmt.value} report to {safe(output)}")


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
        code = _print_scan_report(
            scans.report(store, run_id, acceptances=_acceptances(c)), fmt, store=store
        )
    raise typer.Exit(code)

"""The ``patchpilot`` command line (typer + rich).

Exit codes (stable; scripts may rely on them):

====  ==========================================================================
0     success
1     operational or internal error (the message says which)
2     usage or configuration error: bad flag, bad settings/inventory/policy
      file, unknown target or --limit pattern matching nothing
3     partial failure: some targeted hosts failed, the others succeeded
4     every targeted host failed
5     findings at or above the --fail-on / --fail-on-score threshold (CI gating)
130   interrupted (Ctrl-C)
====  ==========================================================================

Everything printed that comes from outside patchpilot (inventory values, host output, feed
records, run targets, error messages quoting any of them) goes through :func:`safe`: control
characters become visible escapes (:func:`patchpilot.core.text.inert`) and rich markup is escaped,
so neither a terminal escape sequence nor a ``[...]`` in the text can change what is shown.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from patchpilot import __version__
from patchpilot.agents.discovery import HostOutcome, discover
from patchpilot.agents.sourcing import (
    DEFAULT_UPDATE_KINDS,
    NO_FEEDS_HINT,
    import_feed,
    update_feeds,
)
from patchpilot.app.report import render_csv, render_markdown, report_document
from patchpilot.cli.lab import lab_app
from patchpilot.core.errors import (
    ConfigError,
    InvalidInputError,
    NotAuthorizedError,
    PatchpilotError,
    UnknownTargetError,
)
from patchpilot.core.feeds import FeedKind
from patchpilot.core.inventory import Inventory, load_inventory, select_hosts
from patchpilot.core.logging import configure_logging
from patchpilot.core.models import FixStatus, Host, Severity, utcnow
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import FindingRecord, ImportStats, Store
from patchpilot.core.text import inert
from patchpilot.graphs.scan import ScanContext, resume_scan, start_scan
from patchpilot.tools.feeds import FeedFetcher

__all__ = ["ExitCode", "app", "main", "safe"]

MAX_CONCURRENCY = 512
"""Largest ``--concurrency`` accepted (the ``concurrency`` setting's bound)."""
MAX_RUNS_LISTED = 10_000
"""Largest ``runs --limit`` accepted."""


def safe(value: object) -> str:
    """``value`` as text that is inert on a terminal and literal in rich markup.

    Control characters (escape sequences, bidirectional overrides) become visible ``\\xNN``
    escapes and ``[`` is escaped, so the text prints exactly as it is, whoever wrote it.
    """
    return escape(inert(str(value)))


class ExitCode(IntEnum):
    """Process exit codes (see the module docstring)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    ALL_FAILED = 4
    FINDINGS = 5
    INTERRUPTED = 130


class OutputFormat(StrEnum):
    """Output formats of listing commands."""

    TABLE = "table"
    JSON = "json"


class ReportFormat(StrEnum):
    """Output formats of findings and reports."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MARKDOWN = "markdown"


# Pipes and CI logs get a wide fixed width instead of rich's 80 columns, so nothing is cut.
# No emoji codes: ":name:" in outside text must print as it is.
out = Console(width=None if sys.stdout.isatty() else 200, emoji=False)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False)

app = typer.Typer(
    name="patchpilot",
    help="LLM-assisted, guard-railed patch management for Linux fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class LogLevel(StrEnum):
    """``--log-level`` values."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """``--log-format`` values."""

    CONSOLE = "console"
    JSON = "json"


_OPTION_NAMES = {"home": "--home", "log_level": "--log-level", "log_format": "--log-format"}
"""The global option that sets each settings override (named in errors)."""


class _Context:
    """Options shared by every command, resolved once in the app callback."""

    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                self.config, option_names=_OPTION_NAMES, **self.overrides
            )
            configure_logging(self._settings.log_level, self._settings.log_format)
        return self._settings


def _version(value: bool) -> None:
    if value:
        out.print(f"patchpilot {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings YAML (default: $PATCHPILOT_CONFIG, then $PATCHPILOT_HOME/config.yaml).",
        ),
    ] = None,
    home: Annotated[
        str | None, typer.Option("--home", help="Data directory (overrides PATCHPILOT_HOME).")
    ] = None,
    log_level: Annotated[
        LogLevel | None, typer.Option("--log-level", help="Log level (logs go to stderr).")
    ] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option("--log-format", help="Log format (logs go to stderr).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home  # a str: an empty one is refused, never read as "."
    if log_level is not None:
        overrides["log_level"] = log_level.value
    if log_format is not None:
        overrides["log_format"] = log_format.value
    ctx.obj = _Context(config, overrides)
    if not ctx.resilient_parsing:
        _ = ctx.obj.settings  # fail fast on bad settings and configure logging first


def _inventory_for(ctx: _Context, path: Path | None, *, required: bool) -> Inventory:
    path = path or ctx.settings.inventory
    if path is None:
        if required:
            raise ConfigError(
                "no inventory: pass --inventory FILE (patchpilot YAML or an Ansible INI/YAML "
                "inventory) or set `inventory` in the settings",
                key="inventory",
            )
        return Inventory([])  # `local` needs no inventory
    return load_inventory(path)


def _emit_json(document: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")


InventoryOpt = Annotated[
    Path | None,
    typer.Option("--inventory", "-i", help="Inventory file: patchpilot YAML or Ansible INI/YAML."),
]
LimitOpt = Annotated[
    str | None,
    typer.Option("--limit", "-l", help="Ansible-style host pattern, e.g. 'web*:&prod:!web-3'."),
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        max=MAX_CONCURRENCY,
        help=f"Hosts at once, 1-{MAX_CONCURRENCY} (default: settings).",
    ),
]


@app.command("inventory")
def inventory_cmd(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """List the hosts of an inventory (optionally narrowed with --limit)."""
    c: _Context = ctx.obj
    inv = _inventory_for(c, inventory, required=True)
    hosts = select_hosts(inv, None, limit)
    if fmt is OutputFormat.JSON:
        _emit_json(
            {
                "schema": "patchpilot.inventory/v1",
                "hosts": [_host_json(h) for h in hosts],
            }
        )
        return
    table = Table(title=f"{len(hosts)} host(s)", title_justify="left")
    for col in ("host", "address", "user", "transport", "tags", "crit", "exposure", "owner"):
        table.add_column(col, overflow="fold")
    for h in hosts:
        table.add_row(
            safe(h.name),
            safe(f"{h.address}:{h.port}" if h.transport == "ssh" else h.address),
            safe(h.user or "-"),
            safe(h.transport),
            safe(",".join(sorted(h.tags)) or "-"),
            str(h.criticality),
            safe(h.exposure.value),
            safe(h.owner or "-"),
        )
    out.print(table)


def _host_json(h: Host) -> dict[str, Any]:
    data = h.model_dump(mode="json")
    data["tags"] = sorted(h.tags)
    data["groups"] = sorted(h.groups)
    return data


@app.command("facts")
def facts_cmd(
    ctx: typer.Context,
    target: Annotated[
        str, typer.Argument(help="'local', a host, a group or a tag of the inventory.")
    ],
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    packages: Annotated[
        bool, typer.Option("--packages", help="Also list installed packages (JSON: per host).")
    ] = False,
    concurrency: ConcurrencyOpt = None,
) -> None:
    """Collect OS, kernel, reboot-required and package facts (read-only) from hosts."""
    c: _Context = ctx.obj
    inv = _inventory_for(c, inventory, required=target != "local")
    hosts = select_hosts(inv, target, limit)
    settings = c.settings
    if concurrency is not None:
        settings = settings.model_copy(update={"concurrency": concurrency})
    outcomes = _discover_with_progress(hosts, settings, show=fmt is OutputFormat.TABLE)
    if fmt is OutputFormat.JSON:
        _emit_json(_facts_json(outcomes, packages))
    else:
        _print_facts_table(outcomes, packages)
    raise typer.Exit(_fleet_exit_code(outcomes))


def _discover_with_progress(
    hosts: list[Host], settings: Settings, *, show: bool
) -> list[HostOutcome]:
    with _host_progress(len(hosts), ("facts",), show=show and len(hosts) > 1) as advance:
        return discover(hosts, settings, on_done=lambda o: advance("facts", o.host, o.ok))


def _facts_json(outcomes: list[HostOutcome], with_packages: bool) -> dict[str, Any]:
    hosts = []
    for o in outcomes:
        entry: dict[str, Any] = {
            "host": o.host,
            "ok": o.ok,
            "facts": o.facts.model_dump(mode="json") if o.facts else None,
            "error": {"type": o.error_type, "message": o.error} if not o.ok else None,
            "warnings": list(o.warnings),
        }
        if with_packages:
            entry["packages"] = [p.model_dump(mode="json") for p in o.packages]
        hosts.append(entry)
    ok = sum(o.ok for o in outcomes)
    return {
        "schema": "patchpilot.facts/v1",
        "hosts": hosts,
        "summary": {"total": len(outcomes), "ok": ok, "failed": len(outcomes) - ok},
    }


def _print_facts_table(outcomes: list[HostOutcome], with_packages: bool) -> None:
    table = Table(title="host facts", title_justify="left")
    for col in ("host", "os", "release", "kernel", "reboot", "packages", "sources"):
        table.add_column(col, overflow="fold")
    for o in outcomes:
        if o.facts is None:
            continue
        f = o.facts
        reboot = "[red]required[/]" if f.reboot_required else "no"
        if f.reboot_required and f.reboot_required_pkgs:
            reboot += f" ({safe(', '.join(f.reboot_required_pkgs[:3]))})"
        table.add_row(
            safe(o.host),
            safe(f.os.pretty_name or f.os.id),
            safe(f.os.release or "-"),
            safe(f.kernel),
            reboot,
            str(f.package_count),
            str(f.source_package_count),
        )
    if table.row_count:
        out.print(table)
    if with_packages:
        for o in outcomes:
            if not o.packages:
                continue
            pt = Table(title=f"{safe(o.host)}: {len(o.packages)} packages", title_justify="left")
            for col in ("package", "version", "arch", "source", "source version"):
                pt.add_column(col, overflow="fold")
            for p in o.packages:
                pt.add_row(
                    safe(p.name),
                    safe(p.version),
                    safe(p.arch),
                    safe(p.source_name),
                    safe(p.source_version),
                )
            out.print(pt)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        err.print(f"[red]✗ {safe(o.host)}[/]: {safe(o.error)}")
    if failed:
        err.print(f"{len(failed)} of {len(outcomes)} host(s) failed.")


def _fleet_exit_code(outcomes: list[HostOutcome]) -> int:
    failed = sum(not o.ok for o in outcomes)
    if failed == 0:
        return ExitCode.OK
    return ExitCode.ALL_FAILED if failed == len(outcomes) else ExitCode.PARTIAL


# --------------------------------------------------------------------------- scan & reports

feeds_app = typer.Typer(
    help="Advisory feeds: update from the network, import downloaded files, show status.",
    no_args_is_help=True,
)
app.add_typer(feeds_app, name="feeds")
app.add_typer(lab_app, name="lab")


def _store(ctx: _Context) -> Store:
    return Store(ctx.settings.store_path)


def _fetcher(settings: Settings, *, retries: int | None = None) -> FeedFetcher:
    return FeedFetcher(
        settings.cache_dir,
        max_bytes=settings.feeds.max_download_bytes,
        timeout=settings.feeds.timeout,
        max_attempts=retries or settings.feeds.retries,
    )


def _stats_text(stats: ImportStats) -> str:
    if stats.duplicate:
        return "already imported (same document), nothing changed"
    parts = []
    if stats.advisories:
        parts.append(
            f"{stats.advisories} advisory records ({stats.created} new, {stats.changed} changed, "
            f"{stats.unchanged} unchanged)"
        )
    for label, n in (("CVSS", stats.cvss), ("EPSS", stats.epss), ("KEV", stats.kev)):
        if n:
            parts.append(f"{n} {label}")
    return ", ".join(parts) or "no records"


@feeds_app.command("update")
def feeds_update_cmd(
    ctx: typer.Context,
    kinds: Annotated[
        list[FeedKind] | None,
        typer.Argument(help="Feeds to fetch (default: debian-dsa debian-dla kev epss)."),
    ] = None,
) -> None:
    """Fetch feeds (conditional requests, cached) and import them."""
    c: _Context = ctx.obj
    with _store(c) as store:
        outcomes = update_feeds(store, _fetcher(c.settings), kinds or DEFAULT_UPDATE_KINDS)
    failed = 0
    for o in outcomes:
        if o.ok:
            what = "not modified" if o.not_modified or o.stats is None else _stats_text(o.stats)
            out.print(f"[green]✓[/] {o.kind.value}: {safe(what)}")
        else:
            failed += 1
            err.print(f"[red]✗ {o.kind.value}[/]: {safe(o.error)}")
    if failed:
        raise typer.Exit(ExitCode.ALL_FAILED if failed == len(outcomes) else ExitCode.PARTIAL)


@feeds_app.command("import")
def feeds_import_cmd(
    ctx: typer.Context,
    kind: Annotated[FeedKind, typer.Argument(help="Feed kind of the file.")],
    path: Annotated[Path, typer.Argument(help="File or directory (osv, nvd) to import.")],
) -> None:
    """Import a downloaded feed file; all or nothing (a bad file changes nothing)."""
    c: _Context = ctx.obj
    with _store(c) as store:
        stats = import_feed(store, kind, path)
    out.print(f"[green]✓[/] {kind.value}: {safe(_stats_text(stats))}")


@feeds_app.command("status")
def feeds_status_cmd(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Show what each feed holds, when it was fetched, and whether it is stale."""
    c: _Context = ctx.obj
    with _store(c) as store:
        status = store.feed_status()
    if fmt is OutputFormat.JSON:
        _emit_json(
            {"schema": "patchpilot.feeds/v1", "feeds": [s.model_dump(mode="json") for s in status]}
        )
        return
    if not status:
        out.print(safe(NO_FEEDS_HINT))
        return
    table = Table(title="feeds", title_justify="left")
    for col in ("feed", "records", "fetched", "published", "stale", "source"):
        table.add_column(col, overflow="fold")
    for s in status:
        table.add_row(
            s.kind.value,
            str(s.records),
            s.fetched_at.strftime("%Y-%m-%d %H:%M"),
            s.published_at.strftime("%Y-%m-%d") if s.published_at else "-",
            "[red]stale[/]" if s.stale else "fresh",
            safe(s.source),
        )
    out.print(table)


TOP_EXPLAINED = 5
"""How many findings the table report explains below the table."""


def _finite(value: float | None) -> float | None:
    """Refuse ``nan`` (click's range check lets it through: every comparison is false)."""
    if value is not None and not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a number between 0 and 100")
    return value


@app.command("scan")
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
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ReportFormat.TABLE
    ),
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
    c: _Context = ctx.obj
    settings = c.settings
    if concurrency is not None:
        settings = settings.model_copy(update={"concurrency": concurrency})
    target = target or ("all" if (inventory or settings.inventory) else "local")
    inv = _inventory_for(c, inventory, required=target != "local")
    hosts = select_hosts(inv, None if target == "all" else target, limit)
    policy = load_policy(settings.policy_path)
    with _store(c) as store:
        auto = settings.feeds.auto_update and not offline and not store.has_advisories()
        # The one factory of a scan's context: `resume` builds exactly the same one.
        context = ScanContext.create(settings, store, policy)
        with _host_progress(len(hosts), ("discover", "assess")) as on_progress:
            context.on_progress = on_progress
            run_id, _summary = start_scan(
                hosts, context, target=target, offline=not auto, refresh=refresh
            )
        code = _print_run_report(store, run_id, fmt)
    raise typer.Exit(
        _gate(
            store_path=settings.store_path,
            run_id=run_id,
            base=code,
            fail_on=fail_on,
            fail_on_score=fail_on_score,
        )
    )


@contextmanager
def _host_progress(
    total: int, stages: tuple[str, ...], *, show: bool = True
) -> Iterator[Callable[[str, str, bool], None]]:
    """Per-host progress bars on stderr, one per stage; silent when not a terminal.

    Yields ``advance(stage, host, ok)``, safe to call from worker threads.
    """
    with Progress(
        TextColumn("[bold]{task.fields[stage]:<8}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not (show and err.is_terminal),
    ) as progress:
        tasks = {stage: progress.add_task("", total=total, stage=stage) for stage in stages}

        def advance(stage: str, host: str, ok: bool) -> None:
            task = tasks.get(stage)
            if task is not None:
                progress.update(
                    task, advance=1, description=f"{safe(host)} {'ok' if ok else 'FAILED'}"
                )

        yield advance


def _gate(
    *,
    store_path: Path,
    run_id: str,
    base: int,
    fail_on: Severity | None,
    fail_on_score: float | None,
) -> int:
    if base != ExitCode.OK or (fail_on is None and fail_on_score is None):
        return base
    with Store(store_path) as store:
        records = store.findings(run_id=run_id)
    for r in records:
        if (
            fail_on is not None
            and r.finding.severity.rank >= fail_on.rank
            and (r.finding.severity is not Severity.UNKNOWN or fail_on is Severity.UNKNOWN)
        ):
            return ExitCode.FINDINGS
        if fail_on_score is not None and r.risk is not None and r.risk.score >= fail_on_score:
            return ExitCode.FINDINGS
    return ExitCode.OK


def _print_run_report(store: Store, run_id: str, fmt: ReportFormat) -> int:
    run = store.get_run(run_id)
    if run is None:
        raise UnknownTargetError(f"no run {run_id!r}; see `patchpilot runs`", key="run_id")
    records = store.findings(run_id=run_id)
    hosts = store.host_results(run_id, details=True)
    feeds = store.feed_status()
    mode = run.summary.get("mode") if run.summary else None
    hint = NO_FEEDS_HINT if mode == "repository-metadata" else None
    document = report_document(
        run=run,
        records=records,
        feeds=feeds,
        hosts=hosts,
        mode=mode,
        hint=hint,
        generated_at=utcnow(),
    )
    _emit_report(document, records, fmt)
    failed = [h for h in hosts if not h.ok]
    if fmt is ReportFormat.TABLE:
        for h in hosts:
            for warning in h.warnings:
                err.print(f"[yellow]! {safe(h.host)}[/]: {safe(warning)}")
    for h in failed:
        err.print(f"[red]✗ {safe(h.host)}[/]: {safe(h.message)}")
    if not hosts or not failed:
        return ExitCode.OK
    return ExitCode.ALL_FAILED if len(failed) == len(hosts) else ExitCode.PARTIAL


def _emit_report(
    document: dict[str, Any], records: Sequence[FindingRecord], fmt: ReportFormat
) -> None:
    if fmt is ReportFormat.JSON:
        _emit_json(document)
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


@app.command("findings")
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
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ReportFormat.TABLE
    ),
) -> None:
    """List stored findings with filters (latest scan of each host by default)."""
    c: _Context = ctx.obj
    with _store(c) as store:
        if run is not None and store.get_run(run) is None:
            raise UnknownTargetError(f"no run {run!r}; see `patchpilot runs`", key="--run")
        records = store.findings(
            run_id=run,
            host=host,
            min_severity=severity,
            kev=kev,
            fix_status=fix_state,
            actionable=True if actionable else None,
        )
        feeds = store.feed_status()
    document = report_document(run=None, records=records, feeds=feeds, generated_at=utcnow())
    _emit_report(document, records, fmt)


@app.command("report")
def report_cmd(
    ctx: typer.Context,
    run_id: Annotated[str | None, typer.Argument(help="Run id (default: the latest scan).")] = None,
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ReportFormat.TABLE
    ),
) -> None:
    """Print the report of a scan run (table, JSON, CSV or Markdown)."""
    c: _Context = ctx.obj
    with _store(c) as store:
        if run_id is None:
            scans = [r for r in store.list_runs(limit=100) if r.kind in ("scan", "run")]
            if not scans:
                raise UnknownTargetError("no run yet; run `patchpilot scan`", key="run_id")
            run_id = scans[0].run_id
        run = store.get_run(run_id)
        if run is not None and run.kind == "run":
            _print_patch_run_report(store, c.settings, run_id, fmt)
            return
        _print_run_report(store, run_id, fmt)


def _print_patch_run_report(
    store: Store, settings: Settings, run_id: str, fmt: ReportFormat
) -> None:
    """A patch run: the scan report plus its plan, deployments and per-host compliance."""
    from patchpilot.cli.run import report_patch_run

    details = report_patch_run(store, settings, run_id)
    if fmt is not ReportFormat.JSON or details is None:
        _print_run_report(store, run_id, fmt)
        if details is not None and fmt is ReportFormat.TABLE:
            from patchpilot.cli.run import _print_run_table

            _print_run_table(details)
        return
    run = store.get_run(run_id)
    records = store.findings(run_id=run_id)
    document = report_document(
        run=run,
        records=records,
        feeds=store.feed_status(),
        hosts=store.host_results(run_id, details=True),
        mode=(run.summary or {}).get("mode") if run else None,
        generated_at=utcnow(),
    )
    for host in document["hosts"]:
        host["compliance"] = details["compliance"].get(host["name"], "not-applicable")
    for key in ("status", "reason", "plan", "approval", "rings", "deployments", "unreachable"):
        document[key] = details[key]
    _emit_json(document)


@app.command("runs")
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
    c: _Context = ctx.obj
    with _store(c) as store:
        runs = store.list_runs(limit=limit)
    if fmt is OutputFormat.JSON:
        _emit_json(
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


@app.command("resume")
def resume_cmd(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(help="The run to continue (see `patchpilot runs`).")],
    fmt: Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")] = (
        ReportFormat.TABLE
    ),
) -> None:
    """Continue an interrupted run from its last checkpoint."""
    c: _Context = ctx.obj
    settings = c.settings
    with _store(c) as store:
        run = store.get_run(run_id)
        if run is None:
            raise UnknownTargetError(f"no run {run_id!r}; see `patchpilot runs`", key="run_id")
    if run.kind == "run":
        from patchpilot.cli.run import resume_patch_run

        resume_patch_run(
            ctx, run_id, OutputFormat.JSON if fmt is ReportFormat.JSON else OutputFormat.TABLE
        )
        return
    with _store(c) as store:
        # The same factory as `scan`: changelogs, memory and LLM as the start had them.
        context = ScanContext.create(settings, store, load_policy(settings.policy_path))
        try:
            resume_scan(run_id, context)
        except LookupError as exc:
            raise UnknownTargetError(str(exc), key="run_id") from exc
        code = _print_run_report(store, run_id, fmt)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/] {safe(exc)}")
        sys.exit(ExitCode.USAGE)
    except InvalidInputError as exc:  # refused at the boundary: nothing was done
        err.print(f"[red]invalid input:[/] {safe(exc)}")
        sys.exit(ExitCode.USAGE)
    except NotAuthorizedError as exc:
        err.print(f"[red]not authorized:[/] {safe(exc)}")
        sys.exit(ExitCode.ERROR)
    except PatchpilotError as exc:
        err.print(f"[red]error:[/] {safe(exc)}")
        sys.exit(ExitCode.ERROR)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --log-level debug
        structlog.get_logger(__name__).debug("internal_error", exc_info=True)
        err.print(
            f"[red]internal error:[/] {safe(type(exc).__name__)}: {safe(exc)} "
            "(re-run with --log-level debug for the traceback, and please report it)"
        )
        sys.exit(ExitCode.ERROR)


# The patch-run (run, approve, reject, approvals, baseline) and chat (ask, chat, memory)
# commands register themselves on app when imported.
from patchpilot.cli import chat as chat_cli  # noqa: E402
from patchpilot.cli import run as run_cli  # noqa: E402

COMMAND_MODULES = (chat_cli, run_cli)

if __name__ == "__main__":
    main()

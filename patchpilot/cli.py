"""The ``patchpilot`` command line (typer + rich).

Exit codes (stable; scripts may rely on them):

====  ==========================================================================
0     success
1     operational or internal error (the message says which)
2     usage or configuration error: bad flag, bad settings/inventory/policy
      file, unknown target or --limit pattern matching nothing
3     partial failure: some targeted hosts failed, the others succeeded
4     every targeted host failed
130   interrupted (Ctrl-C)
====  ==========================================================================
"""

from __future__ import annotations

import json
import sys
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import structlog
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agents.discovery import HostOutcome, discover
from patchpilot import __version__
from patchpilot.errors import ConfigError, PatchpilotError
from patchpilot.inventory import Inventory, load_inventory, select_hosts
from patchpilot.logging import configure_logging
from patchpilot.models import Host
from patchpilot.settings import Settings, load_settings

__all__ = ["ExitCode", "app", "main"]


class ExitCode(IntEnum):
    """Process exit codes (see the module docstring)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    ALL_FAILED = 4
    INTERRUPTED = 130


class OutputFormat(StrEnum):
    """Output formats of listing commands."""

    TABLE = "table"
    JSON = "json"


# Pipes and CI logs get a wide fixed width instead of rich's 80 columns, so nothing is cut.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

app = typer.Typer(
    name="patchpilot",
    help="LLM-assisted, guard-railed patch management for Linux fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _Context:
    """Options shared by every command, resolved once in the app callback."""

    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.config, **self.overrides)
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
        Path | None, typer.Option("--home", help="Data directory (overrides PATCHPILOT_HOME).")
    ] = None,
    log_level: Annotated[
        str | None, typer.Option("--log-level", help="debug | info | warning | error")
    ] = None,
    log_format: Annotated[
        str | None, typer.Option("--log-format", help="console | json (logs go to stderr)")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home
    if log_level is not None:
        overrides["log_level"] = log_level
    if log_format is not None:
        overrides["log_format"] = log_format
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
            h.name,
            f"{h.address}:{h.port}" if h.transport == "ssh" else h.address,
            h.user or "-",
            h.transport,
            ",".join(sorted(h.tags)) or "-",
            str(h.criticality),
            h.exposure.value,
            h.owner or "-",
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
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Hosts at once (default: settings).")
    ] = None,
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
    with Progress(
        TextColumn("[bold]facts[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not (show and err.is_terminal) or len(hosts) < 2,
    ) as progress:
        task = progress.add_task("", total=len(hosts))

        def done(o: HostOutcome) -> None:
            progress.update(task, advance=1, description=f"{o.host} {'ok' if o.ok else 'FAILED'}")

        return discover(hosts, settings, on_done=done)


def _facts_json(outcomes: list[HostOutcome], with_packages: bool) -> dict[str, Any]:
    hosts = []
    for o in outcomes:
        entry: dict[str, Any] = {
            "host": o.host,
            "ok": o.ok,
            "facts": o.facts.model_dump(mode="json") if o.facts else None,
            "error": {"type": o.error_type, "message": o.error} if not o.ok else None,
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
            reboot += f" ({', '.join(f.reboot_required_pkgs[:3])})"
        table.add_row(
            o.host,
            f.os.pretty_name or f.os.id,
            f.os.release or "-",
            f.kernel,
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
            pt = Table(title=f"{o.host}: {len(o.packages)} packages", title_justify="left")
            for col in ("package", "version", "arch", "source", "source version"):
                pt.add_column(col, overflow="fold")
            for p in o.packages:
                pt.add_row(p.name, p.version, p.arch, p.source_name, p.source_version)
            out.print(pt)
    failed = [o for o in outcomes if not o.ok]
    for o in failed:
        err.print(f"[red]✗ {o.host}[/]: {o.error}")
    if failed:
        err.print(f"{len(failed)} of {len(outcomes)} host(s) failed.")


def _fleet_exit_code(outcomes: list[HostOutcome]) -> int:
    failed = sum(not o.ok for o in outcomes)
    if failed == 0:
        return ExitCode.OK
    return ExitCode.ALL_FAILED if failed == len(outcomes) else ExitCode.PARTIAL


def main() -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/] {exc}")
        sys.exit(ExitCode.USAGE)
    except PatchpilotError as exc:
        err.print(f"[red]error:[/] {exc}")
        sys.exit(ExitCode.ERROR)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --log-level debug
        structlog.get_logger(__name__).debug("internal_error", exc_info=True)
        err.print(
            f"[red]internal error:[/] {type(exc).__name__}: {exc} "
            "(re-run with --log-level debug for the traceback, and please report it)"
        )
        sys.exit(ExitCode.ERROR)


if __name__ == "__main__":
    main()

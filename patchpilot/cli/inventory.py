"""``inventory`` and ``facts``: the hosts of an inventory, and their read-only facts.

``inventory`` imports no transport (paramiko loads only when ``facts`` runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from patchpilot.cli.app import (
    ConcurrencyOpt,
    Context,
    ExitCode,
    FormatOpt,
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
from patchpilot.core.inventory import select_hosts
from patchpilot.core.models import Host
from patchpilot.core.settings import Settings

if TYPE_CHECKING:  # the transports (paramiko) load only when `facts` runs
    from patchpilot.agents.discovery import HostOutcome

__all__ = ["facts_cmd", "inventory_cmd"]


def inventory_cmd(
    ctx: typer.Context,
    inventory: InventoryOpt = None,
    limit: LimitOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """List the hosts of an inventory (optionally narrowed with --limit)."""
    c: Context = ctx.obj
    inv = inventory_for(c, inventory, required=True)
    hosts = select_hosts(inv, None, limit)
    if fmt is OutputFormat.JSON:
        emit_json({"schema": "patchpilot.inventory/v1", "hosts": [_host_json(h) for h in hosts]})
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
    c: Context = ctx.obj
    inv = inventory_for(c, inventory, required=target != "local")
    hosts = select_hosts(inv, target, limit)
    settings = c.settings
    if concurrency is not None:
        settings = settings.model_copy(update={"concurrency": concurrency})
    outcomes = _discover_with_progress(hosts, settings, show=fmt is OutputFormat.TABLE)
    if fmt is OutputFormat.JSON:
        emit_json(_facts_json(outcomes, packages))
    else:
        _print_facts_table(outcomes, packages)
    raise typer.Exit(_fleet_exit_code(outcomes))


def _discover_with_progress(
    hosts: list[Host], settings: Settings, *, show: bool
) -> list[HostOutcome]:
    from patchpilot.agents.discovery import discover

    with host_progress(len(hosts), ("facts",), show=show and len(hosts) > 1) as advance:
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

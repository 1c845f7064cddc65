"""``schedules list|add|remove|next|suggest``: the schedules the service fires by itself.

``patchpilot schedules add --kind scan --cron '*/5 * * * *'`` stores a schedule (the service's
scheduler starts its occurrences, each exactly once); ``list`` and ``next`` print tables or,
with ``--format json``, ``patchpilot.schedules/v1`` and ``patchpilot.schedule-next/v1``
documents; ``remove ID`` deletes one. Adding and removing are audit-logged with the OS user as
the actor. The use cases are in :mod:`patchpilot.app.schedules`.

``suggest`` ranks the slots of each group's maintenance windows by the load history the
``load`` schedules collected and proposes the quietest (:mod:`patchpilot.app.load`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from patchpilot.cli.app import (
    Context,
    FormatOpt,
    InventoryOpt,
    OutputFormat,
    emit_json,
    inventory_for,
    out,
    safe,
)
from patchpilot.core.auth import Action

__all__ = ["schedules_app"]

LIST_SCHEMA = "patchpilot.schedules/v1"
NEXT_SCHEMA = "patchpilot.schedule-next/v1"
MAX_SLOTS_SHOWN = 5
"""Ranked slots ``suggest`` prints per window (JSON lists them all)."""

schedules_app = typer.Typer(
    help="Schedules: scans and patch runs the service starts by itself (cron or RRULE).",
    no_args_is_help=True,
)


@schedules_app.command("list")
def list_cmd(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """List the schedules, each with its next occurrence."""
    from patchpilot.app import schedules
    from patchpilot.core.models import utcnow

    c: Context = ctx.obj
    with c.store() as store:
        docs = schedules.schedule_documents(schedules.list_schedules(store), utcnow())
    if fmt is OutputFormat.JSON:
        emit_json({"schema": LIST_SCHEMA, "schedules": docs})
        return
    if not docs:
        out.print("no schedules (add one with `patchpilot schedules add`)")
        return
    table = Table("id", "kind", "when", "timezone", "window", "scope", "missed", "next")
    for doc in docs:
        table.add_row(
            safe(doc["id"]),
            doc["kind"],
            safe(doc["cron"] or f"RRULE {doc['rrule']}"),
            safe(doc["timezone"]),
            f"{doc['duration']} (cutoff {doc['cutoff']})",
            safe(_scope(doc)),
            f"{doc['missed']} (grace {doc['grace']})",
            doc["next"][0] if doc["next"] else ("disabled" if not doc["enabled"] else "-"),
        )
    out.print(table)


def _scope(doc: dict[str, Any]) -> str:
    parts = [f"limit {doc['limit']}" if doc["limit"] else "all hosts"]
    if doc["only"]:
        parts.append("only " + ", ".join(doc["only"]))
    if doc["security"]:
        parts.append("security updates")
    return "; ".join(parts)


@schedules_app.command("add")
def add_cmd(
    ctx: typer.Context,
    kind: Annotated[
        str, typer.Option("--kind", help="scan, run (a patch run) or load (sample host load).")
    ],
    cron: Annotated[
        str | None, typer.Option("--cron", help="5-field cron, e.g. '0 22 * * 1-5'.")
    ] = None,
    rrule: Annotated[
        str | None,
        typer.Option("--rrule", help="RFC 5545 RRULE, e.g. 'FREQ=WEEKLY;BYDAY=SA;BYHOUR=2'."),
    ] = None,
    timezone: Annotated[
        str, typer.Option("--timezone", "--tz", help="IANA time zone of the times.")
    ] = "UTC",
    duration: Annotated[
        str, typer.Option("--duration", help="Window length: 3h, 90m, PT3H.")
    ] = "1h",
    cutoff: Annotated[
        str, typer.Option("--cutoff", help="No new host starts in the window's last CUTOFF.")
    ] = "0m",
    blackout: Annotated[
        list[str] | None,
        typer.Option("--blackout", help="A day (YYYY-MM-DD, in the zone) it never fires; repeat."),
    ] = None,
    limit: Annotated[
        str | None, typer.Option("--limit", "-l", help="Host pattern (the --limit language).")
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="PKG or PKG=VERSION (run only); repeat.")
    ] = None,
    security: Annotated[
        bool, typer.Option("--security", help="Security updates per baseline (run only).")
    ] = False,
    missed: Annotated[
        str, typer.Option("--missed", help="A missed occurrence: run-late or skip.")
    ] = "run-late",
    grace: Annotated[
        str, typer.Option("--grace", help="How late a missed occurrence may still run.")
    ] = "1h",
    disabled: Annotated[
        bool, typer.Option("--disabled", help="Store it disabled (it does not fire).")
    ] = False,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Add a schedule; prints its id."""
    from patchpilot.app import schedules
    from patchpilot.core.audit import AuditLog

    c: Context = ctx.obj
    spec: dict[str, Any] = {
        "kind": kind,
        "cron": cron,
        "rrule": rrule,
        "timezone": timezone,
        "duration": duration,
        "cutoff": cutoff,
        "blackouts": list(blackout or []),
        "limit": limit,
        "only": list(only or []),
        "security": security,
        "missed": missed,
        "grace": grace,
        "enabled": not disabled,
    }
    c.require(Action.SCHEDULE)
    audit = AuditLog.for_settings(c.settings, actor=c.actor)
    with c.store() as store:
        schedule = schedules.add_schedule(store, spec, actor=c.actor, audit=audit)
    if fmt is OutputFormat.JSON:
        emit_json(schedule.document())
        return
    out.print(f"added schedule {safe(schedule.id)} ({schedule.kind})", highlight=False)


@schedules_app.command("remove")
def remove_cmd(
    ctx: typer.Context,
    schedule_id: Annotated[str, typer.Argument(metavar="ID", help="The schedule's id.")],
) -> None:
    """Remove a schedule (its recorded occurrences stay as history)."""
    from patchpilot.app import schedules
    from patchpilot.core.audit import AuditLog

    c: Context = ctx.obj
    c.require(Action.SCHEDULE)
    audit = AuditLog.for_settings(c.settings, actor=c.actor)
    with c.store() as store:
        removed = schedules.remove_schedule(store, schedule_id, actor=c.actor, audit=audit)
    out.print(f"removed schedule {safe(removed.id)}")


@schedules_app.command("next")
def next_cmd(
    ctx: typer.Context,
    schedule_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="One schedule (default: every one).")
    ] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, max=1000, help="How many.")] = 5,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Show the next occurrences (start, cutoff and window end, in UTC and the zone)."""
    from patchpilot.app import schedules
    from patchpilot.core.models import utcnow

    c: Context = ctx.obj
    now = utcnow()
    with c.store() as store:
        chosen = (
            [schedules.get_schedule(store, schedule_id)]
            if schedule_id is not None
            else schedules.list_schedules(store)
        )
    occurrences = [
        o.document() for s in chosen if s.enabled for o in schedules.next_occurrences(s, now, count)
    ]
    occurrences.sort(key=lambda o: (o["at"], o["schedule_id"]))
    if schedule_id is None:
        occurrences = occurrences[:count]
    if fmt is OutputFormat.JSON:
        emit_json({"schema": NEXT_SCHEMA, "now": now.isoformat(), "occurrences": occurrences})
        return
    if not occurrences:
        out.print("no upcoming occurrences")
        return
    table = Table("schedule", "kind", "start (UTC)", "cutoff (UTC)", "window end (UTC)", "zone")
    for occ in occurrences:
        table.add_row(
            safe(occ["schedule_id"]),
            occ["kind"],
            occ["at"],
            occ["cutoff_at"],
            occ["window_end"],
            safe(occ["timezone"]),
        )
    out.print(table)


@schedules_app.command("suggest")
def suggest_cmd(
    ctx: typer.Context,
    group: Annotated[
        str | None,
        typer.Option("--group", "-g", help="A ring of the policy or a host tag (default: rings)."),
    ] = None,
    since: Annotated[
        int, typer.Option("--since", min=1, max=3650, help="Load samples of the last DAYS days.")
    ] = 28,
    min_samples: Annotated[
        int, typer.Option("--min-samples", min=1, max=100_000, help="Samples a slot needs.")
    ] = 3,
    inventory: InventoryOpt = None,
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Policy YAML (default: the settings' policy).")
    ] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Propose each group's quietest window slot from the hosts' load history."""
    from datetime import timedelta

    from patchpilot.app.load import suggest_windows
    from patchpilot.core.models import utcnow
    from patchpilot.core.policy import load_policy

    c: Context = ctx.obj
    hosts = list(inventory_for(c, inventory, required=True).hosts.values())
    policy = load_policy(policy_file or c.settings.policy_path)
    now = utcnow()
    with c.store() as store:
        report = suggest_windows(
            store,
            policy,
            hosts,
            group=group,
            since=now - timedelta(days=since),
            min_samples=min_samples,
            now=now,
        )
    doc = report.document()
    if fmt is OutputFormat.JSON:
        emit_json(doc)
        return
    for entry in doc["groups"]:
        out.print(safe(entry["text"]), highlight=False)
        for window in entry["windows"]:
            table = Table(
                "rank", "slot", "samples", "median load", "median cpu",
                title=f"{safe(entry['kind'])} {safe(entry['group'])}: window "
                f"{safe(window['window'])} ({safe(window['timezone'])})",
            )  # fmt: skip
            shown = [s for s in window["slots"] if s["enough"]][:MAX_SLOTS_SHOWN]
            for rank, slot in enumerate(shown, 1):
                table.add_row(
                    str(rank),
                    slot["slot"],
                    str(slot["samples"]),
                    _number(slot["median_load"]),
                    _number(slot["median_cpu"]),
                )
            short = sum(1 for s in window["slots"] if not s["enough"])
            if shown:
                out.print(table)
            if short:
                out.print(
                    f"  {short} allowed slot(s) with fewer than {doc['min_samples']} samples",
                    highlight=False,
                )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"

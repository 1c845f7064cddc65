"""``compliance``: the fleet's compliance against its SLAs (table, JSON, CSV or HTML).

The command calls :func:`patchpilot.app.compliance.compliance_document` (which first brings the
compliance history up to date from the store) and prints or writes the document; ``GET
/api/v1/compliance`` returns the same document.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from patchpilot.cli.app import (
    Context,
    OutputFileOpt,
    emit_json,
    err,
    inventory_for,
    json_text,
    out,
    safe,
    write_report_file,
)

__all__ = ["ComplianceFormat", "compliance_cmd"]

MAX_DUE_WITHIN = 3650
"""Largest ``--due-within`` accepted, in days."""
MAX_TABLE_ITEMS = 50
"""Items the table lists (the JSON, CSV and HTML list them all)."""


class ComplianceFormat(StrEnum):
    """Output formats of ``compliance``."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    HTML = "html"


def _number(value: object, unit: str = "") -> str:
    return "-" if value is None else f"{value}{unit}"


def _print_table(doc: dict[str, Any]) -> None:
    hosts = Table(title="Compliance against SLAs")
    hosts.add_column("host")
    hosts.add_column("state")
    for column in ("open", "overdue", "accepted", "due soon"):
        hosts.add_column(column, justify="right")
    hosts.add_column("oldest due")
    for h in doc["hosts"]:
        hosts.add_row(
            safe(h["name"]),
            h["state"],
            str(h["open"]),
            str(h["overdue"]),
            str(h["accepted"]),
            str(h["due_soon"]),
            h["oldest_due"] or "-",
        )
    out.print(hosts)
    sla, capacity, survival = doc["sla"], doc["capacity"], doc["survival"]
    out.print(
        f"SLA attainment {_number(sla['attainment'], ' %')} "
        f"({sla['fixed_within_sla']} fixed in time, {sla['fixed_late']} late, "
        f"{sla['open_overdue']} open and overdue); time to remediate: mean "
        f"{_number(sla['mttr_days'], ' d')}, median {_number(sla['median_ttr_days'], ' d')}, "
        f"Kaplan-Meier median {_number(survival['median_days'], ' d')} "
        f"({survival['censored']} open items censored)"
    )
    cyentia = capacity["cyentia"]
    out.print(
        f"Remediation capacity {_number(capacity['rate'], ' %')} of open items closed per month"
        + (f" ({capacity['band']} of" if capacity["band"] else " (Cyentia:")
        + f" {cyentia['low']} / {cyentia['median']} / {cyentia['high']} %)"
    )
    items = [i for i in doc["items"] if i["state"] != "compliant"]
    if not items:
        return
    table = Table(title="Open items")
    for column in ("host", "package", "advisory", "due", "state", "SLA"):
        table.add_column(column)
    for i in items[:MAX_TABLE_ITEMS]:
        table.add_row(
            safe(i["host"]),
            safe(i["package"]),
            safe(i["advisory"]),
            i["due"] or "-",
            i["state"],
            safe(i["sla"]),
        )
    out.print(table)
    if len(items) > MAX_TABLE_ITEMS:
        out.print(f"... and {len(items) - MAX_TABLE_ITEMS} more (--format json, csv or html)")


def compliance_cmd(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", help="Only this host.")] = None,
    overdue: Annotated[bool, typer.Option("--overdue", help="Only overdue items.")] = False,
    due_within: Annotated[
        int | None,
        typer.Option(
            "--due-within",
            min=0,
            max=MAX_DUE_WITHIN,
            help="Only open items due within DAYS (overdue ones included).",
            metavar="DAYS",
        ),
    ] = None,
    fmt: Annotated[
        ComplianceFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ComplianceFormat.TABLE,
    output: OutputFileOpt = None,
) -> None:
    """Compliance against SLAs: per host, SLA attainment, time to remediate, items."""
    from patchpilot.app import acceptances, compliance
    from patchpilot.core.policy import load_policy

    if output is not None and fmt is ComplianceFormat.TABLE:
        raise typer.BadParameter(
            "the table is for a terminal; with --output choose --format json, csv or html",
            param_hint="'--output'",
        )
    c: Context = ctx.obj
    settings = c.settings
    inventory = inventory_for(c, None, required=False)
    with c.store() as store:
        doc = compliance.compliance_document(
            store,
            load_policy(settings.policy_path),
            acceptances=acceptances.load(settings),
            hosts={h.name: h for h in inventory.hosts.values()} or None,
            inventory_hosts=inventory.hosts,
            host=host,
            overdue_only=overdue,
            due_within=due_within,
        )
    if fmt is ComplianceFormat.TABLE:
        _print_table(doc)
        return
    if fmt is ComplianceFormat.JSON:
        text = json_text(doc)
    elif fmt is ComplianceFormat.CSV:
        text = compliance.render_csv(doc)
    else:
        text = compliance.render_html(doc)
    if output is None:
        if fmt is ComplianceFormat.JSON:
            emit_json(doc)
        else:
            typer.echo(text, nl=False)
        return
    write_report_file(Path(output), text)
    err.print(f"wrote the {fmt.value} compliance report to {safe(output)}")

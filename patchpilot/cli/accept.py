"""``accept``, ``unaccept``: accept a known risk with a reason and an expiry, list, withdraw.

``patchpilot accept ID --host PATTERN --reason TEXT --until DATE`` records an acceptance in the
accept file (``acceptances.file``, default ``HOME/acceptances.yaml``); ``accept --list`` shows
them with their state; ``unaccept ID [--host PATTERN]`` withdraws them. Each change is
audit-logged with the OS user as the actor. The use cases are in
:mod:`patchpilot.app.acceptances`.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from patchpilot.cli.app import Context, FormatOpt, OutputFormat, emit_json, err, out, safe

__all__ = ["accept_cmd", "unaccept_cmd"]


def accept_cmd(
    ctx: typer.Context,
    ident: Annotated[
        str | None,
        typer.Argument(
            metavar="ID",
            help="The advisory (DSA-5678-1, DLA-…, USN-…, GHSA-…, "
            "debian-security-update:SOURCE) or CVE id to accept.",
            show_default=False,
        ),
    ] = None,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            "-H",
            help="Host pattern: names, globs (web-*), ~regex, lists (a,b), &and, !not "
            "(the --limit language, on host names).",
        ),
    ] = "all",
    reason: Annotated[
        str | None,
        typer.Option("--reason", "-r", help="Why the risk is accepted (one line, required)."),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="Last day it holds, YYYY-MM-DD (UTC), or days from today (30d); required, at "
            "most acceptances.max_days (365) away.",
        ),
    ] = None,
    list_: Annotated[
        bool, typer.Option("--list", help="List the acceptances (live and expired) instead.")
    ] = False,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Accept a known risk on some hosts: it stays in reports, marked, and fails no gate."""
    from patchpilot.app import acceptances

    c: Context = ctx.obj
    if list_:
        if ident is not None or reason is not None or until is not None:
            raise typer.BadParameter("--list takes no ID, --reason or --until")
        _print_list(acceptances.acceptances_document(acceptances.load(c.settings)), fmt)
        return
    if ident is None:
        raise typer.BadParameter("give the ID to accept (or --list)", param_hint="ID")
    if reason is None:
        raise typer.BadParameter("say why the risk is accepted", param_hint="--reason")
    if until is None:
        raise typer.BadParameter("say until when (YYYY-MM-DD or 30d)", param_hint="--until")
    added = acceptances.add(c.settings, ident, host=host, reason=reason, until=until, actor=c.actor)
    entry = added.acceptance
    if fmt is OutputFormat.JSON:  # the whole file after the change (patchpilot.acceptances/v1)
        emit_json(acceptances.acceptances_document(acceptances.load(c.settings)))
        return
    out.print(
        f"accepted {safe(entry.id)} on hosts {safe(entry.host)} until {entry.until} "
        f"(by {safe(entry.by)}); file {safe(c.settings.acceptances_path)}"
    )
    if added.replaced is not None:
        out.print(
            f"[dim]renewed the acceptance by {safe(added.replaced.by)} until "
            f"{added.replaced.until}[/]"
        )


def unaccept_cmd(
    ctx: typer.Context,
    ident: Annotated[
        str, typer.Argument(metavar="ID", help="The advisory or CVE id to stop accepting.")
    ],
    host: Annotated[
        str | None,
        typer.Option("--host", "-H", help="Only the acceptance with exactly this host pattern."),
    ] = None,
) -> None:
    """Withdraw a risk acceptance: the finding fails gates again at once."""
    from patchpilot.app import acceptances

    c: Context = ctx.obj
    removed = acceptances.remove(c.settings, ident, host=host, actor=c.actor)
    for entry in removed:
        out.print(
            f"no longer accepted: {safe(entry.id)} on hosts {safe(entry.host)} "
            f"(was until {entry.until}, by {safe(entry.by)})"
        )


def _print_list(document: dict[str, object], fmt: OutputFormat) -> None:
    if fmt is OutputFormat.JSON:
        emit_json(document)
        return
    entries = document["acceptances"]
    assert isinstance(entries, list)
    live = sum(e["state"] == "live" for e in entries)
    table = Table(
        title=f"{len(entries)} acceptance(s), {live} live (today {document['today']}, UTC)",
        title_justify="left",
    )
    for col in ("id", "hosts", "until", "state", "by", "reason"):
        table.add_column(col, overflow="fold")
    for e in entries:
        expired = e["state"] != "live"
        table.add_row(
            safe(e["id"]),
            safe(e["host"]),
            safe(e["until"]),
            "[red]expired[/]" if expired else f"live ({e['days_left']} d)",
            safe(e["by"]),
            safe(e["reason"]),
            style="dim" if expired else None,
        )
    out.print(table)
    if not entries:
        err.print(f"[dim]no acceptances in {safe(document['file'])}[/]")

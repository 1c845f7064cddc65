"""``feeds update``, ``feeds import``, ``feeds status``: the advisory feeds.

The sourcing agent and the HTTP fetcher load only when a feeds command runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from patchpilot.cli.app import (
    Context,
    ExitCode,
    FormatOpt,
    OutputFormat,
    emit_json,
    err,
    out,
    safe,
)
from patchpilot.core.feeds import FeedKind
from patchpilot.core.settings import Settings

if TYPE_CHECKING:
    from patchpilot.core.store import ImportStats
    from patchpilot.tools.feeds import FeedFetcher

__all__ = ["feeds_app"]

feeds_app = typer.Typer(
    help="Advisory feeds: update from the network, import downloaded files, show status.",
    no_args_is_help=True,
)


def _fetcher(settings: Settings, *, retries: int | None = None) -> FeedFetcher:
    from patchpilot.tools.feeds import FeedFetcher

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
    from patchpilot.agents.sourcing import DEFAULT_UPDATE_KINDS, update_feeds

    c: Context = ctx.obj
    with c.store() as store:
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
    from patchpilot.agents.sourcing import import_feed

    c: Context = ctx.obj
    with c.store() as store:
        stats = import_feed(store, kind, path)
    out.print(f"[green]✓[/] {kind.value}: {safe(_stats_text(stats))}")


@feeds_app.command("status")
def feeds_status_cmd(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """Show what each feed holds, when it was fetched, and whether it is stale."""
    c: Context = ctx.obj
    with c.store() as store:
        status = store.feed_status()
    if fmt is OutputFormat.JSON:
        emit_json(
            {"schema": "patchpilot.feeds/v1", "feeds": [s.model_dump(mode="json") for s in status]}
        )
        return
    if not status:
        from patchpilot.agents.sourcing import NO_FEEDS_HINT

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

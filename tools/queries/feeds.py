"""Feed freshness, as ``patchpilot feeds status`` shows it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from patchpilot.tools.queries.base import (
    QueryContext,
    QueryInput,
    QueryResult,
    QueryTool,
    register,
)
from patchpilot.tools.queries.common import shown

__all__ = ["FEEDS", "FeedsInput"]

NO_FEEDS = (
    "No advisory feed imported: severities are unknown and findings come from repository "
    "metadata only; `patchpilot feeds update` (or `feeds import`) fetches them."
)


class FeedsInput(QueryInput):
    """Which feeds to list."""

    stale_only: bool = Field(default=False, description="only feeds older than their max age")


def _feeds(context: QueryContext, args: FeedsInput) -> QueryResult:
    status = context.store.feed_status()
    rows: list[dict[str, Any]] = [
        {
            "feed": s.kind.value,
            "records": s.records,
            "fetched_at": s.fetched_at.isoformat(timespec="seconds"),
            "published_at": s.published_at.isoformat(timespec="seconds")
            if s.published_at
            else None,
            "stale": s.stale,
            "max_age_days": s.max_age_days,
            "source": s.source,
        }
        for s in status
        if s.stale or not args.stale_only
    ]
    understood = "stale advisory feeds" if args.stale_only else "advisory feed freshness"
    if not status:
        text = NO_FEEDS
    else:
        stale = [s for s in status if s.stale]
        lines = [
            f"{len(status)} feed(s), {len(stale)} stale"
            + (": " + ", ".join(s.kind.value for s in stale) if stale else ".")
        ]
        lines.extend(
            f"- {r['feed']}: {r['records']} record(s), fetched "
            f"{r['fetched_at'][:16].replace('T', ' ')} UTC, "
            + ("STALE" if r["stale"] else "fresh")
            + f" (max age {r['max_age_days']:g} days; {shown(r['source'])})"
            for r in rows
        )
        if stale:
            lines.append("Refresh with `patchpilot feeds update`.")
        text = "\n".join(lines)
    return QueryResult.of(
        "feeds",
        understood,
        ("feed", "records", "fetched_at", "published_at", "stale"),
        rows,
        text,
    )


FEEDS = register(
    QueryTool(
        name="feeds",
        description="Advisory feeds in the store: records, when fetched, and whether stale.",
        input_model=FeedsInput,
        run=_feeds,
    )
)

"""Past deployments of a package (the store's outcomes) and what the memory recalls.

The vector memory (:class:`patchpilot.tools.memory.VectorMemory`) is optional: pass it as
``QueryContext.extra["memory"]``. Recalled items are cited by their ids; their text is data.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.intents import HostName, PackageSpec
from patchpilot.tools.queries.base import (
    QueryContext,
    QueryInput,
    QueryResult,
    QueryTool,
    register,
)
from patchpilot.tools.queries.common import shown

__all__ = ["HISTORY", "HistoryInput", "recall"]


class HistoryInput(QueryInput):
    """Whose history to show."""

    packages: tuple[PackageSpec, ...] = Field(
        default=(), description="packages (default: any package)"
    )
    host: HostName | None = Field(default=None, description="only this host")
    limit: int = Field(default=20, ge=1, le=100, description="most outcomes listed")
    incidents_only: bool = Field(default=False, description="only incidents from the memory")


def recall(
    context: QueryContext, query: str, names: set[str], kinds: tuple[str, ...], k: int = 5
) -> tuple[list[dict[str, Any]], str | None]:
    """What the memory recalls for ``query`` (items naming one of ``names``), and any problem."""
    memory = context.extra.get("memory")
    if memory is None:
        return [], None
    found: list[dict[str, Any]] = []
    try:
        for item in memory.recall(query, kinds=kinds, k=k):
            if names and not any(n in item.text for n in names):
                continue
            found.append(
                {
                    "id": item.id,
                    "kind": item.kind,
                    "text": item.text,
                    "distance": round(item.distance, 3),
                }
            )
    except PatchpilotError as exc:
        return [], f"memory unavailable: {exc}"
    return found, None


def _history(context: QueryContext, args: HistoryInput) -> QueryResult:
    names = [p.name for p in args.packages]
    each: list[str | None] = [*names] or [None]
    rows: list[dict[str, Any]] = []
    if not args.incidents_only:
        for name in each:
            for o in context.store.recent_outcomes(package=name, host=args.host, limit=args.limit):
                rows.append({"source": "outcome", **o.model_dump(mode="json")})
    rows.sort(key=lambda r: r["at"], reverse=True)
    rows = rows[: args.limit]
    kinds = ("incidents",) if args.incidents_only else ("outcomes", "incidents")
    query = f"{' '.join(names)} upgrade outcome incident" if names else "upgrade incident"
    recalled, problem = recall(context, query, set(names), kinds)
    rows.extend({"source": "memory", **r} for r in recalled)
    what = ", ".join(names) or "any package"
    understood = ("incidents" if args.incidents_only else "deployment history") + f" of {what}"
    if args.host:
        understood += f" on {args.host}"
    lines: list[str] = []
    outcomes = [r for r in rows if r["source"] == "outcome"]
    if outcomes:
        lines.append(f"{len(outcomes)} recorded deployment(s) of {shown(what)}, newest first:")
        for row in outcomes[:10]:
            error = f": {shown(row['error'])}" if row["error"] else ""
            lines.append(
                f"- {row['at'][:16].replace('T', ' ')} {shown(row['host'])}: "
                f"{shown(row['package'])} {shown(row['from_version'] or 'none')} -> "
                f"{shown(row['to_version'])}: {row['status']}{error} (run {row['run_id']})"
            )
    elif not args.incidents_only:
        lines.append(f"No recorded deployment of {shown(what)} yet.")
    if recalled:
        lines.append("From memory:")
        lines.extend(f"- [{r['id']}] {shown(r['text'])}" for r in recalled)
    elif context.extra.get("memory") is None:
        lines.append("(no memory configured: incidents are not searched)")
    else:
        lines.append("Nothing recalled from memory.")
    if problem:
        lines.append(problem)
    return QueryResult.of(
        "history",
        understood,
        ("source", "run_id", "host", "package", "from_version", "to_version", "status"),
        rows,
        "\n".join(lines),
    )


HISTORY = register(
    QueryTool(
        name="history",
        description="Past deployments of a package (outcomes: success, failure, rollback) and "
        "the incidents and outcomes the memory recalls for it, cited by id.",
        input_model=HistoryInput,
        run=_history,
    )
)

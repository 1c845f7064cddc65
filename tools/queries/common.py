"""What the question tools share: the host scope, each host's latest snapshot, today, text.

A scope is hosts, tags and groups (the union, like a chat request's scope; several tags
combine by ``tag_match``). Tags and groups are resolved with the inventory in the
:class:`~patchpilot.tools.queries.base.QueryContext` when there is one; without an inventory
only host names can be matched (against the hosts the store has seen), and a tag or group is
reported as not resolvable rather than silently matching nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pydantic import Field

from patchpilot.core.intents import HostName, TagMatch, TagName
from patchpilot.core.models import utcnow
from patchpilot.core.store import HostResult, Store
from patchpilot.core.text import inert
from patchpilot.tools.queries.base import QueryContext, QueryInput

__all__ = [
    "MAX_RUNS_SCANNED",
    "ResolvedScope",
    "ScopedInput",
    "joined",
    "latest_snapshots",
    "resolve_scope",
    "shown",
    "today",
]

MAX_RUNS_SCANNED = 200
"""How many recent runs are read to find each host's latest snapshot."""


class ScopedInput(QueryInput):
    """Hosts, tags and groups a question is about (all empty: every known host)."""

    hosts: tuple[HostName, ...] = Field(default=(), description="host names, e.g. ['db-1']")
    tags: tuple[TagName, ...] = Field(
        default=(), description="inventory tags, e.g. ['prod'] for 'the prod boxes'"
    )
    tag_match: TagMatch = Field(
        default=TagMatch.ANY, description="'all': hosts with every tag; 'any': with one of them"
    )
    groups: tuple[TagName, ...] = Field(default=(), description="inventory groups")

    def describe_scope(self) -> str:
        """``on db-1``, ``on hosts tagged prod``, or ``on all hosts``."""
        parts = []
        if self.hosts:
            parts.append(", ".join(self.hosts))
        if self.tags:
            joiner = " + " if self.tag_match is TagMatch.ALL else " or "
            parts.append("hosts tagged " + joiner.join(self.tags))
        if self.groups:
            parts.append("group " + ", ".join(self.groups))
        return "on " + (" and ".join(parts) if parts else "all hosts")


@dataclass(frozen=True)
class ResolvedScope:
    """The host names a scope selects (``None``: every host), and what could not be resolved."""

    names: frozenset[str] | None
    unresolved: tuple[str, ...] = ()

    def selects(self, host: str) -> bool:
        """Whether ``host`` is in the scope."""
        return self.names is None or host in self.names

    def note(self) -> str:
        """A sentence about what could not be resolved (empty when everything was)."""
        if not self.unresolved:
            return ""
        return "Not resolved: " + "; ".join(shown(u) for u in self.unresolved) + "."


def resolve_scope(context: QueryContext, scope: ScopedInput) -> ResolvedScope:
    """The host names ``scope`` selects, by the inventory when there is one."""
    if not (scope.hosts or scope.tags or scope.groups):
        return ResolvedScope(names=None)
    inv = context.inventory
    unresolved: list[str] = []
    names: set[str] = set(scope.hosts)
    if inv is not None:
        unknown = [h for h in scope.hosts if h not in inv.hosts]
        if unknown:
            unresolved.append(f"host(s) {', '.join(unknown)} not in the inventory")
    members: list[set[str]] = []
    for tag in scope.tags:
        if inv is None:
            unresolved.append(f"tag {tag} (no inventory loaded)")
            members.append(set())
            continue
        found = set(inv.tags.get(tag, ())) | set(inv.groups.get(tag, ()))
        if not found:
            unresolved.append(f"tag {tag} (no host carries it)")
        members.append(found)
    if members:
        both = scope.tag_match is TagMatch.ALL
        names |= set.intersection(*members) if both else set.union(*members)
    for group in scope.groups:
        if inv is None:
            unresolved.append(f"group {group} (no inventory loaded)")
            continue
        found = set(inv.groups.get(group, ())) | set(inv.tags.get(group, ()))
        if not found:
            unresolved.append(f"group {group} (no such group)")
        names |= found
    return ResolvedScope(names=frozenset(names), unresolved=tuple(unresolved))


def latest_snapshots(
    store: Store, scope: ResolvedScope, *, max_runs: int = MAX_RUNS_SCANNED
) -> dict[str, tuple[str, HostResult]]:
    """Each selected host's latest successful discovery: ``host -> (run_id, result)``.

    Results carry facts and pending updates (``details=True``); hosts whose latest attempt
    failed keep their last successful snapshot (the facts as last seen).
    """
    found: dict[str, tuple[str, HostResult]] = {}
    for run in store.list_runs(limit=max_runs):
        for result in store.host_results(run.run_id, details=True):
            if result.ok and result.host not in found and scope.selects(result.host):
                found[result.host] = (run.run_id, result)
        if scope.names is not None and scope.names <= found.keys():
            break
    return dict(sorted(found.items()))


def today(context: QueryContext) -> date:
    """Today (UTC), or ``context.extra["now"]``'s date when the caller fixes the clock."""
    now = context.extra.get("now")
    moment = now if isinstance(now, datetime) else utcnow()
    return moment.date() if moment.tzinfo is None else moment.astimezone(UTC).date()


def shown(value: object) -> str:
    """An untrusted value as text with its control characters made visible (one line)."""
    return inert(str(value), newlines=False)


def joined(values: Iterable[object], n: int = 3) -> str:
    """The first ``n`` values and how many more, e.g. ``"a, b, c +2"`` (each made inert)."""
    items = [shown(v) for v in values]
    more = f" +{len(items) - n}" if len(items) > n else ""
    return ", ".join(items[:n]) + more

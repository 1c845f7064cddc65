"""Discovery agent: collect OS, kernel, reboot and package facts from many hosts at once.

Deterministic core only (no LLM is needed to read a package database): bounded concurrency,
one transport (one SSH connection) per host reused for all of its facts, and partial failure:
an unreachable host becomes a failed :class:`HostOutcome` with the reason while the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.models import (
    Host,
    HostFacts,
    InstalledPackage,
    OSFamily,
    OSInfo,
    PendingUpdate,
)
from patchpilot.core.settings import DiscoverySettings, Settings
from patchpilot.tools.facts import (
    AptCandidatePolicy,
    AptHolds,
    AptPendingUpdates,
    AptPolicy,
    DeletedLibraries,
    Fact,
    ListeningSockets,
    NeedrestartAvailable,
    NeedrestartBatch,
    classify_update,
    classify_updates,
    collect_host_facts_with,
    gather,
    gather_many,
    restart_status,
)
from patchpilot.tools.packages import refresh_package_lists
from patchpilot.tools.transport import Transport, open_transport

if TYPE_CHECKING:
    from patchpilot.tools.changelog import ChangelogFetcher

__all__ = ["HostOutcome", "discover", "discover_host"]

# Bind per call, not at import: a logger bound before configure_logging() ignores its level.
log = structlog.get_logger(__name__)


class HostOutcome(BaseModel):
    """What discovery got from one host: facts and packages, or the reason it failed."""

    model_config = ConfigDict(frozen=True)

    host: str
    ok: bool
    facts: HostFacts | None = None
    packages: tuple[InstalledPackage, ...] = ()
    pending: tuple[PendingUpdate, ...] | None = Field(
        default=None, description="upgrades the host's repositories offer; None = not collected"
    )
    warnings: tuple[str, ...] = ()
    error: str | None = None
    error_type: str | None = None
    duration_s: float = 0.0


_ExtraT = TypeVar("_ExtraT")


def _best_effort(what: str, warnings: list[str], collect: Callable[[], _ExtraT]) -> _ExtraT | None:
    """Run one optional collection; a failure becomes a warning and ``None``."""
    try:
        return collect()
    except PatchpilotError as exc:
        warnings.append(f"{what} not collected: {exc}")
        return None


def _optional_facts(os: OSInfo, options: DiscoverySettings) -> list[tuple[str, Fact[Any]]]:
    """The optional facts gathered with the package inventory (no sudo), by key."""
    wanted: list[tuple[str, Fact[Any]]] = []
    if os.family is OSFamily.DEBIAN:
        wanted.append(("held packages", AptHolds()))
        if options.apt_sources:
            wanted.append(("apt sources", AptPolicy()))
    if options.restarts:
        wanted.append(("needrestart", NeedrestartAvailable()))
    return wanted


def _extended_facts(
    transport: Transport,
    facts: HostFacts,
    found: Mapping[str, Any],
    options: DiscoverySettings,
    warnings: list[str],
) -> HostFacts:
    """Held packages, apt sources, listening sockets and restart needs (each best effort).

    ``found`` holds what the inventory round trip already gathered (see
    :func:`_optional_facts`); listening sockets and restart needs read ``/proc`` as root and
    run together in one more (sudo) round trip.
    """
    update: dict[str, object] = {}
    if facts.os.family is OSFamily.DEBIAN:
        held = _best_of(found, "held packages", warnings)
        update["held_packages"] = None if held is None else tuple(held)
        if options.apt_sources:
            sources = _best_of(found, "apt sources", warnings)
            update["apt_sources"] = None if sources is None else tuple(sources)
    privileged: list[tuple[str, Fact[Any]]] = []
    if options.services:
        privileged.append(("listening sockets", ListeningSockets()))
    if options.restarts:
        restart_fact: Fact[Any] = (
            NeedrestartBatch() if _best_of(found, "needrestart", warnings) else DeletedLibraries()
        )
        privileged.append(("processes using deleted libraries", restart_fact))
    if privileged:
        try:
            values = gather_many(transport, [f for _, f in privileged], sudo=True)
        except PatchpilotError as exc:
            values = [exc] * len(privileged)
        results = dict(zip((k for k, _ in privileged), values, strict=True))
        if options.services:
            sockets = _best_of(results, "listening sockets", warnings)
            update["listening"] = None if sockets is None else tuple(sockets)
        if options.restarts:
            found_restart = _best_of(results, "processes using deleted libraries", warnings)
            if found_restart is not None:
                restart = restart_status(found_restart)
                update["deleted_library_users"] = tuple(restart.users)
                if restart.source == "needrestart":
                    update["services_needing_restart"] = tuple(restart.services)
    return facts.model_copy(update=update) if update else facts


def _best_of(results: Mapping[str, Any], key: str, warnings: list[str]) -> Any:
    """A best-effort batch entry: its value, or None with a warning when it failed."""
    value = results.get(key)
    if isinstance(value, PatchpilotError):
        warnings.append(f"{key} not collected: {value}")
        return None
    return value


def _pending_updates(
    transport: Transport,
    facts: HostFacts,
    packages: Sequence[InstalledPackage],
    *,
    refresh: bool,
    changelogs: ChangelogFetcher | None,
    changelog_scope: str,
    warnings: list[str],
) -> tuple[PendingUpdate, ...] | None:
    """What the host's repositories offer, classified by origin, with the CVEs each fixes.

    Best effort: a failure is a warning (and ``None``: not collected), never an error.
    """
    if facts.os.family is not OSFamily.DEBIAN:
        warnings.append(f"pending updates are not collected on {facts.os.family.value} yet")
        return None
    if refresh:
        try:
            refresh_package_lists(transport)
        except PatchpilotError as exc:
            warnings.append(f"apt-get update failed, using the existing package lists: {exc}")
    try:
        updates: list[PendingUpdate] = gather(transport, AptPendingUpdates())
    except PatchpilotError as exc:
        warnings.append(f"pending updates unavailable: {exc}")
        return None
    by_name = {p.name: p for p in packages}
    updates = [
        u.model_copy(update={"source_name": by_name[u.name].source_name})
        if u.source_name is None and u.name in by_name
        else u
        for u in updates
    ]
    if updates and facts.apt_sources is not None:
        names = sorted({u.name for u in updates})
        policies = _best_effort(
            "candidate origins", warnings, lambda: gather(transport, AptCandidatePolicy(names))
        )
        updates = classify_updates(updates, policies or {}, facts.apt_sources)
    else:
        updates = [classify_update(u, None, ()) for u in updates]
    if changelogs is not None and changelog_scope != "none":
        wanted = [u for u in updates if changelog_scope == "all" or u.security]
        if wanted:
            looked_up, changelog_warnings = changelogs.cves_for_many(transport, wanted, packages)
            warnings.extend(changelog_warnings)
            found = {(u.name, u.arch): u for u in looked_up}
            updates = [found.get((u.name, u.arch), u) for u in updates]
    return tuple(updates)


def discover_host(
    host: Host,
    settings: Settings,
    *,
    pending: bool = False,
    refresh: bool = False,
    changelogs: ChangelogFetcher | None = None,
) -> HostOutcome:
    """Collect facts from one host; failures become a failed outcome, never an exception.

    One transport (one SSH connection) serves every command of the host. OS, kernel, packages
    and reboot state are required (their failure fails the host); held packages, apt sources,
    listening sockets, processes using deleted libraries, pending updates and changelog CVEs
    are best effort (their failure is a warning on a host that is still ``ok``).

    Args:
        host: the host.
        settings: transport settings and what to collect (``settings.discovery``).
        pending: also simulate an upgrade (read-only ``apt-get -s``) to learn what the host's
            own repositories offer, and classify each candidate's origin.
        refresh: run ``apt-get update`` first (needs sudo on the host).
        changelogs: read the CVEs each pending update fixes from its Debian changelog.
    """
    started = time.monotonic()
    hlog = log.bind(agent="discovery", host=host.name)
    updates: tuple[PendingUpdate, ...] | None = None
    warnings: list[str] = []
    try:
        with open_transport(host, settings) as transport:
            optional: list[tuple[str, Fact[Any]]] = []

            def optional_for(os: OSInfo) -> list[Fact[Any]]:
                optional.extend(_optional_facts(os, settings.discovery))
                return [fact for _, fact in optional]

            facts, packages, extras = collect_host_facts_with(transport, optional_for)
            found = dict(zip((key for key, _ in optional), extras, strict=True))
            facts = _extended_facts(transport, facts, found, settings.discovery, warnings)
            if pending:
                updates = _pending_updates(
                    transport,
                    facts,
                    packages,
                    refresh=refresh,
                    changelogs=changelogs,
                    changelog_scope=settings.discovery.changelogs,
                    warnings=warnings,
                )
    except Exception as exc:  # one broken host must never stop the fleet
        if isinstance(exc, PatchpilotError):
            hlog.warning("discovery.failed", error=str(exc), error_type=type(exc).__name__)
            message = str(exc)
        else:
            hlog.exception("discovery.unexpected_error")
            message = f"{host.name}: unexpected {type(exc).__name__}: {exc}"
        return HostOutcome(
            host=host.name,
            ok=False,
            error=message,
            error_type=type(exc).__name__,
            duration_s=time.monotonic() - started,
        )
    for warning in warnings:
        hlog.warning("discovery.partial", warning=warning)
    hlog.info(
        "discovery.done",
        packages=len(packages),
        kernel=facts.kernel,
        pending=None if updates is None else len(updates),
        duration_s=round(time.monotonic() - started, 3),
    )
    return HostOutcome(
        host=host.name,
        ok=True,
        facts=facts,
        packages=tuple(packages),
        pending=updates,
        warnings=tuple(warnings),
        duration_s=time.monotonic() - started,
    )


def discover(
    hosts: Sequence[Host],
    settings: Settings,
    *,
    on_done: Callable[[HostOutcome], None] | None = None,
    pending: bool = False,
    refresh: bool = False,
    changelogs: ChangelogFetcher | None = None,
) -> list[HostOutcome]:
    """Collect facts from ``hosts`` with at most ``settings.concurrency`` at once.

    Args:
        hosts: the hosts to inventory.
        settings: transport settings and the concurrency bound.
        on_done: called (from worker threads) as each host finishes, e.g. to advance a
            progress bar.
        pending: also collect pending updates (see :func:`discover_host`).
        refresh: run ``apt-get update`` on each host first.
        changelogs: read changelog CVEs of pending updates (see :func:`discover_host`).

    Returns:
        One outcome per host, in the order of ``hosts``.
    """
    if not hosts:
        return []
    outcomes: dict[str, HostOutcome] = {}
    workers = min(settings.concurrency, len(hosts))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="discover") as pool:
        futures = {
            pool.submit(
                discover_host,
                h,
                settings,
                pending=pending,
                refresh=refresh,
                changelogs=changelogs,
            ): h
            for h in hosts
        }
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.host] = outcome
            if on_done is not None:
                on_done(outcome)
    return [outcomes[h.name] for h in hosts]

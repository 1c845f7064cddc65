"""Discovery agent: collect OS, kernel, reboot and package facts from many hosts at once.

Deterministic core only (no LLM is needed to read a package database): bounded concurrency,
one transport (one SSH connection) per host reused for all of its facts, and partial failure:
an unreachable host becomes a failed :class:`HostOutcome` with the reason while the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.errors import PatchpilotError, UnsupportedPlatformError
from patchpilot.core.models import (
    Host,
    HostFacts,
    InstalledPackage,
    ListeningSocket,
    OSFamily,
    OSInfo,
    PendingUpdate,
)
from patchpilot.core.settings import DiscoverySettings, Settings
from patchpilot.tools.facts import (
    DeletedLibraries,
    Fact,
    ListeningSockets,
    MappedPackages,
    NeedrestartAvailable,
    NeedrestartBatch,
    collect_host_facts_with,
    gather,
    gather_many,
    restart_status,
)
from patchpilot.tools.packages import PackageManager, for_family
from patchpilot.tools.transport import Transport, TransportFactory, open_transport

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


def _package_manager(family: OSFamily) -> PackageManager | None:
    """The family's package manager, or None when patchpilot has none for it yet."""
    try:
        return for_family(family)
    except UnsupportedPlatformError:
        return None


def _optional_facts(os: OSInfo, options: DiscoverySettings) -> list[tuple[str, Fact[Any]]]:
    """The optional facts gathered with the package inventory (no sudo), by key: the package
    manager's (held packages, repository sources) and needrestart's."""
    manager = _package_manager(os.family)
    wanted: list[tuple[str, Fact[Any]]] = []
    if manager is not None:
        wanted.extend(manager.inventory_facts(options))
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
    """Held packages, repository sources, listening sockets, restart needs and loaded
    packages (each best effort).

    ``found`` holds what the inventory round trip already gathered (see
    :func:`_optional_facts`; the package manager turns its part into HostFacts fields);
    listening sockets and restart needs read ``/proc`` as root and run together in one more
    (sudo) round trip; on a Debian-family host a last (sudo) round trip reads which packages
    the listening processes, and all processes, have loaded (:class:`MappedPackages`, given
    the listening pids).
    """
    update: dict[str, object] = {}
    manager = _package_manager(facts.os.family)
    if manager is not None:
        update.update(manager.facts_update(found, options, warnings))
    privileged: list[tuple[str, Fact[Any]]] = []
    sockets: list[ListeningSocket] | None = None
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
    if options.loaded_packages and facts.os.family is OSFamily.DEBIAN:
        # Without listening sockets only ``running`` is collected (no listening pid to read).
        pids = {s.pid for s in sockets or () if s.pid is not None}
        try:
            update["loaded_packages"] = gather(transport, MappedPackages(pids))
        except PatchpilotError as exc:
            warnings.append(f"loaded packages not collected: {exc}")
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

    The host's package manager (:func:`patchpilot.tools.packages.for_family`) lists the updates
    and their origins. Best effort: a failure is a warning (and ``None``: not collected), never
    an error.
    """
    manager = _package_manager(facts.os.family)
    if manager is None:
        warnings.append(f"pending updates are not collected on {facts.os.family.value} yet")
        return None
    updates = manager.pending_updates(
        transport, facts, packages, refresh=refresh, warnings=warnings
    )
    if updates is None:
        return None
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
    transport_factory: TransportFactory = open_transport,
) -> HostOutcome:
    """Collect facts from one host; failures become a failed outcome, never an exception.

    One transport (one SSH connection) serves every command of the host. OS, kernel, packages
    and reboot state are required (their failure fails the host); held packages, repository
    sources, listening sockets, processes using deleted libraries, loaded packages, pending
    updates and changelog CVEs (with their urgency) are best effort (their failure is a warning
    on a host that is still ``ok``).

    Args:
        host: the host.
        settings: transport settings and what to collect (``settings.discovery``).
        pending: also ask the host's package manager (read-only simulation) what the host's
            own repositories offer, and classify each candidate's origin.
        refresh: refresh the package lists first (needs sudo on the host).
        changelogs: read the CVEs each pending update fixes from its Debian changelog.
        transport_factory: opens the host's transport (the graphs pass their context's; tests
            pass a scripted one).
    """
    started = time.monotonic()
    hlog = log.bind(agent="discovery", host=host.name)
    updates: tuple[PendingUpdate, ...] | None = None
    warnings: list[str] = []
    try:
        with transport_factory(host, settings) as transport:
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
    transport_factory: TransportFactory = open_transport,
) -> list[HostOutcome]:
    """Collect facts from ``hosts`` with at most ``settings.concurrency`` at once.

    Args:
        hosts: the hosts to inventory.
        settings: transport settings and the concurrency bound.
        on_done: called (from worker threads) as each host finishes, e.g. to advance a
            progress bar.
        pending: also collect pending updates (see :func:`discover_host`).
        refresh: refresh each host's package lists first.
        changelogs: read changelog CVEs of pending updates (see :func:`discover_host`).
        transport_factory: opens each host's transport (see :func:`discover_host`).

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
                transport_factory=transport_factory,
            ): h
            for h in hosts
        }
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.host] = outcome
            if on_done is not None:
                on_done(outcome)
    return [outcomes[h.name] for h in hosts]

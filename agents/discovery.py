"""Discovery agent: collect OS, kernel, reboot and package facts from many hosts at once.

Deterministic core only (no LLM is needed to read a package database): bounded concurrency,
one transport (one SSH connection) per host reused for all of its facts, and partial failure:
an unreachable host becomes a failed :class:`HostOutcome` with the reason while the others go on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.errors import PatchpilotError
from patchpilot.models import Host, HostFacts, InstalledPackage, OSFamily, PendingUpdate
from patchpilot.settings import Settings
from tools.facts import AptPendingUpdates, collect_host_facts, gather
from tools.transport import Transport, open_transport

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


def _pending_updates(
    transport: Transport, facts: HostFacts
) -> tuple[tuple[PendingUpdate, ...] | None, tuple[str, ...]]:
    """What the host's repositories offer; best effort, a failure is a warning not an error."""
    if facts.os.family is not OSFamily.DEBIAN:
        return None, (f"pending updates are not collected on {facts.os.family.value} yet",)
    try:
        updates: list[PendingUpdate] = gather(transport, AptPendingUpdates())
        return tuple(updates), ()
    except PatchpilotError as exc:
        return None, (f"pending updates unavailable: {exc}",)


def discover_host(host: Host, settings: Settings, *, pending: bool = False) -> HostOutcome:
    """Collect facts from one host; failures become a failed outcome, never an exception.

    Args:
        host: the host.
        settings: transport settings.
        pending: also simulate an upgrade (read-only ``apt-get -s``) to learn what the host's
            own repositories offer.
    """
    started = time.monotonic()
    hlog = log.bind(agent="discovery", host=host.name)
    updates: tuple[PendingUpdate, ...] | None = None
    warnings: tuple[str, ...] = ()
    try:
        with open_transport(host, settings) as transport:
            facts, packages = collect_host_facts(transport)
            if pending:
                updates, warnings = _pending_updates(transport, facts)
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
    hlog.info("discovery.done", packages=len(packages), kernel=facts.kernel)
    return HostOutcome(
        host=host.name,
        ok=True,
        facts=facts,
        packages=tuple(packages),
        pending=updates,
        warnings=warnings,
        duration_s=time.monotonic() - started,
    )


def discover(
    hosts: Sequence[Host],
    settings: Settings,
    *,
    on_done: Callable[[HostOutcome], None] | None = None,
    pending: bool = False,
) -> list[HostOutcome]:
    """Collect facts from ``hosts`` with at most ``settings.concurrency`` at once.

    Args:
        hosts: the hosts to inventory.
        settings: transport settings and the concurrency bound.
        on_done: called (from worker threads) as each host finishes, e.g. to advance a
            progress bar.
        pending: also collect pending updates (see :func:`discover_host`).

    Returns:
        One outcome per host, in the order of ``hosts``.
    """
    if not hosts:
        return []
    outcomes: dict[str, HostOutcome] = {}
    workers = min(settings.concurrency, len(hosts))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="discover") as pool:
        futures = {pool.submit(discover_host, h, settings, pending=pending): h for h in hosts}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.host] = outcome
            if on_done is not None:
                on_done(outcome)
    return [outcomes[h.name] for h in hosts]

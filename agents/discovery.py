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
from pydantic import BaseModel, ConfigDict

from patchpilot.errors import PatchpilotError
from patchpilot.models import Host, HostFacts, InstalledPackage
from patchpilot.settings import Settings
from tools.facts import collect_host_facts
from tools.transport import open_transport

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
    error: str | None = None
    error_type: str | None = None
    duration_s: float = 0.0


def discover_host(host: Host, settings: Settings) -> HostOutcome:
    """Collect facts from one host; failures become a failed outcome, never an exception."""
    started = time.monotonic()
    hlog = log.bind(agent="discovery", host=host.name)
    try:
        with open_transport(host, settings) as transport:
            facts, packages = collect_host_facts(transport)
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
        duration_s=time.monotonic() - started,
    )


def discover(
    hosts: Sequence[Host],
    settings: Settings,
    *,
    on_done: Callable[[HostOutcome], None] | None = None,
) -> list[HostOutcome]:
    """Collect facts from ``hosts`` with at most ``settings.concurrency`` at once.

    Args:
        hosts: the hosts to inventory.
        settings: transport settings and the concurrency bound.
        on_done: called (from worker threads) as each host finishes, e.g. to advance a
            progress bar.

    Returns:
        One outcome per host, in the order of ``hosts``.
    """
    if not hosts:
        return []
    outcomes: dict[str, HostOutcome] = {}
    workers = min(settings.concurrency, len(hosts))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="discover") as pool:
        futures = {pool.submit(discover_host, h, settings): h for h in hosts}
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome.host] = outcome
            if on_done is not None:
                on_done(outcome)
    return [outcomes[h.name] for h in hosts]

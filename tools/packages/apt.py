"""The Debian family's :class:`~patchpilot.tools.packages.base.PackageManager`: apt and dpkg.

A thin wrapper: the commands and their parsing stay in :mod:`patchpilot.tools.packages.apt_ops`
(changes) and the apt facts of :mod:`patchpilot.tools.facts` (``apt.py``, ``apt_holds.py``,
``apt_simulate.py``, ``apt_sources.py``: read-only).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from patchpilot.core import versions
from patchpilot.core.errors import PatchpilotError
from patchpilot.core.models import (
    Ecosystem,
    HostFacts,
    InstalledPackage,
    OSFamily,
    PendingUpdate,
)
from patchpilot.core.settings import DiscoverySettings
from patchpilot.core.validate import validate_package_name, validate_version
from patchpilot.tools.facts.apt import AptPendingUpdates
from patchpilot.tools.facts.apt_holds import AptHolds
from patchpilot.tools.facts.apt_simulate import SimulationResult, simulate_install
from patchpilot.tools.facts.apt_sources import (
    AptCandidatePolicy,
    AptPolicy,
    classify_update,
    classify_updates,
)
from patchpilot.tools.facts.base import Fact, gather
from patchpilot.tools.packages.apt_ops import (
    DEFAULT_LOCK_TIMEOUT,
    InstallResult,
    LockWaitResult,
    RepairResult,
    audit_and_repair,
    install_exact,
    installed_versions,
    refresh_package_lists,
    wait_for_dpkg_lock,
)

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = ["AptPackageManager"]

_HELD = "held packages"
_SOURCES = "apt sources"

_T = TypeVar("_T")


def _best_of(results: Mapping[str, Any], key: str, warnings: list[str]) -> Any:
    """A best-effort batch entry: its value, or None with a warning when it failed."""
    value = results.get(key)
    if isinstance(value, PatchpilotError):
        warnings.append(f"{key} not collected: {value}")
        return None
    return value


def _best_effort(what: str, warnings: list[str], collect: Callable[[], _T]) -> _T | None:
    """Run one optional collection; a failure becomes a warning and ``None``."""
    try:
        return collect()
    except PatchpilotError as exc:
        warnings.append(f"{what} not collected: {exc}")
        return None


class AptPackageManager:
    """apt/dpkg on Debian-family hosts (Debian, Ubuntu, ...)."""

    @property
    def family(self) -> OSFamily:
        return OSFamily.DEBIAN

    @property
    def ecosystem(self) -> Ecosystem:
        return Ecosystem.DEBIAN

    @property
    def tool(self) -> str:
        return "apt"

    @property
    def database(self) -> str:
        return "dpkg"

    def __repr__(self) -> str:
        return "AptPackageManager()"

    # -- validation and ordering
    def validate_name(self, name: str) -> str:
        return validate_package_name(name, Ecosystem.DEBIAN)

    def validate_version(self, version: str) -> str:
        return validate_version(version, Ecosystem.DEBIAN)

    def compare(self, a: str, b: str) -> int:
        return versions.compare(Ecosystem.DEBIAN, a, b)

    # -- discovery
    def inventory_facts(self, options: DiscoverySettings) -> list[tuple[str, Fact[Any]]]:
        """``apt-mark``-style holds (dpkg selections) and, when asked, ``apt-cache policy``."""
        wanted: list[tuple[str, Fact[Any]]] = [(_HELD, AptHolds())]
        if options.apt_sources:
            wanted.append((_SOURCES, AptPolicy()))
        return wanted

    def facts_update(
        self, found: Mapping[str, Any], options: DiscoverySettings, warnings: list[str]
    ) -> dict[str, object]:
        update: dict[str, object] = {}
        held = _best_of(found, _HELD, warnings)
        update["held_packages"] = None if held is None else tuple(held)
        if options.apt_sources:
            sources = _best_of(found, _SOURCES, warnings)
            update["apt_sources"] = None if sources is None else tuple(sources)
        return update

    def pending_updates(
        self,
        transport: Transport,
        facts: HostFacts,
        packages: Sequence[InstalledPackage],
        *,
        refresh: bool,
        warnings: list[str],
    ) -> list[PendingUpdate] | None:
        """``apt-get update`` when asked, ``apt-get -s upgrade``, then each candidate's origin
        (``apt-cache policy``) classified against the host's apt sources."""
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
        updates += self._held_updates(transport, facts, packages, updates, warnings)
        if updates and facts.apt_sources is not None:
            names = sorted({u.name for u in updates})
            policies = _best_effort(
                "candidate origins", warnings, lambda: gather(transport, AptCandidatePolicy(names))
            )
            return classify_updates(updates, policies or {}, facts.apt_sources)
        return [classify_update(u, None, ()) for u in updates]

    def _held_updates(
        self,
        transport: Transport,
        facts: HostFacts,
        packages: Sequence[InstalledPackage],
        updates: Sequence[PendingUpdate],
        warnings: list[str],
    ) -> list[PendingUpdate]:
        """The upgrades apt would offer held packages (``apt-get -s`` leaves them out).

        A held package is the one most likely to stay vulnerable: its candidate (from
        ``apt-cache policy``) is reported as a pending update marked ``held``, so its exposure
        stays visible; planning never installs it.
        """
        offered = {u.name for u in updates}
        by_name = {p.name: p for p in packages}
        names = sorted(
            {h.split(":", 1)[0] for h in facts.held_packages or ()} & by_name.keys() - offered
        )
        if not names:
            return []
        policies = _best_effort(
            "candidates of held packages",
            warnings,
            lambda: gather(transport, AptCandidatePolicy(names)),
        )
        held: list[PendingUpdate] = []
        for name in names:
            policy = (policies or {}).get(name)
            installed = by_name[name]
            if policy is None or policy.candidate is None:
                continue
            try:
                newer = self.compare(policy.candidate, installed.version) > 0
            except PatchpilotError:
                continue
            if not newer:
                continue
            suites = tuple(dict.fromkeys(src.dist for src in policy.sources_of(policy.candidate)))
            held.append(
                PendingUpdate(
                    name=name,
                    arch=installed.arch,
                    installed_version=installed.version,
                    candidate_version=policy.candidate,
                    origins=suites,
                    security=any(s.endswith("-security") for s in suites),
                    source_name=installed.source_name,
                    held=True,
                )
            )
        return held

    def available_versions(
        self, transport: Transport, names: Sequence[str]
    ) -> dict[str, list[str]]:
        """``apt-cache policy NAME...``: the versions some configured source offers."""
        policies = gather(transport, AptCandidatePolicy(names))
        return {name: [v.version for v in p.versions if v.sources] for name, p in policies.items()}

    def holds(self, transport: Transport) -> list[str]:
        return gather(transport, AptHolds())

    def installed_versions(
        self, transport: Transport, packages: Iterable[str]
    ) -> dict[str, str | None]:
        return installed_versions(transport, packages)

    def simulate(
        self,
        transport: Transport,
        items: Sequence[tuple[str, str]],
        *,
        allow_downgrades: bool,
        only_upgrade: bool,
        details: bool = True,
    ) -> SimulationResult:
        return simulate_install(
            transport,
            items,
            allow_downgrades=allow_downgrades,
            only_upgrade=only_upgrade,
            details=details,
        )

    # -- changes
    def install_exact(
        self,
        transport: Transport,
        items: Sequence[tuple[str, str]],
        *,
        allow_downgrades: bool,
        allow_held: bool = False,
        allow_removals: bool = False,
        only_upgrade: bool | None = None,
    ) -> InstallResult:
        return install_exact(
            transport,
            items,
            allow_downgrades=allow_downgrades,
            allow_held=allow_held,
            allow_removals=allow_removals,
            only_upgrade=only_upgrade,
        )

    def rollback(self, transport: Transport, versions: Sequence[tuple[str, str]]) -> InstallResult:
        return install_exact(
            transport, versions, allow_downgrades=True, allow_held=False, allow_removals=False
        )

    def repair(self, transport: Transport) -> RepairResult:
        return audit_and_repair(transport)

    def wait_for_lock(
        self, transport: Transport, timeout: int = DEFAULT_LOCK_TIMEOUT
    ) -> LockWaitResult:
        return wait_for_dpkg_lock(transport, timeout)

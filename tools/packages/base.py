"""The per-OS-family package-manager seam: what patchpilot does with a package manager.

Agents never build package-manager commands themselves: they ask :func:`for_family` (by the
host's OS family, from its facts) or :func:`for_ecosystem` (by a plan item's ecosystem) for a
:class:`PackageManager` and call it with an open transport. Debian's apt/dpkg is the one
implementation today (:class:`patchpilot.tools.packages.apt.AptPackageManager`); a family
without one (RHEL/rpm, Alpine/apk for now) raises
:class:`~patchpilot.core.errors.UnsupportedPlatformError`.

Every method that touches a host takes an open
:class:`~patchpilot.tools.transport.base.Transport`; results are the typed records of
:mod:`patchpilot.tools.packages.apt_ops` and :mod:`patchpilot.tools.facts.apt_simulate`, whose
fields are not apt-specific (an rpm or apk implementation fills the same ones).

Example::

    pm = for_family(facts.os.family)        # or for_ecosystem(item.ecosystem)
    sim = pm.simulate(transport, [("acme-web", "1.1.0")], allow_downgrades=False,
                      only_upgrade=True)
    result = pm.install_exact(transport, [("acme-web", "1.1.0")], allow_downgrades=False)
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from patchpilot.core.errors import ConfigError, UnsupportedPlatformError
from patchpilot.core.models import (
    Ecosystem,
    HostFacts,
    InstalledPackage,
    OSFamily,
    PendingUpdate,
)
from patchpilot.core.settings import DiscoverySettings
from patchpilot.tools.facts.apt_simulate import SimulationResult
from patchpilot.tools.facts.base import Fact
from patchpilot.tools.packages.apt_ops import (
    DEFAULT_LOCK_TIMEOUT,
    InstallResult,
    LockWaitResult,
    RepairResult,
)

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = [
    "PackageManager",
    "for_ecosystem",
    "for_family",
    "manager_for_items",
    "register",
    "registered",
]


@runtime_checkable
class PackageManager(Protocol):
    """What patchpilot does with one OS family's package manager (see the module docstring).

    Implementations hold no per-host state: one instance serves every host of its family,
    from many threads at once.
    """

    @property
    def family(self) -> OSFamily:
        """The OS family this implementation serves."""
        ...

    @property
    def ecosystem(self) -> Ecosystem:
        """The package ecosystem (version ordering, name and version rules)."""
        ...

    @property
    def tool(self) -> str:
        """The package manager's name in messages (``apt``)."""
        ...

    @property
    def database(self) -> str:
        """The package database's name in messages and audit events (``dpkg``)."""
        ...

    # -- validation and ordering (pure)
    def validate_name(self, name: str) -> str:
        """The package name if it is valid in this ecosystem (UnsafeArgumentError else)."""
        ...

    def validate_version(self, version: str) -> str:
        """The version if it is valid in this ecosystem (UnsafeArgumentError else)."""
        ...

    def compare(self, a: str, b: str) -> int:
        """<0, 0, >0 as ``a`` is older than, equal to, newer than ``b`` (exact rules)."""
        ...

    # -- discovery (read-only)
    def inventory_facts(self, options: DiscoverySettings) -> list[tuple[str, Fact[Any]]]:
        """Optional facts (key, fact) gathered with the package inventory (no sudo)."""
        ...

    def facts_update(
        self, found: Mapping[str, Any], options: DiscoverySettings, warnings: list[str]
    ) -> dict[str, object]:
        """HostFacts fields from :meth:`inventory_facts`' results (an error value: a warning)."""
        ...

    def pending_updates(
        self,
        transport: Transport,
        facts: HostFacts,
        packages: Sequence[InstalledPackage],
        *,
        refresh: bool,
        warnings: list[str],
    ) -> list[PendingUpdate] | None:
        """Updates the host's repositories offer, with candidates and classified origins.

        ``refresh`` first refreshes the package lists (root). Best effort: a failure is a
        warning appended to ``warnings`` and ``None`` (not collected).
        """
        ...

    def available_versions(
        self, transport: Transport, names: Sequence[str]
    ) -> dict[str, list[str]]:
        """Versions the host's repositories offer for each of ``names`` (read-only)."""
        ...

    def holds(self, transport: Transport) -> list[str]:
        """Packages the host holds (never upgraded unless a person approves it)."""
        ...

    def installed_versions(
        self, transport: Transport, packages: Iterable[str]
    ) -> dict[str, str | None]:
        """Fully installed version of each package (``None``: absent or half-installed)."""
        ...

    def simulate(
        self,
        transport: Transport,
        items: Sequence[tuple[str, str]],
        *,
        allow_downgrades: bool,
        only_upgrade: bool,
        details: bool = True,
    ) -> SimulationResult:
        """Simulate installing exact ``(name, version)`` pairs; nothing changes on the host."""
        ...

    # -- changes (root)
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
        """Install exact pinned versions non-interactively and verify the post-state."""
        ...

    def rollback(self, transport: Transport, versions: Sequence[tuple[str, str]]) -> InstallResult:
        """Reinstall recorded versions, downgrading (never held changes, never removals)."""
        ...

    def repair(self, transport: Transport) -> RepairResult:
        """Audit the package database and finish an interrupted transaction."""
        ...

    def wait_for_lock(
        self, transport: Transport, timeout: int = DEFAULT_LOCK_TIMEOUT
    ) -> LockWaitResult:
        """Wait (bounded) until the package database lock is free."""
        ...


_lock = threading.Lock()
_by_family: dict[OSFamily, PackageManager] = {}


def register(manager: PackageManager) -> PackageManager | None:
    """Make ``manager`` the implementation of its family; returns the one it replaces."""
    with _lock:
        previous = _by_family.get(manager.family)
        _by_family[manager.family] = manager
        return previous


@contextmanager
def registered(manager: PackageManager) -> Iterator[PackageManager]:
    """Register ``manager`` for the duration of a ``with`` block (tests), then restore."""
    previous = register(manager)
    try:
        yield manager
    finally:
        with _lock:
            if previous is None:
                _by_family.pop(manager.family, None)
            else:
                _by_family[manager.family] = previous


def _defaults() -> None:
    """Register the built-in implementations once (apt/dpkg for the Debian family)."""
    from patchpilot.tools.packages.apt import AptPackageManager

    with _lock:
        _by_family.setdefault(OSFamily.DEBIAN, AptPackageManager())


def for_family(family: OSFamily | str) -> PackageManager:
    """The package manager of an OS family.

    Raises:
        UnsupportedPlatformError: the family has none (rhel and alpine for now, unknown).
    """
    family = OSFamily(family)
    _defaults()
    with _lock:
        manager = _by_family.get(family)
    if manager is None:
        raise UnsupportedPlatformError(
            f"patchpilot has no package-manager support for the {family.value} family yet"
        )
    return manager


def for_ecosystem(ecosystem: Ecosystem | str) -> PackageManager:
    """The package manager of a package ecosystem (a plan item's ``ecosystem``).

    Raises:
        UnsupportedPlatformError: no registered family uses that ecosystem.
    """
    ecosystem = Ecosystem(ecosystem)
    _defaults()
    with _lock:
        found = [m for m in _by_family.values() if m.ecosystem is ecosystem]
    if not found:
        raise UnsupportedPlatformError(
            f"patchpilot has no package-manager support for {ecosystem.value} packages yet"
        )
    return found[0]


def manager_for_items(host: str, ecosystems: Iterable[Ecosystem]) -> PackageManager:
    """The one package manager of a host's plan items (all of one ecosystem).

    Raises:
        ConfigError: the items mix ecosystems.
        UnsupportedPlatformError: see :func:`for_ecosystem`.
    """
    found = set(ecosystems)
    if len(found) > 1:
        raise ConfigError(f"{host}: plan items of several ecosystems ({', '.join(sorted(found))})")
    return for_ecosystem(found.pop() if found else Ecosystem.DEBIAN)

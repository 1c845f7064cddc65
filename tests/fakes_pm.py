"""A second, fake package-manager family for hermetic tests of the per-OS-family seam.

:class:`RecordingPackageManager` implements
:class:`~patchpilot.tools.packages.base.PackageManager` for the Alpine family (``apk``
ecosystem) with an invented tool, ``fakepkg``: every method records its call and runs one
``fakepkg ...`` command on the transport (so a :class:`tests.fakes.ScriptedTransport` shows
exactly what went through the seam), answering from a small in-memory package database.
:func:`alpine_host` answers everything else discovery and deployment run on such a host
(os-release, uname, the apk database, the reboot flag, a health check).

Use it with :func:`patchpilot.tools.packages.registered`::

    with registered(RecordingPackageManager({"musl": "1.2.4-r2"})) as pm:
        outcome = discover_host(host, settings, pending=True, transport_factory=factory)
    assert pm.calls[0][0] == "inventory_facts"
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from patchpilot.core.models import (
    CommandResult,
    Ecosystem,
    HostFacts,
    InstalledPackage,
    OSFamily,
    PendingUpdate,
    UpdateOrigin,
)
from patchpilot.core.settings import DiscoverySettings
from patchpilot.core.validate import validate_package_name, validate_version
from patchpilot.core.versions import compare
from patchpilot.tools.facts.base import Fact
from patchpilot.tools.packages import (
    InstallResult,
    LockWaitResult,
    PackageChange,
    RepairResult,
    SimulationResult,
    TransactionSummary,
)
from patchpilot.tools.transport.base import Transport

__all__ = ["FAKE_TOOL", "HEALTH_ARGV", "RecordingPackageManager", "alpine_host"]

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "facts"
FAKE_TOOL = "fakepkg"
"""The only package-manager command the fake family runs."""
HEALTH_ARGV = ("fake-health",)
"""A health check command :func:`alpine_host` answers (fails while a broken version runs)."""


def _fixture(kind: str, name: str) -> tuple[int, str, str]:
    data = json.loads((FIXTURES / kind / name).read_text())
    return data["exit_code"], data["stdout"], data.get("stderr", "")


def _result(code: int = 0, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(host="", argv=("x",), exit_code=code, stdout=out, stderr=err)


class _HoldsFact(Fact[list[str]]):
    """The fake family's held packages (one ``fakepkg holds`` command)."""

    name = "FakeHolds"

    def command(self) -> list[str]:
        return [FAKE_TOOL, "holds"]

    def parse(self, result: CommandResult) -> list[str]:
        self.check_result(result)
        return result.stdout.split()


class RecordingPackageManager:
    """A fake Alpine-family package manager; records every call (thread-safe).

    Args:
        installed: the in-memory package database (name -> version).
        offered: name -> the candidate its repositories offer (pending updates).
        held: held package names.
        broken: versions whose installation makes :data:`HEALTH_ARGV` fail.
        fail_install: ``install_exact`` fails (post-state unchanged).
    """

    def __init__(
        self,
        installed: Mapping[str, str],
        *,
        offered: Mapping[str, str] | None = None,
        held: Iterable[str] = (),
        broken: Iterable[str] = (),
        fail_install: bool = False,
    ) -> None:
        self.installed = dict(installed)
        self.offered = dict(offered or {})
        self.held = tuple(held)
        self.broken = frozenset(broken)
        self.fail_install = fail_install
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self._lock = threading.Lock()

    # -- bookkeeping
    def _call(self, transport: Transport | None, method: str, *args: Any) -> None:
        with self._lock:
            self.calls.append((method, args))
        if transport is not None:
            transport.run([FAKE_TOOL, method, *(str(a) for a in args)])

    @property
    def methods(self) -> list[str]:
        """The names of the methods called, in order."""
        with self._lock:
            return [name for name, _ in self.calls]

    def healthy(self) -> bool:
        """Whether no broken version is installed."""
        with self._lock:
            return not (set(self.installed.values()) & self.broken)

    # -- PackageManager
    @property
    def family(self) -> OSFamily:
        return OSFamily.ALPINE

    @property
    def ecosystem(self) -> Ecosystem:
        return Ecosystem.ALPINE

    @property
    def tool(self) -> str:
        return FAKE_TOOL

    @property
    def database(self) -> str:
        return "fakedb"

    def validate_name(self, name: str) -> str:
        return validate_package_name(name, Ecosystem.ALPINE)

    def validate_version(self, version: str) -> str:
        return validate_version(version, Ecosystem.ALPINE)

    def compare(self, a: str, b: str) -> int:
        return compare(Ecosystem.ALPINE, a, b)

    def inventory_facts(self, options: DiscoverySettings) -> list[tuple[str, Fact[Any]]]:
        self._call(None, "inventory_facts")
        return [("held packages", _HoldsFact())]

    def facts_update(
        self, found: Mapping[str, Any], options: DiscoverySettings, warnings: list[str]
    ) -> dict[str, object]:
        self._call(None, "facts_update")
        held = found.get("held packages")
        if isinstance(held, Exception):
            warnings.append(f"held packages not collected: {held}")
            return {"held_packages": None}
        return {"held_packages": tuple(held or ())}

    def pending_updates(
        self,
        transport: Transport,
        facts: HostFacts,
        packages: Sequence[InstalledPackage],
        *,
        refresh: bool,
        warnings: list[str],
    ) -> list[PendingUpdate] | None:
        self._call(transport, "pending_updates", f"refresh={refresh}")
        return [
            PendingUpdate(
                name=name,
                installed_version=self.installed.get(name),
                candidate_version=version,
                origins=("fake-main",),
                security=True,
                origin=UpdateOrigin.SECURITY,
            )
            for name, version in sorted(self.offered.items())
        ]

    def available_versions(
        self, transport: Transport, names: Sequence[str]
    ) -> dict[str, list[str]]:
        self._call(transport, "available_versions", *names)
        return {n: [v for v in (self.installed.get(n), self.offered.get(n)) if v] for n in names}

    def holds(self, transport: Transport) -> list[str]:
        self._call(transport, "holds")
        return list(self.held)

    def installed_versions(
        self, transport: Transport, packages: Iterable[str]
    ) -> dict[str, str | None]:
        names = list(packages)
        self._call(transport, "installed_versions", *names)
        with self._lock:
            return {n: self.installed.get(n) for n in names}

    def simulate(
        self,
        transport: Transport,
        items: Sequence[tuple[str, str]],
        *,
        allow_downgrades: bool,
        only_upgrade: bool,
        details: bool = True,
    ) -> SimulationResult:
        self._call(transport, "simulate", *(f"{n}={v}" for n, v in items))
        changes = [
            PackageChange(name=n, from_version=self.installed.get(n), to_version=v)
            for n, v in items
        ]
        upgrades = [c for c in changes if c.from_version is not None]
        return SimulationResult(
            requested=tuple(f"{n}={v}" for n, v in items),
            upgrades=tuple(upgrades),
            held=tuple(n for n, _ in items if n in self.held),
            summary=TransactionSummary(
                upgraded=len(upgrades),
                newly_installed=len(changes) - len(upgrades),
                to_remove=0,
                not_upgraded=0,
            ),
            services={c.name: () for c in changes} if details else None,
            conffiles=() if details else None,
        )

    def _install(self, items: Sequence[tuple[str, str]], *, rollback: bool) -> InstallResult:
        names = [n for n, _ in items]
        with self._lock:
            before = {n: self.installed.get(n) for n in names}
            if not self.fail_install or rollback:
                self.installed.update(dict(items))
            after = {n: self.installed.get(n) for n in names}
        ok = all(after[n] == v for n, v in items)
        return InstallResult(
            host="",
            requested=tuple(f"{n}={v}" for n, v in items),
            changed=True,
            ok=ok,
            failure=None if ok else "apt-error",
            reason=None if ok else "fakepkg refused",
            before=before,
            after=after,
        )

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
        self._call(transport, "install_exact", *(f"{n}={v}" for n, v in items))
        return self._install(items, rollback=False).model_copy(update={"host": transport.name})

    def rollback(self, transport: Transport, versions: Sequence[tuple[str, str]]) -> InstallResult:
        self._call(transport, "rollback", *(f"{n}={v}" for n, v in versions))
        return self._install(versions, rollback=True).model_copy(update={"host": transport.name})

    def repair(self, transport: Transport) -> RepairResult:
        self._call(transport, "repair")
        return RepairResult(host=transport.name, needed=False, ok=True)

    def wait_for_lock(self, transport: Transport, timeout: int = 120) -> LockWaitResult:
        self._call(transport, "wait_for_lock", timeout)
        return LockWaitResult(host=transport.name, acquired=True, waited_s=0.0)


def alpine_host(pm: RecordingPackageManager) -> Callable[[tuple[str, ...]], CommandResult]:
    """A ``respond`` for :class:`tests.fakes.ScriptedTransport`: a recorded Alpine host
    (os-release, uname, apk database), the fake tool, the reboot flag, :data:`HEALTH_ARGV`;
    127 for anything else (an apt or dpkg command would fail loudly)."""

    def respond(argv: tuple[str, ...]) -> CommandResult:
        if argv[0] == FAKE_TOOL:
            return _result(0, " ".join(pm.held) if argv[1:] == ("holds",) else "")
        if argv[:2] == ("sh", "-c") and "os-release" in argv[2]:
            return _result(*_fixture("OsRelease", "alpine_3_19.json"))
        if argv == ("uname", "-r"):
            return _result(0, "6.6.14-0-lts\n")
        if argv[:1] == ("cat",) and argv[1].endswith("installed"):
            return _result(*_fixture("ApkPackages", "alpine320_x86_64.json"))
        if argv[:2] == ("sh", "-c"):  # the reboot flag
            return _result(0, "")
        if argv == HEALTH_ARGV:
            return _result(0, "OK") if pm.healthy() else _result(1, "", "HTTP 503")
        return _result(127, "", f"not scripted: {argv}")

    return respond

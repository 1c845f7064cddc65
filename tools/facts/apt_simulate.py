"""What installing exact package versions would do, before anything changes (compatibility testing).

Three read-only facts, combined by :func:`simulate_install`:

* :class:`AptSimulateInstall` runs ``apt-get -s -o Debug::NoLocking=1
  -o APT::Get::Show-Versions=1 install [--only-upgrade] [--allow-downgrades] -- PKG=VER ...``
  (no root, no lock, no change) and parses it into a :class:`SimulationResult`: upgrades, new
  installs, downgrades, reinstalls (``Inst`` lines), removals (``Remv``/``Purg`` lines), held
  packages apt would change, packages kept back, requested packages skipped because they are not
  installed (``--only-upgrade``), apt's summary counts and a reboot hint.
* :class:`PackageServices` lists the init scripts and systemd units each installed package ships
  (``dpkg-query -L``), i.e. the services an upgrade may restart.
* :class:`ModifiedConffiles` compares every conffile of the packages with the md5 dpkg recorded:
  a locally modified conffile is where dpkg would prompt if the new version changes it too.
  patchpilot always installs with ``--force-confold`` (the local file is kept), so this is a
  report, not a blocker.

Real apt 2.6 (Debian 12) wording, recorded on the lab
(``tests/fixtures/facts/AptSimulateInstall``)::

    The following held packages will be changed:
       acme-web (1.0.0 => 1.1.0)
    The following packages will be REMOVED:
       acme-plugin-legacy (1.0.0)
    Remv acme-plugin-legacy [1.0.0]
    Skipping acme-agent, it is not installed and only upgrades are requested.
    acme-web is already the newest version (1.0.0).
    E: Version '9.9' for 'acme-web' was not found                         (exit 100)

A simulation never fails on holds (that needs ``-y``): the real install then fails with
``E: Held packages were changed and -y was used without --allow-change-held-packages.``.

Reboot hint: apt cannot tell whether a package will ask for a reboot. Debian's only signal is
``/var/run/reboot-required`` written by maintainer scripts *after* the install
(:class:`~patchpilot.tools.facts.reboot.RebootRequired` reads it; Debian itself writes it rarely,
Ubuntu's
``update-notifier-common`` often). The hint is therefore a name rule over every package the
transaction touches: ``linux-image-*``, ``linux-headers-*`` (comes with a new kernel),
``libc6``, ``systemd``, ``dbus`` (and their ``:arch`` forms). After the install, the deployment
must still read ``RebootRequired``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, ClassVar, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from patchpilot.core import versions
from patchpilot.core.errors import FactParseError, InvalidVersionError, UnsafeArgumentError
from patchpilot.core.models import CommandResult, Ecosystem
from patchpilot.core.validate import validate_package_name, validate_version
from patchpilot.tools.facts.apt import APT_SUMMARY_RE, parse_inst_line
from patchpilot.tools.facts.base import Fact, gather, stderr_tail

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = [
    "REBOOT_NAMES",
    "REBOOT_PREFIXES",
    "AptSimulateInstall",
    "AptSummary",
    "ConffileStatus",
    "ModifiedConffiles",
    "PackageChange",
    "PackageRemoval",
    "PackageServices",
    "SimulationResult",
    "reboot_hint_packages",
    "simulate_install",
    "validate_items",
]

REBOOT_PREFIXES: Final = ("linux-image-", "linux-headers-")
"""Package-name prefixes whose change hints at a reboot (a new kernel)."""
REBOOT_NAMES: Final = frozenset({"libc6", "systemd", "dbus"})
"""Package names whose change hints at a reboot (every process maps them)."""

_REMV_RE: Final = re.compile(
    r"^(?P<op>Remv|Purg) (?P<name>[A-Za-z0-9][A-Za-z0-9+._:-]*)"
    r"(?: \[(?P<version>[^\]\s]+)\])?(?: \[[^\]]*\])*\s*$"
)
_SKIP_RE: Final = re.compile(
    r"^Skipping (?P<name>\S+), it is not installed and only upgrades are requested\.$"
)
_NEWEST_RE: Final = re.compile(
    r"^(?P<name>\S+) is already the newest version \((?P<ver>[^)]+)\)\.$"
)
_HELD_HEADER: Final = "The following held packages will be changed:"
_KEPT_HEADER: Final = "The following packages have been kept back:"
_MD5_RE: Final = re.compile(r"^[0-9a-f]{32}$")
_MD5SUM_LINE_RE: Final = re.compile(r"^\\?(?P<md5>[0-9a-f]{32}) [ *](?P<path>/.*)$")
_NOT_FOUND_RE: Final = re.compile(r"no packages found matching (?P<name>\S+)")
_ESCAPE_RE: Final = re.compile(r"\\(.)")
_CONFFILE_FLAGS: Final = frozenset({"obsolete", "remove-on-upgrade"})


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PackageChange(_Record):
    """One package an apt transaction installs (an ``Inst`` line)."""

    name: str
    arch: str = ""
    from_version: str | None = Field(description="installed version; None for a new install")
    to_version: str
    origins: tuple[str, ...] = ()


class PackageRemoval(_Record):
    """One package an apt transaction removes (a ``Remv`` or ``Purg`` line)."""

    name: str
    arch: str = ""
    version: str | None = Field(default=None, description="installed version, when printed")
    purge: bool = False


class AptSummary(_Record):
    """apt's ``N upgraded, N newly installed, [N reinstalled, ][N downgraded, ]N to remove and
    N not upgraded.`` line."""

    upgraded: int = Field(ge=0)
    newly_installed: int = Field(ge=0)
    reinstalled: int = Field(default=0, ge=0)
    downgraded: int = Field(default=0, ge=0)
    to_remove: int = Field(ge=0)
    not_upgraded: int = Field(ge=0)


class ConffileStatus(_Record):
    """One conffile of an installed package compared with the md5 dpkg recorded.

    ``state``: ``unchanged``, ``modified`` (a prompt is possible), ``missing`` (deleted
    locally; dpkg keeps it deleted), ``obsolete`` (no longer shipped) or ``new`` (the package is
    unpacked but not configured: dpkg has no md5 yet).
    """

    package: str
    path: str
    recorded_md5: str = Field(description="dpkg's md5, or 'newconffile' before configuration")
    current_md5: str | None = Field(description="None when the file is missing")
    state: Literal["unchanged", "modified", "missing", "obsolete", "new"]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def prompt_possible(self) -> bool:
        """dpkg would ask about this file if the new version changes it (we keep the local one)."""
        return self.state == "modified"


class SimulationResult(_Record):
    """What ``apt-get -s install PKG=VER ...`` says the transaction would do.

    ``services`` and ``conffiles`` are ``None`` when not looked up (the bare fact); see
    :func:`simulate_install`. In ``services`` a package maps to ``None`` when it is not
    installed yet (what a new package ships is unknown before it is unpacked).
    """

    requested: tuple[str, ...] = Field(description="the NAME=VERSION pins simulated")
    upgrades: tuple[PackageChange, ...] = ()
    installs: tuple[PackageChange, ...] = Field(default=(), description="new packages")
    downgrades: tuple[PackageChange, ...] = ()
    reinstalls: tuple[PackageChange, ...] = ()
    removals: tuple[PackageRemoval, ...] = ()
    held: tuple[str, ...] = Field(default=(), description="held packages apt would change")
    kept_back: tuple[str, ...] = ()
    skipped_not_installed: tuple[str, ...] = Field(
        default=(), description="requested but not installed, so --only-upgrade skipped them"
    )
    already_current: tuple[str, ...] = Field(
        default=(), description="requested packages already at the requested version"
    )
    summary: AptSummary
    reboot_packages: tuple[str, ...] = Field(
        default=(), description="touched packages matching the reboot name rule"
    )
    services: dict[str, tuple[str, ...] | None] | None = None
    conffiles: tuple[ConffileStatus, ...] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_removals(self) -> bool:
        """The transaction removes at least one package."""
        return bool(self.removals)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_held(self) -> bool:
        """The transaction changes a held package (the real install needs an explicit override)."""
        return bool(self.held)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def has_new_packages(self) -> bool:
        """The transaction installs packages that are not installed yet."""
        return bool(self.installs)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def reboot_hint(self) -> bool:
        """A touched package matches the reboot name rule (see the module docstring)."""
        return bool(self.reboot_packages)

    @property
    def changes(self) -> tuple[PackageChange, ...]:
        """Every package the transaction installs, in every direction."""
        return (*self.upgrades, *self.installs, *self.downgrades, *self.reinstalls)

    @property
    def restart_services(self) -> tuple[str, ...]:
        """Distinct services shipped by the changed packages (known ones only)."""
        found = (s for names in (self.services or {}).values() for s in names or ())
        return tuple(dict.fromkeys(found))

    @property
    def modified_conffiles(self) -> tuple[ConffileStatus, ...]:
        """Conffiles where a dpkg prompt is possible (kept by ``--force-confold``)."""
        return tuple(c for c in self.conffiles or () if c.prompt_possible)


def validate_items(items: Iterable[Sequence[str]]) -> tuple[tuple[str, str], ...]:
    """Validate ``(name, version)`` pairs (Debian rules); refuse an empty list or duplicates.

    Raises:
        UnsafeArgumentError: a name or version is refused, a pair is malformed, the list is
            empty or names a package twice.
    """
    clean: list[tuple[str, str]] = []
    for item in items:
        if isinstance(item, str) or len(item) != 2:
            raise UnsafeArgumentError("package item", repr(item), "expected (name, version)")
        name, version = item
        clean.append(
            (validate_package_name(name, Ecosystem.DEBIAN), validate_version(version, "debian"))
        )
    if not clean:
        raise UnsafeArgumentError("package list", "[]", "is empty")
    names = [name for name, _ in clean]
    if len(set(names)) != len(names):
        raise UnsafeArgumentError("package list", ", ".join(names), "names a package twice")
    return tuple(clean)


def _validate_names(packages: Iterable[str]) -> tuple[str, ...]:
    names = tuple(validate_package_name(p, Ecosystem.DEBIAN) for p in packages)
    if not names:
        raise UnsafeArgumentError("package list", "[]", "is empty")
    return tuple(dict.fromkeys(names))


def _base_name(name: str) -> str:
    return name.partition(":")[0]


def reboot_hint_packages(names: Iterable[str]) -> tuple[str, ...]:
    """The names matching :data:`REBOOT_PREFIXES` / :data:`REBOOT_NAMES` (``:arch`` ignored)."""
    hits = (
        n
        for n in names
        if _base_name(n) in REBOOT_NAMES or _base_name(n).startswith(REBOOT_PREFIXES)
    )
    return tuple(dict.fromkeys(hits))


def _section_names(lines: list[str], header: str) -> list[str]:
    """Names listed under ``header``: indented lines, ``NAME (VERSIONS)`` one per line with
    ``APT::Get::Show-Versions``, several bare names per line without it."""
    names: list[str] = []
    for index, line in enumerate(lines):
        if line != header:
            continue
        for entry in lines[index + 1 :]:
            if not entry.startswith(" "):
                break
            words = entry.split()
            if not words or words[0] == "|":
                continue
            names.extend(words[:1] if "(" in entry else words)
    return list(dict.fromkeys(names))


class AptSimulateInstall(Fact[SimulationResult]):
    """Simulate installing exact versions: ``apt-get -s ... install -- PKG=VER ...``.

    Args:
        items: ``(name, version)`` pairs, validated with :mod:`patchpilot.core.validate`.
        allow_downgrades: add ``--allow-downgrades`` (a rollback simulation).
        only_upgrade: add ``--only-upgrade`` (default): requested packages that are not
            installed are skipped (listed in ``skipped_not_installed``), never installed.
            Dependencies may still be installed new (``installs``).

    Returns:
        A :class:`SimulationResult` (``services``/``conffiles`` left ``None``).

    Raises:
        UnsafeArgumentError: (constructor) a name or version is refused.
        FactParseError: an ``Inst``/``Remv`` line does not parse, the summary line is missing,
            or the counts disagree with it.
        CommandFailedError: apt-get exited non-zero, e.g. ``E: Version '9.9' for 'acme-web'
            was not found`` or ``E: Unable to locate package`` (exit 100, stderr attached).
    """

    name: ClassVar[str] = "AptSimulateInstall"
    timeout: ClassVar[float | None] = 300.0

    def __init__(
        self,
        items: Iterable[Sequence[str]],
        *,
        allow_downgrades: bool = False,
        only_upgrade: bool = True,
    ) -> None:
        self.items = validate_items(items)
        self.allow_downgrades = allow_downgrades
        self.only_upgrade = only_upgrade

    def __repr__(self) -> str:
        return f"AptSimulateInstall({list(self.items)!r})"

    def command(self) -> list[str]:
        """Return the simulation argv; package pins come after ``--``."""
        argv = ["apt-get", "-s", "-o", "Debug::NoLocking=1", "-o", "APT::Get::Show-Versions=1"]
        argv.append("install")
        if self.only_upgrade:
            argv.append("--only-upgrade")
        if self.allow_downgrades:
            argv.append("--allow-downgrades")
        return [*argv, "--", *(f"{name}={version}" for name, version in self.items)]

    def parse(self, result: CommandResult) -> SimulationResult:
        """Parse the simulation; see the class docstring."""
        self.check_result(result)
        lines = [raw.removesuffix("\r") for raw in result.stdout.split("\n")]
        upgrades: list[PackageChange] = []
        installs: list[PackageChange] = []
        downgrades: list[PackageChange] = []
        reinstalls: list[PackageChange] = []
        removals: list[PackageRemoval] = []
        skipped: list[str] = []
        current: list[str] = []
        summary: re.Match[str] | None = None
        for line in lines:
            if line.startswith("Inst "):
                update = parse_inst_line(line, self.name)
                change = PackageChange(
                    name=update.name,
                    arch=update.arch,
                    from_version=update.installed_version,
                    to_version=update.candidate_version,
                    origins=update.origins,
                )
                self._classify(change, line, upgrades, installs, downgrades, reinstalls)
            elif line.startswith(("Remv ", "Purg ")):
                removals.append(self._removal(line))
            elif (found := APT_SUMMARY_RE.match(line)) is not None:
                if summary is not None:
                    raise FactParseError(self.name, "two summary lines", line=line)
                summary = found
            elif (skip := _SKIP_RE.match(line)) is not None:
                skipped.append(skip["name"])
            elif (newest := _NEWEST_RE.match(line)) is not None:
                current.append(newest["name"])
        if summary is None:
            raise FactParseError(
                self.name,
                "no 'N upgraded, N newly installed, ...' summary line" + stderr_tail(result),
            )
        counts = AptSummary(
            upgraded=int(summary["upgraded"]),
            newly_installed=int(summary["new"]),
            reinstalled=int(summary["reinstalled"] or 0),
            downgraded=int(summary["downgraded"] or 0),
            to_remove=int(summary["remove"]),
            not_upgraded=int(summary["kept"]),
        )
        self._cross_check(counts, upgrades, installs, downgrades, reinstalls, removals, summary[0])
        touched = [c.name for c in (*upgrades, *installs, *downgrades, *reinstalls)]
        return SimulationResult(
            requested=tuple(f"{n}={v}" for n, v in self.items),
            upgrades=tuple(upgrades),
            installs=tuple(installs),
            downgrades=tuple(downgrades),
            reinstalls=tuple(reinstalls),
            removals=tuple(removals),
            held=tuple(_section_names(lines, _HELD_HEADER)),
            kept_back=tuple(_section_names(lines, _KEPT_HEADER)),
            skipped_not_installed=tuple(dict.fromkeys(skipped)),
            already_current=tuple(dict.fromkeys(current)),
            summary=counts,
            reboot_packages=reboot_hint_packages([*touched, *(r.name for r in removals)]),
        )

    def _classify(
        self,
        change: PackageChange,
        line: str,
        upgrades: list[PackageChange],
        installs: list[PackageChange],
        downgrades: list[PackageChange],
        reinstalls: list[PackageChange],
    ) -> None:
        if change.from_version is None:
            installs.append(change)
            return
        try:
            order = versions.compare(Ecosystem.DEBIAN, change.to_version, change.from_version)
        except InvalidVersionError as exc:
            raise FactParseError(self.name, str(exc), line=line) from None
        {1: upgrades, 0: reinstalls, -1: downgrades}[order].append(change)

    def _removal(self, line: str) -> PackageRemoval:
        match = _REMV_RE.match(line)
        if match is None:
            raise FactParseError(self.name, "unrecognised Remv/Purg line", line=line)
        name, _, arch = match["name"].partition(":")
        return PackageRemoval(
            name=name, arch=arch, version=match["version"], purge=match["op"] == "Purg"
        )

    def _cross_check(
        self,
        counts: AptSummary,
        upgrades: list[PackageChange],
        installs: list[PackageChange],
        downgrades: list[PackageChange],
        reinstalls: list[PackageChange],
        removals: list[PackageRemoval],
        summary_line: str,
    ) -> None:
        pairs = (
            ("upgraded", counts.upgraded, len(upgrades)),
            ("newly installed", counts.newly_installed, len(installs)),
            ("downgraded", counts.downgraded, len(downgrades)),
            ("reinstalled", counts.reinstalled, len(reinstalls)),
            ("to remove", counts.to_remove, len(removals)),
        )
        for label, announced, found in pairs:
            if announced != found:
                raise FactParseError(
                    self.name,
                    f"summary announces {announced} {label} but {found} lines were found",
                    line=summary_line,
                )


# --------------------------------------------------------------------------- services

_SERVICES_SCRIPT: Final = (
    'for p in "$@"; do printf \'@@package %s\\n\' "$p"; '
    "dpkg-query -L -- \"$p\" 2>/dev/null || printf '@@not-installed\\n'; done"
)
_INIT_RE: Final = re.compile(r"^/etc/init\.d/(?P<name>[A-Za-z0-9@._-]+)$")
_UNIT_RE: Final = re.compile(
    r"^(?:/usr)?/lib/systemd/system/(?P<name>[A-Za-z0-9._-]+(?:@[A-Za-z0-9._-]+)?)\.service$"
)
_INIT_SKIP: Final = frozenset({"README", "skeleton", ".depend.boot", ".depend.start"})


class PackageServices(Fact[dict[str, list[str] | None]]):
    """Services each installed package ships: ``/etc/init.d/NAME`` and ``NAME.service`` units.

    Runs ``sh -c SCRIPT sh PKG...`` where the constant script loops over its arguments and
    prints ``@@package NAME`` then ``dpkg-query -L -- NAME`` (or ``@@not-installed``), so each
    listing is attributed to its package even when some are not installed (a plain
    ``dpkg-query -L A B`` only separates listings with blank lines). Units are read from
    ``/lib/systemd/system`` and ``/usr/lib/systemd/system``; template units (``foo@.service``)
    cannot be restarted by name and are skipped. An init script and a unit of the same name count
    once (``ssh`` ships both).

    Returns:
        ``{package: [service, ...]}`` in argument order; ``None`` for a package that is not
        installed (unknown until unpacked); ``[]`` for an installed package without services.

    Raises:
        UnsafeArgumentError: (constructor) a package name is refused.
        FactParseError: the output does not follow the markers.
    """

    name: ClassVar[str] = "PackageServices"

    def __init__(self, packages: Iterable[str]) -> None:
        self.packages = _validate_names(packages)

    def __repr__(self) -> str:
        return f"PackageServices({list(self.packages)!r})"

    def command(self) -> list[str]:
        """Return ``sh -c`` with the constant script; package names are positional arguments."""
        return ["sh", "-c", _SERVICES_SCRIPT, "sh", *self.packages]

    def parse(self, result: CommandResult) -> dict[str, list[str] | None]:
        """Group the listings by package; see the class docstring."""
        self.check_result(result)
        found: dict[str, list[str] | None] = {}
        current: str | None = None
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if line.startswith("@@package "):
                current = line.removeprefix("@@package ")
                if current in found:
                    raise FactParseError(self.name, "package listed twice", line=line)
                found[current] = []
            elif not line.strip():
                continue
            elif current is None:
                raise FactParseError(self.name, "output before the first @@package", line=line)
            elif line == "@@not-installed":
                found[current] = None
            elif (bucket := found[current]) is not None:
                service = self._service(line)
                if service is not None and service not in bucket:
                    bucket.append(service)
        if list(found) != list(self.packages):
            raise FactParseError(
                self.name,
                f"expected listings for {list(self.packages)}, got {list(found)}"
                + stderr_tail(result),
            )
        return found

    @staticmethod
    def _service(path: str) -> str | None:
        if (init := _INIT_RE.match(path)) is not None:
            name = init["name"]
            return None if name in _INIT_SKIP or name.startswith(".") else name
        if (unit := _UNIT_RE.match(path)) is not None:
            name = unit["name"]
            return None if name.endswith("@") else name
        return None


# --------------------------------------------------------------------------- conffiles

_CONFFILES_SCRIPT: Final = (
    "dpkg-query -W -f='${Package}\\t${Conffiles}\\n' -- \"$@\"; st=$?; "
    "printf '@@md5sum\\n'; "
    "dpkg-query -W -f='${Conffiles}\\n' -- \"$@\" 2>/dev/null | "
    'while read -r path sum rest; do case "$path" in /*) '
    'if [ -f "$path" ]; then md5sum -- "$path"; else printf \'@@missing %s\\n\' "$path"; fi;; '
    'esac; done; exit "$st"'
)


class ModifiedConffiles(Fact[list[ConffileStatus]]):
    """Every conffile of the packages, compared with the md5 dpkg recorded at install.

    Runs ``sh -c SCRIPT sh PKG...``: the constant script prints
    ``dpkg-query -W -f '${Package}\\t${Conffiles}\\n'`` for the packages, a ``@@md5sum`` marker,
    then ``md5sum`` of every conffile that exists (``@@missing PATH`` otherwise). Package names
    are positional arguments, never part of the script. ``dpkg-query`` exits 1 when a package is
    unknown (``no packages found matching NAME``): such packages simply have no conffile.

    ``${Conffiles}`` lines are `` PATH MD5 [obsolete] [remove-on-upgrade]``; the md5 is
    ``newconffile`` for a package unpacked but not configured yet. Conffile paths with spaces
    are not supported (the shell loop splits on them): such a file shows as ``missing``.

    Returns:
        One :class:`ConffileStatus` per conffile, in dpkg's order. ``modified`` means
        ``prompt_possible``: dpkg would ask if the new version changes the file too.

    Raises:
        UnsafeArgumentError: (constructor) a package name is refused.
        FactParseError: a conffile line or an md5sum line does not parse.
        CommandFailedError: dpkg-query exited with something other than 0 or 1.
    """

    name: ClassVar[str] = "ModifiedConffiles"
    ok_exit_codes: ClassVar[frozenset[int]] = frozenset({0, 1})

    def __init__(self, packages: Iterable[str]) -> None:
        self.packages = _validate_names(packages)

    def __repr__(self) -> str:
        return f"ModifiedConffiles({list(self.packages)!r})"

    def command(self) -> list[str]:
        """Return ``sh -c`` with the constant script; package names are positional arguments."""
        return ["sh", "-c", _CONFFILES_SCRIPT, "sh", *self.packages]

    def parse(self, result: CommandResult) -> list[ConffileStatus]:
        """Match recorded and current md5s; see the class docstring."""
        self.check_result(result)
        head, marker, tail = result.stdout.partition("@@md5sum\n")
        if not marker:
            raise FactParseError(self.name, "missing @@md5sum marker" + stderr_tail(result))
        if result.exit_code == 1 and not _NOT_FOUND_RE.search(result.stderr):
            raise FactParseError(self.name, "dpkg-query failed" + stderr_tail(result))
        recorded = self._recorded(head)
        current: dict[str, str | None] = {}
        for raw in tail.split("\n"):
            line = raw.removesuffix("\r")
            if not line:
                continue
            if line.startswith("@@missing "):
                current[line.removeprefix("@@missing ")] = None
                continue
            match = _MD5SUM_LINE_RE.match(line)
            if match is None:
                raise FactParseError(self.name, "unrecognised md5sum line", line=line)
            path = match["path"]
            if line.startswith("\\"):  # md5sum escapes a name with "\\" or a newline
                path = _ESCAPE_RE.sub(lambda m: "\n" if m[1] == "n" else m[1], path)
            current[path] = match["md5"]
        statuses: list[ConffileStatus] = []
        for package, path, md5, obsolete in recorded:
            now = current.get(path)
            if obsolete:
                state: Literal["unchanged", "modified", "missing", "obsolete", "new"] = "obsolete"
            elif now is None:
                state = "missing"
            elif md5 == "newconffile":
                state = "new"
            elif md5 == now:
                state = "unchanged"
            else:
                state = "modified"
            statuses.append(
                ConffileStatus(
                    package=package, path=path, recorded_md5=md5, current_md5=now, state=state
                )
            )
        return statuses

    def _recorded(self, head: str) -> list[tuple[str, str, str, bool]]:
        rows: list[tuple[str, str, str, bool]] = []
        package: str | None = None
        for raw in head.split("\n"):
            line = raw.removesuffix("\r")
            if not line.strip():
                continue
            if not line.startswith(" "):
                package, sep, line = line.partition("\t")
                if not sep:
                    raise FactParseError(self.name, "expected 'PACKAGE<TAB>CONFFILES'", line=raw)
                if not line.strip():
                    continue
            if package is None:
                raise FactParseError(self.name, "conffile before any package", line=raw)
            words = line.strip().split(" ")
            flags = set()
            while words and words[-1] in _CONFFILE_FLAGS:
                flags.add(words.pop())
            if len(words) < 2 or not words[0].startswith("/"):
                raise FactParseError(self.name, "expected ' PATH MD5 [flags]'", line=raw)
            md5 = words[-1]
            if not _MD5_RE.match(md5) and md5 != "newconffile":
                raise FactParseError(self.name, f"malformed md5 {md5!r}", line=raw)
            rows.append((package, " ".join(words[:-1]), md5, "obsolete" in flags))
        return rows


def simulate_install(
    transport: Transport,
    items: Iterable[Sequence[str]],
    *,
    allow_downgrades: bool = False,
    only_upgrade: bool = True,
    details: bool = True,
) -> SimulationResult:
    """Simulate an exact install and, with ``details``, add services and conffile checks.

    Three read-only commands at most: the simulation, :class:`PackageServices` for every
    package the transaction installs, and :class:`ModifiedConffiles` for those already
    installed (new packages have no local conffile yet).

    Args:
        transport: an open transport to the host.
        items: ``(name, version)`` pairs.
        allow_downgrades: simulate with ``--allow-downgrades`` (a rollback).
        only_upgrade: simulate with ``--only-upgrade``.
        details: also gather services and conffiles.

    Returns:
        The :class:`SimulationResult`, with ``services``/``conffiles`` filled when ``details``.

    Raises:
        UnsafeArgumentError: a name or version is refused.
        FactParseError: an output does not parse.
        CommandFailedError: apt-get failed (unknown version, broken dependencies...).
    """
    result = gather(
        transport,
        AptSimulateInstall(items, allow_downgrades=allow_downgrades, only_upgrade=only_upgrade),
    )
    if not details:
        return result
    changed = [c.name for c in result.changes]
    installed = [c.name for c in result.changes if c.from_version is not None]
    services: dict[str, tuple[str, ...] | None] = {}
    if installed:
        shipped: dict[str, list[str] | None] = gather(transport, PackageServices(installed))
        services.update({k: None if v is None else tuple(v) for k, v in shipped.items()})
    services.update({c.name: None for c in result.installs})
    services = {name: services.get(name) for name in changed}
    conffiles = gather(transport, ModifiedConffiles(installed)) if installed else []
    return result.model_copy(update={"services": services, "conffiles": tuple(conffiles)})

"""Domain models: hosts and their facts, packages, advisories, enrichment, findings and risk.

Records are frozen pydantic v2 models: once built they are facts about the world at a point in
time and are never mutated in place (make a copy with ``model_copy(update=...)``).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "CVSS",
    "EPSS",
    "Advisory",
    "AptSource",
    "ChangelogUrgency",
    "CommandResult",
    "DeletedLibraryUse",
    "Ecosystem",
    "Enrichment",
    "Exposure",
    "Finding",
    "FixState",
    "FixStatus",
    "Host",
    "HostFacts",
    "InstallState",
    "InstalledPackage",
    "JumpHost",
    "KEVEntry",
    "ListeningSocket",
    "LoadedPackages",
    "OSFamily",
    "OSInfo",
    "PendingUpdate",
    "ProcessPackages",
    "Provenance",
    "RiskAssessment",
    "RiskFactor",
    "SSVCOutcome",
    "Severity",
    "UpdateOrigin",
    "utcnow",
]

CVE_RE = re.compile(r"^CVE-\d{4}-\d{4,}$")


def utcnow() -> datetime:
    """Return the current time, timezone-aware in UTC."""
    return datetime.now(UTC)


class Record(BaseModel):
    """Base for immutable records: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------- enums


class Ecosystem(StrEnum):
    """Package ecosystems with exact version ordering (see :mod:`patchpilot.core.versions`)."""

    DEBIAN = "debian"
    RPM = "rpm"
    ALPINE = "alpine"
    PYPI = "pypi"


class OSFamily(StrEnum):
    """Operating-system families, which decide the package manager and its ecosystem."""

    DEBIAN = "debian"
    RHEL = "rhel"
    ALPINE = "alpine"
    UNKNOWN = "unknown"

    @property
    def ecosystem(self) -> Ecosystem | None:
        """The package ecosystem of this family, if it has one."""
        return {
            OSFamily.DEBIAN: Ecosystem.DEBIAN,
            OSFamily.RHEL: Ecosystem.RPM,
            OSFamily.ALPINE: Ecosystem.ALPINE,
        }.get(self)


class Exposure(StrEnum):
    """How reachable a host is; feeds the risk score."""

    INTERNET = "internet"
    INTERNAL = "internal"
    ISOLATED = "isolated"


class InstallState(StrEnum):
    """Package install state. Only ``installed`` rows are kept in an inventory."""

    INSTALLED = "installed"
    HALF_CONFIGURED = "half-configured"
    UNPACKED = "unpacked"
    CONFIG_FILES = "config-files"


class UpdateOrigin(StrEnum):
    """Where a pending update comes from, classified from the host's apt sources."""

    SECURITY = "security"
    """A ``-security`` suite of the distribution (``Debian-Security``, ``jammy-security``)."""
    POINT_RELEASE = "point-release"
    """The distribution's own release or ``-updates`` suite (point releases, stable updates)."""
    THIRD_PARTY = "third-party"
    """A network repository that is not the distribution's (a vendor, a PPA, Docker, ...)."""
    LOCAL = "local"
    """A repository on the host's file system (``file:``, ``copy:``, ``cdrom:``)."""
    UNKNOWN = "unknown"
    """Not classified (no source information)."""


class Severity(StrEnum):
    """Normalised severity / distro urgency. ``unknown`` is never treated as low."""

    UNKNOWN = "unknown"
    UNIMPORTANT = "unimportant"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Ordering rank; ``unknown`` ranks lowest only for sorting, not for risk."""
        return list(Severity).index(self)


class ChangelogUrgency(StrEnum):
    """A Debian changelog entry's ``urgency=`` (Debian policy 5.6.17), lowest first."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    EMERGENCY = "emergency"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Ordering rank (``low`` 0 ... ``critical`` 4)."""
        return list(ChangelogUrgency).index(self)


class FixStatus(StrEnum):
    """Distinct fix states. Only ``fixed`` (and reachable) is actionable."""

    FIXED = "fixed"
    NO_FIX_YET = "no-fix-yet"
    WILL_NOT_FIX = "will-not-fix"
    DEFERRED = "deferred"
    END_OF_LIFE = "end-of-life"
    NOT_AFFECTED = "not-affected"
    UNIMPORTANT = "unimportant"
    HELD = "held"
    """A finding's state, never an advisory's: a fixed version exists, but the host holds the
    package (``apt-mark hold``); the exposure stays visible, not actionable until released."""


class SSVCOutcome(StrEnum):
    """CISA SSVC deployer decisions."""

    TRACK = "track"
    TRACK_STAR = "track*"
    ATTEND = "attend"
    ACT = "act"


# --------------------------------------------------------------------------- hosts


class JumpHost(Record):
    """One SSH bastion ("jump host") on the way to a :class:`Host`, as OpenSSH's ProxyJump.

    The address, port and user are checked as the transport checks a host's (DNS name or IP
    address, 1-65535, a POSIX user name), so a hostile value never reaches paramiko.
    """

    name: str = Field(description="the jump host as written (an ssh_config alias or address)")
    address: str = Field(description="where to connect (ssh_config HostName, else the name)")
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = Field(default=None, description="login user (default: ssh.default_user)")
    key_file: str | None = Field(default=None, description="private key for this jump host")

    @field_validator("name", "address")
    @classmethod
    def _check_address(cls, value: str) -> str:
        from patchpilot.core.validate import validate_hostname  # it imports this module

        return validate_hostname(value)

    @field_validator("user")
    @classmethod
    def _check_user(cls, value: str | None) -> str | None:
        from patchpilot.core.validate import validate_user  # it imports this module

        return None if value is None else validate_user(value)

    @property
    def spec(self) -> str:
        """``[user@]address[:port]``, for messages."""
        address = f"[{self.address}]" if ":" in self.address else self.address
        user = f"{self.user}@" if self.user else ""
        return f"{user}{address}" + (f":{self.port}" if self.port != 22 else "")


class Host(Record):
    """One inventory host (from patchpilot YAML or an Ansible inventory)."""

    name: str
    address: str
    port: int = Field(default=22, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = Field(
        default=None, description="extra known_hosts file with this host's keys"
    )
    jump: tuple[JumpHost, ...] = Field(
        default=(),
        max_length=8,
        description="SSH bastions to go through, first to last (ProxyJump); empty: direct",
    )
    become: bool = Field(
        default=True,
        description="privileged commands may run through `sudo -n` (Ansible ansible_become); "
        "false: they are refused unless the login user is root",
    )
    become_user: str = Field(
        default="root",
        pattern=r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$",
        description="ansible_become_user; privileged commands are refused unless it is root",
    )
    transport: Literal["ssh", "local"] = "ssh"
    tags: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    criticality: int = Field(default=3, ge=1, le=5)
    exposure: Exposure = Exposure.INTERNAL
    owner: str | None = None


class OSInfo(Record):
    """Parsed ``/etc/os-release``."""

    id: str
    id_like: tuple[str, ...] = ()
    name: str = ""
    pretty_name: str = ""
    version_id: str | None = None
    version_codename: str | None = None
    family: OSFamily = OSFamily.UNKNOWN

    @property
    def release(self) -> str | None:
        """Release key used to scope advisories (codename for Debian-likes, else version)."""
        if self.family is OSFamily.DEBIAN and self.version_codename:
            return self.version_codename
        if self.family is OSFamily.ALPINE and self.version_id:
            # Advisories are per branch (v3.19), not per point release.
            parts = self.version_id.split(".")
            return "v" + ".".join(parts[:2])
        return self.version_id


class InstalledPackage(Record):
    """An installed binary package with its source package (what advisories key on)."""

    name: str
    version: str
    arch: str = ""
    source_name: str
    source_version: str
    state: InstallState = InstallState.INSTALLED
    ecosystem: Ecosystem
    epoch: int | None = None
    module: str | None = Field(
        default=None, description="RPM modularity label (name:stream:version:context)"
    )


class AptSource(Record):
    """One package index apt reads, as ``apt-cache policy`` (no arguments) prints it.

    Example: ``500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages``
    with ``release v=12,o=Debian,a=oldstable-security,n=bookworm-security,l=Debian-Security,
    c=main,b=amd64`` and ``origin deb.debian.org``.
    """

    priority: int
    uri: str = Field(description="repository URI, e.g. 'http://deb.debian.org/debian-security'")
    dist: str = Field(description="distribution (suite) path as printed, e.g. 'bookworm-security'")
    component: str | None = Field(default=None, description="'main'; None for flat repositories")
    arch: str | None = None
    origin: str | None = Field(default=None, description="Release 'o=' (Origin)")
    label: str | None = Field(default=None, description="Release 'l=' (Label)")
    archive: str | None = Field(default=None, description="Release 'a=' (Suite/Archive)")
    codename: str | None = Field(default=None, description="Release 'n=' (Codename)")
    version: str | None = Field(default=None, description="Release 'v='")
    site: str | None = Field(default=None, description="the 'origin SITE' line (host name)")
    kind: UpdateOrigin = UpdateOrigin.UNKNOWN


class DeletedLibraryUse(Record):
    """A process still mapping a deleted (replaced) library: it needs a restart."""

    pid: int = Field(ge=1)
    command: str = Field(description="process name (comm) or needrestart's executable")
    libraries: tuple[str, ...] = Field(default=(), description="deleted files it maps")
    service: str | None = Field(default=None, description="service to restart, when known")


class ListeningSocket(Record):
    """A socket listening for connections (TCP) or bound for datagrams (UDP)."""

    protocol: Literal["tcp", "udp"]
    address: str = Field(description="bound address, '0.0.0.0' / '::' for all")
    port: int = Field(ge=0, le=65535)
    process: str | None = Field(default=None, description="owning process name, when visible")
    pid: int | None = None


class ProcessPackages(Record):
    """A listening process and the installed packages owning a file it maps executable."""

    pid: int = Field(ge=1)
    command: str = Field(description="process name (comm)")
    packages: tuple[str, ...] = Field(
        default=(), description="binary package names (no :arch), sorted"
    )


class LoadedPackages(Record):
    """Which installed packages running processes have loaded (``/proc/PID/maps`` joined with
    dpkg's file lists): the listening processes one by one, and every process together."""

    listening: tuple[ProcessPackages, ...] = Field(
        default=(), description="one entry per listening process (pid) that could be read"
    )
    running: tuple[str, ...] = Field(
        default=(), description="packages any running process maps (libraries, executables)"
    )


class HostFacts(Record):
    """What discovery learned about one host at one time.

    The optional collections are ``None`` when not collected (unsupported or failed; discovery
    says why in its warnings) and empty when collected and empty.
    """

    host: str
    os: OSInfo
    kernel: str
    reboot_required: bool
    reboot_required_pkgs: tuple[str, ...] = ()
    package_count: int = Field(ge=0)
    source_package_count: int = Field(ge=0)
    ecosystem: Ecosystem | None = None
    collected_at: datetime = Field(default_factory=utcnow)
    held_packages: tuple[str, ...] | None = Field(
        default=None, description="packages on hold (apt-mark showhold)"
    )
    deleted_library_users: tuple[DeletedLibraryUse, ...] | None = Field(
        default=None, description="processes still using deleted libraries (need a restart)"
    )
    services_needing_restart: tuple[str, ...] | None = Field(
        default=None, description="services needrestart says to restart (None without it)"
    )
    listening: tuple[ListeningSocket, ...] | None = None
    apt_sources: tuple[AptSource, ...] | None = Field(
        default=None, description="apt's configured package indexes and their origins"
    )
    loaded_packages: LoadedPackages | None = Field(
        default=None,
        description="packages whose code running and listening processes have loaded "
        "(None when not collected)",
    )


class PendingUpdate(Record):
    """An upgrade the host's own package manager offers (from ``apt-get -s dist-upgrade``)."""

    name: str = Field(description="binary package name")
    arch: str = ""
    installed_version: str | None = Field(description="None when the upgrade installs it new")
    candidate_version: str
    origins: tuple[str, ...] = Field(
        default=(),
        description="apt origin/suite labels, e.g. 'Debian-Security:12/oldstable-security'",
    )
    security: bool = Field(description="offered by a -security suite")
    origin: UpdateOrigin = Field(
        default=UpdateOrigin.UNKNOWN,
        description="where the candidate comes from (classified from the host's apt sources)",
    )
    source_name: str | None = Field(default=None, description="source package, when known")
    cves: tuple[str, ...] = Field(
        default=(), description="CVEs the candidate fixes since the installed version"
    )
    cves_from: Literal["changelog"] | None = Field(
        default=None, description="where the CVEs were read; None = not looked up"
    )
    urgency: ChangelogUrgency | None = Field(
        default=None,
        description="the highest changelog urgency= between the installed and the candidate "
        "version; None = not read (or no entry states one)",
    )
    held: bool = Field(
        default=False,
        description="the host holds the package: its package manager offers the candidate but "
        "will not install it until the hold is released",
    )


class CommandResult(Record):
    """The outcome of one command on one host."""

    host: str
    argv: tuple[str, ...]
    exit_code: int
    stdout: str
    stderr: str
    truncated: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the command exited 0."""
        return self.exit_code == 0


# --------------------------------------------------------------------------- advisories


class Provenance(Record):
    """Where a record came from: feed, exact source and when it was fetched or imported."""

    feed: str
    source: str = Field(description="URL or file path the record was read from")
    record_id: str | None = None
    fetched_at: datetime | None = None
    confidence: Literal["exact", "repository-metadata", "heuristic"] = "exact"


class FixState(Record):
    """A fix state; ``version`` is required for ``fixed`` and forbidden otherwise."""

    status: FixStatus
    version: str | None = None
    vendor_state: str | None = Field(default=None, description="the feed's raw wording")

    @model_validator(mode="after")
    def _version_matches_status(self) -> Self:
        versioned = self.status in (FixStatus.FIXED, FixStatus.HELD)
        if versioned and not self.version:
            raise ValueError(f"a {self.status.value!r} state needs the fixed version")
        if not versioned and self.version:
            raise ValueError(f"a {self.status.value!r} state has no fixed version")
        return self

    @classmethod
    def fixed(cls, version: str, vendor_state: str | None = None) -> FixState:
        """Build a ``fixed(version)`` state."""
        return cls(status=FixStatus.FIXED, version=version, vendor_state=vendor_state)

    def held(self) -> FixState:
        """This ``fixed`` state as ``held``: the same fixed version, blocked by a hold."""
        if self.status is not FixStatus.FIXED:
            return self
        return FixState(status=FixStatus.HELD, version=self.version, vendor_state=self.vendor_state)


class Advisory(Record):
    """One advisory's statement about one source package in one ecosystem release."""

    id: str
    aliases: tuple[str, ...] = Field(default=(), description="CVE ids and other aliases")
    ecosystem: Ecosystem
    release: str | None = None
    source_package: str
    fix: FixState
    severity: Severity = Severity.UNKNOWN
    published: datetime | None = None
    summary: str | None = Field(default=None, description="untrusted feed text; data only")
    feed: str
    provenance: Provenance

    @model_validator(mode="after")
    def _not_held(self) -> Self:
        if self.fix.status is FixStatus.HELD:
            raise ValueError("'held' is a host's state of a finding, never an advisory's")
        return self

    @property
    def cves(self) -> tuple[str, ...]:
        """The CVE ids among the id and aliases."""
        ids = (self.id, *self.aliases)
        return tuple(dict.fromkeys(i for i in ids if CVE_RE.match(i)))


class CVSS(Record):
    """A CVSS base score with its vector."""

    version: Literal["3.0", "3.1", "4.0"]
    vector: str
    base_score: float = Field(ge=0.0, le=10.0)
    source: str | None = None


class EPSS(Record):
    """FIRST EPSS probability of exploitation in the next 30 days."""

    probability: float = Field(ge=0.0, le=1.0)
    percentile: float = Field(ge=0.0, le=1.0)
    score_date: date


class KEVEntry(Record):
    """A CISA Known Exploited Vulnerabilities catalog entry."""

    date_added: date
    due_date: date
    known_ransomware_use: bool | None = Field(
        default=None, description="None when CISA says 'Unknown'"
    )


class Enrichment(Record):
    """Everything known about a CVE beyond the distro advisory."""

    cve: str
    cvss: tuple[CVSS, ...] = ()
    epss: EPSS | None = None
    kev: KEVEntry | None = None

    @field_validator("cve")
    @classmethod
    def _cve_id(cls, value: str) -> str:
        if not CVE_RE.match(value):
            raise ValueError(f"not a CVE id: {value!r}")
        return value

    @property
    def best_cvss(self) -> CVSS | None:
        """The newest CVSS version available (4.0 over 3.1 over 3.0)."""
        return max(self.cvss, key=lambda c: c.version, default=None)


# --------------------------------------------------------------------------- findings


class Finding(Record):
    """A host is exposed to an advisory through a source package it has installed."""

    host: str
    source_package: str
    binary_packages: tuple[str, ...]
    installed_source_version: str
    advisory_id: str
    cves: tuple[str, ...] = ()
    fix: FixState
    fix_reachable: bool | None = Field(
        default=None, description="the fixed version is offered by the host's repositories"
    )
    severity: Severity = Severity.UNKNOWN
    first_seen: datetime = Field(default_factory=utcnow)
    provenance: tuple[Provenance, ...] = ()

    @property
    def fixed_version(self) -> str | None:
        """The version that fixes this finding, if any."""
        return self.fix.version

    @property
    def actionable(self) -> bool:
        """Only a fix that exists and that the host can reach is actionable."""
        return self.fix.status is FixStatus.FIXED and self.fix_reachable is True


class RiskFactor(Record):
    """One factor of a risk score; ``known`` is False when the data is missing (not zero)."""

    name: str
    value: str
    known: bool
    weight: float = Field(ge=0.0)
    contribution: float


class RiskAssessment(Record):
    """A finding's score (0-100), its factors, SSVC outcome, due date and rationale."""

    finding_key: str
    score: Annotated[float, Field(ge=0.0, le=100.0)]
    factors: tuple[RiskFactor, ...]
    ssvc: SSVCOutcome
    due_date: date | None
    rationale: str

"""Assessment: which advisories affect a host, decided deterministically from its inventory.

Pure functions: the caller passes the host's facts, its installed packages, the advisories
(already scoped to the host's ecosystem and release) and optionally its pending updates; no
store, network or clock is read except ``now`` when it is not given.

Rules (see ``design/research/vulnerability-scanners.md`` sections 1.2, 1.3 and (b)):

* **Source packages.** Binaries are grouped by ``(source_name, source_version)`` and matched on
  the *source* package with the *source* version (``${source:Version}``), never on a binary's
  version: a binNMU ``bash 5.2.15-2+b8`` is source ``5.2.15-2``, and ``libldb2
  2:2.6.2+samba4.17.12+dfsg-0+deb12u1`` is source ``samba 2:4.17.12+dfsg-0+deb12u1``.
* **Fix states.** ``fixed(v)``: affected iff installed source version < ``v``
  (:func:`patchpilot.core.versions.compare` in the host's ecosystem). ``no-fix-yet``, ``deferred``,
  ``will-not-fix`` and ``end-of-life``: a visible, non-actionable finding. ``not-affected``
  and ``unimportant``: no finding, counted.
* **Kernel.** Only the running kernel counts (Vuls' rule). A kernel source package
  (:func:`is_kernel_source`) is kept only when one of its binaries belongs to the running
  release (``linux-image-<uname -r>``, headers or modules of that release, see
  :func:`running_kernel_binaries`); every other installed kernel source is pruned (counted, no
  finding). The kept source is renamed to its canonical name (``linux-signed-amd64`` ->
  ``linux``) and its version is the running image binary's version, which equals the ``linux``
  source version (the signed template's own source version ``6.1.76+1`` does not).
* **Unknown is not safe.** A version that does not parse never means "not vulnerable": the
  (source package, reason) pair goes to :attr:`AssessmentResult.errors`.
* **Fix reachability** (:func:`fix_reachable`): whether the host's own repositories already
  offer the fix, from ``apt-get -s dist-upgrade``
  (:class:`patchpilot.tools.facts.AptPendingUpdates`).

Verdicts are cached per (ecosystem, release, source package, installed source version) in a
:class:`VerdictCache`, so a fleet sharing versions compares each pair once.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from functools import lru_cache
from itertools import compress, repeat
from operator import attrgetter, eq, is_, is_not, itemgetter
from typing import Any, Final, TypeAlias

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core import versions
from patchpilot.core.errors import InvalidVersionError, PatchpilotError
from patchpilot.core.logging import debug_enabled
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    Finding,
    FixState,
    FixStatus,
    HostFacts,
    InstalledPackage,
    PendingUpdate,
    Provenance,
    Severity,
    utcnow,
)
from patchpilot.tools.facts.apt import is_security_origin

__all__ = [
    "AdvisorySource",
    "AssessmentCounters",
    "AssessmentResult",
    "VerdictCache",
    "assess_host",
    "canonical_kernel_source",
    "findings_from_pending",
    "fix_reachable",
    "is_kernel_source",
    "kernel_image_updates",
    "pending_advisory_id",
    "running_kernel_binaries",
]

log = structlog.get_logger(__name__)

AdvisorySource: TypeAlias = Mapping[str, Sequence[Advisory]] | Callable[[str], Sequence[Advisory]]
"""Advisories for one source package, already scoped to the host's ecosystem and release."""

FirstSeen: TypeAlias = Mapping[tuple[str, str], datetime]
"""When each (source package, advisory id) was first seen on the host."""

UNFIXED_STATES: Final = frozenset(
    {FixStatus.NO_FIX_YET, FixStatus.DEFERRED, FixStatus.WILL_NOT_FIX, FixStatus.END_OF_LIFE}
)
"""States that are findings without a fix (visible, never actionable)."""

_BINNMU_RE: Final = re.compile(r"^\+b\d+$")
_FLOAT_RE: Final = re.compile(r"^\d+(?:\.\d+)?$")


# --------------------------------------------------------------------------- results


class AssessmentCounters(BaseModel):
    """What an assessment looked at, beyond its findings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source_packages: int = Field(default=0, ge=0, description="source packages checked")
    advisories_considered: int = Field(default=0, ge=0)
    already_fixed: int = Field(
        default=0, ge=0, description="fixed advisories whose fix is installed"
    )
    not_affected: int = Field(default=0, ge=0, description="not-affected + unimportant states")
    unimportant: int = Field(default=0, ge=0, description="of which 'unimportant'")
    out_of_scope: int = Field(
        default=0, ge=0, description="advisories for another ecosystem/release, ignored"
    )
    pruned_kernels: int = Field(
        default=0, ge=0, description="installed kernel source packages that are not running"
    )


class AssessmentResult(BaseModel):
    """The findings of one host, the data errors that blocked a verdict, and counters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    findings: tuple[Finding, ...] = ()
    errors: tuple[tuple[str, str], ...] = Field(
        default=(), description="(source package, reason): no verdict could be reached"
    )
    counters: AssessmentCounters = Field(default_factory=AssessmentCounters)
    running_kernel: tuple[str, str] | None = Field(
        default=None,
        description="(source package, version) assessed as the running kernel; None when no "
        "installed package provides the running kernel (kernel advisories not assessed)",
    )


# --------------------------------------------------------------------------- verdict cache


class _Kind(Enum):
    AFFECTED = "affected"
    UNFIXED = "unfixed"
    ALREADY_FIXED = "already-fixed"
    NOT_AFFECTED = "not-affected"
    UNIMPORTANT = "unimportant"
    OUT_OF_SCOPE = "out-of-scope"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class _Verdict:
    advisory: Advisory
    kind: _Kind
    reason: str = ""
    cves: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class _Template:
    """A finding-producing verdict with everything of its finding that no host changes."""

    advisory: Advisory
    cves: tuple[str, ...]
    affected: bool  # fixed and not installed: fix reachability is computed per host
    fixed_version: str
    # Validated (source_package, installed_source_version, advisory_id, cves, fix, severity,
    # provenance) of a prototype finding, or None when it does not validate (every host then
    # builds, and fails to build, its finding the slow way).
    values: tuple[Any, ...] | None


@dataclass(frozen=True, slots=True)
class _SourceEntry:
    advisories: Sequence[Advisory]  # held so identity checks stay valid (no id reuse)
    count: int
    verdicts: tuple[_Verdict, ...]
    # Per-source totals of the verdicts, so a host adds them up without walking verdicts:
    # (considered, already_fixed, not_affected, unimportant, out_of_scope).
    counts: tuple[int, int, int, int, int]
    errors: tuple[tuple[str, str], ...]  # (source, reason), in verdict order
    templates: tuple[_Template, ...]  # in verdict order
    flagged: bool  # errors or templates


_SourceKey: TypeAlias = tuple[str, str]
_Scope: TypeAlias = dict[_SourceKey, _SourceEntry]
"""Entries of one (ecosystem, release) by (source name, installed source version)."""


class VerdictCache:
    """Memo of version comparisons and per-source verdicts, shared across hosts.

    Two levels, both always correct:

    * ``(ecosystem, a, b) -> compare(a, b)`` (or the error), pure;
    * ``(ecosystem, release, source, installed version) -> verdicts``, reused only when the
      advisories passed for that source are the *same sequence object* (identity and length),
      as with a ``Mapping`` built once per feed snapshot. Callers that rebuild sequences on
      every lookup still benefit from the first level. Do not mutate a sequence after passing
      it; build new ones (or :meth:`clear`) when feeds change.

    The cache is cleared wholesale when it grows beyond ``max_entries`` (bounded memory). It may
    be shared between threads: a race only recomputes an entry.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        """Create an empty cache.

        Args:
            max_entries: entries per level before that level is cleared.
        """
        self.max_entries = max_entries
        self._compare: dict[tuple[str, str, str], int | tuple[str, str]] = {}
        self._scopes: dict[tuple[str, str | None], _Scope] = {}
        self._entries = 0  # source entries in all scopes
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        """Forget everything (call when advisory data changes in place)."""
        self._compare.clear()
        self._scopes.clear()
        self._entries = 0

    def __len__(self) -> int:
        sources = sum(len(scope) for scope in list(self._scopes.values()))
        return len(self._compare) + sources

    def compare(self, ecosystem: Ecosystem, a: str, b: str) -> int:
        """Cached :func:`patchpilot.core.versions.compare`.

        Raises:
            InvalidVersionError: either version is invalid (the failure is cached too).
        """
        cached = self._lookup_compare(ecosystem, a, b)
        if isinstance(cached, tuple):
            version, reason = cached
            raise InvalidVersionError(ecosystem.value, version, reason)
        return cached

    def _lookup_compare(self, ecosystem: Ecosystem, a: str, b: str) -> int | tuple[str, str]:
        """``compare(a, b)``, or ``(invalid version, reason)`` when one does not parse."""
        key = (ecosystem.value, a, b)
        cached = self._compare.get(key)
        if cached is None:
            try:
                cached = versions.compare(ecosystem, a, b)
            except InvalidVersionError as exc:
                prefix = f"invalid {exc.ecosystem} version {exc.version!r}: "
                message = str(exc)
                cached = (exc.version, message.removeprefix(prefix))
            if len(self._compare) >= self.max_entries:
                self._compare.clear()
            self._compare[key] = cached
        return cached

    def _scope(self, ecosystem: Ecosystem, release: str | None) -> _Scope:
        """The entries of one (ecosystem, release), created on first use."""
        key = (ecosystem.value, release)
        scope = self._scopes.get(key)
        if scope is None:
            scope = self._scopes.setdefault(key, {})
        return scope

    def verdicts(
        self,
        ecosystem: Ecosystem,
        release: str | None,
        source: str,
        installed: str,
        advisories: Sequence[Advisory],
    ) -> tuple[_Verdict, ...]:
        """The verdict of every advisory of ``source`` for an installed source version."""
        scope = self._scope(ecosystem, release)
        entry = scope.get((source, installed))
        if entry is not None and entry.advisories is advisories and entry.count == len(advisories):
            self.hits += 1
            return entry.verdicts
        self.misses += 1
        return self._store(scope, ecosystem, release, source, installed, advisories).verdicts

    def _store(
        self,
        scope: _Scope,
        ecosystem: Ecosystem,
        release: str | None,
        source: str,
        installed: str,
        advisories: Sequence[Advisory],
    ) -> _SourceEntry:
        """Decide every advisory of ``source`` at ``installed`` and remember the entry."""
        verdicts = tuple(
            _verdict(self, ecosystem, release, installed, advisory) for advisory in advisories
        )
        entry = _source_entry(source, installed, advisories, verdicts)
        if self._entries >= self.max_entries:
            for each in list(self._scopes.values()):
                each.clear()
            self._entries = 0
        key = (source, installed)
        if key not in scope:
            self._entries += 1
        scope[key] = entry
        return entry


_FINDING_FIELDS: Final = frozenset(Finding.model_fields)
_new_model: Final = object.__new__
_set_attr: Final = object.__setattr__
_PROTOTYPE_TIME: Final = datetime(1970, 1, 1, tzinfo=UTC)


def _template(source: str, installed: str, verdict: _Verdict) -> _Template:
    advisory = verdict.advisory
    values: tuple[Any, ...] | None
    try:
        # Validate once what every host's finding of this verdict shares (the fields are
        # validated independently: the host's own fields cannot change these).
        proto = Finding(
            host="",
            source_package=source,
            binary_packages=(),
            installed_source_version=installed,
            advisory_id=advisory.id,
            cves=verdict.cves,
            fix=advisory.fix,
            fix_reachable=None,
            severity=advisory.severity,
            first_seen=_PROTOTYPE_TIME,
            provenance=(advisory.provenance,),
        )
        values = (
            proto.source_package,
            proto.installed_source_version,
            proto.advisory_id,
            proto.cves,
            proto.fix,
            proto.severity,
            proto.provenance,
        )
    except Exception:  # any failure: every host takes the validating path
        values = None
    return _Template(
        advisory=advisory,
        cves=verdict.cves,
        affected=verdict.kind is _Kind.AFFECTED,
        fixed_version=advisory.fix.version or "",
        values=values,
    )


def _source_entry(
    source: str, installed: str, advisories: Sequence[Advisory], verdicts: tuple[_Verdict, ...]
) -> _SourceEntry:
    considered = already_fixed = not_affected = unimportant = out_of_scope = 0
    errors: list[tuple[str, str]] = []
    templates: list[_Template] = []
    for verdict in verdicts:
        kind = verdict.kind
        if kind is _Kind.OUT_OF_SCOPE:
            out_of_scope += 1
            continue
        considered += 1
        if kind is _Kind.ALREADY_FIXED:
            already_fixed += 1
        elif kind is _Kind.NOT_AFFECTED or kind is _Kind.UNIMPORTANT:
            not_affected += 1
            unimportant += kind is _Kind.UNIMPORTANT
        elif kind is _Kind.ERROR:
            errors.append((source, verdict.reason))
        else:
            templates.append(_template(source, installed, verdict))
    return _SourceEntry(
        advisories=advisories,
        count=len(advisories),
        verdicts=verdicts,
        counts=(considered, already_fixed, not_affected, unimportant, out_of_scope),
        errors=tuple(errors),
        templates=tuple(templates),
        flagged=bool(errors or templates),
    )


def _new_finding(
    host: str,
    binary_names: tuple[str, ...],
    reachable: bool | None,
    first_seen: datetime,
    values: tuple[Any, ...],
) -> Finding:
    """A finding from already-validated parts, as ``Finding(...)`` would build it.

    Only called with exact ``str``/``datetime``/``bool`` host values and a template's validated
    values, so validation could not change or reject anything; this skips redoing it per host.
    """
    source, installed, advisory_id, cves, fix, severity, provenance = values
    finding = _new_model(Finding)
    _set_attr(
        finding,
        "__dict__",
        {
            "host": host,
            "source_package": source,
            "binary_packages": binary_names,
            "installed_source_version": installed,
            "advisory_id": advisory_id,
            "cves": cves,
            "fix": fix,
            "fix_reachable": reachable,
            "severity": severity,
            "first_seen": first_seen,
            "provenance": provenance,
        },
    )
    _set_attr(finding, "__pydantic_fields_set__", set(_FINDING_FIELDS))
    _set_attr(finding, "__pydantic_extra__", None)
    _set_attr(finding, "__pydantic_private__", None)
    return finding


_DEFAULT_CACHE: Final = VerdictCache()


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while one host is assessed.

    An assessment allocates and frees thousands of small containers (one key per installed
    package); with the collector running, they trigger young-generation collections and, in
    a process holding a large advisory index, frequent full ones. They form no cycles, so
    reference counting frees them; the previous state is restored.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _verdict(
    cache: VerdictCache,
    ecosystem: Ecosystem,
    release: str | None,
    installed: str,
    advisory: Advisory,
) -> _Verdict:
    if advisory.ecosystem is not ecosystem or (
        advisory.release is not None and release is not None and advisory.release != release
    ):
        return _Verdict(advisory, _Kind.OUT_OF_SCOPE)
    status = advisory.fix.status
    if status is FixStatus.FIXED:
        fixed = advisory.fix.version or ""
        order = cache._lookup_compare(ecosystem, installed, fixed)
        if isinstance(order, tuple):
            bad, reason = order
            which = "installed" if bad == installed else "fixed"
            return _Verdict(
                advisory,
                _Kind.ERROR,
                f"{advisory.id}: invalid {which} version {bad!r} ({reason}); installed "
                f"{installed!r}, fixed in {fixed!r}: affected status unknown",
            )
        if order >= 0:
            return _Verdict(advisory, _Kind.ALREADY_FIXED)
        return _Verdict(advisory, _Kind.AFFECTED, cves=advisory.cves)
    if status in UNFIXED_STATES:
        return _Verdict(advisory, _Kind.UNFIXED, cves=advisory.cves)
    if status is FixStatus.UNIMPORTANT:
        return _Verdict(advisory, _Kind.UNIMPORTANT)
    return _Verdict(advisory, _Kind.NOT_AFFECTED)


# --------------------------------------------------------------------------- kernels

_DEBIAN_KERNEL_RENAMES: Final = (
    ("linux-signed", "linux"),
    ("linux-latest", "linux"),
    ("-amd64", ""),
    ("-arm64", ""),
    ("-i386", ""),
)
_UBUNTU_KERNEL_RENAMES: Final = (("linux-signed", "linux"), ("linux-meta", "linux"))


# Ubuntu kernel flavours (Vuls models.IsKernelSourcePackage, from ubuntu-cve-tracker cve_lib.py).
def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_UBUNTU_FLAVOURS: Final = _words(
    """armadaxp mako manta flo goldfish joule raspi raspi2 snapdragon allwinner aws azure
    bluefield dell300x gcp gke gkeop ibm iot laptop lowlatency kvm nvidia oem oracle euclid
    hwe riscv starfive realtime mtk"""
)
# linux-<flavour>-<word or float>: the accepted words, and whether a float (5.15) is accepted.
_UBUNTU_FLAVOUR_SUFFIX: Final[Mapping[str, tuple[frozenset[str], bool]]] = {
    "ti": (frozenset({"omap4"}), False),
    "raspi": (frozenset(), True),
    "raspi2": (frozenset(), True),
    "allwinner": (frozenset(), True),
    "gke": (frozenset(), True),
    "gkeop": (frozenset(), True),
    "ibm": (frozenset(), True),
    "oracle": (frozenset(), True),
    "riscv": (frozenset(), True),
    "starfive": (frozenset(), True),
    "aws": (frozenset({"hwe", "edge"}), True),
    "azure": (frozenset({"cvm", "fde", "edge"}), True),
    "gcp": (frozenset({"edge"}), True),
    "intel": (frozenset({"iotg", "opt"}), True),
    "oem": (frozenset({"osp1"}), True),
    "lts": (frozenset({"utopic", "vivid", "wily", "xenial"}), False),
    "hwe": (frozenset({"edge"}), True),
    "xilinx": (frozenset({"zynqmp"}), False),
    "nvidia": (frozenset({"tegra"}), True),
}
# linux-<flavour>-<word>-<float or word>.
_UBUNTU_FLAVOUR_4: Final[Mapping[str, tuple[str, frozenset[str]]]] = {
    "azure": ("fde", frozenset()),
    "intel": ("iotg", frozenset()),
    "lowlatency": ("hwe", frozenset()),
    "nvidia": ("tegra", frozenset({"igx"})),
}

_RPM_KERNEL_SOURCES: Final = frozenset({"kernel", "kernel-rt", "kernel-uek", "kernel-alt"})
_KERNEL_NAME_PREFIXES: Final = ("linux", "kernel")  # cheap pre-filter for is_kernel_source

# Binary name prefixes that carry the kernel release: PREFIX + `uname -r` (Vuls' list).
_KERNEL_BINARY_PREFIXES: Final = (
    "linux-image-",
    "linux-image-unsigned-",
    "linux-signed-image-",
    "linux-image-uc-",
    "linux-buildinfo-",
    "linux-cloud-tools-",
    "linux-headers-",
    "linux-lib-rust-",
    "linux-modules-",
    "linux-modules-extra-",
    "linux-modules-ipu6-",
    "linux-modules-ivsc-",
    "linux-modules-iwlwifi-",
    "linux-tools-",
)
_KERNEL_IMAGE_PREFIXES: Final = (
    "linux-image-",
    "linux-image-unsigned-",
    "linux-signed-image-",
    "linux-image-uc-",
)


def _is_ubuntu(facts: HostFacts) -> bool:
    return facts.os.id == "ubuntu" or "ubuntu" in facts.os.id_like


def canonical_kernel_source(name: str, *, ubuntu: bool = False) -> str:
    """Normalise a kernel source package name to the name advisories use (Vuls' renames).

    Debian: ``linux-signed*`` and ``linux-latest*`` become ``linux*`` and ``-amd64``/``-arm64``/
    ``-i386`` are stripped (``linux-signed-amd64`` -> ``linux``, ``linux-signed-5.10-amd64`` ->
    ``linux-5.10``). Ubuntu: ``linux-signed*``/``linux-meta*`` become ``linux*``
    (``linux-signed-hwe-6.5`` -> ``linux-hwe-6.5``). Other names are returned unchanged.

    Args:
        name: a source package name.
        ubuntu: apply Ubuntu's rules instead of Debian's.

    Returns:
        The canonical name.
    """
    if not name.startswith("linux-"):
        return name
    for old, new in _UBUNTU_KERNEL_RENAMES if ubuntu else _DEBIAN_KERNEL_RENAMES:
        name = name.replace(old, new)
    return name


@lru_cache(maxsize=65536)
def is_kernel_source(
    name: str, *, ubuntu: bool = False, ecosystem: Ecosystem | None = None
) -> bool:
    """Whether a source package builds the kernel (so only the running one counts).

    Debian (Vuls' rule, after :func:`canonical_kernel_source`): ``linux``, ``linux-grsec`` and
    ``linux-<float>`` (``linux-5.10``, ``linux-6.1``). Ubuntu: ``linux``, ``linux-<float>`` and the
    flavours of ubuntu-cve-tracker (``linux-aws``, ``linux-hwe-6.5``, ``linux-azure-fde-5.15``,
    ``linux-lowlatency-hwe-5.15``...). Not kernels: ``linux-base``, ``linux-firmware``,
    ``linux-atm``, ``linux-tools-common``'s source... RPM: ``kernel``, ``kernel-rt``,
    ``kernel-uek``, ``kernel-alt``. Alpine kernels are not pruned (one kernel per flavour).

    Args:
        name: the source package name.
        ubuntu: use Ubuntu's flavour list.
        ecosystem: the package ecosystem (default Debian).

    Returns:
        True for a kernel source package.
    """
    if ecosystem is Ecosystem.RPM:
        return name in _RPM_KERNEL_SOURCES
    if ecosystem not in (None, Ecosystem.DEBIAN):
        return False
    parts = canonical_kernel_source(name, ubuntu=ubuntu).split("-")
    if parts[0] != "linux":
        return False
    if len(parts) == 1:
        return True
    if not ubuntu:
        return len(parts) == 2 and (parts[1] == "grsec" or bool(_FLOAT_RE.match(parts[1])))
    flavour = parts[1]
    if len(parts) == 2:
        return flavour in _UBUNTU_FLAVOURS or bool(_FLOAT_RE.match(flavour))
    if len(parts) == 3:
        rule = _UBUNTU_FLAVOUR_SUFFIX.get(flavour)
        if rule is None:
            return False
        words, float_ok = rule
        return parts[2] in words or (float_ok and bool(_FLOAT_RE.match(parts[2])))
    if len(parts) == 4:
        rule4 = _UBUNTU_FLAVOUR_4.get(flavour)
        if rule4 is None or parts[2] != rule4[0]:
            return False
        return parts[3] in rule4[1] or bool(_FLOAT_RE.match(parts[3]))
    return False


def running_kernel_binaries(kernel_release: str) -> frozenset[str]:
    """Binary package names that belong to a running kernel release (Debian/Ubuntu).

    ``linux-image-<rel>``, ``linux-image-unsigned-<rel>``, ``linux-signed-image-<rel>``,
    ``linux-headers-<rel>``, ``linux-modules(-extra)-<rel>``, ``linux-tools-<rel>``,
    ``linux-buildinfo-<rel>``, ``linux-cloud-tools-<rel>`` ... plus Debian's
    ``linux-image-<rel>-unsigned`` and ``-dbg``. (``linux-modules-nvidia-*-<rel>`` is matched by
    :func:`_is_running_kernel_binary`.)

    Args:
        kernel_release: ``uname -r``, e.g. ``6.1.0-18-amd64``.

    Returns:
        The set of names.
    """
    names = {prefix + kernel_release for prefix in _KERNEL_BINARY_PREFIXES}
    names.update({f"linux-image-{kernel_release}-unsigned", f"linux-image-{kernel_release}-dbg"})
    return frozenset(names)


def _is_running_kernel_binary(name: str, release: str, names: frozenset[str]) -> bool:
    return name in names or (
        name.startswith("linux-modules-nvidia-") and name.endswith("-" + release)
    )


def _is_running_rpm_kernel(package: InstalledPackage, release: str) -> bool:
    version = package.version.partition(":")[2] if package.epoch else package.version
    return release in (version, f"{version}.{package.arch}") or release.startswith(
        f"{version}.{package.arch}+"
    )


@dataclass(slots=True)
class _SourceGroup:
    name: str
    version: str
    binaries: list[InstalledPackage]
    kernel: bool = False


def _source_columns(
    packages: Sequence[InstalledPackage], ecosystem: Ecosystem
) -> tuple[Sequence[InstalledPackage], Sequence[str], Sequence[str]]:
    """The packages of ``ecosystem``, their source names and their source versions.

    Reading a package's three fields together visits each package record once (in a fleet the
    records are scattered in memory: visiting them, not the work, is the cost).
    """
    try:
        rows = list(map(_ECOSYSTEM_SOURCE, packages))
    except AttributeError:  # an incomplete record: read as before, for the same error
        rows = None
    if rows is not None and all(map(is_, map(itemgetter(0), rows), repeat(ecosystem))):
        if not rows:
            return packages, (), ()
        _, names, versions = zip(*rows, strict=True)
        return packages, names, versions
    if not all(map(is_, map(_ECOSYSTEM_OF, packages), repeat(ecosystem))):
        packages = [p for p in packages if p.ecosystem is ecosystem]
    return packages, list(map(_SOURCE_NAME, packages)), list(map(_SOURCE_VERSION, packages))


class _Inventory:
    """A host's installed packages grouped by (source name, source version), lazily.

    Only the distinct keys are needed for verdicts; binaries only for the few groups with
    findings (and kernels), so groups are built on demand from parallel lists, without a key
    object per package.
    """

    __slots__ = ("by_key", "by_name", "names", "packages", "versions")

    def __init__(self, packages: Sequence[InstalledPackage], ecosystem: Ecosystem) -> None:
        """Group the packages of ``ecosystem`` (others are ignored)."""
        self.packages, self.names, self.versions = _source_columns(packages, ecosystem)
        by_name = dict(zip(self.names, self.versions, strict=True))
        # One installed version per source (the usual case): the name -> version mapping is
        # the key set; otherwise (multi-arch skew) keys are (name, version) pairs.
        self.by_name: dict[str, str] | None = None
        self.by_key: dict[_SourceKey, None] | None = None
        if all(map(eq, map(by_name.__getitem__, self.names), self.versions)):
            self.by_name = by_name
        else:
            self.by_key = dict.fromkeys(zip(self.names, self.versions, strict=True))

    def keys(self) -> Iterable[_SourceKey]:
        """The distinct (source, version) keys, in first-seen package order."""
        if self.by_name is not None:
            return self.by_name.items()
        assert self.by_key is not None
        return self.by_key.keys()

    def names_in_order(self) -> Iterable[str]:
        """The source name of each key of :meth:`keys`, in the same order."""
        if self.by_name is not None:
            return self.by_name
        assert self.by_key is not None
        return map(itemgetter(0), self.by_key)

    def __len__(self) -> int:
        return len(self.by_name if self.by_name is not None else self.by_key or ())

    def starting_with(self, prefixes: tuple[str, ...]) -> list[_SourceKey]:
        """The keys whose source name starts with one of ``prefixes``."""
        if self.by_name is not None:
            names: Iterable[str] = self.by_name
        else:
            assert self.by_key is not None
            names = map(itemgetter(0), self.by_key)
        return list(compress(self.keys(), map(str.startswith, names, repeat(prefixes))))

    def remove(self, key: _SourceKey) -> None:
        """Forget one key."""
        if self.by_name is not None:
            del self.by_name[key[0]]
        else:
            assert self.by_key is not None
            del self.by_key[key]

    def binaries(self, wanted: Collection[_SourceKey]) -> dict[_SourceKey, list[InstalledPackage]]:
        """The binaries of the ``wanted`` groups, groups in first-seen package order."""
        wanted_names = {name for name, _ in wanted}
        flags = list(map(wanted_names.__contains__, self.names))
        groups: dict[_SourceKey, list[InstalledPackage]] = {}
        for name, version, package in zip(
            compress(self.names, flags),
            compress(self.versions, flags),
            compress(self.packages, flags),
            strict=True,
        ):
            key = (name, version)
            group = groups.get(key)
            if group is not None:
                group.append(package)
            elif key in wanted:
                groups[key] = [package]
        return groups


def _select_kernels(
    groups: dict[tuple[str, str], list[InstalledPackage]],
    facts: HostFacts,
    ecosystem: Ecosystem,
) -> tuple[list[_SourceGroup], int]:
    """Split off kernel sources: return the running kernel's group(s) and the pruned count.

    Kernel groups are removed from ``groups`` in place.
    """
    ubuntu = _is_ubuntu(facts)
    kernel_keys = [
        key
        for key in groups
        if key[0].startswith(_KERNEL_NAME_PREFIXES)
        and is_kernel_source(key[0], ubuntu=ubuntu, ecosystem=ecosystem)
    ]
    release = facts.kernel
    names = running_kernel_binaries(release)
    merged: dict[str, tuple[list[InstalledPackage], list[InstalledPackage]]] = {}
    pruned = 0
    for key in kernel_keys:
        binaries = groups.pop(key)
        if ecosystem is Ecosystem.RPM:
            running = [p for p in binaries if _is_running_rpm_kernel(p, release)]
        else:
            running = [p for p in binaries if _is_running_kernel_binary(p.name, release, names)]
        if not running:
            pruned += 1
            continue
        canonical = (
            key[0] if ecosystem is Ecosystem.RPM else canonical_kernel_source(key[0], ubuntu=ubuntu)
        )
        images = [p for p in running if p.name.startswith(_KERNEL_IMAGE_PREFIXES)]
        kept, kept_images = merged.setdefault(canonical, ([], []))
        kept.extend(running)
        kept_images.extend(images)
    selected: list[_SourceGroup] = []
    for canonical, (binaries, images) in sorted(merged.items()):
        if ecosystem is Ecosystem.RPM:
            version = binaries[0].source_version
        else:
            # The running image's binary version is the kernel source version (Debian's
            # signed template builds carry their own "6.1.76+1" source version).
            reference = min(images or binaries, key=lambda p: p.name)
            version = reference.version
        selected.append(_SourceGroup(canonical, version, binaries, kernel=True))
    return selected, pruned


# --------------------------------------------------------------------------- reachability


def _binary_tracks_source(package: InstalledPackage) -> bool:
    """Whether the binary's version is its source's (possibly a ``+bN`` binNMU of it)."""
    if package.version == package.source_version:
        return True
    head, tail = (
        package.version[: len(package.source_version)],
        package.version[len(package.source_version) :],
    )
    return head == package.source_version and bool(_BINNMU_RE.match(tail))


def fix_reachable(
    binaries: Sequence[InstalledPackage],
    fixed_version: str,
    pending: Mapping[str, Sequence[PendingUpdate]] | None,
    ecosystem: Ecosystem,
    cache: VerdictCache | None = None,
    *,
    kernel_updates: Sequence[PendingUpdate] = (),
) -> bool | None:
    """Whether the host's repositories offer a version of the finding's binaries with the fix.

    Heuristic (the candidate is a *binary* version, the fix a *source* version):

    * a pending upgrade of one of the binaries whose installed version equals its source
      version, or is a binNMU of it (``<source version>+bN``), reaches the fix when its
      candidate version is >= the fixed version (a binNMU of the fix, ``<fixed>+b1``, sorts
      after the fix, and ``<old>+b9`` before it);
    * a binary with its own version scheme (``libldb2 2:2.6.2+samba4.17.12...`` from ``samba``)
      cannot be compared with a source version: any pending upgrade of it is taken as
      reaching the fix (the candidate comes from a newer upload of the same source);
    * an architecture-qualified update only matches the installed binary of that architecture;
    * for the running kernel, a new kernel ABI is a *new* package (``linux-image-6.1.0-22-amd64``
      next to the running ``-18-``), so ``kernel_updates`` (:func:`kernel_image_updates`) are
      also compared: an image's version is its kernel source version.

    Args:
        binaries: the finding's installed binary packages.
        fixed_version: the fixed source version.
        pending: pending updates by binary name; ``None`` when they were not collected.
        ecosystem: the version ordering.
        cache: comparison memo (default: the module's).
        kernel_updates: pending kernel images of the running flavour (kernel findings only).

    Returns:
        ``True`` reached, ``False`` pending data exists and nothing reaches the fix, ``None``
        unknown (no pending data, or a candidate version that does not parse).
    """
    if pending is None:
        return None
    memo = cache if cache is not None else _DEFAULT_CACHE
    unknown = False
    for update in kernel_updates:
        try:
            if memo.compare(ecosystem, update.candidate_version, fixed_version) >= 0:
                return True
        except InvalidVersionError:
            unknown = True
    for package in binaries:
        for update in pending.get(package.name, ()):
            if update.arch and package.arch and update.arch != package.arch:
                continue
            if not _binary_tracks_source(package):
                return True
            try:
                if memo.compare(ecosystem, update.candidate_version, fixed_version) >= 0:
                    return True
            except InvalidVersionError:
                unknown = True
    return None if unknown else False


_KERNEL_RELEASE_RE: Final = re.compile(r"^\d+\.\d+(?:\.\d+)?-\d+(?:\.\d+)*-(?P<flavour>.+)$")


def kernel_image_updates(
    kernel_release: str, pending: Sequence[PendingUpdate] | None
) -> list[PendingUpdate]:
    """Pending kernel images of the running kernel's flavour, any ABI (new installs included).

    For ``6.1.0-18-amd64`` this matches ``linux-image-6.1.0-22-amd64`` (and ``-unsigned``
    variants) but not ``linux-image-6.1.0-22-cloud-amd64`` nor the ``linux-image-amd64``
    metapackage; for Ubuntu's ``5.15.0-91-generic``, ``linux-image-5.15.0-92-generic``.

    Args:
        kernel_release: ``uname -r``.
        pending: the host's pending updates (``None``: not collected).

    Returns:
        The matching updates (empty when the release has no ``<abi>-<flavour>`` shape).
    """
    match = _KERNEL_RELEASE_RE.match(kernel_release)
    if match is None or not pending:
        return []
    image = re.compile(
        r"^linux-image-(?:unsigned-)?\d+\.\d+(?:\.\d+)?-\d+(?:\.\d+)*-"
        + re.escape(match["flavour"])
        + r"(?:-unsigned)?$"
    )
    return [u for u in pending if image.match(u.name)]


def _index_pending(
    pending: Sequence[PendingUpdate] | None,
) -> dict[str, list[PendingUpdate]] | None:
    if pending is None:
        return None
    index: dict[str, list[PendingUpdate]] = {}
    for update in pending:
        index.setdefault(update.name, []).append(update)
    return index


# --------------------------------------------------------------------------- assessment


def _host_ecosystem(facts: HostFacts, packages: Sequence[InstalledPackage]) -> Ecosystem | None:
    if facts.ecosystem is not None:
        return facts.ecosystem
    if facts.os.family.ecosystem is not None:
        return facts.os.family.ecosystem
    found = {p.ecosystem for p in packages}
    return found.pop() if len(found) == 1 else None


def _lookup(advisories: AdvisorySource) -> Callable[[str], Sequence[Advisory] | None]:
    """Advisories of one source; a falsy answer (``None`` or empty) means none."""
    if callable(advisories):
        return advisories
    return advisories.get


_ECOSYSTEM_SOURCE: Final = attrgetter("ecosystem", "source_name", "source_version")
_SOURCE_NAME: Final = attrgetter("source_name")
_SOURCE_VERSION: Final = attrgetter("source_version")
_ECOSYSTEM_OF: Final = attrgetter("ecosystem")
_FINDING_ORDER: Final = attrgetter("source_package", "advisory_id")


def _split_kernels(
    inventory: _Inventory, facts: HostFacts, ecosystem: Ecosystem
) -> tuple[list[_SourceGroup], int]:
    """:func:`_select_kernels` on the kernel-looking groups; kernel keys leave ``inventory``."""
    # Only kernel sources' groups matter to _select_kernels (it tests each key the same way).
    ubuntu = _is_ubuntu(facts)
    candidates = [
        key
        for key in inventory.starting_with(_KERNEL_NAME_PREFIXES)
        if is_kernel_source(key[0], ubuntu=ubuntu, ecosystem=ecosystem)
    ]
    if not candidates:
        return [], 0
    groups = inventory.binaries(set(candidates))
    kernels, pruned = _select_kernels(groups, facts, ecosystem)
    for key in candidates:
        if key not in groups:
            inventory.remove(key)
    return kernels, pruned


_Flagged: TypeAlias = tuple[str, str, _SourceEntry, _SourceGroup | None]


def _lookup_entries(
    memo: VerdictCache,
    ecosystem: Ecosystem,
    release: str | None,
    lookup: Callable[[str], Sequence[Advisory] | None],
    inventory: _Inventory,
    kernels: Sequence[_SourceGroup],
) -> tuple[list[tuple[int, int, int, int, int]], list[_Flagged]]:
    """The cached verdict entry of every source with advisories (as ``memo.verdicts``).

    Returns each entry's counts, and the entries with errors or findings with their kernel
    group (None for an ordinary source), sources first (in order), then kernels. The common
    case, every entry cached and current, runs as whole-list operations.
    """
    scope = memo._scope(ecosystem, release)
    found = list(map(lookup, inventory.names_in_order()))
    keys = list(compress(inventory.keys(), found))
    advisories: list[Sequence[Advisory]] = list(filter(None, found))
    entries: list[_SourceEntry | None] = list(map(scope.get, keys))
    current = (
        all(map(is_not, entries, repeat(None)))
        and all(map(is_, map(_ENTRY_ADVISORIES, entries), advisories))
        and all(map(eq, map(_ENTRY_COUNT, entries), map(len, advisories)))
    )
    hits = misses = 0
    if current:
        hits = len(entries)
    else:
        for index, (key, source_advisories, entry) in enumerate(
            zip(keys, advisories, entries, strict=True)
        ):
            if (
                entry is None
                or entry.advisories is not source_advisories
                or entry.count != len(source_advisories)
            ):
                entries[index] = memo._store(
                    scope, ecosystem, release, key[0], key[1], source_advisories
                )
                misses += 1
            else:
                hits += 1
    counts: list[tuple[int, int, int, int, int]] = list(map(_ENTRY_COUNTS, entries))
    flagged: list[_Flagged] = [
        (key[0], key[1], entry, None)
        for key, entry in compress(zip(keys, entries, strict=True), map(_ENTRY_FLAGGED, entries))
        if entry is not None
    ]
    for kernel in kernels:
        kernel_advisories = lookup(kernel.name)
        if not kernel_advisories:
            continue
        entry = scope.get((kernel.name, kernel.version))
        if (
            entry is None
            or entry.advisories is not kernel_advisories
            or entry.count != len(kernel_advisories)
        ):
            entry = memo._store(
                scope, ecosystem, release, kernel.name, kernel.version, kernel_advisories
            )
            misses += 1
        else:
            hits += 1
        counts.append(entry.counts)
        if entry.flagged:
            flagged.append((kernel.name, kernel.version, entry, kernel))
    memo.hits += hits
    memo.misses += misses
    return counts, flagged


_ENTRY_ADVISORIES: Final = attrgetter("advisories")
_ENTRY_COUNT: Final = attrgetter("count")
_ENTRY_COUNTS: Final = attrgetter("counts")
_ENTRY_FLAGGED: Final = attrgetter("flagged")


def assess_host(
    host: str,
    facts: HostFacts,
    packages: Sequence[InstalledPackage],
    advisories: AdvisorySource,
    pending: Sequence[PendingUpdate] | None = None,
    first_seen: FirstSeen | None = None,
    now: datetime | None = None,
    *,
    cache: VerdictCache | None = None,
) -> AssessmentResult:
    """Decide which advisories affect one host.

    Args:
        host: the inventory host name (goes on every finding).
        facts: the host's facts (ecosystem, release, running kernel).
        packages: its installed packages.
        advisories: advisories per *source* package name (a mapping or a function), already
            scoped to the host's ecosystem and release; an advisory for another ecosystem or
            release is ignored and counted as ``out_of_scope``.
        pending: upgrades the host's repositories offer (``AptPendingUpdates``). ``None`` means
            *not collected* (``fix_reachable`` stays ``None``); an empty sequence means
            collected and nothing pending (``fix_reachable`` is ``False``).
        first_seen: when each (source package, advisory id) was first seen on this host;
            missing pairs get ``now``.
        now: the assessment time (default: the current UTC time).
        cache: verdict memo shared across hosts (default: a module-level cache).

    Returns:
        The findings (sorted by source package, then advisory id), the errors that blocked a
        verdict (an invalid version is reported here, never treated as not vulnerable), the
        counters and the running-kernel source that was assessed.
    """
    with _gc_paused():
        return _assess_host(host, facts, packages, advisories, pending, first_seen, now, memo=cache)


def _assess_host(
    host: str,
    facts: HostFacts,
    packages: Sequence[InstalledPackage],
    advisories: AdvisorySource,
    pending: Sequence[PendingUpdate] | None,
    first_seen: FirstSeen | None,
    now: datetime | None,
    *,
    memo: VerdictCache | None,
) -> AssessmentResult:
    when = now or utcnow()
    memo = memo if memo is not None else _DEFAULT_CACHE
    ecosystem = _host_ecosystem(facts, packages)
    if ecosystem is None:
        reason = f"no package ecosystem for OS {facts.os.id!r}; advisories not assessed"
        log.warning("assessment_no_ecosystem", host=host, os=facts.os.id)
        return AssessmentResult(host=host, errors=(("*", reason),))
    release = facts.os.release
    lookup = _lookup(advisories)
    pending_index = _index_pending(pending)
    kernel_updates = tuple(
        kernel_image_updates(facts.kernel, pending) if ecosystem is Ecosystem.DEBIAN else []
    )

    inventory = _Inventory(packages, ecosystem)
    kernels, pruned = _split_kernels(inventory, facts, ecosystem)
    checked = len(inventory) + len(kernels)
    counts, flagged = _lookup_entries(memo, ecosystem, release, lookup, inventory, kernels)
    errors = [error for _, _, entry, _ in flagged for error in entry.errors]
    findings = _build_findings(
        host,
        flagged,
        inventory,
        _Reach(ecosystem, memo, pending_index, kernel_updates),
        first_seen or {},
        when,
    )
    findings = _merge_duplicates(findings, ecosystem, memo)
    if errors:
        log.warning("assessment_errors", host=host, errors=len(errors), first=errors[0][1])
    considered, already_fixed, not_affected, unimportant, out_of_scope = (
        map(sum, zip(*counts, strict=True)) if counts else (0, 0, 0, 0, 0)
    )
    counters = AssessmentCounters(
        source_packages=checked,
        advisories_considered=considered,
        already_fixed=already_fixed,
        not_affected=not_affected,
        unimportant=unimportant,
        out_of_scope=out_of_scope,
        pruned_kernels=pruned,
    )
    if debug_enabled():
        log.debug(
            "host_assessed",
            host=host,
            findings=len(findings),
            errors=len(errors),
            sources=checked,
            pruned_kernels=pruned,
        )
    return AssessmentResult(
        host=host,
        findings=tuple(findings),
        errors=tuple(errors),
        counters=counters,
        running_kernel=(kernels[0].name, kernels[0].version) if kernels else None,
    )


@dataclass(frozen=True, slots=True)
class _Reach:
    """What :func:`fix_reachable` needs from the host."""

    ecosystem: Ecosystem
    memo: VerdictCache
    pending: Mapping[str, Sequence[PendingUpdate]] | None
    kernel_updates: tuple[PendingUpdate, ...]

    def __call__(
        self, binaries: Sequence[InstalledPackage], fixed: str, kernel: bool
    ) -> bool | None:
        if self.pending is None:
            return None
        return fix_reachable(
            binaries,
            fixed,
            self.pending,
            self.ecosystem,
            self.memo,
            kernel_updates=self.kernel_updates if kernel else (),
        )


def _build_findings(
    host: str,
    flagged: Sequence[_Flagged],
    inventory: _Inventory,
    reach: _Reach,
    first_seen: FirstSeen,
    now: datetime,
) -> list[Finding]:
    """The findings of the flagged sources, in source order then verdict order."""
    wanted = {(name, version) for name, version, e, kernel in flagged if e.templates and not kernel}
    binaries_of = inventory.binaries(wanted) if wanted else {}
    # Host values that validation would keep as they are allow the prebuilt path.
    fast_host = type(host) is str
    findings: list[Finding] = []
    for name, version, entry, kernel in flagged:
        if not entry.templates:
            continue
        binaries = kernel.binaries if kernel is not None else binaries_of[(name, version)]
        binary_names = tuple(sorted({p.name for p in binaries}))
        fast = fast_host and all(type(n) is str for n in binary_names)
        for template in entry.templates:
            advisory = template.advisory
            reachable = (
                reach(binaries, template.fixed_version, kernel is not None)
                if template.affected
                else None
            )
            seen = first_seen.get((name, advisory.id), now) if first_seen else now
            values = template.values
            if fast and values is not None and type(seen) is datetime:
                findings.append(_new_finding(host, binary_names, reachable, seen, values))
                continue
            findings.append(
                Finding(
                    host=host,
                    source_package=name,
                    binary_packages=binary_names,
                    installed_source_version=version,
                    advisory_id=advisory.id,
                    cves=template.cves,
                    fix=advisory.fix,
                    fix_reachable=reachable,
                    severity=advisory.severity,
                    first_seen=seen,
                    provenance=(advisory.provenance,),
                )
            )
    return findings


def _merge_duplicates(
    findings: list[Finding], ecosystem: Ecosystem, memo: VerdictCache
) -> list[Finding]:
    """Sort findings; merge those of one (source, advisory) seen at two installed versions.

    Two versions of one source can be installed at once (multi-arch skew such as
    ``libfoo:amd64 1.2-2`` next to ``libfoo:i386 1.2-1``). One finding per key
    ``host|source|advisory`` is kept: the lowest installed version, the union of the binaries,
    and ``fix_reachable`` True only if every copy reaches the fix (False if any does not).
    """
    findings.sort(key=_FINDING_ORDER)
    merged: list[Finding] = []
    previous_key: tuple[str, str] | None = None
    for finding in findings:
        key = _FINDING_ORDER(finding)
        if key != previous_key:
            merged.append(finding)
            previous_key = key
            continue
        previous = merged[-1]
        lowest = previous
        try:
            if (
                memo.compare(
                    ecosystem, finding.installed_source_version, previous.installed_source_version
                )
                < 0
            ):
                lowest = finding
        except InvalidVersionError:
            pass
        reach = {previous.fix_reachable, finding.fix_reachable}
        merged[-1] = lowest.model_copy(
            update={
                "binary_packages": tuple(
                    sorted({*previous.binary_packages, *finding.binary_packages})
                ),
                "fix_reachable": False if False in reach else (True if reach == {True} else None),
            }
        )
    return merged


# --------------------------------------------------------------------------- no-feeds fallback


def pending_advisory_id(ecosystem: Ecosystem | str, source: str, *, security: bool = True) -> str:
    """The synthetic advisory id of a repository-announced security update.

    ``"<ecosystem>-security-update:<source>"``, e.g. ``"debian-security-update:openssl"``;
    ``"<ecosystem>-update:<source>"`` for an update from another origin (a vendor or local
    repository) whose changelog names the CVEs it fixes
    (the ecosystem, not the distribution: Ubuntu hosts also get ``debian-``). It names "the
    security suite offers a newer build of this source", not a CVE: one id per source package,
    stable across runs so ``first_seen`` carries over, and it never collides with DSA/DLA/USN/
    CVE ids.

    Args:
        ecosystem: the package ecosystem.
        source: the source package name.

    Returns:
        The id.
    """
    value = ecosystem.value if isinstance(ecosystem, Ecosystem) else str(ecosystem)
    return f"{value}-security-update:{source}" if security else f"{value}-update:{source}"


def _best_candidate(
    ecosystem: Ecosystem, entries: Sequence[tuple[InstalledPackage | None, PendingUpdate]]
) -> str:
    tracking = [u for p, u in entries if p is not None and p.version == p.source_version]
    pool = tracking or [u for _, u in entries]
    best = pool[0].candidate_version
    for update in pool[1:]:
        try:
            if versions.compare(ecosystem, update.candidate_version, best) > 0:
                best = update.candidate_version
        except PatchpilotError:
            continue
    return best


def findings_from_pending(
    host: str,
    packages: Sequence[InstalledPackage],
    pending: Sequence[PendingUpdate],
    first_seen: FirstSeen | None = None,
    now: datetime | None = None,
) -> list[Finding]:
    """Findings from the host's own security suite when no advisory feed is available.

    One finding per installed source package with at least one pending upgrade from a
    ``-security`` suite (:attr:`PendingUpdate.security`) or whose changelog names CVEs it
    fixes (:attr:`PendingUpdate.cves`, any origin); new installs (no installed version)
    are skipped since nothing installed is fixed by them. Each finding has:

    * ``advisory_id`` :func:`pending_advisory_id` (``"debian-security-update:openssl"``);
    * ``fix`` ``fixed(<candidate>)`` where the candidate is the best-known new version: the
      highest candidate among binaries whose version equals their source version (else among
      all), a *binary* version standing in for the unknown new source version;
    * ``fix_reachable=True`` (apt offers it: installable now), ``severity=unknown``, and the
      CVEs read from the candidates' changelogs (none when changelogs were not read);
    * provenance ``feed="apt"``, ``source`` = the security origin (e.g.
      ``Debian-Security:12/oldstable-security``, else the first origin),
      ``confidence="repository-metadata"``; plus ``feed="changelog"`` when CVEs came from a
      changelog.

    A pending binary missing from ``packages`` (inventory and simulation out of step) is kept
    under its own name as the source, with its installed version.

    Args:
        host: the inventory host name.
        packages: its installed packages.
        pending: its pending updates (``AptPendingUpdates``).
        first_seen: first-seen times by (source package, advisory id); default ``now``.
        now: the assessment time (default: the current UTC time).

    Returns:
        The findings, sorted by source package.
    """
    when = now or utcnow()
    seen = first_seen or {}
    by_key = {(p.name, p.arch): p for p in packages}
    by_name: dict[str, InstalledPackage] = {}
    for installed_package in packages:
        by_name.setdefault(installed_package.name, installed_package)
    grouped: dict[str, list[tuple[InstalledPackage | None, PendingUpdate]]] = {}
    for update in pending:
        if not (update.security or update.cves) or update.installed_version is None:
            continue
        match = by_key.get((update.name, update.arch)) or by_name.get(update.name)
        source = match.source_name if match is not None else update.name
        grouped.setdefault(source, []).append((match, update))
    findings: list[Finding] = []
    for source, entries in sorted(grouped.items()):
        installed_packages = [p for p, _ in entries if p is not None]
        ecosystem = installed_packages[0].ecosystem if installed_packages else Ecosystem.DEBIAN
        installed = (
            installed_packages[0].source_version
            if installed_packages
            else entries[0][1].installed_version or ""
        )
        origin = next(
            (o for _, u in entries for o in u.origins if is_security_origin(o)),
            next((o for _, u in entries for o in u.origins), "apt"),
        )
        advisory_id = pending_advisory_id(
            ecosystem, source, security=any(u.security for _, u in entries)
        )
        cves = tuple(dict.fromkeys(c for _, u in entries for c in u.cves))
        provenance = [
            Provenance(
                feed="apt",
                source=origin,
                record_id=advisory_id,
                fetched_at=when,
                confidence="repository-metadata",
            )
        ]
        if any(u.cves_from == "changelog" for _, u in entries):
            provenance.append(
                Provenance(
                    feed="changelog",
                    source=f"changelog.Debian.gz of {source} {_best_candidate(ecosystem, entries)}",
                    record_id=advisory_id,
                    fetched_at=when,
                    confidence="repository-metadata",
                )
            )
        findings.append(
            Finding(
                host=host,
                source_package=source,
                binary_packages=tuple(sorted({u.name for _, u in entries})),
                installed_source_version=installed,
                advisory_id=advisory_id,
                cves=cves,
                fix=FixState.fixed(_best_candidate(ecosystem, entries)),
                fix_reachable=True,
                severity=Severity.UNKNOWN,
                first_seen=seen.get((source, advisory_id), when),
                provenance=tuple(provenance),
            )
        )
    return findings

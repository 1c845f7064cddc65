"""Assessment results and the verdict cache: one comparison per (source, version) per fleet.

:class:`VerdictCache` keeps, per (ecosystem, release, source package, installed source
version), the verdict of every advisory and a finding template, so hosts that share versions
are compared once; :class:`AssessmentResult` is what
:func:`~patchpilot.agents.assessment.assess_host` returns.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Final, TypeAlias

from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core import versions
from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    Finding,
    FixStatus,
)

__all__ = [
    "UNFIXED_STATES",
    "AdvisorySource",
    "AssessmentCounters",
    "AssessmentResult",
    "DataQualityWarning",
    "FirstSeen",
    "VerdictCache",
]

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


class DataQualityWarning(BaseModel):
    """A version no ordering applies to, met while matching: the record is not assessed.

    Raised as :class:`~patchpilot.core.errors.UnparseableVersionError` by
    :func:`patchpilot.core.versions.compare` (malformed versions the package manager orders are
    ordered, not reported); reported instead of crashing or skipping the record silently.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = Field(
        description="where the version came from: the advisory's feed (its fixed version) or "
        "'host' (the installed version, from the host's package database)"
    )
    record: str = Field(description="the advisory whose verdict could not be reached")
    package: str = Field(description="the source package")
    version: str = Field(description="the offending version (escaped when not printable)")
    problem: str = Field(description="why it cannot be ordered")
    host: str | None = Field(default=None, description="the host being assessed")


def _printable(version: str) -> str:
    """``version`` with control characters and unpaired surrogates escaped (JSON-safe)."""
    if version.isprintable():
        return version
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in version)


class AssessmentResult(BaseModel):
    """The findings of one host, the data errors that blocked a verdict, and counters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str
    findings: tuple[Finding, ...] = ()
    errors: tuple[tuple[str, str], ...] = Field(
        default=(), description="(source package, reason): no verdict could be reached"
    )
    data_quality: tuple[DataQualityWarning, ...] = Field(
        default=(),
        description="the unparseable versions among those errors, with their record",
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
    warning: DataQualityWarning | None = None  # an ERROR caused by an unparseable version


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
    warnings: tuple[DataQualityWarning, ...]  # of the errors, the unparseable versions
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
                # Only UnparseableVersionError: compare() orders every other malformed version.
                cached = (exc.version, exc.reason)
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
    warnings: list[DataQualityWarning] = []
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
            if verdict.warning is not None:
                warnings.append(verdict.warning)
        else:
            templates.append(_template(source, installed, verdict))
    return _SourceEntry(
        advisories=advisories,
        count=len(advisories),
        verdicts=verdicts,
        counts=(considered, already_fixed, not_affected, unimportant, out_of_scope),
        errors=tuple(errors),
        warnings=tuple(warnings),
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


def _verdict(
    cache: VerdictCache,
    ecosystem: Ecosystem,
    release: str | None,
    installed: str,
    advisory: Advisory,
) -> _Verdict:
    if advisory.ecosystem is not ecosystem:
        return _Verdict(advisory, _Kind.OUT_OF_SCOPE)
    if advisory.release is not None and advisory.release != release:
        # Per release, never across: a bookworm fix says nothing about a trixie package (its
        # own line, or its absence, does). A host of unknown release cannot be scoped: that
        # is an unknown, never a pass.
        if release is None:
            return _Verdict(
                advisory,
                _Kind.ERROR,
                f"{advisory.id}: the advisory is for release {advisory.release!r} only and the "
                "host's release is unknown (no VERSION_CODENAME/VERSION_ID in its os-release): "
                "affected status unknown",
            )
        return _Verdict(advisory, _Kind.OUT_OF_SCOPE)
    status = advisory.fix.status
    if status is FixStatus.FIXED:
        fixed = advisory.fix.version or ""
        order = cache._lookup_compare(ecosystem, installed, fixed)
        if isinstance(order, tuple):
            bad, reason = order
            which = "fixed" if versions.is_comparable(ecosystem, installed) else "installed"
            return _Verdict(
                advisory,
                _Kind.ERROR,
                f"{advisory.id}: invalid {which} version {bad!r} ({reason}); installed "
                f"{installed!r}, fixed in {fixed!r}: affected status unknown",
                warning=DataQualityWarning(
                    source="host" if which == "installed" else advisory.feed,
                    record=advisory.id,
                    package=advisory.source_package,
                    version=_printable(bad),
                    problem=reason,
                ),
            )
        if order >= 0:
            return _Verdict(advisory, _Kind.ALREADY_FIXED)
        return _Verdict(advisory, _Kind.AFFECTED, cves=advisory.cves)
    if status in UNFIXED_STATES:
        return _Verdict(advisory, _Kind.UNFIXED, cves=advisory.cves)
    if status is FixStatus.UNIMPORTANT:
        return _Verdict(advisory, _Kind.UNIMPORTANT)
    return _Verdict(advisory, _Kind.NOT_AFFECTED)

"""Matching a host's installed source packages against the advisories: :func:`assess_host`.

Groups binaries by source package, prunes kernels that do not run, looks each source's
verdicts up in the :class:`~patchpilot.agents.assessment.verdicts.VerdictCache` and builds the
findings (fix state, reachability, first seen), merging duplicates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import compress, repeat
from operator import attrgetter, eq, is_, is_not
from typing import Final, TypeAlias

import structlog

from patchpilot.agents.assessment.kernel import (
    _KERNEL_NAME_PREFIXES,
    _Inventory,
    _is_ubuntu,
    _select_kernels,
    _SourceGroup,
    is_kernel_source,
)
from patchpilot.agents.assessment.reachability import (
    _index_pending,
    fix_reachable,
    kernel_image_updates,
)
from patchpilot.agents.assessment.verdicts import (
    _DEFAULT_CACHE,
    AdvisorySource,
    AssessmentCounters,
    AssessmentResult,
    DataQualityWarning,
    FirstSeen,
    VerdictCache,
    _new_finding,
    _printable,
    _SourceEntry,
)
from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.logging import debug_enabled
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    Finding,
    HostFacts,
    InstalledPackage,
    PendingUpdate,
    utcnow,
)
from patchpilot.core.resources import gc_paused

log = structlog.get_logger("patchpilot.agents.assessment")

__all__ = ["assess_host"]


_FINDING_ORDER: Final = attrgetter("source_package", "advisory_id")


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
    # One host allocates and frees thousands of small acyclic containers (a key per package).
    with gc_paused():
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
    # The cached entries are shared by every host: the host is added here.
    data_quality = [
        warning.model_copy(update={"host": host})
        for _, _, entry, _ in flagged
        for warning in entry.warnings
    ]
    findings = _build_findings(
        host,
        flagged,
        inventory,
        _Reach(ecosystem, memo, pending_index, kernel_updates),
        first_seen or {},
        when,
    )
    findings = _merge_duplicates(findings, ecosystem, memo, host, data_quality)
    if errors:
        log.warning("assessment_errors", host=host, errors=len(errors), first=errors[0][1])
    if data_quality:
        log.warning(
            "assessment.data_quality",
            host=host,
            warnings=len(data_quality),
            first=data_quality[0].model_dump(),
        )
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
        data_quality=tuple(data_quality),
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
    findings: list[Finding],
    ecosystem: Ecosystem,
    memo: VerdictCache,
    host: str,
    data_quality: list[DataQualityWarning],
) -> list[Finding]:
    """Sort findings; merge those of one (source, advisory) seen at two installed versions.

    Two versions of one source can be installed at once (multi-arch skew such as
    ``libfoo:amd64 1.2-2`` next to ``libfoo:i386 1.2-1``). One finding per key
    ``host|source|advisory`` is kept: the lowest installed version, the union of the binaries,
    and ``fix_reachable`` True only if every copy reaches the fix (False if any does not).
    When the installed versions cannot be ordered (an unparseable one, recorded in
    ``data_quality``), the first in sort order is kept.
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
        except InvalidVersionError as exc:
            data_quality.append(
                DataQualityWarning(
                    source="host",
                    record=finding.advisory_id,
                    package=finding.source_package,
                    version=_printable(exc.version),
                    problem=exc.reason,
                    host=host,
                )
            )
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

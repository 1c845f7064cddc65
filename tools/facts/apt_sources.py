"""Where a Debian-family host's packages come from: apt's package indexes and per-package policy.

Two facts read ``apt-cache policy`` (with ``LC_ALL=C``; no root, no ``apt-get update``):

* :class:`AptPolicy` -- no arguments: every package index apt reads, with its pin priority and
  the fields of its ``Release`` file, classified by :func:`classify_source`;
* :class:`AptCandidatePolicy` -- ``apt-cache policy -- PKG...``: per package, the installed and
  candidate versions and which indexes offer each version.

:func:`classify_update` joins the two to tell where a :class:`~patchpilot.core.models.PendingUpdate`
comes from (:class:`~patchpilot.core.models.UpdateOrigin`).

``apt-cache policy`` (``cmdline/apt-cache.cc``) prints each index as ``printf("%4i %s")`` of its
priority and ``pkgIndexFile::Describe(true)``, then ``pkgCache::PkgFileIterator::RelStr()`` and
the site::

    Package files:
     100 /var/lib/dpkg/status
         release a=now
     500 http://deb.debian.org/debian bookworm/main amd64 Packages
         release v=12.15,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64
         origin deb.debian.org
     500 file:/srv/acme-repo ./ Packages
         release c=
    Pinned packages:
         acme-agent -> 2.4.1-1 with priority 1001

A flat repository (``deb file:/srv/acme-repo ./``) is described as ``URI DIR/ Packages`` with no
component and no architecture; a ``file:`` repository has no ``origin`` line; a flat repository
without a ``Release`` file prints ``release c=``. ``RelStr`` writes its keys in the fixed order
``v, o, a, n, l, c, b`` and only when set.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import ClassVar, Final

from pydantic import Field

from patchpilot.core.errors import FactParseError, UnsafeArgumentError
from patchpilot.core.models import (
    AptSource,
    CommandResult,
    Ecosystem,
    PendingUpdate,
    Record,
    UpdateOrigin,
)
from patchpilot.core.validate import validate_package_name
from patchpilot.tools.facts.apt import SECURITY_SUITE_SUFFIX, is_security_origin
from patchpilot.tools.facts.base import Fact, stderr_tail

__all__ = [
    "DISTRIBUTION_ORIGINS",
    "DPKG_STATUS",
    "LOCAL_URI_SCHEMES",
    "AptCandidatePolicy",
    "AptPolicy",
    "PackagePolicy",
    "PolicySource",
    "PolicyVersion",
    "apt_release_string",
    "classify_source",
    "classify_update",
    "classify_updates",
    "parse_index_description",
    "parse_release_line",
]

DPKG_STATUS: Final = "/var/lib/dpkg/status"
"""The dpkg status "index": installed versions, not a repository (never an :class:`AptSource`)."""

LOCAL_URI_SCHEMES: Final = frozenset({"file", "copy", "cdrom"})
"""URI schemes of repositories on the host's own file system."""

DISTRIBUTION_ORIGINS: Final = frozenset({"Debian", "Ubuntu", "UbuntuESM", "UbuntuESMApps"})
"""``Release`` Origins (or Labels, when there is no Origin) of the distributions' own archives."""

_OUTSIDE_UPDATE_STREAM_SUFFIXES: Final = ("-backports", "-backports-sloppy", "-proposed")
_OUTSIDE_UPDATE_STREAM_ARCHIVES: Final = ("proposed-updates",)
_OUTSIDE_UPDATE_STREAM_ORIGINS: Final = frozenset({"Debian Backports"})

_RANK: Final[Mapping[UpdateOrigin, int]] = {
    UpdateOrigin.SECURITY: 4,
    UpdateOrigin.POINT_RELEASE: 3,
    UpdateOrigin.THIRD_PARTY: 2,
    UpdateOrigin.LOCAL: 1,
    UpdateOrigin.UNKNOWN: 0,
}
"""When several indexes offer the same version, the highest-ranked kind wins."""

_FILE_RE: Final = re.compile(r"^ *(?P<prio>-?\d+) (?P<desc>\S.*?)\s*$")
_RELEASE_RE: Final = re.compile(r"^ +release(?: (?P<rel>.*?))?\s*$")
_SITE_RE: Final = re.compile(r"^ +origin (?P<site>\S+)\s*$")
_RELEASE_SPLIT_RE: Final = re.compile(r",(?=[voanlcb]=)")
_RELEASE_KEYS: Final = frozenset("voanlcb")

# AptCandidatePolicy
_PKG_HEADER_RE: Final = re.compile(r"^(?P<name>[a-z0-9][a-z0-9+.:-]*):\s*$")
_FIELD_RE: Final = re.compile(r"^  (?P<key>Installed|Candidate|Package pin): (?P<value>\S+)\s*$")
_TABLE_RE: Final = re.compile(r"^  Version table:\s*$")
_VERSION_LINE_RE: Final = re.compile(r"^ (?P<mark>\*\*\*|   ) (?P<ver>[^\s]+) (?P<prio>-?\d+)\s*$")
_VERSION_SOURCE_RE: Final = re.compile(r"^ {7,}(?P<prio>-?\d+) (?P<desc>\S.*?)\s*$")
_VERSION_RE: Final = re.compile(r"^(?:\d+:)?[A-Za-z0-9.+~:-]+$")
_NONE: Final = "(none)"


# --------------------------------------------------------------------------- models


class PolicySource(Record):
    """One package index offering a version, as listed under it in ``apt-cache policy PKG``.

    Example: ``500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages``
    is ``PolicySource(priority=500, uri="http://deb.debian.org/debian-security",
    dist="bookworm-security", component="main", arch="amd64")``.
    """

    priority: int
    uri: str
    dist: str
    component: str | None = None
    arch: str | None = None


class PolicyVersion(Record):
    """One row of a package's version table.

    ``sources`` never contains the dpkg status file: a version with ``installed=True`` and no
    source is installed but no longer offered by any configured repository.
    """

    version: str
    priority: int = Field(description="the version's pin priority (the number after it)")
    installed: bool = Field(default=False, description="marked '***': the installed version")
    sources: tuple[PolicySource, ...] = ()


class PackagePolicy(Record):
    """``apt-cache policy PKG`` for one package: installed, candidate and the version table.

    Example (``bash`` on this Debian 12 machine): ``PackagePolicy(installed="5.2.15-2+b8",
    candidate="5.2.15-2+b13", versions=(PolicyVersion(version="5.2.15-2+b13", priority=500,
    sources=(PolicySource(priority=500, uri="http://deb.debian.org/debian", dist="bookworm",
    component="main", arch="amd64"),)), PolicyVersion(version="5.2.15-2+b8", priority=100,
    installed=True)))``.
    """

    installed: str | None = Field(description="None when not installed ('(none)')")
    candidate: str | None = Field(description="None when no version is installable ('(none)')")
    versions: tuple[PolicyVersion, ...] = ()

    def sources_of(self, version: str) -> tuple[PolicySource, ...]:
        """The indexes offering ``version`` (empty when the table does not list it)."""
        for row in self.versions:
            if row.version == version:
                return row.sources
        return ()


# --------------------------------------------------------------------------- parsing helpers


def parse_index_description(
    description: str, fact: str = "AptPolicy"
) -> tuple[str, str, str | None, str | None]:
    """Split an index description (``pkgIndexFile::Describe(true)``) into its parts.

    The description is read from the right, because only the URI may contain spaces
    (``cdrom://[Debian GNU/Linux 12.5.0 _Bookworm_ - Official amd64 DVD Binary-1]``).

    Args:
        description: ``URI DIST/COMPONENT ARCH Packages`` or, for a flat repository,
            ``URI DIR/ Packages``.
        fact: fact name used in errors.

    Returns:
        ``(uri, dist, component, arch)``; ``component`` and ``arch`` are ``None`` for a flat
        repository. The component is what follows the *last* ``/`` (``buster/updates/main`` is
        dist ``buster/updates``, component ``main``).

    Raises:
        FactParseError: the description has another shape.
    """
    parts = description.split(" ")
    if len(parts) >= 3 and parts[-1] == "Packages" and all(parts):
        if parts[-2].endswith("/"):
            return " ".join(parts[:-2]), parts[-2], None, None
        dist, _, component = parts[-3].rpartition("/")
        if len(parts) >= 4 and dist and component:
            return " ".join(parts[:-3]), dist, component, parts[-2]
    raise FactParseError(fact, "unrecognised package index description", line=description)


def parse_release_line(release: str) -> dict[str, str]:
    """Parse ``RelStr`` (``v=12,o=Debian,a=oldstable-security,...``) into a dict.

    Keys are the single letters apt prints (``v o a n l c b``). A value may itself contain a
    comma (the next key starts only at ``,X=`` with ``X`` one of those letters), and may be
    empty (``c=`` for a flat repository without a ``Release`` file).

    Args:
        release: the text after ``release``.

    Returns:
        ``{"v": "12", "o": "Debian", ...}``; ``{}`` for an empty string.

    Raises:
        ValueError: a part is not ``KEY=VALUE`` with a known key, or a key repeats.
    """
    fields: dict[str, str] = {}
    if not release:
        return fields
    for part in _RELEASE_SPLIT_RE.split(release):
        key, sep, value = part.partition("=")
        if not sep or key not in _RELEASE_KEYS:
            raise ValueError(f"not a release field: {part!r}")
        if key in fields:
            raise ValueError(f"release field {key!r} repeats")
        fields[key] = value
    return fields


def apt_release_string(source: AptSource) -> str:
    """The origin string ``apt-get -s`` prints for a version from ``source``.

    apt's ``VerIterator::RelStr``: ``Label:Version/Archive``, ``Label:Archive`` without a
    version, the archive alone without a label, or, when the index has no ``Release`` file at
    all, its site or ``localhost`` (a flat ``file:`` repository):
    ``Debian-Security:12/oldstable-security``, ``stable``, ``localhost`` (verified with
    ``apt-get -s`` against local repositories).

    Args:
        source: a parsed index.

    Returns:
        The string, comparable with :attr:`PendingUpdate.origins` entries.
    """
    label = f"{source.label}:" if source.label else ""
    if source.archive:
        archive = f"{source.version}/{source.archive}" if source.version else source.archive
        return label + archive
    return label + (source.site or "localhost")


def _none_if_empty(value: str | None) -> str | None:
    return value or None


def classify_source(
    source: AptSource, *, distribution_origins: frozenset[str] = DISTRIBUTION_ORIGINS
) -> UpdateOrigin:
    """Classify a package index by what it carries, then by where it is.

    The rules, first match wins:

    1. **SECURITY** -- the same rule as :func:`patchpilot.tools.facts.apt.is_security_origin`
       applied to
       :func:`apt_release_string` (archive ending in ``-security`` or label
       ``Debian-Security``), or the dist itself ends in ``-security`` (an index without a
       ``Release`` archive). Checked before LOCAL on purpose: a ``file:`` mirror of a security
       suite still delivers security fixes, and ``apt-get -s`` already marks them security.
    2. **THIRD_PARTY** for backports and pre-release suites of the distribution (archive or
       dist ending in ``-backports``, ``-backports-sloppy``, ``-proposed``, ``proposed-updates``,
       origin ``Debian Backports``) on the network: they are opt-in, newer upstream versions
       without the stable security support, so policy must not treat them like a point release.
       (Choice documented here; ``UpdateOrigin`` has no dedicated value for them.)
    3. **POINT_RELEASE** -- Origin (or Label when there is no Origin) in
       ``distribution_origins``: the release itself and its ``-updates`` suite, whether fetched
       over the network or from a local mirror.
    4. **LOCAL** -- any other ``file:``, ``copy:`` or ``cdrom:`` index.
    5. **THIRD_PARTY** -- any other network repository (vendors, PPAs, Docker, ...).

    An Origin of ``Debian`` is trusted as written: apt's own pinning (``o=Debian``) does the same.

    Args:
        source: the index (its ``kind`` is ignored).
        distribution_origins: Origins counted as the distribution's own archive.

    Returns:
        The kind; never ``UNKNOWN``.
    """
    archive = source.archive or ""
    suite = source.dist.rstrip("/")
    if is_security_origin(apt_release_string(source)) or suite.endswith(SECURITY_SUITE_SUFFIX):
        return UpdateOrigin.SECURITY
    local = source.uri.partition(":")[0].lower() in LOCAL_URI_SCHEMES
    outside_stream = (
        any(name.endswith(_OUTSIDE_UPDATE_STREAM_SUFFIXES) for name in (archive, suite))
        or any(name.endswith(_OUTSIDE_UPDATE_STREAM_ARCHIVES) for name in (archive, suite))
        or source.origin in _OUTSIDE_UPDATE_STREAM_ORIGINS
    )
    if outside_stream:
        return UpdateOrigin.LOCAL if local else UpdateOrigin.THIRD_PARTY
    vendor = source.origin if source.origin is not None else source.label
    if vendor in distribution_origins:
        return UpdateOrigin.POINT_RELEASE
    return UpdateOrigin.LOCAL if local else UpdateOrigin.THIRD_PARTY


# --------------------------------------------------------------------------- AptPolicy


class AptPolicy(Fact[list[AptSource]]):
    """Every package index apt reads (``apt-cache policy`` without arguments).

    Runs ``apt-cache policy`` with ``LC_ALL=C``: read-only, no root. The dpkg status file
    (``100 /var/lib/dpkg/status``) is **skipped**: it lists installed versions, not a
    repository. The ``Pinned packages:`` section is ignored. Each index's ``kind`` is set by
    :func:`classify_source`.

    Returns:
        ``list[AptSource]`` in apt's order (possibly empty: a host with no repository). Example:
        ``AptSource(priority=500, uri="http://deb.debian.org/debian-security",
        dist="bookworm-security", component="main", arch="amd64", origin="Debian",
        label="Debian-Security", archive="oldstable-security", codename="bookworm-security",
        version="12", site="deb.debian.org", kind=UpdateOrigin.SECURITY)``; a flat ``file:``
        repository without ``Release``: ``AptSource(priority=500, uri="file:/srv/acme-repo",
        dist="./", kind=UpdateOrigin.LOCAL)``.

    Raises:
        FactParseError: no ``Package files:`` header, or a line of that section does not have
            one of the three shapes (index, ``release``, ``origin``).
        CommandFailedError: apt-cache exited non-zero (e.g. a broken sources.list).
    """

    name: ClassVar[str] = "AptPolicy"

    def command(self) -> list[str]:
        """Return ``apt-cache policy`` (no arguments)."""
        return ["apt-cache", "policy"]

    def parse(self, result: CommandResult) -> list[AptSource]:
        """Parse the ``Package files:`` section; see the class docstring."""
        self.check_result(result)
        lines = [raw.removesuffix("\r") for raw in result.stdout.split("\n")]
        try:
            start = next(i for i, line in enumerate(lines) if line.strip() == "Package files:")
        except StopIteration:
            raise FactParseError(
                self.name,
                "no 'Package files:' header: not apt-cache policy output" + stderr_tail(result),
            ) from None
        blocks: list[tuple[str, list[str]]] = []
        for line in lines[start + 1 :]:
            if line.strip() == "Pinned packages:":
                break
            if not line.strip():
                continue
            if _FILE_RE.match(line) and not line.startswith("     "):
                blocks.append((line, []))
            elif blocks and (_RELEASE_RE.match(line) or _SITE_RE.match(line)):
                blocks[-1][1].append(line)
            else:
                raise FactParseError(self.name, "unexpected line in 'Package files:'", line=line)
        sources: list[AptSource] = []
        for head, details in blocks:
            source = self._source(head, details)
            if source is not None:
                sources.append(source)
        return sources

    def _source(self, head: str, details: list[str]) -> AptSource | None:
        match = _FILE_RE.match(head)
        assert match is not None  # checked by the caller
        if match["desc"] == DPKG_STATUS:
            return None
        uri, dist, component, arch = parse_index_description(match["desc"], self.name)
        release: dict[str, str] = {}
        site: str | None = None
        for line in details:
            if (rel := _RELEASE_RE.match(line)) is not None:
                if release:
                    raise FactParseError(self.name, "two release lines for one index", line=line)
                try:
                    release = parse_release_line(rel["rel"] or "")
                except ValueError as exc:
                    raise FactParseError(self.name, str(exc), line=line) from None
            elif (found := _SITE_RE.match(line)) is not None:
                if site is not None:
                    raise FactParseError(self.name, "two origin lines for one index", line=line)
                site = found["site"]
        source = AptSource(
            priority=int(match["prio"]),
            uri=uri,
            dist=dist,
            component=component,
            arch=arch,
            origin=_none_if_empty(release.get("o")),
            label=_none_if_empty(release.get("l")),
            archive=_none_if_empty(release.get("a")),
            codename=_none_if_empty(release.get("n")),
            version=_none_if_empty(release.get("v")),
            site=site,
        )
        return source.model_copy(update={"kind": classify_source(source)})


# --------------------------------------------------------------------------- AptCandidatePolicy


class AptCandidatePolicy(Fact[dict[str, PackagePolicy]]):
    """Installed and candidate versions of some packages, and which indexes offer each version.

    Runs ``apt-cache policy -- PKG...`` (``LC_ALL=C``; no root). Every name is validated with
    :func:`patchpilot.core.validate.validate_package_name` (Debian rules) before it reaches the
    argv, and
    follows ``--`` so it can never be read as an option.

    apt prints one block per package found::

        openssl:
          Installed: 3.0.19-1~deb12u2
          Candidate: 3.0.22-1~deb12u2
          Version table:
             3.0.22-1~deb12u2 500
                500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
         *** 3.0.19-1~deb12u2 100
                100 /var/lib/dpkg/status

    An unknown name prints nothing at all (exit 0; the ``N: Unable to locate package`` notice
    is not shown at apt's default verbosity), so it is simply absent from the result. A name
    that is not an exact package name but contains ``.`` or ``+`` is taken by apt-cache as a
    *regular expression* (``bash-completio.`` prints ``bash-completion``,
    ``elpa-bash-completion``, ...): blocks for names that were not requested are dropped. Keys are
    the names as apt prints them (``Pkg.FullName(true)``): a native-architecture qualifier is
    dropped (``libssl3:amd64`` comes back as ``libssl3``), a foreign one is kept
    (``libc6:i386``). A virtual package prints ``(none)`` for both versions and an empty table.

    Args:
        packages: one or more Debian package names (optionally ``name:arch``).

    Returns:
        ``dict[str, PackagePolicy]`` in apt's order, e.g. ``{"bash": PackagePolicy(
        installed="5.2.15-2+b8", candidate="5.2.15-2+b13", versions=(...))}``; empty when none
        of the names is known.

    Raises:
        UnsafeArgumentError: (constructor) no package, or a name is not a Debian package name.
        FactParseError: a block lacks ``Installed``/``Candidate``/``Version table``, a line has
            another shape, or a version is malformed.
        CommandFailedError: apt-cache exited non-zero.
    """

    name: ClassVar[str] = "AptCandidatePolicy"

    def __init__(self, packages: Sequence[str]) -> None:
        if isinstance(packages, str):
            raise UnsafeArgumentError(
                "package list", packages, "expected a sequence of names, not a string"
            )
        names = tuple(validate_package_name(p, Ecosystem.DEBIAN) for p in packages)
        if not names:
            # With no argument apt-cache policy prints the global policy instead.
            raise UnsafeArgumentError("package list", "", "at least one package is required")
        self.packages: tuple[str, ...] = tuple(dict.fromkeys(names))

    def __repr__(self) -> str:
        return f"AptCandidatePolicy(packages={list(self.packages)!r})"

    def command(self) -> list[str]:
        """Return ``apt-cache policy -- PKG...`` (validated names after ``--``)."""
        return ["apt-cache", "policy", "--", *self.packages]

    def parse(self, result: CommandResult) -> dict[str, PackagePolicy]:
        """Parse every package block; see the class docstring."""
        self.check_result(result)
        policies: dict[str, PackagePolicy] = {}
        block: _Block | None = None
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if not line.strip():
                continue
            if (header := _PKG_HEADER_RE.match(line)) is not None:
                if block is not None:
                    policies[block.name] = block.finish(self.name)
                if header["name"] in policies:
                    raise FactParseError(self.name, "package listed twice", line=line)
                block = _Block(header["name"])
            elif block is None:
                raise FactParseError(
                    self.name, "output does not start with a 'PACKAGE:' line", line=line
                )
            else:
                block.feed(line, self.name)
        if block is not None:
            policies[block.name] = block.finish(self.name)
        return {name: policy for name, policy in policies.items() if self._requested(name)}

    def _requested(self, printed: str) -> bool:
        """Whether apt printed ``printed`` for one of our names (not a regex match)."""
        return printed in self.packages or any(
            printed == name.partition(":")[0] for name in self.packages
        )


class _Block:
    """Accumulates one package's block of ``apt-cache policy PKG`` output."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, str | None] = {}
        self.in_table = False
        self.versions: list[tuple[str, int, bool, list[PolicySource]]] = []

    def feed(self, line: str, fact: str) -> None:
        if not self.in_table:
            if (field := _FIELD_RE.match(line)) is not None:
                key, value = field["key"], field["value"]
                if key in self.fields:
                    raise FactParseError(fact, f"{key} listed twice", line=line)
                if key != "Package pin" and value != _NONE and not _VERSION_RE.match(value):
                    raise FactParseError(fact, f"malformed {key.lower()} version", line=line)
                self.fields[key] = None if value == _NONE else value
                return
            if _TABLE_RE.match(line):
                self.in_table = True
                return
            raise FactParseError(fact, "unexpected line before the version table", line=line)
        if (version := _VERSION_LINE_RE.match(line)) is not None:
            if not _VERSION_RE.match(version["ver"]):
                raise FactParseError(fact, "malformed version in the version table", line=line)
            self.versions.append(
                (version["ver"], int(version["prio"]), version["mark"] == "***", [])
            )
            return
        if (src := _VERSION_SOURCE_RE.match(line)) is not None and self.versions:
            if src["desc"] == DPKG_STATUS:
                return
            uri, dist, component, arch = parse_index_description(src["desc"], fact)
            self.versions[-1][3].append(
                PolicySource(
                    priority=int(src["prio"]), uri=uri, dist=dist, component=component, arch=arch
                )
            )
            return
        raise FactParseError(fact, "unexpected line in the version table", line=line)

    def finish(self, fact: str) -> PackagePolicy:
        for key in ("Installed", "Candidate"):
            if key not in self.fields:
                raise FactParseError(fact, f"package {self.name!r} has no '{key}:' line")
        if not self.in_table:
            raise FactParseError(fact, f"package {self.name!r} has no 'Version table:'")
        installed = self.fields["Installed"]
        marked = [ver for ver, _, mark, _ in self.versions if mark]
        if len(marked) > 1 or (marked and marked[0] != installed):
            raise FactParseError(
                fact, f"package {self.name!r}: '***' row disagrees with 'Installed: {installed}'"
            )
        return PackagePolicy(
            installed=installed,
            candidate=self.fields["Candidate"],
            versions=tuple(
                PolicyVersion(version=ver, priority=prio, installed=mark, sources=tuple(srcs))
                for ver, prio, mark, srcs in self.versions
            ),
        )


# --------------------------------------------------------------------------- classification


def _best(kinds: Iterable[UpdateOrigin]) -> UpdateOrigin:
    return max(kinds, key=_RANK.__getitem__, default=UpdateOrigin.UNKNOWN)


def _kind_of_policy_source(src: PolicySource, sources: Sequence[AptSource]) -> UpdateOrigin:
    for candidate in sources:
        if (
            candidate.uri == src.uri
            and candidate.dist == src.dist
            and candidate.component == src.component
            and (candidate.arch == src.arch or None in (candidate.arch, src.arch))
        ):
            return candidate.kind
    # Not in the global policy (the two facts were gathered at different times): what the
    # line itself tells.
    if src.dist.rstrip("/").endswith(SECURITY_SUITE_SUFFIX):
        return UpdateOrigin.SECURITY
    if src.uri.partition(":")[0].lower() in LOCAL_URI_SCHEMES:
        return UpdateOrigin.LOCAL
    return UpdateOrigin.UNKNOWN


def _kind_of_origin_string(origin: str, sources: Sequence[AptSource]) -> UpdateOrigin:
    matches = [s.kind for s in sources if apt_release_string(s) == origin]
    if matches:
        return _best(matches)
    if is_security_origin(origin):
        return UpdateOrigin.SECURITY
    if origin == "localhost":
        # apt prints "localhost" for an index with neither Release file nor site: a flat
        # file: (or copy:/cdrom:) repository.
        return UpdateOrigin.LOCAL
    return UpdateOrigin.UNKNOWN


def classify_update(
    update: PendingUpdate, policy: PackagePolicy | None, sources: Sequence[AptSource]
) -> PendingUpdate:
    """Return a copy of ``update`` with :attr:`~PendingUpdate.origin` set.

    1. ``update.security`` is True -> SECURITY (always, so the two never disagree).
    2. With a ``policy`` listing the candidate version: each index offering it is looked up in
       ``sources`` (the global :class:`AptPolicy`, by URI, dist, component and architecture)
       for its ``kind``; an index missing there counts as SECURITY for a ``-security`` dist,
       LOCAL for a local URI, else UNKNOWN.
    3. Otherwise from ``update.origins`` (``apt-get -s`` strings): each is compared with
       :func:`apt_release_string` of every source; unmatched strings count as SECURITY when
       :func:`~patchpilot.tools.facts.apt.is_security_origin` says so, LOCAL for ``localhost``
       (apt's name
       for a flat repository without ``Release``), else UNKNOWN.

    When several indexes offer the candidate, the strongest kind wins: SECURITY over
    POINT_RELEASE over THIRD_PARTY over LOCAL over UNKNOWN (a version that is both in the
    security suite and the point release *is* a security update).

    Args:
        update: the pending update (from :class:`~patchpilot.tools.facts.AptPendingUpdates`).
        policy: the package's :class:`PackagePolicy`, or ``None`` when not gathered.
        sources: the host's indexes (from :class:`AptPolicy`), possibly empty.

    Returns:
        ``update.model_copy(update={"origin": kind})``.
    """
    if update.security:
        return update.model_copy(update={"origin": UpdateOrigin.SECURITY})
    kind = UpdateOrigin.UNKNOWN
    offered = policy.sources_of(update.candidate_version) if policy is not None else ()
    if offered:
        kind = _best(_kind_of_policy_source(src, sources) for src in offered)
    if kind is UpdateOrigin.UNKNOWN and update.origins:
        kind = _best(_kind_of_origin_string(origin, sources) for origin in update.origins)
    return update.model_copy(update={"origin": kind})


def classify_updates(
    updates: Iterable[PendingUpdate],
    policies: Mapping[str, PackagePolicy],
    sources: Sequence[AptSource],
) -> list[PendingUpdate]:
    """:func:`classify_update` for many updates, finding each package's policy by name.

    The policy is looked up as ``name:arch`` first (apt keeps foreign-architecture qualifiers),
    then ``name``.

    Args:
        updates: pending updates.
        policies: the result of :class:`AptCandidatePolicy` for (some of) their names.
        sources: the result of :class:`AptPolicy`.

    Returns:
        The classified copies, in order.
    """
    classified: list[PendingUpdate] = []
    for update in updates:
        policy = policies.get(f"{update.name}:{update.arch}") if update.arch else None
        if policy is None:
            policy = policies.get(update.name)
        classified.append(classify_update(update, policy, sources))
    return classified

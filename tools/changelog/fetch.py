"""Fetch a candidate package's Debian changelog *on the host* and cache it on the controller.

The host downloads the candidate ``.deb`` from its own repositories (``apt-get download``, which
needs no root: it writes to the current directory) into a private temporary directory, extracts
``/usr/share/doc/<package>/changelog.Debian.gz`` and prints it base64-encoded, so the binary
bytes survive any transport. This is what Vuls' deep scan reads to tell which CVEs a pending
update fixes; unlike ``apt-get changelog`` it needs no access to ``metadata.ftp-master`` or
``changelogs.ubuntu.com``: only the mirror the host already uses.

The command is a *constant* ``sh -c`` script; the package spec reaches it only as the positional
parameter ``$1`` (never interpolated into the script text) after both halves were validated by
:mod:`patchpilot.core.validate`. The script's exit codes:

* 0: stdout is the archive member's path on the first line, then the base64 of its bytes;
* 3: the ``.deb`` ships no changelog (its doc directory is a symlink to a sibling's);
* 4: ``apt-get download`` succeeded but left no single ``.deb``;
* 5: ``dpkg-deb``/``tar`` failed (stderr says why);
* 6: the compressed changelog is larger than :data:`MAX_CHANGELOG_BYTES`;
* 100: ``apt-get`` failed (classified from its ``E:`` lines by :func:`classify_failure`).

:class:`ChangelogFetcher` parses what it fetched, caches the entries as JSON under
``cache_dir/changelogs/<source>/<source_version>.json`` (plus an ``index.json`` mapping a binary
version to its source version, so the next host asking for the same binary version runs no
command at all), and answers "which CVEs lie between the installed and the candidate version".
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Final, Literal

import structlog
from pydantic import Field, ValidationError

from patchpilot.core import versions
from patchpilot.core.errors import (
    AuthenticationError,
    CommandTimeoutError,
    HostConnectError,
    HostKeyError,
    InvalidVersionError,
)
from patchpilot.core.models import (
    ChangelogUrgency,
    CommandResult,
    Ecosystem,
    InstalledPackage,
    PendingUpdate,
    Record,
)
from patchpilot.core.validate import validate_package_name, validate_version
from patchpilot.tools.changelog.errors import (
    ChangelogError,
    ChangelogFetchError,
    ChangelogNotShipped,
    ChangelogParseError,
    ChangelogUnavailable,
)
from patchpilot.tools.changelog.parse import (
    ChangelogEntry,
    count_between,
    cves_between,
    parse_changelog_with_source,
    urgency_between,
)
from patchpilot.tools.facts.base import FACT_ENV, Fact, stderr_tail
from patchpilot.tools.transport.base import Transport

__all__ = [
    "FETCH_SCRIPT",
    "MAX_CHANGELOG_BYTES",
    "MAX_CHANGELOG_TEXT_BYTES",
    "ChangelogFetcher",
    "ChangelogResult",
    "DebianChangelogFact",
    "FetchedChangelog",
    "classify_failure",
]

_log = structlog.get_logger(__name__)

MAX_CHANGELOG_BYTES: Final = 4 * 1024 * 1024
"""Largest compressed changelog the host sends (the script refuses larger ones with exit 6)."""

MAX_CHANGELOG_TEXT_BYTES: Final = 32 * 1024 * 1024
"""Largest decompressed changelog accepted (a guard against gzip bombs)."""

EXIT_NOT_SHIPPED: Final = 3
EXIT_NO_DEB: Final = 4
EXIT_EXTRACT_FAILED: Final = 5
EXIT_TOO_LARGE: Final = 6
EXIT_APT_FAILED: Final = 100
EXIT_COMMAND_NOT_FOUND: Final = 127

FETCH_SCRIPT: Final = f"""set -eu
umask 077
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
if [ "$(id -u)" -eq 0 ] && id -u _apt >/dev/null 2>&1; then chown _apt "$d" 2>/dev/null || :; fi
cd "$d"
p=${{1%%=*}}
p=${{p%%:*}}
apt-get download -q "$1" >/dev/null
set -- ./*.deb
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
  echo "patchpilot: apt-get download did not leave exactly one .deb" >&2
  exit {EXIT_NO_DEB}
fi
mkdir x
if ! dpkg-deb --fsys-tarfile "$1" | tar -x -C x --wildcards \\
    './usr/share/doc/*/changelog.Debian.gz' './usr/share/doc/*/changelog.gz' 2>tar.err; then
  if ! grep -q 'Not found in archive' tar.err; then
    cat tar.err >&2
    exit {EXIT_EXTRACT_FAILED}
  fi
fi
for f in "x/usr/share/doc/$p/changelog.Debian.gz" x/usr/share/doc/*/changelog.Debian.gz \\
    "x/usr/share/doc/$p/changelog.gz" x/usr/share/doc/*/changelog.gz; do
  if [ -f "$f" ] && [ ! -L "$f" ]; then
    if [ "$(wc -c <"$f")" -gt {MAX_CHANGELOG_BYTES} ]; then
      echo "patchpilot: ${{f#x}} is larger than {MAX_CHANGELOG_BYTES} bytes" >&2
      exit {EXIT_TOO_LARGE}
    fi
    echo "${{f#x}}"
    base64 "$f"
    exit 0
  fi
done
echo "patchpilot: the package ships no changelog.Debian.gz (its doc directory may be a symlink)" >&2
exit {EXIT_NOT_SHIPPED}
"""
"""The constant script run as ``sh -c FETCH_SCRIPT sh NAME=VERSION``.

``apt-get download`` runs unprivileged in a ``mktemp -d`` directory removed on exit. As root the
directory is handed to ``_apt`` so apt keeps its download sandbox (otherwise it warns that it
downloads "unsandboxed as root"). ``/usr/share/doc/<package>/changelog.Debian.gz`` is preferred,
then any ``changelog.Debian.gz`` in the package, then a native package's ``changelog.gz``;
symlinked members are never followed (they would point at the host's installed files).
"""

_E_LINE = re.compile(r"^E: (.*)$", re.MULTILINE)
_NETWORK_HINTS: Final = (
    "could not resolve",
    "temporary failure resolving",
    "could not connect",
    "connection failed",
    "connection timed out",
    "connection refused",
    "network is unreachable",
    "no route to host",
    "unable to connect",
    "hash sum mismatch",
    "size mismatch",
    "connection reset",
    "proxy",
    "tls",
    "certificate",
)
_UNSAFE_FILE_CHARS = re.compile(r"[^A-Za-z0-9.+~_-]")
_BINNMU = re.compile(r"\+b[0-9]+$")
_CACHE_FORMAT: Final = 1
_MAX_TIMEOUTS_PER_HOST: Final = 2


# --------------------------------------------------------------------------- the remote command


class FetchedChangelog(Record):
    """A changelog as the host sent it: the archive member and its decompressed text."""

    member: str = Field(description="path inside the .deb, e.g. /usr/share/doc/libssl3/...")
    text: str
    compressed_size: int = Field(ge=0)


def classify_failure(result: CommandResult, *, package: str, version: str) -> ChangelogError:
    """Map a failed fetch command to the matching :class:`ChangelogError` (pure).

    Args:
        result: the command's result (exit code non-zero).
        package: the binary package asked for.
        version: the candidate version asked for.

    Returns:
        The error to raise; its message says what happened and what to do.
    """
    where = {"package": package, "version": version, "host": result.host}
    code = result.exit_code
    stderr = result.stderr
    if code == EXIT_NOT_SHIPPED:
        return ChangelogNotShipped(
            "the .deb ships no changelog.Debian.gz (its /usr/share/doc directory is probably a "
            "symlink to another binary package of the same source): ask for that binary instead",
            **where,
        )
    if code == EXIT_TOO_LARGE:
        return ChangelogError(
            f"the compressed changelog exceeds {MAX_CHANGELOG_BYTES} bytes; refusing it", **where
        )
    if code == EXIT_COMMAND_NOT_FOUND:
        return ChangelogError(
            "a required command is missing on the host (changelogs need sh, apt-get, dpkg-deb, "
            f"tar and base64: a Debian-family host){stderr_tail(result)}",
            **where,
        )
    if code in (EXIT_NO_DEB, EXIT_EXTRACT_FAILED):
        return ChangelogError(
            f"could not unpack the downloaded .deb (exit {code}){stderr_tail(result)}", **where
        )
    errors = [line.strip() for line in _E_LINE.findall(stderr)]
    if not errors:
        return ChangelogError(
            f"the fetch command exited {code}{stderr_tail(result)}; run "
            f"'apt-get download {package}={version}' on the host to see why",
            **where,
        )
    first = errors[0]
    low = " ".join(errors).lower()
    if "can't find a source to download version" in low:
        return ChangelogUnavailable(
            f"no repository configured on the host offers this version any more ({first}); it "
            "was probably superseded on the mirror: run 'apt-get update' on the host and rescan",
            **where,
        )
    if "was not found" in low and first.startswith("Version "):
        return ChangelogUnavailable(
            f"apt on the host does not know this version ({first}); its package lists may be "
            "stale: run 'apt-get update' on the host and rescan",
            **where,
        )
    if "unable to locate package" in low or "has no installation candidate" in low:
        return ChangelogUnavailable(
            f"apt on the host knows no such package ({first}); check the name and the host's "
            "apt sources",
            **where,
        )
    if "failed to fetch" in low and ("404" in low or "not found" in low):
        return ChangelogUnavailable(
            f"the mirror no longer has this file ({first}); the host's package lists are stale: "
            "run 'apt-get update' on the host and rescan",
            **where,
        )
    if "failed to fetch" in low or any(hint in low for hint in _NETWORK_HINTS):
        return ChangelogFetchError(
            f"the host could not download the package from its mirror ({first}); check the "
            "host's network, DNS and apt proxy settings",
            **where,
        )
    return ChangelogError(f"apt-get download failed: {first}", **where)


def _gunzip(data: bytes, *, package: str, version: str, host: str) -> bytes:
    """Decompress (possibly multi-member) gzip data, refusing more than the text cap."""
    out = bytearray()
    rest = data
    try:
        while rest:
            inflater = zlib.decompressobj(wbits=31)
            out += inflater.decompress(rest, MAX_CHANGELOG_TEXT_BYTES + 1 - len(out))
            if len(out) > MAX_CHANGELOG_TEXT_BYTES or inflater.unconsumed_tail:
                raise ChangelogError(
                    f"the changelog decompresses to more than {MAX_CHANGELOG_TEXT_BYTES} bytes; "
                    "refusing it",
                    package=package,
                    version=version,
                    host=host,
                )
            if not inflater.eof:
                raise ChangelogParseError(
                    "the gzip data is truncated", package=package, version=version, host=host
                )
            rest = inflater.unused_data.lstrip(b"\x00")
    except zlib.error as exc:
        raise ChangelogParseError(
            f"the changelog is not valid gzip data: {exc}",
            package=package,
            version=version,
            host=host,
        ) from None
    return bytes(out)


class DebianChangelogFact(Fact[FetchedChangelog]):
    """The changelog shipped in the candidate ``.deb`` of one binary package version.

    Args:
        package: the binary package name (``libssl3``; an ``:arch`` qualifier is accepted).
        version: the exact version to download (the candidate binary version).

    Raises:
        UnsafeArgumentError: the name or the version is refused by :mod:`patchpilot.core.validate`.
    """

    name: ClassVar[str] = "DebianChangelog"
    ok_exit_codes: ClassVar[frozenset[int]] = frozenset({0})

    def __init__(self, package: str, version: str) -> None:
        self.package = validate_package_name(package, Ecosystem.DEBIAN)
        self.version = validate_version(version, Ecosystem.DEBIAN)

    def command(self) -> list[str]:
        """``["sh", "-c", FETCH_SCRIPT, "sh", "NAME=VERSION"]``: the spec is ``$1``, never code."""
        return ["sh", "-c", FETCH_SCRIPT, "sh", f"{self.package}={self.version}"]

    def parse(self, result: CommandResult) -> FetchedChangelog:
        """Decode the member name and the base64 gzip bytes; map failures to changelog errors.

        Raises:
            ChangelogError: (or a subclass) the command failed; see :func:`classify_failure`.
            ChangelogParseError: the output is truncated or is not base64 gzip data.
        """
        where = {"package": self.package, "version": self.version, "host": result.host}
        if result.exit_code != 0:
            raise classify_failure(result, package=self.package, version=self.version)
        if result.truncated:
            raise ChangelogParseError(
                "the output was truncated by the transport; refusing a partial changelog", **where
            )
        member, _, payload = result.stdout.partition("\n")
        member = member.strip()
        if not member.startswith("/usr/share/doc/") or not member.endswith(".gz"):
            raise ChangelogParseError(
                f"unexpected first output line {member[:120]!r} (expected the changelog's path)",
                **where,
            )
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ChangelogParseError(f"the output is not base64: {exc}", **where) from None
        if len(data) > MAX_CHANGELOG_BYTES:
            raise ChangelogError(
                f"the compressed changelog exceeds {MAX_CHANGELOG_BYTES} bytes", **where
            )
        raw = _gunzip(data, package=self.package, version=self.version, host=result.host)
        return FetchedChangelog(
            member=member,
            text=raw.decode("utf-8", errors="replace"),
            compressed_size=len(data),
        )

    def __repr__(self) -> str:
        return f"DebianChangelogFact({self.package!r}, {self.version!r})"


# --------------------------------------------------------------------------- results and cache


class ChangelogResult(Record):
    """Which CVEs a pending update's changelog mentions between installed and candidate."""

    cves: tuple[str, ...] = Field(description="CVE ids, newest entry first, deduplicated")
    entries_considered: int = Field(ge=0, description="entries with installed < version <= cand.")
    urgency: ChangelogUrgency | None = Field(
        default=None, description="the highest urgency= of those entries (None: none stated)"
    )
    from_cache: bool = Field(description="True when no remote command ran")
    source: str = Field(description="the source package")
    source_version: str = Field(description="the candidate source version (the upper bound)")


class _CachedChangelog(Record):
    """On-disk form of one parsed changelog (``<source>/<source_version>.json``)."""

    format: Literal[1] = _CACHE_FORMAT
    source: str
    source_version: str
    binary: str
    binary_version: str
    member: str
    host: str
    fetched_at: datetime
    entries: tuple[ChangelogEntry, ...]


class _BinaryIndex(Record):
    """On-disk ``<source>/index.json``: ``"binary=version"`` → candidate source version."""

    format: Literal[1] = _CACHE_FORMAT
    binaries: dict[str, str] = Field(default_factory=dict)


def _file_component(value: str) -> str:
    """A file name for an already-validated name or version (``:`` and others escaped, 1:1)."""
    safe = _UNSAFE_FILE_CHARS.sub(lambda m: f"%{ord(m.group(0)):02X}", value)
    if safe.startswith("."):
        safe = "%2E" + safe[1:]
    return safe


def _base_name(binary: str) -> str:
    """The package name without an ``:arch`` qualifier (changelogs do not depend on it)."""
    return binary.partition(":")[0]


class ChangelogFetcher:
    """Fetches, parses and caches Debian changelogs; answers which CVEs an update mentions.

    Thread-safe: one instance may serve many hosts in parallel. Concurrent requests for the same
    changelog wait on a per-key lock, so it is fetched once and the others read the cache.

    Args:
        cache_dir: the controller's cache folder; changelogs go to ``cache_dir/changelogs``.
        timeout: seconds the remote fetch command may run.
    """

    def __init__(self, cache_dir: Path, *, timeout: float = 120.0) -> None:
        self.cache_dir = Path(cache_dir)
        self.root = self.cache_dir / "changelogs"
        self.timeout = timeout
        self.remote_fetches = 0
        """How many remote fetch commands this instance ran (for logs and tests)."""
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, ...], threading.Lock] = {}

    # ---------------------------------------------------------------- public API

    def cves_for(
        self,
        transport: Transport,
        *,
        binary: str,
        candidate_version: str,
        source: str,
        installed_source_version: str,
        candidate_source_version: str | None = None,
    ) -> ChangelogResult:
        """The CVEs mentioned by the changelog entries after the installed source version.

        Args:
            transport: the host whose repositories serve the candidate (used only on a miss).
            binary: the binary package to download (``libssl3``).
            candidate_version: its candidate *binary* version (what ``apt-get download`` gets).
            source: its source package (``openssl``), the cache key.
            installed_source_version: the installed *source* version (exclusive lower bound).
            candidate_source_version: the candidate source version (inclusive upper bound);
                default: the newest entry of the fetched changelog.

        Returns:
            The CVEs, how many entries were in range, and whether the cache answered.

        Raises:
            UnsafeArgumentError: a name or version is refused before anything runs.
            InvalidVersionError: ``installed_source_version`` is not a Debian version.
            ChangelogError: the changelog could not be fetched or parsed (see its subclasses).
            TransportError: the transport could not run the command (unreachable host, timeout).
        """
        versions.validate(Ecosystem.DEBIAN, installed_source_version)
        entries, source_version, from_cache = self._changelog(
            transport,
            binary=binary,
            candidate_version=candidate_version,
            source=source,
            candidate_source_version=candidate_source_version,
        )
        return ChangelogResult(
            cves=cves_between(entries, installed_source_version, source_version),
            entries_considered=count_between(entries, installed_source_version, source_version),
            urgency=urgency_between(entries, installed_source_version, source_version),
            from_cache=from_cache,
            source=source,
            source_version=source_version,
        )

    def cves_for_many(
        self,
        transport: Transport,
        updates: Sequence[PendingUpdate],
        packages: Sequence[InstalledPackage],
    ) -> tuple[list[PendingUpdate], list[str]]:
        """Annotate a host's pending updates with the CVEs their changelogs mention (and the
        highest ``urgency=`` of the same entries).

        Updates are grouped by source package (from the installed package's ``source_name``)
        and ONE changelog is fetched per source: from the binary named like the source if it
        is pending, else from the first; when a binary ships no changelog (or its version cannot
        be downloaded) the next binary of the same source is tried. Every binary of a source
        gets the CVEs between its own installed source version and the candidate source version
        (the same CVEs when, as usual, they share the installed source version).

        Never raises: a source that fails is left unannotated and named in the warnings. Updates
        that install a new package (no installed version) or have no installed-package record
        are returned unchanged.

        Args:
            transport: the host.
            updates: its pending updates.
            packages: its installed packages (for the source name and version).

        Returns:
            ``(updates in the same order, annotated where possible; warnings, one per source)``.
        """
        out = list(updates)
        warnings: list[str] = []
        by_name_arch: dict[tuple[str, str], InstalledPackage] = {}
        by_name: dict[str, InstalledPackage] = {}
        for pkg in packages:
            if pkg.ecosystem is not Ecosystem.DEBIAN:
                continue
            by_name_arch.setdefault((pkg.name, pkg.arch), pkg)
            by_name.setdefault(pkg.name, pkg)
        groups: dict[str, list[tuple[int, PendingUpdate, InstalledPackage]]] = {}
        for index, update in enumerate(updates):
            if update.installed_version is None:
                continue
            installed = by_name_arch.get((update.name, update.arch)) or by_name.get(update.name)
            if installed is None:
                _log.debug("changelog.no_package_record", host=transport.name, binary=update.name)
                continue
            groups.setdefault(installed.source_name, []).append((index, update, installed))

        aborted: str | None = None
        timeouts = 0
        for source, members in groups.items():
            if aborted is not None:
                warnings.append(f"{source}: changelog not looked up: {aborted}")
                continue
            try:
                entries, source_version = self._first_changelog(transport, source, members)
            except (HostConnectError, HostKeyError, AuthenticationError) as exc:
                aborted = f"host failed earlier ({exc})"
                warnings.append(f"{source}: {exc}")
                continue
            except CommandTimeoutError as exc:
                timeouts += 1
                if timeouts >= _MAX_TIMEOUTS_PER_HOST:
                    aborted = f"{timeouts} fetches timed out on this host"
                warnings.append(f"{source}: {exc}")
                continue
            except ChangelogFetchError as exc:
                aborted = f"the host cannot reach its mirror ({exc.reason})"
                warnings.append(f"{source}: {exc}")
                continue
            except Exception as exc:  # never raise out of this method
                _log.debug("changelog.failed", host=transport.name, source=source, exc_info=True)
                warnings.append(f"{source}: {exc}")
                continue
            for index, update, pkg in members:
                try:
                    found = _annotation(entries, pkg.source_version, source_version)
                except InvalidVersionError as exc:
                    warnings.append(f"{source}: {update.name}: {exc}")
                    continue
                out[index] = update.model_copy(update={"source_name": source, **found})
        for line in warnings:
            _log.warning("changelog.unavailable", host=transport.name, detail=line)
        return out, warnings

    # ---------------------------------------------------------------- internals

    def _first_changelog(
        self,
        transport: Transport,
        source: str,
        members: Sequence[tuple[int, PendingUpdate, InstalledPackage]],
    ) -> tuple[list[ChangelogEntry], str]:
        """Fetch one changelog for ``source``, trying its binaries in order of preference."""
        order = sorted(members, key=lambda m: m[1].name != source)  # stable: source name first
        tried: set[tuple[str, str]] = set()
        last: ChangelogError | None = None
        for _, update, _pkg in order:
            key = (update.name, update.candidate_version)
            if key in tried:
                continue
            tried.add(key)
            try:
                entries, source_version, _ = self._changelog(
                    transport,
                    binary=update.name,
                    candidate_version=update.candidate_version,
                    source=source,
                    candidate_source_version=None,
                )
            except (ChangelogNotShipped, ChangelogUnavailable) as exc:
                _log.debug("changelog.try_next_binary", source=source, binary=update.name)
                last = exc
                continue
            return entries, source_version
        assert last is not None  # members is never empty
        if len(tried) > 1:
            raise type(last)(
                f"{last.reason} (tried {len(tried)} binaries: "
                f"{', '.join(name for name, _ in sorted(tried))})",
                package=last.package,
                version=last.version,
                host=last.host,
            )
        raise last

    @contextlib.contextmanager
    def _locked(self, key: tuple[str, ...]) -> Iterator[None]:
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            yield

    def _changelog(
        self,
        transport: Transport,
        *,
        binary: str,
        candidate_version: str,
        source: str,
        candidate_source_version: str | None,
    ) -> tuple[list[ChangelogEntry], str, bool]:
        """``(entries, candidate source version, from_cache)``, fetching on a cache miss."""
        validate_package_name(binary, Ecosystem.DEBIAN)
        validate_version(candidate_version, Ecosystem.DEBIAN)
        validate_package_name(source, Ecosystem.DEBIAN)
        if ":" in source:
            raise ChangelogError("a source package name has no :arch qualifier", package=source)
        if candidate_source_version is not None:
            validate_version(candidate_source_version, Ecosystem.DEBIAN)
            key: tuple[str, ...] = ("source", source, candidate_source_version)
        else:
            key = ("binary", source, _base_name(binary), candidate_version)
        with self._locked(key):
            cached = self._lookup(source, binary, candidate_version, candidate_source_version)
            if cached is not None:
                top = candidate_source_version or cached.source_version
                return list(cached.entries), top, True
            fetched = self._fetch(transport, binary, candidate_version)
            named, entries = self._parse(fetched, binary, candidate_version, transport.name)
            top = entries[0].version
            if named is not None and named != source:
                _log.warning(
                    "changelog.source_mismatch",
                    host=transport.name,
                    binary=binary,
                    expected=source,
                    changelog=named,
                )
            if candidate_source_version is not None and top != candidate_source_version:
                _log.warning(
                    "changelog.top_version_mismatch",
                    host=transport.name,
                    binary=binary,
                    expected=candidate_source_version,
                    changelog=top,
                )
            self._store(
                _CachedChangelog(
                    source=source,
                    source_version=top,
                    binary=_base_name(binary),
                    binary_version=candidate_version,
                    member=fetched.member,
                    host=transport.name,
                    fetched_at=datetime.now().astimezone(),
                    entries=tuple(entries),
                )
            )
            return entries, candidate_source_version or top, False

    def _fetch(self, transport: Transport, binary: str, version: str) -> FetchedChangelog:
        fact = DebianChangelogFact(binary, version)
        started = time.monotonic()
        with self._guard:
            self.remote_fetches += 1
        result = transport.run(fact.command(), env=dict(FACT_ENV), timeout=self.timeout)
        fetched = fact.parse(result)
        _log.debug(
            "changelog.fetched",
            host=transport.name,
            binary=binary,
            version=version,
            member=fetched.member,
            compressed_bytes=fetched.compressed_size,
            duration_s=round(time.monotonic() - started, 3),
        )
        return fetched

    @staticmethod
    def _parse(
        fetched: FetchedChangelog, binary: str, version: str, host: str
    ) -> tuple[str | None, list[ChangelogEntry]]:
        try:
            named, entries = parse_changelog_with_source(fetched.text)
        except ChangelogParseError as exc:
            raise ChangelogParseError(
                f"{fetched.member}: {exc.reason}", package=binary, version=version, host=host
            ) from None
        if not versions.is_valid(Ecosystem.DEBIAN, entries[0].version):
            raise ChangelogParseError(
                f"{fetched.member}: the newest entry's version {entries[0].version!r} is not a "
                "valid Debian version",
                package=binary,
                version=version,
                host=host,
            )
        return named, entries

    # ---------------------------------------------------------------- cache files

    def _folder(self, source: str) -> Path:
        return self.root / _file_component(source)

    def _entries_path(self, source: str, source_version: str) -> Path:
        return self._folder(source) / f"{_file_component(source_version)}.json"

    def _index_path(self, source: str) -> Path:
        return self._folder(source) / "index.json"

    def _lookup(
        self,
        source: str,
        binary: str,
        candidate_version: str,
        candidate_source_version: str | None,
    ) -> _CachedChangelog | None:
        if candidate_source_version is not None:
            hit = self._load(source, candidate_source_version)
            if hit is not None:
                return hit
        source_version = self._read_index(source).binaries.get(
            f"{_base_name(binary)}={candidate_version}"
        )
        if source_version is not None:
            return self._load(source, source_version)
        # Not in the index (another binary of the source was fetched): a binary version equal
        # to a cached source version, or a binNMU of it (+bN), is built from exactly that
        # source version, so its changelog is already here.
        for guess in dict.fromkeys((candidate_version, _BINNMU.sub("", candidate_version))):
            hit = self._load(source, guess)
            if hit is not None:
                return hit
        return None

    def _load(self, source: str, source_version: str) -> _CachedChangelog | None:
        path = self._entries_path(source, source_version)
        try:
            raw = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            _log.warning("changelog.cache_unreadable", path=str(path), error=str(exc))
            return None
        try:
            cached = _CachedChangelog.model_validate_json(raw)
        except ValidationError as exc:
            _log.warning("changelog.cache_invalid", path=str(path), error=str(exc).splitlines()[0])
            return None
        if cached.source != source or cached.source_version != source_version:
            _log.warning("changelog.cache_mismatch", path=str(path))
            return None
        return cached

    def _read_index(self, source: str) -> _BinaryIndex:
        path = self._index_path(source)
        try:
            return _BinaryIndex.model_validate_json(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _BinaryIndex()
        except (OSError, ValidationError, ValueError) as exc:
            _log.warning("changelog.index_invalid", path=str(path), error=str(exc)[:200])
            return _BinaryIndex()

    def _store(self, cached: _CachedChangelog) -> None:
        """Write the entries and the index entry; a failure is logged, never raised."""
        try:
            self._folder(cached.source).mkdir(parents=True, exist_ok=True)
            _atomic_write(
                self._entries_path(cached.source, cached.source_version),
                cached.model_dump_json(indent=1),
            )
            with self._locked(("index", cached.source)):
                index = self._read_index(cached.source)
                binaries = dict(index.binaries)
                binaries[f"{cached.binary}={cached.binary_version}"] = cached.source_version
                _atomic_write(
                    self._index_path(cached.source),
                    json.dumps(
                        {"format": _CACHE_FORMAT, "binaries": binaries}, indent=1, sort_keys=True
                    ),
                )
        except OSError as exc:
            _log.warning(
                "changelog.cache.write_failed",
                folder=str(self._folder(cached.source)),
                error=str(exc),
            )


def _annotation(
    entries: Sequence[ChangelogEntry], installed_source_version: str, source_version: str
) -> dict[str, object]:
    """The :class:`PendingUpdate` fields a changelog gives: CVEs, their origin, the urgency."""
    return {
        "cves": cves_between(entries, installed_source_version, source_version),
        "cves_from": "changelog",
        "urgency": urgency_between(entries, installed_source_version, source_version),
    }


def _atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

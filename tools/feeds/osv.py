"""OSV records (https://ossf.github.io/osv-schema/): one record, a list, a directory or a zip.

Each ``affected[]`` entry of a supported ecosystem becomes one
:class:`~patchpilot.core.models.Advisory` per (record, ecosystem release, package):

* ``Debian:12`` (``Debian:<n>`` or a codename): debian, release ``bookworm`` (numbers are
  mapped to codenames, 7 wheezy … 14 forky);
* ``Alpine:v3.19``: alpine, release ``v3.19``;
* ``PyPI``: pypi, no release;
* ``Red Hat:<cpe suffix>``: rpm, release = the suffix (e.g. ``rhel_aus:8.6::appstream``);
* ``Rocky Linux:<rel>``, ``AlmaLinux:<rel>``: rpm, release = the suffix (e.g. ``9``).

Other ecosystems (Ubuntu, npm, …), and unscoped OS ecosystems (``Debian`` without a release,
which match far too much) are skipped and counted. The fix state comes from the ``ECOSYSTEM``
ranges: the highest ``fixed`` event gives fixed(version); only ``introduced`` (or an explicit
``versions`` list) gives no-fix-yet; ``last_affected`` without ``fixed`` gives no-fix-yet with
the last affected version as the vendor wording.

Records are validated loosely with pydantic against the OSV schema's shape: only ``id`` and
``modified`` are required, as in the schema. ``affected`` is optional: a record without it (Red
Hat publishes such records for advisories about products with no package list) says which
versions of nothing are affected, so it imports, yields no advisory, and is counted as
``informational`` (a ``withdrawn`` record is counted and skipped the same way).

**One invalid record refuses the whole import** (a file, a directory or an ``all.zip``): the
store is left unchanged, and the error names every invalid file (up to
:data:`MAX_REPORTED_ERRORS`, with the record id and what is wrong), so all of them can be fixed
or removed in one go. Importing "the rest" was rejected on purpose: an advisory silently left
out of a partial import makes every host it affects look not vulnerable, and the import would
no longer be the all-or-nothing transaction the store promises.

Files and archive members are streamed (``ijson``), one document at a time; a large set of
records is validated once and parsed again while it is imported (see
:func:`patchpilot.tools.feeds._stream.gather`).
"""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from patchpilot.core import versions
from patchpilot.core.errors import FeedError, InvalidVersionError
from patchpilot.core.feeds import FeedBatch, FeedKind, RecordStream
from patchpilot.core.models import Advisory, Ecosystem, FixState, FixStatus, Provenance, Severity
from patchpilot.tools.feeds._common import DEFAULT_MAX_BYTES, clean_text, parse_timestamp
from patchpilot.tools.feeds._stream import (
    Document,
    PassInfo,
    file_sha256,
    gather,
    json_items,
    reading,
)

__all__ = [
    "DEBIAN_CODENAMES",
    "MAX_REPORTED_ERRORS",
    "OSV_DEBIAN_URL",
    "OSVStats",
    "map_ecosystem",
    "parse",
    "parse_directory",
    "parse_documents",
]

_log = structlog.get_logger(__name__)

OSV_DEBIAN_URL: Final = "https://osv-vulnerabilities.storage.googleapis.com/Debian/all.zip"

DEBIAN_CODENAMES: Final[Mapping[str, str]] = {
    "7": "wheezy",
    "8": "jessie",
    "9": "stretch",
    "10": "buster",
    "11": "bullseye",
    "12": "bookworm",
    "13": "trixie",
    "14": "forky",
}
"""Debian release numbers (as in OSV ``Debian:<n>``) to the codenames advisories are keyed on."""

MAX_REPORTED_ERRORS: Final = 10
"""Most invalid files named in the error that refuses an import of several files."""

_ZIP_MAGIC: Final = b"PK\x03\x04"
_EMPTY_ZIP_MAGIC: Final = b"PK\x05\x06"
_RPM_PREFIXES: Final = ("Red Hat", "Rocky Linux", "AlmaLinux")
_EVENT_KEYS: Final = frozenset({"introduced", "fixed", "last_affected", "limit"})
_TEXT_SEVERITY: Final[Mapping[str, Severity]] = {
    "negligible": Severity.UNIMPORTANT,
    "low": Severity.LOW,
    "medium": Severity.MEDIUM,
    "moderate": Severity.MEDIUM,
    "high": Severity.HIGH,
    "important": Severity.HIGH,
    "critical": Severity.CRITICAL,
}


# --------------------------------------------------------------------------- schema (loose)


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


# Ids and names end up in reports and shell-free argv lists: no whitespace, no control chars.
_ID_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._:/+-]{0,199}$"
_NAME_PATTERN: Final = r"^[^\s\x00-\x1f\x7f-\x9f]{1,200}$"


class _Package(_Loose):
    ecosystem: str = Field(min_length=1, max_length=200)
    name: str = Field(pattern=_NAME_PATTERN)


class _Range(_Loose):
    type: Literal["GIT", "SEMVER", "ECOSYSTEM"]
    repo: str | None = None
    events: list[dict[str, str]] = Field(min_length=1)

    @field_validator("events")
    @classmethod
    def _one_key_each(cls, events: list[dict[str, str]]) -> list[dict[str, str]]:
        for event in events:
            if len(event) != 1 or not set(event) <= _EVENT_KEYS:
                raise ValueError(f"an event must hold exactly one of {sorted(_EVENT_KEYS)}")
        if not any("introduced" in event for event in events):
            raise ValueError("a range needs an 'introduced' event")
        return events


class _Affected(_Loose):
    package: _Package | None = None
    ranges: list[_Range] = Field(default_factory=list)
    versions: list[str] = Field(default_factory=list)


class _SeverityEntry(_Loose):
    type: str
    score: str


class _Record(_Loose):
    id: str = Field(pattern=_ID_PATTERN)
    modified: str
    published: str | None = None
    withdrawn: str | None = None
    aliases: list[Annotated[str, Field(pattern=_ID_PATTERN)]] | None = None
    upstream: list[Annotated[str, Field(pattern=_ID_PATTERN)]] | None = None
    summary: str | None = None
    details: str | None = None
    severity: list[_SeverityEntry] | None = None
    affected: list[_Affected] | None = None  # optional in the OSV schema


# --------------------------------------------------------------------------- parsing


@dataclass(slots=True)
class OSVStats:
    """What an OSV import skipped, and why (for logs and ``feeds status``)."""

    records: int = 0
    withdrawn: int = 0
    informational: int = 0
    advisories: int = 0
    skipped_ecosystems: Counter[str] = field(default_factory=Counter)
    skipped_no_range: int = 0


def map_ecosystem(ecosystem: str) -> tuple[Ecosystem, str | None] | None:
    """Map an OSV ``package.ecosystem`` to patchpilot's (ecosystem, release).

    Args:
        ecosystem: E.g. ``"Debian:12"``, ``"Alpine:v3.19"``, ``"PyPI"``,
            ``"Red Hat:rhel_aus:8.6::appstream"``.

    Returns:
        The pair, or ``None`` when patchpilot does not support it (or it names no release
        where one is needed).
    """
    name, _, suffix = ecosystem.partition(":")
    if name == "PyPI" and not suffix:
        return Ecosystem.PYPI, None
    if name == "Debian":
        codename = DEBIAN_CODENAMES.get(suffix)
        if codename is None and suffix in (*DEBIAN_CODENAMES.values(), "sid"):
            codename = suffix
        return (Ecosystem.DEBIAN, codename) if codename else None
    if name == "Alpine":
        if suffix.startswith("v") and len(suffix) > 1:
            return Ecosystem.ALPINE, suffix
        return None
    if name in _RPM_PREFIXES and suffix:
        return Ecosystem.RPM, suffix
    return None


def parse(
    data: bytes | Path | Document,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse OSV data: a single record, a JSON list of records, or an ``all.zip`` export.

    Args:
        data: The raw document (UTF-8 JSON, or a zip of ``*.json`` records), or its file.
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest document, and largest total decompressed size of a zip, accepted.

    Returns:
        The batch.

    Raises:
        FeedError: If any record is invalid: the whole import is refused, naming every invalid
            record's file (or archive member), up to :data:`MAX_REPORTED_ERRORS`.
    """
    document = Document.of(data, source)
    with reading(document, max_bytes=max_bytes) as reader:
        head = reader.peek(4)
    if head.startswith((_ZIP_MAGIC, _EMPTY_ZIP_MAGIC)):
        digest = file_sha256(document, max_bytes=max_bytes)
        batch, _ = _parse_set(
            lambda: _zip_members(document, max_bytes=max_bytes),
            source=source,
            fetched_at=fetched_at,
            digest=lambda _: digest,
            max_bytes=max_bytes,
        )
        return batch
    batch, _ = _parse_set(
        lambda: [document],
        source=source,
        fetched_at=fetched_at,
        digest=lambda files: files[0][1],
        max_bytes=max_bytes,
    )
    return batch


def parse_directory(
    files: list[Path], *, source: str, fetched_at: datetime, max_bytes: int = DEFAULT_MAX_BYTES
) -> FeedBatch:
    """Parse the ``*.json`` files of a directory as one import, streaming one file at a time.

    The batch's digest covers every file's name and content (sha256 of
    ``name\\0sha256(content)\\n`` lines, in order).

    Raises:
        FeedError: If any record is invalid (every invalid file is named, nothing imports).
    """
    documents = [Document.of(path, str(path)) for path in files]

    def digest(per_file: list[tuple[str, str]]) -> str:
        hasher = hashlib.sha256()
        for name, sha in per_file:
            hasher.update(f"{Path(name).name}\0{sha}\n".encode())
        return hasher.hexdigest()

    batch, _ = _parse_set(
        lambda: documents,
        source=source,
        fetched_at=fetched_at,
        digest=digest,
        max_bytes=max_bytes,
    )
    return batch


def parse_documents(
    documents: Iterable[tuple[str, bytes]],
    *,
    source: str,
    fetched_at: datetime,
    sha256: str,
) -> tuple[FeedBatch, OSVStats]:
    """Parse several OSV documents (files of a directory or members of a zip) as one import.

    Args:
        documents: ``(name, bytes)`` pairs; ``name`` is used in error messages.
        source: URL or path of the whole set.
        fetched_at: When it was downloaded or imported.
        sha256: Digest identifying the whole set.

    Returns:
        The batch and what was skipped.

    Raises:
        FeedError: If any document holds an invalid record (every invalid one is named).
    """
    docs = [Document.of(data, name) for name, data in documents]
    return _parse_set(
        lambda: docs,
        source=source,
        fetched_at=fetched_at,
        digest=lambda _: sha256,
        max_bytes=max([DEFAULT_MAX_BYTES, *(d.size or 0 for d in docs)]),
    )


def _parse_set(
    documents: Callable[[], Iterable[Document]],
    *,
    source: str,
    fetched_at: datetime,
    digest: Callable[[list[tuple[str, str]]], str],
    max_bytes: int,
) -> tuple[FeedBatch, OSVStats]:
    def one_pass(info: PassInfo) -> Iterator[Advisory]:
        return _osv_pass(
            documents,
            info,
            source=source,
            fetched_at=fetched_at,
            digest=digest,
            max_bytes=max_bytes,
        )

    advisories, info = gather(one_pass, source=source)
    stats: OSVStats = info.extra["stats"]
    stats.advisories = len(advisories)
    _log.info(
        "feed.parsed",
        feed=FeedKind.OSV.value,
        source=source,
        records=stats.records,
        withdrawn=stats.withdrawn,
        informational=stats.informational,
        advisories=stats.advisories,
        skipped_ecosystems=dict(stats.skipped_ecosystems),
        skipped_no_range=stats.skipped_no_range,
        streamed=isinstance(advisories, RecordStream),
    )
    batch = FeedBatch(
        kind=FeedKind.OSV,
        source=source,
        fetched_at=fetched_at,
        published_at=info.newest,
        sha256=info.sha256,
        advisories=advisories,
    )
    return batch, stats


def _osv_pass(
    documents: Callable[[], Iterable[Document]],
    info: PassInfo,
    *,
    source: str,
    fetched_at: datetime,
    digest: Callable[[list[tuple[str, str]]], str],
    max_bytes: int,
) -> Iterator[Advisory]:
    """One pass over every document: yields advisories, fills ``info``; see the module."""
    stats = OSVStats()
    per_file: list[tuple[str, str]] = []
    invalid: list[FeedError] = []
    several = False
    for count, document in enumerate(documents()):
        several = several or count > 0
        try:
            with reading(document, max_bytes=max_bytes) as reader:
                prefix = "item" if reader.first_json_byte() == b"[" else ""
                for index, raw in enumerate(json_items(document, reader, prefix)):
                    where = f"{document.source}[{index}]" if prefix else document.source
                    record = _validate(raw, where=where)
                    stats.records += 1
                    modified = parse_timestamp(
                        record.modified, what="modified", source=where, record=record.id
                    )
                    info.saw(modified)
                    if record.withdrawn:
                        stats.withdrawn += 1
                        continue
                    if not record.affected:
                        stats.informational += 1
                        continue
                    if not invalid:  # once the import is refused, only look for more errors
                        yield from _advisories(
                            record,
                            where=where,
                            source=source,
                            fetched_at=fetched_at,
                            stats=stats,
                        )
                    else:
                        for _ in _advisories(
                            record,
                            where=where,
                            source=source,
                            fetched_at=fetched_at,
                            stats=stats,
                        ):
                            pass
                per_file.append((document.source, reader.sha256()))
        except FeedError as exc:
            if exc.reason.startswith(("archive exceeds", "document exceeds")):
                raise
            invalid.append(exc)
            if len(invalid) >= MAX_REPORTED_ERRORS:
                break
    if invalid:
        if not several and len(invalid) == 1:
            raise invalid[0]
        shown = "; ".join(str(exc) for exc in invalid)
        more = " (and possibly more)" if len(invalid) >= MAX_REPORTED_ERRORS else ""
        raise FeedError(
            f"{len(invalid)} invalid OSV file(s){more}, nothing was imported "
            f"(fix or remove them and import again): {shown}",
            source=source,
        )
    info.sha256 = digest(per_file)
    info.extra["stats"] = stats


def _zip_members(document: Document, *, max_bytes: int) -> Iterator[Document]:
    """The ``*.json`` members of a zip, in name order, never more than ``max_bytes`` in all.

    Nothing is extracted to disk (no path is ever built from a member name, so no zip-slip);
    a member's declared size is checked before it is read, and the read stops at it.
    """
    source = document.source
    handle = document.opener()
    try:
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise FeedError(f"not a valid zip archive: {exc}", source=source) from None
        total = 0
        with archive:
            for info in sorted(archive.infolist(), key=lambda i: i.filename):
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                member = f"{source}!{clean_text(info.filename, limit=200)}"
                if info.file_size > max_bytes - total:
                    raise FeedError(
                        f"archive exceeds the size limit of {max_bytes} bytes", source=member
                    )
                total += info.file_size
                yield Document(member, _member_opener(archive, info, member), info.file_size)
    finally:
        handle.close()


def _member_opener(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: str
) -> Callable[[], IO[bytes]]:
    def opener() -> IO[bytes]:
        try:
            return archive.open(info)
        except (zipfile.BadZipFile, OSError, ValueError, RuntimeError, NotImplementedError) as exc:
            raise FeedError(f"cannot read zip member: {exc}", source=member) from None

    return opener


def _validate(raw: object, *, where: str) -> _Record:
    if not isinstance(raw, dict):
        raise FeedError("an OSV record must be a JSON object", source=where)
    try:
        return _Record.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'record'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        record_id = raw.get("id") if isinstance(raw.get("id"), str) else None
        raise FeedError(
            f"not a valid OSV record ({problems})", source=where, record=record_id
        ) from None


def _advisories(
    record: _Record, *, where: str, source: str, fetched_at: datetime, stats: OSVStats
) -> Iterator[Advisory]:
    aliases = tuple(
        dict.fromkeys(
            a for a in (*(record.aliases or ()), *(record.upstream or ())) if a != record.id
        )
    )
    published = (
        parse_timestamp(record.published, what="published", source=where, record=record.id)
        if record.published
        else None
    )
    summary = clean_text(record.summary) or clean_text(record.details)
    severity = _severity(record.severity)
    provenance = Provenance(
        feed=FeedKind.OSV.value, source=source, record_id=record.id, fetched_at=fetched_at
    )
    merged: dict[tuple[Ecosystem, str | None, str], _Facts] = {}
    for affected in record.affected or ():
        if affected.package is None:
            stats.skipped_no_range += 1
            continue
        mapped = map_ecosystem(affected.package.ecosystem)
        if mapped is None:
            stats.skipped_ecosystems[affected.package.ecosystem.partition(":")[0]] += 1
            continue
        ecosystem, release = mapped
        facts = merged.setdefault((ecosystem, release, affected.package.name), _Facts())
        _collect(affected, ecosystem, facts, where=where, record_id=record.id)
    for (ecosystem, release, package), facts in merged.items():
        fix = facts.fix_state(ecosystem)
        if fix is None:
            stats.skipped_no_range += 1
            continue
        yield Advisory(
            id=record.id,
            aliases=aliases,
            ecosystem=ecosystem,
            release=release,
            source_package=package,
            fix=fix,
            severity=severity,
            published=published,
            summary=summary,
            feed=FeedKind.OSV.value,
            provenance=provenance,
        )


@dataclass(slots=True)
class _Facts:
    fixed: list[str] = field(default_factory=list)
    last_affected: list[str] = field(default_factory=list)
    affected: bool = False

    def fix_state(self, ecosystem: Ecosystem) -> FixState | None:
        if self.fixed:
            best = self.fixed[0]
            for version in self.fixed[1:]:
                if versions.compare(ecosystem, version, best) > 0:
                    best = version
            return FixState.fixed(best)
        if self.last_affected:
            newest = self.last_affected[0]
            for version in self.last_affected[1:]:
                if versions.compare(ecosystem, version, newest) > 0:
                    newest = version
            return FixState(status=FixStatus.NO_FIX_YET, vendor_state=f"last_affected {newest}")
        if self.affected:
            return FixState(status=FixStatus.NO_FIX_YET, vendor_state="affected, no fixed event")
        return None


def _collect(
    affected: _Affected, ecosystem: Ecosystem, facts: _Facts, *, where: str, record_id: str
) -> None:
    package = affected.package.name if affected.package else "?"
    for range_ in affected.ranges:
        if range_.type != "ECOSYSTEM":
            continue
        facts.affected = True
        for event in range_.events:
            ((kind, value),) = event.items()
            if kind == "limit" or (kind == "introduced" and value == "0"):
                continue
            _check_version(ecosystem, value, where=where, record_id=record_id, package=package)
            if kind == "fixed":
                facts.fixed.append(value)
            elif kind == "last_affected":
                facts.last_affected.append(value)
    if affected.versions:
        facts.affected = True


def _check_version(
    ecosystem: Ecosystem, version: str, *, where: str, record_id: str, package: str
) -> None:
    try:
        versions.validate(ecosystem, version)
    except InvalidVersionError as exc:
        raise FeedError(
            f"malformed {ecosystem.value} version {version[:60]!r} for {package}: {exc}",
            source=where,
            record=record_id,
        ) from None


def _severity(entries: list[_SeverityEntry] | None) -> Severity:
    for entry in entries or ():
        mapped = _TEXT_SEVERITY.get(entry.score.strip().lower())
        if mapped is not None:
            return mapped
    return Severity.UNKNOWN

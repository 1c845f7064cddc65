"""Advisory feeds: fetch (httpx, cached, conditional) or import, parse and validate.

One pure parser per feed turns a document into a :class:`FeedBatch` (imported by the store in
one transaction)::

    from patchpilot.tools.feeds import FeedFetcher, parse_feed, parse_fetched

    batch = parse_feed("debian-dsa", Path("DSA/list"))          # import a local file
    batch = parse_feed(FeedKind.OSV, Path("osv-records/"))       # a directory of records
    with FeedFetcher(cache_dir) as fetcher:                       # or download it
        batch = parse_fetched(fetcher.fetch(FeedKind.KEV))

Parsers by kind:

* ``debian-dsa`` / ``debian-dla``: :func:`patchpilot.tools.feeds.debian.parse_dsa` /
  :func:`~patchpilot.tools.feeds.debian.parse_dla` (``data/DSA/list``, ``data/DLA/list``);
* ``debian-json``: :func:`patchpilot.tools.feeds.debian.parse_tracker_json` (the tracker's JSON
  export);
* ``osv``: :func:`patchpilot.tools.feeds.osv.parse` (a record, a list, an ``all.zip``, or a
  directory);
* ``kev``: :func:`patchpilot.tools.feeds.kev.parse` (the CISA KEV catalog);
* ``epss``: :func:`patchpilot.tools.feeds.epss.parse` (FIRST EPSS CSV, gzip or plain);
* ``nvd``: :func:`patchpilot.tools.feeds.nvd.parse` (NVD CVE API 2.0 pages, or a directory of them).

Feed text (titles, descriptions) is untrusted data: parsers keep it as plain strings, with
terminal escape sequences and control characters removed, and nothing ever interprets it.

Files are streamed, never read whole (see :mod:`patchpilot.tools.feeds._stream`): line by line
(DSA/DLA
lists, EPSS CSV, decompressed on the fly), record by record (JSON, with ``ijson``). A document
with many records is validated in a first pass and its records are parsed again one at a time
while the store imports them, so the memory an import needs does not grow with the file.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from patchpilot.core.errors import FeedError, FeedFetchError
from patchpilot.core.feeds import FEED_MAX_AGE, FeedBatch, FeedKind, FeedStatus
from patchpilot.core.models import utcnow
from patchpilot.tools.feeds import debian, epss, kev, nvd, osv
from patchpilot.tools.feeds._common import DEFAULT_MAX_BYTES
from patchpilot.tools.feeds._stream import Document
from patchpilot.tools.feeds.fetch import FEED_URLS, FeedFetcher, FetchResult

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FEED_MAX_AGE",
    "FEED_URLS",
    "FeedBatch",
    "FeedError",
    "FeedFetchError",
    "FeedFetcher",
    "FeedKind",
    "FeedStatus",
    "FetchResult",
    "feed_kind",
    "parse_bytes",
    "parse_feed",
    "parse_fetched",
]

_Parser = Callable[[Document, str, datetime, int], FeedBatch]

_PARSERS: dict[FeedKind, _Parser] = {
    FeedKind.DEBIAN_DSA: lambda d, s, f, m: debian.parse_dsa(
        d, source=s, fetched_at=f, max_bytes=m
    ),
    FeedKind.DEBIAN_DLA: lambda d, s, f, m: debian.parse_dla(
        d, source=s, fetched_at=f, max_bytes=m
    ),
    FeedKind.DEBIAN_JSON: lambda d, s, f, m: debian.parse_tracker_json(
        d, source=s, fetched_at=f, max_bytes=m
    ),
    FeedKind.OSV: lambda d, s, f, m: osv.parse(d, source=s, fetched_at=f, max_bytes=m),
    FeedKind.KEV: lambda d, s, f, m: kev.parse(d, source=s, fetched_at=f, max_bytes=m),
    FeedKind.EPSS: lambda d, s, f, m: epss.parse(d, source=s, fetched_at=f, max_bytes=m),
    FeedKind.NVD: lambda d, s, f, m: nvd.parse(d, source=s, fetched_at=f, max_bytes=m),
}
_DIRECTORY_KINDS = frozenset({FeedKind.OSV, FeedKind.NVD})


def feed_kind(kind: FeedKind | str) -> FeedKind:
    """Normalise a feed kind given as the enum or its value (``"debian-dsa"``…).

    Args:
        kind: The kind.

    Returns:
        The enum member.

    Raises:
        FeedError: If it names no feed.
    """
    if isinstance(kind, FeedKind):
        return kind
    try:
        return FeedKind(str(kind).strip().lower())
    except ValueError:
        known = ", ".join(k.value for k in FeedKind)
        raise FeedError(f"unknown feed kind {str(kind)[:40]!r}; expected one of: {known}") from None


def parse_bytes(
    kind: FeedKind | str,
    data: bytes,
    *,
    source: str = "<bytes>",
    fetched_at: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FeedBatch:
    """Parse one in-memory feed document.

    Args:
        kind: The feed.
        data: The raw document.
        source: URL or path it came from.
        fetched_at: When it was fetched; now by default.
        max_bytes: Largest document (and decompressed document) accepted.
        etag: The HTTP ETag it was served with, recorded on the batch.
        last_modified: The HTTP Last-Modified value, recorded on the batch.

    Returns:
        The batch.

    Raises:
        FeedError: If the document is too large, not UTF-8, or does not parse.
    """
    resolved = feed_kind(kind)
    if len(data) > max_bytes:
        raise FeedError(
            f"document of {len(data)} bytes exceeds the size limit of {max_bytes}", source=source
        )
    return _parse_document(
        resolved,
        Document.of(data, source),
        fetched_at=fetched_at or utcnow(),
        max_bytes=max_bytes,
        etag=etag,
        last_modified=last_modified,
    )


def _parse_document(
    kind: FeedKind,
    document: Document,
    *,
    fetched_at: datetime,
    max_bytes: int,
    etag: str | None = None,
    last_modified: str | None = None,
) -> FeedBatch:
    batch = _PARSERS[kind](document, document.source, fetched_at, max_bytes)
    if etag or last_modified:
        batch = batch.model_copy(update={"etag": etag, "last_modified": last_modified})
    return batch


def parse_feed(
    kind: FeedKind | str,
    path_or_bytes: Path | str | bytes,
    *,
    source: str | None = None,
    fetched_at: datetime | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse a feed document given as bytes, a file, or (OSV, NVD) a directory of ``*.json``.

    Args:
        kind: The feed (``FeedKind`` or its value, e.g. ``"debian-dsa"``).
        path_or_bytes: The document's bytes, or a path (``str`` is a path).
        source: URL or path to record as provenance; the path by default.
        fetched_at: When it was fetched or imported; now by default.
        max_bytes: Largest file accepted (for a directory: all files together).

    Returns:
        The batch, with the SHA-256 of the document (of a directory: of its file names and
        contents).

    Raises:
        FeedError: If the file is missing, too large, not UTF-8, or does not parse; for a
            directory, one invalid file fails the whole import, and the error names every
            invalid file (OSV: up to ``osv.MAX_REPORTED_ERRORS``; NVD: the first).
    """
    resolved = feed_kind(kind)
    when = fetched_at or utcnow()
    if isinstance(path_or_bytes, bytes):
        return parse_bytes(
            resolved,
            path_or_bytes,
            source=source or "<bytes>",
            fetched_at=when,
            max_bytes=max_bytes,
        )
    path = Path(path_or_bytes)
    origin = source or str(path)
    if path.is_dir():
        return _parse_directory(resolved, path, source=origin, fetched_at=when, max_bytes=max_bytes)
    return _parse_document(
        resolved,
        _file_document(path, origin, max_bytes=max_bytes),
        fetched_at=when,
        max_bytes=max_bytes,
    )


def parse_fetched(result: FetchResult, *, max_bytes: int = DEFAULT_MAX_BYTES) -> FeedBatch:
    """Parse what :meth:`FeedFetcher.fetch` returned (after a 304, the cached copy).

    Args:
        result: The fetch result.
        max_bytes: Largest document accepted.

    Returns:
        The batch, carrying the result's URL, time, ETag and Last-Modified.

    Raises:
        FeedError: If there is no document (a 304 without a cached copy) or it does not parse.
    """
    if result.data is not None:
        if len(result.data) > max_bytes:
            raise FeedError(
                f"document of {len(result.data)} bytes exceeds the size limit of {max_bytes}",
                source=result.url,
            )
        document = Document.of(result.data, result.url)
    elif result.path is not None:  # the cached copy, streamed from disk
        cached = _file_document(result.path, str(result.path), max_bytes=max_bytes)
        document = Document(result.url, cached.opener, cached.size)
    else:
        raise FeedError(
            "the server said 'not modified' and there is no cached copy", source=result.url
        )
    return _parse_document(
        result.kind,
        document,
        fetched_at=result.fetched_at,
        max_bytes=max_bytes,
        etag=result.etag,
        last_modified=result.last_modified,
    )


def _file_document(path: Path, source: str, *, max_bytes: int) -> Document:
    """A file to stream, refused up front when it is larger than ``max_bytes``."""
    if path.is_dir():
        raise FeedError("expected a file, got a directory", source=str(path))
    document = Document.of(path, source)
    if document.size is not None and document.size > max_bytes:
        raise FeedError(
            f"file of {document.size} bytes exceeds the size limit of {max_bytes}",
            source=str(path),
        )
    return document


def _parse_directory(
    kind: FeedKind, directory: Path, *, source: str, fetched_at: datetime, max_bytes: int
) -> FeedBatch:
    if kind not in _DIRECTORY_KINDS:
        raise FeedError(f"a {kind.value} feed is one file, not a directory", source=str(directory))
    files = sorted(p for p in directory.glob("*.json") if p.is_file())
    if not files:
        raise FeedError("no *.json files in the directory", source=str(directory))
    total = sum(p.stat().st_size for p in files)
    if total > max_bytes:
        raise FeedError(
            f"directory holds {total} bytes of JSON, over the size limit of {max_bytes}",
            source=str(directory),
        )
    if kind is FeedKind.OSV:
        return osv.parse_directory(files, source=source, fetched_at=fetched_at, max_bytes=max_bytes)
    return nvd.parse_files(files, source=source, fetched_at=fetched_at, max_bytes=max_bytes)

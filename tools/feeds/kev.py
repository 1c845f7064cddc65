"""CISA Known Exploited Vulnerabilities catalog (JSON).

The catalog is ``{"catalogVersion", "dateReleased", "count", "vulnerabilities": [...]}``; each
vulnerability needs at least the schema's required keys (``cveID``, ``vendorProject``,
``product``, ``vulnerabilityName``, ``dateAdded``, ``shortDescription``, ``requiredAction``,
``dueDate``). It becomes a ``(CVE, KEVEntry)`` pair; ``knownRansomwareCampaignUse`` "Known"
is ``True`` and "Unknown" is ``None`` (CISA lacks confirmation, which is not a "no").

The catalog is streamed (``ijson``): one pass reads the catalog's own keys, another the
entries one at a time; a catalog with very many entries is parsed again while it is imported
(see :func:`patchpilot.tools.feeds._stream.gather`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Final

import structlog
from pydantic import ValidationError

from patchpilot.core.errors import FeedError
from patchpilot.core.feeds import FeedBatch, FeedKind, RecordStream
from patchpilot.core.models import CVE_RE, KEVEntry
from patchpilot.tools.feeds._common import DEFAULT_MAX_BYTES, parse_date, parse_timestamp
from patchpilot.tools.feeds._stream import (
    Document,
    PassInfo,
    gather,
    json_items,
    json_scan,
    reading,
)

__all__ = ["KEV_URL", "parse"]

_log = structlog.get_logger(__name__)

KEV_URL: Final = (
    "https://www.cisa.gov/sites/default/files/feeds/known_exploited_vulnerabilities.json"
)

_CATALOG_KEYS: Final = ("catalogVersion", "dateReleased", "count", "vulnerabilities")
_ENTRY_KEYS: Final = (
    "cveID",
    "vendorProject",
    "product",
    "vulnerabilityName",
    "dateAdded",
    "shortDescription",
    "requiredAction",
    "dueDate",
)
_RANSOMWARE: Final = {"known": True, "unknown": None}


def parse(
    data: bytes | Path | Document,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse the KEV catalog.

    Args:
        data: The raw catalog (UTF-8 JSON), or its file (streamed).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest document accepted.

    Returns:
        The batch with ``kev`` pairs; ``published_at`` is the catalog's ``dateReleased``.

    Raises:
        FeedError: If the document is not JSON, lacks a required key, has a malformed CVE id or
            date, or its ``count`` disagrees with the entries (a truncated catalog).
    """
    document = Document.of(data, source)

    def one_pass(info: PassInfo) -> Iterator[tuple[str, KEVEntry]]:
        return _kev_pass(document, info, max_bytes=max_bytes)

    pairs, info = gather(one_pass, source=source)
    _log.info(
        "feed.parsed",
        feed=FeedKind.KEV.value,
        source=source,
        catalog_version=info.extra.get("catalog_version"),
        entries=len(pairs),
        streamed=isinstance(pairs, RecordStream),
    )
    return FeedBatch(
        kind=FeedKind.KEV,
        source=source,
        fetched_at=fetched_at,
        published_at=info.newest,
        sha256=info.sha256,
        kev=pairs,
    )


_SCALARS: Final = frozenset(_CATALOG_KEYS) - {"vulnerabilities"}


def _kev_pass(
    document: Document, info: PassInfo, *, max_bytes: int
) -> Iterator[tuple[str, KEVEntry]]:
    """One pass: the catalog's keys first (one read), then its entries (a second read)."""
    source = document.source
    with reading(document, max_bytes=max_bytes) as reader:
        catalog, entries_type = json_scan(document, reader, keys=_SCALARS, array="vulnerabilities")
        first_digest = reader.sha256()
    if "__root__" in catalog:
        raise FeedError("the KEV catalog must be a JSON object", source=source)
    missing = [
        key
        for key in _CATALOG_KEYS
        if (entries_type is None if key == "vulnerabilities" else key not in catalog)
    ]
    if missing:
        raise FeedError(f"not a KEV catalog: missing {', '.join(missing)}", source=source)
    if entries_type != "array":
        raise FeedError("'vulnerabilities' must be a list", source=source)
    count = catalog["count"]
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise FeedError(f"catalog count {count!r} is not a number of entries", source=source)
    info.saw(parse_timestamp(catalog["dateReleased"], what="dateReleased", source=source))
    info.extra["catalog_version"] = str(catalog["catalogVersion"])[:40]

    entries = 0
    with reading(document, max_bytes=max_bytes) as reader:
        for index, entry in enumerate(json_items(document, reader, "vulnerabilities.item")):
            entries += 1
            yield _entry(entry, index, source=source)
        info.sha256 = reader.sha256()
    if entries != count:
        raise FeedError(
            f"catalog count {count!r} does not match its {entries} entries", source=source
        )
    if info.sha256 != first_digest:
        raise FeedError("the document changed while it was read; import it again", source=source)


def _entry(entry: object, index: int, *, source: str) -> tuple[str, KEVEntry]:
    where = f"vulnerabilities[{index}]"
    if not isinstance(entry, dict):
        raise FeedError("a KEV entry must be an object", source=source, record=where)
    cve = entry.get("cveID")
    if isinstance(cve, str) and CVE_RE.match(cve):
        where = cve
    missing = [key for key in _ENTRY_KEYS if key not in entry]
    if missing:
        raise FeedError(f"missing {', '.join(missing)}", source=source, record=where)
    if not isinstance(cve, str) or not CVE_RE.match(cve):
        raise FeedError(f"malformed cveID {str(cve)[:40]!r}", source=source, record=where)
    ransomware = entry.get("knownRansomwareCampaignUse", "Unknown")
    if not isinstance(ransomware, str) or ransomware.strip().lower() not in _RANSOMWARE:
        raise FeedError(
            f"knownRansomwareCampaignUse must be Known or Unknown, not {str(ransomware)[:20]!r}",
            source=source,
            record=where,
        )
    try:
        kev = KEVEntry(
            date_added=parse_date(entry["dateAdded"], what="dateAdded", source=source, record=cve),
            due_date=parse_date(entry["dueDate"], what="dueDate", source=source, record=cve),
            known_ransomware_use=_RANSOMWARE[ransomware.strip().lower()],
        )
    except ValidationError as exc:  # pragma: no cover - dates are validated above
        raise FeedError(
            f"invalid entry: {exc.errors()[0]['msg']}", source=source, record=cve
        ) from None
    return cve, kev

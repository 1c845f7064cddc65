"""CISA Known Exploited Vulnerabilities catalog (JSON).

The catalog is ``{"catalogVersion", "dateReleased", "count", "vulnerabilities": [...]}``; each
vulnerability needs at least the schema's required keys (``cveID``, ``vendorProject``,
``product``, ``vulnerabilityName``, ``dateAdded``, ``shortDescription``, ``requiredAction``,
``dueDate``). It becomes a ``(CVE, KEVEntry)`` pair; ``knownRansomwareCampaignUse`` "Known"
is ``True`` and "Unknown" is ``None`` (CISA lacks confirmation, which is not a "no").
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import structlog
from pydantic import ValidationError

from patchpilot.models import CVE_RE, KEVEntry
from tools.feeds._common import load_json, parse_date, parse_timestamp, sha256_hex
from tools.feeds.errors import FeedError
from tools.feeds.types import FeedBatch, FeedKind

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


def parse(data: bytes, *, source: str, fetched_at: datetime) -> FeedBatch:
    """Parse the KEV catalog.

    Args:
        data: The raw catalog (UTF-8 JSON).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.

    Returns:
        The batch with ``kev`` pairs; ``published_at`` is the catalog's ``dateReleased``.

    Raises:
        FeedError: If the document is not JSON, lacks a required key, has a malformed CVE id or
            date, or its ``count`` disagrees with the entries (a truncated catalog).
    """
    catalog = load_json(data, source=source)
    if not isinstance(catalog, dict):
        raise FeedError("the KEV catalog must be a JSON object", source=source)
    missing = [key for key in _CATALOG_KEYS if key not in catalog]
    if missing:
        raise FeedError(f"not a KEV catalog: missing {', '.join(missing)}", source=source)
    entries = catalog["vulnerabilities"]
    if not isinstance(entries, list):
        raise FeedError("'vulnerabilities' must be a list", source=source)
    count = catalog["count"]
    if not isinstance(count, int) or isinstance(count, bool) or count != len(entries):
        raise FeedError(
            f"catalog count {count!r} does not match its {len(entries)} entries", source=source
        )
    released = parse_timestamp(catalog["dateReleased"], what="dateReleased", source=source)

    pairs: list[tuple[str, KEVEntry]] = []
    for index, entry in enumerate(entries):
        pairs.append(_entry(entry, index, source=source))
    _log.info(
        "feed_parsed",
        feed=FeedKind.KEV.value,
        source=source,
        catalog_version=str(catalog["catalogVersion"])[:40],
        entries=len(pairs),
    )
    return FeedBatch(
        kind=FeedKind.KEV,
        source=source,
        fetched_at=fetched_at,
        published_at=released,
        sha256=sha256_hex(data),
        kev=tuple(pairs),
    )


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

"""NVD CVE API 2.0 result pages → CVSS base scores.

A page is ``{"resultsPerPage", "startIndex", "totalResults", "timestamp", "vulnerabilities":
[{"cve": {"id", "lastModified", "metrics": {"cvssMetricV40": [...], "cvssMetricV31": [...],
"cvssMetricV30": [...]}}}]}``. Each metric is ``{"source", "type": "Primary"|"Secondary",
"cvssData": {"version", "vectorString", "baseScore", …}}``.

For every CVE and CVSS version (4.0, 3.1, 3.0) one score is kept: the ``Primary`` one (NVD's own)
when there is one, else the first listed. CVSS v2 metrics are ignored. Several pages (a paged
download or a directory of pages) are imported together; when a CVE appears on more than one
page, the record with the newest ``lastModified`` wins.

Pages are streamed (``ijson``): one read for the page's own keys, one for its CVEs, one CVE at
a time. The scores kept (one per CVE and CVSS version, deduplicated across pages) are held in
memory; they are a small part of a page.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

import structlog
from pydantic import ValidationError

from patchpilot.core.errors import FeedError
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.models import CVE_RE, CVSS
from patchpilot.tools.feeds._common import DEFAULT_MAX_BYTES, clean_text, parse_timestamp
from patchpilot.tools.feeds._stream import Document, json_items, json_scan, reading

__all__ = ["NVD_URL", "parse", "parse_files", "parse_pages"]

_log = structlog.get_logger(__name__)

NVD_URL: Final = "https://services.nvd.nist.gov/rest/json/cves/2.0"

_Version = Literal["3.0", "3.1", "4.0"]
_METRIC_KEYS: Final[Mapping[str, _Version]] = {
    "cvssMetricV40": "4.0",
    "cvssMetricV31": "3.1",
    "cvssMetricV30": "3.0",
}


def parse(
    data: bytes | Path | Document,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse one NVD CVE API 2.0 page (or a merged download of all pages).

    Args:
        data: The raw page (UTF-8 JSON), or its file (streamed).
        source: URL or file path it was read from.
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest document accepted.

    Returns:
        The batch with ``cvss`` pairs.

    Raises:
        FeedError: If the page is not JSON or not an NVD CVE API 2.0 page.
    """
    document = Document.of(data, source)
    batch, digests = _parse(
        [document], source=source, fetched_at=fetched_at, max_bytes=max_bytes, sha256=None
    )
    return batch.model_copy(update={"sha256": digests[0]})


def parse_files(
    files: list[Path], *, source: str, fetched_at: datetime, max_bytes: int = DEFAULT_MAX_BYTES
) -> FeedBatch:
    """Parse a directory's page files as one import, one file at a time.

    The digest covers every file's name and content (as for an OSV directory).
    """
    documents = [Document.of(path, str(path)) for path in files]
    batch, digests = _parse(
        documents, source=source, fetched_at=fetched_at, max_bytes=max_bytes, sha256=None
    )
    hasher = hashlib.sha256()
    for path, digest in zip(files, digests, strict=True):
        hasher.update(f"{path.name}\0{digest}\n".encode())
    return batch.model_copy(update={"sha256": hasher.hexdigest()})


def parse_pages(
    pages: Iterable[tuple[str, bytes]], *, source: str, fetched_at: datetime, sha256: str
) -> FeedBatch:
    """Parse several NVD pages as one import.

    Args:
        pages: ``(name, bytes)`` pairs; ``name`` is used in error messages.
        source: URL or path of the whole set.
        fetched_at: When it was downloaded or imported.
        sha256: Digest identifying the whole set.

    Returns:
        The batch; ``published_at`` is the newest page ``timestamp``.

    Raises:
        FeedError: On the first invalid page, naming it.
    """
    documents = [Document.of(data, name) for name, data in pages]
    batch, _ = _parse(
        documents,
        source=source,
        fetched_at=fetched_at,
        max_bytes=max([DEFAULT_MAX_BYTES, *(d.size or 0 for d in documents)]),
        sha256=sha256,
    )
    return batch


_PAGE_KEYS: Final = frozenset({"format", "timestamp"})


def _parse(
    documents: list[Document],
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int,
    sha256: str | None,
) -> tuple[FeedBatch, list[str]]:
    best: dict[tuple[str, str], tuple[datetime | None, CVSS]] = {}
    newest: datetime | None = None
    cves = 0
    digests: list[str] = []
    for document in documents:
        name = document.source
        with reading(document, max_bytes=max_bytes) as reader:
            page, items_type = json_scan(document, reader, keys=_PAGE_KEYS, array="vulnerabilities")
            first_digest = reader.sha256()
        if "__root__" in page or items_type != "array":
            raise FeedError("not an NVD CVE API 2.0 page: no 'vulnerabilities' list", source=name)
        if page.get("format", "NVD_CVE") != "NVD_CVE":
            raise FeedError(f"unexpected page format {str(page.get('format'))[:20]!r}", source=name)
        if "timestamp" in page:
            stamp = parse_timestamp(page["timestamp"], what="timestamp", source=name)
            newest = stamp if newest is None else max(newest, stamp)
        with reading(document, max_bytes=max_bytes) as reader:
            for index, item in enumerate(json_items(document, reader, "vulnerabilities.item")):
                cve, modified, scores = _cve_scores(item, index, source=name)
                cves += 1
                for score in scores:
                    key = (cve, score.version)
                    seen = best.get(key)
                    if seen is None or (
                        modified is not None and (seen[0] is None or modified > seen[0])
                    ):
                        best[key] = (modified, score)
            digest = reader.sha256()
        if digest != first_digest:
            raise FeedError("the document changed while it was read; import it again", source=name)
        digests.append(digest)
    pairs = tuple((cve, score) for (cve, _), (_, score) in best.items())
    _log.info("feed.parsed", feed=FeedKind.NVD.value, source=source, cves=cves, scores=len(pairs))
    batch = FeedBatch(
        kind=FeedKind.NVD,
        source=source,
        fetched_at=fetched_at,
        published_at=newest,
        sha256=sha256 or (digests[0] if digests else ""),
        cvss=pairs,
    )
    return batch, digests


def _cve_scores(
    item: object, index: int, *, source: str
) -> tuple[str, datetime | None, list[CVSS]]:
    cve = item.get("cve") if isinstance(item, dict) else None
    if not isinstance(cve, dict):
        raise FeedError(
            "an entry needs a 'cve' object", source=source, record=f"vulnerabilities[{index}]"
        )
    cve_id = cve.get("id")
    if not isinstance(cve_id, str) or not CVE_RE.match(cve_id):
        raise FeedError(
            f"malformed CVE id {str(cve_id)[:40]!r}",
            source=source,
            record=f"vulnerabilities[{index}]",
        )
    modified = (
        parse_timestamp(cve["lastModified"], what="lastModified", source=source, record=cve_id)
        if "lastModified" in cve
        else None
    )
    metrics = cve.get("metrics", {})
    if not isinstance(metrics, dict):
        raise FeedError("'metrics' must be an object", source=source, record=cve_id)
    scores: list[CVSS] = []
    for key, version in _METRIC_KEYS.items():
        entries = metrics.get(key, [])
        if not isinstance(entries, list):
            raise FeedError(f"'{key}' must be a list", source=source, record=cve_id)
        chosen = _choose(entries)
        if chosen is not None:
            scores.append(_score(chosen, version, source=source, record=cve_id))
    return cve_id, modified, scores


def _choose(entries: list[Any]) -> dict[str, Any] | None:
    candidates = [entry for entry in entries if isinstance(entry, dict)]
    if len(candidates) != len(entries):
        return {}  # reported as malformed by _score
    for entry in candidates:
        if entry.get("type") == "Primary":
            return entry
    return candidates[0] if candidates else None


def _score(metric: dict[str, Any], version: _Version, *, source: str, record: str) -> CVSS:
    data = metric.get("cvssData")
    if not isinstance(data, dict):
        raise FeedError(f"a CVSS {version} metric needs 'cvssData'", source=source, record=record)
    vector, base = data.get("vectorString"), data.get("baseScore")
    if data.get("version") != version:
        raise FeedError(
            f"cvssData.version {str(data.get('version'))[:10]!r} under the CVSS {version} key",
            source=source,
            record=record,
        )
    if not isinstance(vector, str) or not vector:
        raise FeedError(
            f"CVSS {version} metric without a vectorString", source=source, record=record
        )
    if isinstance(base, bool) or not isinstance(base, int | float) or not math.isfinite(base):
        raise FeedError(
            f"CVSS {version} baseScore {base!r} is not a number", source=source, record=record
        )
    if not vector.startswith(f"CVSS:{version}/"):
        raise FeedError(
            f"vector {vector[:60]!r} is not CVSS {version}", source=source, record=record
        )
    origin = metric.get("source")
    try:
        return CVSS(
            version=version,
            vector=vector,
            base_score=float(base),
            source=clean_text(origin, limit=200),
        )
    except ValidationError as exc:
        raise FeedError(
            f"invalid CVSS {version} score: {exc.errors()[0]['msg']}", source=source, record=record
        ) from None

"""FIRST EPSS daily scores (CSV, usually gzip-compressed).

Current files look like::

    #model_version:v2023.03.01,score_date:2023-03-07T00:00:00+0000
    cve,epss,percentile
    CVE-2020-5902,0.97567,0.99995

Older files have no comment line (the score date then comes from the file name,
``epss_scores-YYYY-MM-DD.csv.gz``) and the very first ones have no ``percentile`` column: it is
then computed from the file itself (the share of scores less than or equal to each score),
which is what FIRST's percentile means when the file holds every scored CVE.
"""

from __future__ import annotations

import bisect
import csv
import math
import re
from datetime import UTC, date, datetime
from typing import Final

import structlog
from pydantic import ValidationError

from patchpilot.models import CVE_RE, EPSS
from tools.feeds._common import (
    DEFAULT_MAX_BYTES,
    decode_utf8,
    gunzip_limited,
    is_gzip,
    sha256_hex,
)
from tools.feeds.errors import FeedError
from tools.feeds.types import FeedBatch, FeedKind

__all__ = ["EPSS_URL", "parse"]

_log = structlog.get_logger(__name__)

EPSS_URL: Final = "https://epss.empiricalsecurity.com/epss_scores-current.csv.gz"
"""FIRST's daily file (served by Empirical Security for FIRST; redirects to the dated file)."""

_DATE_IN_NAME_RE: Final = re.compile(r"(\d{4}-\d{2}-\d{2})")


def parse(
    data: bytes,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse an EPSS scores file, gzip-compressed or plain.

    Args:
        data: The raw file.
        source: URL or file path it was read from (its name may carry the score date).
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest decompressed size accepted.

    Returns:
        The batch with ``epss`` pairs; ``published_at`` is the score date (midnight UTC).

    Raises:
        FeedError: If the data is not gzip/UTF-8 CSV, lacks the ``cve`` and ``epss`` columns,
            has a malformed row (named by line number), or no score date can be found.
    """
    raw = gunzip_limited(data, max_bytes=max_bytes, source=source) if is_gzip(data) else data
    lines = decode_utf8(raw, source=source).splitlines()

    number = 0
    metadata: dict[str, str] = {}
    while number < len(lines) and (not lines[number].strip() or lines[number].startswith("#")):
        metadata.update(_metadata(lines[number]))
        number += 1
    if number >= len(lines):
        raise FeedError("no CSV header (expected 'cve,epss,percentile')", source=source)
    header = [column.strip().lower() for column in lines[number].split(",")]
    if "cve" not in header or "epss" not in header:
        raise FeedError(
            f"CSV header {lines[number][:80]!r} lacks the cve and epss columns",
            source=source,
            line=number + 1,
        )
    score_date = _score_date(metadata, source=source, line=number)
    rows = _rows(lines, number + 1, header, source=source)
    if not rows:
        raise FeedError("no score rows after the header (truncated file?)", source=source)

    has_percentile = "percentile" in header
    ordered = [] if has_percentile else sorted(score for _, score, _, _ in rows)
    pairs: list[tuple[str, EPSS]] = []
    for cve, score, given, line in rows:
        percentile = given if given is not None else _rank(ordered, score)
        try:
            pairs.append(
                (cve, EPSS(probability=score, percentile=percentile, score_date=score_date))
            )
        except ValidationError:
            raise FeedError(
                f"score {score} or percentile {percentile} is outside [0, 1]",
                source=source,
                line=line,
            ) from None
    _log.info(
        "feed_parsed",
        feed=FeedKind.EPSS.value,
        source=source,
        rows=len(pairs),
        score_date=score_date.isoformat(),
        model_version=metadata.get("model_version", "")[:40] or None,
        percentile_computed=not has_percentile,
    )
    return FeedBatch(
        kind=FeedKind.EPSS,
        source=source,
        fetched_at=fetched_at,
        published_at=datetime(score_date.year, score_date.month, score_date.day, tzinfo=UTC),
        sha256=sha256_hex(data),
        epss=tuple(pairs),
    )


def _rank(ordered: list[float], score: float) -> float:
    """The share of scores less than or equal to ``score``."""
    return bisect.bisect_right(ordered, score) / len(ordered)


def _metadata(line: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in line.lstrip("#").split(","):
        key, sep, value = part.partition(":")
        if sep:
            found[key.strip().lower()] = value.strip()
    return found


def _score_date(metadata: dict[str, str], *, source: str, line: int) -> date:
    value = metadata.get("score_date")
    if value:
        try:
            return datetime.fromisoformat(value).date()
        except ValueError:
            raise FeedError(
                f"malformed score_date {value[:40]!r}", source=source, line=line
            ) from None
    match = _DATE_IN_NAME_RE.search(source.rsplit("/", 1)[-1])
    if match:
        try:
            return date.fromisoformat(match.group(1))
        except ValueError:
            pass
    raise FeedError(
        "no score_date: neither a '#...score_date:' line nor a date in the file name",
        source=source,
    )


def _rows(
    lines: list[str], start: int, header: list[str], *, source: str
) -> list[tuple[str, float, float | None, int]]:
    cve_at, epss_at = header.index("cve"), header.index("epss")
    percentile_at = header.index("percentile") if "percentile" in header else None
    rows: list[tuple[str, float, float | None, int]] = []
    reader = csv.reader(lines[start:], strict=True)
    try:
        for offset, row in enumerate(reader):
            line = start + offset + 1
            if not row:
                continue
            if len(row) != len(header):
                raise FeedError(
                    f"expected {len(header)} columns, got {len(row)}", source=source, line=line
                )
            cve = row[cve_at].strip()
            if not CVE_RE.match(cve):
                raise FeedError(f"malformed CVE id {cve[:40]!r}", source=source, line=line)
            try:
                score = float(row[epss_at])
                percentile = float(row[percentile_at]) if percentile_at is not None else None
            except ValueError:
                raise FeedError("a score is not a number", source=source, line=line) from None
            if not math.isfinite(score) or (
                percentile is not None and not math.isfinite(percentile)
            ):
                raise FeedError("a score is not a finite number", source=source, line=line)
            rows.append((cve, score, percentile, line))
    except csv.Error as exc:
        raise FeedError(f"malformed CSV: {exc}", source=source) from None
    return rows

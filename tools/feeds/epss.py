"""FIRST EPSS daily scores (CSV, usually gzip-compressed).

Current files look like::

    #model_version:v2023.03.01,score_date:2023-03-07T00:00:00+0000
    cve,epss,percentile
    CVE-2020-5902,0.97567,0.99995

Older files have no comment line (the score date then comes from the file name,
``epss_scores-YYYY-MM-DD.csv.gz``) and the very first ones have no ``percentile`` column: it is
then computed from the file itself (the share of scores less than or equal to each score),
which is what FIRST's percentile means when the file holds every scored CVE.

The file is streamed: decompressed on the fly (with a bound on the decompressed size) and read
line by line; only the scores are collected when percentiles must be computed (8 bytes each).
A file with very many rows is validated once and read again while it is imported (see
:func:`patchpilot.tools.feeds._stream.gather`).
"""

from __future__ import annotations

import bisect
import csv
import math
import re
from array import array
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import IO, Final

import structlog
from pydantic import ValidationError

from patchpilot.core.errors import FeedError
from patchpilot.core.feeds import FeedBatch, FeedKind, RecordStream
from patchpilot.core.models import CVE_RE, EPSS
from patchpilot.tools.feeds._common import DEFAULT_MAX_BYTES
from patchpilot.tools.feeds._stream import (
    Document,
    PassInfo,
    gather,
    gzip_stream,
    iter_lines,
    reading,
)

__all__ = ["EPSS_URL", "parse"]

_log = structlog.get_logger(__name__)

EPSS_URL: Final = "https://epss.empiricalsecurity.com/epss_scores-current.csv.gz"
"""FIRST's daily file (served by Empirical Security for FIRST; redirects to the dated file)."""

_DATE_IN_NAME_RE: Final = re.compile(r"(\d{4}-\d{2}-\d{2})")
_GZIP_MAGIC: Final = b"\x1f\x8b"

_Row = tuple[str, float, float | None, int]


def parse(
    data: bytes | Path | Document,
    *,
    source: str,
    fetched_at: datetime,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> FeedBatch:
    """Parse an EPSS scores file, gzip-compressed or plain.

    Args:
        data: The raw file, or its path (streamed).
        source: URL or file path it was read from (its name may carry the score date).
        fetched_at: When it was downloaded or imported.
        max_bytes: Largest decompressed size accepted.

    Returns:
        The batch with ``epss`` pairs; ``published_at`` is the score date (midnight UTC).

    Raises:
        FeedError: If the data is not gzip/UTF-8 CSV, lacks the ``cve`` and ``epss`` columns,
            has a malformed row (named by line number), or no score date can be found.
    """
    document = Document.of(data, source)

    def one_pass(info: PassInfo) -> Iterator[tuple[str, EPSS]]:
        return _epss_pass(document, info, max_bytes=max_bytes)

    pairs, info = gather(one_pass, source=source)
    read: _Read = info.extra["read"]
    score_date = read.score_date
    _log.info(
        "feed.parsed",
        feed=FeedKind.EPSS.value,
        source=source,
        rows=len(pairs),
        score_date=score_date.isoformat(),
        model_version=read.metadata.get("model_version", "")[:40] or None,
        percentile_computed=not read.has_percentile,
        streamed=isinstance(pairs, RecordStream),
    )
    return FeedBatch(
        kind=FeedKind.EPSS,
        source=source,
        fetched_at=fetched_at,
        published_at=datetime(score_date.year, score_date.month, score_date.day, tzinfo=UTC),
        sha256=info.sha256,
        epss=pairs,
    )


def _epss_pass(document: Document, info: PassInfo, *, max_bytes: int) -> Iterator[tuple[str, EPSS]]:
    """One pass; two reads when percentiles must be computed from the scores first."""
    first = _Read(document, max_bytes=max_bytes)
    rows = first.rows()
    if first.has_percentile:
        for row in rows:
            yield _pair(row, first.score_date, None, source=document.source)
        info.sha256 = first.sha256
    else:
        ordered = array("d", sorted(score for _, score, _, _ in rows))
        again = _Read(document, max_bytes=max_bytes)
        for row in again.rows():
            yield _pair(row, again.score_date, ordered, source=document.source)
        if again.sha256 != first.sha256:
            raise FeedError(
                "the document changed while it was read; import it again", source=document.source
            )
        info.sha256 = again.sha256
    info.extra["read"] = first


class _Read:
    """One read of the file: header and metadata first (on creation), then the rows."""

    def __init__(self, document: Document, *, max_bytes: int) -> None:
        self.document = document
        self.max_bytes = max_bytes
        self.metadata: dict[str, str] = {}
        self.header: list[str] = []
        self.sha256 = ""
        self._rows = self._read()
        # Run up to the first row: the header, the metadata and the score date are known then.
        self._first = next(self._rows, None)
        if self._first is None:
            raise FeedError("no score rows after the header (truncated file?)", source=self.source)

    @property
    def source(self) -> str:
        return self.document.source

    @property
    def has_percentile(self) -> bool:
        return "percentile" in self.header

    def rows(self) -> Iterator[_Row]:
        """Every row: ``(cve, score, percentile or None, line)``."""
        assert self._first is not None
        yield self._first
        yield from self._rows

    def _read(self) -> Iterator[_Row]:
        source = self.source
        with reading(self.document, max_bytes=self.max_bytes) as reader:
            stream: IO[bytes] = reader.stream
            if reader.peek(2) == _GZIP_MAGIC:
                stream = gzip_stream(reader, max_bytes=self.max_bytes)
            lines = iter_lines(stream, source=source)
            found: tuple[int, str] | None = None
            for entry in lines:
                if entry[1].strip() and not entry[1].startswith("#"):
                    found = entry
                    break
                self.metadata.update(_metadata(entry[1]))
            if found is None:
                raise FeedError("no CSV header (expected 'cve,epss,percentile')", source=source)
            number, line = found
            self.header = [column.strip().lower() for column in line.split(",")]
            if "cve" not in self.header or "epss" not in self.header:
                raise FeedError(
                    f"CSV header {line[:80]!r} lacks the cve and epss columns",
                    source=source,
                    line=number,
                )
            self.score_date = _score_date(self.metadata, source=source, line=number - 1 or None)
            yield from _rows(lines, self.header, source=source)
            self.sha256 = reader.sha256()


def _pair(
    row: _Row, score_date: date, ordered: Sequence[float] | None, *, source: str
) -> tuple[str, EPSS]:
    cve, score, given, line = row
    percentile = given if given is not None or ordered is None else _rank(ordered, score)
    try:
        return cve, EPSS(probability=score, percentile=percentile, score_date=score_date)
    except ValidationError:
        raise FeedError(
            f"score {score} or percentile {percentile} is outside [0, 1]",
            source=source,
            line=line,
        ) from None


def _rank(ordered: Sequence[float], score: float) -> float:
    """The share of scores less than or equal to ``score``."""
    return bisect.bisect_right(ordered, score) / len(ordered)


def _metadata(line: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in line.lstrip("#").split(","):
        key, sep, value = part.partition(":")
        if sep:
            found[key.strip().lower()] = value.strip()
    return found


def _score_date(metadata: dict[str, str], *, source: str, line: int | None) -> date:
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


def _rows(lines: Iterator[tuple[int, str]], header: list[str], *, source: str) -> Iterator[_Row]:
    cve_at, epss_at = header.index("cve"), header.index("epss")
    percentile_at = header.index("percentile") if "percentile" in header else None
    current = 0

    def texts() -> Iterator[str]:
        nonlocal current
        for number, text in lines:
            current = number
            yield text

    reader = csv.reader(texts(), strict=True)
    try:
        for row in reader:
            line = current
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
            yield cve, score, percentile, line
    except csv.Error as exc:
        raise FeedError(f"malformed CSV: {exc}", source=source, line=current) from None

"""Shared shapes of feed data: what a parser yields and what the store imports.

A parser turns one feed document into a :class:`FeedBatch`. The batch is imported into the
store in one transaction (all or nothing). Advisory text inside a batch is untrusted data: it is
stored and displayed, never interpreted.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from patchpilot.models import CVSS, EPSS, Advisory, KEVEntry

__all__ = ["FEED_MAX_AGE", "FeedBatch", "FeedKind", "FeedStatus"]


class FeedKind(StrEnum):
    """The feeds patchpilot reads (also the KIND of ``patchpilot feeds import KIND PATH``)."""

    DEBIAN_DSA = "debian-dsa"
    DEBIAN_DLA = "debian-dla"
    DEBIAN_JSON = "debian-json"
    OSV = "osv"
    KEV = "kev"
    EPSS = "epss"
    NVD = "nvd"


FEED_MAX_AGE: dict[FeedKind, timedelta] = {
    FeedKind.DEBIAN_DSA: timedelta(days=2),
    FeedKind.DEBIAN_DLA: timedelta(days=2),
    FeedKind.DEBIAN_JSON: timedelta(days=2),
    FeedKind.OSV: timedelta(days=2),
    FeedKind.KEV: timedelta(days=7),
    FeedKind.EPSS: timedelta(days=3),
    FeedKind.NVD: timedelta(days=7),
}
"""How old a feed may be before every report flags it as stale."""


class FeedBatch(BaseModel):
    """Everything one feed document contributed, ready for one transactional import."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=False)

    kind: FeedKind
    source: str = Field(description="URL or file path the document was read from")
    fetched_at: datetime = Field(description="when it was downloaded or imported (UTC)")
    published_at: datetime | None = Field(
        default=None, description="the feed's own date (KEV dateReleased, EPSS score_date…)"
    )
    sha256: str = Field(description="digest of the raw document")
    advisories: tuple[Advisory, ...] = ()
    cvss: tuple[tuple[str, CVSS], ...] = Field(default=(), description="(CVE id, score) pairs")
    epss: tuple[tuple[str, EPSS], ...] = ()
    kev: tuple[tuple[str, KEVEntry], ...] = ()
    etag: str | None = None
    last_modified: str | None = None


class FeedStatus(BaseModel):
    """What the store knows about one feed (``patchpilot feeds status``)."""

    model_config = ConfigDict(frozen=True)

    kind: FeedKind
    source: str
    fetched_at: datetime
    published_at: datetime | None
    records: int
    sha256: str
    stale: bool
    max_age_days: float

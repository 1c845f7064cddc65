"""Shared shapes of feed data: what a parser yields and what the store imports.

A parser turns one feed document into a :class:`FeedBatch`. The batch is imported into the
store in one transaction (all or nothing). Advisory text inside a batch is untrusted data: it is
stored and displayed, never interpreted.

A batch of a small document holds its records as tuples. A large document's records are a
:class:`RecordStream`: the document was read and validated once (so its digest, its date and its
record count are known and every record is valid), and each iteration parses it again from the
file, one record at a time, so an import never holds every record in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from itertools import islice
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler
from pydantic_core import core_schema

from patchpilot.core.errors import FeedError
from patchpilot.core.models import CVSS, EPSS, Advisory, KEVEntry

__all__ = ["FEED_MAX_AGE", "FeedBatch", "FeedKind", "FeedStatus", "RecordStream"]

_T = TypeVar("_T")


class RecordStream(Sequence[_T]):
    """The records of a large, already validated document, parsed again on every iteration.

    Iterating runs ``factory`` (one streaming pass over the document, which checks that the
    document still has the digest it had when it was validated and raises
    :class:`~patchpilot.core.errors.FeedError` otherwise). ``len()`` is the validated count; an
    iteration that yields another count raises :class:`FeedError` too, so an import inside a
    transaction rolls back instead of storing a document that changed under it.

    Indexing is supported for convenience (it reads the document up to the index): consumers
    should iterate.
    """

    __slots__ = ("_factory", "_length", "_source")

    def __init__(self, factory: Callable[[], Iterator[_T]], length: int, *, source: str) -> None:
        self._factory = factory
        self._length = length
        self._source = source

    def __iter__(self) -> Iterator[_T]:
        count = 0
        for record in self._factory():
            count += 1
            yield record
        if count != self._length:
            raise FeedError(
                f"the document changed while it was imported ({count} records instead of "
                f"{self._length}); import it again",
                source=self._source,
            )

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[_T, ...]: ...

    def __getitem__(self, index: int | slice) -> _T | tuple[_T, ...]:
        if isinstance(index, slice):
            return tuple(self)[index]
        position = index + self._length if index < 0 else index
        if not 0 <= position < self._length:
            raise IndexError("record index out of range")
        return next(islice(self._factory(), position, None))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, str | bytes):
            return NotImplemented
        return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=False))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"RecordStream({self._length} records of {self._source!r})"

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)


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
    # RecordStream first and left to right: a stream must never be iterated to validate it.
    advisories: RecordStream[Advisory] | tuple[Advisory, ...] = Field(
        default=(), union_mode="left_to_right"
    )
    cvss: tuple[tuple[str, CVSS], ...] = Field(default=(), description="(CVE id, score) pairs")
    epss: RecordStream[tuple[str, EPSS]] | tuple[tuple[str, EPSS], ...] = Field(
        default=(), union_mode="left_to_right"
    )
    kev: RecordStream[tuple[str, KEVEntry]] | tuple[tuple[str, KEVEntry], ...] = Field(
        default=(), union_mode="left_to_right"
    )
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

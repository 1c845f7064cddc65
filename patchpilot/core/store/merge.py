"""The advisory merge rule, as pure functions (the store applies it on every import).

Records are keyed by (ecosystem, release, source package, advisory id). Every distinct record
any feed ever stated for a key is kept (as provenance); the merged advisory is computed from
all of them:

1. If any record is ``fixed``, the merged state is fixed, at the **newest** fixed version
   (ecosystem-exact ordering, :func:`patchpilot.core.versions.compare`). A record that is not fixed
   never
   erases a fixed one: it is kept as provenance only.
2. Otherwise (no record is fixed) the most recently stated record wins, so a newer import of
   a feed replaces its older state (``no-fix-yet`` -> ``will-not-fix``).
3. Ties (equal versions) go to the most recently stated record.

"Recently" is the record's position: the ``fetched_at`` of the newest batch that stated it, then
that import's id and the record's index in the batch. The winner is the maximum of a strict
total order, so the result does not depend on the order records are merged in, and importing
an older document after a newer one does not move the state back.

The merged advisory is the winner's record, completed from the others where it is silent:
the aliases of every record (the winner's first, then the others' sorted), the highest known
severity of the others when the winner's is ``unknown`` (unknown never hides a known one), a
summary when it has none, and the earliest publication date when it has none. These depend
only on *what* the records say, never on when they were last restated, so a daily re-import
that restates everything changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from patchpilot.core.models import Advisory, Ecosystem, FixStatus, Severity
from patchpilot.core.versions import compare

__all__ = [
    "Ranked",
    "SourceRecord",
    "beats",
    "merge_records",
    "normalise",
    "pick_winner",
    "record_identity",
]


class Ranked(Protocol):
    """What the merge rule looks at: the ecosystem, the fixed version and the position."""

    @property
    def ecosystem(self) -> Ecosystem:
        """The ecosystem, which decides version ordering."""
        ...

    @property
    def fixed_version(self) -> str | None:
        """The fixed version, or None when the record is not ``fixed``."""
        ...

    @property
    def order(self) -> tuple[str, int, int]:
        """Position in time (seen_at, import id, index); larger is more recent."""
        ...


R = TypeVar("R", bound=Ranked)


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record a feed stated for an advisory key, with its position in time.

    Attributes:
        advisory: The record as the feed stated it.
        seen_at: When the newest batch stating it was fetched (normalised UTC ISO text, so
            that text order is time order).
        import_id: The store's id of that import (monotonic).
        seq: The record's index in that batch.
        row: The store's row id of the record (0 when not stored).
    """

    advisory: Advisory
    seen_at: str
    import_id: int
    seq: int
    row: int = 0

    @property
    def ecosystem(self) -> Ecosystem:
        """The advisory's ecosystem."""
        return self.advisory.ecosystem

    @property
    def fixed_version(self) -> str | None:
        """The fixed version, or None when the record is not ``fixed``."""
        fix = self.advisory.fix
        return fix.version if fix.status is FixStatus.FIXED else None

    @property
    def order(self) -> tuple[str, int, int]:
        """Position in time; larger is more recent."""
        return (self.seen_at, self.import_id, self.seq)

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        """What makes two records the same statement: feed, source, record id, fix state."""
        return record_identity(self.advisory)


def record_identity(advisory: Advisory) -> tuple[str, str, str, str, str]:
    """(feed, source, record id, fix status, fixed version), ``''`` for missing parts.

    Args:
        advisory: A record.

    Returns:
        The identity under which the store deduplicates records of one key.
    """
    return (
        advisory.feed,
        advisory.provenance.source,
        advisory.provenance.record_id or "",
        advisory.fix.status.value,
        advisory.fix.version or "",
    )


def _aware(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC, so that they order against aware ones."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def beats(a: Ranked, b: Ranked) -> bool:
    """Tell whether record ``a`` wins over record ``b`` (of the same key) under the rule.

    Args:
        a: A record of the key.
        b: Another record of the same key.

    Returns:
        True if ``a`` should be the merged state rather than ``b``.

    Raises:
        InvalidVersionError: If a fixed version is not valid in the ecosystem.
    """
    av, bv = a.fixed_version, b.fixed_version
    if (av is None) != (bv is None):
        return av is not None
    if av is not None and bv is not None:
        cmp = compare(a.ecosystem, av, bv)
        if cmp:
            return cmp > 0
    return a.order > b.order


def pick_winner(records: Sequence[R]) -> R:
    """The winning record of one key.

    Args:
        records: All records of the key (at least one).

    Returns:
        The record whose state is the merged state.

    Raises:
        ValueError: If ``records`` is empty.
        InvalidVersionError: If a fixed version is not valid in the ecosystem.
    """
    if not records:
        raise ValueError("no record to merge")
    best = records[0]
    for record in records[1:]:
        if beats(record, best):
            best = record
    return best


def normalise(advisory: Advisory) -> Advisory:
    """The merged form of a lone record: aliases without duplicates or the id itself.

    Args:
        advisory: The record.

    Returns:
        ``advisory`` itself when already normal, else a copy.
    """
    aliases = tuple(dict.fromkeys(a for a in advisory.aliases if a != advisory.id))
    if aliases == advisory.aliases:
        return advisory
    return advisory.model_copy(update={"aliases": aliases})


def merge_records(records: Sequence[SourceRecord]) -> tuple[Advisory, SourceRecord]:
    """Merge every record of one key into the advisory the store serves.

    Args:
        records: All records of the key (at least one).

    Returns:
        The merged advisory (the winner's state, feed and provenance) and the winner.

    Raises:
        ValueError: If ``records`` is empty.
        InvalidVersionError: If a fixed version is not valid in the ecosystem.
    """
    winner = pick_winner(records)
    if len(records) == 1:
        return normalise(winner.advisory), winner
    # Content-based (never time-based) order, so restating a record changes nothing.
    others = sorted((r for r in records if r is not winner), key=lambda r: r.identity)
    key_id = winner.advisory.id
    extra = sorted({a for r in others for a in r.advisory.aliases} - set(winner.advisory.aliases))
    aliases = tuple(dict.fromkeys(a for a in (*winner.advisory.aliases, *extra) if a != key_id))
    severity = winner.advisory.severity
    if severity is Severity.UNKNOWN:
        severity = max((r.advisory.severity for r in others), key=lambda s: s.rank)
    summary = winner.advisory.summary or next(
        (r.advisory.summary for r in others if r.advisory.summary), None
    )
    published = winner.advisory.published or min(
        (r.advisory.published for r in others if r.advisory.published is not None),
        key=_aware,
        default=None,
    )
    merged = winner.advisory.model_copy(
        update={
            "aliases": aliases,
            "severity": severity,
            "summary": summary,
            "published": published,
        }
    )
    return merged, winner

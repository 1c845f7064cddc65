"""Sourcing agent: keep the advisory store fed, from live feeds or from files, and say how fresh.

Deterministic core: which feeds to fetch, conditional requests so unchanged feeds cost a 304,
transactional imports, staleness flags. When the store holds no advisories and the live feeds
are unreachable, the scan falls back to what each host's package manager says is pending from its
security suite ("repository-metadata" mode) and the report says how to fetch or import feeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import structlog
from pydantic import BaseModel, ConfigDict

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.feeds import FeedKind, FeedStatus
from patchpilot.core.store import ImportStats, Store
from patchpilot.tools.feeds import FEED_URLS, FeedFetcher, parse_feed, parse_fetched

__all__ = [
    "DEFAULT_UPDATE_KINDS",
    "SourcingReport",
    "UpdateOutcome",
    "ensure_feeds",
    "import_feed",
    "update_feeds",
]

log = structlog.get_logger(__name__)

DEFAULT_UPDATE_KINDS: tuple[FeedKind, ...] = (
    FeedKind.DEBIAN_DSA,
    FeedKind.DEBIAN_DLA,
    FeedKind.KEV,
    FeedKind.EPSS,
)
"""Feeds `feeds update` and an automatic scan fetch. The Debian JSON export (~60 MB), OSV
exports and NVD (rate-limited) are fetched when asked for by name."""

NO_FEEDS_HINT = (
    "no advisory feeds in the store: findings come from the hosts' own repository metadata "
    "(pending -security updates, with the CVEs their changelogs name) without severity, EPSS "
    "or KEV detail. Run `patchpilot feeds update` where the "
    "feeds are reachable, or `patchpilot feeds import KIND PATH` with downloaded files "
    "(KIND: debian-dsa, debian-dla, debian-json, osv, kev, epss, nvd)."
)


class UpdateOutcome(BaseModel):
    """The result of updating one feed."""

    model_config = ConfigDict(frozen=True)

    kind: FeedKind
    ok: bool
    not_modified: bool = False
    stats: ImportStats | None = None
    error: str | None = None


class SourcingReport(BaseModel):
    """What the scan's advisory data is, and how much to trust its freshness."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["advisories", "repository-metadata"]
    feeds: tuple[FeedStatus, ...] = ()
    stale: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    hint: str | None = None


def import_feed(store: Store, kind: FeedKind | str, path: Path) -> ImportStats:
    """Parse a downloaded feed file (or directory) and import it in one transaction.

    Raises:
        FeedError: the file is malformed; the store is left unchanged.
    """
    batch = parse_feed(FeedKind(kind), path)
    stats = store.import_batch(batch)
    log.info("feeds.imported", agent="sourcing", kind=str(kind), path=str(path))
    return stats


def update_feeds(
    store: Store, fetcher: FeedFetcher, kinds: Iterable[FeedKind] = DEFAULT_UPDATE_KINDS
) -> list[UpdateOutcome]:
    """Fetch and import feeds; one failing feed does not stop the others."""
    outcomes: list[UpdateOutcome] = []
    for kind in kinds:
        flog = log.bind(agent="sourcing", feed=kind.value)
        try:
            known = store.feed_validators(kind, FEED_URLS[kind])
            result = fetcher.fetch(kind)
            if result.data is None and known is not None:
                # 304 and the store already holds this document: nothing to do.
                flog.info("feeds.not_modified")
                outcomes.append(UpdateOutcome(kind=kind, ok=True, not_modified=True))
                continue
            stats = store.import_batch(parse_fetched(result))
            outcomes.append(UpdateOutcome(kind=kind, ok=True, stats=stats))
        except PatchpilotError as exc:
            flog.warning("feeds.update_failed", error=str(exc))
            outcomes.append(UpdateOutcome(kind=kind, ok=False, error=str(exc)))
    return outcomes


def ensure_feeds(
    store: Store,
    fetcher: FeedFetcher | None,
    *,
    kinds: Sequence[FeedKind] = DEFAULT_UPDATE_KINDS,
) -> SourcingReport:
    """Decide the scan's data mode, updating feeds first when a fetcher is given.

    Args:
        store: the advisory store.
        fetcher: live fetcher, or None for offline (use only what is stored).
        kinds: feeds to update when a fetcher is given.

    Returns:
        ``advisories`` mode when the store holds advisories (after any update), else
        ``repository-metadata`` with a hint on how to get feeds. Stale feeds are listed.
    """
    updated: list[str] = []
    errors: list[str] = []
    if fetcher is not None:
        for outcome in update_feeds(store, fetcher, kinds):
            if outcome.ok:
                updated.append(outcome.kind.value)
            else:
                errors.append(f"{outcome.kind.value}: {outcome.error}")
    status = tuple(store.feed_status())
    # One entry per kind: a feed imported from several files (one OSV file per record) is
    # still one stale feed.
    stale = tuple(sorted({s.kind.value for s in status if s.stale}))
    if store.has_advisories():
        return SourcingReport(
            mode="advisories",
            feeds=status,
            stale=stale,
            updated=tuple(updated),
            errors=tuple(errors),
            hint=(
                f"stale feeds: {', '.join(stale)}; run `patchpilot feeds update`" if stale else None
            ),
        )
    return SourcingReport(
        mode="repository-metadata",
        feeds=status,
        stale=stale,
        updated=tuple(updated),
        errors=tuple(errors),
        hint=NO_FEEDS_HINT,
    )

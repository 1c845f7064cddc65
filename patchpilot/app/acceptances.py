"""Risk acceptance use cases: accept a risk, list acceptances, withdraw one, load them.

An acceptance (:mod:`patchpilot.core.acceptance`) keeps a finding in every report, marked
``accepted`` with who, why and until when, and keeps it from failing a CI gate
(:func:`patchpilot.app.gates.gate`) until it expires. It is applied when a report or a gate is
computed, from the accept file as it is then (never stored with the findings), so an expired
acceptance counts again at once, without a new scan. Patch runs plan accepted findings as any
other: accepting a risk says "known, do not fail on it", not "do not fix it".

Every change is audit-logged (``acceptance.added``, ``acceptance.removed``) with the acting
identity; the file write and its audit record succeed or fail together.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final

import structlog

from patchpilot.core.acceptance import (
    Acceptance,
    Acceptances,
    append_acceptance,
    new_acceptance,
    normalize_id,
    parse_until,
    plain_terms,
    read_acceptances,
    remove_acceptances,
)
from patchpilot.core.audit import AuditLog
from patchpilot.core.errors import InvalidInputError
from patchpilot.core.models import utcnow
from patchpilot.core.settings import Settings

__all__ = [
    "SCHEMA",
    "Added",
    "acceptances_document",
    "accepted_json",
    "add",
    "load",
    "remove",
]

log = structlog.get_logger(__name__)

SCHEMA: Final = "patchpilot.acceptances/v1"
"""The schema name of ``accept --list --format json``."""

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Added:
    """What ``add`` did: the acceptance recorded and the one it renewed, if any."""

    acceptance: Acceptance
    replaced: Acceptance | None


def _today(clock: Clock) -> date:
    return clock().astimezone(UTC).date()


def load(settings: Settings, *, clock: Clock = utcnow) -> Acceptances:
    """The accept file's entries as they stand today (by ``clock``).

    Raises:
        ConfigError: the file is invalid (the entry, field and reason are named).
    """
    today = _today(clock)
    path = settings.acceptances_path
    entries = read_acceptances(path, today=today, max_days=settings.acceptances.max_days)
    return Acceptances(entries=tuple(entries), today=today, source=path)


def _check_against_inventory(settings: Settings, pattern: str) -> None:
    """Refuse a pattern term naming a group or tag: acceptances match host names only."""
    if settings.inventory is None:
        return
    from patchpilot.core.inventory import load_inventory

    inventory = load_inventory(settings.inventory)
    for term in plain_terms(pattern):
        if term in inventory.hosts:
            continue
        members = [*inventory.groups.get(term, ()), *inventory.tags.get(term, ())]
        if members:
            names = ",".join(dict.fromkeys(members))
            raise InvalidInputError(
                "--host",
                f"{term!r} is a group or tag of the inventory, but acceptance host patterns "
                f"match host names only: name its hosts (--host {names[:200]!r}) or use a glob",
            )


def add(
    settings: Settings,
    ident: str,
    *,
    host: str = "all",
    reason: str,
    until: str | date,
    actor: str,
    clock: Clock = utcnow,
) -> Added:
    """Accept the risk ``ident`` (advisory or CVE id) on the hosts ``host`` matches.

    An acceptance of the same id and host pattern is replaced (renewed). Audit-logged as
    ``acceptance.added``.

    Raises:
        InvalidInputError: a bad id, pattern, reason or date (past, or beyond
            ``acceptances.max_days``); nothing was written.
        ConfigError: the accept file is invalid or cannot be written.
        AuditError: the audit log could not be written (the file is left as it was).
    """
    now = clock()
    today = _today(clock)
    day = until if isinstance(until, date) else parse_until(until, today)
    entry = new_acceptance(
        ident,
        host=host,
        reason=reason,
        until=day,
        by=actor,
        now=now,
        max_days=settings.acceptances.max_days,
    )
    _check_against_inventory(settings, entry.host)
    audit = AuditLog.for_settings(settings, actor=actor)

    def record(replaced: Acceptance | None) -> None:
        audit.record(
            "acceptance.added",
            details={
                "id": entry.id,
                "host_pattern": entry.host,
                "until": entry.until.isoformat(),
                "reason": entry.reason,
                "renewed": None if replaced is None else replaced.summary(),
                "file": str(settings.acceptances_path),
            },
            at=now,
        )

    replaced = append_acceptance(
        settings.acceptances_path,
        entry,
        today=today,
        max_days=settings.acceptances.max_days,
        then=record,
    )
    log.info(
        "acceptance.added",
        actor=actor,
        id=entry.id,
        host=entry.host,
        until=entry.until.isoformat(),
        renewed=replaced is not None,
    )
    return Added(acceptance=entry, replaced=replaced)


def remove(
    settings: Settings,
    ident: str,
    *,
    host: str | None = None,
    actor: str,
    clock: Clock = utcnow,
) -> list[Acceptance]:
    """Withdraw the acceptances of ``ident`` (only the one of host pattern ``host`` if given).

    Audit-logged as ``acceptance.removed``, one event per entry removed.

    Raises:
        InvalidInputError: a bad id, or no acceptance of it (with that pattern).
        ConfigError: the accept file is invalid or cannot be written.
        AuditError: the audit log could not be written (the file is left as it was).
    """
    try:
        canonical = normalize_id(ident)
    except ValueError as exc:
        raise InvalidInputError("ID", str(exc)) from None
    now = clock()
    audit = AuditLog.for_settings(settings, actor=actor)

    def record(removed: list[Acceptance]) -> None:
        for entry in removed:
            audit.record(
                "acceptance.removed",
                details={
                    "id": entry.id,
                    "host_pattern": entry.host,
                    "until": entry.until.isoformat(),
                    "accepted_by": entry.by,
                    "file": str(settings.acceptances_path),
                },
                at=now,
            )

    removed = remove_acceptances(
        settings.acceptances_path,
        canonical,
        host=host,
        today=_today(clock),
        max_days=settings.acceptances.max_days,
        then=record,
    )
    if not removed:
        scope = f" with host pattern {host!r}" if host is not None else ""
        raise InvalidInputError(
            "ID", f"no acceptance of {canonical}{scope}; see `patchpilot accept --list`"
        )
    log.info("acceptance.removed", actor=actor, id=canonical, count=len(removed))
    return removed


def accepted_json(acceptance: Acceptance | None) -> dict[str, Any] | None:
    """A finding's ``accepted`` value in reports: ``{id, host, by, reason, until, created}``."""
    return None if acceptance is None else acceptance.summary()


def acceptances_document(acceptances: Acceptances) -> dict[str, Any]:
    """``patchpilot.acceptances/v1``: every entry with its state on ``acceptances.today``."""
    today = acceptances.today
    return {
        "schema": SCHEMA,
        "file": str(acceptances.source) if acceptances.source else None,
        "today": today.isoformat(),
        "acceptances": [
            {
                **entry.summary(),
                "state": "live" if entry.live(today) else "expired",
                "days_left": max((entry.until - today).days + 1, 0),
            }
            for entry in acceptances.entries
        ],
    }

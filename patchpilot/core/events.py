"""Events worth telling a person about: a run waits for approval, halted, rolled back, failed...

An :class:`Event` is what :class:`patchpilot.app.notify.Notifier` delivers (a webhook's JSON
body, an email). It holds only facts, as plain text; every channel renders it inert
(:func:`patchpilot.core.text.inert`) because titles and details quote host names, package
names and people's comments.

``link`` is a path on the service (``/api/v1/runs/RUN_ID``) or an absolute URL; the notifier
prefixes a path with ``notifications.base_url``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["EVENT_KINDS", "MAX_DETAIL", "MAX_TITLE", "Event", "EventKind"]

EventKind = Literal[
    "awaiting-approval",
    "halted",
    "rolled-back",
    "failed",
    "approval-expired",
    "schedule-missed",
    "feed-stale",
    "sla-breached",
]
"""What happened (the ``event`` of a webhook body)."""

EVENT_KINDS: Final[tuple[EventKind, ...]] = get_args(EventKind)
"""Every event kind, in the order above."""

MAX_TITLE: Final = 300
"""Longest title, in characters (a longer one is cut with an ellipsis)."""
MAX_DETAIL: Final = 8000
"""Longest detail, in characters (a longer one is cut with an ellipsis)."""


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (the last one an ellipsis when cut)."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


class Event(BaseModel):
    """One notification-worthy fact.

    ``run_id`` is None for events about no run (a stale feed, a missed schedule).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: EventKind
    run_id: str | None = Field(default=None, max_length=200)
    title: str = Field(min_length=1, max_length=MAX_TITLE)
    detail: str = Field(default="", max_length=MAX_DETAIL)
    link: str | None = Field(
        default=None, max_length=2048, description="a path on the service or an absolute URL"
    )
    at: datetime

    @property
    def key(self) -> str:
        """What identifies the fact, to send it once: ``kind:run_id`` (or ``kind:title``)."""
        return f"{self.kind}:{self.run_id if self.run_id is not None else self.title}"

    def payload(self, link: str | None = None) -> dict[str, Any]:
        """The webhook body: ``{event, run_id, title, detail, link, at}`` (``at`` ISO 8601).

        Args:
            link: The absolute link to send instead of ``self.link``.
        """
        return {
            "event": self.kind,
            "run_id": self.run_id,
            "title": self.title,
            "detail": self.detail,
            "link": link if link is not None else self.link,
            "at": self.at.isoformat(),
        }

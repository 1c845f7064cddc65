"""Notifications: tell people when a run waits for them, halts, rolls back, fails...

    notifier = Notifier(settings.notifications)
    for event in events_for_run(document):
        notifier.emit(event)          # returns at once, whatever the channels do
    ...
    notifier.close()                  # delivers what is queued (bounded wait), stops the thread

Channels come from the ``notifications:`` settings: webhooks (an HTTP POST of the JSON body
``{event, run_id, title, detail, link, at}``, with optional headers whose values may be
``${ENV:NAME}``) and e-mail through SMTP (``smtplib``, optional STARTTLS and login with the
password from an environment variable). Each channel may subscribe to some event kinds only.

Plain webhooks + ``smtplib`` rather than apprise: the webhook body is a documented contract
(apprise's JSON plugin has its own shape), the standard library already speaks SMTP with
STARTTLS, and apprise would add a dozen dependencies (requests, markdown, click, ...) for
channels nobody configured; Slack, Teams and Mattermost take incoming webhooks (through a small
relay when their body format is required).

Never blocking a run: :meth:`Notifier.emit` only puts the event on a bounded queue (full: the
event is dropped, logged ``notify.dropped`` and counted); one background thread delivers each
event to each channel with retries (tenacity: ``attempts`` attempts, exponential backoff from
``backoff`` seconds, ``timeout`` seconds per attempt). A delivery that still fails is logged
``notify.failed`` and counted; it never raises into the caller.

Untrusted text (host and package names, comments, reasons) is rendered inert in every channel:
JSON escapes it, and the e-mail subject is one line (CR, LF and other controls are shown as
visible escapes, so no header can be injected) and the body plain text with controls escaped.
"""

from __future__ import annotations

import email.policy
import os
import queue
import smtplib
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, urlsplit

import httpx
import structlog
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from patchpilot.core.errors import ConfigError
from patchpilot.core.events import MAX_DETAIL, MAX_TITLE, Event, clip
from patchpilot.core.models import utcnow
from patchpilot.core.settings import NotificationSettings, SMTPSettings, WebhookSettings
from patchpilot.core.store import Store
from patchpilot.core.text import inert

if TYPE_CHECKING:
    from patchpilot.app.compliance import Breach

__all__ = [
    "Notifier",
    "NotifierStats",
    "api_approve_path",
    "api_run_path",
    "approve_path",
    "events_for_feeds",
    "events_for_run",
    "run_path",
    "schedule_missed_event",
    "sla_breached_event",
]

log = structlog.get_logger(__name__)

API_PREFIX: Final = "/api/v1"
MAX_LISTED: Final = 20
"""Deployments (hosts, packages) listed in one event's detail; more are counted."""
_STOP: Final = object()


def run_path(run_id: str) -> str:
    """The dashboard's page of a run (``/runs/RUN_ID``): the link of run events."""
    return f"/runs/{quote(run_id, safe='')}"


def approve_path(run_id: str) -> str:
    """The dashboard's approval page of a run (``/approvals/RUN_ID``: the plan, approve or
    reject): the link of ``awaiting-approval`` events."""
    return f"/approvals/{quote(run_id, safe='')}"


def api_run_path(run_id: str) -> str:
    """The API path of a run document: ``/api/v1/runs/RUN_ID``."""
    return f"{API_PREFIX}/runs/{quote(run_id, safe='')}"


def api_approve_path(run_id: str) -> str:
    """The API path that approves a run (POST, JSON ``{"comment": ...}``)."""
    return f"{API_PREFIX}/approvals/{quote(run_id, safe='')}/approve"


# --------------------------------------------------------------------------- events


def _text(value: object) -> str:
    return "" if value is None else str(value)


def _event(
    kind: Any, run_id: str | None, title: str, detail: str, link: str | None, at: datetime
) -> Event:
    return Event(
        kind=kind,
        run_id=run_id,
        title=clip(title, MAX_TITLE),
        detail=clip(detail, MAX_DETAIL),
        link=link,
        at=at,
    )


def _listed(lines: list[str]) -> str:
    shown = lines[:MAX_LISTED]
    more = len(lines) - len(shown)
    return "\n".join(shown + ([f"... and {more} more"] if more > 0 else []))


def events_for_run(document: Mapping[str, Any], *, now: datetime | None = None) -> list[Event]:
    """The events a run document (``patchpilot.run/v1``) is worth.

    - ``awaiting_approval`` -> ``awaiting-approval`` (link: the approve API path);
    - ``halted`` -> ``halted``; ``failed`` -> ``failed``;
    - any deployment row ``rolled_back`` -> ``rolled-back`` (also next to halted/failed);
    - ``rejected`` because the approval expired -> ``approval-expired``.

    Other statuses (completed, partial, a person's rejection) give no event. Links are
    service paths (:func:`run_path`, :func:`approve_path`); the notifier makes them absolute.

    Args:
        document: The run document, as :func:`patchpilot.app.runs.document` returns it.
        now: The events' time (default: now, UTC).
    """
    at = now or utcnow()
    run_id = _text(document.get("run_id")) or "?"
    status = _text(document.get("status"))
    reason = _text(document.get("reason"))
    hosts = [str(h) for h in document.get("hosts") or []]
    target = _text(document.get("target")) or ", ".join(hosts) or "?"
    approval = document.get("approval") or {}
    deployments = [d for d in document.get("deployments") or [] if isinstance(d, Mapping)]
    events: list[Event] = []
    if status == "awaiting_approval":
        plan = document.get("plan") or {}
        items = plan.get("items") or []
        lines = [f"Run {run_id} on {target} waits for approval."]
        reasons = approval.get("reasons") or []
        if reasons:
            lines.append("Why: " + "; ".join(str(r) for r in reasons))
        if items:
            lines.append(f"Plan ({len(items)} item(s)):")
            lines.append(
                _listed(
                    [
                        f"- {i.get('host')}: {i.get('package')} {i.get('from') or '(new)'}"
                        f" -> {i.get('to')}"
                        for i in items
                        if isinstance(i, Mapping)
                    ]
                )
            )
        if approval.get("expires_at"):
            lines.append(f"Expires at {approval['expires_at']}.")
        lines.append(
            f"Approve or reject on the approval page (the link), or POST "
            f'{api_approve_path(run_id)} with {{"comment": "..."}}, or `patchpilot approve '
            f"{run_id}`; the run document: GET {api_run_path(run_id)}"
        )
        events.append(
            _event(
                "awaiting-approval",
                run_id,
                f"Run {run_id} awaits approval ({target})",
                "\n".join(lines),
                approve_path(run_id),
                at,
            )
        )
    rolled = [d for d in deployments if d.get("status") == "rolled_back"]
    if rolled:
        lines = [f"Run {run_id}: {len(rolled)} update(s) rolled back."]
        lines.append(
            _listed(
                [
                    f"- {d.get('host')}: {d.get('package')} {d.get('to')} rolled back to "
                    f"{d.get('from') or '(not installed)'}"
                    + (f" ({d['reason']})" if d.get("reason") else "")
                    for d in rolled
                ]
            )
        )
        events.append(
            _event(
                "rolled-back",
                run_id,
                f"Run {run_id} rolled back {len(rolled)} update(s)",
                "\n".join(lines),
                run_path(run_id),
                at,
            )
        )
    waits_for_window = status == "halted" and document.get("waiting") == "window"
    if status in ("halted", "failed") and not waits_for_window:
        # A run waiting for its maintenance window or not-before time is "halted" in its
        # document but nothing went wrong: no event for that.
        verb = "halted" if status == "halted" else "failed"
        events.append(
            _event(
                status,
                run_id,
                f"Run {run_id} {verb} ({target})",
                f"Run {run_id} on {target} {verb}: {reason or 'no reason recorded'}",
                run_path(run_id),
                at,
            )
        )
    if status == "rejected" and approval.get("status") == "expired":
        events.append(
            _event(
                "approval-expired",
                run_id,
                f"Approval of run {run_id} expired ({target})",
                f"Nobody decided on run {run_id} before {approval.get('expires_at') or '?'}; "
                f"the run ended rejected. {reason}".strip(),
                run_path(run_id),
                at,
            )
        )
    return events


def events_for_feeds(store: Store, *, now: datetime | None = None) -> list[Event]:
    """A ``feed-stale`` event for each advisory feed older than its maximum age.

    Args:
        store: The store (its feed imports).
        now: The reference time (default: now, UTC).
    """
    at = now or utcnow()
    events = []
    for status in store.feed_status(at):
        if not status.stale:
            continue
        name = f"{status.kind.value} feed {status.source}"
        events.append(
            _event(
                "feed-stale",
                None,
                f"Stale advisory feed: {name}",
                f"The {name} was last fetched at {status.fetched_at.isoformat()}"
                + (f" (published {status.published_at.isoformat()})" if status.published_at else "")
                + f"; it is older than {status.max_age_days:g} day(s). Findings may miss new "
                "advisories: run `patchpilot feeds update`.",
                None,
                at,
            )
        )
    return events


def schedule_missed_event(
    schedule_id: str, occurrence_at: datetime, reason: str, *, now: datetime | None = None
) -> Event:
    """The ``schedule-missed`` event of one missed occurrence of a schedule.

    Args:
        schedule_id: The schedule.
        occurrence_at: When it should have fired.
        reason: Why it did not (e.g. "the service was down past the grace period; skipped").
        now: The event's time (default: now, UTC).
    """
    return _event(
        "schedule-missed",
        None,
        f"Schedule {schedule_id} missed its {occurrence_at.isoformat()} occurrence",
        f"Schedule {schedule_id} did not fire at {occurrence_at.isoformat()}: {reason}",
        f"{API_PREFIX}/schedules/{quote(schedule_id, safe='')}",
        now or utcnow(),
    )


def sla_breached_event(breach: Breach, *, now: datetime | None = None) -> Event:
    """The ``sla-breached`` event of one item that became overdue
    (:func:`patchpilot.app.compliance.claim_breaches`)."""
    cves = ", ".join(breach.cves[:MAX_LISTED]) or "no CVE id"
    due = breach.due.isoformat() if breach.due else "no due date"
    return _event(
        "sla-breached",
        None,
        f"SLA breached: {breach.advisory} ({breach.package}) on {breach.host}, due {due}",
        f"{breach.advisory} ({breach.package}; {cves}) on {breach.host} is open past its due "
        f"date {due} ({breach.sla}); overdue since {breach.at.isoformat()}.",
        f"{API_PREFIX}/compliance?host={quote(breach.host, safe='')}",
        now or utcnow(),
    )


# --------------------------------------------------------------------------- channels


class _Permanent(Exception):
    """A delivery that retrying cannot fix (e.g. the webhook answered 400)."""


@dataclass(frozen=True)
class _Channel:
    name: str  # for logs: never a secret (a webhook's scheme and host only)
    events: frozenset[str] | None
    send: Callable[[Event, str | None], None]

    def wants(self, event: Event) -> bool:
        return self.events is None or event.kind in self.events


@dataclass(frozen=True)
class NotifierStats:
    """What a notifier did so far (deliveries count per channel)."""

    queued: int
    delivered: int
    failed: int
    dropped: int


def _webhook_channel(hook: WebhookSettings, environ: Mapping[str, str], timeout: float) -> _Channel:
    headers = hook.resolved_headers(environ)
    parts = urlsplit(hook.url)
    name = f"webhook {parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    client_timeout = httpx.Timeout(timeout)

    def send(event: Event, link: str | None) -> None:
        with httpx.Client(timeout=client_timeout, follow_redirects=False) as client:
            response = client.post(hook.url, json=event.payload(link), headers=headers)
        if response.is_success:
            return
        problem = f"answered HTTP {response.status_code}"
        if response.status_code in (408, 425, 429) or response.status_code >= 500:
            raise OSError(problem)
        raise _Permanent(problem)

    return _Channel(name, frozenset(hook.events) if hook.events is not None else None, send)


def email_message(event: Event, link: str | None, smtp: SMTPSettings) -> EmailMessage:
    """The e-mail of ``event``: a one-line subject, a plain-text body, both inert."""
    # Python's folding of an unstructured header that fits on one continuation line puts it
    # after a bare "Subject:" (clients then show a leading space): fold only past 998 (RFC 5322)
    message = EmailMessage(policy=email.policy.SMTP.clone(max_line_length=998))
    subject = inert(f"[patchpilot] {event.kind}: {event.title}", newlines=False)
    message["Subject"] = clip(subject, 400)
    message["From"] = smtp.sender
    message["To"] = ", ".join(smtp.to)
    message["Date"] = format_datetime(event.at)
    message["Message-ID"] = make_msgid(domain="patchpilot.invalid")
    body = [inert(event.title, newlines=False), "", inert(event.detail), ""]
    if link:
        body.append(f"Link: {inert(link, newlines=False)}")
    if event.run_id:
        body.append(f"Run: {inert(event.run_id, newlines=False)}")
    body.append(f"Event: {event.kind} at {event.at.isoformat()}")
    message.set_content("\n".join(body) + "\n")
    return message


def _smtp_channel(smtp: SMTPSettings, environ: Mapping[str, str], timeout: float) -> _Channel:
    password: str | None = None
    if smtp.password_env is not None:
        password = environ.get(smtp.password_env)
        if password is None:
            raise ConfigError(
                f"notifications.smtp.password_env names {smtp.password_env}, which is unset: "
                "export it or remove username and password_env",
                key="notifications.smtp.password_env",
            )

    def send(event: Event, link: str | None) -> None:
        message = email_message(event, link, smtp)
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as client:
            if smtp.starttls:
                client.starttls(context=ssl.create_default_context())
            if smtp.username is not None and password is not None:
                client.login(smtp.username, password)
            refused = client.send_message(message)
        if refused:
            log.warning("notify.smtp_refused", recipients=sorted(refused), kind=event.kind)

    name = f"smtp {smtp.host}:{smtp.port}"
    return _Channel(name, frozenset(smtp.events) if smtp.events is not None else None, send)


def _retryable(exc: BaseException) -> bool:
    return not isinstance(exc, _Permanent)


# --------------------------------------------------------------------------- the notifier


class Notifier:
    """Delivers events to the configured channels from one background thread.

    Args:
        settings: The ``notifications:`` settings.
        environ: Where ``${ENV:NAME}`` header values and the SMTP password are read
            (default ``os.environ``), once, here.

    Raises:
        ConfigError: a header or the SMTP password names an unset environment variable.
    """

    def __init__(
        self, settings: NotificationSettings, *, environ: Mapping[str, str] | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        self._settings = settings
        self._channels = [_webhook_channel(h, env, settings.timeout) for h in settings.webhooks]
        if settings.smtp is not None:
            self._channels.append(_smtp_channel(settings.smtp, env, settings.timeout))
        self._queue: queue.Queue[object] = queue.Queue(maxsize=settings.queue_size)
        self._lock = threading.Lock()
        self._counts = {"queued": 0, "delivered": 0, "failed": 0, "dropped": 0}
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="patchpilot-notify", daemon=True)
        if self._channels:
            self._thread.start()

    @property
    def channels(self) -> list[str]:
        """The channels' names (``webhook https://host``, ``smtp host:port``)."""
        return [c.name for c in self._channels]

    @property
    def stats(self) -> NotifierStats:
        """Counts so far."""
        with self._lock:
            return NotifierStats(**self._counts)

    def _count(self, what: str) -> None:
        with self._lock:
            self._counts[what] += 1

    def link(self, event: Event) -> str | None:
        """The absolute link of ``event`` (a path is prefixed with ``base_url``)."""
        if event.link is None or "://" in event.link:
            return event.link
        return self._settings.base_url + "/" + event.link.lstrip("/")

    def emit(self, event: Event) -> bool:
        """Queue ``event`` for delivery and return at once.

        Returns:
            True when queued; False when no channel wants it, the notifier is closed or the
            queue is full (the event is dropped: logged ``notify.dropped`` and counted).
        """
        if not any(c.wants(event) for c in self._channels):
            return False
        if self._closed:
            self._count("dropped")
            log.warning("notify.dropped", kind=event.kind, run_id=event.run_id, why="closed")
            return False
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self._count("dropped")
            log.warning(
                "notify.dropped",
                kind=event.kind,
                run_id=event.run_id,
                why=f"queue full ({self._settings.queue_size} events waiting)",
            )
            return False
        self._count("queued")
        return True

    def emit_all(self, events: Iterable[Event]) -> int:
        """:meth:`emit` each event; how many were queued."""
        return sum(self.emit(e) for e in events)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking events, deliver the queued ones (waiting at most ``timeout`` s)."""
        if self._closed:
            return
        self._closed = True
        if not self._thread.is_alive():
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("notify.close_timeout", waiting=self._queue.qsize())
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("notify.close_timeout", waiting=self._queue.qsize())

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            assert isinstance(item, Event)
            for channel in self._channels:
                if not channel.wants(item):
                    continue
                try:
                    self._deliver(channel, item)
                except Exception as exc:  # the worker outlives any bug in one delivery
                    self._count("failed")
                    log.error("notify.worker_error", channel=channel.name, error=repr(exc))

    def _deliver(self, channel: _Channel, event: Event) -> None:
        link = self.link(event)
        settings = self._settings

        def attempt_failed(state: Any) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.warning(
                "notify.attempt_failed",
                channel=channel.name,
                kind=event.kind,
                run_id=event.run_id,
                attempt=state.attempt_number,
                error=f"{type(exc).__name__}: {exc}",
            )

        retrying = Retrying(
            stop=stop_after_attempt(settings.attempts),
            wait=wait_exponential(multiplier=settings.backoff, max=max(settings.backoff * 8, 0)),
            retry=retry_if_exception(_retryable),
            after=attempt_failed,
            reraise=True,
        )
        try:
            retrying(channel.send, event, link)
        except Exception as exc:  # never into the caller: log and count
            self._count("failed")
            log.error(
                "notify.failed",
                channel=channel.name,
                kind=event.kind,
                run_id=event.run_id,
                error=f"{type(exc).__name__}: {exc}",
            )
            return
        self._count("delivered")
        log.info("notify.delivered", channel=channel.name, kind=event.kind, run_id=event.run_id)

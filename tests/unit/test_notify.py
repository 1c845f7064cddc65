"""Notifications (patchpilot/app/notify.py) delivered for real, on loopback:

- a webhook receiver (``http.server.ThreadingHTTPServer`` on 127.0.0.1, a free port) and an
  SMTP server (aiosmtpd's ``Controller`` on 127.0.0.1) receive the awaiting-approval and
  rolled-back events of run documents;
- a receiver that is down or failing gets the configured attempts, then the failure is logged
  and counted; ``emit()`` returns while the receiver still holds the request (no blocking,
  shown with events set by the receiver and bounded waits, never with timings);
- hostile strings (host names, comments with CR/LF and escape sequences) stay inert in the
  JSON body and in the e-mail (no header injection);
- the run-document -> event mapping, stale feeds, missed schedules and the settings' checks.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from patchpilot.app.notify import (
    Notifier,
    approve_path,
    events_for_feeds,
    events_for_run,
    run_path,
    schedule_missed_event,
)
from patchpilot.core.errors import ConfigError
from patchpilot.core.events import Event
from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.settings import NotificationSettings
from patchpilot.core.store import Store
from tests.receivers import WAIT, Mailbox, Receiver, free_port

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
HOSTILE_HOST = "web-1\r\nBcc: victim@example.org\r\n\x1b[2J\x1b]0;pwned\x07"
HOSTILE_COMMENT = 'ok"}\n\x1b[31mRED\u202e <script>alert(1)</script>\r\nX-Injected: 1'


def settings_for(
    receiver: Receiver | None = None, mailbox: Mailbox | None = None, **changes: Any
) -> NotificationSettings:
    data: dict[str, Any] = {
        "base_url": "https://patchpilot.example.org/",
        "backoff": 0.01,
        "timeout": 5,
    }
    if receiver is not None:
        data["webhooks"] = [
            {"url": receiver.url, "headers": {"Authorization": "Bearer ${ENV:HOOK_TOKEN}"}}
        ]
    if mailbox is not None:
        data["smtp"] = {
            "host": "127.0.0.1",
            "port": mailbox.port,
            "sender": "patchpilot@example.org",
            "to": ["ops@example.org", "oncall@example.org"],
            "username": "patchpilot",
            "password_env": "SMTP_PASSWORD",
        }
    return NotificationSettings.model_validate(data | changes)


ENV = {"HOOK_TOKEN": "t0ken", "SMTP_PASSWORD": "s3cret"}


# --------------------------------------------------------------------------- run documents


def run_document(status: str, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": "patchpilot.run/v1",
        "run_id": "20261201T120000Z-abc123",
        "status": status,
        "reason": None,
        "waiting": None,
        "hint": None,
        "dry_run": False,
        "target": "prod",
        "hosts": ["web-1", "db-1"],
        "plan": {
            "plan_id": "plan-1",
            "items": [
                {"host": "web-1", "package": "acme-web", "from": "1.0.0", "to": "1.1.0"},
            ],
        },
        "approval": {"required": False, "reasons": [], "status": None, "expires_at": None},
        "window": None,
        "rings": [],
        "deployments": [],
        "unreachable": [],
        "compliance": {},
        "assistance": [],
    }
    return doc | changes


AWAITING = run_document(
    "awaiting_approval",
    waiting="approval",
    approval={
        "required": True,
        "reasons": ["web-1 is prod"],
        "status": "pending",
        "expires_at": "2026-12-02T12:00:00+00:00",
    },
)
ROLLED_BACK = run_document(
    "halted",
    run_id="20261201T130000Z-def456",
    reason="ring canary halted: health check failed on web-1",
    deployments=[
        {
            "host": "web-1",
            "package": "acme-web",
            "from": "1.0.0",
            "to": "1.1.0",
            "status": "rolled_back",
            "reason": "health check failed: http 500",
            "ring": "canary",
            "compliance": "missing",
        },
        {
            "host": "db-1",
            "package": "acme-web",
            "from": "1.0.0",
            "to": "1.1.0",
            "status": "skipped",
            "reason": "ring halted",
            "ring": "prod",
            "compliance": "missing",
        },
    ],
)


# --------------------------------------------------------------------------- delivery


def test_awaiting_approval_and_rollback_reach_the_webhook_and_the_mailbox(
    receiver: Receiver, mailbox: Mailbox
) -> None:
    events = events_for_run(AWAITING, now=NOW) + events_for_run(ROLLED_BACK, now=NOW)
    assert [e.kind for e in events] == ["awaiting-approval", "rolled-back", "halted"]
    with Notifier(settings_for(receiver, mailbox), environ=ENV) as notifier:
        assert notifier.channels == [
            f"webhook http://127.0.0.1:{receiver.url.split(':')[2].split('/')[0]}",
            f"smtp 127.0.0.1:{mailbox.port}",
        ]
        assert notifier.emit_all(events) == 3
        hooks = receiver.wait_for(3)
        mails = mailbox.wait_for(3)
    assert notifier.stats.delivered == 6
    assert notifier.stats.failed == notifier.stats.dropped == 0

    bodies = [json.loads(h["raw"]) for h in hooks]
    assert {h["path"] for h in hooks} == {"/hook?team=ops"}
    assert {h["headers"]["Authorization"] for h in hooks} == {"Bearer t0ken"}
    assert {h["headers"]["Content-Type"] for h in hooks} == {"application/json"}
    awaiting = next(b for b in bodies if b["event"] == "awaiting-approval")
    assert set(awaiting) == {"event", "run_id", "title", "detail", "link", "at"}
    assert awaiting["run_id"] == "20261201T120000Z-abc123"
    assert awaiting["link"] == ("https://patchpilot.example.org/approvals/20261201T120000Z-abc123")
    assert awaiting["at"] == NOW.isoformat()
    assert "web-1 is prod" in awaiting["detail"]
    assert "acme-web 1.0.0 -> 1.1.0" in awaiting["detail"]
    rolled = next(b for b in bodies if b["event"] == "rolled-back")
    assert rolled["link"] == "https://patchpilot.example.org/runs/20261201T130000Z-def456"
    assert "POST /api/v1/approvals/20261201T120000Z-abc123/approve" in awaiting["detail"]
    assert "web-1: acme-web 1.1.0 rolled back to 1.0.0" in rolled["detail"]
    assert "db-1" not in rolled["detail"]  # skipped, not rolled back

    assert mailbox.logins == ["patchpilot"] * 3
    assert mailbox.envelopes[0] == (
        "patchpilot@example.org",
        ["ops@example.org", "oncall@example.org"],
    )
    by_subject = {m["Subject"]: m for m in mails}
    # each subject is one line as sent (no fold after a bare "Subject:")
    assert all(s.startswith("[patchpilot] ") for s in by_subject), list(by_subject)
    subject = "[patchpilot] awaiting-approval: Run 20261201T120000Z-abc123 awaits approval (prod)"
    assert subject in by_subject
    mail = by_subject[subject]
    assert mail["From"] == "patchpilot@example.org"
    assert mail["To"] == "ops@example.org, oncall@example.org"
    text = mail.get_content()
    assert "Link: https://patchpilot.example.org/approvals/" in text
    assert any("rolled-back" in s for s in by_subject)


def test_a_webhook_gets_only_the_events_it_subscribed_to(receiver: Receiver) -> None:
    settings = settings_for(
        webhooks=[{"url": receiver.url, "events": ["rolled-back"]}],
    )
    with Notifier(settings, environ={}) as notifier:
        assert notifier.emit_all(events_for_run(AWAITING, now=NOW)) == 0  # nobody wants it
        assert notifier.emit_all(events_for_run(ROLLED_BACK, now=NOW)) == 1
        (hook,) = receiver.wait_for(1)
    assert json.loads(hook["raw"])["event"] == "rolled-back"
    assert len(receiver.requests) == 1


def test_emit_returns_while_the_receiver_still_holds_the_request(receiver: Receiver) -> None:
    receiver.hold = threading.Event()
    (event,) = events_for_run(AWAITING, now=NOW)
    notifier = Notifier(settings_for(receiver, queue_size=1), environ=ENV)
    try:
        assert notifier.emit(event) is True
        assert receiver.arrived.wait(WAIT)  # the worker is inside the POST, held there...
        assert not receiver.hold.is_set()
        # ... and emit() still returns at once: one event queued, then the queue is full.
        assert notifier.emit(event) is True
        with capture_logs() as logs:
            assert notifier.emit(event) is False
        assert notifier.stats.dropped == 1
        assert [e["event"] for e in logs] == ["notify.dropped"]
        assert "queue full" in logs[0]["why"]
        receiver.hold.set()
    finally:
        notifier.close()
    assert notifier.stats.delivered == 2
    assert len(receiver.requests) == 2


def test_a_failing_receiver_gets_every_attempt_then_the_failure_is_logged(
    receiver: Receiver,
) -> None:
    receiver.statuses = [503, 500, 502]
    (event,) = events_for_run(AWAITING, now=NOW)
    with capture_logs() as logs, Notifier(settings_for(receiver), environ=ENV) as notifier:
        assert notifier.emit(event) is True
        receiver.wait_for(3)
    assert len(receiver.requests) == 3  # attempts: 3, no fourth
    assert notifier.stats.failed == 1
    assert notifier.stats.delivered == 0
    attempts = [e for e in logs if e["event"] == "notify.attempt_failed"]
    assert [e["attempt"] for e in attempts] == [1, 2, 3]
    (failed,) = [e for e in logs if e["event"] == "notify.failed"]
    assert failed["log_level"] == "error"
    assert "HTTP 502" in failed["error"]
    assert failed["run_id"] == "20261201T120000Z-abc123"


def test_a_client_error_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [400]
    with capture_logs() as logs, Notifier(settings_for(receiver), environ=ENV) as notifier:
        notifier.emit_all(events_for_run(AWAITING, now=NOW))
    assert len(receiver.requests) == 1
    assert notifier.stats.failed == 1
    assert any(e["event"] == "notify.failed" and "HTTP 400" in e["error"] for e in logs)


def test_a_receiver_that_is_down_does_not_hold_up_emit() -> None:
    port = free_port()  # nothing listens there any more: connection refused
    settings = settings_for(
        webhooks=[{"url": f"http://127.0.0.1:{port}/hook"}],
        smtp={
            "host": "127.0.0.1",
            "port": port,
            "sender": "patchpilot@example.org",
            "to": ["ops@example.org"],
        },
    )
    with capture_logs() as logs:
        notifier = Notifier(settings, environ={})
        assert notifier.emit_all(events_for_run(ROLLED_BACK, now=NOW)) == 2
        notifier.close()
    assert notifier.stats.failed == 4  # two events, two channels
    assert notifier.stats.delivered == 0
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert {e["channel"] for e in failed} == {
        f"webhook http://127.0.0.1:{port}",
        f"smtp 127.0.0.1:{port}",
    }
    assert len([e for e in logs if e["event"] == "notify.attempt_failed"]) == 12  # 3 each
    # Closed: later events are dropped, counted and logged, never raised.
    assert notifier.emit(events_for_run(ROLLED_BACK, now=NOW)[0]) is False
    assert notifier.stats.dropped == 1


def test_webhook_logs_never_show_the_url_path_or_credentials() -> None:
    settings = settings_for(
        webhooks=[{"url": "https://user:pw@hooks.example.org/services/T000/B000/SECRET"}]
    )
    notifier = Notifier(settings, environ={})
    try:
        assert notifier.channels == ["webhook https://hooks.example.org"]
    finally:
        notifier.close()


# --------------------------------------------------------------------------- hostile text


def test_hostile_strings_stay_inert_in_the_json_body_and_the_email(
    receiver: Receiver, mailbox: Mailbox
) -> None:
    doc = run_document(
        "halted",
        target=HOSTILE_HOST,
        reason=HOSTILE_COMMENT,
        deployments=[
            {
                "host": HOSTILE_HOST,
                "package": "acme-web",
                "from": "1.0.0",
                "to": "1.1.0",
                "status": "rolled_back",
                "reason": HOSTILE_COMMENT,
                "ring": "canary",
                "compliance": "missing",
            }
        ],
    )
    events = events_for_run(doc, now=NOW)
    assert [e.kind for e in events] == ["rolled-back", "halted"]
    with Notifier(settings_for(receiver, mailbox), environ=ENV) as notifier:
        notifier.emit_all(events)
        hooks = receiver.wait_for(2)
        mails = mailbox.wait_for(2)
    subjects = sorted(str(m["Subject"]).strip() for m in mails)
    assert subjects[0].startswith("[patchpilot] halted: Run 20261201T120000Z-abc123 halted (")

    for hook in hooks:
        raw = hook["raw"]
        assert b"\x1b" not in raw
        assert b"\r" not in raw
        assert b"\n" not in raw  # every newline is the JSON escape \n
        body = json.loads(raw)  # the text arrives as it was, as data
        assert HOSTILE_COMMENT in body["detail"]
    halted = next(json.loads(h["raw"]) for h in hooks if b'"halted"' in h["raw"])
    assert HOSTILE_HOST in halted["title"]

    for mail in mails:
        assert mail["Bcc"] is None
        assert mail["X-Injected"] is None
        assert set(mail.keys()) == {"Subject", "From", "To", "Date", "Message-ID",
                                    "Content-Type", "Content-Transfer-Encoding",
                                    "MIME-Version"}  # fmt: skip
        subject = str(mail["Subject"])
        assert "\r" not in subject
        assert "\n" not in subject
        assert "\x1b" not in subject
        if "halted:" in subject:  # the title names the (hostile) target
            assert "(web-1\\x0d\\x0aBcc: victim@example.org\\x0d\\x0a\\x1b[2J" in subject
        text = mail.get_content()
        assert "\x1b" not in text
        assert "\u202e" not in text
        assert "\\x1b[31mRED\\u202e" in text
    for envelope in mailbox.envelopes:
        assert envelope[1] == ["ops@example.org", "oncall@example.org"]


# --------------------------------------------------------------------------- the mapping


@pytest.mark.parametrize(
    ("doc", "kinds"),
    [
        (AWAITING, ["awaiting-approval"]),
        (run_document("halted", reason="canary failed"), ["halted"]),
        (ROLLED_BACK, ["rolled-back", "halted"]),
        (run_document("failed", reason="plan failed: boom"), ["failed"]),
        (
            run_document(
                "rejected",
                approval={
                    "required": True,
                    "reasons": [],
                    "status": "expired",
                    "expires_at": "2026-12-02T12:00:00+00:00",
                },
            ),
            ["approval-expired"],
        ),
        (
            run_document(
                "rejected",
                approval={"required": True, "reasons": [], "status": "rejected"},
            ),
            [],
        ),
        (run_document("completed"), []),
        (
            run_document(
                "partial",
                deployments=[{**ROLLED_BACK["deployments"][0]}],
            ),
            ["rolled-back"],
        ),
    ],
    ids=[
        "awaiting",
        "halted",
        "rolled-back",
        "failed",
        "expired",
        "rejected-by-a-person",
        "completed",
        "partial-with-rollback",
    ],
)
def test_events_for_run(doc: dict[str, Any], kinds: list[str]) -> None:
    events = events_for_run(doc, now=NOW)
    assert [e.kind for e in events] == kinds
    for event in events:
        assert event.run_id == doc["run_id"]
        assert event.at == NOW
        assert event.link in (run_path(doc["run_id"]), approve_path(doc["run_id"]))
        assert event.key == f"{event.kind}:{doc['run_id']}"


def test_failed_and_expired_events_say_why() -> None:
    (failed,) = events_for_run(run_document("failed", reason="plan failed: boom"), now=NOW)
    assert "plan failed: boom" in failed.detail
    (expired,) = events_for_run(
        run_document(
            "rejected",
            approval={"required": True, "status": "expired", "expires_at": "2026-12-02T12:00Z"},
        ),
        now=NOW,
    )
    assert "2026-12-02T12:00Z" in expired.detail


def test_a_long_plan_is_listed_up_to_a_bound() -> None:
    items = [
        {"host": f"web-{n}", "package": "acme-web", "from": "1.0.0", "to": "1.1.0"}
        for n in range(100)
    ]
    (event,) = events_for_run(AWAITING | {"plan": {"items": items}}, now=NOW)
    assert "Plan (100 item(s))" in event.detail
    assert "web-19:" in event.detail
    assert "web-20:" not in event.detail
    assert "... and 80 more" in event.detail


def test_stale_feeds_give_feed_stale_events(tmp_path: Path) -> None:
    with Store(tmp_path / "s.db") as store:
        assert events_for_feeds(store, now=NOW) == []
        store.import_batch(
            FeedBatch(
                kind=FeedKind.EPSS,
                source="https://epss.example.org/epss.csv.gz",
                fetched_at=NOW - timedelta(days=30),
                sha256="0" * 64,
                epss=(),
            )
        )
        (event,) = events_for_feeds(store, now=NOW)
    assert event.kind == "feed-stale"
    assert event.run_id is None
    assert "https://epss.example.org/epss.csv.gz" in event.title
    assert "patchpilot feeds update" in event.detail


def test_schedule_missed_event() -> None:
    at = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
    event = schedule_missed_event("nightly scan", at, "the service was down; skipped", now=NOW)
    assert event.kind == "schedule-missed"
    assert event.run_id is None
    assert event.link == "/api/v1/schedules/nightly%20scan"
    assert "2026-12-01T02:00:00+00:00" in event.title
    assert "the service was down; skipped" in event.detail


def test_an_absolute_link_is_kept_and_a_path_gets_the_base_url() -> None:
    notifier = Notifier(settings_for(), environ={})
    event = Event(kind="failed", title="x", link="https://elsewhere.example.org/x", at=NOW)
    assert notifier.link(event) == "https://elsewhere.example.org/x"
    assert notifier.link(event.model_copy(update={"link": "/api/v1/runs/r"})) == (
        "https://patchpilot.example.org/api/v1/runs/r"
    )
    assert notifier.emit(event) is False  # no channel: nothing to do, no thread
    notifier.close()


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"webhooks": [{"url": "file:///etc/passwd"}]}, "http:// or https://"),
        (
            {"webhooks": [{"url": "http://h/", "events": ["rolledback"]}]},
            "did you mean rolled-back",
        ),
        ({"webhooks": [{"url": "http://h/", "headers": {"X-A": "a\r\nB: c"}}]}, "header injection"),
        ({"webhooks": [{"url": "http://h/", "headers": {"X-A": "${HOME}"}}]}, "ENV:NAME"),
        ({"webhooks": [{"url": "http://h/", "headers": {"Host": "x"}}]}, "set by patchpilot"),
        (
            {"smtp": {"host": "h", "sender": "a@b.c", "to": ["x@y.z\r\nBcc: v@w.x"]}},
            "not a plain e-mail address",
        ),
        ({"smtp": {"host": "h", "sender": "A <a@b.c>", "to": ["x@y.z"]}}, "plain e-mail"),
        ({"smtp": {"host": "h", "sender": "a@b.c", "to": []}}, "at least 1"),
        (
            {"smtp": {"host": "h", "sender": "a@b.c", "to": ["x@y.z"], "username": "u"}},
            "go together",
        ),
        ({"smtp": {"host": "h", "sender": "a@b.c", "to": ["x@y.z"], "pass": "x"}}, "Extra"),
        ({"queue_size": 0}, "greater than or equal to 1"),
    ],
)
def test_settings_refuse_bad_values(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NotificationSettings.model_validate(data)


def test_an_unset_environment_variable_is_a_config_error_at_start() -> None:
    settings = NotificationSettings.model_validate(
        {"webhooks": [{"url": "http://h/", "headers": {"Authorization": "Bearer ${ENV:NOPE}"}}]}
    )
    with pytest.raises(ConfigError, match="NOPE, which is unset"):
        Notifier(settings, environ={})
    smtp = NotificationSettings.model_validate(
        {
            "smtp": {
                "host": "h",
                "sender": "a@b.c",
                "to": ["x@y.z"],
                "username": "u",
                "password_env": "SMTP_PW",
            }
        }
    )
    with pytest.raises(ConfigError, match="SMTP_PW, which is unset"):
        Notifier(smtp, environ={})
    assert smtp.env_names() == ["SMTP_PW"]


def test_a_run_waiting_for_its_window_is_not_reported_halted() -> None:
    doc = {"run_id": "20261206T080000Z-abcdef", "status": "halted", "waiting": "window"}
    assert [e.kind for e in events_for_run(doc)] == []
    doc["waiting"] = None
    assert [e.kind for e in events_for_run(doc)] == ["halted"]

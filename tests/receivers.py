"""Real notification receivers on loopback, for the notification tests (unit and lab).

- :func:`receiver`: a webhook receiver (``http.server.ThreadingHTTPServer`` on 127.0.0.1, a free
  port) that records every POST and answers with scripted statuses (then 204);
- :func:`mailbox`: an SMTP server (aiosmtpd's ``Controller`` on 127.0.0.1) that records every
  message and accepts the login ``patchpilot`` / ``s3cret``.

Use them as fixtures with ``pytest_plugins = ["tests.receivers"]``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

WAIT = 20.0
"""Bounded wait for something a background thread does (seconds); never a timing assertion."""


@dataclass
class Receiver:
    """What the webhook receiver got, and how it answers."""

    statuses: list[int] = field(default_factory=list)  # answers in order; then 204
    hold: threading.Event | None = None  # set it to let held requests be answered
    requests: list[dict[str, Any]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def wait_for(self, count: int) -> list[dict[str, Any]]:
        """The first ``count`` requests, waiting (bounded) for them to arrive."""
        deadline = threading.Event()
        for _ in range(int(WAIT * 20)):
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests[:count])
            deadline.wait(0.05)
        pytest.fail(f"the webhook receiver got {len(self.requests)} of {count} request(s)")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with state.lock:
                state.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "raw": body}
                )
                status = state.statuses.pop(0) if state.statuses else 204
            state.arrived.set()
            if state.hold is not None:
                state.hold.wait(WAIT)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook?team=ops"
    yield state
    if state.hold is not None:
        state.hold.set()
    server.shutdown()
    server.server_close()
    thread.join(WAIT)


@dataclass
class Mailbox:
    messages: list[EmailMessage] = field(default_factory=list)
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    got: threading.Condition = field(default_factory=threading.Condition)
    port: int = 0

    def wait_for(self, count: int) -> list[EmailMessage]:
        with self.got:
            if not self.got.wait_for(lambda: len(self.messages) >= count, WAIT):
                pytest.fail(f"the SMTP server got {len(self.messages)} of {count} message(s)")
            return list(self.messages[:count])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()

    class Handler:
        async def handle_DATA(
            self, server: SMTPServer, session: Session, envelope: Envelope
        ) -> str:
            raw = envelope.original_content or b""
            parsed = message_from_bytes(raw, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            with box.got:
                box.messages.append(parsed)
                box.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
                box.got.notify_all()
            return "250 OK"

    def authenticate(
        server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, auth: Any
    ) -> AuthResult:
        ok = isinstance(auth, LoginPassword) and (auth.login, auth.password) == (
            b"patchpilot",
            b"s3cret",
        )
        if ok:
            box.logins.append(auth.login.decode())
        return AuthResult(success=ok)

    box.port = free_port()
    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    yield box
    controller.stop()

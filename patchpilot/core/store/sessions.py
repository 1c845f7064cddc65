"""Passwords and web sessions in the store (schema v8).

:class:`SessionsRepository` is part of :class:`patchpilot.core.store.Store`. It keeps what
:mod:`patchpilot.app.users` and the web dashboard (:mod:`patchpilot.web.session`) decide:

* a user's password as its argon2 hash only (``users.password_hash``); setting a new one ends
  the user's open sessions in the same transaction;
* web sessions: one row per login, found by the SHA-256 of the session id the cookie carries
  (the id itself is never stored, so a copy of the database logs nobody in), with the
  session's CSRF token and its expiry. A session is live while not ended and not expired and
  its user is not disabled (:meth:`SessionsRepository.live_session` checks all three).

    store.set_password_hash("alice", "$argon2id$...", actor="root")
    store.create_session(id_hash, "alice", csrf="...", expires_at=later)
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Final

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict

from patchpilot.core.auth import Role
from patchpilot.core.models import utcnow
from patchpilot.core.store.base import StoreBase, db_now
from patchpilot.core.store.records import StoreError
from patchpilot.core.store.schema import from_db_time, to_db_time

__all__ = ["PasswordRow", "SessionRow", "SessionsRepository"]

log = structlog.get_logger(__name__)

_ID_HASH: Final = re.compile(r"^[0-9a-f]{64}$")
_CLIENT_MAX: Final = 200


class PasswordRow(BaseModel):
    """What checking a password needs: the user's role, state and stored hash (None: unset)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    disabled: bool
    hash: str | None


class SessionRow(BaseModel):
    """A live web session and its user as they are now (role read at every request)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user_name: str
    role: Role
    csrf: str
    created_at: AwareDatetime
    expires_at: AwareDatetime


class SessionsRepository(StoreBase):
    """Passwords (argon2 hashes) and web sessions; part of ``Store``."""

    def set_password_hash(
        self, name: str, password_hash: str, *, actor: str, at: datetime | None = None
    ) -> int:
        """Store ``name``'s new password hash and end their open sessions (one transaction).

        Returns:
            How many open sessions were ended.

        Raises:
            StoreError: unknown or disabled user, or a hash that is not argon2.
        """
        if not password_hash.startswith("$argon2"):
            raise StoreError(f"password of {name}: the hash is not an argon2 hash")
        when = db_now(at)
        with self._transaction(f"set the password of user {name}") as conn:
            row = conn.execute("SELECT disabled FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(f"unknown user {name!r}; see `patchpilot users list`")
            if row[0]:
                raise StoreError(f"user {name!r} is disabled; a disabled user gets no password")
            conn.execute(
                "UPDATE users SET password_hash = ?, password_changed_at = ?, changed_at = ?,"
                " changed_by = ? WHERE name = ?",
                (password_hash, when, when, actor, name),
            )
            ended = conn.execute(
                "UPDATE web_sessions SET ended_at = ? WHERE user_name = ? AND ended_at IS NULL",
                (when, name),
            ).rowcount
        log.info("store.user_password_set", user=name, actor=actor, sessions_ended=ended)
        return int(ended)

    def password_row(self, name: str) -> PasswordRow | None:
        """The user's role, state and password hash, or None if there is no such user."""
        row = (
            self._conn()
            .execute(
                "SELECT name, role, disabled, password_hash FROM users WHERE name = ?", (name,)
            )
            .fetchone()
        )
        if row is None:
            return None
        user, role, disabled, digest = row
        return PasswordRow(name=user, role=Role(role), disabled=bool(disabled), hash=digest)

    def create_session(
        self,
        id_hash: str,
        user_name: str,
        *,
        csrf: str,
        expires_at: datetime,
        client: str | None = None,
        at: datetime | None = None,
    ) -> None:
        """Record a new login session (``id_hash``: SHA-256 hex of the session id).

        Raises:
            StoreError: a malformed hash, an unknown user, or an id already used.
        """
        if not _ID_HASH.match(id_hash):
            raise StoreError("create session: malformed session id hash")
        when = db_now(at)
        with self._transaction(f"create a session for {user_name}") as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (user_name,)).fetchone() is None:
                raise StoreError(f"create session: unknown user {user_name!r}")
            if conn.execute("SELECT 1 FROM web_sessions WHERE id_hash = ?", (id_hash,)).fetchone():
                raise StoreError("create session: the session id is taken; try again")
            # Housekeeping: forget sessions that ended or expired over a day ago.
            conn.execute(
                "DELETE FROM web_sessions WHERE expires_at < ? OR ended_at < ?",
                (db_now(_day_before(at)), db_now(_day_before(at))),
            )
            conn.execute(
                "INSERT INTO web_sessions (id_hash, user_name, csrf, created_at, expires_at,"
                " client) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    id_hash,
                    user_name,
                    csrf,
                    when,
                    to_db_time(expires_at),
                    None if client is None else client[:_CLIENT_MAX],
                ),
            )
        log.info("store.session_created", user=user_name)

    def live_session(self, id_hash: str, *, now: datetime | None = None) -> SessionRow | None:
        """The session with this id hash if it is live at ``now`` (not ended, not expired,
        its user not disabled), else None."""
        if not _ID_HASH.match(id_hash):
            return None
        row = (
            self._conn()
            .execute(
                "SELECT s.user_name, u.role, s.csrf, s.created_at, s.expires_at"
                " FROM web_sessions s JOIN users u ON u.name = s.user_name"
                " WHERE s.id_hash = ? AND s.ended_at IS NULL AND s.expires_at > ?"
                " AND u.disabled = 0",
                (id_hash, db_now(now)),
            )
            .fetchone()
        )
        if row is None:
            return None
        user, role, csrf, created, expires = row
        return SessionRow(
            user_name=user,
            role=Role(role),
            csrf=csrf,
            created_at=from_db_time(created),
            expires_at=from_db_time(expires),
        )

    def end_session(self, id_hash: str, *, at: datetime | None = None) -> bool:
        """End one session (logout); whether it was open."""
        if not _ID_HASH.match(id_hash):
            return False
        with self._transaction("end a session") as conn:
            ended = conn.execute(
                "UPDATE web_sessions SET ended_at = ? WHERE id_hash = ? AND ended_at IS NULL",
                (db_now(at), id_hash),
            ).rowcount
        return bool(ended)


def _day_before(at: datetime | None) -> datetime:
    return (at if at is not None else utcnow()) - timedelta(days=1)

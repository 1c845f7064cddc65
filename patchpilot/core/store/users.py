"""Users, roles and API tokens in the store (schema v6).

:class:`UsersRepository` is part of :class:`patchpilot.core.store.Store`. It stores what
:mod:`patchpilot.app.users` decides: one ``users`` row per person (a
:class:`~patchpilot.core.auth.Role`, enabled or disabled; rows are never deleted, so the audit
log's names stay meaningful) and their API tokens in ``user_tokens``. A token is never
stored: only its public id (the prefix that finds the row) and the argon2 hash of the whole
token. Hashing and verifying happen in the application layer; this module only keeps rows
consistent:

* adding a user and their first token is one transaction (no user without a token);
* a new token revokes the user's earlier ones in the same transaction (one live token each);
* a token id is unique, and a revoked token or a disabled user never authenticates
  (:meth:`UsersRepository.token_row` returns both flags, the caller refuses).

    store.add_user("alice", Role.APPROVER, actor="root", token_id=tid, token_hash=h)
    [u.name for u in store.users()]            # ['alice']
"""

from __future__ import annotations

import re
import sqlite3
from datetime import datetime
from typing import Any, Final

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from patchpilot.core.auth import Role
from patchpilot.core.store.base import StoreBase, db_now
from patchpilot.core.store.records import StoreError
from patchpilot.core.store.schema import from_db_time

__all__ = ["TokenRow", "UserRecord", "UsersRepository"]

log = structlog.get_logger(__name__)

_TOKEN_ID: Final = re.compile(r"^[a-z0-9]{8,32}$")

_USER_SELECT: Final = (
    "SELECT u.name, u.role, u.disabled, u.created_at, u.created_by, u.changed_at, u.changed_by,"
    " (SELECT t.token_id FROM user_tokens t WHERE t.user_name = u.name AND t.revoked_at IS NULL"
    "  ORDER BY t.created_at DESC LIMIT 1),"
    " (SELECT t.created_at FROM user_tokens t WHERE t.user_name = u.name"
    "  AND t.revoked_at IS NULL ORDER BY t.created_at DESC LIMIT 1)"
    " FROM users u"
)


class UserRecord(BaseModel):
    """A user as stored (never their token, nor its hash)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    role: Role
    disabled: bool = False
    created_at: AwareDatetime
    created_by: str
    changed_at: AwareDatetime
    changed_by: str
    token_id: str | None = Field(default=None, description="public id of the live token")
    token_created_at: AwareDatetime | None = None


class TokenRow(BaseModel):
    """What authenticating a token needs: its owner, the owner's state and the stored hash."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token_id: str
    user_name: str
    role: Role
    hash: str
    user_disabled: bool
    revoked: bool


def _user(row: tuple[Any, ...]) -> UserRecord:
    name, role, disabled, created, created_by, changed, changed_by, token_id, token_at = row
    return UserRecord(
        name=name,
        role=Role(role),
        disabled=bool(disabled),
        created_at=from_db_time(created),
        created_by=created_by,
        changed_at=from_db_time(changed),
        changed_by=changed_by,
        token_id=token_id,
        token_created_at=from_db_time(token_at) if token_at is not None else None,
    )


def _check_token(what: str, token_id: str, token_hash: str) -> None:
    if not _TOKEN_ID.match(token_id):
        raise StoreError(f"{what}: malformed token id {token_id!r}")
    if not token_hash.startswith("$argon2"):
        raise StoreError(f"{what}: the token hash is not an argon2 hash")


class UsersRepository(StoreBase):
    """Users, their roles and API tokens; part of ``Store``."""

    def add_user(
        self,
        name: str,
        role: Role,
        *,
        actor: str,
        token_id: str,
        token_hash: str,
        at: datetime | None = None,
    ) -> UserRecord:
        """Add a user with their first token (one transaction).

        Raises:
            StoreError: the name is taken (disabled users keep theirs), the token id is
                malformed or taken, or the hash is not an argon2 hash.
        """
        what = f"add user {name}"
        _check_token(what, token_id, token_hash)
        when = db_now(at)
        with self._transaction(what) as conn:
            if conn.execute("SELECT 1 FROM users WHERE name = ?", (name,)).fetchone():
                raise StoreError(
                    f"a user named {name!r} exists already; see `patchpilot users list`, or "
                    f"`patchpilot users token {name}` for a new token"
                )
            conn.execute(
                "INSERT INTO users (name, role, disabled, created_at, created_by, changed_at,"
                " changed_by) VALUES (?, ?, 0, ?, ?, ?, ?)",
                (name, Role(role).value, when, actor, when, actor),
            )
            self._insert_token(conn, name, token_id, token_hash, actor, when)
        log.info("store.user_added", user=name, role=str(role), actor=actor)
        record = self.user(name)
        assert record is not None
        return record

    @staticmethod
    def _insert_token(
        conn: sqlite3.Connection, name: str, token_id: str, token_hash: str, actor: str, when: str
    ) -> None:
        if conn.execute("SELECT 1 FROM user_tokens WHERE token_id = ?", (token_id,)).fetchone():
            raise StoreError(f"token id {token_id} is taken; try again")
        conn.execute(
            "INSERT INTO user_tokens (token_id, user_name, hash, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?)",
            (token_id, name, token_hash, when, actor),
        )

    def replace_token(
        self,
        name: str,
        *,
        actor: str,
        token_id: str,
        token_hash: str,
        at: datetime | None = None,
    ) -> UserRecord:
        """Give ``name`` a new token and revoke their earlier ones (one transaction).

        Raises:
            StoreError: unknown user, a disabled user (enable them first: not supported, add
                another user), or a malformed token.
        """
        what = f"new token for user {name}"
        _check_token(what, token_id, token_hash)
        when = db_now(at)
        with self._transaction(what) as conn:
            row = conn.execute("SELECT disabled FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(f"unknown user {name!r}; see `patchpilot users list`")
            if row[0]:
                raise StoreError(f"user {name!r} is disabled; a disabled user gets no token")
            conn.execute(
                "UPDATE user_tokens SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL",
                (when, name),
            )
            self._insert_token(conn, name, token_id, token_hash, actor, when)
            conn.execute(
                "UPDATE users SET changed_at = ?, changed_by = ? WHERE name = ?",
                (when, actor, name),
            )
        log.info("store.user_token_replaced", user=name, actor=actor)
        record = self.user(name)
        assert record is not None
        return record

    def disable_user(self, name: str, *, actor: str, at: datetime | None = None) -> UserRecord:
        """Disable ``name`` and revoke their tokens (one transaction); idempotent.

        Raises:
            StoreError: unknown user.
        """
        when = db_now(at)
        with self._transaction(f"disable user {name}") as conn:
            row = conn.execute("SELECT disabled FROM users WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise StoreError(f"unknown user {name!r}; see `patchpilot users list`")
            if not row[0]:
                conn.execute(
                    "UPDATE users SET disabled = 1, changed_at = ?, changed_by = ? WHERE name = ?",
                    (when, actor, name),
                )
            conn.execute(
                "UPDATE user_tokens SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL",
                (when, name),
            )
        log.info("store.user_disabled", user=name, actor=actor)
        record = self.user(name)
        assert record is not None
        return record

    def user(self, name: str) -> UserRecord | None:
        """One user, or None if unknown."""
        row = self._conn().execute(_USER_SELECT + " WHERE u.name = ?", (name,)).fetchone()
        return None if row is None else _user(row)

    def users(self) -> list[UserRecord]:
        """Every user (disabled ones too), by name."""
        rows = self._conn().execute(_USER_SELECT + " ORDER BY u.name")
        return [_user(row) for row in rows]

    def has_users(self) -> bool:
        """Whether any user was ever added (the store serves authenticated identities)."""
        return self._conn().execute("SELECT 1 FROM users LIMIT 1").fetchone() is not None

    def token_row(self, token_id: str) -> TokenRow | None:
        """The token with this public id and its owner's state, or None if unknown."""
        row = (
            self._conn()
            .execute(
                "SELECT t.token_id, t.user_name, u.role, t.hash, u.disabled,"
                " t.revoked_at IS NOT NULL FROM user_tokens t JOIN users u ON u.name = t.user_name"
                " WHERE t.token_id = ?",
                (token_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        token, user, role, digest, disabled, revoked = row
        return TokenRow(
            token_id=token,
            user_name=user,
            role=Role(role),
            hash=digest,
            user_disabled=bool(disabled),
            revoked=bool(revoked),
        )

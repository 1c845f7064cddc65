"""Users, roles and API tokens: add, list, disable, new token, authenticate.

Every interface calls these (the CLI's ``patchpilot users``, the service's bearer-token
dependency). A token looks like ``pp_<id>_<secret>``: ``id`` (12 lowercase letters and digits)
is public and finds the token's row; ``secret`` is ``secrets.token_urlsafe(32)`` (256 random
bits). Only the argon2 hash (argon2-cffi, argon2id) of the whole token is stored, and the token
is returned once, by :func:`add_user` or :func:`new_token`; nobody can show it again.

:func:`authenticate` verifies a token in constant time with respect to what it tells a caller:
an unknown id still costs one argon2 verification (against a dummy hash), and a disabled user,
a revoked token and a wrong secret all answer ``None``. Since a token carries 256 random bits
(nothing to guess, unlike a password), the argon2 cost is moderate (:data:`HASHER`), and a
token verified once is remembered for :data:`VERIFIED_TTL` seconds in this process (keyed by
its SHA-256), so a busy API client costs one database read per request, not one argon2 run;
the user's state (disabled, role, revoked token) is still read on every call, so disabling
takes effect at once.

Passwords (the web dashboard's login) are optional: :func:`set_password` stores only their
argon2id hash (:data:`HASHER`, OWASP's parameters for passwords) and ends the user's open web
sessions; :func:`verify_password` answers the :class:`Principal` or None, costing one argon2
verification whether or not the user exists or has a password (a dummy hash otherwise), so the
answer's timing does not tell which names exist. A password is :data:`MIN_PASSWORD_LENGTH` to
:data:`MAX_PASSWORD_LENGTH` characters, one line.

Every change is audit-logged with the acting identity (``user.added``, ``user.disabled``,
``user.token_issued``, ``user.password_set``), in the audit log next to the store
(``settings.home``) unless another :class:`~patchpilot.core.audit.AuditLog` is given.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections import OrderedDict
from typing import Final

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from patchpilot.core.audit import AUDIT_FILE, AuditLog
from patchpilot.core.auth import Principal, Role
from patchpilot.core.errors import InvalidInputError, UnknownTargetError
from patchpilot.core.store import Store
from patchpilot.core.store.users import UserRecord

__all__ = [
    "HASHER",
    "MAX_PASSWORD_LENGTH",
    "MIN_PASSWORD_LENGTH",
    "RESERVED_NAMES",
    "TOKEN_PREFIX",
    "VERIFIED_TTL",
    "add_user",
    "authenticate",
    "disable_user",
    "forget_verified",
    "list_users",
    "new_token",
    "parse_token",
    "set_password",
    "validate_name",
    "validate_password",
    "verify_password",
]

log = structlog.get_logger(__name__)

TOKEN_PREFIX: Final = "pp"  # noqa: S105 - a public marker, not a secret
"""Every token starts ``pp_`` (so secret scanners and people can recognise one)."""

_ID_ALPHABET: Final = "abcdefghijklmnopqrstuvwxyz0123456789"
_ID_LENGTH: Final = 12
_SECRET_BYTES: Final = 32
_TOKEN: Final = re.compile(r"^pp_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")
_MAX_TOKEN_LENGTH: Final = 200
_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

RESERVED_NAMES: Final = frozenset({"patchpilot", "root", "system", "schedule", "anonymous"})
"""Names no user may take (``patchpilot`` records expiries; the rest would mislead the log)."""

HASHER: Final = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
"""argon2id at OWASP's minimum for passwords (t=2, m=19 MiB, p=1): ample for 256-bit random
tokens, and cheap enough (~20 ms) that a cold token does not stall the API."""

VERIFIED_TTL: Final = 300.0
"""Seconds a token verified by argon2 is remembered in this process."""

MIN_PASSWORD_LENGTH: Final = 12
"""Shortest password accepted (characters)."""
MAX_PASSWORD_LENGTH: Final = 1024
"""Longest password accepted (longer: refused before hashing, so it cannot cost CPU)."""

_CACHE_SIZE: Final = 1024
_DUMMY_HASH: Final = HASHER.hash("pp_" + "0" * _ID_LENGTH + "_" + "0" * 43)


class _VerifiedTokens:
    """Tokens this process verified lately: SHA-256 of the token -> (row hash, expiry)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    def known(self, digest: bytes, row_hash: str) -> bool:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return False
            stored_hash, expires = entry
            if expires <= now or not hmac.compare_digest(stored_hash, row_hash):
                del self._entries[digest]
                return False
            self._entries.move_to_end(digest)
            return True

    def remember(self, digest: bytes, row_hash: str) -> None:
        with self._lock:
            self._entries[digest] = (row_hash, time.monotonic() + VERIFIED_TTL)
            self._entries.move_to_end(digest)
            while len(self._entries) > _CACHE_SIZE:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


_verified = _VerifiedTokens()


def validate_name(name: str) -> str:
    """A user name: 1-64 letters, digits, ``.``, ``_``, ``@`` or ``-``, not reserved.

    Raises:
        InvalidInputError: anything else (control characters, spaces, reserved names...).
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            "user name",
            f"{name!r} is not 1-64 letters, digits, '.', '_', '@' or '-' (starting with a "
            "letter or digit)",
        )
    if name.lower() in RESERVED_NAMES:
        raise InvalidInputError("user name", f"{name!r} is reserved; choose another name")
    return name


def _role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise InvalidInputError(
            "role", f"{role!r} is not one of {', '.join(r.value for r in Role)}"
        ) from None


def _audit(store: Store, audit: AuditLog | None, actor: str) -> AuditLog:
    return (audit or AuditLog(store.path.parent / AUDIT_FILE)).bind(actor=actor)


def _issue() -> tuple[str, str, str]:
    """A new token: (token id, token, its argon2 hash)."""
    token_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(_ID_LENGTH))
    token = f"{TOKEN_PREFIX}_{token_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
    return token_id, token, HASHER.hash(token)


def parse_token(token: str) -> str | None:
    """The public id of a well-formed token, or None (malformed: nothing to look up)."""
    if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH:
        return None
    match = _TOKEN.match(token)
    return match.group(1) if match else None


def add_user(
    store: Store,
    name: str,
    role: Role | str,
    *,
    actor: str,
    audit: AuditLog | None = None,
    password: str | None = None,
) -> str:
    """Add a user with ``role`` and return their first API token (shown once, never stored);
    with ``password``, the user may also log in to the web dashboard.

    Raises:
        InvalidInputError: a malformed or reserved name, an unknown role, or a password that
            :func:`validate_password` refuses (checked before anything is stored).
        StoreError: the name is taken (also by a disabled user).
    """
    name, checked = validate_name(name), _role(role)
    if password is not None:
        validate_password(password)
    token_id, token, digest = _issue()
    store.add_user(name, checked, actor=actor, token_id=token_id, token_hash=digest)
    _audit(store, audit, actor).record(
        "user.added", details={"user": name, "role": checked.value, "token_id": token_id}
    )
    log.info("user.added", user=name, role=checked.value, actor=actor)
    if password is not None:
        set_password(store, name, password, actor=actor, audit=audit)
    return token


def validate_password(password: str) -> str:
    """A password: one line of :data:`MIN_PASSWORD_LENGTH` to :data:`MAX_PASSWORD_LENGTH`
    characters without control characters.

    Raises:
        InvalidInputError: anything else (the message never repeats the password).
    """
    if not isinstance(password, str) or not (
        MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH
    ):
        raise InvalidInputError(
            "password",
            f"a password is {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters long",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in password):
        raise InvalidInputError("password", "a password has no control characters (one line)")
    return password


def set_password(
    store: Store, name: str, password: str, *, actor: str, audit: AuditLog | None = None
) -> None:
    """Set (or change) ``name``'s web password; their open web sessions end.

    Raises:
        InvalidInputError: :func:`validate_password` refuses it.
        UnknownTargetError: no such user.
        StoreError: the user is disabled.
    """
    validate_password(password)
    _existing(store, name)
    ended = store.set_password_hash(name, HASHER.hash(password), actor=actor)
    _audit(store, audit, actor).record(
        "user.password_set", details={"user": name, "sessions_ended": ended}
    )
    log.info("user.password_set", user=name, actor=actor, sessions_ended=ended)


def verify_password(store: Store, name: str, password: str) -> Principal | None:
    """The user ``name`` if ``password`` is theirs, else None (unknown user, no password set,
    a disabled user, a wrong or malformed password). One argon2 verification either way;
    never raises for bad input (a store failure raises StoreError)."""
    if not isinstance(password, str) or not isinstance(name, str):
        return None
    if len(password) > MAX_PASSWORD_LENGTH or not _NAME.match(name):
        _verify(_DUMMY_HASH, "")
        return None
    row = store.password_row(name)
    if row is None or row.hash is None:
        _verify(_DUMMY_HASH, password)
        return None
    if not _verify(row.hash, password):
        log.info("auth.password_refused", user=name, reason="wrong password")
        return None
    if row.disabled:
        log.info("auth.password_refused", user=name, reason="user disabled")
        return None
    return Principal(name=row.name, role=row.role)


def list_users(store: Store) -> list[UserRecord]:
    """Every user (disabled ones too), by name; never a token or a hash."""
    return store.users()


def _existing(store: Store, name: str) -> UserRecord:
    record = store.user(name)
    if record is None:
        raise UnknownTargetError(f"no user {name!r}; see `patchpilot users list`", key="user")
    return record


def disable_user(
    store: Store, name: str, *, actor: str, audit: AuditLog | None = None
) -> UserRecord:
    """Disable ``name`` and revoke their tokens (idempotent); their row and history stay.

    Raises:
        UnknownTargetError: no such user.
    """
    before = _existing(store, name)
    record = store.disable_user(name, actor=actor)
    if not before.disabled:
        _audit(store, audit, actor).record("user.disabled", details={"user": name})
    log.info("user.disabled", user=name, actor=actor, already=before.disabled)
    return record


def new_token(store: Store, name: str, *, actor: str, audit: AuditLog | None = None) -> str:
    """A new API token for ``name`` (shown once); their earlier tokens stop working.

    Raises:
        UnknownTargetError: no such user.
        StoreError: the user is disabled.
    """
    _existing(store, name)
    token_id, token, digest = _issue()
    store.replace_token(name, actor=actor, token_id=token_id, token_hash=digest)
    _audit(store, audit, actor).record(
        "user.token_issued", details={"user": name, "token_id": token_id}
    )
    log.info("user.token_issued", user=name, actor=actor)
    return token


def authenticate(store: Store, token: str) -> Principal | None:
    """The user a bearer token belongs to, or None (malformed, unknown, revoked, wrong secret,
    or a disabled user). Never raises for bad input; a store failure raises StoreError."""
    token_id = parse_token(token)
    if token_id is None:
        return None
    row = store.token_row(token_id)
    digest = hashlib.sha256(token.encode()).digest()
    if row is None:
        _verify(_DUMMY_HASH, token)  # an unknown id costs what a known one does
        return None
    if not _verified.known(digest, row.hash):
        if not _verify(row.hash, token):
            log.info("auth.token_refused", token_id=token_id, reason="wrong secret")
            return None
        _verified.remember(digest, row.hash)
    if row.revoked or row.user_disabled:
        reason = "user disabled" if row.user_disabled else "token revoked"
        log.info("auth.token_refused", token_id=token_id, user=row.user_name, reason=reason)
        return None
    return Principal(name=row.user_name, role=row.role)


def _verify(stored: str, token: str) -> bool:
    try:
        return HASHER.verify(stored, token)
    except VerifyMismatchError:
        return False
    except (VerificationError, InvalidHashError) as exc:
        log.warning("auth.hash_unusable", error=str(exc))
        return False


def forget_verified() -> None:
    """Forget every token verified in this process (tests; after restoring a backup)."""
    _verified.clear()

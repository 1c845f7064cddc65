"""Who is asking a web page: session cookies, bearer tokens, CSRF tokens, login throttling.

A page accepts either

* the session cookie :data:`COOKIE` (set by ``POST /login``): an opaque random id (256 bits);
  the store keeps only its SHA-256 with the user, the session's CSRF token and the expiry
  (``service.session_ttl``), so logout (or a new password, or disabling the user) ends it
  server-side at once; or
* ``Authorization: Bearer TOKEN`` (an API token, :func:`patchpilot.app.users.authenticate`),
  for automation. A bad token is 401 (never a redirect); a bearer request needs no CSRF token
  (a browser never adds that header by itself).

Without either, a page answers 303 to ``/login?next=PATH`` (:func:`safe_next` keeps ``next``
a same-site relative path). Every form of a session carries the session's CSRF token
(:func:`csrf_token`), checked by :func:`verify_csrf` (403 when missing or wrong; compared in
constant time); a cross-site ``Origin`` on a form post is 403 too. The login form itself has a
double-submit token (cookie :data:`LOGIN_CSRF_COOKIE` equal to the form's field). Failed
logins are throttled per user and per client address (:class:`LoginThrottle`: 429).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final
from urllib.parse import quote, urlsplit

import structlog
from fastapi import Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from patchpilot.api.app import MAX_TOKEN_LENGTH, ApiState, state_of
from patchpilot.core.auth import Action, Principal, allowed
from patchpilot.core.models import utcnow

__all__ = [
    "COOKIE",
    "LOGIN_CSRF_COOKIE",
    "LoginRequired",
    "LoginThrottle",
    "clear_session_cookie",
    "csrf_token",
    "current_user",
    "end_session",
    "login_csrf_token",
    "optional_user",
    "require_page",
    "safe_next",
    "start_session",
    "throttle_of",
    "verify_csrf",
    "verify_login_csrf",
]

log = structlog.get_logger(__name__)

COOKIE: Final = "pp_session"
"""The session cookie (HttpOnly, SameSite=Lax, Secure over https)."""
LOGIN_CSRF_COOKIE: Final = "pp_login_csrf"
"""The login form's double-submit CSRF cookie (before there is a session)."""
_SESSION_BYTES: Final = 32
_MAX_COOKIE: Final = 128

clock: Callable[[], datetime] = utcnow
"""Now, for session expiry (tests move it forward)."""


class LoginRequired(Exception):
    """A page needs a login: answered ``303 /login?next=PATH`` (see :func:`install`)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def safe_next(value: str | None) -> str:
    """``value`` if it is a same-site relative path (``/runs?x=1``), else ``/``.

    Refused: absolute URLs, scheme-relative ``//host``, backslashes (browsers read ``/\\host``
    as ``//host``), control characters, and the login/logout pages themselves.
    """
    if not value or len(value) > 2000 or not value.startswith("/"):
        return "/"
    if value.startswith("//") or "\\" in value or any(ord(c) < 33 or ord(c) == 127 for c in value):
        return "/"
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return "/"
    if parts.path in ("/login", "/logout"):
        return "/"
    return value


def _next_of(request: Request) -> str:
    path = request.url.path
    if request.url.query:
        path += "?" + request.url.query
    return safe_next(path)


def login_url(next_path: str) -> str:
    """``/login`` with ``next`` (only when it is not ``/``)."""
    target = safe_next(next_path)
    return "/login" if target == "/" else "/login?next=" + quote(target, safe="/")


# --------------------------------------------------------------------------- who is asking


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        raise HTTPException(
            status_code=401,
            detail="Authorization must be a bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token.strip()


def _resolve(request: Request) -> Principal | None:
    """The principal of ``request`` (cached on it), None without credentials; 401 for a bad
    bearer token. Sets ``request.state.pp_via`` (``session``/``bearer``) and the CSRF token."""
    if hasattr(request.state, "pp_user"):
        user: Principal | None = request.state.pp_user
        return user
    api = state_of(request)
    who: Principal | None = None
    request.state.pp_via = None
    request.state.pp_csrf = None
    token = _bearer(request)
    if token is not None:
        if not token or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
            who = None
        else:
            who = api.authenticate(api.store, token)
        if who is None:
            log.info("web.auth.refused", path=request.url.path, via="bearer")
            raise HTTPException(
                status_code=401, detail="invalid token", headers={"WWW-Authenticate": "Bearer"}
            )
        request.state.pp_via = "bearer"
    else:
        session_id = request.cookies.get(COOKIE)
        if session_id and len(session_id) <= _MAX_COOKIE:
            row = api.store.live_session(_digest(session_id), now=clock())
            if row is not None:
                who = Principal(name=row.user_name, role=row.role)
                request.state.pp_via = "session"
                request.state.pp_csrf = row.csrf
                request.state.pp_session = _digest(session_id)
    request.state.pp_user = who
    return who


async def optional_user(request: Request) -> Principal | None:
    """The logged-in user, or None (pages that also serve visitors: the login page)."""
    return await run_in_threadpool(_resolve, request)


async def current_user(request: Request) -> Principal:
    """The user of this page request: a live session cookie or a bearer token.

    Raises:
        LoginRequired: neither (answered 303 to ``/login?next=PATH``).
        HTTPException: 401 for a bad bearer token.
    """
    who = await run_in_threadpool(_resolve, request)
    if who is None:
        raise LoginRequired(_next_of(request))
    return who


def require_page(action: Action) -> Callable[..., object]:
    """A dependency: the user of the page, if their role may do ``action`` (else a 403 page)."""

    async def dependency(who: Principal = Depends(current_user)) -> Principal:  # noqa: B008
        if not allowed(who.role, action):
            raise HTTPException(
                status_code=403, detail=f"role {who.role.value} may not {action.value}"
            )
        return who

    return dependency


# --------------------------------------------------------------------------- CSRF


def csrf_token(request: Request) -> str:
    """The CSRF token for this request's forms: the session's own ('' for a bearer request or
    a visitor; a visitor's login form uses :func:`login_csrf_token`)."""
    if not hasattr(request.state, "pp_user"):
        _resolve(request)
    token: str | None = request.state.pp_csrf
    return token or ""


def _same_origin(request: Request) -> bool:
    """False when the browser says the form came from another site (``Origin`` header)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    parts = urlsplit(origin)
    host = request.headers.get("host", "")
    return parts.netloc.lower() == host.lower()


def verify_csrf(request: Request, token: str | None) -> None:
    """Refuse (403) a form post without this session's CSRF token, or from another site.

    A bearer-token request needs none. Call it before the form changes anything.
    """
    if not hasattr(request.state, "pp_user"):
        _resolve(request)
    if request.state.pp_via == "bearer":
        return
    expected: str | None = request.state.pp_csrf
    if not _same_origin(request):
        log.warning("web.csrf.refused", path=request.url.path, reason="cross-origin")
        raise HTTPException(status_code=403, detail="cross-site form posts are refused")
    if not expected or not token or not hmac.compare_digest(expected, token):
        log.warning("web.csrf.refused", path=request.url.path, reason="missing or wrong token")
        raise HTTPException(
            status_code=403,
            detail="the form's CSRF token is missing or wrong; reload the page and try again",
        )


def login_csrf_token(request: Request) -> str:
    """The login form's token: the :data:`LOGIN_CSRF_COOKIE` value (new when absent; the page
    sets the cookie)."""
    existing = request.cookies.get(LOGIN_CSRF_COOKIE)
    if (
        existing
        and 20 <= len(existing) <= 64
        and existing.replace("-", "").replace("_", "").isalnum()
    ):
        return existing
    return secrets.token_urlsafe(24)


def verify_login_csrf(request: Request, token: str | None) -> None:
    """Refuse (403) a login post from another site, or with a token that is not the login
    cookie's. (A client posting only ``username`` and ``password``, without a cookie or an
    ``Origin``, is a script, not a forged browser form: accepted.)"""
    if not _same_origin(request):
        log.warning("web.csrf.refused", path="/login", reason="cross-origin")
        raise HTTPException(status_code=403, detail="cross-site form posts are refused")
    cookie = request.cookies.get(LOGIN_CSRF_COOKIE)
    if token is None and cookie is None:
        return
    if not token or not cookie or not hmac.compare_digest(cookie, token):
        log.warning("web.csrf.refused", path="/login", reason="missing or wrong token")
        raise HTTPException(
            status_code=403, detail="the login form expired; reload the page and try again"
        )


# --------------------------------------------------------------------------- sessions


def start_session(request: Request, response: Response, who: Principal) -> None:
    """Open a session for ``who`` and set its cookie on ``response``."""
    api: ApiState = state_of(request)
    ttl = api.settings.service.session_ttl
    session_id = secrets.token_urlsafe(_SESSION_BYTES)
    now = clock()
    client = request.client.host if request.client else None
    api.store.create_session(
        _digest(session_id),
        who.name,
        csrf=secrets.token_urlsafe(32),
        expires_at=now + timedelta(seconds=ttl),
        client=client,
        at=now,
    )
    response.set_cookie(
        COOKIE,
        session_id,
        max_age=ttl,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    log.info("web.session.started", user=who.name)


def end_session(request: Request) -> None:
    """End this request's session server-side (its cookie no longer works)."""
    if not hasattr(request.state, "pp_user"):
        _resolve(request)
    digest: str | None = getattr(request.state, "pp_session", None)
    if digest is not None:
        state_of(request).store.end_session(digest, at=clock())
        who: Principal | None = request.state.pp_user
        log.info("web.session.ended", user=who.name if who else None)


def clear_session_cookie(request: Request, response: Response) -> None:
    """Tell the browser to forget the session cookie."""
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )


# --------------------------------------------------------------------------- throttling


def throttle_of(request: Request) -> LoginThrottle:
    """The login throttle of the app serving ``request`` (one per app)."""
    found: LoginThrottle = request.app.state.web_throttle
    return found


class LoginThrottle:
    """At most ``limit`` failed logins per ``window`` seconds per user name and per client
    address; past that, logins answer 429 until the window has moved on (in this process)."""

    def __init__(self, limit: int = 5, window: float = 60.0) -> None:
        self.limit = limit
        self.window = window
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}

    def _recent(self, key: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(key, ()) if now - t < self.window]
        if kept:
            self._failures[key] = kept
        else:
            self._failures.pop(key, None)
        return kept

    def blocked(self, user: str, client: str) -> bool:
        """Whether a login for ``user`` from ``client`` must wait."""
        now = time.monotonic()
        with self._lock:
            return any(
                len(self._recent(key, now)) >= self.limit
                for key in (f"u:{user.lower()}", f"c:{client}")
            )

    def failed(self, user: str, client: str) -> None:
        """Count a failed login."""
        now = time.monotonic()
        with self._lock:
            if len(self._failures) > 10_000:  # bounded: drop the stale ones
                for key in list(self._failures):
                    self._recent(key, now)
            for key in (f"u:{user.lower()}", f"c:{client}"):
                self._failures.setdefault(key, []).append(now)

    def succeeded(self, user: str) -> None:
        """Forget a user's failures after a good login (the address's stay counted)."""
        with self._lock:
            self._failures.pop(f"u:{user.lower()}", None)

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._failures.clear()

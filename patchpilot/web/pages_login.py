"""Login and logout: ``GET /login``, ``POST /login``, ``POST /logout``.

Contract: ``POST /login`` takes the form fields ``username`` and ``password`` (and ``next``,
and the form's hidden ``csrf_token``), sets the session cookie and answers 303 to ``next``
(a same-site path) or ``/``; wrong credentials answer 401 with one generic message (it never
says whether the name exists); too many failures answer 429. ``POST /logout`` (with the
session's ``csrf_token``) ends the session server-side and answers 303 to ``/login``.
"""

from __future__ import annotations

from typing import Annotated

import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from patchpilot.api.app import state_of
from patchpilot.core.auth import Principal
from patchpilot.web.render import render
from patchpilot.web.session import (
    LOGIN_CSRF_COOKIE,
    clear_session_cookie,
    current_user,
    end_session,
    login_csrf_token,
    optional_user,
    safe_next,
    start_session,
    throttle_of,
    verify_csrf,
    verify_login_csrf,
)

__all__ = ["router"]

log = structlog.get_logger(__name__)

router = APIRouter(include_in_schema=False)

_GENERIC = "Wrong user name or password (or the user has no password or is disabled)."


def _login_page(
    request: Request,
    next_path: str,
    *,
    status: int = 200,
    error: str | None = None,
    username: str = "",
) -> Response:
    token = login_csrf_token(request)
    response = render(
        request,
        "login.html",
        {"next": safe_next(next_path), "login_csrf": token, "error": error, "username": username},
        status=status,
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        token,
        max_age=3600,
        path="/login",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/login")
def login_form(
    request: Request,
    who: Annotated[Principal | None, Depends(optional_user)],
    next: str = "/",
) -> Response:
    """The login form (a logged-in user goes straight to ``next``)."""
    if who is not None:
        return RedirectResponse(safe_next(next), status_code=303)
    return _login_page(request, next)


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
    csrf_token: Annotated[str | None, Form(max_length=128)] = None,
) -> Response:
    """Check the credentials; on success set the session cookie and go to ``next``."""
    from patchpilot.app.users import verify_password

    verify_login_csrf(request, csrf_token)
    api = state_of(request)
    client = request.client.host if request.client else "?"
    throttle = throttle_of(request)
    if throttle.blocked(username, client):
        log.warning("web.login.throttled", user=username, client=client)
        response = _login_page(
            request,
            next,
            status=429,
            error="Too many failed logins: wait a minute and try again.",
            username=username,
        )
        response.headers["Retry-After"] = str(int(throttle.window))
        return response
    who = await run_in_threadpool(verify_password, api.store, username, password)
    if who is None:
        throttle.failed(username, client)
        log.info("web.login.refused", user=username, client=client)
        return _login_page(request, next, status=401, error=_GENERIC, username=username)
    throttle.succeeded(username)
    response = RedirectResponse(safe_next(next), status_code=303)
    await run_in_threadpool(start_session, request, response, who)
    log.info("web.login.ok", user=who.name, client=client)
    return response


@router.post("/logout")
async def logout(
    request: Request,
    who: Annotated[Principal, Depends(current_user)],
    csrf_token: Annotated[str | None, Form(max_length=128)] = None,
) -> Response:
    """End the session (CSRF-checked) and go to the login page."""
    verify_csrf(request, csrf_token)
    await run_in_threadpool(end_session, request)
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(request, response)
    log.info("web.logout", user=who.name)
    return response

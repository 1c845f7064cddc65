"""The web dashboard of ``patchpilot serve``: server-rendered pages over the application layer.

:func:`install` adds the pages (``/``, ``/login``, ``/findings``, ``/settings``, and the runs,
approvals, schedules, audit and ask pages of :mod:`patchpilot.web.pages_runs`) and the static
files (``/static``) to the app :func:`patchpilot.api.create_app` built; pages read the same
:class:`~patchpilot.api.app.ApiState` as the API and call the same use cases (never a second
implementation). Templates are Jinja2 with autoescape on (:mod:`patchpilot.web.render`);
authentication, CSRF and login throttling are :mod:`patchpilot.web.session`.

Every response outside ``/api/`` carries the security headers of :data:`SECURITY_HEADERS`
(a CSP without inline scripts or styles, no framing, no sniffing, same-origin referrers).
Pages work without JavaScript; ``/static/app.js`` only refreshes live parts of a page.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Final

import structlog
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchpilot.api.app import API_PREFIX, ERROR_STATUS
from patchpilot.core.errors import PatchpilotError, StoreError
from patchpilot.web.session import LoginRequired, LoginThrottle, login_url

__all__ = ["SECURITY_HEADERS", "STATIC", "SecurityHeaders", "install"]

log = structlog.get_logger(__name__)

STATIC: Final = Path(__file__).parent / "static"

SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
)
"""Added to every response outside ``/api/`` (the API's Swagger page loads its own assets)."""


def _is_api(path: str) -> bool:
    return path.startswith(API_PREFIX + "/") or path in (API_PREFIX, "/metrics")


class SecurityHeaders:
    """ASGI middleware: :data:`SECURITY_HEADERS` on every web (non-API) response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _is_api(scope.get("path", "")):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                headers = list(message.get("headers", []))
                headers.extend((k, v) for k, v in SECURITY_HEADERS if k not in names)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _error_page(request: Request, status: int, message: str) -> Response:
    from patchpilot.web.render import render

    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    response = render(request, "error.html", {"status": status, "message": message}, status=status)
    if headers:
        response.headers.update(headers)
    return response


def _install_handlers(app: FastAPI) -> None:
    api_error = app.exception_handlers.get(PatchpilotError)

    async def login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        return RedirectResponse(login_url(exc.next_path), status_code=303)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if _is_api(request.url.path):
            return await http_exception_handler(request, exc)
        return _error_page(request, exc.status_code, str(exc.detail))

    async def patchpilot_error(request: Request, exc: Exception) -> Response:
        if _is_api(request.url.path) and api_error is not None:
            answer = api_error(request, exc)
            if inspect.isawaitable(answer):
                answer = await answer
            assert isinstance(answer, Response)
            return answer
        for kind, status in ERROR_STATUS:
            if isinstance(exc, kind):
                log.info("web.request.refused", path=request.url.path, status=status)
                return _error_page(request, status, str(exc))
        status = 503 if isinstance(exc, StoreError) else 500
        log.error("web.request.failed", path=request.url.path, error=str(exc))
        return _error_page(request, status, str(exc))

    app.add_exception_handler(LoginRequired, login_required)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(PatchpilotError, patchpilot_error)


def install(app: FastAPI) -> None:
    """Mount the dashboard's pages at ``/`` and its static files at ``/static`` on ``app``
    (built by :func:`patchpilot.api.create_app`; the pages read ``app.state.api``)."""
    from patchpilot.web import pages_fleet, pages_login

    app.state.web_throttle = LoginThrottle()
    _install_handlers(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(pages_login.router)
    app.include_router(pages_fleet.router)
    if importlib.util.find_spec("patchpilot.web.pages_runs") is not None:
        from patchpilot.web import pages_runs

        app.include_router(pages_runs.router)
    app.add_middleware(SecurityHeaders)

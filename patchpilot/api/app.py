"""The FastAPI application: its factory, authentication, limits and error mapping.

:func:`create_app` builds the app for one data directory (the settings), one inventory file and
one policy file (API clients never pass server-side paths). Everything is under ``/api/v1``;
the OpenAPI document is ``/api/v1/openapi.json``; ``/api/v1/health`` needs no token and
``/metrics`` (Prometheus text) needs a viewer token unless ``service.metrics_public``.

Guarantees (each enforced here, before a route runs):

- **Authentication**: ``Authorization: Bearer TOKEN``, checked by
  :func:`patchpilot.app.users.authenticate`; missing, malformed or unknown: 401 with
  ``WWW-Authenticate: Bearer``. What a role may do is :func:`patchpilot.core.auth.allowed`
  (403 otherwise).
- **Bad input never reaches a use case**: a body over ``service.max_body_bytes`` is refused
  413 while it is read (``Content-Length`` or chunked); malformed JSON and unknown fields are
  422 (the bodies are ``extra="forbid"`` models); run ids must match
  :data:`~patchpilot.core.intents.RUN_ID_RE` (else 404, before the store or a file is touched).
- **Errors map to status codes**, never a 500 for bad input: see :data:`ERROR_STATUS`; a 500
  is only a bug, logged with its traceback (``api.internal_error``), the answer naming no
  internals.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol

import structlog
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from patchpilot import __version__
from patchpilot.core.auth import Action, Principal, allowed
from patchpilot.core.errors import (
    ConfigError,
    HostBusyError,
    InvalidInputError,
    InvalidVersionError,
    NotAuthorizedError,
    PatchpilotError,
    StoreError,
    UnknownTargetError,
    UnsafeArgumentError,
)
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.core.text import inert
from patchpilot.graphs.run import RunBusyError

if TYPE_CHECKING:
    from patchpilot.app.executor import RunRequest

__all__ = [
    "API_PREFIX",
    "ERROR_STATUS",
    "MAX_TOKEN_LENGTH",
    "ApiState",
    "Authenticator",
    "BodyLimit",
    "RunExecutor",
    "create_app",
    "principal",
    "require",
]

log = structlog.get_logger(__name__)

API_PREFIX: Final = "/api/v1"
MAX_TOKEN_LENGTH: Final = 512
"""Longest bearer token read (longer: 401 without looking it up)."""

ERROR_STATUS: Final[tuple[tuple[type[Exception], int], ...]] = (
    (NotAuthorizedError, 403),
    (UnknownTargetError, 404),
    (HostBusyError, 409),
    (RunBusyError, 409),
    (InvalidInputError, 422),
    (UnsafeArgumentError, 422),
    (InvalidVersionError, 422),
    (ConfigError, 422),
)
"""patchpilot errors and the status they answer (first match wins; an ``UnknownTargetError``
is a ``ConfigError`` too, so it comes first)."""


class RunExecutor(Protocol):
    """What the API needs of the service's executor (:class:`patchpilot.app.executor.Executor`)."""

    def submit_run(
        self, request: RunRequest, *, actor: str, trigger: Literal["api", "chat"]
    ) -> str: ...

    def continue_run(self, run_id: str, *, actor: str) -> object: ...

    def cancel(self, run_id: str, *, actor: str) -> object: ...


Authenticator = Callable[[Store, str], Principal | None]
"""``(store, token) -> principal or None`` (:func:`patchpilot.app.users.authenticate`)."""


def _default_authenticator() -> Authenticator:
    module = importlib.import_module("patchpilot.app.users")
    authenticate: Authenticator = module.authenticate
    return authenticate


@dataclass
class ApiState:
    """What every route reads: the settings, files, store and executor of this service."""

    settings: Settings
    inventory: Path
    policy: Path
    store: Store
    executor: RunExecutor | None
    authenticate: Authenticator
    submitted: set[str] = field(default_factory=set)
    """Run ids this process submitted (answered ``queued`` until the store knows them)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _memory: Any | None = None

    def memory(self) -> Any:
        """The vector memory, opened once (:class:`patchpilot.tools.memory.VectorMemory`)."""
        with self._lock:
            if self._memory is None:
                from patchpilot.tools.memory import VectorMemory

                self._memory = VectorMemory.open(self.settings)
            return self._memory


def state_of(request: Request) -> ApiState:
    """The :class:`ApiState` of the app serving ``request``."""
    api_state: ApiState = request.app.state.api
    return api_state


_bearer = HTTPBearer(auto_error=False, description="an API token (`patchpilot users add`)")


def _unauthorized(message: str) -> HTTPException:
    return HTTPException(status_code=401, detail=message, headers={"WWW-Authenticate": "Bearer"})


def principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),  # noqa: B008
) -> Principal:
    """The authenticated user of ``request`` (401 without a valid bearer token)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise _unauthorized("a bearer token is required (Authorization: Bearer TOKEN)")
    token = credentials.credentials
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isprintable():
        raise _unauthorized("invalid token")
    api = state_of(request)
    who = api.authenticate(api.store, token)
    if who is None:
        log.info("api.auth.refused", path=request.url.path)
        raise _unauthorized("invalid token")
    return who


def require(action: Action) -> Callable[..., Principal]:
    """A dependency: the authenticated user, if their role may do ``action`` (else 403)."""

    def dependency(who: Principal = Depends(principal)) -> Principal:  # noqa: B008
        if not allowed(who.role, action):
            raise HTTPException(
                status_code=403,
                detail=f"role {who.role.value} may not {action.value}",
            )
        return who

    return dependency


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit`` bytes with 413.

    A ``Content-Length`` over the limit is refused before reading; any other body is read (up
    to the limit, counted chunk by chunk) before the app sees it, and refused once it passes.
    """

    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    await _plain(send, 400, "invalid Content-Length")
                    return
                if length > self.limit:
                    await _plain(send, 413, f"request body over {self.limit} bytes")
                    return
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        # Read the whole body first (it is small by then): a chunked body over the limit is
        # refused before the app parses any of it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await _plain(send, 413, f"request body over {self.limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _plain(send: Send, status: int, detail: str) -> None:
    body = JSONResponse({"detail": detail}, status_code=status).body
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _error(status: int, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"detail": inert(str(exc), newlines=False), "error": type(exc).__name__},
        status_code=status,
    )


def _install_error_handlers(app: FastAPI) -> None:
    async def patchpilot_error(request: Request, exc: Exception) -> JSONResponse:
        for kind, status in ERROR_STATUS:
            if isinstance(exc, kind):
                log.info(
                    "api.request.refused", path=request.url.path, status=status, error=str(exc)
                )
                return _error(status, exc)
        if isinstance(exc, StoreError):
            log.error("api.store.failed", path=request.url.path, error=str(exc))
            return _error(503, exc)
        log.error("api.request.failed", path=request.url.path, error=str(exc))
        return _error(500, exc)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": [str(p) for p in e.get("loc", ())],
                "msg": inert(str(e.get("msg", "")), newlines=False),
                "type": str(e.get("type", "")),
            }
            for e in exc.errors()
        ]
        return JSONResponse({"detail": errors}, status_code=422)

    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        log.error("api.internal_error", path=request.url.path, exc_info=exc)
        return JSONResponse(
            {"detail": "internal error (logged); please report it", "error": "InternalError"},
            status_code=500,
        )

    app.add_exception_handler(PatchpilotError, patchpilot_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, internal_error)


def create_app(
    settings: Settings,
    *,
    inventory: Path,
    policy: Path,
    executor: RunExecutor | None = None,
    authenticate: Authenticator | None = None,
    store: Store | None = None,
) -> FastAPI:
    """The API for ``settings`` (data directory), ``inventory`` and ``policy``.

    Args:
        settings: The service's settings (``service.*`` for limits).
        inventory: The inventory file the service manages.
        policy: The policy file in force.
        executor: Runs and continues runs (None: run endpoints answer 503).
        authenticate: Token check (default :func:`patchpilot.app.users.authenticate`).
        store: The store (default: ``settings.store_path``, closed on shutdown).
    """
    from patchpilot.api import routes

    own_store = store is None
    api_state = ApiState(
        settings=settings,
        inventory=inventory,
        policy=policy,
        store=store if store is not None else Store(settings.store_path),
        executor=executor,
        authenticate=authenticate or _default_authenticator(),
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        if own_store:
            api_state.store.close()

    app = FastAPI(
        title="patchpilot",
        lifespan=lifespan,
        version=__version__,
        description="patchpilot as a service: runs, approvals, findings, hosts, compliance, "
        "schedules, audit log, memory, chat. Bearer tokens from `patchpilot users add`.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.api = api_state
    _install_error_handlers(app)
    app.include_router(routes.router, prefix=API_PREFIX)
    app.include_router(routes.metrics_router)

    app.add_middleware(BodyLimit, limit=settings.service.max_body_bytes)
    return app

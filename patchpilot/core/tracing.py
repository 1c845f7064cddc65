"""Graph traces leave the machine only when patchpilot's own ``tracing`` setting says so.

LangChain and LangGraph send every run they see (node inputs and outputs: host names, package
lists, findings, prompts) to LangSmith as soon as the *environment* says so
(``LANGSMITH_TRACING=true`` or an older spelling), whatever the application intended. A
variable exported for another project, or inherited from a CI runner, would ship fleet data
off the machine. :func:`apply_tracing` makes ``tracing.enabled`` the only switch; every entry
point calls it once at start, right after loading the settings (the CLI does it in
:attr:`patchpilot.cli.app.Context.settings`), before anything imports ``langsmith``.

* **Off** (the default): the four tracing flags (:data:`TRACING_FLAGS`: ``LANGSMITH_TRACING``,
  ``LANGSMITH_TRACING_V2``, ``LANGCHAIN_TRACING_V2``, ``LANGCHAIN_TRACING``) are set to
  ``false``; the credentials (``LANGSMITH_API_KEY``, ``LANGCHAIN_API_KEY``) and the variables
  that add destinations (:data:`EXTRA_DESTINATIONS`: run replicas, OpenTelemetry export, the
  v1 handler) are removed from this process's environment (so child processes do not get
  them either). ``llm.tracing.disabled`` is logged with the *names* it neutralised, never a
  value: at warning level when the environment asked for tracing, else at debug level.
* **On**: the flags are set to ``true``; ``tracing.endpoint`` becomes ``LANGSMITH_ENDPOINT``
  (replacing ``LANGCHAIN_ENDPOINT`` and any run replicas: traces go where the setting says),
  ``tracing.project`` becomes ``LANGSMITH_PROJECT``, and the key in the variable named by
  ``tracing.api_key_env`` becomes ``LANGSMITH_API_KEY``. ``llm.tracing.enabled`` is logged.

``langsmith`` caches what it read from the environment (``functools.lru_cache``); when it is
already imported those caches are cleared, without importing it here.

Variable names follow ``langsmith.utils.get_env_var``, which reads ``LANGSMITH_<NAME>`` then
``LANGCHAIN_<NAME>``, and ``TRACING_V2`` before ``TRACING``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import structlog

from patchpilot.core.settings import TracingSettings

__all__ = [
    "CREDENTIALS",
    "EXTRA_DESTINATIONS",
    "TRACING_FLAGS",
    "TracingState",
    "apply_tracing",
]

_log = structlog.get_logger(__name__)

TRACING_FLAGS: Final = (
    "LANGSMITH_TRACING",
    "LANGSMITH_TRACING_V2",
    "LANGCHAIN_TRACING_V2",
    "LANGCHAIN_TRACING",
)
"""Every spelling that turns tracing on (``LANGCHAIN_TRACING`` is LangChain's v1 switch)."""

CREDENTIALS: Final = ("LANGSMITH_API_KEY", "LANGCHAIN_API_KEY")
"""The tracing API keys, removed from the environment while tracing is off."""

EXTRA_DESTINATIONS: Final = (
    "LANGSMITH_RUNS_ENDPOINTS",
    "LANGCHAIN_RUNS_ENDPOINTS",
    "LANGSMITH_OTEL_ENABLED",
    "LANGCHAIN_OTEL_ENABLED",
    "LANGSMITH_OTEL_ONLY",
    "LANGCHAIN_OTEL_ONLY",
    "LANGSMITH_TRACING_MODE",
    "LANGCHAIN_TRACING_MODE",
    "LANGCHAIN_HANDLER",
)
"""Variables that send runs somewhere else too (replicas with their own keys, OpenTelemetry
export, the v1 handler): removed while tracing is off."""

_FALSE: Final = frozenset({"", "0", "false", "False"})
_V1_ONLY: Final = ("LANGCHAIN_TRACING", "LANGCHAIN_HANDLER")
_REPLICAS: Final = ("LANGSMITH_RUNS_ENDPOINTS", "LANGCHAIN_RUNS_ENDPOINTS", "LANGCHAIN_ENDPOINT")


@dataclass(frozen=True, slots=True)
class TracingState:
    """What :func:`apply_tracing` did.

    Attributes:
        enabled: whether tracing is on (``tracing.enabled``).
        neutralised: variables that were set and are now ``false`` or removed (tracing off).
        requested: whether the environment asked for tracing (a flag that was not false).
        set: variables set from the settings (tracing on).
    """

    enabled: bool
    neutralised: tuple[str, ...] = ()
    requested: bool = False
    set: tuple[str, ...] = ()


def apply_tracing(
    settings: TracingSettings, environ: MutableMapping[str, str] | None = None
) -> TracingState:
    """Make ``settings`` the only switch for tracing (see the module docstring).

    Args:
        settings: ``Settings.tracing``.
        environ: The environment to change (default: ``os.environ``, this process's).

    Returns:
        What was changed, by variable name.
    """
    env: MutableMapping[str, str] = os.environ if environ is None else environ
    state = _enable(settings, env) if settings.enabled else _disable(env)
    _forget_cached_environment()
    return state


def _disable(env: MutableMapping[str, str]) -> TracingState:
    neutralised: list[str] = []
    requested = False
    for name in TRACING_FLAGS:
        value = env.get(name)
        if value is not None and value not in _FALSE:
            neutralised.append(name)
            requested = True
        env[name] = "false"
    for name in (*CREDENTIALS, *EXTRA_DESTINATIONS):
        if env.pop(name, None) is not None:
            neutralised.append(name)
    state = TracingState(enabled=False, neutralised=tuple(neutralised), requested=requested)
    if requested:  # someone wanted traces: say why there are none
        _log.warning(
            "llm.tracing.disabled",
            neutralised=list(state.neutralised),
            hint="tracing.enabled is false; set it (and tracing.endpoint) to send traces",
        )
    else:
        _log.debug("llm.tracing.disabled", neutralised=list(state.neutralised))
    return state


def _enable(settings: TracingSettings, env: MutableMapping[str, str]) -> TracingState:
    changed: list[str] = []
    for name in TRACING_FLAGS:
        if name in _V1_ONLY:
            continue
        env[name] = "true"
        changed.append(name)
    for name in _V1_ONLY:  # v1 tracing is gone: LangChain refuses it without v2
        if env.pop(name, None) is not None:
            changed.append(name)
    if settings.endpoint is not None:
        env["LANGSMITH_ENDPOINT"] = settings.endpoint
        changed.append("LANGSMITH_ENDPOINT")
        for name in _REPLICAS:
            if env.pop(name, None) is not None:
                changed.append(name)
    if settings.project is not None:
        env["LANGSMITH_PROJECT"] = settings.project
        changed.append("LANGSMITH_PROJECT")
    if settings.api_key_env != "LANGSMITH_API_KEY":
        key = env.get(settings.api_key_env)
        if key:
            env["LANGSMITH_API_KEY"] = key
            changed.append("LANGSMITH_API_KEY")
    endpoint = settings.endpoint or env.get("LANGSMITH_ENDPOINT") or env.get("LANGCHAIN_ENDPOINT")
    _log.info(
        "llm.tracing.enabled",
        endpoint=_redact(endpoint) if endpoint else "https://api.smith.langchain.com",
        project=settings.project,
        set=changed,
    )
    return TracingState(enabled=True, set=tuple(changed))


def _forget_cached_environment() -> None:
    """Clear what an already imported ``langsmith`` cached from the environment."""
    utils = sys.modules.get("langsmith.utils")
    for name in ("get_env_var", "get_tracer_project"):
        clear = getattr(getattr(utils, name, None), "cache_clear", None)
        if callable(clear):
            clear()


def _redact(url: str) -> str:
    """The URL without user:password, query or fragment (safe to log)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))

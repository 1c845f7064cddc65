"""structlog configuration: human-readable on a terminal, JSON lines for services.

Logs go to stderr so that ``--format json`` output on stdout stays machine-readable. Bind
``run_id``, ``host`` and ``agent`` with :func:`structlog.contextvars.bind_contextvars` or
``log.bind(...)``; they appear on every line.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

__all__ = ["configure_logging", "debug_enabled"]


def configure_logging(level: str = "warning", fmt: Literal["console", "json"] = "console") -> None:
    """Configure structlog (and stdlib logging, for libraries such as paramiko).

    Args:
        level: minimum level name (debug, info, warning, error).
        fmt: ``console`` for people, ``json`` for log collectors.
    """
    numeric = logging.getLevelNamesMapping()[level.upper()]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Third-party libraries log through stdlib logging; keep them quiet below our level.
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr)
    # paramiko logs ERROR tracebacks for failures we already report as TransportErrors.
    logging.getLogger("paramiko").setLevel(
        numeric if numeric <= logging.DEBUG else logging.CRITICAL
    )


def _stderr_logger(*_args: object) -> structlog.PrintLogger:
    """A logger on whatever ``sys.stderr`` is now (test runners and daemons replace it)."""
    return structlog.PrintLogger(file=sys.stderr)


_QUIET_WRAPPERS = frozenset(
    structlog.make_filtering_bound_logger(level)
    for level in (logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
)


def debug_enabled() -> bool:
    """False when the configured logger drops debug events anyway (hot paths skip building them)."""
    return structlog.get_config()["wrapper_class"] not in _QUIET_WRAPPERS

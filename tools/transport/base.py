"""The transport seam: run an argv on a host, get a :class:`CommandResult`.

A transport never receives a shell string. Callers pass an argv list; the local transport hands it
to ``subprocess`` without a shell, and the SSH transport quotes every element with
:func:`shlex.quote` before it reaches the remote login shell. Privileged commands are prefixed with
``sudo -n`` (never prompting) unless the session already runs as root.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import structlog

from patchpilot.errors import CommandFailedError, UnsafeArgumentError
from patchpilot.models import CommandResult

__all__ = ["DEFAULT_MAX_OUTPUT", "OutputBuffer", "Transport", "check_argv"]

_log = structlog.get_logger(__name__)

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
"""Default cap on captured stdout/stderr per stream, in bytes (larger output is truncated)."""

_ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    """Validate an argv list: non-empty, all strings, no NUL bytes.

    Args:
        argv: the command and its arguments.

    Returns:
        The argv as a tuple.

    Raises:
        UnsafeArgumentError: if the argv is empty or an element is not a clean string.
    """
    if isinstance(argv, str) or not argv:
        raise UnsafeArgumentError("argv", repr(argv), "expected a non-empty list of strings")
    for arg in argv:
        if not isinstance(arg, str):
            raise UnsafeArgumentError("argument", repr(arg), "arguments must be strings")
        if "\x00" in arg:
            raise UnsafeArgumentError("argument", arg, "contains a NUL byte")
    return tuple(argv)


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """Validate environment variable names (values are quoted, names cannot be)."""
    clean: dict[str, str] = {}
    for name, value in (env or {}).items():
        if not name or name[0].isdigit() or not set(name) <= _ENV_NAME_CHARS:
            raise UnsafeArgumentError(
                "environment variable name", name, "not [A-Za-z_][A-Za-z0-9_]*"
            )
        if "\x00" in value:
            raise UnsafeArgumentError("environment value", value, "contains a NUL byte")
        clean[name] = value
    return clean


class OutputBuffer:
    """Collects one output stream up to ``limit`` bytes; the rest is read and discarded."""

    def __init__(self, limit: int) -> None:
        """Create an empty buffer.

        Args:
            limit: maximum number of bytes kept.
        """
        self.limit = limit
        self.truncated = False
        self._data = bytearray()

    def feed(self, chunk: bytes) -> None:
        """Append ``chunk``, keeping at most ``limit`` bytes in total."""
        room = self.limit - len(self._data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[: max(room, 0)]
        self._data += chunk

    def text(self) -> str:
        """The kept bytes decoded as UTF-8 (invalid sequences replaced)."""
        return self._data.decode("utf-8", errors="replace")


class Transport(abc.ABC):
    """Runs commands on one host. Use as a context manager so connections are closed."""

    name: str
    """The host's inventory name, used in results, errors and logs."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    @abc.abstractmethod
    def is_root(self) -> bool:
        """True when commands already run as root (no sudo needed)."""

    @abc.abstractmethod
    def _execute(
        self,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        timeout: float | None,
        stdin: str | None,
    ) -> CommandResult:
        """Run a validated argv; implementations never use a shell on untrusted input."""

    def run(
        self,
        argv: Sequence[str],
        *,
        sudo: bool = False,
        check: bool = False,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        stdin: str | None = None,
    ) -> CommandResult:
        """Run ``argv`` on the host.

        Args:
            argv: command and arguments; never a shell string.
            sudo: run privileged (``sudo -n`` unless already root).
            check: raise :class:`CommandFailedError` on a non-zero exit.
            env: extra environment variables (names validated, values quoted).
            timeout: seconds before :class:`CommandTimeoutError`; ``None`` = transport default.
            stdin: text fed to the command's standard input.

        Returns:
            The command's result (stdout/stderr decoded as UTF-8, capped in size).
        """
        args = check_argv(argv)
        clean_env = check_env(env)
        if sudo and not self.is_root:
            # -n: never prompt for a password; fail instead. Env goes through `env` so sudo's
            # env_reset does not drop it.
            # LC_ALL=C is repeated inside sudo: its env_reset may drop the caller's locale.
            assignments = ("LC_ALL=C", *(f"{k}={v}" for k, v in clean_env.items()))
            args = ("sudo", "-n", "--", "env", *assignments, *args)
            clean_env = {}
        result = self._execute(args, env=clean_env, timeout=timeout, stdin=stdin)
        if check and not result.ok:
            raise CommandFailedError(self.name, args, result.exit_code, result.stderr)
        return result

    def _finish(
        self,
        argv: tuple[str, ...],
        exit_code: int,
        out: OutputBuffer,
        err: OutputBuffer,
        started: float,
    ) -> CommandResult:
        """Build the result of a finished command (``started`` from ``time.monotonic()``)."""
        duration = time.monotonic() - started
        _log.debug(
            "command_end",
            host=self.name,
            command=argv[0],
            exit_code=exit_code,
            duration_s=round(duration, 3),
        )
        return CommandResult(
            host=self.name,
            argv=argv,
            exit_code=exit_code,
            stdout=out.text(),
            stderr=err.text(),
            truncated=out.truncated or err.truncated,
            duration_s=duration,
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default transport holds none."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

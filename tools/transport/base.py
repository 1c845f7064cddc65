"""The transport seam: run an argv on a host, get a :class:`CommandResult`.

A transport never receives a shell string. Callers pass an argv list; the local transport hands it
to ``subprocess`` without a shell, and the SSH transport quotes every element with
:func:`shlex.quote` before it reaches the remote login shell. Privileged commands are prefixed with
``sudo -n`` (never prompting) unless the session already runs as root. When sudo itself refuses
(a password is required, the user may not run the command, sudo is missing),
:func:`sudo_refusal` recognises sudo's own message and :class:`SudoRefusedError` reports it as
the privilege problem it is, never as a failure of the command sudo was asked to run. When the
inventory does not let patchpilot escalate on a host (Ansible ``ansible_become=false`` with a
login user that is not root, or an ``ansible_become_user`` other than root), a privileged
command is refused before anything runs (:class:`BecomeRefusedError`).
"""

from __future__ import annotations

import abc
import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final, TypeAlias

import structlog

from patchpilot.core.errors import CommandFailedError, TransportError, UnsafeArgumentError
from patchpilot.core.models import CommandResult, Host
from patchpilot.core.resources import ClosingContext
from patchpilot.core.settings import Settings

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "BecomeRefusedError",
    "OutputBuffer",
    "SudoRefusedError",
    "Transport",
    "TransportFactory",
    "check_argv",
    "sudo_refusal",
]

_log = structlog.get_logger(__name__)

DEFAULT_MAX_OUTPUT = 16 * 1024 * 1024
"""Default cap on captured stdout/stderr per stream, in bytes (larger output is truncated)."""

_ENV_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")

SUDO_PREFIX: Final = ("sudo", "-n", "--")
"""How :meth:`Transport.run` prefixes a privileged command (see there)."""

# sudo's own refusals (sudo 1.8/1.9, LC_ALL=C); sudo exits 1 after printing one of them.
_SUDO_REFUSED_RE: Final = re.compile(
    r"^(?:sudo: (?:a password is required|a terminal is required|no tty present"
    r"|sorry, you must have a tty|account validation failure|you do not exist"
    r"|effective uid is not 0|\S+ must be owned by uid 0|unable to (?:stat|open|read)"
    r"|\S+ is not in the sudoers file|no valid sudoers sources)"
    r"|\S+ is not in the sudoers file"
    r"|Sorry, user \S+ (?:is not allowed to execute|may not run sudo))",
    re.MULTILINE,
)
# sudo not installed: our own 127 (local), or env's / the shell's "not found" (SSH).
_SUDO_MISSING_RE: Final = re.compile(
    r"^(?:sudo: No such file or directory|env: .sudo.: No such file or directory"
    r"|(?:\S+: )*sudo: (?:command )?not found)",
    re.MULTILINE,
)


def sudo_refusal(result: CommandResult) -> str | None:
    """sudo's own refusal message when ``sudo -n`` did not run the command, else None.

    Only a result of a command that :meth:`Transport.run` prefixed with ``sudo -n --`` can be
    a refusal; the wrapped command's own errors never are.
    """
    if tuple(result.argv[:3]) != SUDO_PREFIX or result.exit_code not in (1, 127):
        return None
    pattern = _SUDO_MISSING_RE if result.exit_code == 127 else _SUDO_REFUSED_RE
    found = pattern.search(result.stderr)
    if found is None:
        return None
    end = result.stderr.find("\n", found.start())
    return result.stderr[found.start() : None if end < 0 else end].strip()


class SudoRefusedError(CommandFailedError):
    """sudo refused to run a privileged command (a privilege problem on the host)."""

    def __init__(self, host: str, argv: Sequence[str], exit_code: int, message: str) -> None:
        self.argv = list(argv)
        self.exit_code = exit_code
        self.stderr = message
        self.sudo_message = message
        command = next((a for a in self.argv[3:] if a != "env" and "=" not in a), self.argv[0])
        TransportError.__init__(
            self,
            host,
            f"privilege problem: sudo refused to run {command!r} as root ({message}). "
            "patchpilot runs privileged commands with `sudo -n`, never prompting: give the "
            "login user passwordless sudo on this host (a NOPASSWD sudoers rule) or log in "
            "as root",
        )

    @classmethod
    def check(cls, result: CommandResult) -> None:
        """Raise when ``result`` is sudo's refusal (see :func:`sudo_refusal`)."""
        message = sudo_refusal(result)
        if message is not None:
            raise cls(result.host, result.argv, result.exit_code, message)


class BecomeRefusedError(TransportError):
    """The inventory does not let patchpilot run a privileged command on this host.

    Raised before anything runs: ``ansible_become=false`` with a login user that is not root,
    or an ``ansible_become_user`` other than root (patchpilot's privileged commands, package
    operations first, run as root only).
    """

    def __init__(self, host: str, argv: Sequence[str], reason: str) -> None:
        self.argv = list(argv)
        self.reason = reason
        super().__init__(
            host, f"privileged command {self.argv[0]!r} not run: {reason} (nothing was run)"
        )


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


class Transport(ClosingContext, abc.ABC):
    """Runs commands on one host. Use as a context manager so connections are closed."""

    name: str
    """The host's inventory name, used in results, errors and logs."""
    become: bool = True
    """Whether privileged commands may escalate with ``sudo -n`` (the host's ``become``)."""
    become_user: str = "root"
    """The user privileged commands must run as (the host's ``become_user``; only root is
    supported)."""

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
            check: raise :class:`CommandFailedError` on a non-zero exit
                (:class:`SudoRefusedError` when sudo itself refused).
            env: extra environment variables (names validated, values quoted).
            timeout: seconds before :class:`CommandTimeoutError`; ``None`` = transport default.
            stdin: text fed to the command's standard input.

        Returns:
            The command's result (stdout/stderr decoded as UTF-8, capped in size).
        """
        args = check_argv(argv)
        clean_env = check_env(env)
        if sudo:
            self._check_become(args)
        if sudo and not self.is_root:
            # -n: never prompt for a password; fail instead. Env goes through `env` so sudo's
            # env_reset does not drop it.
            # LC_ALL=C is repeated inside sudo: its env_reset may drop the caller's locale.
            assignments = ("LC_ALL=C", *(f"{k}={v}" for k, v in clean_env.items()))
            args = (*SUDO_PREFIX, "env", *assignments, *args)
            clean_env = {}
        result = self._execute(args, env=clean_env, timeout=timeout, stdin=stdin)
        if check and not result.ok:
            SudoRefusedError.check(result)
            raise CommandFailedError(self.name, args, result.exit_code, result.stderr)
        return result

    def _check_become(self, argv: tuple[str, ...]) -> None:
        """Refuse a privileged command the host's become settings do not allow."""
        if self.become_user != "root":
            raise BecomeRefusedError(
                self.name,
                argv,
                f"the inventory sets become_user {self.become_user!r} "
                "(ansible_become_user) and patchpilot runs privileged commands (package "
                "operations) only as root; remove ansible_become_user or set it to root",
            )
        if not self.become and not self.is_root:
            raise BecomeRefusedError(
                self.name,
                argv,
                "the inventory sets become false (ansible_become) and the login user is not "
                "root; set ansible_become=true (patchpilot escalates with `sudo -n`) or log in "
                "as root",
            )

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

    def close(self) -> None:
        """Release connections; the default transport holds none."""


TransportFactory: TypeAlias = Callable[[Host, Settings], Transport]
"""Opens the transport of a host (:func:`patchpilot.tools.transport.open_transport`; tests and
hermetic graph runs pass a scripted one). The caller closes it (use it as a context manager)."""

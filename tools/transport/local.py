"""Run commands on this machine with :mod:`subprocess`, never through a shell.

The child gets a minimal environment (``PATH``, ``LC_ALL=C``, ``LANG=C``) plus the caller's
variables, runs in its own session (so a timeout can kill the whole process group), reads no
terminal (stdin is ``/dev/null`` unless text is given) and has each output stream capped.

**No orphans when patchpilot dies.** A child in its own session gets no signal when patchpilot
is killed (``kill -9`` runs no Python code at all), so every command's process group is
registered with a *guardian*: one tiny ``/bin/sh`` per patchpilot process (started on the first
command, in its own session) that reads ``+PGID`` / ``-PGID`` lines on a pipe from patchpilot.
When patchpilot exits, however it exits, the kernel closes that pipe; the guardian reads EOF
and kills every group still registered (``SIGTERM``, one second, ``SIGKILL``): the command and
everything it started (``sh -c`` batches, ``sudo``, apt's helpers). A process group, not
``PR_SET_PDEATHSIG``: the death signal reaches only the direct child (not what it forks), is
cleared when a set-user-ID program such as ``sudo`` starts, fires when the *thread* that
started the child exits, and needs a ``preexec_fn``, which is unsafe with threads. A group is
unregistered once its leader has exited and been reaped (process-group ids are not reused
while any member lives).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from typing import Final

import structlog

from patchpilot.core.errors import CommandTimeoutError
from patchpilot.core.models import CommandResult
from patchpilot.tools.transport.base import DEFAULT_MAX_OUTPUT, OutputBuffer, Transport

__all__ = ["DEFAULT_COMMAND_TIMEOUT", "SAFE_PATH", "LocalTransport", "guardian_pid", "safe_env"]

SAFE_PATH: Final = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The ``PATH`` commands run with unless the caller overrides it."""

DEFAULT_COMMAND_TIMEOUT: Final = 600.0
"""Seconds a command may run when neither the caller nor the transport says otherwise."""

_KILL_GRACE_S: Final = 2.0
_READ_CHUNK: Final = 65536
_WRITE_CHUNK: Final = 65536

_log = structlog.get_logger(__name__)

# The guardian (see the module docstring). Its text is fixed; only decimal process-group ids,
# written by this module, ever reach it. Signals from a terminal or a hang-up are ignored so
# it outlives patchpilot long enough to clean up.
_GUARDIAN_SCRIPT: Final = r"""
trap '' INT HUP TERM QUIT PIPE
groups=' '
while IFS= read -r line; do
  case $line in
    +[0-9]*) groups="$groups${line#+} " ;;
    -[0-9]*) g=${line#-}
      case $groups in *" $g "*) groups="${groups%%" $g "*} ${groups#*" $g "}" ;; esac ;;
  esac
done
set -- $groups
[ $# -eq 0 ] && exit 0
for g do kill -TERM -"$g" 2>/dev/null; done
sleep 1
for g do kill -KILL -"$g" 2>/dev/null; done
"""


class _Guardian:
    """The per-process guardian: kills registered process groups once patchpilot is gone."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = 0  # the pid that started it (a forked child starts its own)
        self._broken = False

    def _start(self) -> subprocess.Popen[bytes] | None:
        if self._proc is not None and self._owner == os.getpid():
            return self._proc
        try:
            proc = subprocess.Popen(
                ["/bin/sh", "-c", _GUARDIAN_SCRIPT],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=safe_env(),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            _log.warning("local.guardian_unavailable", error=str(exc))
            self._broken, self._owner = True, os.getpid()
            return None
        self._proc, self._owner = proc, os.getpid()
        return proc

    def _send(self, line: str) -> None:
        with self._lock:
            if self._broken and self._owner == os.getpid():
                return
            proc = self._start()
            if proc is None or proc.stdin is None:
                return
            try:
                proc.stdin.write(line.encode("ascii"))
                proc.stdin.flush()
            except (BrokenPipeError, ValueError, OSError) as exc:
                # The guardian died (someone killed it): commands still run and time out as
                # before, only the clean-up after a crash of patchpilot is lost.
                _log.warning("local.guardian_lost", error=str(exc))
                self._broken = True

    def register(self, pgid: int) -> None:
        """Kill process group ``pgid`` if patchpilot exits before :meth:`unregister`."""
        self._send(f"+{int(pgid)}\n")

    def unregister(self, pgid: int) -> None:
        """Forget ``pgid`` (its leader has exited and been reaped)."""
        self._send(f"-{int(pgid)}\n")

    @property
    def pid(self) -> int | None:
        """The guardian's pid in this process, if started."""
        proc = self._proc
        return proc.pid if proc is not None and self._owner == os.getpid() else None

    def close(self) -> None:
        """At a normal exit: close the pipe (the guardian then kills what is left and exits)."""
        with self._lock:
            proc, self._proc = self._proc, None
        if proc is None or self._owner != os.getpid():
            return
        with contextlib.suppress(OSError, ValueError):
            if proc.stdin is not None:
                proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.5)
        if proc.returncode is None:  # still killing leftovers; it is in its own session
            proc.returncode = 0  # nothing to reap later: init adopts it when we exit


_GUARDIAN = _Guardian()
atexit.register(_GUARDIAN.close)


def guardian_pid() -> int | None:
    """The pid of this process's guardian (see the module docstring), once a command ran."""
    return _GUARDIAN.pid


def safe_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Return the minimal child environment with ``extra`` merged on top.

    Args:
        extra: validated variables from the caller; they override the defaults.

    Returns:
        A fresh environment mapping: ``PATH``, ``LC_ALL=C``, ``LANG=C`` and ``extra``.
    """
    env = {"PATH": SAFE_PATH, "LC_ALL": "C", "LANG": "C"}
    env.update(extra or {})
    return env


class LocalTransport(Transport):
    """Runs argv lists on the local machine with :class:`subprocess.Popen` (no shell)."""

    def __init__(
        self,
        name: str = "localhost",
        *,
        command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
        max_output_bytes: int = DEFAULT_MAX_OUTPUT,
    ) -> None:
        """Create a local transport.

        Args:
            name: the host's inventory name, used in results, errors and logs.
            command_timeout: default seconds per command when ``run`` gets no timeout.
            max_output_bytes: cap on captured stdout and on stderr, each, in bytes.
        """
        super().__init__(name)
        self.command_timeout = command_timeout
        self.max_output_bytes = max_output_bytes
        self._log = _log.bind(host=name, transport="local")

    @property
    def is_root(self) -> bool:
        """True when this process runs with effective uid 0."""
        return os.geteuid() == 0

    def _execute(
        self,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        timeout: float | None,
        stdin: str | None,
    ) -> CommandResult:
        limit = self.command_timeout if timeout is None else timeout
        self._log.debug("command.start", command=argv[0], timeout_s=limit)
        start = time.monotonic()
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=safe_env(env),
                start_new_session=True,
                close_fds=True,
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
            # What a shell would report: 127 not found, 126 not executable.
            code = 127 if isinstance(exc, FileNotFoundError | NotADirectoryError) else 126
            self._log.debug("command.end", command=argv[0], exit_code=code, duration_s=0.0)
            return CommandResult(
                host=self.name,
                argv=argv,
                exit_code=code,
                stdout="",
                stderr=f"{argv[0]}: {exc.strerror}\n",
                duration_s=time.monotonic() - start,
            )
        _GUARDIAN.register(proc.pid)  # its own session: the process group id is its pid
        out = OutputBuffer(self.max_output_bytes)
        err = OutputBuffer(self.max_output_bytes)
        try:
            self._communicate(proc, stdin, out, err, deadline=start + limit)
            exit_code = proc.wait(timeout=max(start + limit - time.monotonic(), 0.0))
        except (subprocess.TimeoutExpired, TimeoutError):
            self._kill(proc)
            self._log.debug("command.timeout", command=argv[0], timeout_s=limit)
            raise CommandTimeoutError(
                self.name,
                f"command {argv[0]!r} did not finish within {limit:g}s (process group killed)",
            ) from None
        finally:
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
            if proc.returncode is not None:  # reaped; else (Ctrl-C) the guardian still owns it
                _GUARDIAN.unregister(proc.pid)
        return self._finish(argv, exit_code, out, err, start)

    @staticmethod
    def _communicate(
        proc: subprocess.Popen[bytes],
        stdin: str | None,
        out: OutputBuffer,
        err: OutputBuffer,
        *,
        deadline: float,
    ) -> None:
        """Feed stdin and drain stdout/stderr concurrently until both reach EOF.

        Raises:
            TimeoutError: the deadline passed first.
        """
        assert proc.stdout is not None
        assert proc.stderr is not None
        pending = memoryview((stdin or "").encode("utf-8"))
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout.fileno(), selectors.EVENT_READ, out)
            sel.register(proc.stderr.fileno(), selectors.EVENT_READ, err)
            if proc.stdin is not None:
                if pending:
                    os.set_blocking(proc.stdin.fileno(), False)
                    sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE, None)
                else:
                    proc.stdin.close()
            while sel.get_map():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                for key, _ in sel.select(timeout=remaining):
                    fd = key.fd
                    if key.data is None:  # stdin is writable
                        try:
                            written = os.write(fd, pending[:_WRITE_CHUNK])
                        except BlockingIOError:
                            continue
                        except BrokenPipeError:
                            written = len(pending)
                        pending = pending[written:]
                        if not pending:
                            sel.unregister(fd)
                            assert proc.stdin is not None
                            proc.stdin.close()
                        continue
                    chunk = os.read(fd, _READ_CHUNK)
                    if chunk:
                        key.data.feed(chunk)
                    else:
                        sel.unregister(fd)

    @staticmethod
    def _kill(proc: subprocess.Popen[bytes]) -> None:
        """Kill the command's process group: SIGTERM, a grace period, then SIGKILL.

        The group leader is not reaped until the end, so its pid (the group id) cannot be reused
        by an unrelated process while we signal the group.
        """
        if proc.returncode is not None:
            return
        _signal_group(proc, signal.SIGTERM)
        grace_end = time.monotonic() + _KILL_GRACE_S
        while time.monotonic() < grace_end and not _has_exited(proc.pid):
            time.sleep(0.02)
        _signal_group(proc, signal.SIGKILL)  # also members that ignored SIGTERM
        try:
            proc.wait(timeout=_KILL_GRACE_S)
        except subprocess.TimeoutExpired:  # pragma: no cover - stuck in uninterruptible sleep
            _log.warning("command.unkillable", pid=proc.pid)


def _has_exited(pid: int) -> bool:
    """True when ``pid`` (our child) has exited; does not reap it."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:  # e.g. a setuid child (sudo): signal the direct child instead
        with contextlib.suppress(ProcessLookupError, PermissionError):
            proc.send_signal(sig)

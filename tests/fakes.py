"""A scripted :class:`~patchpilot.tools.transport.base.Transport` for hermetic unit tests.

The real transports are tested against a real sshd and this machine (tests/integration); unit
tests of code that *uses* a transport replay recorded command results through this one.
"""

from __future__ import annotations

import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping

from patchpilot.core.models import CommandResult
from patchpilot.tools.transport.base import Transport

__all__ = ["ScriptedTransport", "batch_commands", "replay"]

_STEP_RE = re.compile(
    r"printf '%s (?P<i>\d+) B\\n' \"\$1\"; (?P<command>.*?); "
    r"printf '\\n%s (?P=i) E %d\\n' \"\$1\" \"\$\?\""
)


def batch_commands(argv: tuple[str, ...]) -> list[tuple[str, ...]] | None:
    """The fact commands inside a :func:`~patchpilot.tools.facts.base.gather_many` batch, else
    None."""
    if len(argv) != 5 or argv[:2] != ("sh", "-c") or not argv[4].startswith("pp-"):
        return None
    return [tuple(shlex.split(m["command"])) for m in _STEP_RE.finditer(argv[2])]


class ScriptedTransport(Transport):
    """Answers every argv with ``respond(argv)``; records argv and env (thread-safe).

    Args:
        respond: the answer to one command (its ``host`` and ``argv`` are filled in).
        name: the host name.
        root: what :attr:`is_root` says (``False`` makes ``sudo=True`` commands use ``sudo -n``).
        delay: seconds each command takes (for concurrency tests).
    """

    def __init__(
        self,
        respond: Callable[[tuple[str, ...]], CommandResult],
        name: str = "fake",
        *,
        root: bool = True,
        delay: float = 0.0,
    ) -> None:
        super().__init__(name)
        self.respond = respond
        self.root = root
        self.delay = delay
        self.calls: list[tuple[str, ...]] = []
        """Every round trip, as run (a batch is one ``sh -c`` call)."""
        self.commands: list[tuple[str, ...]] = []
        """Every command, with batches expanded into their fact commands."""
        self.envs: list[dict[str, str]] = []
        self._lock = threading.Lock()

    @property
    def is_root(self) -> bool:
        return self.root

    def _execute(
        self,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        timeout: float | None,
        stdin: str | None,
    ) -> CommandResult:
        with self._lock:
            self.calls.append(argv)
            self.envs.append(env)
        if self.delay:
            time.sleep(self.delay)
        inner = batch_commands(argv)
        if inner is None:
            with self._lock:
                self.commands.append(argv)
            return self.respond(argv).model_copy(update={"host": self.name, "argv": argv})
        # A batch: answer each fact command as a real shell would, between the token's marks.
        token = argv[4]
        out: list[str] = []
        err: list[str] = []
        for i, command in enumerate(inner):
            with self._lock:
                self.commands.append(command)
            result = self.respond(command)
            out.append(f"{token} {i} B\n{result.stdout}\n{token} {i} E {result.exit_code}\n")
            err.append(result.stderr)
        return CommandResult(
            host=self.name, argv=argv, exit_code=0, stdout="".join(out), stderr="".join(err)
        )


def replay(
    answers: Mapping[tuple[str, ...], tuple[int, str, str]],
) -> Callable[[tuple[str, ...]], CommandResult]:
    """A ``respond`` that answers recorded argvs with (exit code, stdout, stderr); 127 else."""

    def respond(argv: tuple[str, ...]) -> CommandResult:
        code, out, err = answers.get(argv, (127, "", "not recorded"))
        return CommandResult(host="", argv=argv, exit_code=code, stdout=out, stderr=err)

    return respond

"""A scripted :class:`~tools.transport.base.Transport` for hermetic unit tests.

The real transports are tested against a real sshd and this machine (tests/integration); unit
tests of code that *uses* a transport replay recorded command results through this one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

from patchpilot.models import CommandResult
from tools.transport.base import Transport

__all__ = ["ScriptedTransport", "replay"]


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
        return self.respond(argv).model_copy(update={"host": self.name, "argv": argv})


def replay(
    answers: Mapping[tuple[str, ...], tuple[int, str, str]],
) -> Callable[[tuple[str, ...]], CommandResult]:
    """A ``respond`` that answers recorded argvs with (exit code, stdout, stderr); 127 else."""

    def respond(argv: tuple[str, ...]) -> CommandResult:
        code, out, err = answers.get(argv, (127, "", "not recorded"))
        return CommandResult(host="", argv=argv, exit_code=code, stdout=out, stderr=err)

    return respond

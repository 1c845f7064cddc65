"""The fact seam: a fact is a fixed command plus a pure parser of its output (pyinfra style).

A :class:`Fact` never runs anything itself. :meth:`Fact.command` returns an argv list (never a
shell string built from input; a few facts use ``sh -c`` with a *constant* script), and
:meth:`Fact.parse` turns the :class:`~patchpilot.core.models.CommandResult` into typed data without
side effects, so every parser is tested against recorded real output
(``tests/fixtures/facts/<FactName>/*.json``). :func:`gather` glues the two to a
:class:`~patchpilot.tools.transport.base.Transport`.

Parsers fail loudly: malformed output raises :class:`~patchpilot.core.errors.FactParseError`, an
unexpected exit status raises :class:`~patchpilot.core.errors.CommandFailedError` (carrying stderr),
and truncated output is refused. A package fact never returns an empty inventory for garbage.
"""

from __future__ import annotations

import abc
import re
import secrets
import shlex
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar

from patchpilot.core.errors import CommandFailedError, FactParseError, PatchpilotError
from patchpilot.core.models import CommandResult, InstalledPackage

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = ["FACT_ENV", "Fact", "TabularPackageFact", "gather", "gather_many", "stderr_tail"]

T = TypeVar("T")

FACT_ENV: Final[Mapping[str, str]] = MappingProxyType({"LC_ALL": "C"})
"""Environment passed with every fact command: the C locale keeps output stable and unlocalised."""


def stderr_tail(result: CommandResult) -> str:
    """Return ``"; stderr: <last line>"`` for error messages, or ``""`` when stderr is empty."""
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    return f"; stderr: {lines[-1].strip()}" if lines else ""


class Fact(abc.ABC, Generic[T]):
    """A fact about a host: one command and a pure parser of its result.

    Subclasses set :attr:`name` and implement :meth:`command` and :meth:`parse`. ``parse`` must
    start with :meth:`check_result` (or an override of its exit-code policy).
    """

    name: ClassVar[str]
    """Stable fact name, used in errors and as the fixture folder name."""

    sudo: ClassVar[bool] = False
    """Whether the command needs root (run through ``sudo -n`` unless already root)."""

    timeout: ClassVar[float | None] = 120.0
    """Seconds before the transport gives up on the command."""

    ok_exit_codes: ClassVar[frozenset[int]] = frozenset({0})
    """Exit codes :meth:`check_result` accepts."""

    @abc.abstractmethod
    def command(self) -> list[str]:
        """Return the argv to run on the host (a list, never a shell string built from input)."""

    @abc.abstractmethod
    def parse(self, result: CommandResult) -> T:
        """Turn the command's result into data; pure, raises on malformed output.

        Args:
            result: the recorded outcome of :meth:`command`.

        Returns:
            The parsed fact.

        Raises:
            FactParseError: the output does not have the expected shape.
            CommandFailedError: the command exited with an unexpected status.
        """

    def check_result(self, result: CommandResult) -> None:
        """Refuse results with an unexpected exit code or truncated output.

        Args:
            result: the command's result.

        Raises:
            CommandFailedError: the exit code is not in :attr:`ok_exit_codes` (stderr attached).
            FactParseError: the transport truncated the output, so it cannot be complete.
        """
        if result.exit_code not in self.ok_exit_codes:
            raise CommandFailedError(result.host, result.argv, result.exit_code, result.stderr)
        if result.truncated:
            raise FactParseError(
                self.name, "output was truncated by the transport; refusing a partial result"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def gather(transport: Transport, fact: Fact[T]) -> T:
    """Run ``fact``'s command on ``transport`` (with ``LC_ALL=C``) and parse the result.

    Args:
        transport: where to run the command.
        fact: the fact to gather.

    Returns:
        The parsed fact.

    Raises:
        FactParseError: the output does not parse.
        CommandFailedError: the command failed.
        TransportError: the transport could not run the command at all.
    """
    result = transport.run(fact.command(), sudo=fact.sudo, env=dict(FACT_ENV), timeout=fact.timeout)
    return fact.parse(result)


_BATCH_SCRIPT_STEP: Final = (
    'printf \'%s {i} B\\n\' "$1"; {command}; printf \'\\n%s {i} E %d\\n\' "$1" "$?"'
)
"""One fact's step in a batch: begin mark, the fact's own (quoted) command, end mark + status."""
_BATCH_MARK_RE: Final = re.compile(
    r"^(?P<token>pp-[0-9a-f]{32}) (?P<i>\d+) (?P<kind>B|E)(?: (?P<rc>\d+))?$"
)


def gather_many(
    transport: Transport, facts: Sequence[Fact[Any]], *, sudo: bool = False
) -> list[Any]:
    """Gather several facts in **one** round trip: one ``sh -c`` running each fact's command.

    Each fact's own argv is quoted with :func:`shlex.join` into a script whose text comes only
    from the facts (fixed commands, never from input); a random token passed as ``$1`` marks
    where each command's output begins and ends, with its exit status. Every fact then parses
    its own slice exactly as :func:`gather` would have given it (stdout byte for byte, the exit
    status, the truncation flag). Standard error cannot be split per command: a failing fact
    sees the whole batch's stderr.

    Args:
        transport: where to run the batch.
        facts: the facts, all run with ``sudo`` (as root unless the transport already is).
        sudo: run the whole batch privileged.

    Returns:
        One entry per fact, in order: the parsed value, or the
        :class:`~patchpilot.core.errors.PatchpilotError` its parser raised (so callers can keep
        best-effort facts apart from required ones). A transport failure raises for all.

    Raises:
        TransportError: the transport could not run the batch.
        FactParseError: the batch's own markers are missing (output cut short).
    """
    if not facts:
        return []
    token = f"pp-{secrets.token_hex(16)}"
    script = "; ".join(
        _BATCH_SCRIPT_STEP.format(i=i, command=shlex.join(fact.command()))
        for i, fact in enumerate(facts)
    )
    timeout = sum(f.timeout or 120.0 for f in facts)
    result = transport.run(
        ["sh", "-c", script, "sh", token], sudo=sudo, env=dict(FACT_ENV), timeout=timeout
    )
    slices = _split_batch(result, token, len(facts))
    values: list[Any] = []
    for i, fact in enumerate(facts):
        found = slices.get(i)
        if found is None:
            values.append(
                FactParseError(fact.name, f"no output in the batch (exit {result.exit_code})")
            )
            continue
        stdout, code = found
        sub = result.model_copy(
            update={"argv": tuple(fact.command()), "stdout": stdout, "exit_code": code}
        )
        try:
            values.append(fact.parse(sub))
        except PatchpilotError as exc:
            values.append(exc)
    return values


def _split_batch(result: CommandResult, token: str, count: int) -> dict[int, tuple[str, int]]:
    """Cut a batch's stdout into ``{index: (stdout, exit code)}`` using the token's markers."""
    slices: dict[int, tuple[str, int]] = {}
    lines = result.stdout.split("\n")
    start: tuple[int, int] | None = None  # (fact index, first line of its output)
    for n, line in enumerate(lines):
        match = _BATCH_MARK_RE.match(line)
        if match is None or match["token"] != token:
            continue
        i = int(match["i"])
        if match["kind"] == "B":
            start = (i, n + 1)
        elif start is not None and start[0] == i and match["rc"] is not None and i < count:
            # The step printed "\n" before the end mark: the output is everything before it.
            slices[i] = ("\n".join(lines[start[1] : n]), int(match["rc"]))
            start = None
    return slices


class TabularPackageFact(Fact[list[InstalledPackage]]):
    """A package-inventory fact whose command prints one tab-separated row per package.

    Subclasses set :attr:`fields` and implement :meth:`parse_fields`; rows it maps to ``None``
    (not installed, pseudo-packages) are skipped. A result with no package at all is a
    :class:`FactParseError`, never an empty inventory.
    """

    fields: ClassVar[int]
    """How many tab-separated fields each row has."""

    def parse(self, result: CommandResult) -> list[InstalledPackage]:
        """Parse every row; see the subclass docstring for the shape."""
        self.check_result(result)
        packages: list[InstalledPackage] = []
        rows = 0
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if not line.strip():
                continue
            rows += 1
            values = line.split("\t")
            if len(values) != self.fields:
                raise FactParseError(
                    self.name,
                    f"expected {self.fields} tab-separated fields, got {len(values)}",
                    line=line,
                )
            package = self.parse_fields(values, line)
            if package is not None:
                packages.append(package)
        if not packages:
            reason = "no output" if rows == 0 else f"none of {rows} rows is an installed package"
            raise FactParseError(
                self.name, f"empty package inventory ({reason}){stderr_tail(result)}"
            )
        return packages

    @abc.abstractmethod
    def parse_fields(self, values: list[str], line: str) -> InstalledPackage | None:
        """Map one row's fields to a package, or ``None`` to skip the row."""

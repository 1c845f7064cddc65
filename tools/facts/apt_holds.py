"""Packages held back from upgrades (dpkg's selection state ``hold``, as ``apt-mark showhold``)."""

from __future__ import annotations

from typing import ClassVar

from patchpilot.core.errors import FactParseError, UnsafeArgumentError
from patchpilot.core.models import CommandResult, Ecosystem
from patchpilot.core.validate import validate_package_name
from patchpilot.tools.facts.base import Fact

__all__ = ["AptHolds"]

_WANTS = frozenset({"unknown", "install", "hold", "deinstall", "purge"})
"""dpkg's selection states (``db:Status-Want``)."""


class AptHolds(Fact[list[str]]):
    """Packages on hold: apt never upgrades them until ``apt-mark unhold``.

    Runs ``dpkg-query -W -f '${db:Status-Want}\t${binary:Package}\n'`` (with ``LC_ALL=C``;
    read-only, no root) and keeps the packages whose selection is ``hold``: the state
    ``apt-mark hold`` and ``dpkg --set-selections`` write and ``apt-mark showhold`` reads.
    dpkg-query reads only the status file (milliseconds), where ``apt-mark`` builds apt's whole
    package cache first (a second or more without a cached ``pkgcache.bin``).
    ``binary:Package`` is ``name:arch`` for Multi-Arch: same packages.

    Returns:
        Sorted, distinct names, e.g. ``["linux-image-amd64", "postgresql-15"]``; ``[]`` when
        nothing is held.

    Raises:
        FactParseError: a line is not ``WANT<TAB>NAME``, or the name is not a Debian package
            name (checked with :func:`patchpilot.core.validate.validate_package_name`).
        CommandFailedError: dpkg-query exited non-zero (e.g. a corrupt dpkg status file).
    """

    name: ClassVar[str] = "AptHolds"

    def command(self) -> list[str]:
        """Return the dpkg-query argv (selection state and package name per line)."""
        return ["dpkg-query", "-W", "-f", "${db:Status-Want}\t${binary:Package}\n"]

    def parse(self, result: CommandResult) -> list[str]:
        """Keep the ``hold`` lines, validating each name; see the class docstring."""
        self.check_result(result)
        names: set[str] = set()
        for raw in result.stdout.split("\n"):
            line = raw.strip()
            if not line:
                continue
            want, sep, name = line.partition("\t")
            if not sep or want not in _WANTS:
                raise FactParseError(self.name, "expected 'WANT<TAB>PACKAGE'", line=line)
            if want != "hold":
                continue
            try:
                names.add(validate_package_name(name, Ecosystem.DEBIAN))
            except UnsafeArgumentError as exc:
                raise FactParseError(self.name, f"not a package name: {exc}", line=line) from None
        return sorted(names)

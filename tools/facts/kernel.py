"""The running kernel release (``uname -r``)."""

from __future__ import annotations

from typing import ClassVar

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import CommandResult
from patchpilot.tools.facts.base import Fact

__all__ = ["KernelRelease"]


class KernelRelease(Fact[str]):
    """The running kernel's release string.

    Returns:
        ``str``, e.g. ``"6.1.0-18-amd64"`` (Debian), ``"5.14.0-362.8.1.el9_3.x86_64"`` (RHEL),
        ``"6.6.14-0-lts"`` (Alpine).

    Raises:
        FactParseError: empty output, several lines, or whitespace inside the release.
    """

    name: ClassVar[str] = "KernelRelease"

    def command(self) -> list[str]:
        """Return ``uname -r``."""
        return ["uname", "-r"]

    def parse(self, result: CommandResult) -> str:
        """Return the single release token printed by ``uname -r``."""
        self.check_result(result)
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if len(lines) != 1:
            raise FactParseError(self.name, f"expected one line, got {len(lines)}")
        release = lines[0]
        if any(ch.isspace() for ch in release):
            raise FactParseError(self.name, "kernel release contains whitespace", line=release)
        return release

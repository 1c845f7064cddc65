"""Whether the host needs a reboot to run what is installed.

* Debian/Ubuntu: :class:`RebootRequired` reads ``/var/run/reboot-required`` (flag file) and
  ``/var/run/reboot-required.pkgs`` (package names), which package maintainer scripts write.
* RHEL family: :class:`RpmKernelRebootRequired` compares the most recently installed kernel
  package (``rpm -q --last``) with the running kernel. It covers the kernel only; glibc or
  systemd updates that also want a reboot (``needs-restarting -r``) are not detected.
* Alpine: :func:`apk_kernel_reboot_required` compares the ``linux-<flavor>`` package of the
  inventory with ``uname -r``; no extra command is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import ClassVar, Final, NamedTuple

from patchpilot.core.errors import CommandFailedError, FactParseError
from patchpilot.core.models import CommandResult, InstalledPackage
from patchpilot.tools.facts.base import Fact

__all__ = [
    "RebootRequired",
    "RebootStatus",
    "RpmKernelRebootRequired",
    "apk_kernel_reboot_required",
    "rpm_kernel_package_for",
]

_MARKER: Final = "reboot-required:"
_REBOOT_SCRIPT: Final = (
    "if [ -e /var/run/reboot-required ]; then echo 'reboot-required: yes'; "
    "else echo 'reboot-required: no'; fi; "
    "if [ -r /var/run/reboot-required.pkgs ]; then cat /var/run/reboot-required.pkgs; fi"
)
_DEB_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*$")
_NOT_INSTALLED_RE: Final = re.compile(r"^package\s+(\S+)\s+is not installed\s*$")
_ALPINE_KERNEL_RE: Final = re.compile(r"^(?P<ver>.+)-(?P<rel>\d+)-(?P<flavor>[a-z0-9]+)$")


class RebootStatus(NamedTuple):
    """Whether a reboot is required, and the packages that asked for it."""

    required: bool
    packages: tuple[str, ...] = ()


def _dedupe(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


class RebootRequired(Fact[RebootStatus]):
    """Debian/Ubuntu reboot flag (``/var/run/reboot-required`` and ``.pkgs``).

    Returns:
        :class:`RebootStatus` ``(required, packages)``: ``required`` is True when the flag file
        exists; ``packages`` holds the distinct names from ``reboot-required.pkgs`` in file
        order (empty when no reboot is required, since a stale list means nothing), e.g.
        ``RebootStatus(True, ("linux-image-6.1.0-18-amd64", "libc6"))``.

    Raises:
        FactParseError: the marker line is missing or a listed name is not a package name.
    """

    name: ClassVar[str] = "RebootRequired"

    def command(self) -> list[str]:
        """Return ``sh -c`` with a constant script: a marker line, then the ``.pkgs`` file."""
        return ["sh", "-c", _REBOOT_SCRIPT]

    def parse(self, result: CommandResult) -> RebootStatus:
        """Parse the marker line and the package list; see the class docstring."""
        self.check_result(result)
        lines = [line.strip() for line in result.stdout.splitlines()]
        lines = [line for line in lines if line]
        if not lines or not lines[0].startswith(_MARKER):
            raise FactParseError(self.name, "missing 'reboot-required:' marker line")
        flag = lines[0][len(_MARKER) :].strip()
        if flag not in {"yes", "no"}:
            raise FactParseError(self.name, "marker is neither yes nor no", line=lines[0])
        for line in lines[1:]:
            if not _DEB_NAME_RE.match(line):
                raise FactParseError(
                    self.name, "not a package name in reboot-required.pkgs", line=line
                )
        if flag == "no":
            return RebootStatus(False, ())
        return RebootStatus(True, _dedupe(lines[1:]))


def rpm_kernel_package_for(running_kernel: str) -> str:
    """Name of the RPM package that provides ``running_kernel``.

    Args:
        running_kernel: ``uname -r``.

    Returns:
        ``kernel-uek`` (Oracle UEK), ``kernel-debug`` (``+debug``), ``kernel-rt`` (real-time)
        or ``kernel``.
    """
    if "uek" in running_kernel:
        return "kernel-uek"
    if running_kernel.endswith("+debug"):
        return "kernel-debug"
    if ".rt" in running_kernel or running_kernel.endswith("+rt"):
        return "kernel-rt"
    return "kernel"


class RpmKernelRebootRequired(Fact[RebootStatus]):
    """RHEL-family kernel reboot check: newest installed kernel package vs the running kernel.

    ``rpm -q --last`` lists the kernel packages most recently installed first; the first NVRA
    minus ``<package>-`` is the release the next boot runs by default. A host (or container)
    with no kernel package installed needs no reboot.

    Args:
        running_kernel: ``uname -r`` of the host (from
        :class:`~patchpilot.tools.facts.KernelRelease`).

    Returns:
        :class:`RebootStatus`: ``RebootStatus(True, ("kernel",))`` when the newest installed
        kernel differs from the running one, else ``RebootStatus(False, ())``.

    Raises:
        FactParseError: the listing does not start with ``<package>-<release>``.
        CommandFailedError: ``rpm`` failed for another reason than "not installed".
    """

    name: ClassVar[str] = "RpmKernelRebootRequired"
    ok_exit_codes: ClassVar[frozenset[int]] = frozenset({0, 1})

    def __init__(self, running_kernel: str) -> None:
        if not running_kernel or any(ch.isspace() for ch in running_kernel):
            raise ValueError(f"not a kernel release: {running_kernel!r}")
        self.running_kernel = running_kernel
        self.package = rpm_kernel_package_for(running_kernel)

    def __repr__(self) -> str:
        return f"RpmKernelRebootRequired(running_kernel={self.running_kernel!r})"

    def command(self) -> list[str]:
        """Return ``rpm -q --last <kernel package>`` (package name from a fixed set)."""
        return ["rpm", "-q", "--last", self.package]

    def parse(self, result: CommandResult) -> RebootStatus:
        """Compare the first listed kernel with the running one; see the class docstring."""
        self.check_result(result)
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        if result.exit_code != 0:
            if lines and all(_NOT_INSTALLED_RE.match(line) for line in lines):
                return RebootStatus(False, ())
            raise CommandFailedError(result.host, result.argv, result.exit_code, result.stderr)
        if not lines:
            raise FactParseError(self.name, "rpm -q --last printed nothing")
        nvra = lines[0].split()[0]
        prefix = self.package + "-"
        if not nvra.startswith(prefix) or len(nvra) == len(prefix):
            raise FactParseError(self.name, f"expected a {prefix}<release> line", line=lines[0])
        newest = nvra[len(prefix) :]
        running = self.running_kernel.removesuffix("+debug")
        if newest == running:
            return RebootStatus(False, ())
        return RebootStatus(True, (self.package,))


def apk_kernel_reboot_required(
    running_kernel: str, packages: Iterable[InstalledPackage]
) -> RebootStatus:
    """Alpine: does the installed ``linux-<flavor>`` package differ from the running kernel?

    Alpine kernel releases look like ``6.6.14-0-lts``: package ``linux-lts`` at version
    ``6.6.14-r0``. A running kernel of another shape (e.g. a container on a non-Alpine host)
    or no kernel package installed means no reboot.

    Args:
        running_kernel: ``uname -r``.
        packages: the host's apk inventory.

    Returns:
        ``RebootStatus(True, ("linux-lts",))`` when the versions differ, else
        ``RebootStatus(False, ())``.
    """
    match = _ALPINE_KERNEL_RE.match(running_kernel)
    if match is None:
        return RebootStatus(False, ())
    package = f"linux-{match['flavor']}"
    running_version = f"{match['ver']}-r{match['rel']}"
    installed = [p.version for p in packages if p.name == package]
    if not installed or running_version in installed:
        return RebootStatus(False, ())
    return RebootStatus(True, (package,))

"""Choose the package fact for an OS and collect a host's facts in one plain function."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from patchpilot.core.errors import PatchpilotError, UnsupportedPlatformError
from patchpilot.core.models import HostFacts, InstalledPackage, OSFamily, OSInfo
from patchpilot.tools.facts.apk import ApkPackages
from patchpilot.tools.facts.base import Fact, gather_many
from patchpilot.tools.facts.dpkg import DpkgPackages
from patchpilot.tools.facts.kernel import KernelRelease
from patchpilot.tools.facts.os_release import OsRelease
from patchpilot.tools.facts.reboot import (
    RebootRequired,
    RebootStatus,
    RpmKernelRebootRequired,
    apk_kernel_reboot_required,
)
from patchpilot.tools.facts.rpm import RpmPackages

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = ["collect_host_facts", "collect_host_facts_with", "package_fact_for"]

T = TypeVar("T")


def package_fact_for(os: OSInfo) -> Fact[list[InstalledPackage]]:
    """Return the installed-packages fact for ``os``'s family.

    Args:
        os: the host's parsed os-release.

    Returns:
        :class:`DpkgPackages`, :class:`RpmPackages` or :class:`ApkPackages`.

    Raises:
        UnsupportedPlatformError: the family is ``unknown`` (SUSE, Arch, ...).
    """
    if os.family is OSFamily.DEBIAN:
        return DpkgPackages()
    if os.family is OSFamily.RHEL:
        return RpmPackages()
    if os.family is OSFamily.ALPINE:
        return ApkPackages()
    like = f" (ID_LIKE {' '.join(os.id_like)})" if os.id_like else ""
    raise UnsupportedPlatformError(
        f"no package inventory for OS id {os.id!r}{like}: supported families are "
        "debian, rhel and alpine"
    )


def _reboot_fact(os: OSInfo, kernel: str) -> Fact[RebootStatus] | None:
    """The reboot fact of the family, or None when it is computed from packages (Alpine)."""
    if os.family is OSFamily.DEBIAN:
        return RebootRequired()
    if os.family is OSFamily.RHEL:
        return RpmKernelRebootRequired(kernel)
    return None


def _required(value: T) -> T:
    """A batch entry of a required fact: its parser's error is the host's error."""
    if isinstance(value, PatchpilotError):
        raise value
    return value


def collect_host_facts(transport: Transport) -> tuple[HostFacts, list[InstalledPackage]]:
    """Gather os-release, kernel, package inventory and reboot state of one host.

    Args:
        transport: an open transport to the host; ``transport.name`` becomes ``HostFacts.host``.

    Returns:
        ``(HostFacts, packages)``: the summary (``package_count`` = number of package records,
        ``source_package_count`` = distinct source names, ``ecosystem`` from the family) and the
        full inventory.

    Raises:
        UnsupportedPlatformError: the OS family has no package fact.
        FactParseError: some output did not parse.
        CommandFailedError: a command failed.
        TransportError: the host could not be reached.
    """
    facts, packages, _ = collect_host_facts_with(transport)
    return facts, packages


def collect_host_facts_with(
    transport: Transport, extra_for: Callable[[OSInfo], Sequence[Fact[Any]]] | None = None
) -> tuple[HostFacts, list[InstalledPackage], list[Any]]:
    """:func:`collect_host_facts` in two round trips, plus optional facts in the second one.

    The first round trip gathers os-release and the kernel; the second the package inventory,
    the reboot state and the facts ``extra_for(os)`` names (they depend on the OS family), all
    with :func:`~patchpilot.tools.facts.base.gather_many`.

    Args:
        transport: an open transport to the host.
        extra_for: which optional (non-sudo) facts to gather too, given the parsed os-release.

    Returns:
        ``(HostFacts, packages, extras)``: ``extras`` holds, per extra fact in order, its
        parsed value or the :class:`~patchpilot.core.errors.PatchpilotError` it raised (optional
        facts never fail the host).

    Raises:
        UnsupportedPlatformError: the OS family has no package fact.
        FactParseError: a required fact's output did not parse.
        CommandFailedError: a required fact's command failed.
        TransportError: the host could not be reached.
    """
    os_value, kernel_value = gather_many(transport, [OsRelease(), KernelRelease()])
    os_info: OSInfo = _required(os_value)
    package_fact = package_fact_for(os_info)  # an unsupported OS stops here, before anything
    kernel: str = _required(kernel_value)
    reboot_fact = _reboot_fact(os_info, kernel)
    extras = list(extra_for(os_info)) if extra_for is not None else []
    required: list[Fact[Any]] = [package_fact] + ([reboot_fact] if reboot_fact else [])
    values = gather_many(transport, required + extras)
    packages: list[InstalledPackage] = _required(values[0])
    reboot: RebootStatus = (
        _required(values[1])
        if reboot_fact is not None
        else apk_kernel_reboot_required(kernel, packages)
    )
    facts = HostFacts(
        host=transport.name,
        os=os_info,
        kernel=kernel,
        reboot_required=reboot.required,
        reboot_required_pkgs=reboot.packages,
        package_count=len(packages),
        source_package_count=len({p.source_name for p in packages}),
        ecosystem=os_info.family.ecosystem,
    )
    return facts, packages, values[len(required) :]

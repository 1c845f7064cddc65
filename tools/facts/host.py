"""Choose the package fact for an OS and collect a host's facts in one plain function."""

from __future__ import annotations

from typing import TYPE_CHECKING

from patchpilot.errors import UnsupportedPlatformError
from patchpilot.models import HostFacts, InstalledPackage, OSFamily, OSInfo
from tools.facts.apk import ApkPackages
from tools.facts.base import Fact, gather
from tools.facts.dpkg import DpkgPackages
from tools.facts.kernel import KernelRelease
from tools.facts.os_release import OsRelease
from tools.facts.reboot import (
    RebootRequired,
    RebootStatus,
    RpmKernelRebootRequired,
    apk_kernel_reboot_required,
)
from tools.facts.rpm import RpmPackages

if TYPE_CHECKING:
    from tools.transport.base import Transport

__all__ = ["collect_host_facts", "package_fact_for"]


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


def _reboot_status(
    transport: Transport, os: OSInfo, kernel: str, packages: list[InstalledPackage]
) -> RebootStatus:
    if os.family is OSFamily.DEBIAN:
        return gather(transport, RebootRequired())
    if os.family is OSFamily.RHEL:
        return gather(transport, RpmKernelRebootRequired(kernel))
    return apk_kernel_reboot_required(kernel, packages)


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
    os_info = gather(transport, OsRelease())
    package_fact = package_fact_for(os_info)
    kernel = gather(transport, KernelRelease())
    packages = gather(transport, package_fact)
    reboot = _reboot_status(transport, os_info, kernel, packages)
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
    return facts, packages

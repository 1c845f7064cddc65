"""Host facts: each is a fixed command plus a pure parser, gathered through a transport.

>>> from tools.facts import collect_host_facts
>>> facts, packages = collect_host_facts(transport)  # doctest: +SKIP
"""

from tools.facts.apk import ApkPackages
from tools.facts.apt import AptPendingUpdates, is_security_origin, parse_inst_line
from tools.facts.base import FACT_ENV, Fact, gather
from tools.facts.dpkg import DpkgPackages, parse_dpkg_source_field, split_epoch
from tools.facts.host import collect_host_facts, package_fact_for
from tools.facts.kernel import KernelRelease
from tools.facts.os_release import OsRelease, family_for, parse_os_release
from tools.facts.reboot import (
    RebootRequired,
    RebootStatus,
    RpmKernelRebootRequired,
    apk_kernel_reboot_required,
)
from tools.facts.rpm import RpmPackages, parse_source_rpm, rpm_evr

__all__ = [
    "FACT_ENV",
    "ApkPackages",
    "AptPendingUpdates",
    "DpkgPackages",
    "Fact",
    "KernelRelease",
    "OsRelease",
    "RebootRequired",
    "RebootStatus",
    "RpmKernelRebootRequired",
    "RpmPackages",
    "apk_kernel_reboot_required",
    "collect_host_facts",
    "family_for",
    "gather",
    "is_security_origin",
    "package_fact_for",
    "parse_dpkg_source_field",
    "parse_inst_line",
    "parse_os_release",
    "parse_source_rpm",
    "rpm_evr",
    "split_epoch",
]

"""Host facts: each is a fixed command plus a pure parser, gathered through a transport.

>>> from patchpilot.tools.facts import collect_host_facts
>>> facts, packages = collect_host_facts(transport)  # doctest: +SKIP
"""

from patchpilot.tools.facts.apk import ApkPackages
from patchpilot.tools.facts.apt import AptPendingUpdates, is_security_origin, parse_inst_line
from patchpilot.tools.facts.apt_holds import AptHolds
from patchpilot.tools.facts.apt_simulate import (
    AptSimulateInstall,
    ConffileStatus,
    ModifiedConffiles,
    PackageChange,
    PackageRemoval,
    PackageServices,
    SimulationResult,
    simulate_install,
)
from patchpilot.tools.facts.apt_sources import (
    AptCandidatePolicy,
    AptPolicy,
    PackagePolicy,
    PolicySource,
    PolicyVersion,
    apt_release_string,
    classify_source,
    classify_update,
    classify_updates,
)
from patchpilot.tools.facts.base import FACT_ENV, Fact, gather, gather_many
from patchpilot.tools.facts.dpkg import DpkgPackages, parse_dpkg_source_field, split_epoch
from patchpilot.tools.facts.host import (
    collect_host_facts,
    collect_host_facts_with,
    package_fact_for,
)
from patchpilot.tools.facts.kernel import KernelRelease
from patchpilot.tools.facts.loaded import MappedPackages
from patchpilot.tools.facts.os_release import OsRelease, family_for, parse_os_release
from patchpilot.tools.facts.reboot import (
    RebootRequired,
    RebootStatus,
    RpmKernelRebootRequired,
    apk_kernel_reboot_required,
)
from patchpilot.tools.facts.restart import (
    DeletedLibraries,
    NeedrestartAvailable,
    NeedrestartBatch,
    NeedrestartReport,
    RestartStatus,
    restart_facts,
    restart_status,
)
from patchpilot.tools.facts.rpm import RpmPackages, parse_source_rpm, rpm_evr
from patchpilot.tools.facts.services import ListeningSockets, decode_proc_net_address

__all__ = [
    "FACT_ENV",
    "ApkPackages",
    "AptCandidatePolicy",
    "AptHolds",
    "AptPendingUpdates",
    "AptPolicy",
    "AptSimulateInstall",
    "ConffileStatus",
    "DeletedLibraries",
    "DpkgPackages",
    "Fact",
    "KernelRelease",
    "ListeningSockets",
    "MappedPackages",
    "ModifiedConffiles",
    "NeedrestartAvailable",
    "NeedrestartBatch",
    "NeedrestartReport",
    "OsRelease",
    "PackageChange",
    "PackagePolicy",
    "PackageRemoval",
    "PackageServices",
    "PolicySource",
    "PolicyVersion",
    "RebootRequired",
    "RebootStatus",
    "RestartStatus",
    "RpmKernelRebootRequired",
    "RpmPackages",
    "SimulationResult",
    "apk_kernel_reboot_required",
    "apt_release_string",
    "classify_source",
    "classify_update",
    "classify_updates",
    "collect_host_facts",
    "collect_host_facts_with",
    "decode_proc_net_address",
    "family_for",
    "gather",
    "gather_many",
    "is_security_origin",
    "package_fact_for",
    "parse_dpkg_source_field",
    "parse_inst_line",
    "parse_os_release",
    "parse_source_rpm",
    "restart_facts",
    "restart_status",
    "rpm_evr",
    "simulate_install",
    "split_epoch",
]

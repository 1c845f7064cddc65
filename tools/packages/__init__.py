"""Operations that change a host's packages: exact installs, rollbacks, crash repair, restarts.

Agents go through the per-OS-family seam, :class:`PackageManager` (:mod:`.base`): pick one with
:func:`for_family` (a host's OS family) or :func:`for_ecosystem` (a plan item's ecosystem). The
apt/dpkg implementation (:mod:`.apt`) wraps :mod:`.apt_ops` and the apt facts.

Unlike :mod:`patchpilot.tools.facts` (read-only), every function here changes the host; each takes a
:class:`~patchpilot.tools.transport.base.Transport`, builds argv lists from validated input only and
returns a typed result (callers decide what a failure means).
"""

from patchpilot.tools.facts.apt_simulate import AptSummary as TransactionSummary
from patchpilot.tools.facts.apt_simulate import (
    ConffileStatus,
    PackageChange,
    PackageRemoval,
    SimulationResult,
)
from patchpilot.tools.packages.apt_ops import (
    APT_ENV,
    DEFAULT_LOCK_TIMEOUT,
    InstallFailure,
    InstallResult,
    LockWaitResult,
    RepairResult,
    RepairStep,
    ServiceResult,
    audit_and_repair,
    install_argv,
    install_exact,
    installed_versions,
    lock_timeout_options,
    refresh_package_lists,
    restart_service,
    service_running,
    wait_for_dpkg_lock,
)
from patchpilot.tools.packages.base import (
    PackageManager,
    for_ecosystem,
    for_family,
    manager_for_items,
    register,
    registered,
)

__all__ = [
    "APT_ENV",
    "DEFAULT_LOCK_TIMEOUT",
    "ConffileStatus",
    "InstallFailure",
    "InstallResult",
    "LockWaitResult",
    "PackageChange",
    "PackageManager",
    "PackageRemoval",
    "RepairResult",
    "RepairStep",
    "ServiceResult",
    "SimulationResult",
    "TransactionSummary",
    "audit_and_repair",
    "for_ecosystem",
    "for_family",
    "install_argv",
    "install_exact",
    "installed_versions",
    "lock_timeout_options",
    "manager_for_items",
    "refresh_package_lists",
    "register",
    "registered",
    "restart_service",
    "service_running",
    "wait_for_dpkg_lock",
]

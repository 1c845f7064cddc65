"""Operations that change a host's packages: exact installs, rollbacks, crash repair, restarts.

Unlike :mod:`patchpilot.tools.facts` (read-only), every function here changes the host; each takes a
:class:`~patchpilot.tools.transport.base.Transport`, builds argv lists from validated input only and
returns a typed result (callers decide what a failure means).
"""

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
    wait_for_dpkg_lock,
)

__all__ = [
    "APT_ENV",
    "DEFAULT_LOCK_TIMEOUT",
    "InstallFailure",
    "InstallResult",
    "LockWaitResult",
    "RepairResult",
    "RepairStep",
    "ServiceResult",
    "audit_and_repair",
    "install_argv",
    "install_exact",
    "installed_versions",
    "lock_timeout_options",
    "refresh_package_lists",
    "restart_service",
    "wait_for_dpkg_lock",
]

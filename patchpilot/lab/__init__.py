"""The lab fleet: real Debian 12 and 13 hosts on this machine for integration tests and demos.

``patchpilot lab up`` builds (once per release, cached) a debootstrapped bookworm base and a
trixie base, and runs N bookworm hosts plus M trixie hosts (default 3 + 1) on them, each an
overlayfs copy in its own mount/UTS/PID/IPC namespaces and chroot, with sshd on 127.0.0.1
(port 2201, 2202…), its own dpkg database and apt (its release's suites), and ``acme-web``
from a local apt repository (1.0.0 installed; 1.1.0 fixes a made-up CVE; 1.2.0 is broken). The
inventory (hosts grouped by release) is written to ``$LAB/inventory.yaml``, and a policy (the
default plus an HTTP health check of every host's acme-web) to ``$LAB/policy.yaml``. See
:mod:`patchpilot.lab.lab` for the lifecycle and ``../shared/design/research/lab-recipe.md``
for the study behind it.

Public API::

    lab = Lab(Path("/var/lib/patchpilot/lab"))
    lab.up(hosts=3, trixie_hosts=1)   # LabStatus; idempotent, repairs dead hosts
    lab.exec("db-1", ["apt-get", "-s", "dist-upgrade"])
    lab.status(); lab.down(); lab.reset()
"""

from __future__ import annotations

from patchpilot.lab.lab import DEFAULT_HOSTS, DEFAULT_MAX_BASE_AGE_DAYS, Lab
from patchpilot.lab.models import (
    BaseMeta,
    HostState,
    LabBaseStatus,
    LabHost,
    LabHostStatus,
    LabState,
    LabStatus,
)
from patchpilot.lab.profile import (
    DEFAULT_ACME_BASE_PORT,
    DEFAULT_BASE_PORT,
    DEFAULT_TRIXIE_HOSTS,
    MAX_HOSTS,
    fleet_profile,
    host_release,
    lab_host,
    trixie_host,
)

__all__ = [
    "DEFAULT_ACME_BASE_PORT",
    "DEFAULT_BASE_PORT",
    "DEFAULT_HOSTS",
    "DEFAULT_MAX_BASE_AGE_DAYS",
    "DEFAULT_TRIXIE_HOSTS",
    "MAX_HOSTS",
    "BaseMeta",
    "HostState",
    "Lab",
    "LabBaseStatus",
    "LabHost",
    "LabHostStatus",
    "LabState",
    "LabStatus",
    "fleet_profile",
    "host_release",
    "lab_host",
    "trixie_host",
]

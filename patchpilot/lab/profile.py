"""The fleet profile: names, tags, criticality and exposure of lab hosts, by index.

Deterministic: host ``i`` always gets the same profile. The first three hosts are fixed:

====  ==========  ======================  ===========  ========  ===================================
i     name        tags                    criticality  exposure  notes
====  ==========  ======================  ===========  ========  ===================================
1     canary-1    web, staging, canary    2            internal
2     web-1       web, prod               4            internet
3     db-1        db, prod                5            internal  acme-web held at 1.0.0; acme-agent
                                                                 1.0.0 + acme-plugin-legacy 1.0.0
====  ==========  ======================  ===========  ========  ===================================

Then the roles cycle web → staging → db with their own counters: ``web-2``, ``staging-1``,
``db-2``, ``web-3``, ``staging-2``, ``db-3``… These are the ``count`` bookworm (Debian 12)
hosts.

After them come the trixie (Debian 13) hosts, ``trixie-1``, ``trixie-2``… (``trixie``
of them; ``lab up`` adds one by default): tags web, staging, trixie; criticality 2; internal;
acme-web 1.0.0 like every host. With the lab's policy (rings canary → early (tag
``staging``) → broad; approval for tag ``prod``) a trixie host is in the early ring and needs
no approval. Their indexes (so ports) follow the bookworm hosts': with ``--hosts 3``,
``trixie-1`` is host 4 (port 2204, acme-web 8084).
"""

from __future__ import annotations

from dataclasses import dataclass

from patchpilot.core.models import Exposure
from patchpilot.lab.models import DEFAULT_RELEASE, LabHost

__all__ = [
    "DEFAULT_ACME_BASE_PORT",
    "DEFAULT_BASE_PORT",
    "DEFAULT_TRIXIE_HOSTS",
    "MAX_HOSTS",
    "TRIXIE_PREFIX",
    "fleet_profile",
    "host_release",
    "lab_host",
    "trixie_host",
]

DEFAULT_BASE_PORT = 2201
DEFAULT_ACME_BASE_PORT = 8081
#: A sanity bound on the whole fleet (ports, memory); 12 hosts are tested, more work the same.
MAX_HOSTS = 64
#: Trixie hosts ``lab up`` adds to a new fleet.
DEFAULT_TRIXIE_HOSTS = 1
#: Name prefix of the trixie hosts (``trixie-1``…); no bookworm role uses it.
TRIXIE_PREFIX = "trixie"
_TRIXIE = "trixie"


@dataclass(frozen=True)
class _Role:
    prefix: str
    tags: tuple[str, ...]
    criticality: int
    exposure: Exposure
    owner: str


_CANARY = _Role("canary", ("web", "staging", "canary"), 2, Exposure.INTERNAL, "team-web")
_WEB = _Role("web", ("web", "prod"), 4, Exposure.INTERNET, "team-web")
_DB = _Role("db", ("db", "prod"), 5, Exposure.INTERNAL, "team-data")
_STAGING = _Role("staging", ("web", "staging"), 2, Exposure.INTERNAL, "team-web")

_TRIXIE_ROLE = _Role(TRIXIE_PREFIX, ("web", "staging", "trixie"), 2, Exposure.INTERNAL, "team-web")

_FIXED = (_CANARY, _WEB, _DB)
_CYCLE = (_WEB, _STAGING, _DB)
#: The "deliberately older / held" host.
_HELD_INDEX = 3


def _role_and_number(index: int) -> tuple[_Role, int]:
    counts: dict[str, int] = {}
    role = _FIXED[0]
    for i in range(1, index + 1):
        role = _FIXED[i - 1] if i <= len(_FIXED) else _CYCLE[(i - len(_FIXED) - 1) % len(_CYCLE)]
        counts[role.prefix] = counts.get(role.prefix, 0) + 1
    return role, counts[role.prefix]


def lab_host(
    index: int,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    acme_base_port: int = DEFAULT_ACME_BASE_PORT,
) -> LabHost:
    """The profile of host ``index`` (1-based) with its sshd and acme-web ports."""
    if index < 1:
        raise ValueError(f"host index starts at 1, got {index}")
    role, number = _role_and_number(index)
    held = index == _HELD_INDEX
    return LabHost(
        name=f"{role.prefix}-{number}",
        index=index,
        port=base_port + index - 1,
        acme_port=acme_base_port + index - 1,
        tags=role.tags,
        criticality=role.criticality,
        exposure=role.exposure,
        owner=role.owner,
        held=("acme-web",) if held else (),
        extra_packages=("acme-agent=1.0.0", "acme-plugin-legacy=1.0.0") if held else (),
    )


def trixie_host(
    number: int,
    index: int,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    acme_base_port: int = DEFAULT_ACME_BASE_PORT,
) -> LabHost:
    """The profile of trixie host ``number`` (1-based), fleet host ``index`` (for its ports)."""
    if number < 1 or index < 1:
        raise ValueError(f"host numbers start at 1, got trixie-{number} as host {index}")
    role = _TRIXIE_ROLE
    return LabHost(
        name=f"{role.prefix}-{number}",
        index=index,
        port=base_port + index - 1,
        acme_port=acme_base_port + index - 1,
        tags=role.tags,
        criticality=role.criticality,
        exposure=role.exposure,
        owner=role.owner,
        release=_TRIXIE,
    )


def fleet_profile(
    count: int,
    *,
    trixie: int = 0,
    base_port: int = DEFAULT_BASE_PORT,
    acme_base_port: int = DEFAULT_ACME_BASE_PORT,
) -> list[LabHost]:
    """The first ``count`` (bookworm) lab hosts, then ``trixie`` trixie hosts."""
    ports = {"base_port": base_port, "acme_base_port": acme_base_port}
    return [lab_host(i, **ports) for i in range(1, count + 1)] + [
        trixie_host(n, count + n, **ports) for n in range(1, trixie + 1)
    ]


def host_release(name: str) -> str:
    """The Debian release of the lab host called ``name`` (by the profile's naming)."""
    prefix, _, number = name.rpartition("-")
    return _TRIXIE if prefix == TRIXIE_PREFIX and number.isdigit() else DEFAULT_RELEASE

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
``db-2``, ``web-3``, ``staging-2``, ``db-3``…
"""

from __future__ import annotations

from dataclasses import dataclass

from patchpilot.core.models import Exposure
from patchpilot.lab.models import LabHost

__all__ = ["DEFAULT_ACME_BASE_PORT", "DEFAULT_BASE_PORT", "MAX_HOSTS", "fleet_profile", "lab_host"]

DEFAULT_BASE_PORT = 2201
DEFAULT_ACME_BASE_PORT = 8081
#: A sanity bound (ports, memory); 12 hosts are tested, more work the same way.
MAX_HOSTS = 64


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


def fleet_profile(
    count: int,
    *,
    base_port: int = DEFAULT_BASE_PORT,
    acme_base_port: int = DEFAULT_ACME_BASE_PORT,
) -> list[LabHost]:
    """The first ``count`` lab hosts."""
    return [
        lab_host(i, base_port=base_port, acme_base_port=acme_base_port) for i in range(1, count + 1)
    ]

"""Pydantic models of the lab: hosts, their status, the persisted state and the base metadata."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from patchpilot.core.models import Exposure

__all__ = [
    "BASE_FORMAT_VERSION",
    "STATE_FORMAT_VERSION",
    "BaseMeta",
    "HostState",
    "LabBaseStatus",
    "LabHost",
    "LabHostStatus",
    "LabState",
    "LabStatus",
]

#: Bump when the base customisation changes: cached tarballs of another version are rebuilt.
#: 2: apt's package cache (pkgcache.bin) is kept in the hosts.
BASE_FORMAT_VERSION = 3  # 3: apt lists trimmed to the installed closure
#: Version of ``state.json`` (1 also reads states written before per-release bases).
STATE_FORMAT_VERSION = 1
#: The Debian release of hosts that do not say (every host before trixie hosts existed).
DEFAULT_RELEASE = "bookworm"


class LabHost(BaseModel):
    """One lab host as the inventory and the tests see it (deterministic by ``index``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    index: int = Field(ge=1)
    address: str = "127.0.0.1"
    port: int = Field(ge=1, le=65535, description="sshd port on 127.0.0.1")
    acme_port: int = Field(ge=1, le=65535, description="acme-web port on 127.0.0.1")
    tags: tuple[str, ...] = ()
    criticality: int = Field(default=3, ge=1, le=5)
    exposure: Exposure = Exposure.INTERNAL
    owner: str | None = None
    held: tuple[str, ...] = Field(default=(), description="packages held with apt-mark hold")
    extra_packages: tuple[str, ...] = Field(
        default=(), description="pkg=version installed at provisioning besides acme-web=1.0.0"
    )
    release: str = Field(
        default=DEFAULT_RELEASE, description="Debian codename of the host's base (bookworm, trixie)"
    )


class HostState(BaseModel):
    """What ``state.json`` remembers about one host."""

    name: str
    index: int
    port: int
    acme_port: int
    pid: int | None = Field(default=None, description="pid of the host's unshare process")
    provisioned: bool = False
    started_at: datetime | None = None
    release: str = DEFAULT_RELEASE


class LabState(BaseModel):
    """``$LAB/state.json``."""

    format_version: int = STATE_FORMAT_VERSION
    hosts_count: int = Field(default=0, description="bookworm hosts (the profile's cycle)")
    trixie_hosts: int | None = Field(
        default=None,
        description="trixie hosts after them; None: a state from before trixie hosts (none)",
    )
    base_port: int = 2201
    acme_base_port: int = 8081
    hosts: list[HostState] = Field(default_factory=list)
    updated_at: datetime | None = None
    bases_built_at: dict[str, datetime] = Field(
        default_factory=dict,
        description="per release: build time of the base the hosts' overlays were made on",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_base_before(cls, data: Any) -> Any:
        """A state written before per-release bases had ``base_built_at`` (bookworm's)."""
        if isinstance(data, dict) and "base_built_at" in data:
            data = dict(data)
            old = data.pop("base_built_at")
            if old is not None and not data.get("bases_built_at"):
                data["bases_built_at"] = {DEFAULT_RELEASE: old}
        return data

    def host(self, name: str) -> HostState | None:
        """The state of host ``name``, if known."""
        return next((h for h in self.hosts if h.name == name), None)


class BaseMeta(BaseModel):
    """Metadata of a cached base tarball (``base-<suite>.json``) and of an extracted base."""

    format_version: int = BASE_FORMAT_VERSION
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    variant: str = "minbase"
    include: tuple[str, ...] = ()
    built_at: datetime
    refreshed_at: datetime = Field(description="last apt-get update of the base's indices")
    tarball: str = ""
    tarball_bytes: int = 0


class LabHostStatus(BaseModel):
    """The live status of one host."""

    name: str
    address: str
    port: int
    acme_port: int
    release: str = DEFAULT_RELEASE
    pid: int | None = None
    running: bool = False
    ssh_ok: bool = Field(default=False, description="the sshd port accepts TCP connections")
    health: int | None = Field(default=None, description="HTTP status of acme-web /health")
    upper_bytes: int = Field(default=0, description="disk used by the host's overlay upper")
    memory_kib: int | None = Field(default=None, description="PSS of the host's processes")


class LabBaseStatus(BaseModel):
    """One release's base extracted in the lab."""

    release: str
    present: bool
    built_at: datetime | None = None
    refreshed_at: datetime | None = None


class LabStatus(BaseModel):
    """The status of the whole lab."""

    lab_dir: Path
    inventory_path: Path
    policy_path: Path = Field(description="the lab's policy (default + acme-web health checks)")
    base_present: bool = Field(description="every base the fleet's hosts use is extracted")
    base_refreshed_at: datetime | None = Field(
        default=None, description="the bookworm base's last apt-get update"
    )
    bases: list[LabBaseStatus] = Field(
        default_factory=list, description="per release the fleet uses (bookworm first)"
    )
    hosts: list[LabHostStatus] = Field(default_factory=list)

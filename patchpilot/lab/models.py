"""Pydantic models of the lab: hosts, their status, the persisted state and the base metadata."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.models import Exposure

__all__ = [
    "BASE_FORMAT_VERSION",
    "STATE_FORMAT_VERSION",
    "BaseMeta",
    "HostState",
    "LabHost",
    "LabHostStatus",
    "LabState",
    "LabStatus",
]

#: Bump when the base customisation changes: cached tarballs of another version are rebuilt.
#: 2: apt's package cache (pkgcache.bin) is kept in the hosts.
BASE_FORMAT_VERSION = 2
#: Version of ``state.json``.
STATE_FORMAT_VERSION = 1


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


class HostState(BaseModel):
    """What ``state.json`` remembers about one host."""

    name: str
    index: int
    port: int
    acme_port: int
    pid: int | None = Field(default=None, description="pid of the host's unshare process")
    provisioned: bool = False
    started_at: datetime | None = None


class LabState(BaseModel):
    """``$LAB/state.json``."""

    format_version: int = STATE_FORMAT_VERSION
    hosts_count: int = 0
    base_port: int = 2201
    acme_base_port: int = 8081
    hosts: list[HostState] = Field(default_factory=list)
    updated_at: datetime | None = None
    base_built_at: datetime | None = Field(
        default=None, description="build time of the base the hosts' overlays were made on"
    )

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
    pid: int | None = None
    running: bool = False
    ssh_ok: bool = Field(default=False, description="the sshd port accepts TCP connections")
    health: int | None = Field(default=None, description="HTTP status of acme-web /health")
    upper_bytes: int = Field(default=0, description="disk used by the host's overlay upper")
    memory_kib: int | None = Field(default=None, description="PSS of the host's processes")


class LabStatus(BaseModel):
    """The status of the whole lab."""

    lab_dir: Path
    inventory_path: Path
    policy_path: Path = Field(description="the lab's policy (default + acme-web health checks)")
    base_present: bool
    base_refreshed_at: datetime | None = None
    hosts: list[LabHostStatus] = Field(default_factory=list)

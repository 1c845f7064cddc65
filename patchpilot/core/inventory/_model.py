"""The resolved :class:`Inventory`: hosts in inventory order, groups and tags."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType

from patchpilot.core.models import Host

__all__ = ["Inventory"]


class Inventory:
    """An immutable set of hosts with their groups and tags, in inventory order.

    Group membership is read from each :attr:`Host.groups` (already transitive), so a host is
    the single source of truth; ``group_names`` only adds groups that have no host (and fixes
    the listing order).

    Attributes:
        hosts: host name → :class:`~patchpilot.core.models.Host`, in inventory order.
        groups: group name → names of its hosts (direct or through child groups).
        tags: tag name → names of the hosts carrying it (group names are tags too).
        source: the file the inventory was read from, if any.
        format: the format it was read as (``patchpilot``, ``ansible-ini``, ``ansible-yaml``).
        skipped: hosts left out because patchpilot cannot manage them, with the reason.
    """

    __slots__ = ("format", "groups", "hosts", "skipped", "source", "tags")

    hosts: Mapping[str, Host]
    groups: Mapping[str, tuple[str, ...]]
    tags: Mapping[str, tuple[str, ...]]
    source: str | None
    format: str
    skipped: Mapping[str, str]

    def __init__(
        self,
        hosts: Iterable[Host],
        *,
        group_names: Iterable[str] = (),
        source: str | None = None,
        format: str = "patchpilot",
        skipped: Mapping[str, str] | None = None,
    ) -> None:
        """Build an inventory.

        Args:
            hosts: the hosts, in inventory order; names must be unique.
            group_names: groups to list even when empty, in order (others follow).
            source: where the inventory was read from.
            format: the format it was read as.
            skipped: hosts left out, with the reason.

        Raises:
            ValueError: when two hosts share a name.
        """
        by_name: dict[str, Host] = {}
        for host in hosts:
            if host.name in by_name:
                raise ValueError(f"duplicate host {host.name!r} in inventory")
            by_name[host.name] = host
        groups: dict[str, list[str]] = {name: [] for name in group_names}
        tags: dict[str, list[str]] = {}
        for host in by_name.values():
            for group in sorted(host.groups):
                groups.setdefault(group, []).append(host.name)
            for tag in sorted(host.tags):
                tags.setdefault(tag, []).append(host.name)
        object.__setattr__(self, "hosts", MappingProxyType(by_name))
        object.__setattr__(
            self, "groups", MappingProxyType({k: tuple(v) for k, v in groups.items()})
        )
        object.__setattr__(self, "tags", MappingProxyType({k: tuple(v) for k, v in tags.items()}))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "format", format)
        object.__setattr__(self, "skipped", MappingProxyType(dict(skipped or {})))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Inventory is immutable")

    def __len__(self) -> int:
        return len(self.hosts)

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts.values())

    def __contains__(self, name: object) -> bool:
        return name in self.hosts

    def __repr__(self) -> str:
        return (
            f"Inventory(source={self.source!r}, format={self.format!r}, "
            f"hosts={len(self.hosts)}, groups={len(self.groups)})"
        )

    def get(self, name: str) -> Host | None:
        """Return the host called ``name``, or None."""
        return self.hosts.get(name)

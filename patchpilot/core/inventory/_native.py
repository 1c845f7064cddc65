"""patchpilot's own inventory format (see the package docstring for the schema)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from patchpilot.core.errors import ConfigError
from patchpilot.core.inventory._graph import (
    ALL,
    NATIVE_FIELDS,
    UNGROUPED,
    RawInventory,
    Var,
    resolve,
)
from patchpilot.core.inventory._model import Inventory
from patchpilot.core.inventory._reach import SSHConfigFile
from patchpilot.core.inventory._validate import KEYS_ONLY_REASON, is_password_key

__all__ = ["parse_native"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class JumpEntry(_Strict):
    """One jump host written as a mapping (a string ``[user@]host[:port]`` works too)."""

    address: str
    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None


class HostSettings(_Strict):
    """Settings shared by ``defaults``, group ``vars`` and hosts."""

    port: int | None = Field(default=None, ge=1, le=65535)
    user: str | None = None
    key_file: str | None = None
    known_hosts: str | None = None
    transport: Literal["ssh", "local"] | None = None
    criticality: int | None = Field(default=None, ge=1, le=5)
    exposure: Literal["internet", "internal", "isolated"] | None = None
    owner: str | None = None
    tags: list[str] | None = None
    jump: list[str | JumpEntry] | str | None = None


class HostSpec(HostSettings):
    """One entry of ``hosts``."""

    address: str | None = None


class GroupSpec(_Strict):
    """One entry of ``groups``."""

    hosts: list[str] = Field(default_factory=list)
    children: list[str] = Field(default_factory=list)
    vars: HostSettings = Field(default_factory=HostSettings)


class InventoryFile(_Strict):
    """The whole file."""

    defaults: HostSettings = Field(default_factory=HostSettings)
    hosts: dict[str, HostSpec | None]
    groups: dict[str, GroupSpec | None] = Field(default_factory=dict)


def _allowed_keys(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    if len(loc) <= 1:
        return tuple(InventoryFile.model_fields)
    if loc[0] == "defaults":
        return tuple(HostSettings.model_fields)
    if "jump" in loc:
        return tuple(JumpEntry.model_fields)
    if loc[0] == "hosts":
        return tuple(HostSpec.model_fields)
    if loc[0] == "groups" and len(loc) == 3:
        return tuple(GroupSpec.model_fields)
    return tuple(HostSettings.model_fields)


def _refuse_passwords(data: dict[str, Any], file: str) -> None:
    scopes: list[tuple[str, Any]] = [("", data), ("defaults", data.get("defaults"))]
    for section in ("hosts", "groups"):
        entries = data.get(section)
        if isinstance(entries, dict):
            for name, spec in entries.items():
                scopes.append((f"{section}.{name}", spec))
                if section == "groups" and isinstance(spec, dict):
                    scopes.append((f"groups.{name}.vars", spec.get("vars")))
    for prefix, mapping in scopes:
        if isinstance(mapping, dict):
            for key in mapping:
                if is_password_key(key):
                    path = f"{prefix}.{key}" if prefix else str(key)
                    raise ConfigError(KEYS_ONLY_REASON, file=file, key=path)


def _without_union_tags(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """Drop pydantic's union member tags (``str``, ``JumpEntry``, ``list[...]``) under ``jump``."""
    kept: list[int | str] = []
    for part in loc:
        tag = isinstance(part, str) and (part in ("str", "JumpEntry") or part.startswith("list["))
        if not ("jump" in kept and tag):
            kept.append(part)
    return tuple(kept)


def _validation_error(exc: ValidationError, file: str) -> ConfigError:
    errors = exc.errors()
    first = errors[0]
    if "jump" in first["loc"]:  # a union (string or mapping): report the most specific error
        first = max(errors, key=lambda error: ("jump" in error["loc"], len(error["loc"])))
    loc = _without_union_tags(tuple(first["loc"]))
    key = ".".join(str(part) for part in loc) or None
    if first["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_allowed_keys(loc)))
        reason = f"unknown key {loc[-1]!r} (allowed here: {allowed})"
    elif first["type"] == "missing":
        reason = f"missing required key {loc[-1]!r}"
    else:
        reason = f"{first['msg']} (got {first.get('input')!r})"
    if len(errors) > 1:
        reason += f" (and {len(errors) - 1} more error(s))"
    return ConfigError(reason, file=file, key=key)


def _settings_vars(settings: HostSettings, prefix: str) -> dict[str, Var]:
    return {
        name: Var(value, f"{prefix}.{name}")
        for name, value in settings.model_dump(exclude_none=True).items()
    }


def parse_native(data: Any, file: str, *, ssh_config: SSHConfigFile | None = None) -> Inventory:
    """Validate patchpilot-format data and resolve it.

    Args:
        data: the parsed YAML document.
        file: its file name, for error messages.
        ssh_config: the ssh_config completing how hosts are reached (None: none).

    Returns:
        The resolved inventory.

    Raises:
        ConfigError: on any structural or value error, naming the key path.
    """
    if not isinstance(data, dict):
        raise ConfigError(
            f"an inventory must be a mapping with 'hosts', got {type(data).__name__}", file=file
        )
    _refuse_passwords(data, file)
    try:
        spec = InventoryFile.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, file) from exc

    raw = RawInventory(file=file, format="patchpilot", ssh_config=ssh_config)
    raw.group(ALL, "defaults").vars.update(_settings_vars(spec.defaults, "defaults"))
    for name, host_spec in spec.hosts.items():
        host = raw.host(name, f"hosts.{name}")
        if host_spec is not None:
            host.vars.update(_settings_vars(host_spec, f"hosts.{name}"))
    for name in spec.groups:
        if name in (ALL, UNGROUPED):
            raise ConfigError(
                f"{name!r} is a built-in group name; use 'defaults' for settings of all hosts",
                file=file,
                key=f"groups.{name}",
            )
        if name in spec.hosts:
            raise ConfigError(
                f"{name!r} is both a host and a group; names must be distinct",
                file=file,
                key=f"groups.{name}",
            )
        raw.group(name, f"groups.{name}")
    for name, group_spec in spec.groups.items():
        if group_spec is None:
            continue
        group = raw.groups[name]
        group.vars.update(_settings_vars(group_spec.vars, f"groups.{name}.vars"))
        for index, member in enumerate(group_spec.hosts):
            key = f"groups.{name}.hosts[{index}]"
            if member not in raw.hosts:
                raise ConfigError(
                    f"group {name!r} lists unknown host {member!r}", file=file, key=key
                )
            if member in group.hosts:
                raise ConfigError(f"group {name!r} lists host {member!r} twice", file=file, key=key)
            raw.add_member(name, member)
        for index, child in enumerate(group_spec.children):
            origin = f"groups.{name}.children[{index}]"
            if child not in raw.groups:
                raise ConfigError(
                    f"group {name!r} lists unknown child group {child!r}", file=file, key=origin
                )
            raw.add_child(name, child, origin)

    inventory = resolve(raw, NATIVE_FIELDS)
    clashes = sorted(set(inventory.tags) & set(inventory.hosts))
    if clashes:
        carrier = inventory.tags[clashes[0]][0]
        raise ConfigError(
            f"tag {clashes[0]!r} (of host {carrier!r}) is also a host name; names must be distinct",
            file=file,
            key=f"hosts.{carrier}.tags",
        )
    return inventory

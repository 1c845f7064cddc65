"""The format-independent core: groups, children, variables with precedence, and Host records.

Every inventory format is parsed into a :class:`RawInventory` (groups with their direct hosts,
child groups and variables; hosts with their own variables; each value remembering where it was
written). :func:`resolve` then applies Ansible's rules once, for all formats:

* a group without a parent is a child of ``all``; ``all`` has depth 0 and a child is one level
  deeper than its deepest parent; a cycle in ``children`` is an error;
* a host belongs to its groups and, transitively, to their ancestors; a host in no group belongs
  to ``ungrouped`` (and leaves ``ungrouped`` when it is also in another group);
* variables combine, later winning: ``all`` < the host's groups sorted by (depth,
  ``ansible_group_priority``, name) < the host's own. With ``group_vars/``/``host_vars/`` files
  the layers are, as in Ansible's variable manager: ``all`` inline < ``group_vars/all`` < every
  other group's inline vars (sorted) < every other group's ``group_vars/`` file (sorted) < host
  inline < ``host_vars/<host>``;
* the resolved variables are mapped to :class:`~patchpilot.core.models.Host` fields through a
  :class:`FieldMap` (patchpilot field names, or ``ansible_*``/``patchpilot_*`` variables);
* how to reach the host is then completed from ssh_config when the inventory was loaded with
  one (:func:`~patchpilot.core.inventory._reach.resolve_reach`: the inventory's own address,
  port, user, key file and jump hosts win).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import structlog

from patchpilot.core.errors import ConfigError, UnsafeArgumentError
from patchpilot.core.inventory._model import Inventory
from patchpilot.core.inventory._reach import (
    JumpSpec,
    SSHConfigFile,
    parse_destination,
    parse_proxy_jump,
    parse_ssh_args,
    resolve_reach,
)
from patchpilot.core.inventory._validate import (
    validate_address,
    validate_group_name,
    validate_host_name,
    validate_key_file,
    validate_owner,
    validate_user,
)
from patchpilot.core.inventory._yaml import Vaulted
from patchpilot.core.models import Exposure, Host

__all__ = [
    "ALL",
    "ANSIBLE_FIELDS",
    "LOCAL_ADDRESS",
    "NATIVE_FIELDS",
    "UNGROUPED",
    "FieldMap",
    "RawGroup",
    "RawHost",
    "RawInventory",
    "UnsupportedHostError",
    "Var",
    "resolve",
]

_log = structlog.get_logger(__name__)

ALL: Final = "all"
UNGROUPED: Final = "ungrouped"
_BUILTIN_GROUPS: Final = frozenset({ALL, UNGROUPED})
LOCAL_ADDRESS: Final = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Var:
    """One variable value and where it was written (used as the error key)."""

    value: Any
    origin: str


@dataclass(slots=True)
class RawGroup:
    """A group as written: direct hosts, child groups and variables."""

    name: str
    origin: str
    vars: dict[str, Var] = field(default_factory=dict)
    file_vars: dict[str, Var] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    priority: int = 1


@dataclass(slots=True)
class RawHost:
    """A host as written: its own variables (inline, then from ``host_vars/``)."""

    name: str
    origin: str
    vars: dict[str, Var] = field(default_factory=dict)
    file_vars: dict[str, Var] = field(default_factory=dict)


class UnsupportedHostError(Exception):
    """A host patchpilot cannot manage (e.g. ``ansible_connection=winrm``); it is skipped."""


@dataclass(slots=True)
class RawInventory:
    """A parsed, not yet resolved, inventory. Insertion order is inventory order."""

    file: str
    format: str
    groups: dict[str, RawGroup] = field(default_factory=dict)
    hosts: dict[str, RawHost] = field(default_factory=dict)
    child_origins: dict[tuple[str, str], str] = field(default_factory=dict)
    ssh_config: SSHConfigFile | None = None
    """The ssh_config that completes how hosts are reached (None: none is read)."""
    warned: set[str] = field(default_factory=set)
    """Warnings already logged (a group variable would otherwise warn once per host)."""

    def warn_once(self, marker: str, event: str, **fields: Any) -> None:
        """Log a warning about this inventory once per ``marker``."""
        if marker not in self.warned:
            self.warned.add(marker)
            _log.warning(event, file=self.file, **fields)

    def error(
        self, reason: str, key: str | None, cause: BaseException | None = None
    ) -> ConfigError:
        """Build a ConfigError about this inventory's file."""
        err = ConfigError(reason, file=self.file, key=key)
        err.__cause__ = cause
        return err

    def group(self, name: object, origin: str) -> RawGroup:
        """Return the group ``name``, creating it (after validating the name) if new."""
        if isinstance(name, str) and name in self.groups:
            return self.groups[name]
        try:
            checked = validate_group_name(name)
        except UnsafeArgumentError as exc:
            raise self.error(str(exc), origin, exc) from exc
        group = self.groups[checked] = RawGroup(checked, origin)
        return group

    def host(self, name: object, origin: str) -> RawHost:
        """Return the host ``name``, creating it (after validating the name) if new."""
        if isinstance(name, str) and name in self.hosts:
            return self.hosts[name]
        try:
            checked = validate_host_name(name)
        except UnsafeArgumentError as exc:
            raise self.error(str(exc), origin, exc) from exc
        host = self.hosts[checked] = RawHost(checked, origin)
        return host

    def add_member(self, group: str, host: str) -> None:
        """Put ``host`` directly in ``group`` (once)."""
        members = self.groups[group].hosts
        if host not in members:
            members.append(host)

    def add_child(self, parent: str, child: str, origin: str) -> None:
        """Make ``child`` a child group of ``parent`` (once)."""
        if parent == child:
            raise self.error(f"group {parent!r} cannot be a child of itself", origin)
        if child == ALL:
            raise self.error("'all' cannot be a child group", origin)
        children = self.groups[parent].children
        if child not in children:
            children.append(child)
            self.child_origins[(parent, child)] = origin


# --------------------------------------------------------------------------- field mapping


@dataclass(frozen=True, slots=True)
class FieldMap:
    """Which variables feed which Host field.

    For each field, the candidate variable names in Ansible's order: when several are defined
    the *last* defined one wins (Ansible's ssh plugin reads ``ansible_ssh_host`` over
    ``ansible_host``). Fields in ``additive`` are unions over all levels instead of overrides.
    """

    address: tuple[str, ...]
    port: tuple[str, ...]
    user: tuple[str, ...]
    key_file: tuple[str, ...]
    known_hosts: tuple[str, ...]
    transport: tuple[str, ...]
    criticality: tuple[str, ...]
    exposure: tuple[str, ...]
    owner: tuple[str, ...]
    tags: tuple[str, ...]
    additive: frozenset[str] = frozenset()
    jump: tuple[str, ...] = ()
    become: tuple[str, ...] = ()
    become_user: tuple[str, ...] = ()
    become_method: tuple[str, ...] = ()
    ssh_args: tuple[str, ...] = ()
    """Variables holding extra ssh(1) arguments, read for their jump host (all apply)."""


NATIVE_FIELDS: Final = FieldMap(
    address=("address",),
    port=("port",),
    user=("user",),
    key_file=("key_file",),
    known_hosts=("known_hosts",),
    transport=("transport",),
    criticality=("criticality",),
    exposure=("exposure",),
    owner=("owner",),
    tags=("tags",),
    additive=frozenset({"tags"}),
    jump=("jump",),
)

ANSIBLE_FIELDS: Final = FieldMap(
    address=("ansible_host", "ansible_ssh_host"),
    port=("ansible_port", "ansible_ssh_port"),
    user=("ansible_user", "ansible_ssh_user"),
    key_file=("ansible_private_key_file", "ansible_ssh_private_key_file"),
    known_hosts=("patchpilot_known_hosts",),
    transport=("ansible_connection",),
    criticality=("patchpilot_criticality",),
    exposure=("patchpilot_exposure",),
    owner=("patchpilot_owner",),
    tags=("patchpilot_tags",),
    become=("ansible_become",),
    become_user=("ansible_become_user",),
    become_method=("ansible_become_method",),
    ssh_args=("ansible_ssh_common_args", "ansible_ssh_extra_args"),
)

_LOCAL_CONNECTIONS: Final = frozenset({"local", "ansible.builtin.local"})
_SUDO_METHODS: Final = frozenset({"sudo", "ansible.builtin.sudo"})
_TRUE: Final = frozenset({"y", "yes", "on", "1", "true", "t"})
_FALSE: Final = frozenset({"n", "no", "off", "0", "false", "f"})
_SSH_CONNECTIONS: Final = frozenset(
    {
        "ssh",
        "smart",
        "paramiko",
        "paramiko_ssh",
        "ansible.builtin.ssh",
        "ansible.builtin.paramiko_ssh",
        "ansible.netcommon.libssh",
    }
)


def _as_int(value: Any, lo: int, hi: int, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, not a boolean")
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be between {lo} and {hi}, got {value}")
    return value


def _as_str(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"{what} must be a string, got {type(value).__name__}")
    return str(value)


def _conv_port(value: Any) -> int:
    return _as_int(value, 1, 65535, "port")


def _conv_criticality(value: Any) -> int:
    return _as_int(value, 1, 5, "criticality")


def _conv_exposure(value: Any) -> Exposure:
    text = _as_str(value, "exposure").strip().lower()
    try:
        return Exposure(text)
    except ValueError:
        allowed = ", ".join(e.value for e in Exposure)
        raise ValueError(f"exposure must be one of {allowed}, got {value!r}") from None


def _conv_transport(value: Any) -> str:
    text = _as_str(value, "transport").strip()
    if text in _LOCAL_CONNECTIONS:
        return "local"
    if text in _SSH_CONNECTIONS:
        return "ssh"
    raise UnsupportedHostError(f"connection {text!r} is not supported (only ssh and local)")


def _conv_tags(value: Any) -> frozenset[str]:
    if isinstance(value, str):
        items: Iterable[Any] = value.split(",")
    elif isinstance(value, list | tuple | set | frozenset):
        items = value
    else:
        raise ValueError(
            f"tags must be a list or a comma-separated string, got {type(value).__name__}"
        )
    tags: set[str] = set()
    for item in items:
        text = _as_str(item, "tag").strip()
        if text:
            tags.add(validate_group_name(text, "tag"))
    return frozenset(tags)


def _conv_bool(value: Any) -> bool:
    """A boolean the way Ansible reads one (``yes``/``no``, ``true``/``false``, 1/0…)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    text = _as_str(value, "become").strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"expected a boolean (true/false, yes/no), got {value!r}")


def _conv_jump_entry(item: Any) -> JumpSpec:
    if isinstance(item, str):
        return parse_destination(item, "jump")
    if isinstance(item, dict) and isinstance(item.get("address"), str):
        spec = parse_destination(item["address"], "jump address")
        if spec.user is not None or spec.port is not None:
            raise ValueError("a jump mapping takes port and user as their own keys")
        user = item.get("user")
        key_file = item.get("key_file")
        return JumpSpec(
            host=spec.host,
            port=_conv_port(item["port"]) if item.get("port") is not None else None,
            user=validate_user(user) if user is not None else None,
            key_file=validate_key_file(key_file) if key_file is not None else None,
        )
    raise ValueError(
        "a jump host is '[user@]host[:port]' or a mapping with address (port, user, key_file)"
    )


def _conv_jump(value: Any) -> tuple[JumpSpec, ...]:
    """patchpilot's ``jump``: a ProxyJump string, or a list of hosts (``[]``: no jump)."""
    if isinstance(value, str):
        return parse_proxy_jump(value)
    if isinstance(value, list | tuple):
        return tuple(_conv_jump_entry(item) for item in value)
    raise ValueError(f"jump must be a list or a ProxyJump string, got {type(value).__name__}")


_CONVERTERS: Final[dict[str, Callable[[Any], Any]]] = {
    "address": lambda v: validate_address(_as_str(v, "address").strip()),
    "port": _conv_port,
    "user": lambda v: validate_user(_as_str(v, "user")),
    "key_file": validate_key_file,
    "known_hosts": validate_key_file,
    "transport": _conv_transport,
    "criticality": _conv_criticality,
    "exposure": _conv_exposure,
    "owner": validate_owner,
    "tags": _conv_tags,
    "jump": _conv_jump,
    "become": _conv_bool,
    "become_user": lambda v: validate_user(_as_str(v, "become user")),
    "become_method": lambda v: _as_str(v, "become method").strip(),
}


# --------------------------------------------------------------------------- resolution


def _check_cycles(raw: RawInventory) -> None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    for start in raw.groups:
        if state.get(start):
            continue
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(raw.groups[start].children))]
        path = [start]
        state[start] = 1
        while stack:
            name, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[name] = 2
                stack.pop()
                path.pop()
                continue
            if child not in raw.groups:
                origin = raw.child_origins.get((name, child))
                raise raw.error(f"group {name!r} lists unknown child group {child!r}", origin)
            if state.get(child) == 1:
                cycle = [*path[path.index(child) :], child]
                origin = raw.child_origins.get((name, child))
                raise raw.error("cycle in group children: " + " -> ".join(cycle), origin)
            if not state.get(child):
                state[child] = 1
                path.append(child)
                stack.append((child, iter(raw.groups[child].children)))


def _parents(raw: RawInventory) -> dict[str, list[str]]:
    parents: dict[str, list[str]] = {name: [] for name in raw.groups}
    for name, group in raw.groups.items():
        for child in group.children:
            parents[child].append(name)
    for name, found in parents.items():
        if name != ALL and not found:
            found.append(ALL)
    return parents


def _depths(raw: RawInventory, parents: Mapping[str, list[str]]) -> dict[str, int]:
    """Depth of each group: ``all`` is 0, a group is one deeper than its deepest parent."""
    depths: dict[str, int] = {ALL: 0}
    for start in raw.groups:
        stack = [start]
        while stack:  # iterative: chains of children may be long; the graph has no cycle
            name = stack[-1]
            pending = [p for p in parents[name] if p not in depths]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            if name not in depths:
                depths[name] = 1 + max(depths[p] for p in parents[name])
    return depths


def _ancestors(parents: Mapping[str, list[str]]) -> Callable[[str], frozenset[str]]:
    """A memoised ``group -> itself and all its ancestors``."""
    memo: dict[str, frozenset[str]] = {}

    def ancestors(name: str) -> frozenset[str]:
        if name not in memo:
            seen: set[str] = set()
            todo = [name]
            while todo:
                current = todo.pop()
                if current not in seen:
                    seen.add(current)
                    todo.extend(parents.get(current, ()))
            memo[name] = frozenset(seen)
        return memo[name]

    return ancestors


def _pick(merged: Mapping[str, Var], names: tuple[str, ...]) -> Var | None:
    found: Var | None = None
    for name in names:
        var = merged.get(name)
        if var is not None and var.value is not None:
            found = var
    return found


def _convert(raw: RawInventory, field_name: str, var: Var) -> Any:
    if isinstance(var.value, Vaulted):
        raise raw.error(
            f"vault-encrypted value for {field_name} is not supported; write it in clear",
            var.origin,
        )
    try:
        return _CONVERTERS[field_name](var.value)
    except (ValueError, TypeError) as exc:
        raise raw.error(str(exc), var.origin, exc) from exc


def _build_host(
    raw: RawInventory,
    name: str,
    layers: list[Mapping[str, Var]],
    groups: frozenset[str],
    fields: FieldMap,
) -> Host:
    merged: dict[str, Var] = {}
    for layer in layers:
        merged.update(layer)
    values: dict[str, Any] = {}
    for field_name in _CONVERTERS:
        names: tuple[str, ...] = getattr(fields, field_name)
        if field_name in fields.additive:  # a union over every level
            found = [layer[n] for layer in layers for n in names if n in layer]
            if found:
                values[field_name] = frozenset().union(
                    *(_convert(raw, field_name, v) for v in found)
                )
        else:
            var = _pick(merged, names)
            if var is not None:
                values[field_name] = _convert(raw, field_name, var)

    transport = values.get("transport", "ssh")
    address = values.get("address")
    if address is None and transport == "local":
        address = LOCAL_ADDRESS
    elif address is None:
        try:
            address = validate_address(name)
        except UnsafeArgumentError as exc:
            raise raw.error(
                f"host name {name!r} is not a usable address and no address is set: {exc}",
                raw.hosts[name].origin,
                exc,
            ) from exc
    become = values.get("become", True)
    method = values.get("become_method")
    if become and method is not None and method not in _SUDO_METHODS:
        raise UnsupportedHostError(
            f"ansible_become_method {method!r} is not supported: patchpilot escalates only "
            "with `sudo -n`"
        )
    reach: dict[str, Any] = {"address": address, "port": values.get("port", 22), "jump": ()}
    reach.update(user=values.get("user"), key_file=values.get("key_file"))
    if transport == "ssh":
        jumps = _ssh_args_jumps(raw, name, merged, fields, values.get("jump"))
        try:
            reached = resolve_reach(
                name,
                address=address,
                port=values.get("port"),
                user=values.get("user"),
                key_file=values.get("key_file"),
                jumps=jumps,
                config=raw.ssh_config,
            )
        except ConfigError:
            raise
        except ValueError as exc:  # a jump host the model refuses
            raise raw.error(f"host {name}: {exc}", raw.hosts[name].origin, exc) from exc
        reach = {
            "address": reached.address,
            "port": reached.port,
            "user": reached.user,
            "key_file": reached.key_file,
            "jump": reached.jump,
        }
    return Host(
        **reach,
        name=name,
        known_hosts=values.get("known_hosts"),
        become=become,
        become_user=values.get("become_user", "root"),
        transport=transport,
        tags=groups | values.get("tags", frozenset()),
        groups=groups,
        criticality=values.get("criticality", 3),
        exposure=values.get("exposure", Exposure.INTERNAL),
        owner=values.get("owner"),
    )


def _ssh_args_jumps(
    raw: RawInventory,
    name: str,
    merged: Mapping[str, Var],
    fields: FieldMap,
    jump: tuple[JumpSpec, ...] | None,
) -> tuple[JumpSpec, ...] | None:
    """The jump hosts of the host's extra ssh arguments (Ansible), or ``jump`` (patchpilot)."""
    found: list[tuple[Var, tuple[JumpSpec, ...]]] = []
    for var_name in fields.ssh_args:
        var = merged.get(var_name)
        if var is None or var.value is None or var.value == "":
            continue
        if not isinstance(var.value, str):
            raise raw.error(f"{var_name} must be a string of ssh arguments", var.origin)
        try:
            args = parse_ssh_args(var.value)
        except ValueError as exc:
            raise raw.error(f"{var_name}: {exc}", var.origin, exc) from exc
        if args.host_key:
            raw.warn_once(
                f"{var.origin}:host_key",
                "inventory.ssh_option_ignored",
                key=var.origin,
                options=list(args.host_key),
                reason="patchpilot never weakens host-key checking: every hop's key is checked "
                "strictly against its known_hosts files",
            )
        if args.ignored:
            raw.warn_once(
                f"{var.origin}:ignored",
                "inventory.ssh_option_ignored",
                key=var.origin,
                options=list(args.ignored),
                reason="only the jump host (-J, -o ProxyJump, -o ProxyCommand='ssh -W %h:%p …') "
                "is read from these arguments",
            )
        if args.jumps is not None:
            found.append((var, args.jumps))
    if len({jumps for _, jumps in found}) > 1:
        origins = " and ".join(var.origin for var, _ in found)
        raise raw.error(f"host {name}: conflicting jump hosts in {origins}", found[-1][0].origin)
    if found:
        return found[0][1]
    return jump


def resolve(raw: RawInventory, fields: FieldMap) -> Inventory:
    """Apply membership and variable precedence, and build the :class:`Inventory`.

    Args:
        raw: the parsed inventory.
        fields: how variables map to Host fields.

    Returns:
        The resolved inventory, hosts in inventory order.

    Raises:
        ConfigError: on unknown child groups, cycles, or a value that does not validate (the
            key names where the value was written).
    """
    raw.groups.setdefault(ALL, RawGroup(ALL, ALL))
    _check_cycles(raw)
    parents = _parents(raw)
    depths = _depths(raw, parents)

    ancestors = _ancestors(parents)
    direct: dict[str, list[str]] = {name: [] for name in raw.hosts}
    for raw_group in raw.groups.values():
        for member in raw_group.hosts:
            direct[member].append(raw_group.name)

    hosts: list[Host] = []
    skipped: dict[str, str] = {}
    for name, raw_host in raw.hosts.items():
        member_of: set[str] = set()
        for group_name in direct[name]:
            member_of |= ancestors(group_name)
        member_of.discard(ALL)
        if member_of - {UNGROUPED}:
            member_of.discard(UNGROUPED)
        elif UNGROUPED in raw.groups:
            member_of.add(UNGROUPED)
        ordered = sorted(member_of, key=lambda g: (depths[g], raw.groups[g].priority, g))
        all_group = raw.groups[ALL]
        layers: list[Mapping[str, Var]] = [
            all_group.vars,
            all_group.file_vars,
            *(raw.groups[g].vars for g in ordered),
            *(raw.groups[g].file_vars for g in ordered),
            raw_host.vars,
            raw_host.file_vars,
        ]
        try:
            hosts.append(
                _build_host(raw, name, layers, frozenset(member_of - _BUILTIN_GROUPS), fields)
            )
        except UnsupportedHostError as exc:
            skipped[name] = str(exc)
            _log.warning("inventory.host_skipped", file=raw.file, host=name, reason=str(exc))

    group_names = [name for name in raw.groups if name not in _BUILTIN_GROUPS]
    overlap = set(group_names) & set(raw.hosts)
    for conflict in sorted(overlap):
        _log.warning("inventory.host_group_same_name", file=raw.file, name=conflict)
    return Inventory(
        hosts, group_names=group_names, source=raw.file, format=raw.format, skipped=skipped
    )

"""Reading Ansible inventories as Ansible does: INI and YAML files, host ranges, vars dirs.

The parsers mirror ansible-core's ``ini`` and ``yaml`` inventory plugins (checked against
``ansible-inventory --list`` output recorded in ``tests/fixtures/ansible/``):

* INI: ``[group]``, ``[group:vars]``, ``[group:children]`` sections; host lines
  ``pattern key=value …`` split like a shell line (``#`` starts a comment); values read as
  Python literals when they are one (``22`` is an int, ``"a b"`` a string); hosts before any
  section are ``ungrouped``; a ``:vars`` section or a child must name a group that has its own
  ``[group]`` or ``[group:children]`` section.
* YAML: top-level keys are groups; each group may have ``hosts`` (name → vars), ``vars`` and
  ``children`` (name → nested group); other keys are skipped with a warning, as Ansible does.
* Host patterns may carry a port (``host:2222``, ``[2001:db8::1]:2222``) and ranges
  (``web[01:03]``, ``db-[a:c]``, ``node[0:10:5]``); a port applies when the host is first
  seen.
* ``group_vars/`` and ``host_vars/`` beside the inventory file are read like Ansible's
  ``host_group_vars`` plugin (``<name>``, ``<name>.yml``, ``.yaml``, ``.json``, or a
  ``<name>/`` directory read recursively in sorted order).
* JSON: what ``ansible-inventory --list`` (and ``--export``, and a dynamic inventory script's
  ``--list``) prints: groups with ``hosts``/``children`` lists and ``vars``, a bare list of
  hosts as a group, and ``_meta.hostvars`` (each host's variables, already merged by Ansible;
  ``{"__ansible_vault": …}`` values are vaulted). Checked against recordings in
  ``tests/fixtures/ansible*/``.

Passwords (``ansible_password``, ``ansible_become_pass``…) are refused wherever they appear.
Unknown variables are kept out of the way: only the variables in
:data:`~patchpilot.core.inventory._graph.ANSIBLE_FIELDS` are used.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import string
import warnings
from pathlib import Path
from typing import Any, Final

import structlog

from patchpilot.core.errors import ConfigError
from patchpilot.core.inventory._graph import (
    ALL,
    ANSIBLE_FIELDS,
    UNGROUPED,
    RawInventory,
    Var,
    resolve,
)
from patchpilot.core.inventory._model import Inventory
from patchpilot.core.inventory._reach import SSHConfigFile
from patchpilot.core.inventory._validate import KEYS_ONLY_REASON, is_password_key
from patchpilot.core.inventory._yaml import Vaulted, load_yaml

__all__ = [
    "MAX_RANGE_HOSTS",
    "expand_host_range",
    "looks_like_ansible_json",
    "parse_ansible_ini",
    "parse_ansible_json",
    "parse_ansible_yaml",
    "split_host_port",
]

_log = structlog.get_logger(__name__)

#: Largest number of hosts one range pattern may expand to.
MAX_RANGE_HOSTS: Final = 10_000
_VARS_EXTENSIONS: Final = ("", ".yml", ".yaml", ".json")
_VAULT_HEADER: Final = "$ANSIBLE_VAULT;"
_MAX_LITERAL: Final = 10_000


_BRACKETED_HOSTPORT = re.compile(r"^\[(.+)\]:([0-9]+)$")
_HOSTPORT = re.compile(r"^((?:[^:\[\]]|\[[^\]]*\])*):([0-9]+)$")
_INI_SECTION = re.compile(r"^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$")
_INI_GROUPNAME = re.compile(r"^([^:\]\s]+)\s*(?:#.*)?$")


# --------------------------------------------------------------------------- host patterns


def split_host_port(pattern: str) -> tuple[str, int | None]:
    """Split an Ansible host pattern into the host part and an optional port.

    ``host:22`` and ``web[01:03]:22`` carry a port; an IPv6 address needs brackets to carry one
    (``[2001:db8::1]:22``); a bare IPv6 address has none.

    Args:
        pattern: the host pattern as written.

    Returns:
        ``(host pattern, port or None)``.
    """
    for regex in (_BRACKETED_HOSTPORT, _HOSTPORT):
        match = regex.match(pattern)
        if match:
            return match.group(1), int(match.group(2))
    return pattern, None


def expand_host_range(pattern: str, *, limit: int = MAX_RANGE_HOSTS) -> list[str]:
    """Expand Ansible host ranges: ``web[01:03]`` → ``web01``, ``web02``, ``web03``.

    A range is ``[begin:end]`` or ``[begin:end:step]``, inclusive. Numeric bounds with a
    leading zero keep their width (both bounds must then be as wide); single letters expand
    through ``a-zA-Z``; an empty begin means 0. Several ranges expand left to right, the
    leftmost varying slowest, as Ansible does. Unlike Ansible (which silently yields nothing),
    an empty range is an error.

    Args:
        pattern: a host pattern, with or without ranges.
        limit: the most names one pattern may produce.

    Returns:
        The expanded names, in order (the pattern itself when it has no range).

    Raises:
        ValueError: on a malformed or empty range, or more than ``limit`` names.
    """
    if "[" not in pattern:
        return [pattern]
    head, sep, rest = pattern.partition("[")
    body, sep, tail = rest.partition("]")
    if not sep:
        raise ValueError(f"unclosed '[' in host pattern {pattern!r}")
    bounds = body.split(":")
    if len(bounds) not in (2, 3):
        raise ValueError(f"host range [{body}] must be begin:end or begin:end:step")
    begin, end = bounds[0] or "0", bounds[1]
    if not end:
        raise ValueError(f"host range [{body}] must specify an end value")
    try:
        step = int(bounds[2]) if len(bounds) == 3 else 1
    except ValueError:
        raise ValueError(f"host range [{body}] has a non-numeric step") from None
    if step < 1:
        raise ValueError(f"host range [{body}] must have a positive step")

    letters = string.ascii_letters
    if len(begin) == 1 and len(end) == 1 and begin in letters and end in letters:
        first, last = letters.index(begin), letters.index(end)
        if first > last:
            raise ValueError(f"host range [{body}] must have begin <= end")
        items = list(letters[first : last + 1 : step])
    else:
        if not (begin.isdigit() and end.isdigit()):
            raise ValueError(f"host range [{body}] must be numeric or single letters")
        width = len(begin) if begin[0] == "0" and len(begin) > 1 else 0
        if width and width != len(end):
            raise ValueError(f"host range [{body}] must have equal-length begin and end")
        numbers = range(int(begin), int(end) + 1, step)
        if len(numbers) > limit:
            raise ValueError(f"host range [{body}] expands to more than {limit} hosts")
        items = [str(n).zfill(width) for n in numbers]
    if not items:
        raise ValueError(f"host range [{body}] is empty")

    names: list[str] = []
    for item in items:
        names.extend(expand_host_range(f"{head}{item}{tail}", limit=limit))
        if len(names) > limit:
            raise ValueError(f"host pattern {pattern!r} expands to more than {limit} hosts")
    return names


# --------------------------------------------------------------------------- shared


def _new_raw(file: str, fmt: str, ssh_config: SSHConfigFile | None = None) -> RawInventory:
    raw = RawInventory(file=file, format=fmt, ssh_config=ssh_config)
    raw.group(ALL, ALL)
    raw.group(UNGROUPED, UNGROUPED)
    raw.add_child(ALL, UNGROUPED, UNGROUPED)
    return raw


def _set_var(raw: RawInventory, target: dict[str, Var], key: Any, value: Any, origin: str) -> None:
    if not isinstance(key, str):
        raise raw.error(f"variable names must be strings, got {key!r}", origin)
    if is_password_key(key):
        raise raw.error(KEYS_ONLY_REASON, origin)
    target[key] = Var(value, origin)


def _set_group_var(raw: RawInventory, group: str, key: Any, value: Any, origin: str) -> None:
    _set_var(raw, raw.groups[group].vars, key, value, origin)
    if key == "ansible_group_priority":
        try:
            raw.groups[group].priority = int(value)
        except (TypeError, ValueError):
            _log.warning("inventory.bad_group_priority", file=raw.file, key=origin, value=value)


def _add_hosts(
    raw: RawInventory,
    pattern: Any,
    group: str,
    variables: dict[Any, Any],
    origin: str,
    var_prefix: str,
) -> None:
    if not isinstance(pattern, str):
        raise raw.error(f"host pattern {pattern!r} must be a string (quote it)", origin)
    host_part, port = split_host_port(pattern.strip())
    if pattern.strip().endswith(":") and port is None:
        raise raw.error(f"host pattern {pattern!r} ends in ':' (reserved for a port)", origin)
    if host_part == "---":
        raise raw.error("'---' is not a host; is this a YAML file?", origin)
    try:
        names = expand_host_range(host_part)
    except ValueError as exc:
        raise raw.error(str(exc), origin, exc) from exc
    for name in names:
        new = name not in raw.hosts
        host = raw.host(name, origin)
        raw.add_member(group, host.name)
        if new and port is not None:
            host.vars["ansible_port"] = Var(port, origin)
        for key, value in variables.items():
            _set_var(raw, host.vars, key, value, f"{var_prefix}{key}")


def _finish(raw: RawInventory, base_dir: Path | None) -> Inventory:
    if base_dir is not None:
        _read_vars_dirs(raw, base_dir)
    inventory = resolve(raw, ANSIBLE_FIELDS)
    _log.debug(
        "inventory.ansible_loaded",
        file=raw.file,
        format=raw.format,
        hosts=len(inventory.hosts),
        groups=len(inventory.groups),
    )
    return inventory


# --------------------------------------------------------------------------- INI


def _ini_value(text: str) -> Any:
    if len(text) > _MAX_LITERAL:
        return text
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if value is Ellipsis or isinstance(value, complex | bytes):
        return text
    return value


class _IniParser:
    """Ansible's ``ini`` inventory plugin, line by line."""

    def __init__(self, file: str, ssh_config: SSHConfigFile | None = None) -> None:
        self.raw = _new_raw(file, "ansible-ini", ssh_config)
        self.declared = {ALL, UNGROUPED}
        self.vars_sections: dict[str, int] = {}
        self.child_refs: list[tuple[str, str, int]] = []
        self.group = UNGROUPED
        self.state = "hosts"

    def feed(self, number: int, line: str) -> None:
        raw = self.raw
        section = _INI_SECTION.match(line)
        if section:
            self._section(number, line, section.group(1), section.group(2) or "hosts")
            return
        if line.startswith("[") and line.endswith("]"):
            raise raw.error(
                f"invalid section header {line!r} (no spaces or other characters allowed)",
                f"line {number}",
            )
        suffix = "" if self.state == "hosts" else ":" + self.state
        where = f"line {number} [{self.group}{suffix}]"
        if self.state == "hosts":
            self._host_line(line, where)
        elif self.state == "vars":
            if "=" not in line:
                raise raw.error(f"expected key=value, got {line!r}", where)
            key, value = (part.strip() for part in line.split("=", 1))
            _set_group_var(raw, self.group, key, _ini_value(value), f"{where} {key}")
        else:
            match = _INI_GROUPNAME.match(line)
            if not match:
                raise raw.error(f"expected a group name, got {line!r}", where)
            child = raw.group(match.group(1), where).name
            self.child_refs.append((self.group, child, number))
            raw.add_child(self.group, child, where)

    def _section(self, number: int, line: str, group: str, kind: str) -> None:
        origin = f"line {number} {line[: line.index(']') + 1]}"
        if kind not in ("hosts", "children", "vars"):
            raise self.raw.error(
                f"section type {kind!r} is unknown (hosts, children or vars)", origin
            )
        self.raw.group(group, origin)
        self.group, self.state = group, kind
        if kind == "vars":
            self.vars_sections.setdefault(group, number)
        else:
            self.declared.add(group)

    def _host_line(self, line: str, where: str) -> None:
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise self.raw.error(f"cannot split host line: {exc}", where, exc) from exc
        if not tokens:
            return
        variables: dict[str, Any] = {}
        for token in tokens[1:]:
            if "=" not in token:
                raise self.raw.error(f"expected key=value host variable, got {token!r}", where)
            key, value = token.split("=", 1)
            variables[key] = _ini_value(value)
        _add_hosts(self.raw, tokens[0], self.group, variables, where, where + " ")

    def check_references(self) -> None:
        for name, number in self.vars_sections.items():
            if name not in self.declared:
                raise self.raw.error(
                    f"section [{name}:vars] is for group {name!r}, which has no [{name}] "
                    f"or [{name}:children] section",
                    f"line {number} [{name}:vars]",
                )
        for parent, child, number in self.child_refs:
            if child not in self.declared:
                raise self.raw.error(
                    f"section [{parent}:children] includes group {child!r}, which has no "
                    f"[{child}] or [{child}:children] section",
                    f"line {number} [{parent}:children]",
                )


def parse_ansible_ini(
    text: str,
    *,
    file: str,
    base_dir: Path | None = None,
    ssh_config: SSHConfigFile | None = None,
) -> Inventory:
    """Parse an Ansible INI inventory.

    Args:
        text: the file content.
        file: its name, for error messages.
        base_dir: the directory holding ``group_vars/``/``host_vars/`` (None: do not read them).
        ssh_config: the ssh_config completing how hosts are reached (None: none).

    Returns:
        The resolved inventory.

    Raises:
        ConfigError: on a syntax error, an undefined group, an unsafe name or value, or a
            password; the key gives the line and section (``line 7 [web:vars] ansible_port``).
    """
    parser = _IniParser(file, ssh_config)
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and stripped[0] not in "#;":
            parser.feed(number, stripped)
    parser.check_references()
    return _finish(parser.raw, base_dir)


# --------------------------------------------------------------------------- YAML


def _yaml_group(raw: RawInventory, name: Any, data: Any, path: str) -> str | None:
    if data is not None and not isinstance(data, dict):
        _log.warning("inventory.skipped_group", file=raw.file, key=path, reason="not a mapping")
        return None
    group = raw.group(name, path).name
    if data is None:
        return group
    for section in ("vars", "children", "hosts"):
        value = data.get(section)
        if isinstance(value, str):
            data[section] = {value: None}
        elif value is not None and not isinstance(value, dict):
            raise raw.error(
                f"{section!r} of group {group!r} must be a mapping, got {type(value).__name__}",
                f"{path}.{section}",
            )
    for key, value in data.items():
        where = f"{path}.{key}"
        if value is None:
            continue
        if key == "vars":
            for var, var_value in value.items():
                _set_group_var(raw, group, var, var_value, f"{where}.{var}")
        elif key == "children":
            for child_name, child_data in value.items():
                child = _yaml_group(raw, child_name, child_data, f"{where}.{child_name}")
                if child is not None:
                    raw.add_child(group, child, f"{where}.{child_name}")
        elif key == "hosts":
            for pattern, host_vars in value.items():
                host_where = f"{where}.{pattern}"
                if host_vars is not None and not isinstance(host_vars, dict):
                    raise raw.error(
                        f"host variables must be a mapping, got {type(host_vars).__name__}",
                        host_where,
                    )
                _add_hosts(raw, pattern, group, host_vars or {}, host_where, host_where + ".")
        else:
            _log.warning(
                "inventory.skipped_key",
                file=raw.file,
                key=where,
                reason="only 'hosts', 'vars' and 'children' are valid in a group",
            )
    return group


def parse_ansible_yaml(
    data: Any,
    *,
    file: str,
    base_dir: Path | None = None,
    ssh_config: SSHConfigFile | None = None,
) -> Inventory:
    """Resolve a parsed Ansible YAML inventory.

    Args:
        data: the YAML document (top-level keys are groups, usually just ``all``).
        file: its name, for error messages.
        base_dir: the directory holding ``group_vars/``/``host_vars/`` (None: do not read them).
        ssh_config: the ssh_config completing how hosts are reached (None: none).

    Returns:
        The resolved inventory.

    Raises:
        ConfigError: on a structural error, an unsafe name or value, or a password; the key is
            the path in the document (``all.children.web.hosts.web1.ansible_port``).
    """
    if not data:
        raise ConfigError("the YAML inventory is empty", file=file)
    if not isinstance(data, dict):
        raise ConfigError(
            f"a YAML inventory must be a mapping of groups, got {type(data).__name__}", file=file
        )
    if data.get("plugin"):
        raise ConfigError(
            "this is an inventory plugin configuration, not an inventory; run "
            "'ansible-inventory -i FILE --list -y' and load that output instead",
            file=file,
            key="plugin",
        )
    raw = _new_raw(file, "ansible-yaml", ssh_config)
    try:
        for name, group_data in data.items():
            _yaml_group(raw, name, group_data, str(name))
    except RecursionError as exc:
        raise ConfigError("groups are nested too deeply", file=file) from exc
    return _finish(raw, base_dir)


# --------------------------------------------------------------------------- JSON (--list)


def looks_like_ansible_json(data: Any) -> bool:
    """Whether a parsed document is ``ansible-inventory --list`` output (or a dynamic
    inventory script's): a ``_meta`` key, or groups whose ``hosts``/``children`` are lists."""
    if not isinstance(data, dict) or not data:
        return False
    if "_meta" in data:
        return True
    return any(
        isinstance(value, list)
        or (
            isinstance(value, dict)
            and (isinstance(value.get("hosts"), list) or isinstance(value.get("children"), list))
        )
        for value in data.values()
    )


def _unvault(value: Any) -> Any:
    """``{"__ansible_vault": "..."}`` (how ansible-inventory prints a vaulted value)."""
    if isinstance(value, dict) and set(value) == {"__ansible_vault"}:
        return Vaulted(str(value["__ansible_vault"]))
    return value


def _json_list(raw: RawInventory, value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise raw.error(f"expected a list, got {type(value).__name__}", where)
    return value


def parse_ansible_json(
    data: Any, *, file: str, ssh_config: SSHConfigFile | None = None
) -> Inventory:
    """Resolve ``ansible-inventory --list`` JSON (also ``--export``, and dynamic inventory
    scripts' ``--list`` output).

    The document maps group names to ``{"hosts": [...], "children": [...], "vars": {...}}``
    (a bare list of hosts is a group too), and ``_meta.hostvars`` maps each host to its
    variables, which Ansible has already merged from every group (``--export`` keeps group
    ``vars`` in the groups instead; both are read, with Ansible's precedence).

    Args:
        data: the parsed document.
        file: its name (``<stdin>`` for standard input), for error messages.
        ssh_config: the ssh_config completing how hosts are reached (None: none).

    Returns:
        The resolved inventory.

    Raises:
        ConfigError: on a structural error, an unsafe name or value, or a password; the key is
            the path in the document (``_meta.hostvars.web1.ansible_port``).
    """
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            "ansible-inventory --list output must be a non-empty JSON object", file=file
        )
    raw = _new_raw(file, "ansible-json", ssh_config)
    meta = data.get("_meta", {})
    if not isinstance(meta, dict):
        raise raw.error("'_meta' must be an object", "_meta")
    hostvars = meta.get("hostvars", {})
    if not isinstance(hostvars, dict):
        raise raw.error("'_meta.hostvars' must be an object", "_meta.hostvars")
    for name, written in data.items():
        if name == "_meta" or written is None:
            continue
        group = raw.group(name, str(name)).name
        entry = {"hosts": written} if isinstance(written, list) else written
        if not isinstance(entry, dict):
            raise raw.error(f"group {group!r} must be an object or a list of hosts", group)
        for key in entry:
            if key not in ("hosts", "children", "vars"):
                _log.warning(
                    "inventory.skipped_key",
                    file=raw.file,
                    key=f"{group}.{key}",
                    reason="only 'hosts', 'vars' and 'children' are valid in a group",
                )
        variables = entry.get("vars") or {}
        if not isinstance(variables, dict):
            raise raw.error("'vars' must be an object", f"{group}.vars")
        for key, value in variables.items():
            _set_group_var(raw, group, key, _unvault(value), f"{group}.vars.{key}")
        for index, member in enumerate(_json_list(raw, entry.get("hosts"), f"{group}.hosts")):
            host = raw.host(member, f"{group}.hosts[{index}]")
            raw.add_member(group, host.name)
        children = _json_list(raw, entry.get("children"), f"{group}.children")
        for index, child in enumerate(children):
            where = f"{group}.children[{index}]"
            raw.add_child(group, raw.group(child, where).name, where)
    for name, values in hostvars.items():
        where = f"_meta.hostvars.{name}"
        if name not in raw.hosts:
            _log.debug("inventory.hostvars_without_host", file=raw.file, host=name)
            continue
        if not isinstance(values, dict):
            raise raw.error("host variables must be an object", where)
        target = raw.hosts[name].vars
        for key, value in values.items():
            _set_var(raw, target, key, _unvault(value), f"{where}.{key}")
    return _finish(raw, None)


# --------------------------------------------------------------------------- vars dirs


def _vars_files(directory: Path, name: str) -> list[Path]:
    for ext in _VARS_EXTENSIONS:
        candidate = directory / f"{name}{ext}"
        if candidate.is_dir():
            return _dir_vars_files(candidate)
        if candidate.exists():
            return [candidate]
    return []


def _dir_vars_files(directory: Path) -> list[Path]:
    found: list[Path] = []
    for entry in sorted(directory.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir() and not entry.suffix:
            found.extend(_dir_vars_files(entry))
        elif entry.is_file() and entry.suffix in _VARS_EXTENSIONS:
            found.append(entry)
    return found


def _read_vars_file(raw: RawInventory, path: Path, label: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise raw.error(f"cannot read vars file: {exc}", label, exc) from exc
    if text.lstrip().startswith(_VAULT_HEADER):
        _log.warning(
            "inventory.vault_file_skipped",
            file=raw.file,
            vars_file=str(path),
            reason="vault-encrypted vars files cannot be read; their variables are ignored",
        )
        return {}
    data = load_yaml(text, file=str(path), strict_keys=False)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise raw.error(f"a vars file must be a mapping, got {type(data).__name__}", label)
    return data


def _read_vars_dirs(raw: RawInventory, base_dir: Path) -> None:
    targets: list[tuple[str, dict[str, Var], str]] = [
        ("group_vars", group.file_vars, group.name) for group in raw.groups.values()
    ]
    targets += [("host_vars", host.file_vars, host.name) for host in raw.hosts.values()]
    for subdir, target, name in targets:
        directory = base_dir / subdir
        if not directory.is_dir():
            continue
        for path in _vars_files(directory, name):
            label = os.path.relpath(path, base_dir)
            for key, value in _read_vars_file(raw, path, label).items():
                _set_var(raw, target, key, value, f"{label}: {key}")

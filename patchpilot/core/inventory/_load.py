"""Reading an inventory file (or standard input): format detection and dispatch to the parsers."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import structlog

from patchpilot.core.errors import ConfigError
from patchpilot.core.inventory._ansible import (
    looks_like_ansible_json,
    parse_ansible_ini,
    parse_ansible_json,
    parse_ansible_yaml,
)
from patchpilot.core.inventory._model import Inventory
from patchpilot.core.inventory._native import parse_native
from patchpilot.core.inventory._reach import SSHConfigFile
from patchpilot.core.inventory._yaml import load_yaml

if TYPE_CHECKING:
    from patchpilot.core.settings import SSHSettings

__all__ = [
    "STDIN",
    "InventoryFormat",
    "detect_format",
    "load_inventory",
    "parse_inventory",
]

_log = structlog.get_logger(__name__)

InventoryFormat = Literal["auto", "patchpilot", "ansible-ini", "ansible-yaml", "ansible-json"]
DetectedFormat = Literal["patchpilot", "ansible-ini", "ansible-yaml", "ansible-json"]
STDIN: Final = "-"
"""The inventory "path" that means standard input (``--inventory -``)."""
_FORMATS: Final = get_args(InventoryFormat)
#: Refuse inventory files larger than this (an inventory is configuration, not data).
MAX_INVENTORY_BYTES: Final = 8 * 1024 * 1024

_YAML_SUFFIXES: Final = frozenset({".yaml", ".yml", ".json"})
_INI_SUFFIXES: Final = frozenset({".ini", ".cfg", ".hosts"})
_NATIVE_KEYS: Final = frozenset({"defaults", "hosts", "groups"})
_ANSIBLE_GROUP_KEYS: Final = frozenset({"hosts", "vars", "children"})
_INI_SECTION_LINE = re.compile(r"^\s*\[[^\]\s]+\]\s*(?:[#;].*)?$")


def _looks_like_ini(text: str) -> bool:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and stripped[0] not in "#;":
            return bool(_INI_SECTION_LINE.match(stripped))
    return False


def _json_document(text: str) -> Any:
    """The parsed JSON document, or None when ``text`` is not a JSON object."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _classify_yaml(data: Any, file: str) -> Literal["patchpilot", "ansible-yaml", "ansible-json"]:
    if looks_like_ansible_json(data):
        return "ansible-json"
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            "cannot tell the inventory format: the YAML document is not a mapping "
            "(pass format='patchpilot', 'ansible-yaml' or 'ansible-ini')",
            file=file,
        )
    if "all" in data:
        return "ansible-yaml"
    if all(
        value is None or (isinstance(value, dict) and set(value) <= _ANSIBLE_GROUP_KEYS)
        for value in data.values()
    ) and any(isinstance(value, dict) and value for value in data.values()):
        return "ansible-yaml"
    if "hosts" in data or set(data) <= _NATIVE_KEYS:
        return "patchpilot"
    raise ConfigError(
        "cannot tell the inventory format: expected a top-level 'hosts' mapping (patchpilot) "
        "or 'all:'/groups with 'hosts'/'children' (Ansible YAML); pass format= to choose",
        file=file,
    )


def detect_format(text: str, file: str = "<string>") -> DetectedFormat:
    """Tell which format an inventory is written in.

    Rules, in order:

    1. a ``.ini``/``.cfg``/``.hosts`` file is Ansible INI;
    2. a JSON object with a ``_meta`` key, or whose groups list their ``hosts``/``children``
       (``ansible-inventory --list`` output, whatever the file name), is Ansible JSON;
    3. a ``.yaml``/``.yml``/``.json`` file is YAML;
    4. otherwise, a file whose first non-comment line is an INI section header (``[web]``) is
       Ansible INI, one that parses as a YAML mapping is YAML, and anything else is Ansible INI
       (a bare list of host names is a valid INI inventory);
    5. YAML with a top-level ``all:``, or whose top-level values are all group definitions
       (mappings of ``hosts``/``vars``/``children``), is Ansible YAML; YAML with a top-level
       ``hosts:`` mapping is patchpilot's format.

    Args:
        text: the file content.
        file: the file name (its extension counts).

    Returns:
        ``"patchpilot"``, ``"ansible-ini"``, ``"ansible-yaml"`` or ``"ansible-json"``.

    Raises:
        ConfigError: when a YAML document fits neither YAML format, or does not parse.
    """
    suffix = Path(file).suffix.lower()
    if suffix in _INI_SUFFIXES:
        return "ansible-ini"
    if looks_like_ansible_json(_json_document(text)):
        return "ansible-json"
    if suffix not in _YAML_SUFFIXES and _looks_like_ini(text):
        return "ansible-ini"
    if suffix in _YAML_SUFFIXES:
        return _classify_yaml(load_yaml(text, file=file, strict_keys=False), file)
    try:
        data = load_yaml(text, file=file, strict_keys=False)
    except ConfigError:
        return "ansible-ini"
    if not isinstance(data, dict):
        return "ansible-ini"
    return _classify_yaml(data, file)


def parse_inventory(
    text: str,
    *,
    format: InventoryFormat = "auto",
    file: str = "<string>",
    base_dir: Path | None = None,
    ssh_config: SSHConfigFile | None = None,
) -> Inventory:
    """Parse inventory text.

    Args:
        text: the inventory content.
        format: the format, or ``"auto"`` to detect it (see :func:`detect_format`).
        file: the file name used in messages and for detection by extension.
        base_dir: for Ansible INI/YAML, the directory whose ``group_vars/``/``host_vars/`` are
            read (None: none are read; ``ansible-inventory --list`` output has them merged).
        ssh_config: the ssh_config completing how hosts are reached (None: none is read).

    Returns:
        The resolved inventory.

    Raises:
        ConfigError: on any error, naming the file, the key path and the reason.
    """
    if format not in _FORMATS:
        raise ConfigError(f"unknown inventory format {format!r} (one of {', '.join(_FORMATS)})")
    chosen = detect_format(text, file) if format == "auto" else format
    if chosen == "ansible-ini":
        return parse_ansible_ini(text, file=file, base_dir=base_dir, ssh_config=ssh_config)
    if chosen == "ansible-json":
        data = _json_document(text)
        if data is None:
            data = load_yaml(text, file=file, strict_keys=False)
        return parse_ansible_json(data, file=file, ssh_config=ssh_config)
    data = load_yaml(text, file=file, strict_keys=chosen == "patchpilot")
    if chosen == "ansible-yaml":
        return parse_ansible_yaml(data, file=file, base_dir=base_dir, ssh_config=ssh_config)
    return parse_native(data, file, ssh_config=ssh_config)


def _read_stdin() -> str:
    data = sys.stdin.buffer.read(MAX_INVENTORY_BYTES + 1)
    if len(data) > MAX_INVENTORY_BYTES:
        raise ConfigError(f"inventory is over the {MAX_INVENTORY_BYTES}-byte limit", file="<stdin>")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"inventory is not UTF-8 text: {exc.reason}", file="<stdin>") from exc


def load_inventory(
    path: str | os.PathLike[str],
    *,
    format: InventoryFormat = "auto",
    ssh: SSHSettings | None = None,
) -> Inventory:
    """Load an inventory file: patchpilot YAML, Ansible INI, YAML or ``--list`` JSON.

    For Ansible INI/YAML inventories, ``group_vars/`` and ``host_vars/`` beside the file are
    read as Ansible reads them. ``-`` reads standard input (any format; typically
    ``ansible-inventory -i SOURCE --list | patchpilot scan -i -``; no vars directories).

    Args:
        path: the inventory file, or ``-`` for standard input.
        format: the format, or ``"auto"`` to detect it from the extension and content (see
            :func:`detect_format`).
        ssh: SSH settings: with ``use_ssh_config`` on, ssh_config (``config_file``, default
            ``~/.ssh/config``) completes how each host is reached (None: it is not read).

    Returns:
        The resolved inventory, hosts in file order.

    Raises:
        ConfigError: when the file cannot be read or is invalid; the error names the file,
            the key path (``hosts.web-1.port``, ``line 7 [web]``…) and the reason. Unsafe names
            and addresses are reported this way too, with the
            :class:`~patchpilot.core.errors.UnsafeArgumentError` as the cause.
    """
    file = os.fspath(path)
    ssh_config = SSHConfigFile.from_settings(ssh) if ssh is not None else None
    if file == STDIN:
        inventory = parse_inventory(
            _read_stdin(), format=format, file="<stdin>", ssh_config=ssh_config
        )
        _log.info("inventory.loaded", file="<stdin>", format=inventory.format, hosts=len(inventory))
        return inventory
    target = Path(file)
    try:
        size = target.stat().st_size
        if size > MAX_INVENTORY_BYTES:
            raise ConfigError(
                f"inventory is {size} bytes, over the {MAX_INVENTORY_BYTES}-byte limit", file=file
            )
        text = target.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read inventory: {exc.strerror or exc}", file=file) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"inventory is not UTF-8 text: {exc.reason}", file=file) from exc
    inventory = parse_inventory(
        text, format=format, file=file, base_dir=target.resolve().parent, ssh_config=ssh_config
    )
    _log.info(
        "inventory.loaded",
        file=file,
        format=inventory.format,
        hosts=len(inventory.hosts),
        groups=len(inventory.groups),
        skipped=len(inventory.skipped),
    )
    return inventory

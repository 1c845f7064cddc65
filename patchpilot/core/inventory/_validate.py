"""Strict validation of the values an inventory feeds to SSH: names, addresses, users, paths.

Every value that may end up on an ``ssh`` command line or in a paramiko call is checked against
an allow-list pattern here, so that a hostile inventory entry (``-oProxyCommand=…``, ``a;rm``,
``$(id)``, whitespace) is refused before it can reach a transport. The validators raise
:class:`~patchpilot.core.errors.UnsafeArgumentError`; the inventory loader wraps that in a
:class:`~patchpilot.core.errors.ConfigError` naming the file and the key.
"""

from __future__ import annotations

import ipaddress
import os
import re

from patchpilot.core.errors import UnsafeArgumentError
from patchpilot.core.text import has_control

__all__ = [
    "KEYS_ONLY_REASON",
    "PASSWORD_KEYS",
    "is_password_key",
    "validate_address",
    "validate_group_name",
    "validate_host_name",
    "validate_key_file",
    "validate_owner",
    "validate_user",
]

#: Inventory names (hosts, groups, tags): letters, digits, ``.``, ``_``, ``-``; never a leading
#: ``-`` (it would read as an option) nor a leading ``.``.
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_NAME_MAX = 253
#: One DNS label (underscores tolerated: they occur in /etc/hosts and internal zones).
_LABEL_RE = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
_DOTTED_NUMBERS_RE = re.compile(r"^[0-9.]+$")
#: POSIX portable user names (no ``$`` suffix: it is a shell metacharacter).
_USER_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9._-]{0,31}$")
#: An IPv6 zone index (``fe80::1%eth0``): an interface name or number, nothing else. Python's
#: :mod:`ipaddress` accepts *any* text after ``%`` (escape sequences, ``$(…)``), so the zone is
#: checked here before the address is.
_ZONE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_ZONE_REASON = (
    "the IPv6 zone index (after '%') must be 1-15 characters of [A-Za-z0-9_.-] "
    "(an interface name or number)"
)
_OWNER_MAX = 200
_PATH_MAX = 4096

#: The reason given when an inventory holds a password.
KEYS_ONLY_REASON = (
    "passwords are not accepted in an inventory: patchpilot logs in with SSH keys only; "
    "remove this key and set key_file (ansible_ssh_private_key_file) or load the key into "
    "ssh-agent"
)

#: Variable names that would carry a password; any of them in an inventory is refused.
PASSWORD_KEYS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "pass",
        "become_pass",
        "become_password",
        "sudo_pass",
        "sudo_password",
        "ansible_password",
        "ansible_pass",
        "ansible_ssh_pass",
        "ansible_ssh_password",
        "ansible_become_pass",
        "ansible_become_password",
        "ansible_sudo_pass",
        "ansible_sudo_password",
        "ansible_su_pass",
        "ansible_su_password",
        "ansible_winrm_password",
        "ansible_httpapi_pass",
        "ansible_httpapi_password",
        "ansible_net_password",
    }
)


def is_password_key(key: object) -> bool:
    """Tell whether an inventory key names a password.

    Args:
        key: a mapping key or variable name read from an inventory.

    Returns:
        True for the password keys of :data:`PASSWORD_KEYS` (case-insensitive).
    """
    return isinstance(key, str) and key.strip().lower() in PASSWORD_KEYS


def _check_name(kind: str, value: object) -> str:
    if not isinstance(value, str):
        raise UnsafeArgumentError(kind, repr(value), "expected a string")
    if not value:
        raise UnsafeArgumentError(kind, value, "must not be empty")
    if len(value) > _NAME_MAX:
        raise UnsafeArgumentError(kind, value[:40] + "…", f"longer than {_NAME_MAX} characters")
    if value.startswith("-"):
        raise UnsafeArgumentError(
            kind, value, "must not start with '-' (it would read as an option)"
        )
    if not _NAME_RE.fullmatch(value):
        raise UnsafeArgumentError(
            kind,
            value,
            "only letters, digits, '.', '_' and '-' are allowed (no spaces or shell characters)",
        )
    return value


def _is_ip(value: str, kind: str) -> bool:
    """Whether ``value`` is an IPv4 or IPv6 address; an IPv6 zone index must be a plain name.

    Raises:
        UnsafeArgumentError: an IPv6 address whose zone index holds anything but
            ``[A-Za-z0-9_.-]`` (control characters, escape sequences, shell characters).
    """
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    _, percent, zone = value.partition("%")
    if percent and not _ZONE_RE.fullmatch(zone):
        raise UnsafeArgumentError(kind, value, _ZONE_REASON)
    return True


def validate_host_name(value: object) -> str:
    """Validate an inventory host name.

    A host name is a label of ``[A-Za-z0-9._-]`` not starting with ``-`` or ``.``, or an IPv6
    address (Ansible inventories may name hosts by address) whose zone index, if any, is
    ``[A-Za-z0-9_.-]``.

    Args:
        value: the candidate name.

    Returns:
        The name, unchanged.

    Raises:
        UnsafeArgumentError: when the name does not match.
    """
    if isinstance(value, str) and ":" in value and _is_ip(value, "host name"):
        return value
    return _check_name("host name", value)


def validate_group_name(value: object, kind: str = "group name") -> str:
    """Validate a group or tag name (``[A-Za-z0-9._-]``, not starting with ``-``/``.``).

    Args:
        value: the candidate name.
        kind: what the name is, for the error message ("group name", "tag").

    Returns:
        The name, unchanged.

    Raises:
        UnsafeArgumentError: when the name does not match.
    """
    return _check_name(kind, value)


def validate_address(value: object) -> str:
    """Validate a host address: an IPv4 or IPv6 address, or a DNS host name.

    An IPv6 zone index (``fe80::1%eth0``) must be 1-15 characters of ``[A-Za-z0-9_.-]``.

    Args:
        value: the candidate address.

    Returns:
        The address, unchanged.

    Raises:
        UnsafeArgumentError: when the value is none of the three, starts with ``-``, or holds
            whitespace or shell metacharacters.
    """
    if not isinstance(value, str):
        raise UnsafeArgumentError("address", repr(value), "expected a string")
    if "{{" in value or "{%" in value:
        raise UnsafeArgumentError(
            "address", value, "Jinja-templated values are not supported; write the address itself"
        )
    if _is_ip(value, "address"):
        return value
    _check_name("address", value)
    if ":" in value:
        raise UnsafeArgumentError("address", value, "not a valid IPv6 address")
    if _DOTTED_NUMBERS_RE.fullmatch(value):
        raise UnsafeArgumentError("address", value, "looks like an IPv4 address but is not one")
    labels = value.rstrip(".").split(".") if value != "." else [""]
    for label in labels:
        if not _LABEL_RE.fullmatch(label):
            raise UnsafeArgumentError(
                "address",
                value,
                f"{label!r} is not a valid DNS label (1-63 characters, no leading '-')",
            )
    return value


def validate_user(value: object) -> str:
    """Validate a remote user name against the POSIX portable pattern.

    Args:
        value: the candidate user name.

    Returns:
        The user name, unchanged.

    Raises:
        UnsafeArgumentError: when it is not ``[A-Za-z_][A-Za-z0-9._-]{0,31}``.
    """
    if not isinstance(value, str):
        raise UnsafeArgumentError("user name", repr(value), "expected a string")
    if "{{" in value or "{%" in value:
        raise UnsafeArgumentError("user name", value, "Jinja-templated values are not supported")
    if not _USER_RE.fullmatch(value):
        raise UnsafeArgumentError(
            "user name",
            value,
            "must start with a letter or '_' and hold at most 32 letters, digits, '.', '_' or '-'",
        )
    return value


def validate_key_file(value: object) -> str:
    """Validate an SSH private key path and expand a leading ``~``.

    Args:
        value: the configured path.

    Returns:
        The path with ``~``/``~user`` expanded.

    Raises:
        UnsafeArgumentError: when the path is empty, too long, holds control characters or a
            Jinja template, or starts with ``-``.
    """
    if not isinstance(value, str):
        raise UnsafeArgumentError("key file", repr(value), "expected a string path")
    if not value.strip():
        raise UnsafeArgumentError("key file", value, "must not be empty")
    if len(value) > _PATH_MAX or has_control(value, newlines=False):
        raise UnsafeArgumentError("key file", value[:60], "too long or holds control characters")
    if "{{" in value or "{%" in value:
        raise UnsafeArgumentError("key file", value, "Jinja-templated values are not supported")
    if value.startswith("-"):
        raise UnsafeArgumentError("key file", value, "must not start with '-'")
    return os.path.expanduser(value)


def validate_owner(value: object) -> str:
    """Validate a free-text owner (team, e-mail): a non-empty single line of bounded length.

    Args:
        value: the candidate owner.

    Returns:
        The owner with surrounding whitespace removed.

    Raises:
        UnsafeArgumentError: when it is empty, too long or holds control characters.
    """
    if not isinstance(value, str):
        raise UnsafeArgumentError("owner", repr(value), "expected a string")
    text = value.strip()
    if not text or len(text) > _OWNER_MAX or has_control(text, newlines=False):
        raise UnsafeArgumentError(
            "owner",
            value[:60],
            f"must be one non-empty line of at most {_OWNER_MAX} characters, without control "
            "characters (escape sequences, bidirectional overrides)",
        )
    return text

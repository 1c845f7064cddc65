"""Strict validators for every value that may reach a remote command line.

Transports already pass argv lists (never shell strings) and quote each element, so these
validators are a second, independent line of defence: a package name, version, host or user that
does not look exactly like one is refused with :class:`UnsafeArgumentError` before it is used at
all. Every accepted value is printable ASCII, contains no whitespace and no shell
metacharacter (``$ ` ; & | < > ( ) { } [ ] * ? ! # ' " \\``), and never starts with ``-`` (so it
cannot be taken for an option) or ``~``.

Each validator returns the value unchanged when it is accepted, so it can be used inline::

    argv = ["apt-get", "install", "-y", "--", validate_pin("openssl=3.0.15-1~deb12u1", "debian")]
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final

from packaging.utils import InvalidName, canonicalize_name

from patchpilot.core import versions
from patchpilot.core.errors import InvalidVersionError, UnsafeArgumentError
from patchpilot.core.models import Ecosystem

__all__ = [
    "MAX_HOSTNAME_LENGTH",
    "MAX_NAME_LENGTH",
    "MAX_PATH_LENGTH",
    "MAX_SERVICE_LENGTH",
    "MAX_USER_LENGTH",
    "MAX_VERSION_LENGTH",
    "split_pin",
    "validate_hostname",
    "validate_package_name",
    "validate_path",
    "validate_pin",
    "validate_service_name",
    "validate_user",
    "validate_version",
]

MAX_NAME_LENGTH: Final = 255
"""Longest package name accepted, in characters."""
MAX_VERSION_LENGTH: Final = 255
"""Longest version string accepted, in characters."""
MAX_HOSTNAME_LENGTH: Final = 253
"""Longest DNS name accepted (RFC 1035), without a trailing dot."""
MAX_USER_LENGTH: Final = 32
"""Longest user name accepted (the Linux ``useradd`` limit)."""
MAX_PATH_LENGTH: Final = 4096
"""Longest path accepted (Linux ``PATH_MAX``)."""
MAX_SERVICE_LENGTH: Final = 255
"""Longest service name accepted (systemd's unit-name limit)."""

# --------------------------------------------------------------------------- package names

_DEBIAN_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
_DEBIAN_ARCH = re.compile(r"[a-z0-9][a-z0-9-]*")
_RPM_NAME = re.compile(r"[A-Za-z0-9_+][A-Za-z0-9._+-]*")
# apk-tools: letters, digits and ._+- ; must start with a letter or digit.
_ALPINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
# PEP 508 / packaging's name rule.
_PYPI_NAME = re.compile(r"[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9._-]*[A-Za-z0-9]")

# --------------------------------------------------------------------------- versions

# Shell-inert characters only, and not starting with "~" (tilde expansion in an unquoted word).
_VERSION_CHARS = re.compile(r"[A-Za-z0-9._+^:-][A-Za-z0-9._+~^:-]*")

# --------------------------------------------------------------------------- hosts, users, paths

_DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_IPV6_SCOPE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_PATH = re.compile(r"/[A-Za-z0-9._+@%=:,/-]*")
_SERVICE = re.compile(r"[A-Za-z0-9@._][A-Za-z0-9@._-]*")


def _ecosystem(ecosystem: Ecosystem | str) -> Ecosystem:
    try:
        return Ecosystem(ecosystem)
    except ValueError:
        raise UnsafeArgumentError(
            "ecosystem", str(ecosystem), f"expected one of {', '.join(e.value for e in Ecosystem)}"
        ) from None


def _common(kind: str, value: str, max_length: int) -> None:
    """Checks shared by every validator: a non-empty str, bounded, no leading '-'."""
    if not isinstance(value, str):
        raise UnsafeArgumentError(kind, repr(value), "expected a string")
    if not value:
        raise UnsafeArgumentError(kind, value, "is empty")
    if len(value) > max_length:
        raise UnsafeArgumentError(
            kind, value[:64] + "…", f"longer than {max_length} characters ({len(value)})"
        )
    if value.startswith("-"):
        raise UnsafeArgumentError(kind, value, "starts with '-' (would be read as an option)")


def validate_package_name(name: str, ecosystem: Ecosystem | str) -> str:
    """Validate a package name for its ecosystem.

    Rules: Debian ``[a-z0-9][a-z0-9+.-]+`` with an optional ``:arch`` qualifier; RPM
    ``[A-Za-z0-9_+][A-Za-z0-9._+-]*``; Alpine ``[A-Za-z0-9][A-Za-z0-9._+-]*``; PyPI the PEP 508
    name rule (no extras, no specifiers).

    Args:
        name: the package name.
        ecosystem: the package ecosystem (an :class:`Ecosystem` or its value).

    Returns:
        ``name``, unchanged.

    Raises:
        UnsafeArgumentError: the name does not match the ecosystem's rule or is too long.
    """
    eco = _ecosystem(ecosystem)
    kind = f"{eco.value} package name"
    _common(kind, name, MAX_NAME_LENGTH)
    if eco is Ecosystem.DEBIAN:
        base, sep, arch = name.partition(":")
        if not _DEBIAN_NAME.fullmatch(base):
            raise UnsafeArgumentError(
                kind, name, "Debian names are [a-z0-9][a-z0-9+.-]+ (at least two characters)"
            )
        if sep and not _DEBIAN_ARCH.fullmatch(arch):
            raise UnsafeArgumentError(kind, name, "the :arch qualifier must be [a-z0-9][a-z0-9-]*")
    elif eco is Ecosystem.RPM:
        if not _RPM_NAME.fullmatch(name):
            raise UnsafeArgumentError(kind, name, "RPM names are [A-Za-z0-9_+][A-Za-z0-9._+-]*")
    elif eco is Ecosystem.ALPINE:
        if not _ALPINE_NAME.fullmatch(name):
            raise UnsafeArgumentError(kind, name, "apk names are [A-Za-z0-9][A-Za-z0-9._+-]*")
    elif not _PYPI_NAME.fullmatch(name):
        raise UnsafeArgumentError(kind, name, "not a PEP 508 distribution name")
    else:
        try:
            canonicalize_name(name, validate=True)
        except InvalidName as exc:  # pragma: no cover - the regex is the same rule
            raise UnsafeArgumentError(kind, name, str(exc)) from None
    return name


def validate_version(version: str, ecosystem: Ecosystem | str) -> str:
    """Validate a version string for its ecosystem.

    Two checks: the characters are shell-inert (``[A-Za-z0-9._+~^:-]``, so PyPI epochs with
    ``!`` are refused), and the ecosystem's own grammar accepts it
    (:func:`patchpilot.core.versions.validate`:
    dpkg's rules for Debian, rpm's for RPM, apk-tools' for Alpine, PEP 440 for PyPI).

    Args:
        version: the version string.
        ecosystem: the package ecosystem.

    Returns:
        ``version``, unchanged.

    Raises:
        UnsafeArgumentError: the version is malformed for the ecosystem or too long.
    """
    eco = _ecosystem(ecosystem)
    kind = f"{eco.value} version"
    _common(kind, version, MAX_VERSION_LENGTH)
    if not _VERSION_CHARS.fullmatch(version):
        raise UnsafeArgumentError(kind, version, "versions may only use [A-Za-z0-9._+~^:-]")
    try:
        versions.validate(eco, version)
    except InvalidVersionError as exc:
        reason = str(exc).split(": ", 1)[-1] if ": " in str(exc) else "malformed"
        raise UnsafeArgumentError(kind, version, reason) from None
    return version


def validate_pin(pin: str, ecosystem: Ecosystem | str) -> str:
    """Validate a ``name=version`` pin (``name==version`` is also accepted for PyPI).

    Args:
        pin: the pin, e.g. ``openssl=3.0.15-1~deb12u1`` or ``libc6:amd64=2.36-9+deb12u9``.
        ecosystem: the package ecosystem.

    Returns:
        ``pin``, unchanged.

    Raises:
        UnsafeArgumentError: the pin has no ``=``, or its name or version is refused.
    """
    eco = _ecosystem(ecosystem)
    kind = f"{eco.value} pin"
    _common(kind, pin, MAX_NAME_LENGTH + MAX_VERSION_LENGTH + 2)
    name, sep, version = pin.partition("=")
    if not sep:
        raise UnsafeArgumentError(kind, pin, "expected name=version")
    if eco is Ecosystem.PYPI and version.startswith("="):
        version = version[1:]
    validate_package_name(name, eco)
    validate_version(version, eco)
    return pin


def split_pin(pin: str, ecosystem: Ecosystem | str) -> tuple[str, str]:
    """Validate a pin (see :func:`validate_pin`) and split it into ``(name, version)``.

    Args:
        pin: the ``name=version`` pin.
        ecosystem: the package ecosystem.

    Returns:
        The package name and the version.

    Raises:
        UnsafeArgumentError: the pin is refused.
    """
    validate_pin(pin, ecosystem)
    name, _, version = pin.partition("=")
    return name, version.removeprefix("=")


def validate_hostname(value: str) -> str:
    """Validate a host address: a DNS name, an IPv4 address or an IPv6 address.

    DNS names are dot-separated labels of ``[A-Za-z0-9_-]`` (1-63 characters, not starting or
    ending with ``-``; an all-numeric last label is refused so ``1.2.3.999`` is not a name), at
    most 253 characters, with an optional trailing dot. IPv6 addresses are written without
    brackets; a zone index (``fe80::1%eth0``, ``fe80::1%br-lan``, ``fe80::1%2``) must be 1-15
    characters of ``[A-Za-z0-9_.-]`` (an interface name or number): anything else, escape
    sequences and ``$(…)`` included, is refused.

    Args:
        value: the host name or address.

    Returns:
        ``value``, unchanged.

    Raises:
        UnsafeArgumentError: the value is not a host name or address.
    """
    kind = "host name"
    _common(kind, value, MAX_HOSTNAME_LENGTH + 1)
    if ":" in value:
        address, _, scope = value.partition("%")
        if "%" in value and not _IPV6_SCOPE.fullmatch(scope):
            raise UnsafeArgumentError(
                kind,
                value,
                "the IPv6 zone index (after '%') must be 1-15 characters of [A-Za-z0-9_.-] "
                "(an interface name or number)",
            )
        try:
            ipaddress.IPv6Address(address)
        except ValueError:
            raise UnsafeArgumentError(kind, value, "not a valid IPv6 address") from None
        return value
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        pass
    else:
        return value
    name = value.removesuffix(".")
    if not name or len(name) > MAX_HOSTNAME_LENGTH:
        raise UnsafeArgumentError(kind, value, f"DNS names are 1-{MAX_HOSTNAME_LENGTH} characters")
    labels = name.split(".")
    for label in labels:
        if not _DNS_LABEL.fullmatch(label):
            raise UnsafeArgumentError(
                kind, value, f"label {label!r} is not 1-63 characters of [A-Za-z0-9_-]"
            )
    if labels[-1].isdigit():
        raise UnsafeArgumentError(kind, value, "not a valid IPv4 address nor a DNS name")
    return value


def validate_user(value: str) -> str:
    """Validate a POSIX user name: ``[A-Za-z_][A-Za-z0-9_.-]*``, at most 32 characters.

    Args:
        value: the user name.

    Returns:
        ``value``, unchanged.

    Raises:
        UnsafeArgumentError: the value is not a portable user name.
    """
    kind = "user name"
    _common(kind, value, MAX_USER_LENGTH)
    if not _USER.fullmatch(value):
        raise UnsafeArgumentError(kind, value, "user names are [A-Za-z_][A-Za-z0-9_.-]*")
    return value


def validate_path(value: str) -> str:
    """Validate an absolute file path made of conservative characters.

    Accepted: absolute paths of ``[A-Za-z0-9._+@%=:,/-]`` with no ``.``/``..`` component,
    at most 4096 characters. Whitespace, newlines, NUL and shell metacharacters are refused.

    Args:
        value: the path.

    Returns:
        ``value``, unchanged.

    Raises:
        UnsafeArgumentError: the path is relative, too long or has a refused character.
    """
    kind = "path"
    _common(kind, value, MAX_PATH_LENGTH)
    if not value.startswith("/"):
        raise UnsafeArgumentError(kind, value, "must be absolute")
    if "\x00" in value or "\n" in value:
        raise UnsafeArgumentError(kind, value, "contains a NUL byte or a newline")
    if not _PATH.fullmatch(value):
        raise UnsafeArgumentError(kind, value, "paths are limited to [A-Za-z0-9._+@%=:,/-]")
    if any(part in {".", ".."} for part in value.split("/")):
        raise UnsafeArgumentError(kind, value, "'.' and '..' components are refused")
    return value


def validate_service_name(value: str) -> str:
    """Validate a service (init script or systemd unit) name: ``[A-Za-z0-9@._-]``, no leading ``-``.

    Accepts ``acme-web``, ``ssh``, ``nginx.service`` and templated units such as
    ``getty@tty1.service``; refuses whitespace, ``/`` (no paths: ``service`` looks the name up in
    ``/etc/init.d`` itself), shell metacharacters and names made only of dots (``.``, ``..``).

    Args:
        value: the service name.

    Returns:
        ``value``, unchanged.

    Raises:
        UnsafeArgumentError: the value is not a plain service name.
    """
    kind = "service name"
    _common(kind, value, MAX_SERVICE_LENGTH)
    if not _SERVICE.fullmatch(value):
        raise UnsafeArgumentError(
            kind, value, "service names are [A-Za-z0-9@._-], not starting '-'"
        )
    if set(value) == {"."}:
        raise UnsafeArgumentError(kind, value, "a name made only of dots is refused")
    return value

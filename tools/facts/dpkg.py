"""Installed Debian/Ubuntu packages from ``dpkg-query``."""

from __future__ import annotations

import re
from typing import ClassVar, Final

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import Ecosystem, InstalledPackage
from patchpilot.tools.facts.base import TabularPackageFact

__all__ = [
    "DPKG_KEPT_STATES",
    "DpkgPackages",
    "parse_dpkg_source_field",
    "split_epoch",
]

# ${source:Package} / ${source:Version} are virtual fields computed by dpkg itself (from the
# Source: field, defaulting to the binary's name/version); they exist since dpkg 1.16.2, like
# ${binary:Package} and ${db:Status-Abbrev}. Verified on dpkg 1.21.22 (Debian 12).
_FORMAT: Final = (
    "${binary:Package}\\t${db:Status-Abbrev}\\t${Version}\\t${Architecture}"
    "\\t${source:Package}\\t${source:Version}\\n"
)
_FIELDS: Final = 6

DPKG_KEPT_STATES: Final = frozenset("itW")
"""Second letter of ``db:Status-Abbrev`` (the *current* state) that counts as installed.

``i`` installed, ``t`` triggers-pending and ``W`` triggers-awaited: the package is unpacked
and configured, so its files are the listed version. Dropped: ``n`` not-installed, ``c``
config-files (``rc``), ``H`` half-installed, ``U`` unpacked, ``F`` half-configured. This is
Vuls' rule (keep current state ``i``) widened to the two trigger states, which are transient
states of fully configured packages.
"""

_STATUS_RE: Final = re.compile(r"^[uihrp][ncHUFWti][ R]$")
_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9+._-]*$")
_VERSION_RE: Final = re.compile(r"^(?:(\d+):)?[A-Za-z0-9.+~:-]+$")
_SOURCE_FIELD_RE: Final = re.compile(
    r"^(?P<name>[A-Za-z0-9][A-Za-z0-9+._-]*)(?:\s+\((?P<version>[A-Za-z0-9.+~:-]+)\))?$"
)


def split_epoch(version: str) -> int | None:
    """Return the epoch of a Debian version (``1:2.38-5`` -> 1), ``None`` when it has none."""
    head, sep, _ = version.partition(":")
    if sep and head.isdigit():
        return int(head)
    return None


def parse_dpkg_source_field(value: str) -> tuple[str, str | None]:
    """Parse a control-file ``Source:`` value: ``name`` or ``name (version)``.

    The version is present when the source version differs from the binary's (binNMUs such
    as ``bash 5.2.15-2+b8`` built from ``bash (5.2.15-2)``). :class:`DpkgPackages` does not
    need this (dpkg computes ``${source:Package}``/``${source:Version}``); it serves readers of
    ``/var/lib/dpkg/status`` or ``${Source}`` output.

    Args:
        value: the ``Source:`` field value.

    Returns:
        ``(name, version)``; ``version`` is ``None`` when the field names no version.

    Raises:
        FactParseError: the value is not ``name`` or ``name (version)``.
    """
    match = _SOURCE_FIELD_RE.match(value.strip())
    if match is None:
        raise FactParseError("dpkg Source field", "expected 'name' or 'name (version)'", line=value)
    return match["name"], match["version"]


class DpkgPackages(TabularPackageFact):
    """Installed packages of a Debian-family host, one record per installed binary package.

    Runs ``dpkg-query -W -f='${binary:Package}\\t${db:Status-Abbrev}\\t${Version}\\t
    ${Architecture}\\t${source:Package}\\t${source:Version}\\n'`` and keeps the rows whose
    current state is in :data:`DPKG_KEPT_STATES`. The ``:arch`` multi-arch suffix is stripped
    from the name (the architecture stays in ``arch``).

    Returns:
        ``list[InstalledPackage]`` in dpkg order, each with ``name``, ``version`` (verbatim,
        epoch included), ``arch``, ``source_name``, ``source_version``, ``epoch`` (``None``
        when the version has no ``N:`` prefix), ``state=installed``, ``ecosystem=debian``.
        Example: ``InstalledPackage(name="bash", version="5.2.15-2+b8", arch="amd64",
        source_name="bash", source_version="5.2.15-2", ecosystem=Ecosystem.DEBIAN)``.

    Raises:
        FactParseError: a row has the wrong number of fields, an unknown status, an empty or
            malformed name/version, or no package is installed at all.
        CommandFailedError: ``dpkg-query`` exited non-zero.
    """

    name: ClassVar[str] = "DpkgPackages"
    fields: ClassVar[int] = _FIELDS

    def command(self) -> list[str]:
        """Return the ``dpkg-query -W -f=...`` argv."""
        return ["dpkg-query", "-W", "-f=" + _FORMAT]

    def parse_fields(self, values: list[str], line: str) -> InstalledPackage | None:
        """Map one row to a package (``None``: not an installed package)."""
        fields = values
        binary, status, version, arch, src_name, src_version = fields
        if not _STATUS_RE.match(status):
            raise FactParseError(self.name, f"unknown status abbreviation {status!r}", line=line)
        if status[1] not in DPKG_KEPT_STATES:
            return None
        name, _, arch_suffix = binary.partition(":")
        if arch_suffix and arch_suffix != arch:
            raise FactParseError(
                self.name, "multi-arch suffix differs from Architecture", line=line
            )
        for label, value, pattern in (
            ("package name", name, _NAME_RE),
            ("source package name", src_name, _NAME_RE),
            ("version", version, _VERSION_RE),
            ("source version", src_version, _VERSION_RE),
        ):
            if not pattern.match(value):
                raise FactParseError(self.name, f"malformed {label} {value!r}", line=line)
        if not arch or any(ch.isspace() for ch in arch):
            raise FactParseError(self.name, f"malformed architecture {arch!r}", line=line)
        return InstalledPackage(
            name=name,
            version=version,
            arch=arch,
            source_name=src_name,
            source_version=src_version,
            ecosystem=Ecosystem.DEBIAN,
            epoch=split_epoch(version),
        )

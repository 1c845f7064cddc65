"""Installed RPM packages (RHEL, Rocky, AlmaLinux, Oracle Linux, Fedora, Amazon Linux)."""

from __future__ import annotations

import re
from typing import ClassVar, Final, NamedTuple

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import Ecosystem, InstalledPackage
from patchpilot.tools.facts.base import TabularPackageFact

__all__ = ["RpmPackages", "SourceRpm", "parse_source_rpm", "rpm_evr"]

# EPOCHNUM prints 0 for "no epoch" (EPOCH would print "(none)"); MODULARITYLABEL needs
# rpm >= 4.14 (RHEL 8+, Fedora 28+). Absent string tags print "(none)".
_QUERYFORMAT: Final = (
    "%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}"
    "\\t%{SOURCERPM}\\t%{MODULARITYLABEL}\\n"
)
_FIELDS: Final = 7
_NONE: Final = "(none)"
_PSEUDO_PACKAGES: Final = frozenset({"gpg-pubkey", "gpg-pubkey-release"})

# name-version-release.src.rpm; also accepts .nosrc.rpm and the non-standard "-src.rpm" seen in
# third-party packages (e.g. elasticsearch-8.17.0-1-src.rpm). Version and release hold no "-".
_SRPM_RE: Final = re.compile(
    r"^(?P<name>.+)-(?P<version>[^-]*)-(?P<release>[^-]*)[.-](?:no)?src\.rpm$"
)
_TOKEN_RE: Final = re.compile(r"^[^\s]+$")


class SourceRpm(NamedTuple):
    """The parts of a ``SOURCERPM`` file name (which carries no epoch)."""

    name: str
    version: str
    release: str


def parse_source_rpm(filename: str) -> SourceRpm | None:
    """Split ``name-version-release.src.rpm``; ``None`` for ``(none)`` or an unknown shape.

    Args:
        filename: the ``%{SOURCERPM}`` value.

    Returns:
        The name, version and release, or ``None``.
    """
    match = _SRPM_RE.match(filename)
    if filename == _NONE or match is None or not match["name"] or not match["version"]:
        return None
    return SourceRpm(match["name"], match["version"], match["release"])


def rpm_evr(epoch: int, version: str, release: str) -> str:
    """Format ``[epoch:]version[-release]``; epoch 0 is omitted (``0:1.0-1`` == ``1.0-1``)."""
    vr = f"{version}-{release}" if release else version
    return f"{epoch}:{vr}" if epoch else vr


class RpmPackages(TabularPackageFact):
    """Installed packages of an RPM host, one record per installed package instance.

    Runs ``rpm -qa --queryformat '%{NAME}\\t%{EPOCHNUM}\\t%{VERSION}\\t%{RELEASE}\\t%{ARCH}
    \\t%{SOURCERPM}\\t%{MODULARITYLABEL}\\n'``. Conventions:

    * ``version`` is ``[epoch:]version-release`` with the epoch omitted when it is 0, and
      ``epoch`` is ``None`` exactly when the version string carries no epoch;
    * the source package comes from ``SOURCERPM`` (``name-version-release.src.rpm``, which
      has no epoch): the binary's epoch is carried onto ``source_version``. ``(none)`` or an
      unrecognised file name falls back to the binary's own name and version;
    * ``module`` is the modularity label (``name:stream:version:context``), ``None`` when
      ``(none)``;
    * ``gpg-pubkey`` pseudo-packages (imported signing keys) are skipped; several installed
      instances of one name (kernels, multilib) are all kept.

    Returns:
        ``list[InstalledPackage]`` in rpm order with ``ecosystem=rpm``. Example:
        ``InstalledPackage(name="nginx", version="1:1.24.0-4.module_el9.5.0+122+220a1c6b.alma.1",
        arch="x86_64", source_name="nginx", source_version="1:1.24.0-4.module_el9...alma.1",
        epoch=1, module="nginx:1.24:9050020241004144538:8cf767d6", ecosystem=Ecosystem.RPM)``.

    Raises:
        FactParseError: a row has the wrong number of fields, a non-numeric epoch or an empty
            name/version, or no real package is listed (empty output included).
        CommandFailedError: ``rpm`` exited non-zero (e.g. rpm < 4.14 without MODULARITYLABEL).
    """

    name: ClassVar[str] = "RpmPackages"
    fields: ClassVar[int] = _FIELDS

    def command(self) -> list[str]:
        """Return the ``rpm -qa --queryformat ...`` argv."""
        return ["rpm", "-qa", "--queryformat", _QUERYFORMAT]

    def parse_fields(self, values: list[str], line: str) -> InstalledPackage | None:
        """Map one row to a package (``None``: not an installed package)."""
        fields = values
        name, epoch_text, version, release, arch, sourcerpm, label = fields
        if not _TOKEN_RE.match(name):
            raise FactParseError(self.name, f"malformed package name {name!r}", line=line)
        if name in _PSEUDO_PACKAGES:
            return None
        if not epoch_text.isdigit():
            raise FactParseError(self.name, f"epoch is not a number: {epoch_text!r}", line=line)
        if not _TOKEN_RE.match(version) or version == _NONE:
            raise FactParseError(self.name, f"malformed version {version!r}", line=line)
        for label_name, value in (("release", release), ("arch", arch), ("source rpm", sourcerpm)):
            if value and not _TOKEN_RE.match(value):
                raise FactParseError(self.name, f"malformed {label_name} {value!r}", line=line)
        epoch = int(epoch_text)
        release = "" if release == _NONE else release
        evr = rpm_evr(epoch, version, release)
        source = parse_source_rpm(sourcerpm)
        if source is None:
            source_name, source_version = name, evr
        else:
            source_name = source.name
            source_version = rpm_evr(epoch, source.version, source.release)
        module = label.strip()
        return InstalledPackage(
            name=name,
            version=evr,
            arch="" if arch == _NONE else arch,
            source_name=source_name,
            source_version=source_version,
            ecosystem=Ecosystem.RPM,
            epoch=epoch or None,
            module=None if module in {"", _NONE} else module,
        )

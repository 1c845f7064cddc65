"""Installed Alpine packages from the apk database (``/lib/apk/db/installed``)."""

from __future__ import annotations

import re
from typing import ClassVar, Final

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import CommandResult, Ecosystem, InstalledPackage
from patchpilot.tools.facts.base import Fact, stderr_tail

__all__ = ["APK_DB_PATH", "ApkPackages"]

APK_DB_PATH: Final = "/lib/apk/db/installed"
"""The installed-package database of apk-tools 2 and 3."""

_LINE_RE: Final = re.compile(r"^(?P<key>[A-Za-z]):(?P<value>.*)$")
_TOKEN_RE: Final = re.compile(r"^[^\s]+$")


class ApkPackages(Fact[list[InstalledPackage]]):
    """Installed packages of an Alpine host, read from the apk database.

    The database is a series of stanzas separated by blank lines; each line is ``X:value``
    with a one-letter key. Used keys: ``P`` name, ``V`` version, ``A`` architecture and ``o``
    origin (the source package, defaulting to the name). Alpine versions carry no epoch.

    Returns:
        ``list[InstalledPackage]`` in database order with ``source_version`` equal to
        ``version``, ``epoch=None`` and ``ecosystem=alpine``. Example:
        ``InstalledPackage(name="libcrypto3", version="3.3.2-r0", arch="x86_64",
        source_name="openssl", source_version="3.3.2-r0", ecosystem=Ecosystem.ALPINE)``.

    Raises:
        FactParseError: a line is not ``X:value``, a stanza has no ``P`` or ``V``, or the
            database lists no package.
        CommandFailedError: the file could not be read (not an Alpine host).
    """

    name: ClassVar[str] = "ApkPackages"

    def command(self) -> list[str]:
        """Return ``cat /lib/apk/db/installed``."""
        return ["cat", APK_DB_PATH]

    def parse(self, result: CommandResult) -> list[InstalledPackage]:
        """Parse the stanzas; see the class docstring for the shape."""
        self.check_result(result)
        packages: list[InstalledPackage] = []
        stanza: dict[str, str] = {}
        first_line = ""
        for raw in [*result.stdout.split("\n"), ""]:
            line = raw.removesuffix("\r")
            if not line.strip():
                if stanza:
                    packages.append(self._package(stanza, first_line))
                    stanza = {}
                continue
            match = _LINE_RE.match(line)
            if match is None:
                raise FactParseError(self.name, "expected an 'X:value' line", line=line)
            if not stanza:
                first_line = line
            # Only the first occurrence matters for the single-valued keys we read.
            stanza.setdefault(match["key"], match["value"])
        if not packages:
            raise FactParseError(
                self.name, f"empty package inventory (no stanza){stderr_tail(result)}"
            )
        return packages

    def _package(self, stanza: dict[str, str], first_line: str) -> InstalledPackage:
        name = stanza.get("P", "")
        version = stanza.get("V", "")
        if not _TOKEN_RE.match(name) or not _TOKEN_RE.match(version):
            raise FactParseError(
                self.name, "package stanza without a valid P: and V:", line=first_line
            )
        origin = stanza.get("o", "").strip() or name
        return InstalledPackage(
            name=name,
            version=version,
            arch=stanza.get("A", "").strip(),
            source_name=origin,
            source_version=version,
            ecosystem=Ecosystem.ALPINE,
        )

"""Upgrades a Debian-family host's repositories offer, from ``apt-get -s dist-upgrade``.

The simulation reads the package lists the host already has: it never runs ``apt-get update``
(refreshing the lists is a separate, explicit operation), needs no root
(``-o Debug::NoLocking=1`` skips the dpkg lock that a non-root simulation cannot take) and
changes nothing.

Each upgrade is one ``Inst`` line, printed by apt's ``pkgSimulate::Describe``::

    Inst NAME [OLD] (NEW ORIGIN[, ORIGIN...] [ARCH]) [annotations...]
    Inst NAME (NEW ORIGIN[, ORIGIN...] [ARCH])          # a new install: no [OLD]

where ``ORIGIN`` is ``VerIterator::RelStr``: ``Label:Version/Archive`` (for example
``Debian-Security:12/oldstable-security`` or ``Ubuntu:22.04/jammy-security``), ``Label:Archive``
when the Release file has no version, or the site name (``localhost``) without a Release file.
A label may contain spaces (``Docker CE:bookworm/bookworm``). Trailing annotations such as
``[]`` or ``[libpam-modules:amd64 on libpam-modules-bin:amd64]`` are ignored. ``Conf``,
``Remv`` and ``Purg`` lines are not upgrades and are skipped.
"""

from __future__ import annotations

import re
from typing import ClassVar, Final

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import CommandResult, PendingUpdate
from patchpilot.tools.facts.base import Fact, stderr_tail

__all__ = ["APT_SUMMARY_RE", "AptPendingUpdates", "is_security_origin", "parse_inst_line"]

_INST_RE: Final = re.compile(
    r"^Inst (?P<name>[A-Za-z0-9][A-Za-z0-9+._:-]*)"
    r"(?: \[(?P<old>[^\]\s]+)\])?"
    r" \((?P<new>[^\s()]+)(?: (?P<release>[^()]*))?\)"
    r"(?P<rest>(?: \[[^\]]*\])*)\s*$"
)
_ARCH_RE: Final = re.compile(r"^(?P<origins>.*?) ?\[(?P<arch>[A-Za-z0-9_-]+)\]$")
_VERSION_RE: Final = re.compile(r"^(?:\d+:)?[A-Za-z0-9.+~:-]+$")
APT_SUMMARY_RE: Final = re.compile(  # apt's "N upgraded, N newly installed, ..." line
    r"^(?P<upgraded>\d+) upgraded, (?P<new>\d+) newly installed, "
    r"(?:(?P<reinstalled>\d+) reinstalled, )?(?:(?P<downgraded>\d+) downgraded, )?"
    r"(?P<remove>\d+) to remove and (?P<kept>\d+) not upgraded\.$"
)

SECURITY_SUITE_SUFFIX: Final = "-security"
"""An archive (suite) name ending in this is a security suite, whatever the release codename."""

_SECURITY_LABELS: Final = frozenset({"Debian-Security"})
"""Labels that are security archives even when the suite lacks the suffix (Debian <= 10 used
``buster/updates`` with suite ``oldoldstable`` and label ``Debian-Security``)."""


def is_security_origin(origin: str) -> bool:
    """Whether an apt origin label (``Label:Version/Archive``) is a security suite.

    The archive (the part after the last ``/``, or after the label's ``:`` when there is no
    version) must end with ``-security``: ``Debian-Security:12/oldstable-security``,
    ``Debian-Security:12/bookworm-security``, ``Ubuntu:22.04/jammy-security`` and
    ``UbuntuESMApps:22.04/jammy-apps-security`` are security suites; ``Debian:12.9/stable``
    and ``Ubuntu:22.04/jammy-updates`` are not. The suffix is matched, never a codename, so
    it keeps working when ``stable`` becomes ``oldstable``. The ``Debian-Security`` label also
    counts (for Debian 10 and older, whose security suite had no ``-security`` suffix).

    Args:
        origin: one origin as printed between the candidate version and ``[arch]``.

    Returns:
        True for a security suite.
    """
    label, sep, rest = origin.partition(":")
    archive = rest.rsplit("/", 1)[-1] if sep else origin
    return archive.endswith(SECURITY_SUITE_SUFFIX) or (bool(sep) and label in _SECURITY_LABELS)


def parse_inst_line(line: str, fact: str = "AptPendingUpdates") -> PendingUpdate:
    """Parse one ``Inst`` line of an apt simulation.

    Args:
        line: the line, starting with ``Inst ``.
        fact: fact name used in errors.

    Returns:
        The pending update; ``installed_version`` is ``None`` for a new install, ``arch`` is
        ``""`` when apt printed none, and a ``:arch`` suffix on the name moves to ``arch``.

    Raises:
        FactParseError: the line does not have the ``Inst`` shape or a version is malformed.
    """
    match = _INST_RE.match(line)
    if match is None:
        raise FactParseError(fact, "unrecognised Inst line", line=line)
    name, _, name_arch = match["name"].partition(":")
    old, new = match["old"], match["new"]
    for label, value in (("installed version", old), ("candidate version", new)):
        if value is not None and not _VERSION_RE.match(value):
            raise FactParseError(fact, f"malformed {label} {value!r}", line=line)
    release = (match["release"] or "").strip()
    arch = ""
    arch_match = _ARCH_RE.match(release)
    if arch_match is not None:
        release, arch = arch_match["origins"].strip(), arch_match["arch"]
    if name_arch and arch and name_arch != arch:
        raise FactParseError(fact, "name's :arch suffix differs from [arch]", line=line)
    origins = tuple(o.strip() for o in release.split(", ") if o.strip()) if release else ()
    return PendingUpdate(
        name=name,
        arch=arch or name_arch,
        installed_version=old,
        candidate_version=new,
        origins=origins,
        security=any(is_security_origin(o) for o in origins),
    )


class AptPendingUpdates(Fact[list[PendingUpdate]]):
    """Upgrades ``apt-get dist-upgrade`` would install, from the host's current package lists.

    Runs ``apt-get -s -o Debug::NoLocking=1 dist-upgrade`` (with ``LC_ALL=C``; no root, no
    ``apt-get update``). Only ``Inst`` lines are kept; removals are not recorded yet.

    Returns:
        ``list[PendingUpdate]`` in apt's order, possibly empty (nothing to upgrade). Example:
        ``PendingUpdate(name="libssl3", arch="amd64", installed_version="3.0.19-1~deb12u2",
        candidate_version="3.0.22-1~deb12u2",
        origins=("Debian-Security:12/oldstable-security",), security=True)``.

    Raises:
        FactParseError: an ``Inst`` line does not parse, apt's summary line
            (``N upgraded, N newly installed, ...``) is missing, or the number of ``Inst``
            lines disagrees with it (garbage or partial output is never an empty list).
        CommandFailedError: apt-get exited non-zero (e.g. ``E: Could not get lock``,
            broken dependencies); stderr is attached.
    """

    name: ClassVar[str] = "AptPendingUpdates"
    timeout: ClassVar[float | None] = 300.0

    def command(self) -> list[str]:
        """Return the simulation argv (never ``apt-get update``)."""
        return ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]

    def parse(self, result: CommandResult) -> list[PendingUpdate]:
        """Parse the ``Inst`` lines and cross-check them with apt's summary line."""
        self.check_result(result)
        updates: list[PendingUpdate] = []
        summary: re.Match[str] | None = None
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if line.startswith("Inst "):
                updates.append(parse_inst_line(line, self.name))
            elif (found := APT_SUMMARY_RE.match(line)) is not None:
                if summary is not None:
                    raise FactParseError(self.name, "two summary lines", line=line)
                summary = found
        if summary is None:
            raise FactParseError(
                self.name,
                "no 'N upgraded, N newly installed, ...' summary line: not apt-get output"
                + stderr_tail(result),
            )
        expected = sum(
            int(summary[key] or 0) for key in ("upgraded", "new", "reinstalled", "downgraded")
        )
        if expected != len(updates):
            raise FactParseError(
                self.name,
                f"summary announces {expected} installs but {len(updates)} Inst lines were found",
                line=summary[0],
            )
        return updates

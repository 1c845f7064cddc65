"""Debian (dpkg) version ordering: ``[epoch:]upstream_version[-debian_revision]``.

The comparison is python-debian's (``debian.debian_support.version_compare``, a faithful
implementation of dpkg's ``verrevcmp()``), applied only to versions that pass our validation.
Validation follows dpkg's ``parseversion()`` (``lib/dpkg/parsehelp.c``) with its warnings turned
into errors (python-debian is more lenient):

* the epoch, when present, is an unsigned decimal number no larger than ``INT_MAX``;
* the revision is whatever follows the *last* hyphen, and must not be empty;
* the upstream version is non-empty, starts with a digit and uses only ``[A-Za-z0-9.+~:-]``;
* the revision uses only ``[A-Za-z0-9.+~]``;
* no whitespace anywhere (dpkg trims leading and trailing blanks; we refuse them instead).

Where dpkg merely *warns* (upstream not starting with a digit, invalid characters) this module
refuses: such strings never come from a real package and usually mean a parsing bug upstream.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, TypeAlias

from debian.debian_support import version_compare

from patchpilot.core.errors import InvalidVersionError

__all__ = [
    "ECOSYSTEM",
    "DebianKey",
    "compare",
    "sort_key",
    "split",
    "validate",
]

ECOSYSTEM: Final = "debian"

_INT_MAX: Final = 2**31 - 1
MAX_LENGTH: Final = 512
"""Longest accepted version. dpkg sets no limit, but real versions stay far below it and
python-debian cannot convert digit runs of more than 4300 digits."""
_DIGITS: Final = frozenset("0123456789")
_ALPHA: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_UPSTREAM_OK: Final = _DIGITS | _ALPHA | frozenset(".+~:-")
_REVISION_OK: Final = _DIGITS | _ALPHA | frozenset(".+~")
_RUNS: Final = re.compile(r"([^0-9]*)([0-9]*)")
_SPACE: Final = re.compile(r"\s")
_EPOCH: Final = re.compile(r"[0-9]+")
_UPSTREAM: Final = re.compile(r"[A-Za-z0-9.+~:-]*")
_REVISION: Final = re.compile(r"[A-Za-z0-9.+~]*")

# One element of a verrevcmp key: (weights of a non-digit run + (0,), digit count, digits).
_Element: TypeAlias = tuple[tuple[int, ...], int, str]
DebianKey: TypeAlias = tuple[int, tuple[_Element, ...], tuple[_Element, ...]]
"""The sort key of a Debian version: ``(epoch, upstream key, revision key)``."""

_PAD: Final[_Element] = ((0,), 0, "")


def _order(c: str) -> int:
    """Weight of one character in a non-digit run, as dpkg's ``order()``."""
    if c in _DIGITS:
        return 0
    if c in _ALPHA:
        return ord(c)
    if c == "~":
        return -1
    return ord(c) + 256


def split(version: str) -> tuple[int, str, str]:
    """Split a *valid* version into ``(epoch, upstream, revision)``; missing parts are 0 / "".

    Args:
        version: A version accepted by :func:`validate`.

    Returns:
        The epoch as an int, the upstream version and the revision (``""`` when absent).

    Raises:
        InvalidVersionError: If ``version`` is not a valid Debian version.
    """
    return _parse(version)


def _fail(version: str, reason: str) -> InvalidVersionError:
    return InvalidVersionError(ECOSYSTEM, version, reason)


def _parse(version: str) -> tuple[int, str, str]:
    if not isinstance(version, str):
        raise _fail(repr(version), f"expected a string, got {type(version).__name__}")
    return _parse_str(version)


@lru_cache(maxsize=4096)
def _parse_str(version: str) -> tuple[int, str, str]:
    if not version:
        raise _fail(version, "version string is empty")
    if len(version) > MAX_LENGTH:
        raise _fail(version[:40] + "...", f"longer than {MAX_LENGTH} characters")
    if _SPACE.search(version):
        raise _fail(version, "version string contains whitespace")
    epoch = 0
    rest = version
    colon = version.find(":")
    if colon >= 0:
        epoch_text = version[:colon]
        if not epoch_text:
            raise _fail(version, "epoch in version is empty")
        if not _EPOCH.fullmatch(epoch_text):
            raise _fail(version, "epoch in version is not a number")
        digits = epoch_text.lstrip("0") or "0"
        if len(digits) > 10 or int(digits) > _INT_MAX:
            raise _fail(version, "epoch in version is too big")
        epoch = int(digits)
        rest = version[colon + 1 :]
        if not rest:
            raise _fail(version, "nothing after colon in version number")
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = rest, ""
    elif not revision:
        raise _fail(version, "revision number is empty")
    if not upstream:
        raise _fail(version, "version number is empty")
    if upstream[0] not in _DIGITS:
        raise _fail(version, "version number does not start with digit")
    if not _UPSTREAM.fullmatch(upstream):
        bad = next(c for c in upstream if c not in _UPSTREAM_OK)
        raise _fail(version, f"invalid character {bad!r} in version number")
    if not _REVISION.fullmatch(revision):
        bad = next(c for c in revision if c not in _REVISION_OK)
        raise _fail(version, f"invalid character {bad!r} in revision number")
    return epoch, upstream, revision


def validate(version: str) -> str:
    """Return ``version`` unchanged if dpkg accepts it without warnings.

    Args:
        version: The version string, e.g. ``"1:9.2p1-2+deb12u3"``.

    Returns:
        The same string.

    Raises:
        InvalidVersionError: With dpkg's reason when the version is malformed.
    """
    _parse(version)
    return version


def compare(a: str, b: str) -> int:
    """Compare two Debian versions exactly as dpkg does.

    Args:
        a: First version.
        b: Second version.

    Returns:
        -1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``.

    Raises:
        InvalidVersionError: If either version is invalid.
    """
    return _compare_valid(validate(a), validate(b))


@lru_cache(maxsize=65536)
def _compare_valid(a: str, b: str) -> int:
    # Fleets share versions heavily, so the cache absorbs most of python-debian's cost.
    result = version_compare(a, b)
    return (result > 0) - (result < 0)


def _part_key(part: str) -> tuple[_Element, ...]:
    # A part is a sequence of (non-digit run, digit run) pairs; only the first run may be empty.
    # Every pair after the first has a non-empty non-digit run, so its weights never start
    # with 0 and it can never equal _PAD: the explicit _PAD terminator therefore behaves like
    # dpkg's "end of string" (weight 0, number 0) against any longer key.
    elements: list[_Element] = []
    for match in _RUNS.finditer(part):
        text, digits = match.group(1), match.group(2)
        if not text and not digits and elements:
            break
        stripped = digits.lstrip("0")
        elements.append(((*(_order(c) for c in text), 0), len(stripped), stripped))
    elements.append(_PAD)
    return tuple(elements)


def sort_key(version: str) -> DebianKey:
    """A hashable key whose ordering is exactly :func:`compare`'s (equal keys <=> compare() == 0).

    python-debian's ``Version`` objects order correctly but hash by their text (``1.0`` and
    ``1.0-0`` are equal yet hash apart), so the key is derived here from dpkg's rules; property
    tests check it against :func:`compare` and against ``dpkg --compare-versions``.

    Args:
        version: A valid Debian version.

    Returns:
        ``(epoch, upstream key, revision key)``.

    Raises:
        InvalidVersionError: If the version is invalid.
    """
    epoch, upstream, revision = _parse(version)
    return epoch, _part_key(upstream), _part_key(revision)

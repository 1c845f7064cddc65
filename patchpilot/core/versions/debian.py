"""Debian (dpkg) version ordering: ``[epoch:]upstream_version[-debian_revision]``.

Two questions, two rules:

* :func:`validate` / ``is_valid``: is it a well-formed version? dpkg's ``parseversion()``
  (``lib/dpkg/parsehelp.c``) with its *warnings* turned into errors (python-debian is more
  lenient): the epoch, when present, is an unsigned decimal number no larger than ``INT_MAX``;
  the revision is whatever follows the *last* hyphen and must not be empty; the upstream
  version is non-empty, starts with a digit and uses only ``[A-Za-z0-9.+~:-]``; the revision
  uses only ``[A-Za-z0-9.+~]``; no whitespace anywhere.
* :func:`compare` / :func:`sort_key`: how does dpkg order it? Exactly as
  ``dpkg --compare-versions`` does, for every string dpkg accepts, *with* a warning too (an
  upstream version not starting with a digit, any other character, ``+1:`` epochs, leading
  and trailing blanks): dpkg's ``verrevcmp()`` over the UTF-8 bytes, a non-ASCII byte
  weighing as on amd64 (``char`` is signed there). Strings dpkg refuses with an *error* raise
  :class:`~patchpilot.core.errors.UnparseableVersionError` with dpkg's message: empty,
  embedded spaces, an epoch that is empty / not a number / negative / above ``INT_MAX``,
  nothing after the colon, an empty revision or upstream version; so do the strings no
  ecosystem orders (see :mod:`._common`: control characters, over-long...).

Well-formed versions are compared with python-debian (``debian_support.version_compare``, a
faithful implementation of dpkg's ``verrevcmp()``); the others with the port below, which the
tests check against python-debian and against the real ``dpkg --compare-versions``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, TypeAlias

from debian.debian_support import version_compare

from patchpilot.core.errors import InvalidVersionError, UnparseableVersionError
from patchpilot.core.versions._common import check_common, shown

__all__ = [
    "ECOSYSTEM",
    "DebianKey",
    "check",
    "compare",
    "sort_key",
    "split",
    "validate",
]

ECOSYSTEM: Final = "debian"

_INT_MAX: Final = 2**31 - 1
# MAX_LENGTH (512, from ._common): dpkg sets no limit, but real versions stay far below it and
# python-debian cannot convert digit runs of more than 4300 digits.
_DIGITS: Final = frozenset("0123456789")
_ALPHA: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_UPSTREAM_OK: Final = _DIGITS | _ALPHA | frozenset(".+~:-")
_REVISION_OK: Final = _DIGITS | _ALPHA | frozenset(".+~")
_RUNS: Final = re.compile(rb"([^0-9]*)([0-9]*)")
_EPOCH_LAX: Final = re.compile(r"([+-]?)([0-9]*)")
_SPACE: Final = re.compile(r"\s")
_EPOCH: Final = re.compile(r"[0-9]+")
_UPSTREAM: Final = re.compile(r"[A-Za-z0-9.+~:-]*")
_REVISION: Final = re.compile(r"[A-Za-z0-9.+~]*")

# One element of a verrevcmp key: (weights of a non-digit run + (0,), digit count, digits).
_Element: TypeAlias = tuple[tuple[int, ...], int, bytes]
DebianKey: TypeAlias = tuple[int, tuple[_Element, ...], tuple[_Element, ...]]
"""The sort key of a Debian version: ``(epoch, upstream key, revision key)``."""

_PAD: Final[_Element] = ((0,), 0, b"")


def _byte_order(b: int) -> int:
    """Weight of one byte in a non-digit run, as dpkg's ``order()`` on amd64.

    Digits (and the end of the string) weigh 0, ASCII letters their code, ``~`` -1, and any
    other byte ``c + 256`` with ``c`` a *signed* char: other ASCII characters weigh 289-382,
    and the bytes of non-ASCII characters (negative as signed chars) 128-255, between the
    letters and the other ASCII characters.
    """
    if 0x30 <= b <= 0x39:
        return 0
    if 0x41 <= b <= 0x5A or 0x61 <= b <= 0x7A:
        return b
    if b == 0x7E:
        return -1
    if b >= 0x80:
        return b
    return b + 256


_WEIGHTS: Final = tuple(_byte_order(b) for b in range(256))


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


def _unparseable(version: str, reason: str) -> UnparseableVersionError:
    return UnparseableVersionError(ECOSYSTEM, shown(version), reason)


def _parse(version: str) -> tuple[int, str, str]:
    _parse_lax(version)  # the unparseable class first, with dpkg's error messages
    return _parse_str(version)


@lru_cache(maxsize=4096)
def _parse_str(version: str) -> tuple[int, str, str]:
    """The strict checks, on a version :func:`_parse_lax` accepted: dpkg's warnings and ours."""
    if _SPACE.search(version):
        raise _fail(version, "version string contains whitespace")
    epoch = 0
    rest = version
    colon = version.find(":")
    if colon >= 0:
        if not _EPOCH.fullmatch(version[:colon]):
            raise _fail(version, "epoch in version is not a number")
        epoch = int(version[:colon].lstrip("0") or "0")
        rest = version[colon + 1 :]
    upstream, hyphen, revision = rest.rpartition("-")
    if not hyphen:
        upstream, revision = rest, ""
    if upstream[0] not in _DIGITS:
        raise _fail(version, "version number does not start with digit")
    if not _UPSTREAM.fullmatch(upstream):
        bad = next(c for c in upstream if c not in _UPSTREAM_OK)
        raise _fail(version, f"invalid character {bad!r} in version number")
    if not _REVISION.fullmatch(revision):
        bad = next(c for c in revision if c not in _REVISION_OK)
        raise _fail(version, f"invalid character {bad!r} in revision number")
    return epoch, upstream, revision


def _parse_lax(version: str) -> tuple[int, str, str]:
    check_common(ECOSYSTEM, version)
    return _parse_lax_str(version)


@lru_cache(maxsize=4096)
def _parse_lax_str(version: str) -> tuple[int, str, str]:
    """dpkg's ``parseversion()`` up to its errors (its warnings are not checked here)."""
    # Trim leading and trailing blanks (tabs are control characters, refused before).
    string = version.strip(" ")
    if not string:
        raise _unparseable(version, "version string is empty")
    if " " in string:
        raise _unparseable(version, "version string has embedded spaces")
    epoch = 0
    colon = string.find(":")
    if colon >= 0:
        # strtol(): an optional sign, then decimal digits running exactly up to the colon.
        match = _EPOCH_LAX.match(string)
        assert match is not None  # the pattern matches the empty string
        sign, digits = match.groups()
        if not digits:
            raise _unparseable(version, "epoch in version is empty")
        if match.end() != colon:
            raise _unparseable(version, "epoch in version is not number")
        digits = digits.lstrip("0") or "0"
        if sign == "-" and digits != "0":
            raise _unparseable(version, "epoch in version is negative")
        if len(digits) > 10 or int(digits) > _INT_MAX:
            raise _unparseable(version, "epoch in version is too big")
        epoch = int(digits)
        string = string[colon + 1 :]
        if not string:
            raise _unparseable(version, "nothing after colon in version number")
    upstream, hyphen, revision = string.rpartition("-")
    if not hyphen:
        upstream, revision = string, ""
    elif not revision:
        raise _unparseable(version, "revision number is empty")
    if not upstream:
        raise _unparseable(version, "version number is empty")
    return epoch, upstream, revision


def check(version: str) -> str:
    """Return ``version`` unchanged if dpkg can order it (even with a warning).

    Args:
        version: The version string.

    Returns:
        The same string.

    Raises:
        UnparseableVersionError: If dpkg refuses it with an error, or it is in the class no
            ecosystem orders (see :mod:`._common`).
    """
    _parse_lax(version)
    return version


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
    """Compare two Debian versions exactly as ``dpkg --compare-versions`` does.

    Malformed versions dpkg only warns about are ordered as dpkg orders them.

    Args:
        a: First version.
        b: Second version.

    Returns:
        -1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``.

    Raises:
        UnparseableVersionError: If either version is one dpkg refuses (see :func:`check`).
    """
    return _compare_any(a, b) if type(a) is str and type(b) is str else _compare_checked(a, b)


@lru_cache(maxsize=65536)
def _compare_any(a: str, b: str) -> int:
    # Fleets share versions heavily, so the cache absorbs most of the cost.
    return _compare_checked(a, b)


def _compare_checked(a: str, b: str) -> int:
    _parse_lax(a)
    _parse_lax(b)
    if _is_well_formed(a) and _is_well_formed(b):
        result = version_compare(a, b)
        return (result > 0) - (result < 0)
    ka, kb = sort_key(a), sort_key(b)
    return (ka > kb) - (ka < kb)


def _is_well_formed(version: str) -> bool:
    try:
        _parse_str(version)
    except InvalidVersionError:
        return False
    return True


def _part_key(part: bytes) -> tuple[_Element, ...]:
    # A part is a sequence of (non-digit run, digit run) pairs; only the first run may be empty.
    # Every pair after the first has a non-empty non-digit run, whose weights never start
    # with 0, so it can never equal _PAD: the explicit _PAD terminator therefore behaves like
    # dpkg's "end of string" (weight 0, number 0) against any longer key.
    elements: list[_Element] = []
    weights = _WEIGHTS
    for match in _RUNS.finditer(part):
        text, digits = match.group(1), match.group(2)
        if not text and not digits and elements:
            break
        stripped = digits.lstrip(b"0")
        elements.append(((*(weights[c] for c in text), 0), len(stripped), stripped))
    elements.append(_PAD)
    return tuple(elements)


def sort_key(version: str) -> DebianKey:
    """A hashable key whose ordering is exactly :func:`compare`'s (equal keys <=> compare() == 0).

    python-debian's ``Version`` objects order correctly but hash by their text (``1.0`` and
    ``1.0-0`` are equal yet hash apart), so the key is derived here from dpkg's rules; property
    tests check it against :func:`compare` and against ``dpkg --compare-versions``.

    Args:
        version: A version dpkg can order (see :func:`check`).

    Returns:
        ``(epoch, upstream key, revision key)``.

    Raises:
        UnparseableVersionError: If dpkg refuses the version.
    """
    return _sort_key(*_parse_lax(version))


@lru_cache(maxsize=4096)
def _sort_key(epoch: int, upstream: str, revision: str) -> DebianKey:
    return epoch, _part_key(upstream.encode()), _part_key(revision.encode())

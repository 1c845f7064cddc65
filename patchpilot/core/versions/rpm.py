"""RPM version ordering: ``[epoch:]version[-release]`` (EVR).

:func:`rpmvercmp` is a line-by-line port of rpm's ``rpmvercmp()`` (``rpmio/rpmvercmp.c``,
``.cc`` since rpm 4.20), including ``~`` (sorts before everything, even the end of the string)
and ``^`` (sorts after the end of the string but before any further segment). Like rpm it works
on ASCII classes only: any other character, including every non-ASCII one, is a separator.

:func:`compare` is rpm's ``rpmverCmp()`` (``lib/rpmver.c``, the same as python
``rpm.labelCompare()``) on the EVRs split by rpm's ``parseEVR()``, for *any* string: the epoch
is the leading ASCII digits when a colon follows them (an empty one is ``0``); otherwise there
is no epoch (compared as ``0``) and the colon stays in the version, so a non-numeric epoch such
as ``a:1.0`` is part of the version, where rpmvercmp treats the colon as a separator. The
release is what follows the last hyphen; a *missing* release sorts before any present one
(rpm's dependency matcher instead ignores the release when one side lacks it, which is not an
ordering). Only the class no ecosystem orders (see :mod:`._common`: empty, control characters,
over-long...) raises :class:`~patchpilot.core.errors.UnparseableVersionError`.

:func:`validate` is stricter, as rpmbuild's ``rpmCharCheck()`` for the Version and Release
tags: ASCII letters, digits and ``._+%{}~^`` only, no ``..``; the epoch is unsigned decimal.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, TypeAlias

from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.versions._common import check_common

__all__ = [
    "ECOSYSTEM",
    "RpmKey",
    "check",
    "compare",
    "rpmvercmp",
    "sort_key",
    "split",
    "validate",
]

ECOSYSTEM: Final = "rpm"

_DIGITS: Final = frozenset("0123456789")
_ALPHA: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_ALNUM: Final = _DIGITS | _ALPHA
_SEGMENT_START: Final = _ALNUM | frozenset("~^")
_VERREL_OK: Final = _ALNUM | frozenset("._+%{}~^")
_VERREL: Final = re.compile(r"[A-Za-z0-9._+%{}~^]+")
_SPACE: Final = re.compile(r"\s")
_LEADING_DIGITS: Final = re.compile(r"[0-9]+")

# Token kinds, in rpmvercmp's order: "~" < end of string < "^" < alpha segment < numeric segment.
_TILDE: Final = 0
_END: Final = 1
_CARET: Final = 2
_ALPHA_SEG: Final = 3
_NUM_SEG: Final = 4

_Token: TypeAlias = tuple[int, int, str]
_FieldKey: TypeAlias = tuple[_Token, ...]
RpmKey: TypeAlias = tuple[_FieldKey, _FieldKey, tuple[int, _FieldKey]]
"""The sort key of an EVR: ``(epoch key, version key, (has release, release key))``."""


def rpmvercmp(a: str, b: str) -> int:
    """Compare one version *or* release field exactly as rpm's ``rpmvercmp()``.

    Args:
        a: A version or release string (not validated; anything is accepted).
        b: A version or release string.

    Returns:
        -1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``.
    """
    if a == b:
        return 0
    la, lb = len(a), len(b)
    one = two = 0
    while one < la or two < lb:
        while one < la and a[one] not in _SEGMENT_START:
            one += 1
        while two < lb and b[two] not in _SEGMENT_START:
            two += 1
        ca = a[one] if one < la else ""
        cb = b[two] if two < lb else ""

        # The tilde separator sorts before everything else.
        if ca == "~" or cb == "~":
            if ca != "~":
                return 1
            if cb != "~":
                return -1
            one += 1
            two += 1
            continue

        # The caret separator is like tilde, except that when one string has ended (the base
        # version) the other one is the higher version.
        if ca == "^" or cb == "^":
            if not ca:
                return -1
            if not cb:
                return 1
            if ca != "^":
                return 1
            if cb != "^":
                return -1
            one += 1
            two += 1
            continue

        # If we ran to the end of either, we are finished with the loop.
        if not (ca and cb):
            break

        # Grab the first completely alpha or completely numeric segment of each.
        str1, str2 = one, two
        if ca in _DIGITS:
            while str1 < la and a[str1] in _DIGITS:
                str1 += 1
            while str2 < lb and b[str2] in _DIGITS:
                str2 += 1
            isnum = True
        else:
            while str1 < la and a[str1] in _ALPHA:
                str1 += 1
            while str2 < lb and b[str2] in _ALPHA:
                str2 += 1
            isnum = False

        # Segments of different types: numeric segments are always newer than alpha ones.
        if two == str2:
            return 1 if isnum else -1

        seg1, seg2 = a[one:str1], b[two:str2]
        if isnum:
            # Throw away leading zeros; whichever number has more digits wins.
            seg1, seg2 = seg1.lstrip("0"), seg2.lstrip("0")
            if len(seg1) != len(seg2):
                return 1 if len(seg1) > len(seg2) else -1
        if seg1 != seg2:
            return 1 if seg1 > seg2 else -1
        one, two = str1, str2

    # All segments compared equal but the separators differed: whichever has characters
    # left over wins.
    if one >= la and two >= lb:
        return 0
    return -1 if one >= la else 1


def _field_key(field: str) -> _FieldKey:
    tokens: list[_Token] = []
    i, n = 0, len(field)
    while i < n:
        c = field[i]
        if c == "~":
            tokens.append((_TILDE, 0, ""))
            i += 1
        elif c == "^":
            tokens.append((_CARET, 0, ""))
            i += 1
        elif c in _DIGITS:
            j = i
            while j < n and field[j] in _DIGITS:
                j += 1
            digits = field[i:j].lstrip("0")
            tokens.append((_NUM_SEG, len(digits), digits))
            i = j
        elif c in _ALPHA:
            j = i
            while j < n and field[j] in _ALPHA:
                j += 1
            tokens.append((_ALPHA_SEG, 0, field[i:j]))
            i = j
        else:
            i += 1
    tokens.append((_END, 0, ""))
    return tuple(tokens)


def _fail(version: str, reason: str) -> InvalidVersionError:
    return InvalidVersionError(ECOSYSTEM, version, reason)


def _check_field(evr: str, name: str, field: str) -> None:
    if not field:
        raise _fail(evr, f"{name} is empty")
    if not _VERREL.fullmatch(field):
        bad = next(c for c in field if c not in _VERREL_OK)
        raise _fail(evr, f"illegal character {bad!r} in {name}")
    if ".." in field:
        raise _fail(evr, f'illegal sequence ".." in {name}')


def _parse(evr: str) -> tuple[str, str, str | None]:
    check_common(ECOSYSTEM, evr)
    return _parse_str(evr)


@lru_cache(maxsize=4096)
def _parse_str(evr: str) -> tuple[str, str, str | None]:
    if _SPACE.search(evr):
        raise _fail(evr, "version string contains whitespace")
    # As rpm's parseEVR(): the epoch is the leading digits when a colon follows them.
    leading = _LEADING_DIGITS.match(evr)
    i = leading.end() if leading else 0
    epoch = "0"
    rest = evr
    if i < len(evr) and evr[i] == ":":
        if i == 0:
            raise _fail(evr, "epoch is empty")
        epoch, rest = evr[:i], evr[i + 1 :]
    version, hyphen, release = rest.rpartition("-")
    if not hyphen:
        version, release = rest, ""
    _check_field(evr, "version", version)
    if hyphen:
        _check_field(evr, "release", release)
    return epoch, version, release if hyphen else None


def _parse_evr(evr: str) -> tuple[str | None, str, str | None]:
    """rpm's ``parseEVR()``: ``(epoch, version, release)``, None for a missing epoch/release."""
    check_common(ECOSYSTEM, evr)
    return _parse_evr_str(evr)


@lru_cache(maxsize=4096)
def _parse_evr_str(evr: str) -> tuple[str | None, str, str | None]:
    leading = _LEADING_DIGITS.match(evr)
    i = leading.end() if leading else 0
    epoch: str | None = None
    rest = evr
    if evr[i : i + 1] == ":":
        epoch, rest = evr[:i] or "0", evr[i + 1 :]
    version, hyphen, release = rest.rpartition("-")
    if not hyphen:
        return epoch, rest, None
    return epoch, version, release


def check(evr: str) -> str:
    """Return ``evr`` unchanged if rpm can order it (any string but the unparseable class).

    Args:
        evr: The EVR string.

    Returns:
        The same string.

    Raises:
        UnparseableVersionError: If it is blank, over-long, not a string, or contains a
            control character or an unpaired surrogate.
    """
    _parse_evr(evr)
    return evr


def split(evr: str) -> tuple[str, str, str | None]:
    """Split a valid EVR into ``(epoch, version, release)``.

    Args:
        evr: ``[epoch:]version[-release]``.

    Returns:
        The epoch digits (``"0"`` when absent), the version and the release (None when absent).

    Raises:
        InvalidVersionError: If ``evr`` is invalid.
    """
    return _parse(evr)


def validate(evr: str) -> str:
    """Return ``evr`` unchanged if it is a valid ``[epoch:]version[-release]``.

    Args:
        evr: The EVR string, e.g. ``"1:3.0.7-27.el9"``.

    Returns:
        The same string.

    Raises:
        InvalidVersionError: With the reason when it is malformed.
    """
    _parse(evr)
    return evr


def compare(a: str, b: str) -> int:
    """Compare two EVRs like rpm's ``rpmverCmp()`` / ``labelCompare()`` (missing epoch = 0).

    Malformed EVRs are split and ordered as rpm does (see the module docstring).

    Args:
        a: First ``[epoch:]version[-release]``.
        b: Second ``[epoch:]version[-release]``.

    Returns:
        -1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``.

    Raises:
        UnparseableVersionError: If either EVR is in the unparseable class (see :func:`check`).
    """
    ea, va, ra = _parse_evr(a)
    eb, vb, rb = _parse_evr(b)
    rc = rpmvercmp(ea or "0", eb or "0") or rpmvercmp(va, vb)
    if rc or ra == rb:
        return rc
    if ra is None:
        return -1
    if rb is None:
        return 1
    return rpmvercmp(ra, rb)


def sort_key(evr: str) -> RpmKey:
    """A key whose ordering is exactly :func:`compare`'s (equal keys <=> compare() == 0).

    Args:
        evr: An EVR rpm can order (see :func:`check`).

    Returns:
        The key.

    Raises:
        UnparseableVersionError: If ``evr`` is in the unparseable class.
    """
    epoch, version, release = _parse_evr(evr)
    release_key = (0, ()) if release is None else (1, _field_key(release))
    return _field_key(epoch or "0"), _field_key(version), release_key

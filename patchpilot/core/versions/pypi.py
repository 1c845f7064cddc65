"""PyPI version ordering (PEP 440), delegated to :class:`packaging.version.Version`.

Accepted spellings are exactly packaging's: normalisable forms such as ``1.0-rc1``, ``v1.0`` or
``1.0.POST2`` are valid and compare equal to their normal form (``1.0rc1``, ``1.0``,
``1.0.post2``). :func:`validate` refuses legacy (non-PEP 440) versions.

:func:`compare` still orders them, as pip and setuptools did before packaging 22 dropped
``LegacyVersion`` (and as OSV's PyPI matcher still does): a legacy version sorts below every
PEP 440 version, and legacy versions order among themselves by setuptools' historic scheme
(see :func:`_legacy_key`). Only the class no ecosystem orders (see :mod:`._common`: empty,
control characters, over-long...) raises
:class:`~patchpilot.core.errors.UnparseableVersionError`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Final, TypeAlias

from packaging.version import InvalidVersion, Version

from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.versions._common import check_common

__all__ = [
    "ECOSYSTEM",
    "PypiKey",
    "check",
    "compare",
    "parse",
    "sort_key",
    "validate",
]

ECOSYSTEM: Final = "pypi"

PypiKey: TypeAlias = tuple[int, Version | tuple[str, ...]]
"""The sort key of a PyPI version: ``(0, Version)``, or ``(-1, legacy parts)`` for a legacy
version (so every legacy version sorts below every PEP 440 one)."""

_LEGACY_PARTS: Final = re.compile(r"(\d+|[a-z]+|\.|-)")
_LEGACY_RENAMES: Final = {"pre": "c", "preview": "c", "-": "final-", "rc": "c", "dev": "@"}
_LEGACY_ZERO: Final = "00000000"


@lru_cache(maxsize=4096)
def _parse(version: str) -> Version:
    return Version(version)


def parse(version: str) -> Version:
    """Parse a PEP 440 version.

    Args:
        version: The version string, e.g. ``"1!2.0.post1.dev3+local.7"``.

    Returns:
        The parsed version.

    Raises:
        InvalidVersionError: If it is not a valid PEP 440 version (UnparseableVersionError
            when it is in the class no ecosystem orders).
    """
    check_common(ECOSYSTEM, version)
    try:
        return _parse(version)
    except InvalidVersion:
        raise InvalidVersionError(ECOSYSTEM, version, "not a valid PEP 440 version") from None


def validate(version: str) -> str:
    """Return ``version`` unchanged if it is a valid PEP 440 version.

    Args:
        version: The version string.

    Returns:
        The same string.

    Raises:
        InvalidVersionError: If it is not valid.
    """
    parse(version)
    return version


def check(version: str) -> str:
    """Return ``version`` unchanged if it can be ordered (PEP 440 or legacy).

    Args:
        version: The version string.

    Returns:
        The same string.

    Raises:
        UnparseableVersionError: If it is blank, over-long, not a string, or contains a
            control character or an unpaired surrogate.
    """
    return check_common(ECOSYSTEM, version)


def compare(a: str, b: str) -> int:
    """Compare two PyPI versions: PEP 440, legacy versions below them.

    Args:
        a: First version.
        b: Second version.

    Returns:
        -1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``.

    Raises:
        UnparseableVersionError: If either version is in the unparseable class (see
            :func:`check`).
    """
    ka, kb = sort_key(a), sort_key(b)
    if ka == kb:
        return 0
    return -1 if ka < kb else 1


def sort_key(version: str) -> PypiKey:
    """A key whose ordering is exactly :func:`compare`'s.

    Args:
        version: A PEP 440 or legacy version.

    Returns:
        ``(0, parsed Version)`` or ``(-1, legacy parts)``.

    Raises:
        UnparseableVersionError: If the version is in the unparseable class.
    """
    check_common(ECOSYSTEM, version)
    return _sort_key(version)


@lru_cache(maxsize=4096)
def _sort_key(version: str) -> PypiKey:
    try:
        return 0, _parse(version)
    except InvalidVersion:
        return -1, _legacy_key(version)


def _legacy_key(version: str) -> tuple[str, ...]:
    """setuptools' ordering before PEP 440 (packaging < 22 ``LegacyVersion``).

    The lowercased version is cut into digit runs, letter runs, ``.`` and ``-`` (and whatever
    lies between them); dots are dropped, numbers padded to 8 digits for string comparison,
    other parts prefixed with ``*``, ``pre``/``preview``/``rc`` read as ``c``, ``dev`` as ``@``
    and ``-`` as ``final-``, and ``*final`` closes the list, so that pre-release tags sort
    before it. Zero numbers ending a numeric series are dropped, and so is a ``-`` right before
    a pre-release tag.
    """
    pieces = []
    for raw in _LEGACY_PARTS.split(version.lower()):
        piece = _LEGACY_RENAMES.get(raw, raw)
        if not piece or piece == ".":
            continue
        pieces.append(piece.zfill(8) if piece[:1] in "0123456789" else "*" + piece)
    pieces.append("*final")
    parts: list[str] = []
    for piece in pieces:
        if piece.startswith("*"):
            if piece < "*final":
                while parts and parts[-1] == "*final-":
                    parts.pop()
            while parts and parts[-1] == _LEGACY_ZERO:
                parts.pop()
        parts.append(piece)
    return tuple(parts)

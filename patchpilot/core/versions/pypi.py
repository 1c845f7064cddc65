"""PyPI version ordering (PEP 440), delegated to :class:`packaging.version.Version`.

Accepted spellings are exactly packaging's: normalisable forms such as ``1.0-rc1``, ``v1.0`` or
``1.0.POST2`` are valid and compare equal to their normal form (``1.0rc1``, ``1.0``,
``1.0.post2``). Legacy non-PEP 440 versions are refused.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, TypeAlias

from packaging.version import InvalidVersion, Version

from patchpilot.core.errors import InvalidVersionError

__all__ = [
    "ECOSYSTEM",
    "PypiKey",
    "compare",
    "parse",
    "sort_key",
    "validate",
]

ECOSYSTEM: Final = "pypi"

PypiKey: TypeAlias = Version
"""The sort key of a PyPI version: the parsed :class:`packaging.version.Version`."""


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
        InvalidVersionError: If it is not a valid PEP 440 version.
    """
    if not isinstance(version, str):
        raise InvalidVersionError(
            ECOSYSTEM, repr(version), f"expected a string, got {type(version).__name__}"
        )
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


def compare(a: str, b: str) -> int:
    """Compare two PEP 440 versions.

    Args:
        a: First version.
        b: Second version.

    Returns:
        -1, 0 or 1 as ``a`` is older than, equal to or newer than ``b``.

    Raises:
        InvalidVersionError: If either version is invalid.
    """
    va, vb = parse(a), parse(b)
    if va == vb:
        return 0
    return -1 if va < vb else 1


def sort_key(version: str) -> PypiKey:
    """A key whose ordering is exactly :func:`compare`'s.

    Args:
        version: A valid PEP 440 version.

    Returns:
        The parsed version.

    Raises:
        InvalidVersionError: If it is not valid.
    """
    return parse(version)

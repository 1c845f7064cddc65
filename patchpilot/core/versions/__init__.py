"""Exact version ordering for the package ecosystems patchpilot matches advisories in.

One stable entry point per question, dispatched on the ecosystem (a
:class:`patchpilot.core.models.Ecosystem` or its string value, case-insensitive)::

    from patchpilot.core.versions import compare, validate, is_valid, sort_key

    compare("debian", "1:1.2-1", "1.3-1")      # 1   (the epoch wins)
    compare("rpm", "1.0~rc1-1.el9", "1.0-1")  # -1  (tilde sorts first)
    compare("alpine", "1.0_rc1-r0", "1.0-r0")  # -1  (pre-release suffix)
    compare("pypi", "1.0.post1", "1.0")         # 1
    sorted(versions, key=functools.partial(sort_key, "debian"))

Debian uses python-debian and PyPI uses :mod:`packaging`; rpm and Alpine, which have no
well-kept pure-Python library, are faithful ports of the package manager's own code (rpm
``rpmvercmp``/``parseEVR``/``rpmverCmp``, apk-tools ``version.c``), as is the part of dpkg's
``verrevcmp`` python-debian does not cover. See the submodules :mod:`.debian`, :mod:`.rpm`,
:mod:`.apk` and :mod:`.pypi` for the exact rules and for raw helpers (``rpm.rpmvercmp``,
``apk.compare_unchecked``, ``apk.match``).

Two different questions:

* :func:`validate` / :func:`is_valid`: is the string a *well-formed* version of the ecosystem?
  Strict; :class:`patchpilot.core.errors.InvalidVersionError` says why not.
* :func:`compare` / :func:`sort_key`: how does the package manager order it? Real feeds and
  hosts carry malformed versions (``1.0a1`` for apk, ``a:1.0`` for rpm, a Debian version
  that does not start with a digit, a legacy PyPI version), and the package manager still
  orders them, so these functions order them exactly the same way and never raise for them.
  They raise only :class:`patchpilot.core.errors.UnparseableVersionError` (an
  ``InvalidVersionError``) for the *truly unparseable*: not a string, empty or blank, longer
  than :data:`MAX_LENGTH`, control characters or unpaired surrogates, and what dpkg itself
  refuses with an error (see :mod:`.debian`). :func:`check` / :func:`is_comparable` test for
  that class; callers that match advisories report it as a data-quality warning.

An unknown ecosystem raises :class:`UnknownEcosystemError` (a ``ValueError``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

from patchpilot.core.errors import InvalidVersionError, PatchpilotError, UnparseableVersionError
from patchpilot.core.models import Ecosystem
from patchpilot.core.versions import apk, debian, pypi, rpm
from patchpilot.core.versions._common import MAX_LENGTH

__all__ = [
    "MAX_LENGTH",
    "Ecosystem",
    "UnknownEcosystemError",
    "UnparseableVersionError",
    "VersionKey",
    "check",
    "compare",
    "ecosystem_of",
    "is_comparable",
    "is_valid",
    "sort_key",
    "validate",
]


class UnknownEcosystemError(PatchpilotError, ValueError):
    """The ecosystem is not one :mod:`patchpilot.core.versions` knows how to order."""

    def __init__(self, ecosystem: object) -> None:
        self.ecosystem = ecosystem
        known = ", ".join(e.value for e in Ecosystem)
        super().__init__(f"unknown version ecosystem {ecosystem!r}; expected one of: {known}")


class _Backend(NamedTuple):
    validate: Callable[[str], str]
    check: Callable[[str], str]
    compare: Callable[[str, str], int]
    sort_key: Callable[[str], Any]


_BACKENDS: Final[Mapping[str, _Backend]] = {
    Ecosystem.DEBIAN: _Backend(debian.validate, debian.check, debian.compare, debian.sort_key),
    Ecosystem.RPM: _Backend(rpm.validate, rpm.check, rpm.compare, rpm.sort_key),
    Ecosystem.ALPINE: _Backend(apk.validate, apk.check, apk.compare, apk.sort_key),
    Ecosystem.PYPI: _Backend(pypi.validate, pypi.check, pypi.compare, pypi.sort_key),
}


def ecosystem_of(ecosystem: Ecosystem | str) -> Ecosystem:
    """Normalise an ecosystem given as the enum or its (case-insensitive) value.

    Args:
        ecosystem: ``Ecosystem.DEBIAN``, ``"debian"``, ``"Debian"``...

    Returns:
        The enum member.

    Raises:
        UnknownEcosystemError: If it names no supported ecosystem.
    """
    if isinstance(ecosystem, Ecosystem):
        return ecosystem
    if isinstance(ecosystem, str):
        try:
            return Ecosystem(ecosystem.strip().lower())
        except ValueError:
            pass
    raise UnknownEcosystemError(ecosystem)


def _backend(ecosystem: Ecosystem | str) -> _Backend:
    # Fast path: Ecosystem is a StrEnum, so members and their exact values share dict slots.
    if isinstance(ecosystem, str):
        backend = _BACKENDS.get(ecosystem)
        if backend is not None:
            return backend
    return _BACKENDS[ecosystem_of(ecosystem)]


def compare(ecosystem: Ecosystem | str, a: str, b: str) -> int:
    """Compare two versions of one ecosystem exactly as its package manager does.

    Malformed versions are ordered as the package manager orders them (see the module
    docstring); only the truly unparseable raise.

    Args:
        ecosystem: ``"debian"``, ``"rpm"``, ``"alpine"`` or ``"pypi"`` (or the enum).
        a: First version (for rpm, ``[epoch:]version[-release]``).
        b: Second version.

    Returns:
        -1 if ``a`` is older than ``b``, 0 if they are equivalent, 1 if ``a`` is newer.

    Raises:
        UnparseableVersionError: If either version is unparseable in the ecosystem.
        UnknownEcosystemError: If the ecosystem is not supported.
    """
    return _backend(ecosystem).compare(a, b)


def check(ecosystem: Ecosystem | str, version: str) -> str:
    """Return ``version`` unchanged if :func:`compare` can order it.

    Args:
        ecosystem: The ecosystem.
        version: The version string.

    Returns:
        The same string.

    Raises:
        UnparseableVersionError: With the reason when it is unparseable.
        UnknownEcosystemError: If the ecosystem is not supported.
    """
    return _backend(ecosystem).check(version)


def is_comparable(ecosystem: Ecosystem | str, version: str) -> bool:
    """Tell whether :func:`compare` can order ``version`` (it is not unparseable).

    Args:
        ecosystem: The ecosystem.
        version: The version string.

    Returns:
        True if :func:`check` would accept it.

    Raises:
        UnknownEcosystemError: If the ecosystem is not supported.
    """
    backend = _backend(ecosystem)
    try:
        backend.check(version)
    except UnparseableVersionError:
        return False
    return True


def validate(ecosystem: Ecosystem | str, version: str) -> str:
    """Return ``version`` unchanged if it is valid in the ecosystem.

    Args:
        ecosystem: The ecosystem.
        version: The version string.

    Returns:
        The same string.

    Raises:
        InvalidVersionError: With the reason when it is not valid.
        UnknownEcosystemError: If the ecosystem is not supported.
    """
    return _backend(ecosystem).validate(version)


def is_valid(ecosystem: Ecosystem | str, version: str) -> bool:
    """Tell whether ``version`` is valid in the ecosystem.

    Args:
        ecosystem: The ecosystem.
        version: The version string.

    Returns:
        True if :func:`validate` would accept it.

    Raises:
        UnknownEcosystemError: If the ecosystem is not supported.
    """
    backend = _backend(ecosystem)
    try:
        backend.validate(version)
    except InvalidVersionError:
        return False
    return True


@dataclass(frozen=True, slots=True, eq=False)
class VersionKey:
    """A sort key for one version; keys order exactly as :func:`compare` does.

    Keys of the same ecosystem compare (and are equal exactly when :func:`compare` returns 0);
    ordering keys of different ecosystems raises ``TypeError``.
    """

    ecosystem: Ecosystem
    key: Any

    def _check(self, other: VersionKey) -> None:
        if other.ecosystem is not self.ecosystem:
            raise TypeError(
                f"cannot order a {self.ecosystem} version against a {other.ecosystem} version"
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VersionKey):
            return NotImplemented
        return self.ecosystem is other.ecosystem and bool(self.key == other.key)

    def __hash__(self) -> int:
        return hash((self.ecosystem, self.key))

    def __lt__(self, other: VersionKey) -> bool:
        if not isinstance(other, VersionKey):
            return NotImplemented
        self._check(other)
        return bool(self.key < other.key)

    def __le__(self, other: VersionKey) -> bool:
        if not isinstance(other, VersionKey):
            return NotImplemented
        self._check(other)
        return bool(self.key <= other.key)

    def __gt__(self, other: VersionKey) -> bool:
        if not isinstance(other, VersionKey):
            return NotImplemented
        self._check(other)
        return bool(self.key > other.key)

    def __ge__(self, other: VersionKey) -> bool:
        if not isinstance(other, VersionKey):
            return NotImplemented
        self._check(other)
        return bool(self.key >= other.key)


def sort_key(ecosystem: Ecosystem | str, version: str) -> VersionKey:
    """Build a sort key, e.g. ``sorted(vs, key=functools.partial(sort_key, "rpm"))``.

    Args:
        ecosystem: The ecosystem.
        version: A version :func:`compare` can order.

    Returns:
        A :class:`VersionKey` ordered exactly as :func:`compare`.

    Raises:
        UnparseableVersionError: If the version is unparseable.
        UnknownEcosystemError: If the ecosystem is not supported.
    """
    eco = ecosystem_of(ecosystem)
    return VersionKey(eco, _BACKENDS[eco].sort_key(version))

"""What no ecosystem can order: the shared part of the "truly unparseable" class.

Every ecosystem's ``compare`` orders malformed strings the way its package manager does; the
strings below are refused instead (:class:`~patchpilot.core.errors.UnparseableVersionError`),
because no package manager sees them as a version and ordering them would hide a data problem:

* anything that is not a ``str``;
* an empty string, or one made only of whitespace;
* a string longer than :data:`MAX_LENGTH` characters;
* a control character (Unicode category ``Cc``: U+0000-U+001F, U+007F-U+009F, so also tab and
  newline) or an unpaired surrogate (not valid Unicode, cannot be encoded as UTF-8).

Each ecosystem may add its own cases (Debian adds dpkg's syntax *errors*); see its module.
"""

from __future__ import annotations

import re
from typing import Final

from patchpilot.core.errors import UnparseableVersionError

__all__ = ["MAX_LENGTH", "check_common", "shown"]

MAX_LENGTH: Final = 512
"""Longest version accepted anywhere. No package manager sets a limit, but real versions stay
far below it (a long Debian backport version is about 60 characters)."""

_BAD_CHAR: Final = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def shown(version: str) -> str:
    """The version as an error shows it: shortened when over-long."""
    return version if len(version) <= MAX_LENGTH else version[:40] + "..."


def check_common(ecosystem: str, version: object) -> str:
    """Return ``version`` if it passes the checks shared by every ecosystem.

    Args:
        ecosystem: The ecosystem name, for the error.
        version: The candidate version.

    Returns:
        The same string.

    Raises:
        UnparseableVersionError: If it is not a string, is blank, over-long, or contains a
            control character or an unpaired surrogate.
    """
    if not isinstance(version, str):
        raise UnparseableVersionError(
            ecosystem, repr(version), f"expected a string, got {type(version).__name__}"
        )
    if not version or version.isspace():
        raise UnparseableVersionError(ecosystem, version, "version string is empty")
    if len(version) > MAX_LENGTH:
        raise UnparseableVersionError(
            ecosystem, shown(version), f"longer than {MAX_LENGTH} characters"
        )
    bad = _BAD_CHAR.search(version)
    if bad is not None:
        char = bad.group()
        what = "unpaired surrogate" if "\ud800" <= char <= "\udfff" else "control character"
        raise UnparseableVersionError(ecosystem, version, f"contains a {what} (U+{ord(char):04X})")
    return version

"""Changelog errors.

All derive from :class:`patchpilot.core.errors.PatchpilotError` and from the builtin that tells a
caller (LangGraph's default retry policy, our own CLI) whether retrying can help::

    PatchpilotError
    └── ChangelogError                                 any failure reading a package changelog
        ├── ChangelogUnavailable (LookupError)         that version cannot be downloaded (gone
        │                                              from the mirror, unknown, stale lists)
        ├── ChangelogNotShipped (LookupError)          the .deb carries no changelog (its doc
        │                                              directory is a symlink to a sibling's)
        ├── ChangelogFetchError (ConnectionError)      the host cannot reach its mirror (transient)
        └── ChangelogParseError (ValueError)           the changelog text does not parse

Every message names the package, the version and, when known, the host, and says what to do.
"""

from __future__ import annotations

from patchpilot.core.errors import PatchpilotError

__all__ = [
    "ChangelogError",
    "ChangelogFetchError",
    "ChangelogNotShipped",
    "ChangelogParseError",
    "ChangelogUnavailable",
]


class ChangelogError(PatchpilotError):
    """Reading a package's Debian changelog failed.

    Attributes:
        reason: what went wrong and what to do, without the location.
        package: the binary (or source) package, when known.
        version: the package version, when known.
        host: the host the command ran on, when known.
    """

    def __init__(
        self,
        reason: str,
        *,
        package: str | None = None,
        version: str | None = None,
        host: str | None = None,
    ) -> None:
        self.reason = reason
        self.package = package
        self.version = version
        self.host = host
        where = ""
        if package:
            where = f"{package}={version}" if version else package
        if host:
            where = f"{host}: {where}" if where else host
        super().__init__(f"{where}: {reason}" if where else reason)


class ChangelogUnavailable(ChangelogError, LookupError):
    """The requested package version cannot be downloaded from the host's repositories.

    Typical causes: the version was superseded and removed from the mirror, the host's package
    lists are stale (``apt-get update`` fixes it), or apt does not know the package at all.
    """


class ChangelogNotShipped(ChangelogError, LookupError):
    """The package's ``.deb`` contains no ``changelog.Debian.gz`` (nor a native ``changelog.gz``).

    Usually its ``/usr/share/doc/<package>`` is a symlink to another binary package of the same
    source; ask for that binary's changelog instead.
    """


class ChangelogFetchError(ChangelogError, ConnectionError):
    """The host could not download the package (network, proxy or DNS failure); may be retried."""


class ChangelogParseError(ChangelogError, ValueError):
    """The changelog (or the command output carrying it) does not parse."""

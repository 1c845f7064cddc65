"""Which CVEs a pending Debian update fixes, read from the package's own Debian changelog.

As Vuls' deep scan does: for a pending update (binary package, installed source version,
candidate binary version) the host downloads the candidate ``.deb`` from its own repositories,
sends back its ``changelog.Debian.gz``, and the CVE ids mentioned by the entries with
``installed < version <= candidate`` are the CVEs the update is taken to fix::

    from patchpilot.tools.changelog import ChangelogFetcher

    fetcher = ChangelogFetcher(home / "cache")
    result = fetcher.cves_for(
        transport,
        binary="libssl3",
        candidate_version="3.0.22-1~deb12u2",
        source="openssl",
        installed_source_version="3.0.19-1~deb12u2",
    )
    result.cves  # ('CVE-2026-84782', ...)

    updates, warnings = fetcher.cves_for_many(transport, pending_updates, installed_packages)

:mod:`.parse` is pure (python-debian's lenient parser, CVE extraction, version ranges);
:mod:`.fetch` holds the constant remote command, the error mapping and the JSON cache;
:mod:`.errors` the exception family.
"""

from __future__ import annotations

from patchpilot.tools.changelog.errors import (
    ChangelogError,
    ChangelogFetchError,
    ChangelogNotShipped,
    ChangelogParseError,
    ChangelogUnavailable,
)
from patchpilot.tools.changelog.fetch import (
    ChangelogFetcher,
    ChangelogResult,
    DebianChangelogFact,
    FetchedChangelog,
    classify_failure,
)
from patchpilot.tools.changelog.parse import (
    CVE_PATTERN,
    ChangelogEntry,
    cves_between,
    extract_cves,
    parse_changelog,
    parse_changelog_with_source,
    parse_urgency,
    urgency_between,
)

__all__ = [
    "CVE_PATTERN",
    "ChangelogEntry",
    "ChangelogError",
    "ChangelogFetchError",
    "ChangelogFetcher",
    "ChangelogNotShipped",
    "ChangelogParseError",
    "ChangelogResult",
    "ChangelogUnavailable",
    "DebianChangelogFact",
    "FetchedChangelog",
    "classify_failure",
    "cves_between",
    "extract_cves",
    "parse_changelog",
    "parse_changelog_with_source",
    "parse_urgency",
    "urgency_between",
]

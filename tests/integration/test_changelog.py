"""ChangelogFetcher against real apt and the host's real Debian mirror, through LocalTransport.

The package is chosen at run time from this machine's own ``apt-get -s dist-upgrade``: a pending
upgrade offered by a ``-security`` suite (well-known libraries first). Skipped, with the reason,
when the machine is not Debian-family, nothing security-related is pending, or the mirror cannot
be reached.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchpilot.tools.changelog import (
    ChangelogFetcher,
    ChangelogFetchError,
    ChangelogNotShipped,
    ChangelogUnavailable,
    DebianChangelogFact,
    parse_changelog,
)
from patchpilot.tools.facts.base import FACT_ENV
from patchpilot.tools.transport.local import LocalTransport, safe_env

pytestmark = pytest.mark.integration

_INST = re.compile(r"^Inst (\S+) \[([^\]]+)\] \((\S+) ([^\[]*?)(?: \[[^\]]*\])?\)", re.MULTILINE)
_PREFERRED = ("libssl3", "openssl", "libexpat1", "libgnutls30", "liblzma5", "perl-base")
_MAX_TRIES = 5


@dataclass(frozen=True)
class Pending:
    binary: str
    installed: str
    candidate: str
    source: str
    installed_source_version: str


@pytest.fixture(scope="module")
def pending_security() -> list[Pending]:
    """This machine's pending security upgrades, preferred packages first."""
    if not shutil.which("apt-get") or not shutil.which("dpkg-query"):
        pytest.skip("not a Debian-family machine: apt-get/dpkg-query not found")
    sim = subprocess.run(
        ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"],
        capture_output=True,
        text=True,
        env=safe_env(),
        check=False,
    )
    if sim.returncode != 0:
        pytest.skip(f"apt-get -s dist-upgrade failed: {sim.stderr.strip()[-200:]}")
    security = [
        (binary.partition(":")[0], installed, candidate)
        for binary, installed, candidate, origins in _INST.findall(sim.stdout)
        if "security" in origins.lower()
    ]
    if not security:
        pytest.skip("no security upgrade is pending on this machine (apt-get -s dist-upgrade)")
    query = subprocess.run(
        [
            "dpkg-query",
            "-W",
            "-f=${Package}\\t${source:Package}\\t${source:Version}\\n",
            *sorted({name for name, _, _ in security}),
        ],
        capture_output=True,
        text=True,
        env=safe_env(),
        check=False,
    )
    sources: dict[str, tuple[str, str]] = {}
    for line in query.stdout.splitlines():
        name, source, source_version = line.split("\t")
        sources.setdefault(name, (source, source_version))
    found = [
        Pending(name, installed, candidate, *sources[name])
        for name, installed, candidate in security
        if name in sources
    ]
    rank = {name: i for i, name in enumerate(_PREFERRED)}
    # Preferred libraries first; tzdata (security uploads without a CVE) last.
    return sorted(found, key=lambda p: (rank.get(p.binary, len(rank)), p.source == "tzdata"))


def test_pending_security_update_lists_cves_and_hits_the_cache(
    tmp_path: Path, pending_security: list[Pending]
) -> None:
    fetcher = ChangelogFetcher(tmp_path / "cache")
    tried: list[str] = []
    with LocalTransport("localhost") as transport:
        for pending in pending_security[:_MAX_TRIES]:
            args = {
                "binary": pending.binary,
                "candidate_version": pending.candidate,
                "source": pending.source,
                "installed_source_version": pending.installed_source_version,
            }
            try:
                first = fetcher.cves_for(transport, **args)
            except ChangelogFetchError as exc:
                pytest.skip(f"the mirror is unreachable from this machine: {exc}")
            except (ChangelogNotShipped, ChangelogUnavailable) as exc:
                tried.append(f"{pending.binary}: {exc.reason}")
                continue
            tried.append(f"{pending.binary}: {len(first.cves)} CVEs")
            assert not first.from_cache
            assert first.source == pending.source
            if not first.cves:
                continue
            assert first.entries_considered >= 1
            for cve in first.cves:
                assert re.fullmatch(r"CVE-\d{4}-\d{4,}", cve)

            fetches = fetcher.remote_fetches
            second = fetcher.cves_for(transport, **args)
            assert second.from_cache
            assert second.cves == first.cves
            assert second.source_version == first.source_version
            assert fetcher.remote_fetches == fetches  # no remote command the second time
            folder = tmp_path / "cache" / "changelogs" / pending.source
            assert (folder / "index.json").is_file()
            return
    pytest.fail(f"no pending security update's changelog names a CVE; tried {tried}")


def test_unknown_version_is_unavailable(pending_security: list[Pending]) -> None:
    """A version no repository offers maps to ChangelogUnavailable with apt's real message."""
    pending = pending_security[0]
    fact = DebianChangelogFact(pending.binary, "0.0.0-0patchpilot1")
    with LocalTransport("localhost") as transport:
        result = transport.run(fact.command(), env=dict(FACT_ENV), timeout=120)
    assert result.exit_code == 100
    with pytest.raises(ChangelogUnavailable, match="does not know this version"):
        fact.parse(result)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
def test_fetch_works_as_an_unprivileged_user(pending_security: list[Pending]) -> None:
    runuser = shutil.which("runuser")
    if runuser is None:
        pytest.skip("runuser not found")
    pending = pending_security[0]
    fact = DebianChangelogFact(pending.binary, pending.candidate)
    with LocalTransport("localhost") as transport:
        result = transport.run(
            [runuser, "-u", "nobody", "--", *fact.command()], env=dict(FACT_ENV), timeout=120
        )
    if result.exit_code == 100 and "Failed to fetch" in result.stderr:
        pytest.skip(f"the mirror is unreachable: {result.stderr.strip()[-200:]}")
    if result.exit_code == 3:
        pytest.skip(f"{pending.binary} ships no changelog of its own")
    fetched = fact.parse(result)
    assert parse_changelog(fetched.text)[0].version

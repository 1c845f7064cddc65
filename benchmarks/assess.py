"""Fleet-scale assessment benchmark: 10,000 hosts against the full DSA+DLA lists and KEV.

Generates hosts from 20 package profiles with random drift (and some older versions, so that
real advisories match), imports the real Debian DSA and DLA lists and the CISA KEV catalog into
a fresh store, assesses every host (exact dpkg ordering, verdicts cached per source package and
version), prioritizes every finding, stores findings and risk, and prints hosts/second, findings
and peak RSS. Target, end to end with the store: under 15 s and under 1 GiB on 2 cores.

    .venv/bin/python benchmarks/assess.py [--hosts 10000] [--feeds ../shared/feeds]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from agents.assessment import VerdictCache, assess_host
from agents.prioritization import prioritize
from patchpilot.logging import configure_logging
from patchpilot.models import (
    Ecosystem,
    Exposure,
    FixStatus,
    Host,
    HostFacts,
    InstalledPackage,
    OSFamily,
    OSInfo,
)
from patchpilot.policy import load_policy
from patchpilot.store import Store
from tools.feeds import parse_feed
from tools.feeds.types import FeedKind
from tools.versions import compare

REPO = Path(__file__).resolve().parents[1]
RELEASES = {"bookworm": "12", "bullseye": "11"}


def _fixed_versions(store: Store, release: str) -> dict[str, list[str]]:
    """Every fixed version per source package in a release, oldest first."""
    index = store.advisory_index(Ecosystem.DEBIAN, release)
    out: dict[str, list[str]] = {}
    for source, advisories in index.items():
        versions = sorted(
            {
                a.fix.version
                for a in advisories
                if a.fix.status is FixStatus.FIXED and a.fix.version
            },
            key=_Key,
        )
        if versions:
            out[source] = versions
    return out


class _Key:
    """Sort key adapter for dpkg ordering."""

    def __init__(self, version: str) -> None:
        self.version = version

    def __lt__(self, other: _Key) -> bool:
        return compare("debian", self.version, other.version) < 0


def _profiles(
    rng: random.Random, fixed: dict[str, list[str]], count: int, size: int
) -> list[dict[str, str]]:
    """Package profiles: source package -> installed source version (most at the newest fix)."""
    names = sorted(fixed)
    filler = [f"pp-tool{i}" for i in range(size)]
    profiles = []
    for _ in range(count):
        chosen = rng.sample(names, min(len(names), size // 2))
        profile = {n: fixed[n][-1] for n in chosen}
        for n in rng.sample(filler, size - len(profile)):
            profile[n] = f"1.{rng.randint(0, 9)}-{rng.randint(1, 5)}"
        profiles.append(profile)
    return profiles


def _host_packages(
    rng: random.Random, profile: dict[str, str], fixed: dict[str, list[str]], drift: float
) -> list[InstalledPackage]:
    packages = []
    for source, version in profile.items():
        if source in fixed and rng.random() < drift:
            older = fixed[source][:-1]
            version = rng.choice(older) if older else "0.1-1"  # an older, vulnerable version
        for suffix in ("", "-common")[: rng.randint(1, 2)]:
            packages.append(
                InstalledPackage(
                    name=f"{source}{suffix}",
                    version=version,
                    arch="amd64",
                    source_name=source,
                    source_version=version,
                    ecosystem=Ecosystem.DEBIAN,
                )
            )
    return packages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--profiles", type=int, default=20)
    parser.add_argument("--sources-per-host", type=int, default=400)
    parser.add_argument("--drift", type=float, default=0.03)
    parser.add_argument("--feeds", type=Path, default=REPO.parent / "shared" / "feeds")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    configure_logging("warning")
    policy = load_policy(REPO / "configs" / "policy.yaml")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = Store(Path(tmp) / "bench.db")
        for kind, rel in (
            (FeedKind.DEBIAN_DSA, "debian/DSA_list_2025-02-13.txt"),
            (FeedKind.DEBIAN_DLA, "debian/DLA_list_2025-02-13.txt"),
            (FeedKind.KEV, "kev/known_exploited_vulnerabilities.json"),
        ):
            store.import_batch(parse_feed(kind, args.feeds / rel))
        t_import = time.perf_counter() - t0

        release = "bookworm"
        fixed = _fixed_versions(store, release)
        profiles = _profiles(rng, fixed, args.profiles, args.sources_per_host)

        def hosts() -> Iterator[tuple[Host, list[InstalledPackage]]]:
            # Generated lazily: a real scan streams hosts from the store the same way.
            for i in range(args.hosts):
                host = Host(
                    name=f"host-{i:05d}",
                    address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
                    criticality=rng.randint(1, 5),
                    exposure=rng.choice(list(Exposure)),
                )
                yield host, _host_packages(rng, profiles[i % len(profiles)], fixed, args.drift)

        os_info = OSInfo(
            id="debian",
            version_id=RELEASES[release],
            version_codename=release,
            family=OSFamily.DEBIAN,
        )

        t1 = time.perf_counter()
        index = store.advisory_index(Ecosystem.DEBIAN, release)
        cache = VerdictCache()
        run_id = "bench"
        store.create_run(run_id, kind="scan", target="bench", params={})
        kev_loaded = True
        today = datetime.now(UTC).date()
        findings_total = 0
        by_cve: dict[str, object] = {}
        for host, packages in hosts():
            facts = HostFacts(
                host=host.name,
                os=os_info,
                kernel="6.1.0-28-amd64",
                reboot_required=False,
                package_count=len(packages),
                source_package_count=len({p.source_name for p in packages}),
                ecosystem=Ecosystem.DEBIAN,
            )
            result = assess_host(host.name, facts, packages, index, pending=None, cache=cache)
            findings = list(result.findings)
            store.replace_findings(run_id, host.name, findings)
            missing = {c for f in findings for c in f.cves} - by_cve.keys()
            if missing:
                found = store.enrichment(missing)
                by_cve.update({c: found.get(c) for c in missing})
            risks = [
                prioritize(
                    f,
                    [e for c in f.cves if (e := by_cve.get(c)) is not None],  # type: ignore[misc]
                    host,
                    policy,
                    today=today,
                    kev_feed_loaded=kev_loaded,
                )
                for f in findings
            ]
            store.save_risk(run_id, risks)
            findings_total += len(findings)
        t_assess = time.perf_counter() - t1
        store.close()

    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"feeds imported (DSA+DLA+KEV): {t_import:6.2f} s")
    print(
        f"hosts: {args.hosts:,}  profiles: {args.profiles}  source packages/host: "
        f"{args.sources_per_host}  drift: {args.drift:.0%}"
    )
    print(
        f"assess + prioritize + store: {t_assess:6.2f} s  ->  {args.hosts / t_assess:,.0f} hosts/s"
    )
    print(f"findings stored: {findings_total:,}  verdict cache entries: {len(cache):,}")
    print(f"end to end (import + assess + store): {t_import + t_assess:6.2f} s")
    print(f"peak RSS: {peak_rss_mib:,.0f} MiB")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

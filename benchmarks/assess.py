"""Fleet-scale assessment benchmark: 10,000 hosts against the full DSA+DLA lists and KEV.

Generates hosts from 20 package profiles with random drift (some source packages at an older,
really vulnerable version), imports the real Debian DSA and DLA lists and the CISA KEV catalog
into a fresh store, then assesses every host (exact dpkg ordering, verdicts cached per source
package and version), prioritizes every finding with KEV enrichment, and stores findings and
risk. Prints the time of each phase, hosts/second, findings and peak RSS.
Target, end to end with the store: under 15 s and under 1 GiB on 2 cores.

    .venv/bin/python benchmarks/assess.py [--hosts 10000] [--feeds ../shared/feeds]
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cmp_to_key
from pathlib import Path

from patchpilot.agents.assessment import VerdictCache, assess_host
from patchpilot.agents.prioritization import prioritize
from patchpilot.core.feeds import FeedKind
from patchpilot.core.logging import configure_logging
from patchpilot.core.models import (
    Ecosystem,
    Enrichment,
    Exposure,
    Finding,
    FixStatus,
    Host,
    HostFacts,
    InstalledPackage,
    OSFamily,
    OSInfo,
    RiskAssessment,
)
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.store import Store
from patchpilot.core.versions import compare
from patchpilot.tools.feeds import parse_feed

REPO = Path(__file__).resolve().parents[1]
RELEASE = "bookworm"
OS_INFO = OSInfo(id="debian", version_id="12", version_codename=RELEASE, family=OSFamily.DEBIAN)
FEEDS = (
    (FeedKind.DEBIAN_DSA, "debian/DSA_list_2025-02-13.txt"),
    (FeedKind.DEBIAN_DLA, "debian/DLA_list_2025-02-13.txt"),
    (FeedKind.KEV, "kev/known_exploited_vulnerabilities.json"),
)


@dataclass
class Timings:
    """Seconds spent per phase (host generation is excluded from the product figures)."""

    generate: float = 0.0
    assess: float = 0.0
    prioritize: float = 0.0
    store: float = 0.0
    findings: int = 0


def _package(source: str, suffix: str, version: str) -> InstalledPackage:
    # Test data built from validated feed versions: skip re-validation (model_construct).
    return InstalledPackage.model_construct(
        name=f"{source}{suffix}",
        version=version,
        arch="amd64",
        source_name=source,
        source_version=version,
        ecosystem=Ecosystem.DEBIAN,
    )


def _fixed_versions(store: Store) -> dict[str, list[str]]:
    """Every fixed version per source package in the release, oldest first."""
    key = cmp_to_key(lambda a, b: compare("debian", a, b))
    out: dict[str, list[str]] = {}
    for source, advisories in store.advisory_index(Ecosystem.DEBIAN, RELEASE).items():
        versions = {a.fix.version for a in advisories if a.fix.status is FixStatus.FIXED}
        clean = sorted((v for v in versions if v), key=key)
        if clean:
            out[source] = clean
    return out


def _profiles(
    rng: random.Random, fixed: dict[str, list[str]], count: int, size: int
) -> list[list[InstalledPackage]]:
    """Package profiles (shared, immutable package records), most packages at the newest fix."""
    names = sorted(fixed)
    filler = [f"pp-tool{i}" for i in range(size)]
    profiles = []
    for _ in range(count):
        chosen = {n: fixed[n][-1] for n in rng.sample(names, min(len(names), size // 2))}
        for n in rng.sample(filler, size - len(chosen)):
            chosen[n] = f"1.{rng.randint(0, 9)}-{rng.randint(1, 5)}"
        packages = []
        for source, version in chosen.items():
            for suffix in ("", "-common")[: rng.randint(1, 2)]:
                packages.append(_package(source, suffix, version))
        profiles.append(packages)
    return profiles


def _hosts(
    args: argparse.Namespace,
    rng: random.Random,
    profiles: list[list[InstalledPackage]],
    fixed: dict[str, list[str]],
) -> Iterator[tuple[Host, list[InstalledPackage]]]:
    """Hosts generated lazily, as a scan streams them from the store."""
    for i in range(args.hosts):
        host = Host(
            name=f"host-{i:05d}",
            address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            criticality=rng.randint(1, 5),
            exposure=rng.choice(list(Exposure)),
        )
        packages = list(profiles[i % len(profiles)])
        for j, pkg in enumerate(packages):
            if pkg.source_name in fixed and rng.random() < args.drift:
                older = fixed[pkg.source_name][:-1]
                version = rng.choice(older) if older else "0.1-1"  # older: really vulnerable
                packages[j] = _package(pkg.source_name, pkg.name[len(pkg.source_name) :], version)
        yield host, packages


def _run(args: argparse.Namespace, store: Store, policy: Policy) -> Timings:
    rng = random.Random(args.seed)
    t = Timings()
    started = time.perf_counter()
    fixed = _fixed_versions(store)
    profiles = _profiles(rng, fixed, args.profiles, args.sources_per_host)
    t.generate += time.perf_counter() - started

    index = store.advisory_index(Ecosystem.DEBIAN, RELEASE)
    cache = VerdictCache()
    store.create_run("bench", kind="scan", target="bench", params={})
    # Long-lived data (advisory index, package profiles, imported modules) goes to the
    # collector's permanent generation, as a long-running scan process would do after loading
    # its feeds: full collections, triggered by the findings a run accumulates, then no longer
    # walk it (about half of their cost here). Outputs are unaffected.
    gc.freeze()
    today = datetime.now(UTC).date()
    enrichment: dict[str, Enrichment | None] = {}
    batch: dict[str, list[Finding]] = {}
    risks: list[RiskAssessment] = []
    hosts = _hosts(args, rng, profiles, fixed)
    while True:
        t0 = time.perf_counter()
        item = next(hosts, None)
        t1 = time.perf_counter()
        t.generate += t1 - t0
        if item is None:
            break
        host, packages = item
        facts = HostFacts(
            host=host.name,
            os=OS_INFO,
            kernel="6.1.0-28-amd64",
            reboot_required=False,
            package_count=len(packages),
            source_package_count=args.sources_per_host,
            ecosystem=Ecosystem.DEBIAN,
        )
        findings = list(assess_host(host.name, facts, packages, index, cache=cache).findings)
        t2 = time.perf_counter()
        t.assess += t2 - t1
        missing = {c for f in findings for c in f.cves} - enrichment.keys()
        if missing:
            found = store.enrichment(missing)
            enrichment.update({c: found.get(c) for c in missing})
        for f in findings:
            known = [e for c in f.cves if (e := enrichment.get(c)) is not None]
            risks.append(prioritize(f, known, host, policy, today=today, kev_feed_loaded=True))
        t3 = time.perf_counter()
        t.prioritize += t3 - t2
        batch[host.name] = findings
        t.findings += len(findings)
        if len(batch) >= args.batch:
            _flush(store, batch, risks)
        t.store += time.perf_counter() - t3
    t0 = time.perf_counter()
    _flush(store, batch, risks)
    t.store += time.perf_counter() - t0
    return t


def _flush(store: Store, batch: dict[str, list[Finding]], risks: list[RiskAssessment]) -> None:
    store.replace_findings_bulk("bench", batch)
    store.save_risk("bench", risks)
    batch.clear()
    risks.clear()


def main() -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--profiles", type=int, default=20)
    parser.add_argument("--sources-per-host", type=int, default=400)
    parser.add_argument("--drift", type=float, default=0.03)
    parser.add_argument("--batch", type=int, default=500, help="hosts per store transaction")
    parser.add_argument("--feeds", type=Path, default=REPO.parent / "shared" / "feeds")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    configure_logging("error")
    policy = load_policy(REPO / "configs" / "policy.yaml")

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = Store(Path(tmp) / "bench.db")
        for kind, rel in FEEDS:
            store.import_batch(parse_feed(kind, args.feeds / rel))
        t_import = time.perf_counter() - t0
        t = _run(args, store, policy)
        store.close()

    work = t.assess + t.prioritize + t.store
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"hosts {args.hosts:,} | profiles {args.profiles} | source packages/host "
        f"{args.sources_per_host} | drift {args.drift:.0%} | store batch {args.batch}"
    )
    print(f"import DSA+DLA+KEV     {t_import:7.2f} s")
    print(f"assess                 {t.assess:7.2f} s")
    print(f"prioritize             {t.prioritize:7.2f} s")
    print(f"store findings + risk  {t.store:7.2f} s")
    print(
        f"end to end (import + assess + prioritize + store) {t_import + work:7.2f} s "
        f"-> {args.hosts / work:,.0f} hosts/s after import"
    )
    print(f"(host generation, not counted: {t.generate:.2f} s)")
    print(f"findings {t.findings:,} | peak RSS {rss:,.0f} MiB")


if __name__ == "__main__":
    main()

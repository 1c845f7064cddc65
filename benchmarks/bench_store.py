"""Throughput of patchpilot.core.store: feed import, advisory lookups, findings writes and reads.

Usage::

    .venv/bin/python benchmarks/bench_store.py [--advisories 50000] [--hosts 10000]
        [--findings-per-host 5] [--synchronous FULL|NORMAL] [--keep DIR]

Prints a table; makes no assertions. Data are synthetic Debian bookworm advisories (10 per
source package, 80 % fixed, each with a CVE alias) and findings. Timings include pydantic
validation of what is read back, as callers see it.

* import (new keys): one 50k-advisory batch into an empty store (one transaction).
* import (merge): a second document with the same keys, 10 % of fixed versions bumped and
  the rest restated, so every record goes through the merge path.
* advisory_index: the whole release, source package -> merged advisories; built from the
  database (no cache), then served from the in-process cache (valid until advisories change).
* advisories_for: one source package at a time.
* findings write: one ``replace_findings`` transaction per host, plus ``save_risk``.
* findings read: ``findings()`` across all hosts (latest run per host) with risk and KEV.
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

from patchpilot.core.feeds import FeedBatch, FeedKind
from patchpilot.core.logging import configure_logging
from patchpilot.core.models import (
    Advisory,
    Ecosystem,
    Finding,
    FixState,
    FixStatus,
    KEVEntry,
    Provenance,
    RiskAssessment,
    Severity,
    SSVCOutcome,
)
from patchpilot.core.store import Store, finding_key

T0 = datetime(2024, 7, 1, tzinfo=UTC)
PER_PACKAGE = 10
SOURCE = "https://security-tracker.debian.org/tracker/data/json"


def advisories(n: int, fetched_at: datetime, bump_every: int = 0) -> tuple[Advisory, ...]:
    """``n`` advisories over ``n / PER_PACKAGE`` source packages, as a parser yields them."""
    out: list[Advisory] = []
    for i in range(n):
        package, j = divmod(i, PER_PACKAGE)
        cve = f"CVE-2024-{i + 10000}"
        if j % 5 == 4:
            fix = FixState(status=FixStatus.NO_FIX_YET)
        else:
            bump = 2 if bump_every and i % bump_every == 0 else 1
            fix = FixState.fixed(f"{package % 50}.{j}.{package}-1+deb12u{bump}")
        out.append(
            Advisory(
                id=f"DSA-{i + 1000}-1",
                aliases=(cve,),
                ecosystem=Ecosystem.DEBIAN,
                release="bookworm",
                source_package=f"pkg{package}",
                fix=fix,
                severity=list(Severity)[i % len(Severity)],
                summary="synthetic advisory text " * 4,
                feed="debian-json",
                provenance=Provenance(
                    feed="debian-json", source=SOURCE, record_id=cve, fetched_at=fetched_at
                ),
            )
        )
    return tuple(out)


def feed_batch(items: tuple[Advisory, ...], fetched_at: datetime, tag: str) -> FeedBatch:
    """A batch of ``items``."""
    return FeedBatch(
        kind=FeedKind.DEBIAN_JSON,
        source=SOURCE,
        fetched_at=fetched_at,
        sha256=hashlib.sha256(tag.encode()).hexdigest(),
        advisories=items,
        kev=tuple(
            (
                f"CVE-2024-{i + 10000}",
                KEVEntry(date_added=date(2024, 7, 1), due_date=date(2024, 7, 22)),
            )
            for i in range(0, len(items), 97)
        ),
    )


def findings_of(host: str, n: int) -> list[Finding]:
    """``n`` findings of ``host``."""
    return [
        Finding(
            host=host,
            source_package=f"pkg{k}",
            binary_packages=(f"lib{k}", f"pkg{k}-bin"),
            installed_source_version=f"1.{k}-1",
            advisory_id=f"DSA-{k * PER_PACKAGE + 1000}-1",
            cves=(f"CVE-2024-{k * PER_PACKAGE + 10000}",),
            fix=FixState.fixed(f"1.{k}-2"),
            fix_reachable=k % 2 == 0,
            severity=Severity.HIGH,
            first_seen=T0,
        )
        for k in range(n)
    ]


def risk_of(finding: Finding, score: float) -> RiskAssessment:
    """A risk assessment."""
    return RiskAssessment(
        finding_key=finding_key(finding),
        score=score,
        factors=(),
        ssvc=SSVCOutcome.ATTEND,
        due_date=date(2024, 8, 1),
        rationale="bench",
    )


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def row(label: str, count: float, unit: str, seconds: float) -> None:
    """Print one result line."""
    rate = count / seconds if seconds else float("inf")
    print(f"{label:<34} {count:>9,.0f} {unit:<12} {seconds:8.3f} s {rate:>12,.0f} {unit}/s")


def run(
    root: Path,
    n_advisories: int,
    n_hosts: int,
    per_host: int,
    synchronous: Literal["FULL", "NORMAL"],
) -> None:
    """Run every measurement in a store under ``root``."""
    first = feed_batch(advisories(n_advisories, T0), T0, "one")
    day2 = T0 + timedelta(days=1)
    second = feed_batch(advisories(n_advisories, day2, bump_every=10), day2, "two")
    batches = [first, second]
    del first, second
    packages = [f"pkg{p}" for p in range(n_advisories // PER_PACKAGE)]
    print(f"SQLite store at {root}, synchronous={synchronous}")
    print(f"{'measure':<34} {'count':>9} {'unit':<12} {'time':>10} {'rate':>14}")
    with Store(root / "bench.db", synchronous=synchronous) as store:
        row(
            "import (new keys)",
            n_advisories,
            "advisories",
            timed(lambda: store.import_batch(batches[0])),
        )
        row(
            "import (merge path)",
            n_advisories,
            "advisories",
            timed(lambda: store.import_batch(batches[1])),
        )
        row(
            "import (duplicate doc)",
            n_advisories,
            "advisories",
            timed(lambda: store.import_batch(batches[1])),
        )
        batches.clear()  # free memory: fewer objects for the garbage collector to scan

        lookups = 3
        with Store(root / "bench.db", index_cache_size=0) as uncached:
            seconds = timed(
                lambda: [
                    uncached.advisory_index(Ecosystem.DEBIAN, "bookworm") for _ in range(lookups)
                ]
            )
        row("advisory_index, built (advisories)", lookups * n_advisories, "advisories", seconds)
        store.advisory_index(Ecosystem.DEBIAN, "bookworm")  # fills the cache
        lookups = 20
        seconds = timed(
            lambda: [store.advisory_index(Ecosystem.DEBIAN, "bookworm") for _ in range(lookups)]
        )
        row("advisory_index, cached", lookups, "indexes", seconds)
        sample = packages[: min(len(packages), 2000)]
        seconds = timed(
            lambda: [store.advisories_for(Ecosystem.DEBIAN, "bookworm", p) for p in sample]
        )
        row("advisories_for (per package)", len(sample), "lookups", seconds)
        cves = [f"CVE-2024-{i + 10000}" for i in range(0, n_advisories, 5)]
        row("enrichment", len(cves), "CVEs", timed(lambda: store.enrichment(cves)))

        store.create_run("bench", kind="scan", target="all", params={})
        hosts = [f"host-{h:05d}" for h in range(n_hosts)]
        per = {h: findings_of(h, per_host) for h in hosts}

        def write() -> None:
            for h in hosts:
                store.replace_findings("bench", h, per[h])

        seconds = timed(write)
        row("replace_findings (hosts)", n_hosts, "hosts", seconds)
        row("replace_findings (findings)", n_hosts * per_host, "findings", seconds)
        risks = [
            risk_of(f, float(i % 100)) for i, f in enumerate(f for fs in per.values() for f in fs)
        ]
        row(
            "save_risk (one call)",
            len(risks),
            "assessments",
            timed(lambda: store.save_risk("bench", risks)),
        )
        result: list[object] = []
        seconds = timed(lambda: result.extend(store.findings()))
        row("findings() latest per host", len(result), "records", seconds)
        seconds = timed(lambda: store.findings(min_score=90, kev=False, actionable=True))
        row("findings() filtered", 1, "queries", seconds)
    size = sum(p.stat().st_size for p in root.glob("bench.db*"))
    print(f"database size (with WAL): {size / 1e6:,.1f} MB")


def main() -> None:
    """Parse arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--advisories", type=int, default=50_000)
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--findings-per-host", type=int, default=5)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--keep", type=Path, default=None, help="directory to keep the database in")
    args = parser.parse_args()
    configure_logging("warning")
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args.keep, args.advisories, args.hosts, args.findings_per_host, args.synchronous)
        return
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        run(Path(tmp), args.advisories, args.hosts, args.findings_per_host, args.synchronous)


if __name__ == "__main__":
    main()

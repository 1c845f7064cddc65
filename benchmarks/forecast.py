"""Forecast backtest on real history: the DSA and DLA lists replayed against a recorded inventory.

Usage::

    .venv/bin/python benchmarks/forecast.py [--dsa PATH] [--dla PATH]
        [--inventory benchmarks/data/bookworm-lab-sources.txt] [--since 2015-01-05]
        [--horizon 4] [--step 4] [--min-train 104]

Each advisory of the Debian security tracker's lists (parsed by patchpilot's own parser,
:func:`patchpilot.tools.feeds.debian.parse_dsa` / ``parse_dla``) that fixes (a version to
install, on any release) a source package of the inventory counts once, in the week (Monday,
UTC) of its publication date: the weekly workload "new advisories affecting this host". The
series runs from ``--since`` to the last complete week of the lists. The models of
:mod:`patchpilot.app.forecast` are backtested on it with a rolling origin (every ``--step``
weeks from ``--min-train`` weeks on, forecasting ``--horizon`` weeks each time); the MAE of
each model and of the naive baseline is printed, and whether the best model beats the naive
one. Makes no assertions.

The default lists are the snapshots in ../shared/feeds/debian (read in place); the default
inventory is the source packages of the lab's Debian 12 base image (benchmarks/data).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from patchpilot.app.forecast import MODELS, backtest, season_length, week_start, weekly_counts
from patchpilot.core.models import Advisory, FixStatus
from patchpilot.tools.feeds.debian import parse_dla, parse_dsa

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "feeds" / "debian"
DEFAULT_DSA = SHARED / "DSA_list_2025-02-13.txt"
DEFAULT_DLA = SHARED / "DLA_list_2025-02-13.txt"
DEFAULT_INVENTORY = HERE / "data" / "bookworm-lab-sources.txt"


def read_inventory(path: Path) -> set[str]:
    """Source package names, one a line (``#`` comments and blank lines skipped)."""
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            names.add(text)
    return names


def advisories(dsa: Path, dla: Path) -> Iterator[Advisory]:
    """Every advisory of both lists (one per advisory id, release and source package)."""
    now = datetime.now(UTC)
    for parse, path in ((parse_dsa, dsa), (parse_dla, dla)):
        yield from parse(path, source=str(path), fetched_at=now).advisories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsa", type=Path, default=DEFAULT_DSA)
    parser.add_argument("--dla", type=Path, default=DEFAULT_DLA)
    parser.add_argument("--inventory", type=Path, default=DEFAULT_INVENTORY)
    parser.add_argument("--since", type=date.fromisoformat, default=date(2015, 1, 5))
    parser.add_argument("--horizon", type=int, default=4)
    parser.add_argument("--step", type=int, default=4)
    parser.add_argument("--min-train", type=int, default=104)
    args = parser.parse_args()

    installed = read_inventory(args.inventory)
    started = time.perf_counter()
    events: list[tuple[datetime, str]] = []
    newest: datetime | None = None
    total = 0
    for advisory in advisories(args.dsa, args.dla):
        total += 1
        if advisory.published is None:
            continue
        newest = advisory.published if newest is None else max(newest, advisory.published)
        if (
            advisory.source_package in installed
            and advisory.fix.status is FixStatus.FIXED
            and advisory.published.date() >= args.since
        ):
            events.append((advisory.published, advisory.id))
    parsed_s = time.perf_counter() - started
    if newest is None or not events:
        raise SystemExit("no advisory of the lists touches the inventory")
    end = week_start(newest)  # the lists' last week is not complete
    series = weekly_counts(events, start=args.since, end=end)
    values = [float(v) for _, v in series]
    season = season_length(len(values), args.horizon, args.min_train)

    started = time.perf_counter()
    result = backtest(values, args.horizon, season=season, min_train=args.min_train, step=args.step)
    backtest_s = time.perf_counter() - started

    print(f"lists: {args.dsa.name}, {args.dla.name} ({total} advisory records, {parsed_s:.1f} s)")
    print(f"inventory: {args.inventory.name} ({len(installed)} source packages)")
    print(
        f"series: {len(values)} weeks {series[0][0]} .. {series[-1][0] + timedelta(days=6)}, "
        f"{len({a for _, a in events})} advisories; mean {statistics.fmean(values):.2f}/week, "
        f"median {statistics.median(values):g}, max {max(values):g}, "
        f"{sum(1 for v in values if v == 0)} weeks with none"
    )
    print(
        f"backtest: rolling origin, horizon {args.horizon} weeks, first origin at week "
        f"{args.min_train}, every {args.step} weeks: {result.origins} origins, season {season} "
        f"weeks ({backtest_s:.1f} s)"
    )
    print(f"{'model':<16}{'MAE':>8}  vs naive")
    baseline = result.mae.get("naive")
    for model in MODELS:
        if model not in result.mae:
            print(f"{model:<16}{'-':>8}  (not enough history)")
            continue
        mae = result.mae[model]
        ratio = f"{mae / baseline:.2f}x" if baseline else "-"
        print(f"{model:<16}{mae:>8.3f}  {ratio}")
    print(f"result: {result.text}")


if __name__ == "__main__":
    main()

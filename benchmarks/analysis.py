"""Time of the post-patch judge (``patchpilot.agents.analysis.judge``) on synthetic series.

10 metrics (latency-like, lognormal) per comparison, baseline and canary each ``N`` samples for
N = 60, 600 and 6000 (one host sampled once a minute for an hour, ten hosts, a hundred), half of
the metrics shifted by 30 % in the canary so both the "identical" shortcut and the full
Mann-Whitney + Hodges-Lehmann interval path run. Prints, per N, the median and the worst of
``--repeat`` judge calls, and the verdict (so a change in the judge's answer shows). No
assertions: the figures go in the note. The soak-length and false-alarm figures on real lab
samples are issue 17's other benchmark (part 1's note).

    .venv/bin/python benchmarks/analysis.py [--repeat 20] [--sizes 60,600,6000]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from patchpilot.agents.analysis import judge
from patchpilot.core.logging import configure_logging
from patchpilot.core.policy import AnalysisPolicy, HttpMetric

METRICS = 10


def specs() -> list[HttpMetric]:
    """10 latency metrics of one probe URL, half critical."""
    return [
        HttpMetric(
            name=f"m{i}",
            url="http://{host}:8080/",
            measure="latency",
            critical=i % 2 == 0,
        )
        for i in range(METRICS)
    ]


def series(n: int, seed: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Baseline and canary samples of every metric; odd metrics 30 % slower in the canary."""
    rng = np.random.default_rng(seed)
    baseline: dict[str, list[float]] = {}
    canary: dict[str, list[float]] = {}
    for i in range(METRICS):
        base = rng.lognormal(mean=np.log(0.01), sigma=0.25, size=n)
        shift = 1.3 if i % 2 else 1.0
        baseline[f"m{i}"] = base.tolist()
        canary[f"m{i}"] = (rng.lognormal(mean=np.log(0.01), sigma=0.25, size=n) * shift).tolist()
    return baseline, canary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--sizes", default="60,600,6000")
    args = parser.parse_args()
    configure_logging("warning")
    metrics = specs()
    policy = AnalysisPolicy(enabled=True, metrics=tuple(metrics), min_samples=50)
    print(f"judge: {METRICS} metrics, baseline and canary of N samples each")
    print(f"{'N':>6} {'median ms':>10} {'max ms':>8}  verdict (score)")
    for n in (int(s) for s in args.sizes.split(",")):
        baseline, canary = series(n, seed=n)
        judge(baseline, canary, metrics, policy)  # warm-up (imports, scipy caches)
        times = []
        verdict = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            verdict = judge(baseline, canary, metrics, policy)
            times.append((time.perf_counter() - started) * 1000)
        assert verdict is not None
        print(
            f"{n:>6} {statistics.median(times):>10.2f} {max(times):>8.2f}  "
            f"{verdict.verdict.value} ({verdict.score:g})"
        )


if __name__ == "__main__":
    main()

"""Post-patch analysis measured: false alarms, detection and soak length on real lab samples,
and the judge's time.

**Real samples** (issue 17's "Done means"): the acme-web servers of the lab packages (the very
``server.py`` each .deb installs, :func:`patchpilot.lab.serve.serve_releases`) run as processes
on 127.0.0.1, are sampled with the product's HTTP provider (:func:`collect_hosts`, every host of a
trial over the same window, as the ``peers`` baseline does) and judged with the product's judge
at the lab policy's analysis section (``lab_policy_document``: 60 samples 0.05 s apart, latency
median ratio 2x / 3x critical, error_rate more than 1 failed request). Per trial:

* healthy rollout, ``peers``: baseline a 1.0.0 server, canary a 1.1.0 server;
* no-change control, ``peers``: baseline a 1.0.0 server, canary another 1.0.0 server;
* healthy rollout, ``self`` (the one-host canary's fallback): the 1.0.0 server sampled alone,
  then the 1.1.0 server alone (two windows, at most the policy's count each);
* regression, ``peers``: baseline a 1.0.0 server, canary a 1.3.0 server (``/`` 150-250 ms,
  every 25th request 500); these trials run ``--parallel`` at a time, each with its own pair
  of servers, the healthy ones one after the other.

In every pair the canary is submitted before its baseline, as the product's analysis node does
(``[*canary, *peers]``): probes of several hosts fire at the same ticks and the host submitted
first measures slower (client-side), so this is the harsher order.

Each trial samples ``max(--samples)`` requests per host; a soak of N samples is the first N of
them (``N x interval`` after the soak starts), judged for every N of ``--samples``: once at the
policy's ``min_samples`` and, for N below it, once with ``min_samples = N`` (what the statistics
alone would do). Prints, per scenario and N, how many trials were judged pass / marginal /
nodata / fail, the false-fail rate with its one-sided 95 % upper bound (Clopper-Pearson), the
detection rate, and the shortest soak at which no healthy peers or no-change trial fails and
every regression does.

**Judge time** (synthetic): 10 lognormal latency metrics per comparison, baseline and canary of
N samples each (``--sizes``), half of them 30 % slower in the canary; median and worst of
``--repeat`` calls.

No assertions: the figures go in the README and the note. Servers listen on 127.0.0.1 only and
are ended by pid. About 5 minutes with the defaults; ``--quick`` (5 trials, 2 self trials, N
up to 60) about 40 s.

    .venv/bin/python benchmarks/analysis.py [--trials 20] [--quick] [--samples 10,20,30,50,60,100]
        [--parallel 10] [--self-trials N] [--repeat 20] [--sizes 60,600,6000]
        [--skip-timing] [--skip-lab]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import numpy as np
from scipy import stats

from patchpilot.agents.analysis import AnalysisVerdict, Verdict, judge
from patchpilot.core.logging import configure_logging
from patchpilot.core.models import Host
from patchpilot.core.policy import AnalysisPolicy, HttpMetric, Policy
from patchpilot.lab.models import LabHost
from patchpilot.lab.policy import lab_policy_document
from patchpilot.lab.serve import serve_releases
from patchpilot.tools.metrics import (
    HttpProvider,
    MetricWindow,
    PrometheusProvider,
    Providers,
    collect_hosts,
)

METRICS = 10
Samples = dict[str, list[float]]
"""One host's window: metric name -> samples."""

ROLLOUT = "1.0.0 -> 1.1.0  peers"
CONTROL = "1.0.0 -> 1.0.0  peers (no change)"
SELF = "1.0.0 -> 1.1.0  self"
REGRESSION = "1.0.0 -> 1.3.0  peers"
HEALTHY = (ROLLOUT, CONTROL, SELF)
#: The healthy scenarios the targets are set on (the issue's rollouts and control).
TARGETED = (ROLLOUT, CONTROL)


# --- judge time on synthetic series -----------------------------------------------------------


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


def time_judge(sizes: Sequence[int], repeat: int) -> None:
    """Print the judge's median and worst time per N."""
    metrics = specs()
    policy = AnalysisPolicy(enabled=True, metrics=tuple(metrics), min_samples=50)
    print(f"judge time: {METRICS} metrics, baseline and canary of N samples each")
    print(f"{'N':>6} {'median ms':>10} {'max ms':>8}  verdict (score)")
    for n in sizes:
        baseline, canary = series(n, seed=n)
        judge(baseline, canary, metrics, policy)  # warm-up (imports, scipy caches)
        times = []
        verdict = None
        for _ in range(repeat):
            started = time.perf_counter()
            verdict = judge(baseline, canary, metrics, policy)
            times.append((time.perf_counter() - started) * 1000)
        assert verdict is not None
        print(
            f"{n:>6} {statistics.median(times):>10.2f} {max(times):>8.2f}  "
            f"{verdict.verdict.value} ({verdict.score:g})"
        )


# --- false alarms, detection and soak length on real lab samples -----------------------------


@dataclass
class Trial:
    """One comparison: the baseline's and the canary's full windows."""

    baseline: Samples
    canary: Samples
    count: int
    """Requests per host in the window (the longest soak it can be judged at)."""


@dataclass
class Outcomes:
    """Verdicts per scenario, soak length N and variant (``policy`` or ``min=N``)."""

    verdicts: dict[tuple[str, int, str], list[AnalysisVerdict]] = field(default_factory=dict)

    def add(self, scenario: str, n: int, variant: str, verdict: AnalysisVerdict) -> None:
        self.verdicts.setdefault((scenario, n, variant), []).append(verdict)

    def get(self, scenario: str, n: int, variant: str) -> list[AnalysisVerdict]:
        return self.verdicts.get((scenario, n, variant), [])


def _count(verdicts: Sequence[AnalysisVerdict], kind: Verdict) -> int:
    return sum(v.verdict is kind for v in verdicts)


def _upper95(failures: int, trials: int) -> float:
    """One-sided 95 % Clopper-Pearson upper bound of a rate seen ``failures`` of ``trials``."""
    if failures >= trials:
        return 1.0
    return float(stats.beta.ppf(0.95, failures + 1, trials - failures))


def _lab_hosts(ports: dict[str, int]) -> tuple[list[Host], AnalysisPolicy]:
    """Inventory hosts named as ``ports`` and the lab policy's analysis built for them."""
    lab = [
        LabHost(name=name, index=i + 1, port=2201 + i, acme_port=port)
        for i, (name, port) in enumerate(ports.items())
    ]
    analysis = Policy.model_validate(lab_policy_document(lab)).analysis
    return [Host(name=h.name, address=h.address) for h in lab], analysis


def _sample(
    hosts: Sequence[Host], analysis: AnalysisPolicy, count: int, providers: Providers
) -> dict[str, Samples]:
    """Every host sampled over one window (the product's collection): host -> metric -> samples."""
    window = MetricWindow(start=datetime.now(UTC), interval_s=analysis.interval_s, count=count)
    by_host = collect_hosts(
        hosts, lambda _: analysis.metrics, window, providers, max_workers=len(hosts)
    )
    return {
        host: {metric: list(s.samples) for metric, s in metrics.items()}
        for host, metrics in by_host.items()
    }


def _prefix(samples: Samples, n: int) -> Samples:
    return {metric: values[:n] for metric, values in samples.items()}


def _port(url: str) -> int:
    port = httpx.URL(url).port
    assert port is not None
    return port


@dataclass
class LabRun:
    """The trials of every scenario and how long sampling took."""

    trials: dict[str, list[Trial]]
    analysis: AnalysisPolicy
    seconds: dict[str, float]
    """Sampling time per phase."""
    servers: int


def collect_lab(
    trials: int,
    count: int,
    parallel: int,
    self_trials: int,
    progress: Callable[[str], None],
) -> LabRun:
    """Run the servers, sample every trial; the servers are ended on return.

    ``self`` trials sample the 1.0.0 host alone, then the 1.1.0 host alone, each at most the
    policy's count (to bound the run), as the one-host canary's ``self`` baseline does.
    """
    slots = max(1, min(parallel, trials))
    versions = ["1.0.0", "1.1.0", "1.0.0", "1.0.0"] + ["1.0.0", "1.3.0"] * slots
    with ExitStack() as stack:
        urls = stack.enter_context(serve_releases(versions))
        names = ["base", "new", "ctl-base", "ctl-same"]
        for k in range(slots):
            names += [f"reg-base-{k}", f"reg-new-{k}"]
        hosts, analysis = _lab_hosts(
            {name: _port(url) for name, url in zip(names, urls, strict=True)}
        )
        by_name = {h.name: h for h in hosts}
        providers = Providers(
            stack.enter_context(HttpProvider()), stack.enter_context(PrometheusProvider())
        )
        # Canary before baseline in every pair, as the product's analysis node orders them
        # ([*canary, *peers]): the probes fire at the same ticks, and the host submitted first
        # measures slower (client-side contention), so this order is the harsher one.
        healthy_hosts = [by_name[n] for n in ("new", "base", "ctl-same", "ctl-base")]
        windows: list[dict[str, Samples]] = []
        seconds: dict[str, float] = {}
        started = time.monotonic()
        for t in range(trials):
            windows.append(_sample(healthy_hosts, analysis, count, providers))
            progress(f"healthy window {t + 1}/{trials}")
        seconds["healthy peers, one trial at a time"] = time.monotonic() - started
        out: dict[str, list[Trial]] = {
            ROLLOUT: [Trial(w["base"], w["new"], count) for w in windows],
            CONTROL: [Trial(w["ctl-base"], w["ctl-same"], count) for w in windows],
            SELF: [],
            REGRESSION: [],
        }
        started = time.monotonic()
        self_count = min(count, analysis.count)
        for t in range(self_trials):
            # The host's own window before the patch, then (another process, the new release)
            # the window after it: different windows, so the machine's load can differ.
            before = _sample([by_name["base"]], analysis, self_count, providers)["base"]
            after = _sample([by_name["new"]], analysis, self_count, providers)["new"]
            out[SELF].append(Trial(before, after, self_count))
            progress(f"self trial {t + 1}/{self_trials}")
        if self_trials:
            seconds["healthy self, two windows per trial"] = time.monotonic() - started
        started = time.monotonic()
        while len(out[REGRESSION]) < trials:
            batch = min(slots, trials - len(out[REGRESSION]))
            batch_hosts = [
                by_name[f"reg-{side}-{k}"] for k in range(batch) for side in ("new", "base")
            ]
            window = _sample(batch_hosts, analysis, count, providers)
            out[REGRESSION] += [
                Trial(window[f"reg-base-{k}"], window[f"reg-new-{k}"], count) for k in range(batch)
            ]
            progress(f"regression trials {len(out[REGRESSION])}/{trials}")
        seconds[f"regression, {slots} trials at a time"] = time.monotonic() - started
    return LabRun(out, analysis, seconds, len(versions))


def judge_lab(run: LabRun, sizes: Sequence[int]) -> Outcomes:
    """Judge every trial's first N samples, for every N (and ``min_samples = N`` below it)."""
    outcomes = Outcomes()
    analysis = run.analysis
    for scenario, trials in run.trials.items():
        for trial in trials:
            for n in (n for n in sizes if n <= trial.count):
                base, can = _prefix(trial.baseline, n), _prefix(trial.canary, n)
                outcomes.add(scenario, n, "policy", judge(base, can, analysis.metrics, analysis))
                if n < analysis.min_samples:
                    lowered = analysis.model_copy(update={"min_samples": n})
                    outcomes.add(scenario, n, "min=n", judge(base, can, lowered.metrics, lowered))
    return outcomes


def _latency_ratio(verdict: AnalysisVerdict) -> float | None:
    latency = next((m for m in verdict.metrics if m.name == "latency"), None)
    if latency is None or not latency.baseline.median or latency.canary.median is None:
        return None
    return latency.canary.median / latency.baseline.median


def _significantly_higher(verdict: AnalysisVerdict, analysis: AnalysisPolicy) -> bool:
    """Whether the latency shift's interval clears the tolerance upwards (Kayenta's High
    without the effect-size floor: what a neutral ``allowed_increase`` would have failed)."""
    latency = next((m for m in verdict.metrics if m.name == "latency"), None)
    if latency is None or latency.ci_low is None or latency.estimate is None:
        return False
    return latency.ci_low > analysis.tolerance * abs(latency.estimate)


def _counts_row(label: str, verdicts: Sequence[AnalysisVerdict], healthy: bool) -> str:
    n = len(verdicts)
    passed, marginal, nodata, failed = (
        _count(verdicts, v) for v in (Verdict.PASS, Verdict.MARGINAL, Verdict.NODATA, Verdict.FAIL)
    )
    if healthy:
        rate = (
            f"false fail {failed}/{n} = {failed / n:.0%} (95 % upper {_upper95(failed, n):.1%}),"
            f" marginal {marginal}/{n}"
        )
    else:
        rate = f"detected {failed}/{n} = {failed / n:.0%}"
    return f"  {label:<36} {passed:>4} {marginal:>4} {nodata:>6} {failed:>4}   {rate}"


def _evidence(run: LabRun, outcomes: Outcomes, count: int) -> None:
    """The closest calls at the policy's count: latency ratios and canary errors per scenario."""
    print(f"\n  evidence at {count} samples (canary vs baseline, over the trials):")
    for scenario, trials in run.trials.items():
        verdicts = outcomes.get(scenario, count, "policy")
        if not verdicts:
            continue
        ratios = [r for r in map(_latency_ratio, verdicts) if r is not None]
        p_values = [
            m.p_value
            for v in verdicts
            for m in v.metrics
            if m.name == "latency" and m.p_value is not None
        ]
        errors = [int(sum(t.canary.get("error_rate", [])[:count])) for t in trials]
        base_errors = sum(int(sum(t.baseline.get("error_rate", [])[:count])) for t in trials)
        ratio = (
            f"latency p50 ratio median {statistics.median(ratios):.2f}, "
            f"range {min(ratios):.2f}..{max(ratios):.2f}"
            if ratios
            else "latency p50 ratio: none"
        )
        p_low = f", smallest p {min(p_values):.2g}" if p_values else ""
        shifted = sum(_significantly_higher(v, run.analysis) for v in verdicts)
        p_low += f", significantly higher in {shifted}/{len(verdicts)}"
        print(
            f"  {scenario:<36} {ratio}{p_low}; canary errors {min(errors)}..{max(errors)} "
            f"per trial (baseline {base_errors} in all)"
        )


def report_lab(run: LabRun, outcomes: Outcomes, sizes: Sequence[int], trials: int) -> None:
    """Print the tables."""
    analysis = run.analysis
    latency, errors = analysis.metrics
    assert isinstance(latency, HttpMetric)
    assert isinstance(errors, HttpMetric)
    interval = analysis.interval_s
    count = analysis.count
    print(
        f"\nfalse alarms and detection on real lab samples: {run.servers} acme-web servers "
        "(the lab packages' server.py) on 127.0.0.1, HttpProvider, the lab policy's analysis:"
    )
    print(
        f"  {count} samples {interval:g} s apart, min_samples {analysis.min_samples}, "
        f"confidence {analysis.confidence:g}, latency {latency.effect_size.measure.value} "
        f">= {latency.effect_size.allowed_increase:g} (critical "
        f"{latency.effect_size.critical_increase:g}), error_rate fail_above "
        f"{errors.fail_above:g} failure_limit {errors.failure_limit}, pass "
        f"{analysis.pass_score:g} / marginal {analysis.marginal_score:g}"
    )
    self_trials = run.trials[SELF]
    self_note = (
        f" (self: {len(self_trials)} trials of {self_trials[0].count} samples)"
        if self_trials
        else " (self: not run)"
    )
    print(
        f"  {trials} trials per scenario, {max(sizes)} samples per host and trial{self_note}; "
        "canary probed before its baseline as in the product; sampling took "
        + ", ".join(f"{sec:.0f} s ({phase})" for phase, sec in run.seconds.items())
    )
    if count in sizes:
        print(f"\n  at the policy's count ({count} samples = {count * interval:g} s of soak):")
        print(f"  {'scenario':<36} {'pass':>4} {'marg':>4} {'nodata':>6} {'fail':>4}")
        for scenario in (*HEALTHY, REGRESSION):
            verdicts = outcomes.get(scenario, count, "policy")
            if verdicts:
                print(_counts_row(scenario, verdicts, scenario in HEALTHY))
        _evidence(run, outcomes, count)

    print(
        "\n  soak length (the first N samples of each trial's window; soak = N x interval; "
        "fail / marginal / nodata counts of the healthy trials, fail / nodata of the regressions)"
    )
    header = (
        f"  {'N':>4} {'soak':>6} {'min_samples':>11}  "
        f"{'1.1.0 peers':>13} {'no change':>13} {'1.1.0 self':>13}  {'1.3.0 detected':>16}  targets"
    )
    print(header)
    shortest: dict[str, int | None] = {"policy": None, "min=n": None}
    for n in sizes:
        for variant in ("policy", "min=n"):
            if variant == "min=n" and n >= analysis.min_samples:
                continue
            healthy_cells = []
            for scenario in HEALTHY:
                verdicts = outcomes.get(scenario, n, variant)
                healthy_cells.append(
                    f"{_count(verdicts, Verdict.FAIL)}/{_count(verdicts, Verdict.MARGINAL)}"
                    f"/{_count(verdicts, Verdict.NODATA)}"
                    if verdicts
                    else "-"
                )
            regression = outcomes.get(REGRESSION, n, variant)
            detected = _count(regression, Verdict.FAIL)
            no_false_fail = all(
                _count(outcomes.get(s, n, variant), Verdict.FAIL) == 0 for s in TARGETED
            )
            holds = no_false_fail and detected == len(regression) > 0
            if holds and shortest[variant] is None:
                shortest[variant] = n
            floor = analysis.min_samples if variant == "policy" else n
            print(
                f"  {n:>4} {n * interval:>5.2f}s {floor:>11}  "
                + " ".join(f"{c:>13}" for c in healthy_cells)
                + f"  {detected:>3}/{len(regression)} ({detected / len(regression):>4.0%})"
                f" n/d {_count(regression, Verdict.NODATA):>2}"
                + ("  both hold" if holds else "  -")
            )
    for variant, label in (
        ("policy", f"min_samples {analysis.min_samples} (the policy)"),
        ("min=n", "min_samples lowered to N"),
    ):
        n_ok = shortest[variant]
        if n_ok is None:
            print(f"  shortest soak with both targets, {label}: none of N = {list(sizes)}")
        else:
            print(
                f"  shortest soak with both targets (0 false fails in 1.1.0 and no-change peers, "
                f"100 % detection), {label}: {n_ok} samples x {interval:g} s = "
                f"{n_ok * interval:g} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per scenario")
    parser.add_argument("--samples", default="10,20,30,50,60,100", help="soak lengths N")
    parser.add_argument("--parallel", type=int, default=10, help="regression trials at a time")
    parser.add_argument(
        "--self-trials", type=int, default=None, help="self-baseline trials (default: --trials)"
    )
    parser.add_argument("--repeat", type=int, default=20, help="judge timing calls per N")
    parser.add_argument("--sizes", default="60,600,6000", help="judge timing N")
    parser.add_argument("--quick", action="store_true", help="5 trials, N up to 60, short timing")
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-lab", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.samples, args.repeat, args.sizes = 5, "10,30,50,60", 5, "60,600"
        args.self_trials = 2 if args.self_trials is None else args.self_trials
    configure_logging("warning")
    started = time.monotonic()
    if not args.skip_timing:
        time_judge([int(s) for s in args.sizes.split(",")], args.repeat)
    if not args.skip_lab:
        sizes = sorted({int(s) for s in args.samples.split(",")})
        if args.trials < 1 or not sizes or sizes[0] < 1:
            parser.error("--trials and every --samples N must be at least 1")
        run = collect_lab(
            args.trials,
            max(sizes),
            args.parallel,
            args.trials if args.self_trials is None else max(0, args.self_trials),
            lambda msg: print(f"  ... {msg}", end="\r", flush=True),
        )
        print(" " * 60, end="\r")
        report_lab(run, judge_lab(run, sizes), sizes, args.trials)
    print(f"\ntotal {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()

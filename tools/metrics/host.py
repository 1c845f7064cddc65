"""Read-only host signals over the transport: fixed commands, pure parsers.

Two kinds of signal (:class:`~patchpilot.core.policy.HostSignal`):

* **sampled** (``cpu``, ``memory_available``, ``load1``, ``psi_*``, ``failed_units``): one
  constant POSIX ``sh`` script, :data:`SAMPLE_SCRIPT`, reads ``/proc/stat`` (first line),
  ``MemAvailable`` of ``/proc/meminfo``, ``/proc/loadavg``, ``/proc/pressure/{cpu,memory,io}``
  (when readable) and, where systemd runs, the count of ``systemctl --failed`` units,
  ``count + 1`` times ``interval`` apart, in one command (its only arguments are the two
  numbers). CPU is the busy fraction between consecutive ``/proc/stat`` reads; the others are
  the ``count`` reads after the first. All signals of a host share one run per window.
  A file that is absent (no PSI in the kernel, no systemd in a container or a lab host) gives
  no data for that signal, not an error.
* **events since the window's start** (``restarts``, ``oom_kills``, ``journal_errors``): the
  journal over ``[window.start, window.end]`` (``journalctl -o short-unix``, waiting for the end
  when it is ahead), counted per interval, so the window gives ``count`` samples:
  ``restarts`` are systemd's "Scheduled restart job" entries (``MESSAGE_ID``
  ``5eb03494b6584870a536b337290809b3``; of ``units`` when given), ``oom_kills`` the kernel's
  "Out of memory: Killed process" lines, ``journal_errors`` entries of priority ``err`` or worse
  (of ``units`` when given). No ``journalctl`` (no systemd): no data.

Commands are constants; unit names come from policy (validated) and timestamps are integers,
passed as arguments, never built from LLM or advisory text.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Final

import structlog

from patchpilot.core.errors import ConfigError, TransportError
from patchpilot.core.models import Host
from patchpilot.core.policy import HostMetric, HostSignal
from patchpilot.tools.metrics.base import (
    MetricProvider,
    MetricSeries,
    MetricSpec,
    MetricWindow,
    Sleeper,
    WallClock,
    utc_now,
)
from patchpilot.tools.transport.base import Transport

__all__ = [
    "EVENT_SIGNALS",
    "JOURNAL_SCRIPT",
    "SAMPLE_SCRIPT",
    "HostProvider",
    "HostSamples",
    "bucket_events",
    "cpu_busy_fractions",
    "journal_args",
    "parse_host_samples",
    "parse_journal_times",
]

_log = structlog.get_logger(__name__)

SAMPLE_SCRIPT: Final = (
    "n=$1; i=$2; k=0\n"
    'while [ "$k" -le "$n" ]; do\n'
    '  echo "== sample $k"\n'
    "  head -n 1 /proc/stat\n"
    "  grep '^MemAvailable:' /proc/meminfo\n"
    '  echo "loadavg $(cat /proc/loadavg)"\n'
    "  for r in cpu memory io; do\n"
    '    if [ -r "/proc/pressure/$r" ]; then echo "psi $r $(head -n 1 "/proc/pressure/$r")"; fi\n'
    "  done\n"
    "  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then\n"
    '    echo "failed_units $(systemctl --failed --no-legend --plain 2>/dev/null | grep -c .)"\n'
    "  fi\n"
    "  k=$((k + 1))\n"
    '  if [ "$k" -le "$n" ]; then sleep "$i"; fi\n'
    "done\n"
)
"""The constant sampler (``sh -c SAMPLE_SCRIPT sh COUNT INTERVAL``)."""

JOURNAL_SCRIPT: Final = (
    "if ! command -v journalctl >/dev/null 2>&1; then echo '@@no-journalctl'; exit 0; fi\n"
    'exec journalctl --no-pager -q -o short-unix "$@"\n'
)
"""Runs ``journalctl`` with its arguments, or says it is missing."""

_NO_JOURNALCTL: Final = "@@no-journalctl"
_RESTART_SCHEDULED: Final = "MESSAGE_ID=5eb03494b6584870a536b337290809b3"
_OOM_RE: Final = re.compile(r"out of memory: killed process", re.IGNORECASE)
_TIME_RE: Final = re.compile(r"^(\d{9,11}(?:\.\d+)?) ")
_SAMPLED: Final = frozenset(
    {
        HostSignal.CPU,
        HostSignal.MEMORY_AVAILABLE,
        HostSignal.LOAD1,
        HostSignal.PSI_CPU,
        HostSignal.PSI_MEMORY,
        HostSignal.PSI_IO,
        HostSignal.FAILED_UNITS,
    }
)
EVENT_SIGNALS: Final = frozenset(
    {HostSignal.RESTARTS, HostSignal.OOM_KILLS, HostSignal.JOURNAL_ERRORS}
)
"""Signals counted from the journal per interval of the window."""
_ENV: Final = {"LC_ALL": "C"}


@dataclass
class HostSamples:
    """The parsed output of :data:`SAMPLE_SCRIPT` (each list in read order)."""

    stat: list[tuple[int, ...]] = field(default_factory=list)
    """The ``cpu`` line of /proc/stat per read (jiffies per state)."""
    memory_available: list[float] = field(default_factory=list)
    """bytes"""
    load1: list[float] = field(default_factory=list)
    psi: dict[str, list[float]] = field(default_factory=dict)
    """resource (cpu, memory, io) -> ``some avg10`` per read."""
    failed_units: list[float] = field(default_factory=list)
    reads: int = 0

    def signal(self, signal: HostSignal) -> list[float]:
        """The samples of one sampled signal (the reads after the first; CPU: the deltas)."""
        if signal is HostSignal.CPU:
            return cpu_busy_fractions(self.stat)
        values = {
            HostSignal.MEMORY_AVAILABLE: self.memory_available,
            HostSignal.LOAD1: self.load1,
            HostSignal.PSI_CPU: self.psi.get("cpu", []),
            HostSignal.PSI_MEMORY: self.psi.get("memory", []),
            HostSignal.PSI_IO: self.psi.get("io", []),
            HostSignal.FAILED_UNITS: self.failed_units,
        }[signal]
        return values[1:] if len(values) > 1 else list(values)


def cpu_busy_fractions(stat: Sequence[tuple[int, ...]]) -> list[float]:
    """Busy CPU fraction (0-1) between consecutive /proc/stat ``cpu`` reads (pure).

    Idle is ``idle + iowait`` (fields 4 and 5); steal, guest... count as busy; a pair with no
    jiffies elapsed is skipped.
    """
    busy: list[float] = []
    for before, after in pairwise(stat):
        total = sum(after[:8]) - sum(before[:8])
        idle = sum(after[3:5]) - sum(before[3:5])
        if total > 0:
            busy.append(min(max((total - idle) / total, 0.0), 1.0))
    return busy


def parse_host_samples(text: str) -> HostSamples:
    """Parse :data:`SAMPLE_SCRIPT`'s output (pure; unknown or broken lines are skipped)."""
    samples = HostSamples()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("== sample "):
            samples.reads += 1
        elif line.startswith("cpu "):
            fields = line.split()[1:]
            if len(fields) >= 4 and all(f.isdigit() for f in fields):
                jiffies = [int(f) for f in fields] + [0] * (8 - len(fields))
                samples.stat.append(tuple(jiffies))
        elif line.startswith("MemAvailable:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                scale = 1024 if parts[-1].lower() == "kb" else 1
                samples.memory_available.append(float(int(parts[1]) * scale))
        elif line.startswith("loadavg "):
            parts = line.split()
            if len(parts) >= 2:
                value = _number(parts[1])
                if value is not None:
                    samples.load1.append(value)
        elif line.startswith("psi "):
            parts = line.split()
            if len(parts) >= 4 and parts[2] == "some":
                avg10 = next((p[6:] for p in parts[3:] if p.startswith("avg10=")), None)
                value = _number(avg10) if avg10 is not None else None
                if value is not None:
                    samples.psi.setdefault(parts[1], []).append(value)
        elif line.startswith("failed_units "):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                samples.failed_units.append(float(parts[1]))
    return samples


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def journal_args(spec: HostMetric, start: int, end: int) -> list[str]:
    """The ``journalctl`` arguments of an event signal over ``[start, end]`` (epoch seconds)."""
    window = [f"--since=@{start}", f"--until=@{end}"]
    if spec.signal is HostSignal.OOM_KILLS:
        return [*window, "-k"]
    if spec.signal is HostSignal.RESTARTS:
        return [*window, _RESTART_SCHEDULED, *(f"UNIT={_unit(u)}" for u in spec.units)]
    if spec.signal is HostSignal.JOURNAL_ERRORS:
        return [*window, "-p", "err", *(f"--unit={u}" for u in spec.units)]
    raise ConfigError(f"host signal {spec.signal.value!r} is not read from the journal")


def _unit(name: str) -> str:
    return name if "." in name else f"{name}.service"


def parse_journal_times(text: str, signal: HostSignal) -> list[float] | None:
    """Timestamps of the entries of ``journalctl -o short-unix`` output (pure).

    Returns ``None`` when journalctl is missing. For ``oom_kills`` only kernel lines saying
    "Out of memory: Killed process" count.
    """
    if text.strip() == _NO_JOURNALCTL:
        return None
    times: list[float] = []
    for line in text.splitlines():
        found = _TIME_RE.match(line)
        if found is None:
            continue
        if signal is HostSignal.OOM_KILLS and not _OOM_RE.search(line):
            continue
        times.append(float(found.group(1)))
    return times


def bucket_events(times: Sequence[float], start: float, interval: float, count: int) -> list[float]:
    """How many of ``times`` fall in each of ``count`` intervals from ``start`` (pure)."""
    buckets = [0.0] * count
    for moment in times:
        index = math.floor((moment - start) / interval)
        if 0 <= index < count:
            buckets[index] += 1
    return buckets


class HostProvider(MetricProvider):
    """Host signals (``provider: host``) over each host's transport.

    ``transport_for`` opens (or hands out an already open) transport of a host; the provider
    closes what it opened in :meth:`close`. Concurrent calls for the same host and window share
    one sampler run.
    """

    kind = "host"

    def __init__(
        self,
        transport_for: Callable[[Host], Transport],
        *,
        close_transports: bool = True,
        now: WallClock = utc_now,
        sleep: Sleeper = time.sleep,
    ) -> None:
        self._transport_for = transport_for
        self._close = close_transports
        self._now = now
        self._sleep = sleep
        self._lock = threading.Lock()
        self._host_locks: dict[str, threading.Lock] = {}
        self._transports: dict[str, Transport] = {}
        self._sampled: dict[tuple[str, MetricWindow], HostSamples | str] = {}

    def close(self) -> None:
        """Close the transports this provider opened."""
        with self._lock:
            transports, self._transports = self._transports, {}
        if self._close:
            for transport in transports.values():
                transport.close()

    def __enter__(self) -> HostProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _host_lock(self, host: Host) -> threading.Lock:
        with self._lock:
            return self._host_locks.setdefault(host.name, threading.Lock())

    def _transport(self, host: Host) -> Transport:
        with self._lock:
            transport = self._transports.get(host.name)
            if transport is None:
                transport = self._transports[host.name] = self._transport_for(host)
            return transport

    def _samples(self, host: Host, window: MetricWindow) -> HostSamples | str:
        key = (host.name, window)
        with self._host_lock(host):
            cached = self._sampled.get(key)
            if cached is not None:
                return cached
            argv = ["sh", "-c", SAMPLE_SCRIPT, "sh", str(window.count), f"{window.interval_s:g}"]
            outcome: HostSamples | str
            try:
                result = self._transport(host).run(
                    argv, env=_ENV, timeout=window.duration_s + window.interval_s + 30
                )
            except TransportError as exc:
                outcome = f"host sampler failed: {exc}"
            else:
                if result.exit_code != 0:
                    tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
                    outcome = f"host sampler exited {result.exit_code}: {tail[0][:200]}"
                else:
                    outcome = parse_host_samples(result.stdout)
            self._sampled[key] = outcome
            return outcome

    def _events(self, host: Host, spec: HostMetric, window: MetricWindow) -> MetricSeries:
        wait = (window.end - self._now()).total_seconds()
        if wait > 0:
            self._sleep(wait)
        start = math.floor(window.start.timestamp())
        end = math.ceil(window.end.timestamp())
        argv = ["sh", "-c", JOURNAL_SCRIPT, "sh", *journal_args(spec, start, end)]
        try:
            result = self._transport(host).run(argv, sudo=True, env=_ENV, timeout=60)
        except TransportError as exc:
            return MetricSeries.empty(spec, host, f"journal not read: {exc}")
        if result.exit_code != 0:
            tail = result.stderr.strip().splitlines()[-1:] or ["no output"]
            return MetricSeries.empty(
                spec, host, f"journalctl exited {result.exit_code}: {tail[0][:200]}"
            )
        times = parse_journal_times(result.stdout, spec.signal)
        if times is None:
            return MetricSeries.empty(spec, host, "no journal on the host (no journalctl)")
        return MetricSeries.of(
            spec,
            host,
            bucket_events(times, window.start.timestamp(), window.interval_s, window.count),
        )

    def collect(self, host: Host, spec: MetricSpec, window: MetricWindow) -> MetricSeries:
        """The samples of a :class:`HostMetric`'s signal on ``host`` (see the module)."""
        if not isinstance(spec, HostMetric):
            raise ConfigError(f"analysis metric {spec.name!r} is not a host metric")
        if spec.signal in EVENT_SIGNALS:
            series = self._events(host, spec, window)
        else:
            samples = self._samples(host, window)
            if isinstance(samples, str):
                series = MetricSeries.empty(spec, host, samples)
            else:
                values = samples.signal(spec.signal)
                series = (
                    MetricSeries.of(spec, host, values)
                    if values
                    else MetricSeries.empty(spec, host, _absent(spec.signal))
                )
        _log.info(
            "analysis.host_signal",
            host=host.name,
            metric=spec.name,
            signal=spec.signal.value,
            samples=len(series.samples),
            nodata=series.nodata_reason,
        )
        return series


def _absent(signal: HostSignal) -> str:
    if signal in {HostSignal.PSI_CPU, HostSignal.PSI_MEMORY, HostSignal.PSI_IO}:
        return "no /proc/pressure on the host (PSI off)"
    if signal is HostSignal.FAILED_UNITS:
        return "no systemd on the host"
    return f"no {signal.value} readings"

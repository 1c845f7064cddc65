"""HTTP probes from the controller: per request its latency (seconds) and whether it failed.

:class:`HttpProvider` requests a metric's URL ``window.count`` times, one request every
``window.interval_s`` (a request slower than the interval is followed by the next one at
once), with ``httpx`` (no proxies from the environment, no redirects followed). Each request
gives an *error* sample (1 on a transport error, a timeout or a status other than
``expected_status``, else 0) and, when a response came back, a *latency* sample in seconds
(time to the complete response). The metric's ``measure`` picks the series; :meth:`probe` gives
both, so :func:`patchpilot.tools.metrics.collect_host` requests a URL once for both metrics.

The URL is the metric's template (``url_overrides[host.name]`` or ``url``) with ``{host}`` /
``{address}`` (the inventory address, IPv6 in brackets) and ``{name}`` filled in; nothing in it
comes from LLM output or advisory text.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx
import structlog

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import Host
from patchpilot.core.policy import HttpMetric
from patchpilot.tools.metrics.base import (
    Clock,
    MetricProvider,
    MetricSeries,
    MetricSpec,
    MetricWindow,
    Sleeper,
)

__all__ = ["HttpProvider", "ProbeSamples", "render_probe_url"]

_log = structlog.get_logger(__name__)

#: How much of a response body is read (the rest is not needed to time the response).
_MAX_BODY = 1024 * 1024


def render_probe_url(spec: HttpMetric, host: Host) -> str:
    """The URL ``spec`` requests on ``host`` (its override, else ``url``), placeholders filled.

    Raises:
        ConfigError: the rendered URL is not a valid http(s) URL with a host.
    """
    template = spec.url_overrides.get(host.name, spec.url)
    address = f"[{host.address}]" if ":" in host.address else host.address
    url = template.format(host=address, address=address, name=host.name)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"analysis metric {spec.name!r}: URL {url!r} is invalid: {exc}") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise ConfigError(f"analysis metric {spec.name!r}: {url!r} is not an http(s) URL")
    return url


@dataclass
class ProbeSamples:
    """What ``count`` requests to one URL gave."""

    url: str
    latency: list[float] = field(default_factory=list)
    """Seconds to the complete response, of the requests that got one."""
    errors: list[float] = field(default_factory=list)
    """1.0 per failed request (transport error, timeout, unexpected status), else 0.0."""
    statuses: dict[str, int] = field(default_factory=dict)
    """How many requests ended how: ``"200"``, ``"500"``, ``"ConnectError"``..."""

    @property
    def requests(self) -> int:
        """Requests made."""
        return len(self.errors)


class HttpProvider(MetricProvider):
    """HTTP probes (``provider: http``)."""

    kind = "http"

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleeper = time.sleep,
    ) -> None:
        """Create a provider.

        Args:
            client: an ``httpx.Client`` to use (one without environment proxies and without
                redirects is created, and closed by :meth:`close`, when omitted).
            clock: the monotonic clock that times requests and schedules them.
            sleep: the wait between requests.
        """
        self._owned = client is None
        self._client = client or httpx.Client(trust_env=False, follow_redirects=False)
        self._clock = clock
        self._sleep = sleep

    def close(self) -> None:
        """Close the client if this provider created it."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> HttpProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _once(self, spec: HttpMetric, url: str, samples: ProbeSamples) -> None:
        started = self._clock()
        try:
            with self._client.stream(spec.method, url, timeout=spec.timeout_s) as response:
                read = 0
                for chunk in response.iter_bytes():
                    read += len(chunk)
                    if read >= _MAX_BODY:
                        break
                status = response.status_code
        except httpx.HTTPError as exc:
            samples.errors.append(1.0)
            key = type(exc).__name__
            samples.statuses[key] = samples.statuses.get(key, 0) + 1
            return
        samples.latency.append(max(self._clock() - started, 0.0))
        samples.errors.append(0.0 if status == spec.expected_status else 1.0)
        samples.statuses[str(status)] = samples.statuses.get(str(status), 0) + 1

    def probe(self, host: Host, spec: HttpMetric, window: MetricWindow) -> ProbeSamples:
        """Request ``spec``'s URL on ``host`` ``window.count`` times, ``interval_s`` apart.

        Raises:
            ConfigError: the URL does not render.
        """
        url = render_probe_url(spec, host)
        samples = ProbeSamples(url=url)
        origin = self._clock() + window.offset_s
        for index in range(window.count):
            due = origin + index * window.interval_s
            wait = due - self._clock()
            if wait > 0:
                self._sleep(wait)
            self._once(spec, url, samples)
        _log.info(
            "analysis.http_probe",
            host=host.name,
            metric=spec.name,
            url=url,
            requests=samples.requests,
            errors=int(sum(samples.errors)),
            statuses=samples.statuses,
        )
        return samples

    def collect(self, host: Host, spec: MetricSpec, window: MetricWindow) -> MetricSeries:
        """The latency or error series of an :class:`HttpMetric` (see the module)."""
        if not isinstance(spec, HttpMetric):
            raise ConfigError(f"analysis metric {spec.name!r} is not an http metric")
        return series_of(spec, host, self.probe(host, spec, window))


def series_of(spec: HttpMetric, host: Host, samples: ProbeSamples) -> MetricSeries:
    """The series ``spec`` measures from one probe's samples (no response at all: no data)."""
    if spec.measure == "error":
        return MetricSeries.of(spec, host, list(samples.errors))
    if not samples.latency:
        detail = ", ".join(f"{k} x{v}" for k, v in sorted(samples.statuses.items()))
        return MetricSeries.empty(
            spec, host, f"no response from {samples.url} ({detail or 'no request made'})"
        )
    return MetricSeries.of(spec, host, list(samples.latency))


def probe_key(spec: HttpMetric, host: Host) -> tuple[str, str, int, float]:
    """Metrics with the same key can share one probe (URL, method, expected status, timeout)."""
    return (render_probe_url(spec, host), spec.method, spec.expected_status, spec.timeout_s)


def group_probes(specs: Sequence[HttpMetric], host: Host) -> list[list[HttpMetric]]:
    """``specs`` grouped by :func:`probe_key`, in first-seen order."""
    groups: dict[tuple[str, str, int, float], list[HttpMetric]] = {}
    for spec in specs:
        groups.setdefault(probe_key(spec, host), []).append(spec)
    return list(groups.values())

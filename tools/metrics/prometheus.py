"""A Prometheus HTTP API provider: ``/api/v1/query_range`` over the analysis window.

The metric's PromQL comes from policy; ``$host``, ``$address`` and ``$name`` in it are replaced
by the host's inventory address and name, escaped for a PromQL double-quoted string (so
``instance=~"$address:.*"`` selects the host). The range is ``[window.start, window.end]`` with
``step = window.interval_s``; when ``end`` is still ahead the provider waits for it. Every value
of every series of the ``matrix`` result is a sample (``NaN`` kept: the judge drops it).

Bounded: the response is read up to ``max_response_bytes`` and a request times out after
``timeout_s``. Anything that goes wrong (connection refused, timeout, HTTP error, too big,
malformed JSON, ``status: error``, not a matrix) gives no data with the reason, never an
exception: a monitoring system that is down must not pass an analysis.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import Host
from patchpilot.core.policy import PrometheusMetric
from patchpilot.tools.metrics.base import (
    MetricProvider,
    MetricSeries,
    MetricSpec,
    MetricWindow,
    Sleeper,
    WallClock,
    utc_now,
)

__all__ = ["PrometheusProvider", "parse_matrix", "render_promql"]

_log = structlog.get_logger(__name__)


class _ResponseTooLarge(Exception):
    pass


def _promql_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_promql(spec: PrometheusMetric, host: Host) -> str:
    """``spec.promql`` with ``$host`` / ``$address`` (the address) and ``$name`` replaced."""
    address = _promql_string(host.address)
    # $address before $host is irrelevant (neither is a prefix of the other); $name last.
    return (
        spec.promql.replace("$address", address)
        .replace("$host", address)
        .replace("$name", _promql_string(host.name))
    )


def parse_matrix(document: Any) -> list[float]:
    """The values of every series of a ``query_range`` answer (pure).

    Raises:
        ValueError: the answer is not a successful ``matrix`` result (the message says why).
    """
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    if document.get("status") != "success":
        kind = document.get("errorType", "unknown")
        raise ValueError(f"query failed ({kind}): {str(document.get('error', ''))[:200]}")
    data = document.get("data")
    if not isinstance(data, dict) or data.get("resultType") != "matrix":
        found = data.get("resultType") if isinstance(data, dict) else None
        raise ValueError(f"expected a matrix result, got {found!r}")
    result = data.get("result")
    if not isinstance(result, list):
        raise ValueError("data.result is not a list")
    values: list[float] = []
    for series in result:
        points = series.get("values") if isinstance(series, dict) else None
        if not isinstance(points, list):
            raise ValueError("a series has no values list")
        for point in points:
            if not isinstance(point, list) or len(point) != 2:
                raise ValueError(f"malformed sample {str(point)[:80]!r}")
            try:
                value = float(point[1])
            except (TypeError, ValueError):
                raise ValueError(f"sample value {str(point[1])[:40]!r} is not a number") from None
            values.append(value if not math.isinf(value) else math.nan)
    return values


class PrometheusProvider(MetricProvider):
    """Range queries against a Prometheus HTTP API (``provider: prometheus``)."""

    kind = "prometheus"

    def __init__(
        self,
        *,
        client: httpx.Client | None = None,
        now: WallClock = utc_now,
        sleep: Sleeper = time.sleep,
    ) -> None:
        """Create a provider.

        Args:
            client: an ``httpx.Client`` (one without environment proxies is created, and
                closed by :meth:`close`, when omitted).
            now: the wall clock (to wait for a window's end).
            sleep: the wait.
        """
        self._owned = client is None
        self._client = client or httpx.Client(trust_env=False, follow_redirects=False)
        self._now = now
        self._sleep = sleep

    def close(self) -> None:
        """Close the client if this provider created it."""
        if self._owned:
            self._client.close()

    def __enter__(self) -> PrometheusProvider:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _fetch(self, spec: PrometheusMetric, params: dict[str, str]) -> Any:
        url = f"{spec.base_url}/api/v1/query_range"
        with self._client.stream("GET", url, params=params, timeout=spec.timeout_s) as response:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > spec.max_response_bytes:
                    raise _ResponseTooLarge
            # Prometheus answers errors (400 bad_data, 422 execution, 503) with the JSON body.
            if response.status_code >= 500 and not body.strip().startswith(b"{"):
                raise httpx.HTTPStatusError(
                    f"HTTP {response.status_code}", request=response.request, response=response
                )
        return json.loads(bytes(body))

    def collect(self, host: Host, spec: MetricSpec, window: MetricWindow) -> MetricSeries:
        """The values of ``spec``'s PromQL on ``host`` over ``window`` (see the module)."""
        if not isinstance(spec, PrometheusMetric):
            raise ConfigError(f"analysis metric {spec.name!r} is not a prometheus metric")
        wait = (window.end - self._now()).total_seconds()
        if wait > 0:
            self._sleep(wait)
        params = {
            "query": render_promql(spec, host),
            "start": _stamp(window.start),
            "end": _stamp(window.end),
            "step": f"{window.interval_s:g}",
        }
        try:
            document = self._fetch(spec, params)
            values = parse_matrix(document)
        except _ResponseTooLarge:
            reason = f"the answer is larger than {spec.max_response_bytes} bytes"
        except httpx.TimeoutException:
            reason = f"no answer within {spec.timeout_s:g} s"
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {str(exc)[:200]}"
        except ValueError as exc:  # malformed JSON (JSONDecodeError) or answer
            reason = f"unusable answer: {str(exc)[:200]}"
        else:
            _log.info("analysis.prometheus", host=host.name, metric=spec.name, samples=len(values))
            if not values:
                return MetricSeries.empty(spec, host, "the query returned no samples")
            return MetricSeries.of(spec, host, values)
        _log.warning("analysis.prometheus_nodata", host=host.name, metric=spec.name, reason=reason)
        return MetricSeries.empty(spec, host, f"prometheus {spec.base_url}: {reason}")


def _stamp(moment: datetime) -> str:
    return f"{moment.astimezone(UTC).timestamp():.3f}"

"""Metric providers: HTTP probes, the Prometheus HTTP API and host signals.

Real parts: the HTTP probes run against a small threaded ``http.server`` on 127.0.0.1 that is
slow or failing on purpose; the Prometheus provider against a fake Prometheus on loopback
that answers ``/api/v1/query_range`` with recorded JSON (a matrix result, as Prometheus 2.x
answers; the stand-in for a real Prometheus, which this machine does not run); the host sampler
runs its constant script through the real :class:`LocalTransport` on this machine. The parsers
are tested on recorded outputs; the clock and the sleeper are fakes where scheduling is checked.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from patchpilot.core.errors import ConfigError
from patchpilot.core.models import CommandResult, Host
from patchpilot.core.policy import HostMetric, HttpMetric, PrometheusMetric
from patchpilot.tools.metrics import (
    HostProvider,
    HttpProvider,
    MetricWindow,
    PrometheusProvider,
    Providers,
    collect_host,
    collect_hosts,
    pooled,
)
from patchpilot.tools.metrics.host import (
    SAMPLE_SCRIPT,
    bucket_events,
    cpu_busy_fractions,
    journal_args,
    parse_host_samples,
    parse_journal_times,
)
from patchpilot.tools.metrics.http import ProbeSamples, render_probe_url
from patchpilot.tools.metrics.prometheus import parse_matrix, render_promql
from patchpilot.tools.transport import LocalTransport
from tests.fakes import ScriptedTransport

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


# --- a slow and failing HTTP service on loopback ---------------------------------------------


class _Service(BaseHTTPRequestHandler):
    hits: dict[str, int]
    lock: threading.Lock
    pause: threading.Event

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            count = self.hits[path]
        status = 200
        if path == "/slow":
            self.pause.wait(0.05)  # an Event nobody sets: a 50 ms pause
        elif path == "/flaky" and count % 3 == 0:
            status = 500
        elif path == "/hang":
            self.pause.wait(2.0)
        elif path not in ("/", "/slow", "/flaky"):
            status = 404
        body = b"ok\n" if status == 200 else b"error\n"
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout case)

    def do_HEAD(self) -> None:
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[tuple[str, dict[str, int]]]:
    hits: dict[str, int] = {}
    handler = type(
        "Handler", (_Service,), {"hits": hits, "lock": threading.Lock(), "pause": threading.Event()}
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://{{host}}:{server.server_port}", hits
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _closed_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Service)
    port = server.server_port
    server.server_close()
    return port


LOCAL = Host(name="web-1", address="127.0.0.1", tags=frozenset({"web"}))


class FakeClock:
    """A monotonic clock that only the sleeper moves (each call to it also ticks 1 ms)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        self.now += 0.001
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(round(seconds, 6))
        self.now += seconds


def test_http_probe_schedules_count_requests_interval_apart(
    service: tuple[str, dict[str, int]],
) -> None:
    base, hits = service
    clock = FakeClock()
    spec = HttpMetric(name="latency", url=f"{base}/")
    with HttpProvider(clock=clock, sleep=clock.sleep) as provider:
        samples = provider.probe(LOCAL, spec, MetricWindow(start=T0, interval_s=0.5, count=4))
    assert hits["/"] == 4
    assert samples.requests == 4
    assert samples.errors == [0.0] * 4
    assert samples.statuses == {"200": 4}
    # Due at 0, 0.5, 1.0, 1.5 s: three waits, each the rest of its interval.
    assert len(clock.sleeps) == 3
    assert all(0.49 <= s <= 0.5 for s in clock.sleeps)


def test_http_latency_and_errors_on_a_slow_and_flaky_service(
    service: tuple[str, dict[str, int]],
) -> None:
    base, hits = service
    window = MetricWindow(start=T0, interval_s=0.001, count=6)
    with HttpProvider() as provider:
        slow = provider.collect(LOCAL, HttpMetric(name="lat", url=f"{base}/slow"), window)
        flaky = provider.collect(
            LOCAL, HttpMetric(name="err", url=f"{base}/flaky", measure="error"), window
        )
        missing = provider.collect(
            LOCAL, HttpMetric(name="err404", url=f"{base}/nope", measure="error"), window
        )
        head = provider.collect(
            LOCAL,
            HttpMetric(
                name="h", url=f"{base}/", method="HEAD", expected_status=204, measure="error"
            ),
            window,
        )
    assert slow.unit == "seconds"
    assert len(slow.samples) == 6
    assert min(slow.samples) >= 0.05  # the service pauses 50 ms before answering
    assert flaky.unit == "ratio"
    assert flaky.samples == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]  # every third answers 500
    assert missing.samples == [1.0] * 6  # 404 is not the expected 200
    assert head.samples == [0.0] * 6
    assert hits["/flaky"] == 6


def test_http_down_or_hanging_service_gives_errors_and_no_latency(
    service: tuple[str, dict[str, int]],
) -> None:
    base, _ = service
    window = MetricWindow(start=T0, interval_s=0.001, count=2)
    down_url = f"http://{{host}}:{_closed_port()}/"
    with HttpProvider() as provider:
        latency = provider.collect(LOCAL, HttpMetric(name="lat", url=down_url), window)
        errors = provider.collect(
            LOCAL, HttpMetric(name="err", url=down_url, measure="error"), window
        )
        hanging = provider.probe(
            LOCAL, HttpMetric(name="lat", url=f"{base}/hang", timeout_s=0.2), window
        )
    assert latency.nodata
    assert latency.nodata_reason is not None
    assert "ConnectError x2" in latency.nodata_reason
    assert errors.samples == [1.0, 1.0]
    assert hanging.errors == [1.0, 1.0]
    assert hanging.latency == []
    assert hanging.statuses == {"ReadTimeout": 2}


def test_probe_url_rendering() -> None:
    spec = HttpMetric(
        name="lat",
        url="http://{host}:8080/x?h={name}",
        url_overrides={"canary-1": "https://{address}:9443/"},
    )
    assert render_probe_url(spec, LOCAL) == "http://127.0.0.1:8080/x?h=web-1"
    v6 = Host(name="canary-1", address="fd00::1")
    assert render_probe_url(spec, v6) == "https://[fd00::1]:9443/"
    with pytest.raises(ConfigError, match="invalid"):
        render_probe_url(spec, Host(name="web-9", address="fd00::zz"))


def test_collect_host_probes_a_url_once_for_latency_and_errors(
    service: tuple[str, dict[str, int]],
) -> None:
    base, hits = service
    specs = [
        HttpMetric(name="latency", url=f"{base}/flaky"),
        HttpMetric(name="error_rate", url=f"{base}/flaky", measure="error"),
        HostMetric(name="load", signal="load1"),
    ]
    window = MetricWindow(start=T0, interval_s=0.001, count=9)
    with HttpProvider() as http, PrometheusProvider() as prom:
        series = collect_host(LOCAL, specs, window, Providers(http=http, prometheus=prom))
    assert hits["/flaky"] == 9
    assert list(series) == ["latency", "error_rate", "load"]
    assert sum(series["error_rate"].samples) == 3
    assert len(series["latency"].samples) == 9
    assert series["load"].nodata_reason == "no transport to the host for host signals"


def test_collect_hosts_samples_hosts_together_and_pools_them(
    service: tuple[str, dict[str, int]],
) -> None:
    base, hits = service
    hosts = [Host(name=f"h{i}", address="127.0.0.1") for i in range(3)]
    spec = HttpMetric(name="error_rate", url=f"{base}/?{{name}}", measure="error")
    window = MetricWindow(start=T0, interval_s=0.001, count=5)
    with HttpProvider() as http, PrometheusProvider() as prom:
        by_host = collect_hosts(hosts, lambda _: [spec], window, Providers(http, prom))
    assert set(by_host) == {"h0", "h1", "h2"}
    assert hits["/"] == 15
    assert pooled(by_host) == {"error_rate": [0.0] * 15}
    assert pooled(by_host, ["h1", "h9"]) == {"error_rate": [0.0] * 5}


def test_collect_hosts_staggers_the_hosts_within_one_interval() -> None:
    """Host k of n starts k/n of an interval late, so no two hosts are probed on the same
    tick (the host probed first on a shared tick measured slower: a false canary slowdown)."""
    seen: dict[str, list[float]] = {}

    class Recording(HttpProvider):
        def probe(self, host: Host, spec: HttpMetric, window: MetricWindow) -> ProbeSamples:
            seen.setdefault(host.name, []).append(window.offset_s)
            return ProbeSamples(url="http://127.0.0.1/")

    hosts = [Host(name=f"h{i}", address="127.0.0.1") for i in range(4)]
    spec = HttpMetric(name="latency", url="http://127.0.0.1:9/", measure="latency")
    window = MetricWindow(start=T0, interval_s=0.2, count=3)
    with Recording() as http, PrometheusProvider() as prom:
        collect_hosts(hosts, lambda _: [spec], window, Providers(http, prom))
    assert seen == {
        "h0": [0.0],
        "h1": [pytest.approx(0.05)],
        "h2": [pytest.approx(0.1)],
        "h3": [pytest.approx(0.15)],
    }


# --- a fake Prometheus on loopback -----------------------------------------------------------

MATRIX = {
    "status": "success",
    "data": {
        "resultType": "matrix",
        "result": [
            {
                "metric": {"__name__": "up", "instance": "127.0.0.1:9100", "job": "node"},
                "values": [[1767614400, "0.25"], [1767614405, "0.5"], [1767614410, "NaN"]],
            },
            {
                "metric": {"__name__": "up", "instance": "127.0.0.1:9101", "job": "node"},
                "values": [[1767614400, "1"], [1767614405, "+Inf"]],
            },
        ],
    },
}


class _Prometheus(BaseHTTPRequestHandler):
    answers: dict[str, tuple[int, bytes]]
    queries: list[dict[str, list[str]]]

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        self.queries.append(parse_qs(parts.query))
        query = parse_qs(parts.query).get("query", [""])[0]
        if query == "slow":
            threading.Event().wait(1.0)  # longer than the metric's timeout
        status, body = self.answers.get(query, (200, json.dumps(MATRIX).encode()))
        if parts.path != "/api/v1/query_range":
            status, body = 404, b"404 page not found\n"
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (the timeout case)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[tuple[str, dict[str, tuple[int, bytes]], list[Any]]]:
    answers: dict[str, tuple[int, bytes]] = {}
    queries: list[Any] = []
    handler = type("Prom", (_Prometheus,), {"answers": answers, "queries": queries})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", answers, queries
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _prom(base: str, promql: str, **fields: Any) -> PrometheusMetric:
    return PrometheusMetric(name="p99", base_url=base, promql=promql, **fields)


def test_prometheus_range_query_returns_every_value(
    prometheus: tuple[str, dict[str, tuple[int, bytes]], list[Any]],
) -> None:
    base, _, queries = prometheus
    window = MetricWindow(start=T0, interval_s=5, count=12)
    waits: list[float] = []
    spec = _prom(base, 'rate(errors{instance=~"$host:.*",node="$name"}[1m])')
    with PrometheusProvider(now=lambda: T0 + timedelta(hours=1), sleep=waits.append) as provider:
        series = provider.collect(LOCAL, spec, window)
    assert series.samples[:2] == [0.25, 0.5]
    assert len(series.samples) == 5
    assert waits == []  # the window is over: no wait
    [query] = queries
    assert query["query"] == ['rate(errors{instance=~"127.0.0.1:.*",node="web-1"}[1m])']
    assert query["start"] == [f"{T0.timestamp():.3f}"]
    assert query["end"] == [f"{(T0 + timedelta(seconds=60)).timestamp():.3f}"]
    assert query["step"] == ["5"]


def test_prometheus_waits_for_the_end_of_a_live_window(
    prometheus: tuple[str, dict[str, tuple[int, bytes]], list[Any]],
) -> None:
    base, _, _ = prometheus
    waits: list[float] = []
    with PrometheusProvider(now=lambda: T0 + timedelta(seconds=20), sleep=waits.append) as p:
        p.collect(LOCAL, _prom(base, "up"), MetricWindow(start=T0, interval_s=5, count=12))
    assert waits == [40.0]


def test_prometheus_down_slow_or_wrong_gives_nodata(
    prometheus: tuple[str, dict[str, tuple[int, bytes]], list[Any]],
) -> None:
    base, answers, _ = prometheus
    answers["bad"] = (
        400,
        json.dumps({"status": "error", "errorType": "bad_data", "error": "parse error"}).encode(),
    )
    answers["vector"] = (
        200,
        json.dumps({"status": "success", "data": {"resultType": "vector", "result": []}}).encode(),
    )
    answers["empty"] = (
        200,
        json.dumps({"status": "success", "data": {"resultType": "matrix", "result": []}}).encode(),
    )
    answers["html"] = (502, b"<html>bad gateway</html>")
    answers["junk"] = (200, b"{not json")
    answers["huge"] = (200, json.dumps(MATRIX).encode() + b" " * 4096)
    window = MetricWindow(start=T0, interval_s=5, count=2)
    cases: dict[str, tuple[PrometheusMetric, str]] = {
        "bad": (_prom(base, "bad"), "query failed (bad_data): parse error"),
        "vector": (_prom(base, "vector"), "expected a matrix result, got 'vector'"),
        "empty": (_prom(base, "empty"), "the query returned no samples"),
        "html": (_prom(base, "html"), "HTTPStatusError"),
        "junk": (_prom(base, "junk"), "unusable answer"),
        "huge": (_prom(base, "huge", max_response_bytes=1024), "larger than 1024 bytes"),
        "slow": (_prom(base, "slow", timeout_s=0.2), "no answer within 0.2 s"),
        "down": (
            _prom(f"http://127.0.0.1:{_closed_port()}", "up"),
            "ConnectError",
        ),
    }
    with PrometheusProvider(now=lambda: T0 + timedelta(hours=1)) as provider:
        for name, (spec, reason) in cases.items():
            series = provider.collect(LOCAL, spec, window)
            assert series.nodata, name
            assert series.nodata_reason is not None
            assert reason in series.nodata_reason, (name, series.nodata_reason)


def test_parse_matrix_and_promql_escaping() -> None:
    assert parse_matrix(MATRIX)[:2] == [0.25, 0.5]
    with pytest.raises(ValueError, match="not a number"):
        parse_matrix(
            {
                "status": "success",
                "data": {"resultType": "matrix", "result": [{"values": [[1, "x"]]}]},
            }
        )
    with pytest.raises(ValueError, match="not a JSON object"):
        parse_matrix([])
    odd = Host(name='we"b', address="10.0.0.1")
    spec = _prom("http://prom:9090", 'up{node="$name",instance="$address"}')
    assert render_promql(spec, odd) == 'up{node="we\\"b",instance="10.0.0.1"}'


# --- host signals ----------------------------------------------------------------------------

#: SAMPLE_SCRIPT's output on a Debian 12 container (PSI on, no systemd running), count 2.
RECORDED = """\
== sample 0
cpu  1184530 435 145032 768367 7155 0 2586 711 0 0
MemAvailable:   23914056 kB
loadavg 6.66 3.72 2.10 3/150 28285
psi cpu some avg10=60.33 avg60=75.52 avg300=40.94 total=3154206519
psi memory some avg10=0.00 avg60=0.00 avg300=0.00 total=0
psi io some avg10=2.54 avg60=4.15 avg300=2.34 total=116193706
== sample 1
cpu  1184539 435 145034 768378 7156 0 2587 711 0 0
MemAvailable:   23912944 kB
loadavg 6.66 3.72 2.10 2/140 28299
psi cpu some avg10=61.00 avg60=75.52 avg300=40.94 total=3154225777
psi memory some avg10=0.00 avg60=0.00 avg300=0.00 total=0
psi io some avg10=2.54 avg60=4.15 avg300=2.34 total=116195209
== sample 2
cpu  1184546 435 145035 768392 7156 0 2587 711 0 0
MemAvailable:   23913220 kB
loadavg 6.50 3.72 2.10 3/140 28310
psi cpu some avg10=59.10 avg60=75.52 avg300=40.94 total=3154229897
psi memory some avg10=0.00 avg60=0.00 avg300=0.00 total=0
psi io some avg10=2.54 avg60=4.15 avg300=2.34 total=116201580
"""

#: The same on a host with systemd (2 failed units) and without PSI (CONFIG_PSI off).
RECORDED_SYSTEMD = """\
== sample 0
cpu  100 0 100 800 0 0 0 0 0 0
MemAvailable:   1000 kB
loadavg 0.10 0.05 0.01 1/90 100
failed_units 2
== sample 1
cpu  150 0 150 900 0 0 0 0 0 0
MemAvailable:   900 kB
loadavg 0.20 0.05 0.01 1/90 101
failed_units 2
"""


def test_parse_recorded_sampler_output() -> None:
    samples = parse_host_samples(RECORDED)
    assert samples.reads == 3
    cpu = samples.signal(HostMetric(name="c", signal="cpu").signal)
    # (user+nice+system+irq+softirq+steal delta) / total delta between reads.
    assert cpu == pytest.approx([(9 + 2 + 1) / (9 + 2 + 11 + 1 + 1), (7 + 1) / (7 + 1 + 14)])
    assert samples.signal(HostMetric(name="m", signal="memory_available").signal) == [
        23912944 * 1024.0,
        23913220 * 1024.0,
    ]
    assert samples.load1 == [6.66, 6.66, 6.50]
    assert samples.psi["cpu"] == [60.33, 61.0, 59.1]
    assert samples.signal(HostMetric(name="p", signal="psi_cpu").signal) == [61.0, 59.1]
    assert samples.failed_units == []
    other = parse_host_samples(RECORDED_SYSTEMD)
    assert other.failed_units == [2.0, 2.0]
    assert other.psi == {}
    assert cpu_busy_fractions(other.stat) == [0.5]
    assert parse_host_samples("garbage\ncpu x y\nMemAvailable: lots\n").stat == []


def _scripted(stdout: str, code: int = 0) -> ScriptedTransport:
    return ScriptedTransport(
        lambda argv: CommandResult(host="", argv=argv, exit_code=code, stdout=stdout, stderr=""),
        "h",
    )


def test_host_provider_shares_one_sampler_run_and_absent_signals_are_nodata() -> None:
    transport = _scripted(RECORDED)
    window = MetricWindow(start=T0, interval_s=5, count=2)
    with HostProvider(lambda _: transport) as provider:
        cpu = provider.collect(LOCAL, HostMetric(name="cpu", signal="cpu"), window)
        psi = provider.collect(LOCAL, HostMetric(name="psi", signal="psi_io"), window)
        failed = provider.collect(LOCAL, HostMetric(name="f", signal="failed_units"), window)
    assert len(cpu.samples) == 2
    assert cpu.unit == "ratio"
    assert psi.samples == [2.54, 2.54]
    assert failed.nodata
    assert failed.nodata_reason == "no systemd on the host"
    [call] = transport.calls
    assert call == ("sh", "-c", SAMPLE_SCRIPT, "sh", "2", "5")
    no_psi = _scripted(RECORDED_SYSTEMD)
    with HostProvider(lambda _: no_psi) as provider:
        psi = provider.collect(LOCAL, HostMetric(name="psi", signal="psi_memory"), window)
        failed = provider.collect(LOCAL, HostMetric(name="f", signal="failed_units"), window)
    assert psi.nodata_reason == "no /proc/pressure on the host (PSI off)"
    assert failed.samples == [2.0]


def test_host_provider_failing_sampler_is_nodata() -> None:
    broken = ScriptedTransport(
        lambda argv: CommandResult(
            host="", argv=argv, exit_code=2, stdout="", stderr="sh: 1: boom\n"
        ),
        "h",
    )
    window = MetricWindow(start=T0, interval_s=5, count=2)
    with HostProvider(lambda _: broken) as provider:
        series = provider.collect(LOCAL, HostMetric(name="cpu", signal="cpu"), window)
    assert series.nodata_reason == "host sampler exited 2: sh: 1: boom"


def test_host_sampler_on_this_machine_through_the_local_transport() -> None:
    window = MetricWindow(start=T0, interval_s=0.01, count=3)
    local = Host(name="local", address="127.0.0.1", transport="local")

    def opener(host: Host) -> LocalTransport:
        return LocalTransport(host.name)

    with HostProvider(opener) as provider:
        cpu = provider.collect(local, HostMetric(name="cpu", signal="cpu"), window)
        memory = provider.collect(local, HostMetric(name="mem", signal="memory_available"), window)
        load = provider.collect(local, HostMetric(name="load", signal="load1"), window)
    assert all(0.0 <= v <= 1.0 for v in cpu.samples)
    assert len(memory.samples) == 3
    assert all(v > 0 for v in memory.samples)
    assert len(load.samples) == 3


_RESTART = "w1 systemd[1]: acme-web.service: Scheduled restart job, restart counter is at"
JOURNAL_RESTARTS = (
    f"1767614401.123456 {_RESTART} 1.\n"
    f"1767614402.500000 {_RESTART} 2.\n"
    f"1767614415.000000 {_RESTART} 3.\n"
)

JOURNAL_KERNEL = (
    "1767614403.000000 w1 kernel: acme-web invoked oom-killer: gfp_mask=0x140cca, order=0\n"
    "1767614403.000100 w1 kernel: Out of memory: Killed process 4242 (python3) "
    "total-vm:812345kB, anon-rss:512000kB\n"
    "1767614409.000000 w1 kernel: Memory cgroup out of memory: Killed process 4343 (python3)\n"
    "1767614409.500000 w1 kernel: eth0: link up\n"
)


def test_journal_signals_are_counted_per_interval() -> None:
    start = 1767614400.0
    restarts = parse_journal_times(JOURNAL_RESTARTS, HostMetric(name="r", signal="restarts").signal)
    assert restarts is not None
    assert bucket_events(restarts, start, 5, 4) == [2.0, 0.0, 0.0, 1.0]
    ooms = parse_journal_times(JOURNAL_KERNEL, HostMetric(name="o", signal="oom_kills").signal)
    assert ooms == [1767614403.0001, 1767614409.0]
    assert (
        parse_journal_times("@@no-journalctl\n", HostMetric(name="o", signal="oom_kills").signal)
        is None
    )
    spec = HostMetric(name="r", signal="restarts", units=("acme-web", "cron.service"))
    assert journal_args(spec, 10, 20) == [
        "--since=@10",
        "--until=@20",
        "MESSAGE_ID=5eb03494b6584870a536b337290809b3",
        "UNIT=acme-web.service",
        "UNIT=cron.service",
    ]
    errors = HostMetric(name="e", signal="journal_errors", units=("acme-web",))
    assert journal_args(errors, 10, 20)[2:] == ["-p", "err", "--unit=acme-web"]
    with pytest.raises(ConfigError):
        journal_args(HostMetric(name="c", signal="cpu"), 10, 20)


def test_host_provider_reads_the_journal_since_the_window_start() -> None:
    start = datetime.fromtimestamp(1767614400, UTC)
    window = MetricWindow(start=start, interval_s=5, count=4)
    transport = _scripted(JOURNAL_RESTARTS)
    waits: list[float] = []
    now: Callable[[], datetime] = lambda: start + timedelta(seconds=5)  # noqa: E731
    with HostProvider(lambda _: transport, now=now, sleep=waits.append) as provider:
        series = provider.collect(
            LOCAL, HostMetric(name="r", signal="restarts", units=("acme-web",)), window
        )
    assert series.samples == [2.0, 0.0, 0.0, 1.0]
    assert waits == [15.0]  # the window ends 15 s after "now"
    [argv] = transport.calls
    assert argv[:3] == ("sh", "-c", argv[2])
    assert "--since=@1767614400" in argv
    assert "--until=@1767614420" in argv
    silent = _scripted("@@no-journalctl\n")
    with HostProvider(lambda _: silent, now=lambda: start + timedelta(hours=1)) as provider:
        series = provider.collect(LOCAL, HostMetric(name="o", signal="oom_kills"), window)
    assert series.nodata_reason == "no journal on the host (no journalctl)"

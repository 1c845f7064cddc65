"""The lab's slow release, acme-web 1.3.0, and the lab policy's analysis section.

The acme-web servers of the lab packages (the very ``server.py`` each .deb installs) run here
as plain processes on 127.0.0.1, and the lab policy's analysis probes them through the real HTTP
provider and judge: 1.3.0 answers ``/health`` 200 but is caught (latency and errors, rolled
back with a reason starting ``analysis failed``), 1.1.0 passes against 1.0.0. The earlier
releases keep their exact files (their packages do not change).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from patchpilot.agents.analysis import Verdict, judge
from patchpilot.core.errors import LabError
from patchpilot.core.models import Host
from patchpilot.core.policy import AnalysisPolicy, HttpMetric, Policy
from patchpilot.lab.models import LabHost
from patchpilot.lab.policy import lab_analysis_section, lab_policy_document
from patchpilot.lab.profile import fleet_profile
from patchpilot.lab.repo import (
    DEGRADED_WEB_VERSION,
    WEB_VERSIONS,
    _asset,
    acme_packages,
    changelog_text,
    web_server_source,
)
from patchpilot.lab.serve import serve_release, serve_releases
from patchpilot.tools.metrics import (
    HttpProvider,
    MetricWindow,
    PrometheusProvider,
    Providers,
    collect_hosts,
    pooled,
)


def test_the_repository_offers_acme_web_1_3_0() -> None:
    web = [s for s in acme_packages() if s.name == "acme-web"]
    assert [s.version for s in web] == ["1.0.0", "1.1.0", "1.2.0", "1.3.0"]
    assert WEB_VERSIONS[-1] == DEGRADED_WEB_VERSION == "1.3.0"
    newest = web[-1]
    assert [e.version for e in newest.changelog] == ["1.3.0", "1.2.0", "1.1.0", "1.0.0"]
    assert "template engine" in changelog_text("acme-web", newest.changelog)
    assert newest.depends == ("python3 (>= 3.11)",)


def test_earlier_releases_keep_their_exact_server() -> None:
    template = _asset("acme-web/server.py.in")
    for version, broken in (("1.0.0", "False"), ("1.1.0", "False"), ("1.2.0", "True")):
        expected = template.replace("@VERSION@", version).replace("@BROKEN@", broken)
        assert web_server_source(version) == expected
        assert "degrade" not in expected
    degraded = web_server_source("1.3.0")
    assert "BROKEN = False" in degraded
    assert "if not degrade(self):" in degraded
    compile(degraded, "server.py", "exec")


def test_lab_policy_has_a_short_critical_http_analysis() -> None:
    hosts = fleet_profile(3, acme_base_port=9301)
    policy = Policy.model_validate(lab_policy_document(hosts))
    analysis = policy.analysis
    assert analysis.enabled
    assert (analysis.baseline, analysis.baseline_fallback) == ("peers", "self")
    assert analysis.count >= analysis.min_samples >= 50
    assert analysis.count * analysis.interval_s <= 5
    latency, errors = analysis.metrics
    assert isinstance(latency, HttpMetric)
    assert isinstance(errors, HttpMetric)
    assert (latency.name, latency.measure, latency.direction, latency.critical) == (
        "latency",
        "latency",
        "increase",
        True,
    )
    assert (errors.name, errors.measure, errors.critical) == ("error_rate", "error", True)
    assert latency.url_overrides == {h.name: f"http://{{host}}:{h.acme_port}/" for h in hosts}
    # The health checks are still the lab's.
    assert [r.name for r in policy.health.checks] == ["acme-web"]
    assert AnalysisPolicy.model_validate(lab_analysis_section(hosts)) == analysis


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, int]]:
    """acme-web 1.0.0, 1.1.0, 1.2.0 and 1.3.0 on loopback: version -> port."""
    with serve_releases(WEB_VERSIONS) as urls:
        yield {version: _port(url) for version, url in zip(WEB_VERSIONS, urls, strict=True)}


def _port(url: str) -> int:
    port = httpx.URL(url).port
    assert port is not None
    return port


def test_serve_release_ends_its_server_and_knows_the_releases() -> None:
    with serve_release("1.1.0") as url:
        assert url.startswith("http://127.0.0.1:")
        assert httpx.get(url + "health", trust_env=False).text == "OK acme-web 1.1.0\n"
    with pytest.raises(httpx.ConnectError):  # the process was ended on leaving the block
        httpx.get(url + "health", trust_env=False, timeout=2)
    with pytest.raises(LabError, match="no acme-web release"), serve_release("9.9.9"):
        pass


def test_every_release_answers_health_as_before(servers: dict[str, int]) -> None:
    with httpx.Client(trust_env=False) as client:
        answers = {
            version: client.get(f"http://127.0.0.1:{port}/health")
            for version, port in servers.items()
        }
        pages = {
            version: client.get(f"http://127.0.0.1:{port}/").status_code
            for version, port in servers.items()
            if version != "1.3.0"
        }
    assert {v: (r.status_code, r.text) for v, r in answers.items()} == {
        "1.0.0": (200, "OK acme-web 1.0.0\n"),
        "1.1.0": (200, "OK acme-web 1.1.0\n"),
        "1.2.0": (503, "FAIL acme-web 1.2.0: db migration failed\n"),
        "1.3.0": (200, "OK acme-web 1.3.0\n"),  # the health check cannot see the regression
    }
    assert pages == {"1.0.0": 200, "1.1.0": 200, "1.2.0": 200}


def test_analysis_catches_1_3_0_and_passes_1_1_0(servers: dict[str, int]) -> None:
    names = {"1.0.0": "baseline-1", "1.1.0": "canary-110", "1.3.0": "canary-130"}
    lab_hosts = [
        LabHost(name=name, index=i + 1, port=2201 + i, acme_port=servers[version])
        for i, (version, name) in enumerate(names.items())
    ]
    analysis = Policy.model_validate(lab_policy_document(lab_hosts)).analysis
    hosts = [Host(name=h.name, address=h.address) for h in lab_hosts]
    window = MetricWindow(
        start=datetime.now(UTC), interval_s=analysis.interval_s, count=analysis.count
    )
    with HttpProvider() as http, PrometheusProvider() as prom:
        by_host = collect_hosts(hosts, lambda _: analysis.metrics, window, Providers(http, prom))
    baseline = pooled(by_host, ["baseline-1"])
    assert len(baseline["latency"]) == analysis.count
    assert sum(baseline["error_rate"]) == 0

    good = judge(baseline, pooled(by_host, ["canary-110"]), analysis.metrics, analysis)
    assert good.verdict is Verdict.PASS, good.reason
    assert good.reason.startswith("analysis passed")

    bad = judge(baseline, pooled(by_host, ["canary-130"]), analysis.metrics, analysis)
    assert bad.verdict is Verdict.FAIL
    assert bad.score == 0.0
    assert bad.reason.startswith("analysis failed: latency p50 ")
    assert "error_rate 3.3 % vs 0.0 %" in bad.reason  # requests 25 and 50 of 60 failed
    by_name = {m.name: m for m in bad.metrics}
    assert by_name["latency"].critical_failure
    assert by_name["latency"].canary.median is not None
    assert by_name["latency"].canary.median >= 0.15  # /  sleeps 150-250 ms in 1.3.0
    assert by_name["error_rate"].failed_measurements == 2


def test_lab_policy_file_round_trips(tmp_path: Path) -> None:
    from patchpilot.core.policy import load_policy
    from patchpilot.lab.policy import write_lab_policy

    path = tmp_path / "policy.yaml"
    write_lab_policy(path, fleet_profile(2))
    assert load_policy(path).analysis.enabled

"""Post-patch analysis in the run graph, on scripted hosts and a scripted metric collector.

The real graph (``graphs/run.py``: ``analysis_baseline``, ``analysis``, ``analysis_decision``),
real SQLite store and checkpoints, the real judge (``patchpilot.agents.analysis.judge``) and the
real deployment agent's rollback; the hosts are :class:`tests.fakes.FakeDebianHost` and the
metrics come from :class:`ScriptedMetrics` (``RunContext.metrics``), whose samples depend on the
acme-web version each host has when it is sampled. The soak is a recorded no-op
(``RunContext.sleep``). The lab proves the same on real hosts (tests/integration/
test_analysis.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from patchpilot.app.documents import RunDocument
from patchpilot.core.audit import read_events
from patchpilot.core.models import Host
from patchpilot.core.policy import load_policy
from patchpilot.core.store import Store
from patchpilot.graphs.run import (
    ApprovalRequest,
    RunResult,
    StoreStages,
    load_run_state,
    parse_interrupt,
    result_of,
)
from patchpilot.graphs.run_document import run_document
from patchpilot.tools.metrics import MetricSeries, MetricSpec, MetricWindow
from tests.unit.test_graph_run import Harness, make_fleet, plain_tracebacks, write_policy

__all__ = ["plain_tracebacks"]  # the autouse fixture, shared with test_graph_run

HEALTHY = (0.010, 0.0)
"""acme-web's ``/`` latency (s) and error rate, per version, unless a test says otherwise."""
SLOW = (0.050, 0.05)
"""5x slower, 5 % of requests failing: what 1.3.0 does in the lab."""


def analysis_section(**changes: Any) -> dict[str, Any]:
    """The lab's analysis section on port 8080: latency and errors of ``/``, both critical."""
    probe = {"provider": "http", "url": "http://{host}:8080/", "group": "web", "critical": True}
    section: dict[str, Any] = {
        "enabled": True,
        "soak_s": 30,
        "interval_s": 1,
        "count": 60,
        "baseline": "peers",
        "baseline_fallback": "self",
        "min_samples": 50,
        "metrics": [
            {
                **probe,
                "name": "latency",
                "measure": "latency",
                "effect_size": {
                    "measure": "median_ratio",
                    "allowed_increase": 2.0,
                    "critical_increase": 3.0,
                },
            },
            {
                **probe,
                "name": "error_rate",
                "measure": "error",
                "fail_above": 0.5,
                "failure_limit": 1,
            },
        ],
    }
    section.update(changes)
    return section


class ScriptedMetrics:
    """``RunContext.metrics``: each host's samples follow the acme-web version it has now.

    Latency: ``count`` evenly spread values around the version's mean (+-10 %); errors: the
    version's error rate as exactly that share of 1.0 samples. ``error``: every collection
    raises it; ``hang``: every collection blocks until released (a slow provider).
    """

    def __init__(
        self,
        fleet: Mapping[str, Any],
        profiles: Mapping[str, tuple[float, float]] | None = None,
        *,
        error: Exception | None = None,
        hang: threading.Event | None = None,
    ) -> None:
        self.fleet = fleet
        self.profiles = dict(profiles or {})
        self.error = error
        self.hang = hang
        self.calls: list[dict[str, str]] = []
        self.closed = 0

    def __call__(self) -> ScriptedMetrics:
        return self

    def collect(
        self,
        hosts: Sequence[Host],
        specs_for: Callable[[Host], Sequence[MetricSpec]],
        window: MetricWindow,
    ) -> dict[str, dict[str, MetricSeries]]:
        seen = {h.name: self.fleet[h.name].installed["acme-web"] for h in hosts}
        self.calls.append(seen)
        if self.hang is not None:
            self.hang.wait(timeout=30)
        if self.error is not None:
            raise self.error
        out: dict[str, dict[str, MetricSeries]] = {}
        n = window.count
        for host in hosts:
            mean, rate = self.profiles.get(seen[host.name], HEALTHY)
            latency = [mean * (0.9 + 0.2 * i / (n - 1)) for i in range(n)]
            failed = round(rate * n)
            errors = [1.0] * failed + [0.0] * (n - failed)
            out[host.name] = {
                spec.name: MetricSeries(
                    name=spec.name,
                    host=host.name,
                    provider="http",
                    samples=latency if getattr(spec, "measure", "") == "latency" else errors,
                )
                for spec in specs_for(host)
            }
        return out

    def close(self) -> None:
        self.closed += 1


class Remembered:
    """The run context's memory: what the run writes to it (outcomes, incidents, decisions)."""

    def __init__(self) -> None:
        self.incidents: list[Any] = []
        self.outcomes: list[Any] = []

    def remember_outcome(self, record: Any) -> None:
        self.outcomes.append(record)

    def remember_incident(self, record: Any) -> None:
        self.incidents.append(record)

    def remember_decision(self, record: Any) -> None:
        pass

    def recall(self, *args: Any, **kwargs: Any) -> list[Any]:
        return []


class World:
    """A :class:`Harness` whose runs use a scripted metric collector and a recorded soak."""

    def __init__(self, harness: Harness, metrics: ScriptedMetrics) -> None:
        self.h = harness
        self.metrics = metrics
        self.soaks: list[float] = []
        self.timeout: float | None = None
        self.memory = Remembered()

    def context_args(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "sleep": self.soaks.append,
            "analysis_timeout_s": self.timeout,
            "memory": self.memory,
        }

    def start(self, only: str = "acme-web=1.1.0") -> RunResult:
        name, _, version = only.partition("=")
        from patchpilot.graphs.run import start_run
        from tests.unit.test_graph_run import HOSTS

        with Store(self.h.settings.store_path) as store:
            return start_run(
                HOSTS,
                self.h.context(store, stages=StoreStages(store), **self.context_args()),
                target="all",
                policy=self.h.policy,
                only=[(name, version)],
            )

    def resume(self, result: RunResult, status: str | None = None, by: str = "alice") -> RunResult:
        from patchpilot.graphs.run import continue_run

        decision = self.h.decide(result, status, by=by) if status else None
        with Store(self.h.settings.store_path) as store:
            if decision is not None:  # as `patchpilot approve` does, before continuing
                store.decide_approval(result.run_id, decision.status, by=by, at=decision.at)
            return continue_run(
                result.run_id,
                self.h.context(store, stages=StoreStages(store), **self.context_args()),
                decision=decision,
            )

    def document(self, run_id: str) -> dict[str, Any]:
        snapshot = load_run_state(run_id, self.h.settings)
        assert snapshot is not None
        with Store(self.h.settings.store_path) as store:
            return run_document(
                result_of(run_id, snapshot),
                snapshot,
                store.deployments(run_id),
                store.approval(run_id),
            )


@pytest.fixture
def world(tmp_path: Path) -> Callable[..., World]:
    def make(
        profiles: Mapping[str, tuple[float, float]] | None = None,
        *,
        analysis: dict[str, Any] | None = None,
        metrics: ScriptedMetrics | None = None,
        **policy: Any,
    ) -> World:
        home = tmp_path / "home"
        fleet = make_fleet()
        section = analysis if analysis is not None else analysis_section()
        path = write_policy(home, analysis=section, **policy)
        harness = Harness(home, fleet, load_policy(path))
        return World(harness, metrics or ScriptedMetrics(fleet, profiles))

    return make


NO_APPROVAL = {"approvals": {"tags": []}}


def rows(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["host"]: d for d in doc["deployments"]}


# --------------------------------------------------------------------------- pass


def test_a_passing_analysis_continues_ring_after_ring_peers_then_self(
    world: Callable[..., World],
) -> None:
    w = world(**NO_APPROVAL)
    done = w.start()
    assert done.status == "completed", done.reason
    assert w.h.installed() == dict.fromkeys(w.h.fleet, "1.1.0")
    doc = w.document(done.run_id)
    # canary-1 against its unpatched peers web-1 and db-1 (broad ring) over the same window;
    # the broad ring has no later ring: its own window, sampled before it was patched.
    assert [
        (a["ring"], a["verdict"], a["baseline_mode"], a["action"]) for a in doc["analysis"]
    ] == [
        ("canary", "pass", "peers", "continue"),
        ("broad", "pass", "self", "continue"),
    ]
    canary, broad = doc["analysis"]
    assert (canary["canary_hosts"], canary["baseline_hosts"]) == (["canary-1"], ["db-1", "web-1"])
    assert broad["baseline_hosts"] == ["db-1", "web-1"]
    assert w.metrics.calls == [
        {"canary-1": "1.1.0", "web-1": "1.0.0", "db-1": "1.0.0"},  # canary + peers, one window
        {"web-1": "1.0.0", "db-1": "1.0.0"},  # broad's pre-patch window
        {"web-1": "1.1.0", "db-1": "1.1.0"},  # broad after its patch
    ]
    assert w.soaks == [30, 30]  # the soak after each ring's deployment
    for entry in doc["analysis"]:
        assert entry["score"] == 100
        for metric in entry["metrics"]:
            assert metric["classification"] == "Pass"
            assert {"name", "baseline", "canary", "p_value", "statistic", "effect_size"} <= set(
                metric
            )
            assert metric["canary"]["n"] == 60 * len(entry["canary_hosts"])
    with Store(w.h.settings.store_path) as store:
        stages = {(s.stage, s.ring) for s in store.run_stages(done.run_id)}
    assert {("analysis", "canary"), ("analysis", "broad")} <= stages


def test_analysis_disabled_changes_nothing(world: Callable[..., World]) -> None:
    w = world(analysis={"enabled": False}, **NO_APPROVAL)
    done = w.start()
    assert done.status == "completed", done.reason
    assert w.h.installed() == dict.fromkeys(w.h.fleet, "1.1.0")
    assert w.metrics.calls == []
    assert w.soaks == []
    assert w.document(done.run_id)["analysis"] == []


def test_a_dry_run_is_not_analysed(world: Callable[..., World]) -> None:
    w = world(**NO_APPROVAL)
    from patchpilot.graphs.run import start_run
    from tests.unit.test_graph_run import HOSTS

    with Store(w.h.settings.store_path) as store:
        done = start_run(
            HOSTS,
            w.h.context(store, **w.context_args()),
            target="all",
            policy=w.h.policy,
            only=[("acme-web", "1.1.0")],
            dry_run=True,
        )
    assert done.status == "completed", done.reason
    assert w.metrics.calls == []


# --------------------------------------------------------------------------- fail


def test_a_failing_analysis_rolls_the_canary_back_rejects_the_version_and_halts(
    world: Callable[..., World],
) -> None:
    w = world({"1.1.0": SLOW}, **NO_APPROVAL)
    done = w.start()
    assert done.status == "halted", done.reason
    assert (done.reason or "").startswith("ring canary halted: analysis failed: latency")
    assert "rings not started: broad" in (done.reason or "")
    assert w.h.installed() == dict.fromkeys(w.h.fleet, "1.0.0")  # canary back, others untouched
    assert w.h.fleet["canary-1"].installs
    assert not w.h.fleet["web-1"].installs
    assert not w.h.fleet["db-1"].installs

    doc = w.document(done.run_id)
    canary = rows(doc)["canary-1"]
    assert canary["status"] == "rolled_back"
    assert canary["reason"].startswith("analysis failed")
    assert "latency" in canary["reason"]
    assert "error_rate" in canary["reason"]
    assert "rolled back to acme-web=1.0.0" in canary["reason"]
    assert rows(doc)["web-1"]["status"] == "pending"
    assert [(r["name"], r["status"]) for r in doc["rings"] if r["hosts"]] == [
        ("canary", "halted"),
        ("broad", "not-started"),
    ]
    RunDocument.model_validate(doc)  # the published model (schemas/patchpilot.run.v1.json)
    (entry,) = doc["analysis"]
    assert (entry["ring"], entry["verdict"], entry["score"], entry["action"]) == (
        "canary",
        "fail",
        0.0,
        "rolled_back",
    )
    metrics = {m["name"]: m for m in entry["metrics"]}
    assert metrics["latency"]["classification"] == "High"
    assert metrics["latency"]["p_value"] < 0.001
    assert metrics["latency"]["canary"]["median"] > 4 * metrics["latency"]["baseline"]["median"]
    assert metrics["error_rate"]["classification"] == "High"

    with Store(w.h.settings.store_path) as store:
        (rejection,) = store.active_rejections()
        outcome = store.recent_outcomes(package="acme-web", host="canary-1")[0]
    assert rejection.spec == "acme-web=1.1.0"
    assert "failed post-patch analysis in ring canary" in rejection.reason
    assert "latency High: baseline median 10.0 ms" in rejection.reason
    assert (outcome.status.value, (outcome.error or "")[:15]) == ("rollback", "analysis failed")
    (incident,) = w.memory.incidents  # the evidence, for "why was acme-web 1.1.0 rolled back?"
    assert (incident.host, incident.package, incident.version) == ("canary-1", "acme-web", "1.1.0")
    assert incident.summary.startswith("acme-web 1.1.0 on canary-1 (analysis): analysis failed")
    assert "evidence: post-patch analysis of ring canary" in incident.summary
    assert "canary median 50.0 ms" in incident.summary
    assert "p=" in incident.summary
    actions = [e.action for e in read_events(w.h.settings.home / "audit.log", run_id=done.run_id)]
    for expected in (
        "analysis.judged",
        "rollback.done",
        "analysis.rolled_back",
        "baseline.rejected",
    ):
        assert expected in actions


# --------------------------------------------------------------------------- marginal, nodata


def marginal_section() -> dict[str, Any]:
    """Two non-critical metrics of canary-1 only; one High gives 50: marginal (40 <= s < 100)."""
    section = analysis_section(pass_score=100, marginal_score=40)
    for metric in section["metrics"]:
        metric["critical"] = False
        metric["hosts"] = ["canary-*"]
    return section


def test_a_marginal_analysis_asks_a_person_and_an_approval_continues(
    world: Callable[..., World],
) -> None:
    w = world({"1.1.0": (0.050, 0.0)}, analysis=marginal_section())
    plan_wait = w.start()
    assert plan_wait.status == "awaiting_approval"  # the plan's approval (web-1 is prod)
    waiting = w.resume(plan_wait, "approved")
    assert waiting.status == "awaiting_approval", waiting.reason
    assert waiting.waiting == "approval"
    assert "post-patch analysis of ring canary: marginal (score 50)" in (waiting.reason or "")
    request = parse_interrupt(waiting.interrupt)
    assert isinstance(request, ApprovalRequest)
    assert request.stage == "analysis"
    assert request.analysis is not None
    assert request.analysis.baseline_mode == "self"  # no peer has the metrics: own window
    assert [(i.host, i.to) for i in request.items] == [("canary-1", "1.1.0")]
    assert w.h.installed() == {"canary-1": "1.1.0", "web-1": "1.0.0", "db-1": "1.0.0"}
    # the pre-patch window was sampled before canary-1 was patched
    assert w.metrics.calls[0] == {"canary-1": "1.0.0"}
    with Store(w.h.settings.store_path) as store:
        pending = store.approval(waiting.run_id)
        assert pending is not None
        assert pending.status == "pending"
        assert pending.plan_id.endswith("/analysis/canary")

    done = w.resume(waiting, "approved", by="carol")
    assert done.status == "completed", done.reason
    assert w.h.installed() == dict.fromkeys(w.h.fleet, "1.1.0")
    (entry,) = w.document(done.run_id)["analysis"]
    assert (entry["verdict"], entry["action"], entry["decided_by"]) == (
        "marginal",
        "continue",
        "carol",
    )
    assert len(w.metrics.calls) == 2  # the decision did not sample again


def test_a_marginal_analysis_rejected_by_a_person_rolls_the_ring_back(
    world: Callable[..., World],
) -> None:
    w = world({"1.1.0": (0.050, 0.0)}, analysis=marginal_section(), **NO_APPROVAL)
    waiting = w.start()
    assert waiting.status == "awaiting_approval", waiting.reason
    done = w.resume(waiting, "rejected", by="bob")
    assert done.status == "halted", done.reason
    assert "rejected by bob" in (done.reason or "")
    assert w.h.installed() == dict.fromkeys(w.h.fleet, "1.0.0")
    canary = rows(w.document(done.run_id))["canary-1"]
    assert canary["status"] == "rolled_back"
    assert canary["reason"].startswith("analysis marginal")
    with Store(w.h.settings.store_path) as store:
        assert store.active_rejections() == []  # a person's doubt is not a baseline rejection


def test_a_provider_that_fails_gives_nodata_and_a_person_decides(
    world: Callable[..., World],
) -> None:
    w = world(**NO_APPROVAL)
    w.metrics.error = ConnectionError("prometheus is down")
    waiting = w.start()
    assert waiting.status == "awaiting_approval", waiting.reason
    request = parse_interrupt(waiting.interrupt)
    assert isinstance(request, ApprovalRequest)
    assert request.analysis is not None
    result = request.analysis.result
    assert result.verdict.value == "nodata"
    assert {m.classification.value for m in result.metrics} == {"Nodata"}
    assert "prometheus is down" in result.metrics[0].reason
    assert w.h.installed()["canary-1"] == "1.1.0"
    assert w.h.installed()["web-1"] == "1.0.0"  # nothing more until a person decides

    w.metrics.error = None
    done = w.resume(waiting, "approved")
    assert done.status == "completed", done.reason
    assert [a["verdict"] for a in w.document(done.run_id)["analysis"]] == ["nodata", "pass"]


def test_a_provider_that_hangs_is_cut_off_and_gives_nodata(world: Callable[..., World]) -> None:
    release = threading.Event()
    w = world(**NO_APPROVAL)
    w.metrics.hang = release
    w.timeout = 0.2
    try:
        waiting = w.start()
    finally:
        release.set()
    assert waiting.status == "awaiting_approval", waiting.reason
    request = parse_interrupt(waiting.interrupt)
    assert isinstance(request, ApprovalRequest)
    assert request.analysis is not None
    assert request.analysis.result.verdict.value == "nodata"
    assert "did not finish within" in request.analysis.result.metrics[0].reason


# --------------------------------------------------------------------------- crash, resume


def test_a_crash_during_the_soak_reruns_the_analysis_without_redeploying(
    world: Callable[..., World], monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world({"1.1.0": SLOW}, **NO_APPROVAL)
    monkeypatch.setenv("PATCHPILOT_FAILPOINTS", "run.analysis_soak:raise")
    crashed = w.start()
    assert crashed.status == "failed"
    assert "analysis failed: FailpointError" in (crashed.reason or "")
    assert len(w.h.fleet["canary-1"].installs) == 1
    assert w.metrics.calls == []  # it died in the soak, before sampling
    snapshot = load_run_state(crashed.run_id, w.h.settings)
    assert snapshot is not None
    assert snapshot.next == ("analysis",)

    monkeypatch.delenv("PATCHPILOT_FAILPOINTS")
    done = w.resume(crashed)
    assert done.status == "halted", done.reason
    assert (done.reason or "").startswith("ring canary halted: analysis failed")
    assert len(w.h.fleet["canary-1"].installs) == 2  # the one install, then its rollback
    assert w.h.installed()["canary-1"] == "1.0.0"
    assert w.soaks == [30, 30]
    assert len(w.metrics.calls) == 1

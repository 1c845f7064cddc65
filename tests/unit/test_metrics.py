"""``/metrics`` (patchpilot/app/metrics.py): parsed by prometheus-client's own text parser, its
numbers equal the store's and the question tools' (what the API serves) on the same store.

The store is the one of tests/unit/test_queries.py: three hosts scanned, web-1 with an overdue
critical finding, db-1 with two findings due later, canary-1 clean; a scan and a patch run
waiting for approval; one rolled-back outcome.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

import patchpilot.app.questions  # noqa: F401 - registers the compliance tool
from patchpilot.app.metrics import COMPLIANCE_STATES, render_metrics, sla_state
from patchpilot.core.models import Severity
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.store import Store
from patchpilot.tools.queries import QueryContext, call_tool
from tests.unit.test_queries import NOW, context_for, fill

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(home=tmp_path / "home")


@pytest.fixture
def store(settings: Settings) -> Iterator[Store]:
    with Store(settings.store_path) as opened:
        fill(opened)
        yield opened


def scrape(store: Store) -> tuple[Samples, dict[str, str]]:
    """Sample name -> {sorted labels: value}, and family name -> type, as Prometheus reads it."""
    body, content_type = render_metrics(store, now=NOW)
    assert content_type.startswith("text/plain; version=")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(body.decode("utf-8")):
        types[family.name] = family.type
        for sample in family.samples:
            key = tuple(sorted(sample.labels.items()))
            assert key not in samples.setdefault(sample.name, {}), f"duplicate {sample}"
            samples[sample.name][key] = sample.value
    return samples, types


def rows(context: QueryContext, tool: str, **arguments: Any) -> list[dict[str, Any]]:
    result = call_tool(context, tool, arguments)
    assert result.error is None, result.error
    assert result.total == len(result.rows)  # nothing cut: every row is compared
    return list(result.rows)


def by_host(samples: Samples, name: str) -> dict[str, float]:
    return {dict(labels)["host"]: value for labels, value in samples[name].items()}


def test_pending_and_security_updates_equal_the_pending_updates_tool(
    settings: Settings, store: Store
) -> None:
    samples, types = scrape(store)
    context = context_for(settings, store)
    pending = Counter(r["host"] for r in rows(context, "pending_updates"))
    security = Counter(r["host"] for r in rows(context, "pending_updates", security_only=True))
    assert by_host(samples, "patchpilot_pending_updates") == {
        "web-1": 2,
        "db-1": 2,
        "canary-1": 0,
    }
    assert by_host(samples, "patchpilot_pending_updates") == {
        h: pending.get(h, 0) for h in ("web-1", "db-1", "canary-1")
    }
    assert by_host(samples, "patchpilot_security_updates") == {
        h: security.get(h, 0) for h in ("web-1", "db-1", "canary-1")
    }
    assert by_host(samples, "patchpilot_security_updates") == {"web-1": 1, "db-1": 1, "canary-1": 0}
    assert types["patchpilot_pending_updates"] == "gauge"


def test_findings_overdue_and_compliance_equal_the_store_and_the_compliance_tool(
    settings: Settings, store: Store
) -> None:
    samples, _ = scrape(store)
    records = store.findings()
    expected = Counter((r.finding.host, r.finding.severity.value) for r in records)
    findings = samples["patchpilot_findings"]
    for host in ("web-1", "db-1", "canary-1"):
        for severity in Severity:
            key = (("host", host), ("severity", severity.value))
            assert findings[key] == expected.get((host, severity.value), 0), key
    assert sum(findings.values()) == len(records) == 3

    compliance_rows = {r["host"]: r for r in rows(context_for(settings, store), "compliance")}
    assert by_host(samples, "patchpilot_overdue_findings") == {
        h: r["overdue"] for h, r in compliance_rows.items()
    }
    assert by_host(samples, "patchpilot_overdue_findings") == {"web-1": 1, "db-1": 0, "canary-1": 0}
    states = samples["patchpilot_host_compliance"]
    for host, row in compliance_rows.items():
        for state in COMPLIANCE_STATES:
            assert states[(("host", host), ("state", state))] == (state == row["sla"])
    assert {h: r["sla"] for h, r in compliance_rows.items()} == {
        "web-1": "overdue",
        "db-1": "due",
        "canary-1": "clean",
    }


def test_runs_by_status_and_rollbacks_equal_the_store(store: Store) -> None:
    samples, types = scrape(store)
    expected = Counter((r.kind, r.status) for r in store.list_runs(limit=1000))
    assert {
        (dict(k)["kind"], dict(k)["status"]): v for k, v in samples["patchpilot_runs"].items()
    } == dict(expected)
    assert dict(expected) == {("scan", "running"): 1, ("run", "awaiting_approval"): 1}
    assert samples["patchpilot_rollbacks_total"] == {(): 1.0}
    assert types["patchpilot_rollbacks"] == "counter"
    # The numbers follow the store at each scrape (a fresh registry, nothing kept).
    store.finish_run(next(iter(r.run_id for r in store.list_runs() if r.kind == "scan")),
                     status="completed", summary={})  # fmt: skip
    again, _ = scrape(store)
    assert again["patchpilot_runs"][(("kind", "scan"), ("status", "completed"))] == 1
    assert (("kind", "scan"), ("status", "running")) not in again["patchpilot_runs"]


def test_an_empty_store_renders_only_the_rollback_counter(tmp_path: Path) -> None:
    with Store(tmp_path / "empty.db") as empty:
        samples, types = scrape(empty)
    assert samples == {"patchpilot_rollbacks_total": {(): 0.0}}
    assert set(types) >= {"patchpilot_pending_updates", "patchpilot_runs", "patchpilot_rollbacks"}


def test_hostile_host_names_stay_inside_their_label(tmp_path: Path) -> None:
    from tests.unit.test_queries import SCAN, T0, _facts

    hostile = 'evil"} 1\npatchpilot_fake{x="'
    with Store(tmp_path / "s.db") as store:
        store.create_run(SCAN, kind="scan", target="all", params={}, started_at=T0)
        store.save_host_snapshot(SCAN, _facts(hostile), [], [])
        samples, _ = scrape(store)
    assert "patchpilot_fake" not in samples
    assert by_host(samples, "patchpilot_pending_updates") == {hostile: 0}


def test_sla_state() -> None:
    today = NOW.date()
    assert sla_state([], today) == "clean"
    assert sla_state([None], today) == "no-sla"
    assert sla_state([None, today], today) == "due"
    assert sla_state([today - timedelta(days=1), today], today) == "overdue"

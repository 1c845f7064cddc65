"""Post-patch analysis on the lab: acme-web 1.3.0 passes its health check but not the analysis.

acme-web 1.3.0 answers ``/health`` with 200 (so the health check passes) but serves ``/``
several times slower and fails a few percent of its requests. With the lab's policy (its
``analysis`` section probes ``/`` on every host) ``patchpilot run --only acme-web=1.3.0``, once
approved, patches the canary, compares it with its unpatched peer (web-1, same window), rolls
it back and halts: the Contract of issue 17 (README "Post-patch analysis"). The CLI runs in
subprocesses as in tests/integration/test_run.py, whose fixture leaves the lab as it found it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.integration.test_run import (
    _version,
    cli,
    health,
    policy,
    restore_lab,
    run_json,
    statuses,
)

if TYPE_CHECKING:
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

__all__ = ["restore_lab"]  # the autouse fixture of test_run: acme-web 1.0.0 again after each test


def test_acme_web_130_fails_the_analysis_the_canary_is_rolled_back_and_the_run_halts(
    lab: LabHandle, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    pol = policy(lab, tmp_path)  # the lab policy as `lab up` wrote it (analysis enabled)
    args = ("run", "-i", str(lab.inventory_path), "--policy", str(pol), "--offline")

    waiting = run_json(home, *args, "--only", "acme-web=1.3.0", expect=6)  # web-1 is prod
    run_id = waiting["run_id"]
    assert waiting["analysis"] == []
    done = run_json(home, "approve", run_id, "--comment", "canary first", expect=7)
    assert done["status"] == "halted", done["reason"]
    assert done["reason"].startswith("ring canary halted: analysis failed")

    assert _version(lab, "canary-1") == "1.0.0 ii"  # rolled back to the previous version
    assert health(lab, "canary-1") == "OK acme-web 1.0.0"
    assert _version(lab, "web-1") == "1.0.0 ii"  # no other ring touched
    assert statuses(done)["web-1"] == "pending"

    res = cli(home, "report", run_id, "--format", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(res.stdout)
    canary = next(d for d in report["deployments"] if d["host"] == "canary-1")
    assert (canary["from"], canary["to"], canary["status"]) == ("1.0.0", "1.3.0", "rolled_back")
    assert canary["reason"].startswith("analysis failed")
    assert "latency" in canary["reason"]
    assert "rolled back to acme-web=1.0.0" in canary["reason"]
    (analysis,) = report["analysis"]
    assert (analysis["ring"], analysis["verdict"], analysis["baseline_mode"]) == (
        "canary",
        "fail",
        "peers",
    )
    assert analysis["baseline_hosts"] == ["web-1"]
    assert analysis["action"] == "rolled_back"
    metrics = {m["name"]: m for m in analysis["metrics"]}
    latency = metrics["latency"]
    assert latency["classification"] == "High"
    assert latency["p_value"] < 0.001
    assert latency["canary"]["median"] > 3 * latency["baseline"]["median"]
    assert latency["canary"]["n"] >= 50
    assert latency["baseline"]["n"] >= 50
    assert {"name", "classification", "baseline", "canary", "p_value"} <= set(metrics["error_rate"])

    rejected = run_json(home, "baseline", "rejections", expect=0)["rejections"]
    assert [(r["package"], r["version"]) for r in rejected] == [("acme-web", "1.3.0")]
    assert "post-patch analysis" in rejected[0]["reason"]

    asked = cli(home, "ask", "why was acme-web 1.3.0 rolled back?", "-i", str(lab.inventory_path))
    assert asked.returncode == 0, asked.stderr[-3000:]
    answer = " ".join(asked.stdout.split())
    assert "analysis failed" in answer
    assert "latency" in answer
    assert "p=" in answer
    cleared = cli(home, "baseline", "clear", "acme-web=1.3.0", "--comment", "test over")
    assert cleared.returncode == 0, cleared.stderr

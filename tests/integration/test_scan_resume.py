"""A scan killed with ``kill -9`` resumes to exactly the scan it would have been (issue 11).

The resumed scan is built by the same context factory as the start (changelog fetcher, vector
memory, LLM client), so it finds what an uninterrupted scan finds, field by field: the lab
fleet's findings with the CVEs read from each update's Debian changelog, killed mid-assessment
(``patchpilot.core.failpoints``; the other failpoints are killed on scripted hosts in
tests/unit/test_graph_scan.py, as is a step that raises). A scan
being driven by one process cannot be resumed by another (the per-run lock of patch runs), and
an LLM configured at the start assists the resumed scan too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.llm_server import LLMTestServer, answer

if TYPE_CHECKING:
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

KILL_POINTS = ["scan.assessed#2"]
"""After the second host's findings are stored (mid-assessment: the first host's are reused).
The other failpoints (after a host's discovery, after sourcing, after prioritization) are
killed on scripted hosts in tests/unit/test_graph_scan.py, which runs the same graph."""


def cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PATCHPILOT_HOME": str(home), **env},
        timeout=900,
        check=False,
    )


def newest_run(home: Path) -> dict[str, Any]:
    res = cli(home, "runs", "--format", "json")
    assert res.returncode == 0, res.stderr
    run: dict[str, Any] = json.loads(res.stdout)["runs"][0]
    return run


def _comparable(finding: dict[str, Any]) -> dict[str, Any]:
    """A finding with what legitimately differs between two scans left out: when each scan
    read its provenance (``provenance[].fetched_at`` is the discovery time)."""
    return {
        **finding,
        "provenance": [
            {k: v for k, v in p.items() if k != "fetched_at"} for p in finding["provenance"]
        ],
    }


def _findings(doc: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, Any]]:
    return {
        (f["host"], f["source_package"], f["advisory"]): _comparable(f) for f in doc["findings"]
    }


def _differences(expected: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Every finding and field that differs, readable in a failure message."""
    want, have = _findings(expected), _findings(got)
    diffs = [f"missing {k}" for k in want.keys() - have.keys()]
    diffs += [f"unexpected {k}" for k in have.keys() - want.keys()]
    for key in want.keys() & have.keys():
        for name in want[key].keys() | have[key].keys():
            if want[key].get(name) != have[key].get(name):
                diffs.append(f"{key} {name}: {want[key].get(name)!r} != {have[key].get(name)!r}")
    return sorted(diffs)


def _pending(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {h["name"]: h["pending_updates"] for h in doc["hosts"]}


@pytest.fixture(scope="module")
def baseline(lab: LabHandle, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """One uninterrupted scan of the lab, with changelogs (the home is shared by the crashed
    scans below: the same changelog cache and first-seen dates)."""
    home = tmp_path_factory.mktemp("scan-resume-home")
    res = cli(home, "scan", "-i", str(lab.inventory_path), "--offline", "--format", "json")
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert sum(len(f["cves"]) for f in doc["findings"]) > 0, "the changelogs name CVEs"
    return home, doc


@pytest.mark.parametrize("failpoint", KILL_POINTS)
def test_a_scan_killed_at_a_failpoint_resumes_to_the_same_findings(
    lab: LabHandle, baseline: tuple[Path, dict[str, Any]], failpoint: str
) -> None:
    home, reference = baseline
    killed = cli(
        home,
        "scan",
        "-i",
        str(lab.inventory_path),
        "--offline",
        "--format",
        "json",
        PATCHPILOT_FAILPOINTS=failpoint,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]  # SIGKILL, like kill -9
    run = newest_run(home)
    assert run["status"] == "running"

    resumed = cli(home, "resume", run["run_id"], "--format", "json")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    doc = json.loads(resumed.stdout)
    assert doc["run"]["run_id"] == run["run_id"]
    assert _differences(reference, doc) == []
    assert len(doc["findings"]) == len(reference["findings"])
    assert sum(len(f["cves"]) for f in doc["findings"]) == sum(
        len(f["cves"]) for f in reference["findings"]
    )
    assert _pending(doc) == _pending(reference)  # the CVEs each pending update fixes
    assert doc["run"]["summary"] == reference["run"]["summary"]
    assert newest_run(home)["status"] == "completed"


def test_a_scan_running_in_one_process_cannot_be_resumed_by_another(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PATCHPILOT_HOME": str(home),
        "PATCHPILOT_DISCOVERY__CHANGELOGS": "none",
        "PATCHPILOT_FAILPOINTS": "scan.sourced:sleep=15",  # holds the scan busy
    }
    running = subprocess.Popen(
        [sys.executable, "-m", "patchpilot", "scan", "-t", "local", "--offline", "-f", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        run_id = None
        while run_id is None and time.monotonic() < deadline:
            assert running.poll() is None, running.communicate()
            if (home / "patchpilot.db").exists():
                res = cli(home, "runs", "--format", "json")
                runs = json.loads(res.stdout)["runs"] if res.returncode == 0 else []
                run_id = runs[0]["run_id"] if runs else None
            time.sleep(0.2)
        assert run_id is not None, "the scan never recorded its run"
        assert (home / "locks" / f"{run_id}.lock").read_text() == str(running.pid)

        busy = cli(home, "resume", run_id, "--format", "json")
        assert busy.returncode == 1, busy.stderr
        assert "being driven by another patchpilot process" in busy.stderr
        assert f"pid {running.pid}" in busy.stderr
        stdout, stderr = running.communicate(timeout=300)
    finally:
        if running.poll() is None:
            running.kill()  # only the scan this test started, by its Popen handle
            running.wait(timeout=30)
    assert running.returncode == 0, stderr[-3000:]
    own = json.loads(stdout)
    report = cli(home, "report", run_id, "--format", "json")
    assert report.returncode == 0, report.stderr
    # The refused resume changed nothing: the scan's own result stands.
    assert _findings(json.loads(report.stdout)) == _findings(own)
    assert newest_run(home)["status"] == "completed"


def test_a_resumed_scan_is_assisted_by_the_llm_configured_at_its_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with LLMTestServer(responder=lambda request: answer({"items": []})) as server:
        env = {
            "PATCHPILOT_DISCOVERY__CHANGELOGS": "none",
            "PATCHPILOT_LLM__BASE_URL": server.base_url,
            "PATCHPILOT_LLM__MODEL": server.model,
            "PATCHPILOT_LLM__CACHE": "false",
        }
        killed = cli(
            home,
            "scan",
            "-t",
            "local",
            "--offline",
            "-f",
            "json",
            PATCHPILOT_FAILPOINTS="scan.assessed",  # before prioritization, the LLM's step
            **env,
        )
        assert killed.returncode == -9, killed.stderr[-2000:]
        assert server.chat_requests == []
        run_id = newest_run(home)["run_id"]
        resumed = cli(home, "resume", run_id, "--format", "json", **env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        asked = len(server.chat_requests)
    (step,) = json.loads(resumed.stdout)["run"]["summary"]["assistance"]
    assert (step["task"], step["by"]) == ("prioritization", "llm"), step
    assert asked == 1

"""The CLI end to end, as a user runs it: real processes, real exit codes, real output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "configs" / "inventory.example.yaml"


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_facts_local_json_contract() -> None:
    res = run_cli("facts", "local", "--format", "json", "--packages")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "patchpilot.facts/v1"
    assert doc["summary"] == {"total": 1, "ok": 1, "failed": 0}
    host = doc["hosts"][0]
    assert host["ok"] is True
    assert host["error"] is None
    facts = host["facts"]
    assert facts["os"]["family"] in {"debian", "rhel", "alpine"}
    assert facts["kernel"] == os.uname().release
    assert facts["package_count"] == len(host["packages"]) > 0
    assert facts["source_package_count"] == len({p["source_name"] for p in host["packages"]})
    assert isinstance(facts["reboot_required"], bool)


def test_facts_local_table_names_the_host() -> None:
    res = run_cli("facts", "local")
    assert res.returncode == 0, res.stderr
    assert "local" in res.stdout
    assert os.uname().release in res.stdout


def test_inventory_json_with_limit() -> None:
    res = run_cli("inventory", "-i", str(EXAMPLE), "--limit", "web*:&prod", "-f", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == "patchpilot.inventory/v1"
    names = [h["name"] for h in doc["hosts"]]
    assert names == ["web-1", "web-2", "web-canary"]
    web1 = doc["hosts"][0]
    assert web1["exposure"] == "internet"
    assert "webservers" in web1["tags"]
    assert set(web1) >= {"address", "port", "user", "key_file", "criticality", "owner"}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("inventory", "-i", str(EXAMPLE), "--limit", "nosuchhost"), "nosuchhost"),
        (("facts", "webservers"), "no inventory"),
        (("inventory", "-i", "/nonexistent/inventory.yaml"), "No such file"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], needle: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr


def test_bad_inventory_names_file_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "inv.yaml"
    bad.write_text("hosts:\n  web-1:\n    address: 127.0.0.1\n    port: seventy\n")
    res = run_cli("inventory", "-i", str(bad))
    assert res.returncode == 2
    assert str(bad) in res.stderr.replace("\n", "")
    assert "hosts.web-1.port" in res.stderr


def test_bad_setting_from_env_exit_2() -> None:
    res = run_cli("facts", "local", env={"PATCHPILOT_CONCURRENCY": "many"})
    assert res.returncode == 2
    assert "PATCHPILOT_CONCURRENCY" in res.stderr


def _inventory(tmp_path: Path, port: int, *, with_local: bool) -> Path:
    inv = tmp_path / "inv.yaml"
    local = "  here: {transport: local}\n" if with_local else ""
    inv.write_text(
        "hosts:\n"
        f"  gone-1: {{address: 127.0.0.1, port: {port}, user: nobody}}\n"
        f"  gone-2: {{address: 127.0.0.1, port: {port}, user: nobody}}\n" + local
    )
    return inv


FAST_FAIL = {"PATCHPILOT_SSH__CONNECT_RETRIES": "1", "PATCHPILOT_SSH__CONNECT_TIMEOUT": "3"}


def test_partial_failure_exit_3_and_others_complete(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, closed_port(), with_local=True)
    res = run_cli("facts", "all", "-i", str(inv), "-f", "json", env=FAST_FAIL)
    assert res.returncode == 3, res.stderr
    doc = json.loads(res.stdout)
    by_host = {h["host"]: h for h in doc["hosts"]}
    assert by_host["here"]["ok"] is True
    for name in ("gone-1", "gone-2"):
        assert by_host[name]["ok"] is False
        assert by_host[name]["error"]["type"] == "HostConnectError"
        assert "refused" in by_host[name]["error"]["message"].lower()
    assert doc["summary"] == {"total": 3, "ok": 1, "failed": 2}


def test_all_failed_exit_4_with_reason_on_stderr(tmp_path: Path) -> None:
    inv = _inventory(tmp_path, closed_port(), with_local=False)
    res = run_cli("facts", "all", "-i", str(inv), env=FAST_FAIL)
    assert res.returncode == 4
    assert "gone-1" in res.stderr
    assert "2 of 2 host(s) failed" in res.stderr


def test_version() -> None:
    res = run_cli("--version")
    assert res.returncode == 0
    assert res.stdout.startswith("patchpilot ")

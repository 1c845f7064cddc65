"""Facts over a real sshd equal facts read locally, through the library and through the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from patchpilot.core.settings import load_settings
from patchpilot.tools.facts import collect_host_facts
from patchpilot.tools.transport import LocalTransport, SSHTransport
from tests.integration.conftest import SSHServer

pytestmark = pytest.mark.integration


def test_same_inventory_over_ssh_as_locally(sshd_server: SSHServer, tmp_path: Path) -> None:
    with SSHTransport(
        sshd_server.host(), sshd_server.settings(), tmp_path / "pp_known_hosts"
    ) as ssh:
        ssh_facts, ssh_packages = collect_host_facts(ssh)
        assert ssh.connections_opened == 1  # every fact over one reused connection
    with LocalTransport("sshd-test") as local:
        local_facts, local_packages = collect_host_facts(local)
    assert ssh_packages == local_packages
    assert len(ssh_packages) > 0
    strip = {"collected_at"}
    assert ssh_facts.model_dump(exclude=strip) == local_facts.model_dump(exclude=strip)


def _cli(
    args: list[str], server: SSHServer, tmp_path: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "PATCHPILOT_HOME": str(tmp_path / "pp-home"),
        "PATCHPILOT_SSH__USE_AGENT": "false",
        "PATCHPILOT_SSH__LOOK_FOR_KEYS": "false",
        "PATCHPILOT_SSH__CONNECT_RETRIES": "1",
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=120,
        check=False,
    )


def _inventory(server: SSHServer, tmp_path: Path) -> Path:
    inv = tmp_path / "lab.yaml"
    inv.write_text(
        "hosts:\n"
        f"  lab-1: {{address: {server.address}, port: {server.port}, user: {server.user},\n"
        f"          key_file: {server.user_key}, tags: [web, staging]}}\n"
        f"  lab-2: {{address: {server.address}, port: {server.port}, user: {server.user},\n"
        f"          key_file: {server.user_key}, tags: [db, staging]}}\n"
    )
    return inv


def test_cli_facts_over_ssh_match_local(sshd_server: SSHServer, tmp_path: Path) -> None:
    inv = _inventory(sshd_server, tmp_path)
    res = _cli(
        ["facts", "staging", "-i", str(inv), "-f", "json", "--packages"],
        sshd_server,
        tmp_path,
        PATCHPILOT_SSH__KNOWN_HOSTS=str(sshd_server.known_hosts),
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [h["host"] for h in doc["hosts"]] == ["lab-1", "lab-2"]
    local = _cli(["facts", "local", "-f", "json", "--packages"], sshd_server, tmp_path)
    local_packages = json.loads(local.stdout)["hosts"][0]["packages"]
    for host in doc["hosts"]:
        assert host["ok"] is True
        assert host["packages"] == local_packages


def test_cli_refuses_unknown_host_key_then_tofu_records_it(
    sshd_server: SSHServer, tmp_path: Path
) -> None:
    inv = _inventory(sshd_server, tmp_path)
    refused = _cli(["facts", "lab-1", "-i", str(inv), "-f", "json"], sshd_server, tmp_path)
    assert refused.returncode == 4
    error = json.loads(refused.stdout)["hosts"][0]["error"]
    assert error["type"] == "HostKeyError"
    assert "SHA256:" in error["message"]

    tofu = _cli(
        ["facts", "lab-1", "-i", str(inv)],
        sshd_server,
        tmp_path,
        PATCHPILOT_SSH__TRUST_ON_FIRST_USE="true",
    )
    assert tofu.returncode == 0, tofu.stderr
    recorded = (tmp_path / "pp-home" / "known_hosts").read_text()
    assert sshd_server.known_hosts_name in recorded
    # Recorded keys are trusted from now on, with trust-on-first-use off again.
    again = _cli(["facts", "lab-1", "-i", str(inv)], sshd_server, tmp_path)
    assert again.returncode == 0, again.stderr
    assert load_settings().ssh.trust_on_first_use is False

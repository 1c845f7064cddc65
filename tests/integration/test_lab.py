"""The lab fleet end to end: real Debian 12 and 13 hosts in namespaces, over strict SSH.

Needs root (skipped otherwise, failed when CI is set). With cached bases the file takes well
under two minutes; the very first run debootstraps the bookworm and the trixie base (about a
minute more each).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from patchpilot.core.inventory import load_inventory
from patchpilot.core.policy import load_policy
from patchpilot.core.settings import load_settings
from patchpilot.lab.base import meta_path_of, read_meta, tarball_path
from patchpilot.lab.system import http_status, mounts, process_alive, tcp_accepting
from patchpilot.tools.transport import open_transport

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first breaks rewriting
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration


def _wait_health(port: int, expected: int, timeout: float = 8.0) -> int | None:
    deadline = time.monotonic() + timeout
    status = http_status(port)
    while status != expected and time.monotonic() < deadline:
        time.sleep(0.1)
        status = http_status(port)
    return status


def _lab_mounts(lab: LabHandle) -> list[str]:
    root = str(lab.lab.dir)
    return [m.mount_point for m in mounts() if m.mount_point.startswith(root)]


def test_every_host_over_strict_ssh(lab: LabHandle, tmp_path: Path) -> None:
    inventory = load_inventory(lab.full_inventory_path)
    assert sorted(inventory.hosts) == ["canary-1", "db-1", "trixie-1", "web-1"]
    settings = load_settings(home=tmp_path / "pp-home")
    assert settings.ssh.trust_on_first_use is False
    for host in inventory.hosts.values():
        assert host.address == "127.0.0.1"
        with open_transport(host, settings) as transport:
            assert transport.run(["hostname"], check=True).stdout.strip() == host.name
            query = transport.run(
                ["dpkg-query", "-W", "-f", "${Package} ${Version}\\n", "acme-web"], check=True
            )
            assert query.stdout.strip() == "acme-web 1.0.0"
            assert transport.run(["id", "-u"], sudo=True, check=True).stdout.strip() == "0"
    web = inventory.hosts["web-1"]
    assert {"web", "prod"} <= web.tags
    assert web.criticality == 4
    assert inventory.hosts["db-1"].criticality == 5


def test_acme_web_healthy_everywhere(lab: LabHandle) -> None:
    for host in lab.all_hosts:
        assert _wait_health(host.acme_port, 200) == 200, host.name


def test_inventory_status_and_profile_mark_the_release(lab: LabHandle) -> None:
    (trixie,) = lab.trixie_hosts
    assert (trixie.name, trixie.release, trixie.index) == ("trixie-1", "trixie", 4)
    assert {h.release for h in lab.hosts} == {"bookworm"}
    inventory = load_inventory(lab.full_inventory_path)
    assert set(inventory.tags["trixie"]) == {"trixie-1"}
    assert set(inventory.tags["bookworm"]) == {"canary-1", "web-1", "db-1"}
    assert {"web", "staging", "trixie"} <= inventory.hosts["trixie-1"].tags
    assert "prod" not in inventory.hosts["trixie-1"].tags  # needs no approval in the lab policy
    status = {h.name: h for h in lab.lab.status().hosts}
    assert {name: h.release for name, h in status.items()} == {
        "canary-1": "bookworm",
        "web-1": "bookworm",
        "db-1": "bookworm",
        "trixie-1": "trixie",
    }
    policy = load_policy(lab.lab.policy_path)
    (rule,) = [r for r in policy.health.checks if r.name == "acme-web"]
    assert str(trixie.acme_port) in json.dumps(rule.check.model_dump(mode="json"))
    # inside: the host is what the profile says, with its release's suites
    os_release = lab.exec("trixie-1", ["cat", "/etc/os-release"]).stdout
    assert "VERSION_CODENAME=trixie" in os_release
    sources = lab.exec("trixie-1", ["cat", "/etc/apt/sources.list"]).stdout.split("\n")
    assert {line.split()[2] for line in sources if line.startswith("deb ")} == {
        "trixie",
        "trixie-updates",
        "trixie-security",
    }


def test_one_cached_base_per_release(lab: LabHandle) -> None:
    status = lab.lab.status()
    assert status.base_present
    assert [(b.release, b.present) for b in status.bases] == [
        ("bookworm", True),
        ("trixie", True),
    ]
    for release in ("bookworm", "trixie"):
        tarball = tarball_path(lab.lab.cache, release)
        meta = read_meta(meta_path_of(tarball))
        assert meta is not None, tarball
        assert meta.suite == release
        assert lab.lab.base_dir_for(release).is_dir()
    assert lab.lab.base_dir_for("bookworm") != lab.lab.base_dir_for("trixie")


def test_acme_web_upgrades_and_rolls_back_on_trixie(lab: LabHandle) -> None:
    """The demo's acme-web cycle on Debian 13 (python3.13): good, broken, rolled back."""
    port = lab.host("trixie-1").acme_port
    install = [
        "apt-get",
        "install",
        "-y",
        "--allow-downgrades",
        "-o",
        "Dpkg::Options::=--force-confold",
    ]
    try:
        for version, health in (("1.1.0", 200), ("1.2.0", 503), ("1.0.0", 200)):
            done = lab.exec("trixie-1", [*install, f"acme-web={version}"])
            assert done.returncode == 0, done.stderr
            assert _wait_health(port, health) == health, version
        processes = lab.exec("trixie-1", ["ps", "-e", "-o", "comm="]).stdout.split()
        assert "python3.13" in processes
    finally:
        lab.exec("trixie-1", [*install, "acme-web=1.0.0"])
    query = lab.exec("trixie-1", ["dpkg-query", "-W", "-f", "${Version}", "acme-web"])
    assert query.stdout == "1.0.0"


def test_db1_is_held_and_dist_upgrade_removes_the_plugin(lab: LabHandle) -> None:
    held = lab.exec("db-1", ["apt-mark", "showhold"])
    assert held.returncode == 0
    assert held.stdout.split() == ["acme-web"]
    sim = lab.exec("db-1", ["apt-get", "-s", "dist-upgrade"])
    assert sim.returncode == 0, sim.stderr
    assert "Remv acme-plugin-legacy" in sim.stdout
    assert "Inst acme-agent [1.0.0] (2.0.0" in sim.stdout
    assert "Inst acme-web" not in sim.stdout  # held
    other = lab.exec("web-1", ["dpkg-query", "-W", "acme-agent"])
    assert other.returncode != 0  # only db-1 has the agent


def test_up_repairs_a_stopped_host(lab: LabHandle) -> None:
    before = {h.name: h.pid for h in lab.lab.status().hosts}
    lab.stop_host("canary-1")
    canary = lab.host("canary-1")
    assert not process_alive(before["canary-1"] or 0)
    assert not tcp_accepting(canary.port)
    status = {h.name: h for h in lab.lab.up().hosts}
    assert status["canary-1"].running
    assert status["canary-1"].ssh_ok
    assert status["canary-1"].pid != before["canary-1"]
    assert status["web-1"].pid == before["web-1"]  # healthy hosts are kept
    assert _wait_health(canary.acme_port, 200) == 200


def test_down_leaves_no_process_and_no_mount(lab: LabHandle) -> None:
    pids = [h.pid for h in lab.lab.status().hosts]
    assert all(pids)
    assert _lab_mounts(lab)
    status = lab.lab.down()
    assert not any(h.running for h in status.hosts)
    assert not any(process_alive(pid or 0) for pid in pids)
    assert _lab_mounts(lab) == []
    assert not any(
        " - overlay patchpilot-lab-" in line and str(lab.lab.dir) in line
        for line in Path("/proc/self/mountinfo").read_text().splitlines()
    )
    up = lab.lab.up()
    assert all(h.running and h.ssh_ok for h in up.hosts)


def test_reset_gives_fresh_hosts(lab: LabHandle, tmp_path: Path) -> None:
    marker = "/root/lab-reset-marker"
    assert lab.exec("canary-1", ["touch", marker]).returncode == 0
    key_before = lab.exec("canary-1", ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout
    status = lab.lab.reset()
    assert all(h.running and h.ssh_ok for h in status.hosts)
    assert lab.exec("canary-1", ["test", "-e", marker]).returncode == 1
    key_after = lab.exec("canary-1", ["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]).stdout
    assert key_after != key_before
    settings = load_settings(home=tmp_path / "pp-home")
    host = load_inventory(lab.inventory_path).hosts["canary-1"]
    with open_transport(host, settings) as transport:
        assert transport.run(["hostname"], check=True).stdout.strip() == "canary-1"
    for host_status in status.hosts:
        # fresh: only provisioning and apt's package cache (~40 MiB, built at start) are there
        assert host_status.upper_bytes < 64 * 2**20

"""Simulate, install, health-check, roll back and repair for real on the lab (Debian 12 hosts).

Needs root (the shared ``lab`` fixture). Tests that change a host restore ``acme-web`` 1.0.0
on every host afterwards (``restore_acme`` finalizer), since other lab tests expect 1.0.0
installed, 1.3.0 (the newest) pending on canary-1 and web-1, and the hold on db-1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import structlog

from patchpilot.core.errors import CommandFailedError
from patchpilot.core.inventory import load_inventory
from patchpilot.core.models import Host
from patchpilot.core.settings import load_settings
from patchpilot.tools.facts.apt_simulate import simulate_install
from patchpilot.tools.health import CommandCheck, HttpCheck, ProcessCheck, run_check
from patchpilot.tools.packages import (
    audit_and_repair,
    install_exact,
    installed_versions,
    restart_service,
)
from patchpilot.tools.transport import Transport, open_transport

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first breaks rewriting
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

_log = structlog.get_logger(__name__)

Connect = Callable[[str], AbstractContextManager[Transport]]


@pytest.fixture
def hosts(lab: LabHandle) -> dict[str, Host]:
    """The lab inventory's hosts by name."""
    return dict(load_inventory(lab.inventory_path).hosts)


@pytest.fixture
def connect(lab: LabHandle, hosts: dict[str, Host], tmp_path: Path) -> Connect:
    """Open an SSH transport to a lab host (strict host keys, the lab's key)."""
    settings = load_settings(home=tmp_path / "pp-home")

    def _open(name: str) -> AbstractContextManager[Transport]:
        return open_transport(hosts[name], settings)

    return _open


def _dpkg_version(lab: LabHandle, host: str, package: str) -> str | None:
    done = lab.exec(host, ["dpkg-query", "-W", "-f", "${Version} ${db:Status-Abbrev}", package])
    version, _, status = done.stdout.partition(" ")
    # db:Status-Abbrev: desired (i, or h for held), then status (i = installed), then error.
    return version if done.returncode == 0 and status[1:2] == "i" else None


@pytest.fixture
def restore_acme(lab: LabHandle) -> Iterator[None]:
    """Finalizer: every host ends with acme-web 1.0.0 configured (db-1 keeps its hold)."""
    yield
    for host in lab.hosts:
        lab.exec(host.name, ["dpkg", "--configure", "-a", "--force-confold"])
        if _dpkg_version(lab, host.name, "acme-web") != "1.0.0":
            done = lab.exec(
                host.name,
                [
                    "env",
                    "DEBIAN_FRONTEND=noninteractive",
                    "apt-get",
                    "-q",
                    "-y",
                    "--allow-downgrades",
                    "--allow-change-held-packages",
                    "install",
                    "acme-web=1.0.0",
                ],
            )
            assert done.returncode == 0, done.stderr
        if "acme-web" in host.held:
            lab.exec(host.name, ["apt-mark", "hold", "acme-web"])
        assert _dpkg_version(lab, host.name, "acme-web") == "1.0.0"


def _health(lab: LabHandle, name: str, *, retries: int = 20) -> HttpCheck:
    port = lab.host(name).acme_port
    return HttpCheck(url=f"http://{{address}}:{port}/health", retries=retries, interval_s=0.25)


def test_simulations_predict_upgrade_removal_and_hold(connect: Connect) -> None:
    with connect("canary-1") as transport:
        upgrade = simulate_install(transport, [("acme-web", "1.1.0")])
        with pytest.raises(CommandFailedError, match="was not found"):
            simulate_install(transport, [("acme-web", "9.9")])
    assert [(c.name, c.from_version, c.to_version) for c in upgrade.upgrades] == [
        ("acme-web", "1.0.0", "1.1.0")
    ]
    assert not (upgrade.has_removals)
    assert not (upgrade.has_held)
    assert not (upgrade.has_new_packages)
    assert not upgrade.reboot_hint
    assert upgrade.services == {"acme-web": ("acme-web",)}
    assert upgrade.conffiles is not None
    assert [c.path for c in upgrade.conffiles] == ["/etc/init.d/acme-web"]
    assert upgrade.modified_conffiles == ()

    with connect("db-1") as transport:
        removal = simulate_install(transport, [("acme-agent", "2.0.0")])
        held = simulate_install(transport, [("acme-web", "1.1.0")])
    assert removal.has_removals
    assert [(r.name, r.version) for r in removal.removals] == [("acme-plugin-legacy", "1.0.0")]
    assert [c.name for c in removal.upgrades] == ["acme-agent"]
    assert held.has_held
    assert held.held == ("acme-web",)
    assert not held.has_removals


def test_installed_versions_match_dpkg(lab: LabHandle, connect: Connect) -> None:
    packages = ["acme-web", "openssl", "acme-agent", "acme-plugin-legacy", "nosuchpkg"]
    for name in ("canary-1", "db-1"):
        with connect(name) as transport:
            versions = installed_versions(transport, packages)
        assert versions == {p: _dpkg_version(lab, name, p) for p in packages}
    assert versions["acme-agent"] == "1.0.0"
    assert versions["nosuchpkg"] is None


def test_held_and_removal_are_refused(lab: LabHandle, connect: Connect) -> None:
    with connect("db-1") as transport:
        held = install_exact(transport, [("acme-web", "1.1.0")], allow_downgrades=False)
        removal = install_exact(transport, [("acme-agent", "2.0.0")], allow_downgrades=False)
    assert not held.ok
    assert held.failure == "held"
    assert held.reason == (
        "E: Held packages were changed and -y was used without --allow-change-held-packages."
    )
    assert held.after == {"acme-web": "1.0.0"}
    assert not removal.ok
    assert removal.failure == "removals"
    assert removal.reason == "E: Packages need to be removed but remove is disabled."
    assert _dpkg_version(lab, "db-1", "acme-plugin-legacy") == "1.0.0"


@pytest.mark.usefixtures("restore_acme")
def test_install_break_and_roll_back(
    lab: LabHandle, connect: Connect, hosts: dict[str, Host]
) -> None:
    host = hosts["canary-1"]
    check = _health(lab, "canary-1")
    with connect("canary-1") as transport:
        assert run_check(check, transport, host).ok

        started = time.monotonic()
        good = install_exact(transport, [("acme-web", "1.1.0")], allow_downgrades=False)
        assert good.ok, good.reason
        assert good.before == {"acme-web": "1.0.0"}
        assert good.after == {"acme-web": "1.1.0"}
        assert run_check(check, transport, host).ok
        _log.info("timing", step="install-1.1.0", seconds=round(time.monotonic() - started, 1))

        again = install_exact(transport, [("acme-web", "1.1.0")], allow_downgrades=False)
        assert again.ok
        assert not again.changed

        broken = install_exact(transport, [("acme-web", "1.2.0")], allow_downgrades=False)
        assert broken.ok, broken.reason
        failed = run_check(check.model_copy(update={"retries": 8}), transport, host)
        assert not failed.ok
        assert failed.status_code == 503

        plan = simulate_install(
            transport, [("acme-web", "1.1.0")], allow_downgrades=True, only_upgrade=False
        )
        assert [(c.from_version, c.to_version) for c in plan.downgrades] == [("1.2.0", "1.1.0")]

        started = time.monotonic()
        rollback = install_exact(transport, [("acme-web", "1.1.0")], allow_downgrades=True)
        assert rollback.ok, rollback.reason
        assert "--allow-downgrades" in (rollback.argv or ())
        assert "--only-upgrade" not in (rollback.argv or ())
        healthy = run_check(check, transport, host)
        assert healthy.ok, healthy.detail
        _log.info("timing", step="rollback+health", seconds=round(time.monotonic() - started, 1))

        assert restart_service(transport, "acme-web").ok
        assert run_check(check, transport, host).ok
        assert run_check(ProcessCheck(name="python3.11"), transport).ok
        status = CommandCheck(argv=("service", "acme-web", "status"), sudo=True)
        assert run_check(status, transport).ok
    assert _dpkg_version(lab, "canary-1", "acme-web") == "1.1.0"


@pytest.mark.usefixtures("restore_acme")
def test_audit_and_repair_configures_an_unpacked_package(lab: LabHandle, connect: Connect) -> None:
    unpack = lab.exec(
        "web-1",
        [
            "sh",
            "-c",
            "cd /tmp && apt-get -q download acme-web=1.1.0 && dpkg --unpack acme-web_1.1.0_all.deb",
        ],
    )
    assert unpack.returncode == 0, unpack.stderr
    with connect("web-1") as transport:
        assert installed_versions(transport, ["acme-web"]) == {"acme-web": None}
        repair = audit_and_repair(transport)
        assert repair.needed
        assert repair.ok, repair.reason
        assert repair.packages == ("acme-web",)
        assert "unpacked but not yet configured" in repair.audit_before
        assert repair.audit_after == ""
        assert installed_versions(transport, ["acme-web"]) == {"acme-web": "1.1.0"}
        assert run_check(_health(lab, "web-1"), transport, lab_host_model(lab, "web-1")).ok
        clean = audit_and_repair(transport)
    assert not clean.needed
    assert clean.ok
    lab.exec("web-1", ["rm", "-f", "/tmp/acme-web_1.1.0_all.deb"])


def lab_host_model(lab: LabHandle, name: str) -> Host:
    """The inventory Host of a lab host."""
    return load_inventory(lab.inventory_path).hosts[name]

"""The lab fleet without root: profile, inventory, keys, state, base metadata, CLI, errors."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import pytest
from typer.testing import CliRunner

from patchpilot.cli.lab import lab_app
from patchpilot.core.errors import LabError, PatchpilotError
from patchpilot.core.inventory import load_inventory
from patchpilot.core.models import Exposure
from patchpilot.core.settings import load_settings
from patchpilot.lab import Lab, LabState, fleet_profile, lab_host
from patchpilot.lab.base import base_age_days, cache_dir, read_meta, write_meta
from patchpilot.lab.hosts import host_key_lines, nsenter_argv
from patchpilot.lab.inventory import ensure_client_key, write_inventory, write_known_hosts
from patchpilot.lab.lab import _check_layout
from patchpilot.lab.models import BaseMeta, HostState
from patchpilot.lab.system import (
    NOT_ROOT_MESSAGE,
    parse_mountinfo,
    process_alive,
    process_state,
)


def test_profile_first_hosts() -> None:
    canary, web, db = fleet_profile(3)
    assert (canary.name, canary.tags, canary.criticality) == (
        "canary-1",
        ("web", "staging", "canary"),
        2,
    )
    assert canary.exposure is Exposure.INTERNAL
    assert (web.name, web.tags, web.criticality, web.exposure) == (
        "web-1",
        ("web", "prod"),
        4,
        Exposure.INTERNET,
    )
    assert (db.name, db.tags, db.criticality) == ("db-1", ("db", "prod"), 5)
    assert db.held == ("acme-web",)
    assert db.extra_packages == ("acme-agent=1.0.0", "acme-plugin-legacy=1.0.0")
    assert not canary.held
    assert not web.extra_packages
    assert [h.port for h in (canary, web, db)] == [2201, 2202, 2203]
    assert [h.acme_port for h in (canary, web, db)] == [8081, 8082, 8083]


def test_profile_cycles_with_unique_names() -> None:
    hosts = fleet_profile(12, base_port=3000, acme_base_port=4000)
    names = [h.name for h in hosts]
    assert names[:7] == ["canary-1", "web-1", "db-1", "web-2", "staging-1", "db-2", "web-3"]
    assert len(set(names)) == 12
    assert hosts[4].tags == ("web", "staging")
    assert [h.port for h in hosts] == list(range(3000, 3012))
    assert hosts[11].acme_port == 4011
    assert sum(1 for h in hosts if h.held) == 1
    assert lab_host(5) == hosts[4].model_copy(update={"port": 2205, "acme_port": 8085})
    with pytest.raises(ValueError, match="starts at 1"):
        lab_host(0)


def test_inventory_round_trip(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "id_ed25519"
    known = tmp_path / "keys" / "known_hosts"
    hosts = fleet_profile(4)
    write_inventory(tmp_path / "inventory.yaml", hosts, key, known)
    inventory = load_inventory(tmp_path / "inventory.yaml")
    assert list(inventory.hosts) == ["canary-1", "web-1", "db-1", "web-2"]
    for lab_h in hosts:
        host = inventory.hosts[lab_h.name]
        assert host.address == "127.0.0.1"
        assert host.port == lab_h.port
        assert host.user == "lab"
        assert host.key_file == str(key)
        assert host.known_hosts == str(known)
        assert set(lab_h.tags) <= host.tags
        assert host.criticality == lab_h.criticality
        assert host.exposure == lab_h.exposure
        assert host.owner == lab_h.owner
    assert set(inventory.tags["prod"]) == {"web-1", "db-1", "web-2"}


def test_client_key_is_private_and_loads(tmp_path: Path) -> None:
    key = tmp_path / "keys" / "id_ed25519"
    public = ensure_client_key(key)
    assert public.startswith("ssh-ed25519 AAAA")
    assert key.stat().st_mode & 0o777 == 0o600
    loaded = paramiko.Ed25519Key.from_private_key_file(str(key))
    assert public.split()[1] == loaded.get_base64()
    assert ensure_client_key(key) == public  # kept


def _make_key(path: Path) -> Path:
    ensure_client_key(path)
    return path


def test_known_hosts_lines(tmp_path: Path) -> None:
    ssh = tmp_path / "upper" / "etc" / "ssh"
    ssh.mkdir(parents=True)
    key = paramiko.Ed25519Key.from_private_key_file(str(_make_key(tmp_path / "k")))
    line = f"{key.get_name()} {key.get_base64()}"
    (ssh / "ssh_host_ed25519_key.pub").write_text(f"{line} root@x\n")
    (ssh / "ssh_host_rsa_key.pub").write_text("ssh-rsa AAAARSA root@x\n")
    (ssh / "ssh_host_ed25519_key").write_text("private")
    lines = host_key_lines(tmp_path / "upper", 2203)
    assert lines == [f"[127.0.0.1]:2203 {line}", "[127.0.0.1]:2203 ssh-rsa AAAARSA"]
    lines = lines[:1]
    write_known_hosts(tmp_path / "known_hosts", lines)
    keys = paramiko.HostKeys(str(tmp_path / "known_hosts"))
    assert keys.lookup("[127.0.0.1]:2203") is not None


def test_state_round_trip_and_corruption(tmp_path: Path) -> None:
    lab = Lab(tmp_path / "lab")
    assert lab.load_state() == LabState()
    assert lab.hosts() == []
    state = LabState(
        hosts_count=2,
        base_port=2301,
        acme_base_port=8181,
        hosts=[HostState(name="canary-1", index=1, port=2301, acme_port=8181, pid=42)],
    )
    lab.save_state(state)
    loaded = lab.load_state()
    assert loaded.hosts == state.hosts
    assert loaded.updated_at is not None
    assert [h.name for h in lab.hosts()] == ["canary-1", "web-1"]
    assert lab.host("web-1").port == 2302
    with pytest.raises(LabError, match="no lab host"):
        lab.host("db-9")
    lab.state_path.write_text("{not json")
    with pytest.raises(LabError, match="corrupt"):
        lab.load_state()


def test_status_without_root_on_an_empty_lab(tmp_path: Path) -> None:
    status = Lab(tmp_path / "lab").status()
    assert status.hosts == []
    assert not status.base_present
    assert status.inventory_path == tmp_path / "lab" / "inventory.yaml"
    assert (
        status.policy_path == Lab(tmp_path / "lab").policy_path == tmp_path / "lab" / "policy.yaml"
    )


@pytest.mark.parametrize("method", ["up", "down", "reset"])
def test_not_root_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    lab = Lab(tmp_path / "lab")
    with pytest.raises(LabError, match="needs root") as info:
        getattr(lab, method)()
    assert str(info.value) == NOT_ROOT_MESSAGE
    assert isinstance(info.value, PatchpilotError)
    assert not (tmp_path / "lab").exists()


def test_lab_dir_must_be_plain(tmp_path: Path) -> None:
    with pytest.raises(LabError, match="special characters"):
        Lab(tmp_path / "with space")


def test_layout_checks() -> None:
    _check_layout(12, 2201, 8081)
    with pytest.raises(LabError, match="--hosts"):
        _check_layout(0, 2201, 8081)
    with pytest.raises(LabError, match="overlap"):
        _check_layout(5, 2201, 2203)
    with pytest.raises(LabError, match="out of range"):
        _check_layout(3, 80, 8081)


def test_base_meta_and_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PATCHPILOT_LAB_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "patchpilot" / "lab"
    monkeypatch.setenv("PATCHPILOT_LAB_CACHE", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    built = datetime(2026, 1, 1, tzinfo=UTC)
    meta = BaseMeta(built_at=built, refreshed_at=built, include=("sudo",))
    write_meta(tmp_path / "m.json", meta)
    assert read_meta(tmp_path / "m.json") == meta
    assert base_age_days(meta, built + timedelta(days=8)) == pytest.approx(8)
    (tmp_path / "bad.json").write_text("[]")
    assert read_meta(tmp_path / "bad.json") is None
    assert read_meta(tmp_path / "missing.json") is None
    old = meta.model_copy(update={"format_version": 0})
    write_meta(tmp_path / "old.json", old)
    assert read_meta(tmp_path / "old.json") is None


def test_mountinfo_parsing() -> None:
    text = (
        "44 27 0:39 / /srv/lab\\040dir/hosts/web-1/root rw,relatime - overlay "
        "patchpilot-lab-web-1 rw,lowerdir=/srv/base,upperdir=/u,workdir=/w\n"
        "22 1 8:1 / / rw shared:1 - ext4 /dev/vda rw\n"
    )
    first, second = parse_mountinfo(text)
    assert first.mount_point == "/srv/lab dir/hosts/web-1/root"
    assert first.fstype == "overlay"
    assert first.source == "patchpilot-lab-web-1"
    assert "lowerdir=/srv/base" in first.super_options
    assert (second.mount_point, second.fstype) == ("/", "ext4")


def test_process_state() -> None:
    assert process_state(os.getpid()) in {"R", "S"}
    assert process_alive(os.getpid())
    assert process_state(2**22 + 12345) is None
    assert not process_alive(2**22 + 12345)


def test_nsenter_argv_is_a_clean_environment() -> None:
    argv = nsenter_argv(1234, ["apt-get", "update"], {"EXTRA": "1"})
    assert argv[:9] == [
        "nsenter",
        "--target=1234",
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--root",
        "--wd",
        "--",
    ]
    assert argv[9:11] == ["/usr/bin/env", "-i"]
    assert "DEBIAN_FRONTEND=noninteractive" in argv
    assert "EXTRA=1" in argv
    assert argv[-2:] == ["apt-get", "update"]


@dataclass
class _Obj:
    home: Path

    @property
    def settings(self) -> object:
        return load_settings(home=self.home)


def test_cli_status_and_not_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    result = runner.invoke(lab_app, ["status"], obj=_Obj(tmp_path / "home"))
    assert result.exit_code == 0, result.output
    assert "no lab hosts" in result.output
    json_result = runner.invoke(
        lab_app, ["status", "--format", "json"], obj=_Obj(tmp_path / "home")
    )
    assert json_result.exit_code == 0
    assert '"hosts": []' in json_result.output
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    failed = runner.invoke(lab_app, ["up", "--hosts", "2"], obj=_Obj(tmp_path / "home"))
    assert isinstance(failed.exception, LabError)
    assert "needs root" in str(failed.exception)

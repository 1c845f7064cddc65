"""The lab fleet without root: profile, inventory, keys, state, base metadata, CLI, errors."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import pytest
from typer.testing import CliRunner

from patchpilot.agents.scheduling import assign_rings
from patchpilot.cli.lab import lab_app
from patchpilot.core.errors import LabError, PatchpilotError
from patchpilot.core.inventory import load_inventory
from patchpilot.core.models import Exposure, Host
from patchpilot.core.policy import ApprovalsPolicy, Policy, load_policy
from patchpilot.core.settings import load_settings
from patchpilot.lab import (
    Lab,
    LabHost,
    LabState,
    fleet_profile,
    host_release,
    lab_host,
    trixie_host,
)
from patchpilot.lab.base import (
    RELEASES,
    base_age_days,
    cache_dir,
    check_release,
    read_meta,
    sources_list,
    sshd_lab_conf,
    tarball_path,
    write_meta,
)
from patchpilot.lab.hosts import host_key_lines, nsenter_argv
from patchpilot.lab.inventory import ensure_client_key, write_inventory, write_known_hosts
from patchpilot.lab.lab import _check_layout
from patchpilot.lab.models import BaseMeta, HostState
from patchpilot.lab.policy import default_policy_path, lab_policy_document
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


def test_profile_trixie_hosts_come_after_the_bookworm_ones() -> None:
    hosts = fleet_profile(3, trixie=2, base_port=3000, acme_base_port=4000)
    assert [(h.name, h.index, h.release) for h in hosts] == [
        ("canary-1", 1, "bookworm"),
        ("web-1", 2, "bookworm"),
        ("db-1", 3, "bookworm"),
        ("trixie-1", 4, "trixie"),
        ("trixie-2", 5, "trixie"),
    ]
    trixie = hosts[3]
    assert (trixie.port, trixie.acme_port) == (3003, 4003)
    assert trixie.tags == ("web", "staging", "trixie")
    assert (trixie.criticality, trixie.exposure, trixie.owner) == (2, Exposure.INTERNAL, "team-web")
    assert not trixie.held
    assert not trixie.extra_packages
    # --hosts N counts the bookworm hosts only
    assert fleet_profile(3, base_port=3000, acme_base_port=4000) == hosts[:3]
    assert trixie_host(1, 4) == trixie.model_copy(update={"port": 2204, "acme_port": 8084})
    assert [host_release(h.name) for h in hosts] == ["bookworm"] * 3 + ["trixie"] * 2
    assert host_release("trixie-x") == "bookworm"
    with pytest.raises(ValueError, match="start at 1"):
        trixie_host(0, 4)


def test_inventory_groups_hosts_by_release(tmp_path: Path) -> None:
    hosts = fleet_profile(3, trixie=1)
    write_inventory(tmp_path / "inventory.yaml", hosts, tmp_path / "k", tmp_path / "kh")
    inventory = load_inventory(tmp_path / "inventory.yaml")
    assert set(inventory.tags["bookworm"]) == {"canary-1", "web-1", "db-1"}
    assert set(inventory.tags["trixie"]) == {"trixie-1"}
    assert inventory.hosts["trixie-1"].groups == frozenset({"trixie"})
    assert inventory.hosts["trixie-1"].port == 2204


def test_lab_policy_puts_trixie_in_the_early_ring_without_approval() -> None:
    """The demo's rollout: canary → early (staging) → broad; approval only for prod."""
    hosts = fleet_profile(3, trixie=1)
    policy = Policy.model_validate(lab_policy_document(hosts))
    (rule,) = [r for r in policy.health.checks if r.name == "acme-web"]
    assert "trixie-1" in json.dumps(rule.check.model_dump(mode="json"))
    rings = assign_rings(_inventory_hosts(hosts), policy.schedule.rings)
    assert [(r.name, [h.name for h in r.hosts]) for r in rings] == [
        ("canary", ["canary-1"]),
        ("early", ["trixie-1"]),
        ("broad", ["db-1", "web-1"]),
    ]
    assert set(policy.approvals.tags) == {"prod"}
    assert "prod" not in hosts[3].tags


def test_the_lab_lets_its_one_operator_approve_their_own_runs_the_default_does_not() -> None:
    assert ApprovalsPolicy().refuse_self_approval
    assert load_policy(default_policy_path()).approvals.refuse_self_approval
    lab = Policy.model_validate(lab_policy_document(fleet_profile(3)))
    assert not lab.approvals.refuse_self_approval


def _inventory_hosts(hosts: list[LabHost]) -> list[Host]:
    return [
        Host(
            name=h.name,
            address=h.address,
            port=h.port,
            tags=frozenset(h.tags),
            criticality=h.criticality,
            exposure=h.exposure,
        )
        for h in hosts
    ]


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


def test_state_before_trixie_hosts_still_loads(tmp_path: Path) -> None:
    """A state.json written before per-release bases: bookworm only, its base's build time."""
    lab = Lab(tmp_path / "lab")
    lab.dir.mkdir()
    built = "2026-12-01T10:00:00Z"
    lab.state_path.write_text(
        json.dumps(
            {
                "format_version": 1,
                "hosts_count": 3,
                "base_port": 2201,
                "acme_base_port": 8081,
                "hosts": [{"name": "canary-1", "index": 1, "port": 2201, "acme_port": 8081}],
                "base_built_at": built,
            }
        )
    )
    state = lab.load_state()
    assert state.trixie_hosts is None
    assert state.bases_built_at == {"bookworm": datetime(2026, 12, 1, 10, tzinfo=UTC)}
    assert state.hosts[0].release == "bookworm"
    assert [h.name for h in lab.hosts()] == ["canary-1", "web-1", "db-1"]


def test_status_and_cli_show_each_host_release(tmp_path: Path) -> None:
    home = tmp_path / "home"
    lab = Lab(home / "lab")
    lab.save_state(LabState(hosts_count=3, trixie_hosts=1))
    status = lab.status()
    assert [(h.name, h.release, h.port) for h in status.hosts] == [
        ("canary-1", "bookworm", 2201),
        ("web-1", "bookworm", 2202),
        ("db-1", "bookworm", 2203),
        ("trixie-1", "trixie", 2204),
    ]
    assert [(b.release, b.present) for b in status.bases] == [
        ("bookworm", False),
        ("trixie", False),
    ]
    assert not status.base_present
    runner = CliRunner()
    table = runner.invoke(lab_app, ["status"], obj=_Obj(home))
    assert table.exit_code == 0, table.output
    assert "release" in table.output
    (row,) = [line for line in table.output.splitlines() if "trixie-1" in line]
    assert "trixie" in row.replace("trixie-1", "")
    doc = json.loads(runner.invoke(lab_app, ["status", "--format", "json"], obj=_Obj(home)).output)
    assert {h["name"]: h["release"] for h in doc["hosts"]}["trixie-1"] == "trixie"
    assert [b["release"] for b in doc["bases"]] == ["bookworm", "trixie"]


def test_base_per_release() -> None:
    assert set(RELEASES) == {"bookworm", "trixie"}
    assert RELEASES["trixie"].label == "Debian 13 (trixie)"
    assert sources_list("trixie").splitlines() == [
        "deb http://deb.debian.org/debian trixie main",
        "deb http://deb.debian.org/debian trixie-updates main",
        "deb http://deb.debian.org/debian-security trixie-security main",
    ]
    assert "bookworm-security" in sources_list("bookworm")
    # OpenSSH 10 (trixie) would penalise 127.0.0.1 for every port probe; 9.2 lacks the option
    assert "PerSourcePenalties no" in sshd_lab_conf("trixie")
    assert "PerSourcePenalties" not in sshd_lab_conf("bookworm")
    assert tarball_path(Path("/c"), "trixie") == Path("/c/base-trixie.tar.zst")
    with pytest.raises(LabError, match="no base for release 'sid'"):
        check_release("sid")
    lab = Lab(Path("/srv/lab"))
    assert lab.base_dir_for("bookworm") == Path("/srv/lab/base")
    assert lab.base_dir_for("trixie") == Path("/srv/lab/base-trixie")
    assert lab.base_meta_path_for("trixie") == Path("/srv/lab/base-trixie.json")
    assert lab.base_dirs() == [Path("/srv/lab/base"), Path("/srv/lab/base-trixie")]


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
    _check_layout(3, 2201, 8081, trixie=1)
    with pytest.raises(LabError, match="--trixie-hosts"):
        _check_layout(3, 2201, 8081, trixie=62)
    with pytest.raises(LabError, match="overlap"):
        _check_layout(3, 2201, 2205, trixie=2)  # the trixie hosts' ports count too
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

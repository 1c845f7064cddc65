"""Reaching hosts: ProxyJump/ProxyCommand/ssh-argument parsing, ssh_config, and their precedence.

Everything here only *reads* values: a test that would run a command (``Match exec``, a
ProxyCommand) checks that a marker file was never created.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from patchpilot.core.errors import ConfigError
from patchpilot.core.inventory import load_inventory, parse_inventory
from patchpilot.core.inventory._reach import (
    JumpSpec,
    SSHConfigFile,
    parse_proxy_command,
    parse_proxy_jump,
    parse_ssh_args,
    resolve_reach,
)
from patchpilot.core.models import Host, JumpHost
from patchpilot.core.settings import SSHSettings


@pytest.fixture(autouse=True)
def fake_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty HOME: the runner's ~/.ssh/config never leaks in."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


def _config(home: Path, text: str, name: str = "config") -> Path:
    path = home / ".ssh" / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- ProxyJump


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bastion", (JumpSpec("bastion"),)),
        ("ops@bastion.example.com:2222", (JumpSpec("bastion.example.com", 2222, "ops"),)),
        ("ssh://ops@10.0.0.1:2200", (JumpSpec("10.0.0.1", 2200, "ops"),)),
        ("a,b@b2:2", (JumpSpec("a"), JumpSpec("b2", 2, "b"))),
        ("[2001:db8::1]:2222", (JumpSpec("2001:db8::1", 2222),)),
        ("u@[2001:db8::1]", (JumpSpec("2001:db8::1", None, "u"),)),
        ("2001:db8::1", (JumpSpec("2001:db8::1"),)),
        ("none", ()),
        ("NONE", ()),
    ],
)
def test_proxy_jump_forms(text: str, expected: tuple[JumpSpec, ...]) -> None:
    assert parse_proxy_jump(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "-oProxyCommand=touch x",
        "a b",
        "$(id)",
        "bastion;id",
        "u;x@bastion",
        "bastion:0",
        "bastion:65536",
        "bastion:ssh",
        "[::1",
        "a,",
        ",".join(f"b{i}" for i in range(9)),
    ],
)
def test_proxy_jump_refuses_malformed_and_hostile_values(text: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies per case
        parse_proxy_jump(text)


# --------------------------------------------------------------------------- ProxyCommand


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("ssh -W %h:%p bastion", (JumpSpec("bastion"),)),
        ("ssh -q -W %h:%p ops@bastion -p 2222", (JumpSpec("bastion", 2222, "ops"),)),
        ("/usr/bin/ssh -qW %h:%p -l ops -p2201 bastion", (JumpSpec("bastion", 2201, "ops"),)),
        (
            "ssh -o Port=2222 -o User=ops -o IdentityFile=/k -W %h:%p -T bastion",
            (JumpSpec("bastion", 2222, "ops", "/k"),),
        ),
        ("ssh -J first -W %h:%p second", (JumpSpec("first"), JumpSpec("second"))),
        ("ssh -l first -l second -W %h:%p b", (JumpSpec("b", None, "first"),)),  # first wins
        ("none", ()),
    ],
)
def test_proxy_command_ssh_w_forms_become_jumps(
    command: str, expected: tuple[JumpSpec, ...]
) -> None:
    assert parse_proxy_command(command) == expected


def test_proxy_command_expanded_by_ssh_config_must_forward_to_the_host() -> None:
    assert parse_proxy_command("ssh -W 10.0.0.5:22 b", target=("10.0.0.5", 22)) == (JumpSpec("b"),)
    with pytest.raises(ValueError, match="does not forward to the host itself"):
        parse_proxy_command("ssh -W 10.9.9.9:22 b", target=("10.0.0.5", 22))


@pytest.mark.parametrize(
    ("command", "why"),
    [
        ("nc -X connect -x proxy:3128 %h %p", "not an ssh command"),
        ("sh -c 'ssh -W %h:%p bastion'", "not an ssh command"),
        ("ssh bastion nc %h %p", "no -W"),
        ("ssh -W other:22 bastion", "does not forward to the host itself"),
        ("ssh -W %h:%p bastion touch /tmp/x", "more than a bastion"),
        ("ssh -W %h:%p", "no bastion"),
        ("ssh -L 1:localhost:2 -W %h:%p bastion", "option -L is not supported"),
        ("ssh -F /tmp/other -W %h:%p bastion", "option -F is not supported"),
        ("ssh -o ProxyCommand=x -W %h:%p bastion", "nests another ProxyCommand"),
        ("ssh -W %h:%p {{ bastion }}", "Jinja"),
        ("ssh -W %h:%p 'unterminated", "cannot split"),
    ],
)
def test_other_proxy_commands_are_refused(command: str, why: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=why) as info:
        parse_proxy_command(command)
    assert "never runs a ProxyCommand" in str(info.value) or why in ("Jinja", "cannot split")


def test_proxy_command_notes_ignored_options() -> None:
    notes: list[str] = []
    found = parse_proxy_command(
        "ssh -o StrictHostKeyChecking=no -E /tmp/log -W %h:%p b", notes=notes
    )
    assert found == (JumpSpec("b"),)
    assert notes == ["-o StrictHostKeyChecking=no", "-E /tmp/log"]


# --------------------------------------------------------------------------- Ansible ssh args


@pytest.mark.parametrize(
    "args",
    [
        "-J ops@bastion:2222",
        "-Jops@bastion:2222",
        "-o ProxyJump=ops@bastion:2222",
        "-oProxyJump=ops@bastion:2222",
        "-o 'ProxyJump ops@bastion:2222'",
        "-o ProxyCommand='ssh -W %h:%p -q ops@bastion -p 2222'",
        '-C -o ControlMaster=auto -o ProxyCommand="ssh -W %h:%p -q -l ops -p 2222 bastion"',
    ],
)
def test_ssh_args_jump_forms(args: str) -> None:
    found = parse_ssh_args(args)
    assert found.jumps == (JumpSpec("bastion", 2222, "ops"),)
    assert found.ignored == ()
    assert found.host_key == ()


def test_ssh_args_never_weaken_host_keys_and_report_what_is_ignored() -> None:
    found = parse_ssh_args(
        "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i ~/.ssh/k "
        "-o ControlPersist=60s -o SendEnv=LANG"
    )
    assert found.jumps is None
    assert found.host_key == ("-o StrictHostKeyChecking=no", "-o UserKnownHostsFile=/dev/null")
    assert found.ignored == ("-i ~/.ssh/k", "-o SendEnv=LANG")


def test_ssh_args_none_and_conflicts() -> None:
    assert parse_ssh_args("-o ProxyJump=none").jumps == ()
    with pytest.raises(ValueError, match="several jump options"):
        parse_ssh_args("-J a -o ProxyJump=b")
    with pytest.raises(ValueError, match="not an ssh command"):
        parse_ssh_args("-o ProxyCommand='nc %h %p'")


# --------------------------------------------------------------------------- ssh_config


CONFIG = """\
    Host bastion
      HostName 127.0.0.1
      Port 2201
      User ops
      IdentityFile ~/.ssh/bastion_key

    Host inner
      HostName 10.1.0.1
      ProxyJump bastion

    Host web*
      ProxyJump inner,ops2@other:2300
      User deploy
      IdentityFile ~/.ssh/missing_key
      IdentityFile ~/.ssh/web_key

    Host db1
      HostName 10.0.0.5
      Port 2022
      ProxyCommand ssh -W %h:%p -q jumper

    Host *
      StrictHostKeyChecking no
"""


@pytest.fixture
def ssh_config(fake_home: Path) -> SSHConfigFile:
    for key in ("bastion_key", "web_key"):
        (fake_home / ".ssh" / key).write_text("not read here\n")
    return SSHConfigFile.load(_config(fake_home, CONFIG))


def test_lookup_reads_what_ssh_would(ssh_config: SSHConfigFile, fake_home: Path) -> None:
    entry = ssh_config.lookup("bastion")
    assert (entry.hostname, entry.port, entry.user) == ("127.0.0.1", 2201, "ops")
    assert entry.key_file == str(fake_home / ".ssh" / "bastion_key")
    web = ssh_config.lookup("web1")
    assert web.key_file == str(fake_home / ".ssh" / "web_key")  # the first that exists
    assert web.proxy_jump == "inner,ops2@other:2300"


def test_resolve_chains_jumps_through_their_own_config(ssh_config: SSHConfigFile) -> None:
    with capture_logs() as logs:
        reach = resolve_reach(
            "web1",
            address="web1",
            port=None,
            user=None,
            key_file=None,
            jumps=None,
            config=ssh_config,
        )
    assert (reach.address, reach.port, reach.user) == ("web1", 22, "deploy")
    # web1 -> ProxyJump inner,other; inner -> ProxyJump bastion: bastion, inner, other.
    assert [(j.name, j.address, j.port, j.user) for j in reach.jump] == [
        ("bastion", "127.0.0.1", 2201, "ops"),
        ("inner", "10.1.0.1", 22, None),
        ("other", "other", 2300, "ops2"),
    ]
    assert reach.jump[0].key_file is not None
    assert reach.jump[0].key_file.endswith("bastion_key")
    ignored = [e for e in logs if e["event"] == "ssh_config.option_ignored"]
    assert ignored
    assert ignored[0]["option"] == "stricthostkeychecking"
    assert ignored[0]["log_level"] == "warning"


def test_inventory_values_win_over_ssh_config(ssh_config: SSHConfigFile) -> None:
    reach = resolve_reach(
        "web1",
        address="web1",
        port=2222,
        user="me",
        key_file="/explicit/key",
        jumps=(),  # the inventory says: no jump host
        config=ssh_config,
    )
    assert (reach.port, reach.user, reach.key_file, reach.jump) == (
        2222,
        "me",
        "/explicit/key",
        (),
    )
    explicit = resolve_reach(
        "web1",
        address="web1",
        port=None,
        user=None,
        key_file=None,
        jumps=(JumpSpec("bastion", 2999),),
        config=ssh_config,
    )
    # The inventory's jump host is still looked up in ssh_config (HostName, User), its port wins.
    assert [(j.address, j.port, j.user) for j in explicit.jump] == [("127.0.0.1", 2999, "ops")]


def test_ssh_w_proxy_command_in_config_is_a_jump(ssh_config: SSHConfigFile) -> None:
    reach = resolve_reach(
        "db1", address="db1", port=None, user=None, key_file=None, jumps=None, config=ssh_config
    )
    assert (reach.address, reach.port) == ("10.0.0.5", 2022)
    assert [j.name for j in reach.jump] == ["jumper"]


def test_other_proxy_command_is_refused_naming_the_host(fake_home: Path) -> None:
    marker = fake_home / "ran"
    config = SSHConfigFile.load(
        _config(fake_home, f"Host db2\n  ProxyCommand sh -c 'touch {marker}; nc %h %p'\n")
    )
    with pytest.raises(ConfigError, match="Host db2") as info:
        resolve_reach(
            "db2", address="db2", port=None, user=None, key_file=None, jumps=None, config=config
        )
    assert "never runs a ProxyCommand" in str(info.value)
    assert not marker.exists()


def test_match_exec_is_refused_before_anything_runs(fake_home: Path) -> None:
    marker = fake_home / "ran"
    path = _config(fake_home, f'Match exec "touch {marker}"\n  User x\nHost a\n  Port 2\n')
    with pytest.raises(ConfigError, match="Match exec") as info:
        SSHConfigFile.load(path)
    assert info.value.key == "line 1"
    assert not marker.exists()


def test_include_is_expanded_relative_to_dot_ssh(fake_home: Path) -> None:
    (fake_home / ".ssh" / "conf.d").mkdir()
    _config(fake_home, "Host inc\n  HostName 10.9.0.1\n  Port 2200\n", "conf.d/10-inc.conf")
    _config(fake_home, 'Match exec "id"\n', "conf.d/20-bad.txt")  # not matched by the glob
    config = SSHConfigFile.load(_config(fake_home, "Include conf.d/*.conf\nHost other\n"))
    entry = config.lookup("inc")
    assert (entry.hostname, entry.port) == ("10.9.0.1", 2200)


def test_a_loop_of_jump_hosts_is_refused(fake_home: Path) -> None:
    config = SSHConfigFile.load(
        _config(fake_home, "Host bastion\n  HostName 10.0.0.1\nHost *\n  ProxyJump bastion\n")
    )
    with pytest.raises(ConfigError, match=r"loop.*Host \* !bastion"):
        resolve_reach(
            "web", address="web", port=None, user=None, key_file=None, jumps=None, config=config
        )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Host h\n  HostName a;reboot\n", "Host h: hostname"),
        ("Host h\n  User root;id\n", "Host h: user"),
        ("Host h\n  Port 99999\n", "Host h: port"),
        ("Host h\n  ProxyJump j\n  ProxyCommand ssh -W %h:%p j\n", "both ProxyJump and"),
    ],
)
def test_hostile_or_ambiguous_config_values_are_refused(
    fake_home: Path, text: str, message: str
) -> None:
    config = SSHConfigFile.load(_config(fake_home, text))
    with pytest.raises(ConfigError, match=message):
        resolve_reach(
            "h", address="h", port=None, user=None, key_file=None, jumps=None, config=config
        )


def test_from_settings(fake_home: Path, tmp_path: Path) -> None:
    assert SSHConfigFile.from_settings(SSHSettings()) is None  # no ~/.ssh/config: fine
    default = _config(fake_home, "Host a\n  Port 2\n")
    found = SSHConfigFile.from_settings(SSHSettings())
    assert found is not None
    assert found.path == str(default)
    assert SSHConfigFile.from_settings(SSHSettings(use_ssh_config=False)) is None
    other = tmp_path / "other_config"
    other.write_text("Host b\n  Port 3\n")
    chosen = SSHConfigFile.from_settings(SSHSettings(config_file=other))
    assert chosen is not None
    assert chosen.lookup("b").port == 3
    with pytest.raises(ConfigError, match="does not exist"):
        SSHConfigFile.from_settings(SSHSettings(config_file=tmp_path / "missing"))


# --------------------------------------------------------------------------- inventories


def test_native_inventory_with_ssh_config(fake_home: Path, tmp_path: Path) -> None:
    (fake_home / ".ssh" / "bastion_key").write_text("x\n")
    _config(fake_home, CONFIG)
    inventory = tmp_path / "inv.yaml"
    inventory.write_text(
        textwrap.dedent(
            """\
            defaults: {user: patchpilot}
            hosts:
              web1: {}
              web2: {port: 2202, jump: []}
              db1: {}
              app1:
                address: 10.3.0.1
                jump: ["ops@bastion:2999", {address: 10.4.0.1, port: 2, user: u, key_file: ~/k}]
              me: {transport: local}
            """
        )
    )
    inv = load_inventory(inventory, ssh=SSHSettings())
    web1, web2, db1, app1, me = (inv.hosts[n] for n in ("web1", "web2", "db1", "app1", "me"))
    assert web1.user == "patchpilot"  # the inventory's defaults win over ssh_config's User
    assert [j.name for j in web1.jump] == ["bastion", "inner", "other"]
    assert (web2.port, web2.jump) == (2202, ())
    assert (db1.address, db1.port, [j.name for j in db1.jump]) == ("10.0.0.5", 2022, ["jumper"])
    assert app1.jump == (
        JumpHost(
            name="bastion",
            address="127.0.0.1",
            port=2999,
            user="ops",
            key_file=str(fake_home / ".ssh" / "bastion_key"),
        ),
        JumpHost(
            name="10.4.0.1", address="10.4.0.1", port=2, user="u", key_file=str(fake_home / "k")
        ),
    )
    assert (me.transport, me.jump) == ("local", ())
    # Without ssh settings, ssh_config is not read at all.
    plain = load_inventory(inventory)
    assert plain.hosts["web1"].jump == ()
    assert plain.hosts["db1"].address == "db1"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ('jump: "a b"', "jump"),
        ("jump: [{address: a, port: 0}]", "port"),
        ("jump: [{address: a, bogus: 1}]", "unknown key 'bogus'"),
        ("jump: [{address: 'u@a'}]", "own keys"),
        ('jump: ["-oProxyCommand=x"]', "jump"),
    ],
)
def test_native_jump_is_validated(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_inventory(f"hosts:\n  h: {{{spec}}}\n", format="patchpilot")


def test_ansible_ssh_args_become_and_warnings(fake_home: Path) -> None:
    text = textwrap.dedent(
        """\
        [web]
        web1 ansible_host=10.0.0.1
        web2 ansible_host=10.0.0.2 ansible_ssh_extra_args='-o StrictHostKeyChecking=no'
        web3 ansible_host=10.0.0.3 ansible_become=false
        web4 ansible_host=10.0.0.4 ansible_become_user=postgres
        web5 ansible_host=10.0.0.5 ansible_become_method=doas

        [web:vars]
        ansible_ssh_common_args='-o ProxyCommand="ssh -W %h:%p -q ops@bastion -p 2222"'
        """
    )
    with capture_logs() as logs:
        inv = parse_inventory(text, format="ansible-ini", file="hosts.ini")
    assert {h.name: h.jump[0].spec for h in inv} == dict.fromkeys(
        ("web1", "web2", "web3", "web4"), "ops@bastion:2222"
    )
    assert [(h.become, h.become_user) for h in inv] == [
        (True, "root"),
        (True, "root"),
        (False, "root"),
        (True, "postgres"),
    ]
    assert "web5" in inv.skipped
    assert "sudo -n" in inv.skipped["web5"]
    warned = [e for e in logs if e["event"] == "inventory.ssh_option_ignored"]
    assert len(warned) == 1  # once, not once per host
    assert warned[0]["options"] == ["-o StrictHostKeyChecking=no"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("h ansible_ssh_common_args='-o ProxyCommand=\"nc %h %p\"'", "not an ssh command"),
        ("h ansible_ssh_common_args='-J a' ansible_ssh_extra_args='-J b'", "conflicting jump"),
        ("h ansible_become=maybe", "expected a boolean"),
        ("h ansible_become_user='a b'", "user name"),
        ("h ansible_ssh_common_args='-J {{ bastion }}'", "Jinja"),
    ],
)
def test_ansible_unsupported_values_are_config_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_inventory(line + "\n", format="ansible-ini", file="hosts.ini")
    assert info.value.file == "hosts.ini"
    assert info.value.key is not None
    assert info.value.key.startswith("line 1")


def test_jump_host_model_validates_like_the_transport() -> None:
    with pytest.raises(ValueError, match="unsafe host name"):
        JumpHost(name="b", address="b;reboot")
    with pytest.raises(ValueError, match="unsafe user name"):
        JumpHost(name="b", address="b", user="-oProxyCommand=x")
    with pytest.raises(ValueError, match="less than or equal to 65535"):
        JumpHost(name="b", address="b", port=70000)
    with pytest.raises(ValueError, match="at most 8 items"):
        Host(
            name="h", address="h", jump=tuple(JumpHost(name=f"b{i}", address="b") for i in range(9))
        )
    assert JumpHost(name="b", address="::1", port=2200, user="ops").spec == "ops@[::1]:2200"

"""SSHTransport pieces that need no server: quoting, host-key recording, set-up checks, factory."""

from __future__ import annotations

import base64
import getpass
import shlex
import socket
import subprocess
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from patchpilot.core.errors import (
    AuthenticationError,
    HostConnectError,
    HostKeyError,
    TransportError,
    UnsafeArgumentError,
)
from patchpilot.core.models import CommandResult, Host, JumpHost
from patchpilot.core.resources import ClosingContext
from patchpilot.core.settings import Settings, SSHSettings
from patchpilot.tools.transport import (
    LocalTransport,
    SSHTransport,
    Transport,
    build_remote_command,
    open_transport,
)
from patchpilot.tools.transport.base import BecomeRefusedError
from patchpilot.tools.transport.ssh import (
    _close_all,
    host_key_fingerprint,
    known_hosts_name,
    record_host_key,
)


def _public_key(seed: int = 0) -> paramiko.PKey:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([seed + 1]) * 32)
    raw = private.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    _, b64 = raw.decode().split()
    return paramiko.Ed25519Key(data=base64.b64decode(b64))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- remote command


def test_remote_command_quotes_every_word() -> None:
    argv = ("printf", "%s\\n", "$(touch x)", "a b", "it's", "*", "")
    command = build_remote_command(argv, {"DEBIAN_FRONTEND": "noninteractive", "X": "$y z"})
    assert command.startswith("env LC_ALL=C ")
    assert shlex.split(command) == [
        "env",
        "LC_ALL=C",
        "DEBIAN_FRONTEND=noninteractive",
        "X=$y z",
        *argv,
    ]


@given(st.lists(st.text(alphabet=st.characters(exclude_characters="\0")), min_size=1))
def test_remote_command_round_trips_through_sh_quoting(argv: list[str]) -> None:
    if "=" in argv[0] or argv[0].startswith("-"):
        with pytest.raises(UnsafeArgumentError):
            build_remote_command(argv, {})
        return
    assert shlex.split(build_remote_command(argv, {}))[2:] == argv


@pytest.mark.parametrize("command", ["A=b", "-i", "--help"])
def test_remote_command_refuses_option_or_assignment_as_command(command: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        build_remote_command((command, "x"), {})


def test_remote_command_through_a_real_shell(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    argv = ("printf", "%s|", f"$(touch {marker})", f"`touch {marker}`", "; x", "a\nb")
    out = subprocess.run(
        ["sh", "-c", build_remote_command(argv, {})], capture_output=True, text=True, check=True
    ).stdout
    assert out == f"$(touch {marker})|`touch {marker}`|; x|a\nb|"
    assert not marker.exists()


# --------------------------------------------------------------------------- host keys


def test_known_hosts_name() -> None:
    assert known_hosts_name("web1", 22) == "web1"
    assert known_hosts_name("10.0.0.1", 2222) == "[10.0.0.1]:2222"
    assert known_hosts_name("::1", 2222) == "[::1]:2222"


def test_fingerprint_matches_paramiko() -> None:
    key = _public_key()
    assert host_key_fingerprint(key) == key.fingerprint
    assert host_key_fingerprint(key).startswith("SHA256:")
    assert not host_key_fingerprint(key).endswith("=")


def test_record_host_key_appends_once_and_refuses_conflicts(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "known_hosts"
    key, other = _public_key(1), _public_key(2)
    assert record_host_key(path, "[10.0.0.1]:2222", key, host="h") is True
    assert path.read_text() == f"[10.0.0.1]:2222 ssh-ed25519 {key.get_base64()}\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0
    assert record_host_key(path, "[10.0.0.1]:2222", key, host="h") is False
    assert record_host_key(path, "10.0.0.1", other, host="h") is True  # port 22 is another name
    with pytest.raises(HostKeyError, match="CHANGED"):
        record_host_key(path, "[10.0.0.1]:2222", other, host="h")
    known = paramiko.HostKeys(str(path)).lookup("[10.0.0.1]:2222")
    assert known is not None
    assert dict(known) == {"ssh-ed25519": key}


# --------------------------------------------------------------------------- construction


def _settings(**overrides: object) -> SSHSettings:
    fields: dict[str, object] = {"use_agent": False, "look_for_keys": False, "connect_retries": 1}
    fields.update(overrides)
    return SSHSettings.model_validate(fields)


@pytest.mark.parametrize(
    "address", ["-oProxyCommand=touch x", "host;id", "a b", "$(id)", "", "host\n"]
)
def test_hostile_address_is_refused(address: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArgumentError):
        SSHTransport(Host(name="h", address=address, user="u"), _settings(), tmp_path / "kh")


@pytest.mark.parametrize("user", ["-l", "root;id", "a b", "$(id)", "x" * 40])
def test_hostile_user_is_refused(user: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeArgumentError):
        SSHTransport(Host(name="h", address="10.0.0.1", user=user), _settings(), tmp_path / "kh")


def test_user_defaults(tmp_path: Path) -> None:
    host = Host(name="h", address="10.0.0.1")
    assert SSHTransport(host, _settings(), tmp_path / "kh").user == getpass.getuser()
    assert SSHTransport(host, _settings(default_user="ops"), tmp_path / "kh").user == "ops"
    explicit = host.model_copy(update={"user": "deploy"})
    assert SSHTransport(explicit, _settings(default_user="ops"), tmp_path / "kh").user == "deploy"


def test_root_user_needs_no_probe(tmp_path: Path) -> None:
    t = SSHTransport(Host(name="h", address="10.0.0.1", user="root"), _settings(), tmp_path / "k")
    assert t.is_root  # no connection attempted
    assert not t.connected


def test_no_identity_fails_before_connecting(tmp_path: Path) -> None:
    host = Host(name="h", address="127.0.0.1", port=_closed_port(), user="u")
    with pytest.raises(AuthenticationError, match="no SSH identity"):
        SSHTransport(host, _settings(), tmp_path / "kh").run(["true"])


def test_missing_configured_known_hosts_is_reported(tmp_path: Path) -> None:
    host = Host(name="h", address="127.0.0.1", port=_closed_port(), user="u")
    settings = _settings(use_agent=True, known_hosts=tmp_path / "missing")
    with pytest.raises(HostKeyError, match="does not exist"):
        SSHTransport(host, settings, tmp_path / "kh").run(["true"])


def test_closed_port_is_retried_then_reported(tmp_path: Path) -> None:
    port = _closed_port()
    host = Host(name="h", address="127.0.0.1", port=port, user="u")
    with pytest.raises(HostConnectError, match=f"connection refused on 127.0.0.1:{port}"):
        SSHTransport(host, _settings(use_agent=True, connect_retries=2), tmp_path / "k").run(
            ["true"]
        )


def test_encrypted_key_file_is_refused_without_prompt(tmp_path: Path) -> None:
    key_file = tmp_path / "id_locked"
    private = ed25519.Ed25519PrivateKey.generate()
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    host = Host(
        name="h", address="127.0.0.1", port=_closed_port(), user="u", key_file=str(key_file)
    )
    with pytest.raises(AuthenticationError, match="never prompts"):
        SSHTransport(host, _settings(), tmp_path / "kh").run(["true"])


# --------------------------------------------------------------------------- factory


def test_open_transport_local(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, ssh=SSHSettings(command_timeout=7, max_output_bytes=4096))
    t = open_transport(Host(name="me", address="localhost", transport="local"), settings)
    assert isinstance(t, LocalTransport)
    assert (t.name, t.command_timeout, t.max_output_bytes) == ("me", 7, 4096)


def test_open_transport_ssh(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, ssh=SSHSettings(default_user="ops"))
    t = open_transport(Host(name="web", address="10.0.0.5", port=2200), settings)
    assert isinstance(t, SSHTransport)
    assert (t.name, t.address, t.port, t.user) == ("web", "10.0.0.5", 2200, "ops")
    assert t.known_hosts_path == tmp_path / "known_hosts"
    assert not t.connected
    t.close()  # closing an unconnected transport is fine


# --------------------------------------------------------------------------- jump hosts


def test_jump_hosts_use_their_own_user_and_key(tmp_path: Path) -> None:
    host = Host(
        name="web",
        address="10.0.0.5",
        user="deploy",
        key_file="/keys/web",
        jump=(
            JumpHost(name="b1", address="127.0.0.1", port=2201, user="ops", key_file="/keys/b1"),
            JumpHost(name="b2", address="10.0.0.1"),
        ),
    )
    t = SSHTransport(host, _settings(default_user="dflt", default_key_file="/keys/dflt"), tmp_path)
    hops = [(h.address, h.port, h.user, str(h.key_file)) for h in t._hops]
    assert hops == [
        ("127.0.0.1", 2201, "ops", "/keys/b1"),
        ("10.0.0.1", 22, "dflt", "/keys/dflt"),  # not the target's user or key, as ssh -J
        ("10.0.0.5", 22, "deploy", "/keys/web"),
    ]
    assert t._hops[0].where == "jump host 1 of 2 'b1' (ops@127.0.0.1:2201)"
    assert t._hops[-1].where == "10.0.0.5:22 (through ops@127.0.0.1:2201 -> 10.0.0.1)"


def test_unreachable_jump_host_is_named(tmp_path: Path) -> None:
    port = _closed_port()
    host = Host(
        name="web",
        address="10.0.0.5",
        user="u",
        jump=(JumpHost(name="bastion", address="127.0.0.1", port=port, user="ops"),),
    )
    with pytest.raises(HostConnectError) as info:
        SSHTransport(host, _settings(use_agent=True), tmp_path / "kh").run(["true"])
    assert f"connection refused on jump host 1 of 1 'bastion' (ops@127.0.0.1:{port})" in str(
        info.value
    )


def test_missing_jump_key_file_is_named_before_connecting(tmp_path: Path) -> None:
    host = Host(
        name="web",
        address="127.0.0.1",
        port=_closed_port(),
        user="u",
        jump=(JumpHost(name="bastion", address="127.0.0.1", key_file=str(tmp_path / "nokey")),),
    )
    with pytest.raises(AuthenticationError, match=r"jump host 1 of 1 'bastion'.*does not exist"):
        SSHTransport(host, _settings(use_agent=True), tmp_path / "kh").run(["true"])


# --------------------------------------------------------------------------- become


class _Recording(Transport):
    """Records what would run; the login user is not root."""

    def __init__(self, *, become: bool = True, become_user: str = "root") -> None:
        super().__init__("h")
        self.become = become
        self.become_user = become_user
        self.ran: list[tuple[str, ...]] = []

    @property
    def is_root(self) -> bool:
        return False

    def _execute(
        self,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        timeout: float | None,
        stdin: str | None,
    ) -> CommandResult:
        self.ran.append(argv)
        return CommandResult(host=self.name, argv=argv, exit_code=0, stdout="", stderr="")


def test_become_settings_gate_privileged_commands() -> None:
    allowed = _Recording()
    allowed.run(["apt-get", "update"], sudo=True)
    assert allowed.ran == [("sudo", "-n", "--", "env", "LC_ALL=C", "apt-get", "update")]

    no_become = _Recording(become=False)
    no_become.run(["dpkg-query", "-W"])  # unprivileged commands still run
    with pytest.raises(BecomeRefusedError, match="become false") as info:
        no_become.run(["apt-get", "install", "x"], sudo=True)
    assert isinstance(info.value, TransportError)
    assert no_become.ran == [("dpkg-query", "-W")]

    other_user = _Recording(become_user="postgres")
    with pytest.raises(BecomeRefusedError, match="become_user 'postgres'"):
        other_user.run(["apt-get", "install", "x"], sudo=True)
    assert other_user.ran == []


def test_ssh_transport_takes_become_from_the_host(tmp_path: Path) -> None:
    host = Host(name="h", address="10.0.0.1", user="root", become=False, become_user="app")
    t = SSHTransport(host, _settings(), tmp_path / "kh")
    assert (t.become, t.become_user) == (False, "app")
    with pytest.raises(BecomeRefusedError):
        t.run(["apt-get", "update"], sudo=True)  # refused before any connection
    assert not t.connected


def test_transport_is_a_closing_context() -> None:
    assert issubclass(Transport, ClosingContext)
    with _Recording() as t:
        t.run(["true"])


def test_connections_close_last_to_first() -> None:
    """The host's connection closes before the jump hosts carrying it, last to first."""
    closed: list[str] = []

    class _Client:
        def __init__(self, name: str) -> None:
            self.name = name

        def close(self) -> None:
            closed.append(self.name)
            if self.name == "bastion2":
                raise OSError("already gone")  # one failure does not stop the others

    clients = [_Client("bastion1"), _Client("bastion2"), _Client("target")]
    _close_all(clients)  # type: ignore[arg-type]
    assert closed == ["target", "bastion2", "bastion1"]

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
    UnsafeArgumentError,
)
from patchpilot.core.models import Host
from patchpilot.core.settings import Settings, SSHSettings
from patchpilot.tools.transport import (
    LocalTransport,
    SSHTransport,
    build_remote_command,
    open_transport,
)
from patchpilot.tools.transport.ssh import host_key_fingerprint, known_hosts_name, record_host_key


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

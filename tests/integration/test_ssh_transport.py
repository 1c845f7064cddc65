"""SSHTransport against a real OpenSSH server on loopback (see conftest.sshd_server)."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from patchpilot.core.errors import (
    AuthenticationError,
    CommandFailedError,
    CommandTimeoutError,
    HostConnectError,
    HostKeyError,
    TransportError,
)
from patchpilot.core.inventory import load_inventory
from patchpilot.core.settings import Settings
from patchpilot.tools.transport import SSHTransport, Transport, open_transport
from patchpilot.tools.transport.ssh import host_key_fingerprint
from tests.integration.conftest import SSHServer, fingerprint_of, free_port, keygen
from tests.integration.lab_fixtures import LabHandle

pytestmark = pytest.mark.integration


@pytest.fixture
def own_known_hosts(tmp_path: Path) -> Path:
    """patchpilot's own known_hosts (not created yet)."""
    return tmp_path / "pp-home" / "known_hosts"


@pytest.fixture
def transport(sshd_server: SSHServer, own_known_hosts: Path) -> Iterator[SSHTransport]:
    t = SSHTransport(sshd_server.host(), sshd_server.settings(), own_known_hosts)
    yield t
    t.close()


# --------------------------------------------------------------------------- commands


def test_id_and_uname_match_local(transport: SSHTransport) -> None:
    uid = transport.run(["id", "-u"], check=True)
    assert uid.stdout.strip() == str(os.geteuid())
    kernel = transport.run(["uname", "-r"], check=True)
    assert kernel.stdout.strip() == os.uname().release
    assert kernel.host == "sshd-test"
    assert kernel.argv == ("uname", "-r")
    assert kernel.exit_code == 0
    assert kernel.duration_s > 0


def test_hostile_arguments_come_back_literally(transport: SSHTransport) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    hostile = [
        f"$(touch {marker})",
        f"`touch {marker}`",
        f"; touch {marker}",
        f"&& touch {marker}",
        f"| touch {marker}",
        f"> {marker}",
        "; rm -rf x",
        "a'b\"c",
        "'",
        '"',
        "*",
        "~",
        "${HOME}",
        "\\",
        "line1\nline2",
        "tab\there",
        "  spaced  ",
        "-n",
        "",
        "ünïcødé ✓",
    ]
    result = transport.run(["printf", "%s\\0", *hostile], check=True)
    assert result.stdout.split("\0")[:-1] == hostile
    echoed = transport.run(["echo", f"$(touch {marker})", "*"], check=True)
    assert echoed.stdout == f"$(touch {marker}) *\n"
    env = transport.run(["printenv", "PP_HOSTILE"], env={"PP_HOSTILE": f"$(touch {marker}); x"})
    assert env.stdout == f"$(touch {marker}); x\n"
    assert not marker.exists()


def test_exit_code_stderr_and_check(transport: SSHTransport) -> None:
    result = transport.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (result.exit_code, result.stdout, result.stderr) == (3, "out\n", "err\n")
    assert not result.ok
    with pytest.raises(CommandFailedError) as info:
        transport.run(["sh", "-c", "echo boom >&2; exit 2"], check=True)
    assert info.value.exit_code == 2
    assert "boom" in str(info.value)


def test_missing_remote_command_is_127(transport: SSHTransport) -> None:
    result = transport.run(["patchpilot-no-such-command-xyz"])
    assert result.exit_code == 127


def test_locale_is_c(transport: SSHTransport) -> None:
    assert transport.run(["printenv", "LC_ALL"]).stdout == "C\n"


def test_stdin_round_trip(transport: SSHTransport) -> None:
    text = "hello\nwörld $(x) `y`\n"
    assert transport.run(["cat"], stdin=text).stdout == text


def test_large_stdin_and_stdout_do_not_deadlock(transport: SSHTransport) -> None:
    text = "".join(f"line {i} {'x' * 60}\n" for i in range(40_000))  # ~2.8 MB each way
    result = transport.run(["cat"], stdin=text, timeout=60)
    assert result.stdout == text
    assert not result.truncated


def test_interleaved_stdout_and_stderr_volume(transport: SSHTransport) -> None:
    script = "i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done"
    result = transport.run(["sh", "-c", script], check=True)
    assert result.stdout.count("\n") == 2000
    assert result.stderr.count("\n") == 2000


def test_output_is_capped_per_stream(sshd_server: SSHServer, own_known_hosts: Path) -> None:
    settings = sshd_server.settings(max_output_bytes=1024)
    with SSHTransport(sshd_server.host(), settings, own_known_hosts) as t:
        result = t.run(["head", "-c", "300000", "/dev/zero"], check=True)
        assert result.truncated
        assert len(result.stdout) == 1024
        result = t.run(["sh", "-c", "head -c 5000 /dev/zero >&2; echo done"], check=True)
        assert result.truncated
        assert len(result.stderr) == 1024
        assert result.stdout == "done\n"
        small = t.run(["echo", "hi"])
        assert not small.truncated


def test_command_timeout_then_connection_still_usable(transport: SSHTransport) -> None:
    transport.run(["true"], check=True)
    start = time.monotonic()
    with pytest.raises(CommandTimeoutError) as info:
        transport.run(["sleep", "5"], timeout=1)
    assert time.monotonic() - start < 4.5
    assert "within 1s" in str(info.value)
    assert transport.run(["echo", "still here"], check=True).stdout == "still here\n"
    assert transport.connections_opened == 1


def _lab_transport(lab: LabHandle, settings: Settings) -> Transport:
    inventory = load_inventory(lab.inventory_path)
    return open_transport(inventory.hosts["canary-1"], settings)


def test_timeout_signals_the_whole_remote_command(lab: LabHandle, tmp_path: Path) -> None:
    """Past its timeout a remote command and what it started are killed, not left running.

    On the lab (user ``lab``, OpenSSH 9.2): sshd delivers the "signal" request with killpg.
    """
    settings = Settings(home=tmp_path / "home")
    pid_file = f"/tmp/pp-signal-{uuid.uuid4().hex}"
    script = f"echo $$ > {pid_file}; sleep 300 & echo $! >> {pid_file}; sleep 300"
    with _lab_transport(lab, settings) as transport:
        start = time.monotonic()
        with pytest.raises(CommandTimeoutError, match="signalled") as info:
            transport.run(["sh", "-c", script], timeout=1)
        assert "TERM, then KILL" in str(info.value)
        assert time.monotonic() - start < 10
        pids = lab.exec("canary-1", ["cat", pid_file]).stdout.split()
        assert len(pids) == 2

        def alive() -> list[str]:
            return [p for p in pids if lab.exec("canary-1", ["kill", "-0", p]).returncode == 0]

        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and alive():
            time.sleep(0.1)
        assert not alive(), "a remote process survived the timeout"
        assert transport.run(["echo", "still here"], check=True).stdout == "still here\n"
    lab.exec("canary-1", ["rm", "-f", pid_file])


def test_timeout_says_when_the_server_refuses_the_signal(
    transport: SSHTransport, tmp_path: Path
) -> None:
    """OpenSSH refuses session signals for root logins: the error says so, without delay."""
    if transport.user != "root":
        pytest.skip("sshd accepts signals for non-root logins (see the lab test above)")
    start = time.monotonic()
    with pytest.raises(CommandTimeoutError, match="refused the signal request"):
        transport.run(["sleep", "30"], timeout=1)
    assert time.monotonic() - start < 4.5
    assert transport.run(["true"]).ok


def test_connection_is_reused(transport: SSHTransport, sshd_server: SSHServer) -> None:
    before = sshd_server.accepted_logins()
    for _ in range(3):
        transport.run(["true"], check=True)
    assert transport.connections_opened == 1
    assert transport.connected
    time.sleep(0.2)
    assert sshd_server.accepted_logins() == before + 1


def test_reconnects_after_close(transport: SSHTransport) -> None:
    transport.run(["true"], check=True)
    transport.close()
    assert not transport.connected
    transport.run(["true"], check=True)
    assert transport.connections_opened == 2


def test_connection_lost_mid_command_is_not_a_retryable_error(transport: SSHTransport) -> None:
    transport.run(["true"], check=True)
    # Kill this session's sshd process from inside the session: the connection drops.
    with pytest.raises(TransportError, match="lost while running") as info:
        transport.run(["sh", "-c", "kill -9 $PPID; sleep 5"], timeout=20)
    assert not isinstance(info.value, ConnectionError)  # the command may have run: no blind retry
    assert transport.run(["echo", "back"], check=True).stdout == "back\n"
    assert transport.connections_opened == 2


def test_command_killed_by_signal_has_no_exit_status(transport: SSHTransport) -> None:
    result = transport.run(["sh", "-c", "echo before; kill -9 $$"])
    assert result.exit_code == -1
    assert result.stdout == "before\n"
    assert transport.run(["true"]).ok
    assert transport.connections_opened == 1


def test_is_root_and_sudo(transport: SSHTransport) -> None:
    assert transport.is_root is (os.geteuid() == 0)
    transport._is_root = None  # force the `id -u` probe even when the user is root
    assert transport.is_root is (os.geteuid() == 0)
    if os.geteuid() == 0:
        assert transport.run(["id", "-u"], sudo=True).argv == ("id", "-u")


def test_open_transport_factory(sshd_server: SSHServer, tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", ssh=sshd_server.settings())
    host = sshd_server.host(user=None)
    with open_transport(host, settings) as t:
        assert isinstance(t, SSHTransport)
        assert t.user == sshd_server.user
        assert t.known_hosts_path == settings.known_hosts_path
        assert t.run(["id", "-u"], check=True).stdout.strip() == str(os.geteuid())


# --------------------------------------------------------------------------- host keys


def test_unknown_host_key_is_refused_with_fingerprint(
    sshd_server: SSHServer, own_known_hosts: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    t = SSHTransport(sshd_server.host(), sshd_server.settings(known_hosts=empty), own_known_hosts)
    with pytest.raises(HostKeyError) as info:
        t.run(["true"])
    message = str(info.value)
    assert fingerprint_of(sshd_server.host_key.with_suffix(".pub")) in message
    assert "ssh-ed25519" in message
    assert f"ssh-keyscan -p {sshd_server.port} 127.0.0.1 >> ~/.ssh/known_hosts" in message
    assert "trust_on_first_use" in message
    assert not own_known_hosts.exists()
    assert not t.connected


def _other_key_line(tmp_path: Path, name: str, key_type: str = "ed25519") -> str:
    return keygen(tmp_path / name, key_type=key_type).rsplit(" ", 1)[0]


@pytest.mark.parametrize("tofu", [False, True])
@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa"])
def test_changed_host_key_is_refused_even_with_tofu(
    sshd_server: SSHServer, own_known_hosts: Path, tmp_path: Path, tofu: bool, key_type: str
) -> None:
    bogus = tmp_path / "bogus_known_hosts"
    line = _other_key_line(tmp_path, "other", key_type)
    bogus.write_text(f"{sshd_server.known_hosts_name} {line}\n")
    settings = sshd_server.settings(known_hosts=bogus, trust_on_first_use=tofu)
    with pytest.raises(HostKeyError) as info:
        SSHTransport(sshd_server.host(), settings, own_known_hosts).run(["true"])
    message = str(info.value)
    assert "CHANGED" in message
    assert "man-in-the-middle" in message
    assert fingerprint_of(sshd_server.host_key.with_suffix(".pub")) in message
    assert not own_known_hosts.exists()


def test_changed_key_in_own_known_hosts_is_refused_with_tofu(
    sshd_server: SSHServer, own_known_hosts: Path, tmp_path: Path
) -> None:
    own_known_hosts.parent.mkdir(parents=True)
    own_known_hosts.write_text(f"{sshd_server.known_hosts_name} {_other_key_line(tmp_path, 'o')}\n")
    empty = tmp_path / "empty"
    empty.write_text("")
    settings = sshd_server.settings(known_hosts=empty, trust_on_first_use=True)
    with pytest.raises(HostKeyError, match="CHANGED"):
        SSHTransport(sshd_server.host(), settings, own_known_hosts).run(["true"])


def test_tofu_records_key_then_strict_mode_connects(
    sshd_server: SSHServer, own_known_hosts: Path, tmp_path: Path
) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    tofu = sshd_server.settings(known_hosts=empty, trust_on_first_use=True)
    with SSHTransport(sshd_server.host(), tofu, own_known_hosts) as t:
        t.run(["true"], check=True)
    recorded = own_known_hosts.read_text()
    assert (
        recorded
        == f"{sshd_server.known_hosts_name} {sshd_server.host_public_key.rsplit(' ', 1)[0]}\n"
    )
    assert own_known_hosts.stat().st_mode & 0o077 == 0
    strict = sshd_server.settings(known_hosts=empty, trust_on_first_use=False)
    with SSHTransport(sshd_server.host(), strict, own_known_hosts) as t:
        assert t.run(["echo", "ok"], check=True).stdout == "ok\n"
    # A second TOFU connection does not record the key twice.
    with SSHTransport(sshd_server.host(), tofu, own_known_hosts) as t:
        t.run(["true"], check=True)
    assert own_known_hosts.read_text() == recorded


def test_system_known_hosts_is_used(
    sshd_server: SSHServer, own_known_hosts: Path, isolated_ssh_home: Path
) -> None:
    ssh_dir = isolated_ssh_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "known_hosts").write_text(sshd_server.known_hosts.read_text())
    settings = sshd_server.settings(known_hosts=None)
    with SSHTransport(sshd_server.host(), settings, own_known_hosts) as t:
        t.run(["true"], check=True)


def test_fingerprint_matches_ssh_keygen(sshd_server: SSHServer) -> None:
    key = paramiko.PKey.from_path(sshd_server.host_key)
    assert host_key_fingerprint(key) == fingerprint_of(sshd_server.host_key.with_suffix(".pub"))


# --------------------------------------------------------------------------- authentication


def test_wrong_user_key_is_an_authentication_error(
    sshd_server: SSHServer, own_known_hosts: Path, tmp_path: Path
) -> None:
    keygen(tmp_path / "stranger")
    host = sshd_server.host(key_file=str(tmp_path / "stranger"))
    settings = sshd_server.settings(connect_retries=3)
    start = time.monotonic()
    with pytest.raises(AuthenticationError, match="public-key authentication failed"):
        SSHTransport(host, settings, own_known_hosts).run(["true"])
    assert time.monotonic() - start < 5  # not retried with back-off


def test_encrypted_key_never_prompts(
    sshd_server: SSHServer, own_known_hosts: Path, tmp_path: Path
) -> None:
    keygen(tmp_path / "locked", passphrase="correct horse")
    host = sshd_server.host(key_file=str(tmp_path / "locked"))
    with pytest.raises(AuthenticationError, match="ssh-agent"):
        SSHTransport(host, sshd_server.settings(), own_known_hosts).run(["true"])


def test_missing_key_file(sshd_server: SSHServer, own_known_hosts: Path, tmp_path: Path) -> None:
    host = sshd_server.host(key_file=str(tmp_path / "nope"))
    with pytest.raises(AuthenticationError, match="does not exist"):
        SSHTransport(host, sshd_server.settings(), own_known_hosts).run(["true"])


def test_no_identity_at_all(sshd_server: SSHServer, own_known_hosts: Path) -> None:
    host = sshd_server.host(key_file=None)
    with pytest.raises(AuthenticationError, match="no SSH identity"):
        SSHTransport(host, sshd_server.settings(), own_known_hosts).run(["true"])


# --------------------------------------------------------------------------- connect failures


def test_closed_port_is_a_quick_host_connect_error(
    sshd_server: SSHServer, own_known_hosts: Path
) -> None:
    port = free_port()
    host = sshd_server.host(port=port)
    settings = sshd_server.settings(connect_retries=2, connect_timeout=2.0)
    start = time.monotonic()
    with pytest.raises(HostConnectError) as info:
        SSHTransport(host, settings, own_known_hosts).run(["true"])
    assert time.monotonic() - start < 10
    assert f"connection refused on 127.0.0.1:{port}" in str(info.value)
    assert "2 attempts" in str(info.value)
    assert isinstance(info.value, ConnectionError)


def test_silent_server_times_out_on_banner(
    silent_server: int, sshd_server: SSHServer, own_known_hosts: Path
) -> None:
    host = sshd_server.host(port=silent_server)
    settings = sshd_server.settings(connect_timeout=1.0, connect_retries=2)
    start = time.monotonic()
    with pytest.raises(HostConnectError) as info:
        SSHTransport(host, settings, own_known_hosts).run(["true"])
    elapsed = time.monotonic() - start
    assert elapsed < 30, elapsed  # correctness of the timeout, not a speed target
    assert "no SSH banner" in str(info.value)
    assert "within 1s" in str(info.value)

"""Integration fixtures: a real OpenSSH server on loopback, started and stopped by the tests.

The session fixture ``sshd_server`` generates a host key and a user key in a temp dir, writes an
``sshd_config`` (127.0.0.1, a free port, public keys only, the temp ``authorized_keys``) and runs
``sshd -D`` as a child process, which is terminated by its pid at the end of the session. Logins
are as the current user, so the tests also work when run as non-root.

Without sshd the tests are skipped locally and fail in CI (``CI`` set), where sshd must exist.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from patchpilot.core.models import Host
from patchpilot.core.settings import SSHSettings

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd")
START_TIMEOUT_S = 15.0


def _missing(what: str) -> None:
    message = f"{what} not found: install openssh-server/openssh-client to run the SSH tests"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set, so this is an error, not a skip)")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the time of the call)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, *, key_type: str = "ed25519", passphrase: str = "") -> str:
    """Generate a key pair at ``path`` / ``path.pub``; return the public key line."""
    tool = shutil.which("ssh-keygen")
    if tool is None:
        _missing("ssh-keygen")
        raise AssertionError("unreachable")
    subprocess.run(
        [tool, "-q", "-t", key_type, "-N", passphrase, "-C", "patchpilot-test", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    return path.with_name(path.name + ".pub").read_text(encoding="ascii").strip()


def fingerprint_of(public_key_file: Path) -> str:
    """``SHA256:...`` of a public key file, as ``ssh-keygen -lf`` prints it."""
    tool = shutil.which("ssh-keygen")
    assert tool is not None
    out = subprocess.run(
        [tool, "-l", "-E", "sha256", "-f", str(public_key_file)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


@dataclass(frozen=True)
class SSHServer:
    """A running sshd and everything needed to log in to it."""

    address: str
    port: int
    host_key: Path
    host_public_key: str
    user_key: Path
    known_hosts: Path
    user: str
    log_file: Path
    pid: int
    workdir: Path

    @property
    def known_hosts_name(self) -> str:
        """How known_hosts names this server."""
        return f"[{self.address}]:{self.port}"

    def host(self, **overrides: Any) -> Host:
        """An inventory Host for this server."""
        fields: dict[str, Any] = {
            "name": "sshd-test",
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key_file": str(self.user_key),
        }
        fields.update(overrides)
        return Host(**fields)

    def settings(self, **overrides: Any) -> SSHSettings:
        """SSH settings isolated from the caller's agent and ~/.ssh keys."""
        fields: dict[str, Any] = {
            "connect_timeout": 5.0,
            "command_timeout": 30.0,
            "connect_retries": 1,
            "known_hosts": self.known_hosts,
            "use_agent": False,
            "look_for_keys": False,
        }
        fields.update(overrides)
        return SSHSettings(**fields)

    def accepted_logins(self) -> int:
        """How many logins sshd has accepted so far (from its log)."""
        if not self.log_file.exists():
            return 0
        return self.log_file.read_text(errors="replace").count("Accepted publickey")


def _write_config(path: Path, **values: str) -> None:
    path.write_text("".join(f"{k} {v}\n" for k, v in values.items()), encoding="ascii")


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            pytest.fail(f"sshd exited with {proc.returncode} at start-up:\n{log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"sshd did not answer on 127.0.0.1:{port} within {START_TIMEOUT_S}s")


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """Start a real OpenSSH server on 127.0.0.1 for the whole session (:func:`running_sshd`)."""
    work = tmp_path_factory.mktemp("sshd")
    work.chmod(0o755)
    user_key = work / "id_ed25519"
    user_public_key = keygen(user_key)
    with running_sshd(work, user_key, user_public_key) as server:
        yield server


@pytest.fixture(autouse=True)
def isolated_ssh_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Point HOME at an empty dir so ~/.ssh/known_hosts and ~/.ssh/id_* of the runner are unused,
    and hide any ssh-agent."""
    home = tmp_path / "user-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP listener on 127.0.0.1 that accepts connections and never sends an SSH banner."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)  # keep it open, say nothing

    thread = threading.Thread(target=accept_forever, name="silent-sshd", daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            with contextlib.suppress(OSError):
                conn.close()
        listener.close()


# --------------------------------------------------------------------------- more sshd servers


def sshd_path() -> str:
    """The sshd binary (skip locally, fail in CI, when it is missing)."""
    sshd = next((c for c in SSHD_CANDIDATES if os.access(c, os.X_OK)), shutil.which("sshd"))
    if sshd is None:
        _missing("sshd (/usr/sbin/sshd)")
        raise AssertionError("unreachable")
    return sshd


@contextlib.contextmanager
def running_sshd(
    work: Path, user_key: Path, user_public_key: str, **extra: str
) -> Iterator[SSHServer]:
    """One more OpenSSH server on 127.0.0.1 (its own host key and log) accepting ``user_key``;
    ``extra`` adds or overrides sshd_config keywords. Stopped by its pid on exit."""
    sshd = sshd_path()
    work.mkdir(mode=0o755, parents=True, exist_ok=True)
    work.chmod(0o755)
    host_key = work / "ssh_host_ed25519_key"
    host_public_key = keygen(host_key)
    authorized_keys = work / "authorized_keys"
    authorized_keys.write_text(user_public_key + "\n", encoding="ascii")
    authorized_keys.chmod(0o600)
    port = free_port()
    known_hosts = work / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_public_key}\n", encoding="ascii")
    log_file = work / "sshd.log"
    config = work / "sshd_config"
    values = {
        "ListenAddress": "127.0.0.1",
        "Port": str(port),
        "HostKey": str(host_key),
        "PidFile": str(work / "sshd.pid"),
        "AuthorizedKeysFile": str(authorized_keys),
        "PubkeyAuthentication": "yes",
        "PasswordAuthentication": "no",
        "KbdInteractiveAuthentication": "no",
        "UsePAM": "no",
        "StrictModes": "no",
        "PermitRootLogin": "prohibit-password",
        "LogLevel": "VERBOSE",
        "PerSourcePenalties": "no",  # OpenSSH >= 9.8: failed-auth tests must not lock us out
        **extra,
    }
    if os.geteuid() == 0:
        # sshd's privilege separation needs this directory (tmpfs /run is empty in containers).
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    _write_config(config, **values)
    check = subprocess.run(
        [sshd, "-t", "-f", str(config)], check=False, capture_output=True, text=True
    )
    if check.returncode != 0 and "PerSourcePenalties" in check.stderr:
        del values["PerSourcePenalties"]  # older OpenSSH: no penalties to disable
        _write_config(config, **values)
        check = subprocess.run(
            [sshd, "-t", "-f", str(config)], check=False, capture_output=True, text=True
        )
    if check.returncode != 0:
        pytest.fail(f"sshd rejected the test configuration:\n{check.stderr}")
    with (work / "sshd.stderr").open("wb") as stderr_file:
        proc = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config), "-E", str(log_file)],
            stdin=subprocess.DEVNULL,
            stdout=stderr_file,
            stderr=stderr_file,
        )
        try:
            _wait_for_banner(port, proc, log_file)
            yield SSHServer(
                address="127.0.0.1",
                port=port,
                host_key=host_key,
                host_public_key=host_public_key,
                user_key=user_key,
                known_hosts=known_hosts,
                user=getpass.getuser(),
                log_file=log_file,
                pid=proc.pid,
                workdir=work,
            )
        finally:
            if proc.poll() is None:  # only the sshd started here, by its pid
                os.kill(proc.pid, 15)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(proc.pid, 9)
                    proc.wait(timeout=10)


@pytest.fixture
def sshd_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., SSHServer]]:
    """Start more sshd servers for one test: ``start(name, **sshd_config)``; all accept the
    same user key and all are stopped (by pid) when the test ends."""
    work = tmp_path_factory.mktemp("sshd-many")
    work.chmod(0o755)
    user_key = work / "id_ed25519"
    user_public_key = keygen(user_key)
    with contextlib.ExitStack() as stack:

        def start(name: str, **extra: str) -> SSHServer:
            return stack.enter_context(
                running_sshd(work / name, user_key, user_public_key, **extra)
            )

        yield start

"""Hosts behind SSH bastions, with real OpenSSH servers.

On loopback (``sshd_factory``): commands through one and two bastions, each hop's host key
checked under its own name, errors naming the hop, forwarding refused by a bastion, ssh_config
and the CLI. The target's sshd must see its connection come from the bastion: while connected,
the socket that reached the target belongs to a process of the bastion's sshd.

Behind a real network boundary (root and the lab): a lab host's second sshd runs in a network
namespace of its own (``pp-tgt-*``) whose only link is a veth pair to another namespace
(``pp-bst-*``) holding the bastion. The bastion is an ``sshd -i`` (inetd mode) started inside
that namespace for each connection accepted on 127.0.0.1 here, so this machine reaches the
bastion and only the bastion reaches the target. patchpilot scans that host and installs a
package on it through the bastion. Every namespace and process is created here and deleted by
name or pid in finalizers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from patchpilot.core.errors import HostConnectError, HostKeyError, TransportError
from patchpilot.core.inventory import load_inventory
from patchpilot.core.models import Host, JumpHost
from patchpilot.core.settings import SSHSettings
from patchpilot.tools.packages import install_exact
from patchpilot.tools.transport import SSHTransport
from patchpilot.tools.transport.base import BecomeRefusedError
from tests.integration.conftest import SSHServer, keygen, sshd_path

if TYPE_CHECKING:  # imported by pytest as a plugin; importing it here first breaks rewriting
    from tests.integration.lab_fixtures import LabHandle

pytest_plugins = ["tests.integration.lab_fixtures"]
pytestmark = pytest.mark.integration

Start = Callable[..., SSHServer]


# --------------------------------------------------------------------------- helpers


def _jump(server: SSHServer, name: str = "bastion") -> JumpHost:
    return JumpHost(
        name=name,
        address=server.address,
        port=server.port,
        user=server.user,
        key_file=str(server.user_key),
    )


def _behind(target: SSHServer, *jumps: SSHServer) -> Host:
    return target.host(
        name="behind", jump=tuple(_jump(j, f"bastion{i}") for i, j in enumerate(jumps, 1))
    )


def _known_hosts(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="ascii")
    return path


def _line(server: SSHServer, name: str | None = None) -> str:
    return f"{name or server.known_hosts_name} {server.host_public_key}"


def _settings(known_hosts: Path, **overrides: Any) -> SSHSettings:
    fields: dict[str, Any] = {
        "connect_timeout": 5.0,
        "command_timeout": 60.0,
        "connect_retries": 1,
        "known_hosts": known_hosts,
        "use_agent": False,
        "look_for_keys": False,
        **overrides,
    }
    return SSHSettings(**fields)


def _source_ports(log_file: Path, local_port: int) -> list[int]:
    """Client ports of the connections an sshd logged (``Connection from A port P on B port L``)."""
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    pattern = re.compile(rf"Connection from \S+ port (\d+) on \S+ port {local_port}\b")
    return [int(port) for port in pattern.findall(text)]


def _socket_inodes(local_port: int, remote_port: int) -> set[str]:
    """Inodes of this namespace's TCP sockets from ``local_port`` to ``remote_port``."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for row in Path(table).read_text().splitlines()[1:]:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                ports = (int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16))
                if ports == (local_port, remote_port):
                    inodes.add(inode)
    return inodes


def _socket_owners(inodes: set[str]) -> set[int]:
    """Pids holding any of these sockets open."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    owners = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        owners.add(int(entry.name))
    return owners


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        chain.append(pid)
    return chain


def _came_through(target: SSHServer, bastion: SSHServer) -> None:
    """While connected: the target's client socket is held by the bastion's sshd (a child)."""
    ports = _source_ports(target.log_file, target.port)
    assert ports, target.log_file.read_text(errors="replace")
    owners = _socket_owners(_socket_inodes(ports[-1], target.port))
    assert owners, f"no socket from port {ports[-1]} to {target.port}"
    assert os.getpid() not in owners  # not patchpilot's own connection
    assert all(bastion.pid in _ancestors(pid) for pid in owners), (owners, bastion.pid)


# --------------------------------------------------------------------------- on loopback


def test_commands_run_through_one_bastion(sshd_factory: Start, tmp_path: Path) -> None:
    target = sshd_factory("target")
    bastion = sshd_factory("bastion", PermitOpen=f"127.0.0.1:{target.port}")
    known = _known_hosts(tmp_path / "kh", _line(bastion), _line(target))
    with SSHTransport(_behind(target, bastion), _settings(known), tmp_path / "own") as t:
        assert t.run(["id", "-u"], check=True).stdout.strip() == str(os.geteuid())
        assert t.run(["cat"], stdin="through\n").stdout == "through\n"
        _came_through(target, bastion)
        clients = [*t._jump_clients, t._client]
        assert len(clients) == 2
        assert t.connected
        assert t.connections_opened == 1
    assert not t.connected
    for client in clients:
        assert client is not None
        transport = client.get_transport()
        assert transport is None or not transport.is_active()
    assert target.accepted_logins() == 1
    assert bastion.accepted_logins() == 1


def test_two_bastions_chain(sshd_factory: Start, tmp_path: Path) -> None:
    target = sshd_factory("target")
    second = sshd_factory("second", PermitOpen=f"127.0.0.1:{target.port}")
    first = sshd_factory("first", PermitOpen=f"127.0.0.1:{second.port}")  # only to the second
    known = _known_hosts(tmp_path / "kh", _line(first), _line(second), _line(target))
    with SSHTransport(_behind(target, first, second), _settings(known), tmp_path / "own") as t:
        assert t.run(["echo", "ok"], check=True).stdout == "ok\n"
        _came_through(target, second)
        _came_through(second, first)
    assert [s.accepted_logins() for s in (first, second, target)] == [1, 1, 1]
    # The first bastion may not forward to the target itself: the error names that hop.
    direct = _behind(target, first)
    with pytest.raises(HostConnectError, match="administratively prohibited") as info:
        SSHTransport(direct, _settings(known), tmp_path / "own").run(["true"])
    assert f"jump host 1 of 1 'bastion1' ({first.user}@127.0.0.1:{first.port})" in str(info.value)


def test_host_key_errors_name_the_hop(sshd_factory: Start, tmp_path: Path) -> None:
    target = sshd_factory("target")
    bastion = sshd_factory("bastion")
    host = _behind(target, bastion)

    # The bastion's key is unknown: refused before the target is ever contacted.
    probes = len(_source_ports(target.log_file, target.port))  # the fixture's readiness probe
    unknown_bastion = _known_hosts(tmp_path / "kh1", _line(target))
    with pytest.raises(HostKeyError) as info:
        SSHTransport(host, _settings(unknown_bastion), tmp_path / "own").run(["true"])
    message = str(info.value)
    assert f"jump host 1 of 1 'bastion1' ({bastion.user}@127.0.0.1:{bastion.port})" in message
    assert f"unknown SSH host key for [127.0.0.1]:{bastion.port}" in message
    assert target.accepted_logins() == 0
    assert len(_source_ports(target.log_file, target.port)) == probes

    # The target's key is known only under the bastion's name: it must not be accepted, since
    # the target's key is looked up under the target's own name and port.
    confused = _known_hosts(
        tmp_path / "kh2", _line(bastion), f"[127.0.0.1]:{bastion.port} {target.host_public_key}"
    )
    with pytest.raises(HostKeyError) as info:
        SSHTransport(host, _settings(confused), tmp_path / "own").run(["true"])
    message = str(info.value)
    assert not message.startswith("behind: jump host")  # the target failed, not the bastion
    assert f"unknown SSH host key for [127.0.0.1]:{target.port}" in message
    # ssh-keyscan must run on the bastion: the hint says so, with a valid ssh destination.
    scan = f"ssh-keyscan -p {target.port} 127.0.0.1"
    assert f"`ssh ssh://{bastion.user}@127.0.0.1:{bastion.port} '{scan}'" in message
    assert target.accepted_logins() == 0

    # A changed target key is refused as a possible man-in-the-middle, naming the target.
    other = keygen(tmp_path / "other_key")
    changed = _known_hosts(tmp_path / "kh3", _line(bastion), f"{target.known_hosts_name} {other}")
    with pytest.raises(HostKeyError, match=rf"\[127\.0\.0\.1\]:{target.port} has CHANGED"):
        SSHTransport(host, _settings(changed), tmp_path / "own").run(["true"])
    assert target.accepted_logins() == 0


def test_trust_on_first_use_records_each_hop_under_its_own_name(
    sshd_factory: Start, tmp_path: Path
) -> None:
    target = sshd_factory("target")
    bastion = sshd_factory("bastion")
    empty = _known_hosts(tmp_path / "kh", "")
    own = tmp_path / "own" / "known_hosts"
    settings = _settings(empty, trust_on_first_use=True)
    with SSHTransport(_behind(target, bastion), settings, own) as t:
        t.run(["true"], check=True)
    recorded = sorted(own.read_text().splitlines())
    assert recorded == sorted(
        f"{s.known_hosts_name} {s.host_public_key.split()[0]} {s.host_public_key.split()[1]}"
        for s in (bastion, target)
    )


def test_forwarding_disabled_on_the_bastion(sshd_factory: Start, tmp_path: Path) -> None:
    target = sshd_factory("target")
    bastion = sshd_factory("bastion", AllowTcpForwarding="no")
    known = _known_hosts(tmp_path / "kh", _line(bastion), _line(target))
    with pytest.raises(HostConnectError, match="administratively prohibited") as info:
        SSHTransport(_behind(target, bastion), _settings(known), tmp_path / "own").run(["true"])
    assert "jump host 1 of 1" in str(info.value)
    assert "AllowTcpForwarding" in str(info.value)


def test_ssh_config_and_the_cli_reach_the_host_through_the_bastion(
    sshd_factory: Start, tmp_path: Path, isolated_ssh_home: Path
) -> None:
    target = sshd_factory("target")
    bastion = sshd_factory("bastion", PermitOpen=f"127.0.0.1:{target.port}")
    ssh_dir = isolated_ssh_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(
        f"Host jumpbox\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User {bastion.user}\n"
        f"  IdentityFile {bastion.user_key}\n"
        f"Host behind-*\n  HostName 127.0.0.1\n  Port {target.port}\n  User {target.user}\n"
        f"  IdentityFile {target.user_key}\n  ProxyJump jumpbox\n"
        "  StrictHostKeyChecking no\n"  # ignored: host keys are always checked
    )
    known = _known_hosts(tmp_path / "kh", _line(bastion), _line(target))
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n  behind-1: {tags: [behind]}\n")

    settings = _settings(known)
    host = load_inventory(inventory, ssh=settings).hosts["behind-1"]
    assert (host.address, host.port) == ("127.0.0.1", target.port)
    assert [(j.name, j.port) for j in host.jump] == [("jumpbox", bastion.port)]
    with SSHTransport(host, settings, tmp_path / "own") as t:
        t.run(["true"], check=True)
        _came_through(target, bastion)

    env = {
        **os.environ,
        "PATCHPILOT_HOME": str(tmp_path / "pp-home"),
        "PATCHPILOT_SSH__KNOWN_HOSTS": str(known),
        "PATCHPILOT_SSH__USE_AGENT": "false",
        "PATCHPILOT_SSH__LOOK_FOR_KEYS": "false",
        "PATCHPILOT_SSH__CONNECT_RETRIES": "1",
    }
    res = subprocess.run(
        [sys.executable, "-m", "patchpilot", "facts", "behind", "-i", str(inventory), "-f", "json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [h["host"] for h in doc["hosts"]] == ["behind-1"]
    assert doc["hosts"][0]["facts"]["kernel"] == os.uname().release
    assert "stricthostkeychecking" in res.stderr  # warned about, not applied
    assert target.accepted_logins() == 2
    assert bastion.accepted_logins() == 2


# --------------------------------------------------------------------------- behind a boundary

BASTION_ADDRESS = "10.254.0.1"
TARGET_ADDRESS = "10.254.0.2"
TARGET_PORT = 2222
LAB_TARGET = "web-1"


def _ip(*args: str) -> str:
    return subprocess.run(
        ["ip", *args], check=True, capture_output=True, text=True, timeout=30
    ).stdout


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    with contextlib.suppress(OSError):
        return [int(p) for p in path.read_text().split()]
    return []


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process started here (and, for nsenter, the one child it forked), by pid."""
    for pid in [*_children(proc.pid), proc.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        for pid in [*_children(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class InetdBastion:
    """An ``sshd -i`` per connection accepted on 127.0.0.1, each run inside netns ``netns``."""

    netns: str
    config: Path
    log_file: Path
    listener: socket.socket = field(init=False)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="inetd-bastion", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        argv = ["nsenter", f"--net=/run/netns/{self.netns}", "--", sshd_path(), "-i"]
        argv += ["-f", str(self.config), "-E", str(self.log_file)]
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                self.procs.append(
                    subprocess.Popen(
                        argv, stdin=conn.fileno(), stdout=conn.fileno(), stderr=subprocess.DEVNULL
                    )
                )

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.listener.close()
        for proc in self.procs:
            if proc.poll() is None:
                _stop(proc)


@pytest.fixture
def boundary(lab: LabHandle, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Bastion and target namespaces joined by a veth pair; the bastion reachable from here on
    127.0.0.1; a second sshd of lab host web-1 listening only inside the target namespace."""
    tag = uuid.uuid4().hex[:6]
    bastion_ns, target_ns = f"pp-bst-{tag}", f"pp-tgt-{tag}"
    work = tmp_path / "boundary"
    work.mkdir(mode=0o755)
    with contextlib.ExitStack() as cleanup:
        for ns in (bastion_ns, target_ns):
            _ip("netns", "add", ns)
            cleanup.callback(_ip, "netns", "delete", ns)  # takes its veth end along
        _ip("link", "add", f"ppb{tag}", "netns", bastion_ns, "type", "veth",
            "peer", "name", f"ppt{tag}", "netns", target_ns)  # fmt: skip
        for ns, link, address in (
            (bastion_ns, f"ppb{tag}", BASTION_ADDRESS),
            (target_ns, f"ppt{tag}", TARGET_ADDRESS),
        ):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{address}/30", "dev", link)
            _ip("-n", ns, "link", "set", link, "up")

        # The bastion: root logs in with a test key, and may forward to the target only.
        bastion_key = work / "bastion_host_key"
        bastion_public = keygen(bastion_key)
        user_key = work / "id_ed25519"
        (work / "authorized_keys").write_text(keygen(user_key) + "\n")
        config = work / "bastion_sshd_config"
        config.write_text(
            f"HostKey {bastion_key}\nAuthorizedKeysFile {work / 'authorized_keys'}\n"
            "PubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nLogLevel VERBOSE\nPidFile none\n"
            f"AllowTcpForwarding yes\nPermitOpen {TARGET_ADDRESS}:{TARGET_PORT}\n"
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        bastion = InetdBastion(bastion_ns, config, work / "bastion.log")
        cleanup.callback(bastion.close)
        bastion.start()

        # The target: lab host web-1's own sshd configuration, listening in the target
        # namespace (its filesystem, users, keys and packages are web-1's).
        paths = lab.lab.host_paths(LAB_TARGET)
        from patchpilot.lab.hosts import find_pid1, host_key_lines

        unshare_pid = paths.read_pid()
        assert unshare_pid is not None
        pid1 = find_pid1(unshare_pid, paths.root)
        assert pid1 is not None
        target_log = (work / "target.log").open("wb")
        cleanup.callback(target_log.close)
        target = subprocess.Popen(
            ["nsenter", f"--target={pid1}", "--mount", "--uts", "--ipc", "--pid", "--root",
             "--wd", f"--net=/run/netns/{target_ns}", "--", "/usr/sbin/sshd", "-D", "-e",
             "-o", f"ListenAddress={TARGET_ADDRESS}:{TARGET_PORT}", "-o", "PidFile=none",
             "-o", "LogLevel=VERBOSE"],
            stdin=subprocess.DEVNULL,
            stdout=target_log,
            stderr=target_log,
        )  # fmt: skip
        cleanup.callback(_stop, target)
        deadline = time.monotonic() + 15
        while "Server listening on " + TARGET_ADDRESS not in (work / "target.log").read_text():
            assert target.poll() is None, (work / "target.log").read_text()
            assert time.monotonic() < deadline, (work / "target.log").read_text()
            time.sleep(0.1)

        known = work / "known_hosts"
        known.write_text(
            f"[127.0.0.1]:{bastion.port} {bastion_public}\n"
            + "".join(
                line + "\n" for line in host_key_lines(paths.upper, TARGET_PORT, TARGET_ADDRESS)
            )
        )
        yield {
            "bastion": bastion,
            "bastion_ns": bastion_ns,
            "target_ns": target_ns,
            "bastion_key": user_key,
            "lab_key": lab.lab.key_file,
            "known_hosts": known,
            "target_log": work / "target.log",
        }


@pytest.fixture
def restore_web1(lab: LabHandle) -> Iterator[None]:
    """Finalizer: web-1 ends with acme-web 1.0.0, as the other lab tests expect."""
    yield
    lab.exec(LAB_TARGET, ["dpkg", "--configure", "-a", "--force-confold"])
    done = lab.exec(
        LAB_TARGET,
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "-q", "-y", "--allow-downgrades",
         "install", "acme-web=1.0.0"],
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def _cli(home: Path, *args: str, known_hosts: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PATCHPILOT_HOME": str(home),
        "PATCHPILOT_SSH__KNOWN_HOSTS": str(known_hosts),
        "PATCHPILOT_SSH__USE_AGENT": "false",
        "PATCHPILOT_SSH__LOOK_FOR_KEYS": "false",
        "PATCHPILOT_SSH__CONNECT_TIMEOUT": "10",
        "PATCHPILOT_DISCOVERY__CHANGELOGS": "none",
    }
    return subprocess.run(
        [sys.executable, "-m", "patchpilot", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )


def _dpkg_version(lab: LabHandle) -> str:
    done = lab.exec(LAB_TARGET, ["dpkg-query", "-W", "-f", "${Version}", "acme-web"])
    return done.stdout.strip()


@pytest.mark.skipif(shutil.which("ip") is None, reason="iproute2 (ip) is not installed")
def test_host_only_a_bastion_reaches_is_scanned_and_patched_through_it(
    lab: LabHandle,
    boundary: dict[str, Any],
    restore_web1: None,
    tmp_path: Path,
    isolated_ssh_home: Path,
) -> None:
    bastion: InetdBastion = boundary["bastion"]
    known: Path = boundary["known_hosts"]
    target_log: Path = boundary["target_log"]

    # The boundary: the target namespace holds only its loopback and the link to the bastion's
    # namespace, and nothing in this namespace has an address on that link.
    links = _ip("-n", boundary["target_ns"], "-o", "link", "show")
    assert [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()] == [
        "lo",
        f"ppt{boundary['target_ns'][-6:]}",
    ]
    assert "10.254.0." not in _ip("-o", "addr", "show")
    assert "default" not in _ip("-n", boundary["target_ns"], "route", "show")
    direct = Host(name="direct", address=TARGET_ADDRESS, port=TARGET_PORT, user="lab",
                  key_file=str(boundary["lab_key"]))  # fmt: skip
    with pytest.raises(TransportError):
        SSHTransport(direct, _settings(known, connect_timeout=2.0), tmp_path / "own").run(["true"])
    assert "Connection from" not in target_log.read_text()

    # ssh_config names the bastion and sends the host through it.
    ssh_dir = isolated_ssh_home / ".ssh"
    ssh_dir.mkdir()
    (ssh_dir / "config").write_text(
        f"Host bastion\n  HostName 127.0.0.1\n  Port {bastion.port}\n  User root\n"
        f"  IdentityFile {boundary['bastion_key']}\n"
        f"Host web-1-behind\n  HostName {TARGET_ADDRESS}\n  Port {TARGET_PORT}\n  User lab\n"
        f"  IdentityFile {boundary['lab_key']}\n  ProxyJump bastion\n"
    )
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts:\n  web-1-behind: {tags: [behind]}\n")
    home = tmp_path / "pp-home"
    res = _cli(home, "scan", "-t", "web-1-behind", "-i", str(inventory), "--offline", "-f", "json",
               known_hosts=known)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    scan = json.loads(res.stdout)
    text = json.dumps(scan)
    assert "web-1-behind" in text
    assert "acme-web" in text  # its pending acme-web update, read from web-1's own apt
    connections = re.findall(
        rf"Connection from (\S+) port \d+ on {TARGET_ADDRESS}", target_log.read_text()
    )
    assert connections
    assert set(connections) == {BASTION_ADDRESS}  # every connection came from the bastion
    assert "Accepted publickey for root" in (bastion.log_file.read_text())

    # Patched through it: an Ansible inventory whose ssh args name the bastion with the
    # `ProxyCommand="ssh -W %h:%p ..."` form (no ssh_config for this host).
    (ssh_dir / "config").unlink()
    hosts_ini = tmp_path / "hosts.ini"
    proxy = f"ssh -W %h:%p -q -i {boundary['bastion_key']} -p {bastion.port} root@127.0.0.1"
    hosts_ini.write_text(
        "[behind]\n"
        f"web-1-behind ansible_host={TARGET_ADDRESS} ansible_port={TARGET_PORT} ansible_user=lab "
        f"ansible_ssh_private_key_file={boundary['lab_key']} ansible_become=true\n"
        "[behind:vars]\n"
        f"ansible_ssh_common_args='-o ProxyCommand=\"{proxy}\"'\n"
    )
    assert _dpkg_version(lab) == "1.0.0"
    res = _cli(home, "run", "-t", "web-1-behind", "-i", str(hosts_ini), "--offline",
               "--only", "acme-web=1.1.0", "-f", "json", known_hosts=known)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run = json.loads(res.stdout)
    assert run["status"] == "completed", run
    assert {d["host"]: d["status"] for d in run["deployments"]} == {"web-1-behind": "installed"}
    assert _dpkg_version(lab) == "1.1.0"
    connections = re.findall(
        rf"Connection from (\S+) port \d+ on {TARGET_ADDRESS}", target_log.read_text()
    )
    assert set(connections) == {BASTION_ADDRESS}

    # ansible_become=false: the lab user (not root) may not escalate. A package operation is
    # refused before anything runs; a scan still runs, without its root-only facts.
    hosts_ini.write_text(
        hosts_ini.read_text().replace("ansible_become=true", "ansible_become=false")
    )
    host = load_inventory(hosts_ini, ssh=_settings(known)).hosts["web-1-behind"]
    assert (host.become, [j.port for j in host.jump]) == (False, [bastion.port])
    with SSHTransport(host, _settings(known), tmp_path / "own") as transport:
        assert not transport.is_root
        with pytest.raises(BecomeRefusedError, match="ansible_become"):
            install_exact(transport, [("acme-web", "1.0.0")], allow_downgrades=True)
    assert _dpkg_version(lab) == "1.1.0"
    res = _cli(home, "scan", "-t", "web-1-behind", "-i", str(hosts_ini), "--offline", "-f",
               "json", known_hosts=known)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "ansible_become" in res.stdout

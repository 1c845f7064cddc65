"""One lab host at run time: overlay, identity, start, stop, and commands inside it.

A host is an overlayfs (``hosts/NAME/{upper,work}`` over ``base/``, merged at
``hosts/NAME/root``) run by ``unshare --mount --uts --pid --ipc --fork`` + ``chroot`` with
``/sbin/lab-init`` as PID 1. It shares this machine's network namespace; its sshd and acme-web
listen on 127.0.0.1 only (ports from ``sshd_config.d`` and ``/etc/default/acme-web``).

The unshare process is started in its own session with stdin ``/dev/null`` and output to
``hosts/NAME/console.log``, so it outlives the CLI; its pid is kept in ``hosts/NAME/pid``.
Only that pid (and the namespace's PID 1, its child) is ever signalled, after checking that it
still is our unshare for this host.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from patchpilot.core.errors import LabError
from patchpilot.lab.base import LAB_USER, copy_resolv_conf
from patchpilot.lab.models import LabHost
from patchpilot.lab.system import (
    is_mounted,
    mounts,
    namespace_children,
    process_alive,
    process_cmdline,
    run,
    tcp_accepting,
    umount,
)

__all__ = [
    "HOST_ENV",
    "HostPaths",
    "exec_in_host",
    "find_pid1",
    "host_key_lines",
    "is_our_unshare",
    "mount_overlay",
    "start_host",
    "stop_host",
    "wait_ssh",
    "write_identity",
]

log = structlog.get_logger(__name__, agent="lab")  # lazy: bound after configure_logging()

#: The environment of commands run inside a host.
HOST_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "DEBIAN_FRONTEND": "noninteractive",
}
OVERLAY_SOURCE_PREFIX = "patchpilot-lab-"

# Runs after unshare, as the namespace's PID 1 before it becomes lab-init: $1 root, $2 repo,
# $3 host name. Copies of other lab hosts' overlays are dropped from this mount namespace
# (they would otherwise stay pinned here after those hosts stop).
_START_SCRIPT = r"""
set -e
ROOT="$1"; REPO="$2"; NAME="$3"
echo "$NAME" > /proc/sys/kernel/hostname
grep " - overlay patchpilot-lab-" /proc/self/mountinfo | while read -r _ _ _ _ mp _; do
    if [ "$mp" != "$ROOT" ]; then umount -l "$mp" 2>/dev/null || true; fi
done
mount -t proc proc "$ROOT/proc"
mount -t sysfs -o ro sysfs "$ROOT/sys"
mount -t tmpfs -o mode=0755,size=64m tmpfs "$ROOT/run"
mount -t tmpfs -o mode=1777,size=64m tmpfs "$ROOT/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$ROOT/dev/pts"
mount --bind "$ROOT/dev/pts/ptmx" "$ROOT/dev/ptmx"
mount --bind -o ro "$REPO" "$ROOT/srv/acme-repo"
echo "lab-start: $NAME namespaces ready"
exec chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 /sbin/lab-init
"""

# Hosts started by this process: waited for after they stop, so they never linger as zombies.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class HostPaths:
    """The files of one host under ``$LAB/hosts/NAME``."""

    dir: Path

    @property
    def upper(self) -> Path:
        """The overlay upper directory (the host's own changes)."""
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        """The overlay work directory."""
        return self.dir / "work"

    @property
    def root(self) -> Path:
        """The merged root (mount point)."""
        return self.dir / "root"

    @property
    def console(self) -> Path:
        """Output of the host's PID 1 and its start script."""
        return self.dir / "console.log"

    @property
    def pid_file(self) -> Path:
        """The pid of the host's unshare process."""
        return self.dir / "pid"

    @property
    def provisioned_marker(self) -> Path:
        """Present once the acme packages are installed (deleted with the upper)."""
        return self.dir / "provisioned"

    def read_pid(self) -> int | None:
        """The recorded pid, None when absent or garbled."""
        try:
            return int(self.pid_file.read_text(encoding="ascii").strip())
        except (OSError, ValueError):
            return None


def mount_overlay(base: Path, paths: HostPaths, name: str) -> None:
    """Mount the host's overlay on ``paths.root`` (no-op when already mounted)."""
    for directory in (paths.upper, paths.work, paths.root):
        directory.mkdir(parents=True, exist_ok=True)
    paths.upper.chmod(0o755)
    if is_mounted(paths.root):
        return
    run(
        [
            "mount",
            "-t",
            "overlay",
            f"{OVERLAY_SOURCE_PREFIX}{name}",
            "-o",
            f"lowerdir={base},upperdir={paths.upper},workdir={paths.work}",
            str(paths.root),
        ],
        what=f"mount the overlay of {name}",
    )


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    if path.is_file() and path.read_text(encoding="utf-8", errors="replace") == text:
        if (path.stat().st_mode & 0o7777) != mode:
            path.chmod(mode)
        return  # unchanged: no needless copy-up into the upper
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


def _user_ids(root: Path, user: str) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == user:
            return int(parts[2]), int(parts[3])
    raise LabError(f"user {user} missing from {root}/etc/passwd: rebuild the base (--rebuild-base)")


def write_identity(host: LabHost, root: Path, public_key: str) -> None:
    """Write the host's identity through its mounted overlay (at every start; idempotent).

    Hostname, ``/etc/hosts``, sshd listen address, acme-web port, resolver, the client key in
    ``~lab/.ssh/authorized_keys``, a fresh machine-id and unique SSH host keys (only when
    missing).
    """
    etc = root / "etc"
    _write(etc / "hostname", f"{host.name}\n")
    _write(
        etc / "hosts",
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.name}\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n",
    )
    # GOTCHA: never pass ListenAddress on sshd's command line: a restart by the package's
    # init script would then listen on [::]:22 of this machine's network namespace.
    _write(
        etc / "ssh" / "sshd_config.d" / "10-host.conf",
        f"# patchpilot lab host {host.name}: loopback only\n"
        f"AddressFamily inet\nListenAddress 127.0.0.1:{host.port}\n",
    )
    _write(etc / "default" / "acme-web", f"ACME_PORT={host.acme_port}\n")
    copy_resolv_conf(root)
    machine_id = etc / "machine-id"
    if not machine_id.is_file() or not machine_id.read_text(encoding="ascii").strip():
        _write(machine_id, uuid.uuid4().hex + "\n", 0o444)
    ssh_dir = root / "home" / LAB_USER / ".ssh"
    uid, gid = _user_ids(root, LAB_USER)
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(ssh_dir, uid, gid)
    ssh_dir.chmod(0o700)
    keys = ssh_dir / "authorized_keys"
    _write(keys, public_key.strip() + "\n", 0o600)
    os.chown(keys, uid, gid)
    if not (etc / "ssh" / "ssh_host_ed25519_key").is_file():
        run(
            ["chroot", str(root), "ssh-keygen", "-q", "-A"],
            env=dict(HOST_ENV),
            what=f"ssh-keygen -A in {host.name}",
        )


def host_key_lines(upper: Path, port: int, address: str = "127.0.0.1") -> list[str]:
    """known_hosts lines (``[127.0.0.1]:PORT type key``) for the host keys in an upper dir."""
    lines = []
    for pub in sorted((upper / "etc" / "ssh").glob("ssh_host_*_key.pub")):
        parts = pub.read_text(encoding="ascii").split()
        if len(parts) >= 2:
            lines.append(f"[{address}]:{port} {parts[0]} {parts[1]}")
    return lines


def is_our_unshare(pid: int, root: Path) -> bool:
    """True when ``pid`` is alive and is the unshare process running the host at ``root``."""
    if not process_alive(pid):
        return False
    argv = process_cmdline(pid)
    return bool(argv) and Path(argv[0]).name == "unshare" and str(root) in argv


def find_pid1(pid: int, root: Path) -> int | None:
    """The namespace's PID 1 (child of unshare ``pid``) once it runs lab-init chrooted in root."""
    for child in namespace_children(pid):
        try:
            child_root = os.readlink(f"/proc/{child}/root")
            comm = Path(f"/proc/{child}/comm").read_text(encoding="utf-8").strip()
        except OSError:
            continue
        if child_root == str(root) and comm == "lab-init":
            return child
    return None


def _console_tail(paths: HostPaths, lines: int = 6) -> str:
    try:
        text = paths.console.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


def start_host(name: str, paths: HostPaths, repo: Path, *, timeout: float = 15.0) -> int:
    """Start the host whose overlay is mounted on ``paths.root``; return the unshare pid.

    Waits until PID 1 runs lab-init inside the chroot.
    """
    argv = [
        "unshare",
        "--mount",
        "--uts",
        "--pid",
        "--ipc",
        "--fork",
        "--kill-child=SIGTERM",
        "--propagation",
        "private",
        "/bin/sh",
        "-c",
        _START_SCRIPT,
        "lab-start",
        str(paths.root),
        str(repo),
        name,
    ]
    with paths.console.open("ab") as console:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": HOST_ENV["PATH"], "LANG": "C.UTF-8"},
            close_fds=True,
        )
    _CHILDREN[proc.pid] = proc
    paths.pid_file.write_text(f"{proc.pid}\n", encoding="ascii")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            _CHILDREN.pop(proc.pid, None)
            raise LabError(
                f"host {name} exited at start (exit {proc.returncode}): {_console_tail(paths)}"
            )
        if find_pid1(proc.pid, paths.root) is not None:
            log.debug("lab.host_started", host=name, pid=proc.pid)
            return proc.pid
        time.sleep(0.02)
    stop_host(name, proc.pid, paths.root)
    raise LabError(f"host {name} did not reach lab-init in {timeout} s: {_console_tail(paths)}")


def wait_ssh(name: str, port: int, *, timeout: float = 20.0) -> None:
    """Wait until the host's sshd answers with an SSH banner on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0) as sock:
                sock.settimeout(2.0)
                if sock.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise LabError(f"host {name}: sshd does not answer on 127.0.0.1:{port} after {timeout} s")


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        child = _CHILDREN.get(pid)
        if child is not None and child.poll() is not None:
            _CHILDREN.pop(pid, None)
            return True
        if not process_alive(pid):
            return True
        time.sleep(0.02)
    return False


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def stop_host(name: str, pid: int | None, root: Path, *, timeout: float = 10.0) -> None:
    """Stop a host by pid: TERM to its namespace's PID 1, then KILL as a fallback.

    A pid that is not (or no longer) our unshare for ``root`` is never signalled. The overlay
    stays mounted; the caller unmounts it.
    """
    bound = log.bind(host=name, pid=pid)
    if pid is None or not is_our_unshare(pid, root):
        if pid is not None and process_alive(pid):
            bound.warning("recorded pid is not this host's unshare; not signalling it")
        _CHILDREN.pop(pid or -1, None)
        return
    pid1 = find_pid1(pid, root)
    if pid1 is None:
        children = namespace_children(pid)
        pid1 = children[0] if children else None
    # GOTCHA: unshare --fork ignores TERM; PID 1 of the namespace handles it (lab-init traps it).
    if pid1 is not None:
        _signal(pid1, signal.SIGTERM)
        if _wait_gone(pid, timeout):
            bound.debug("host stopped")
            return
        bound.warning("host did not stop on TERM; killing it")
        _signal(pid1, signal.SIGKILL)
        if _wait_gone(pid, 3.0):
            return
    if is_our_unshare(pid, root):
        _signal(pid, signal.SIGKILL)  # --kill-child then TERMs the namespace's PID 1
    if not _wait_gone(pid, 5.0):
        raise LabError(f"host {name}: process {pid} did not exit after SIGKILL")


def unmount_root(paths: HostPaths) -> None:
    """Unmount the host's merged root (and anything left mounted below it)."""
    below = sorted(
        (m.mount_point for m in mounts() if Path(m.mount_point).is_relative_to(paths.root)),
        key=len,
        reverse=True,
    )
    for mount_point in dict.fromkeys(below):
        umount(Path(mount_point))


def nsenter_argv(pid1: int, argv: Sequence[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The command running ``argv`` as root inside the namespaces and chroot of ``pid1``."""
    environment = {**HOST_ENV, **(env or {})}
    return [
        "nsenter",
        f"--target={pid1}",
        "--mount",
        "--uts",
        "--ipc",
        "--pid",
        "--root",
        "--wd",
        "--",
        "/usr/bin/env",
        "-i",
        *(f"{k}={v}" for k, v in environment.items()),
        *argv,
    ]


def exec_in_host(
    name: str,
    pid: int | None,
    root: Path,
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as root inside a running host; the result is returned whatever the exit.

    Raises:
        LabError: the host is not running, or the command timed out.
    """
    if pid is None or not is_our_unshare(pid, root):
        raise LabError(f"host {name} is not running (start it with `patchpilot lab up`)")
    pid1 = find_pid1(pid, root)
    if pid1 is None:
        # Never nsenter a process that is not chrooted yet: the command would run on this
        # machine's own root filesystem.
        raise LabError(f"host {name}: PID 1 is not lab-init inside {root}")
    if not argv:
        raise LabError("empty command")
    return run(
        nsenter_argv(pid1, argv, env),
        check=False,
        input_text=input_text,
        timeout=timeout,
        env={"PATH": HOST_ENV["PATH"], "LANG": "C.UTF-8"},
        what=f"{argv[0]} in {name}",
    )


def ssh_accepting(port: int) -> bool:
    """True when the host's sshd port accepts TCP connections."""
    return tcp_accepting(port)

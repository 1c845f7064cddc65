"""Machine-level helpers of the lab: commands, root check, host tools, mounts, processes, probes.

Nothing here decides anything; :mod:`patchpilot.lab.lab` does. Processes are only ever
signalled by pid, after checking that the pid still is the process we started.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from patchpilot.core.errors import LabError

__all__ = [
    "NOT_ROOT_MESSAGE",
    "Mount",
    "dir_usage",
    "ensure_tools",
    "http_status",
    "is_mounted",
    "mounts",
    "namespace_children",
    "port_free",
    "process_alive",
    "process_cmdline",
    "process_state",
    "pss_kib_of_namespace",
    "require_root",
    "run",
    "tcp_accepting",
    "umount",
]

log = structlog.get_logger(__name__, agent="lab")  # lazy: bound after configure_logging()

NOT_ROOT_MESSAGE = (
    "patchpilot lab needs root (debootstrap, mounts and namespaces): run it with sudo"
)


def require_root() -> None:
    """Raise :class:`LabError` unless running as root."""
    if os.geteuid() != 0:
        raise LabError(NOT_ROOT_MESSAGE)


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 600,
    env: Mapping[str, str] | None = None,
    input_text: str | None = None,
    cwd: Path | None = None,
    what: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` (no shell), capture text output; a failure is a :class:`LabError`.

    Args:
        argv: the command.
        check: raise on a non-zero exit.
        timeout: seconds before the command is killed (then a :class:`LabError`).
        env: the complete environment (default: inherited).
        input_text: text fed to stdin (default: ``/dev/null``).
        cwd: working directory.
        what: a short description for the error message (default: the command).
    """
    label = what or " ".join(argv[:3])
    try:
        proc = subprocess.run(
            list(argv),
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            input=input_text,
            stdin=subprocess.DEVNULL if input_text is None else None,
            cwd=cwd,
        )
    except FileNotFoundError as exc:
        raise LabError(f"{label}: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{label}: timed out after {timeout} s") from exc
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-8:])
        raise LabError(f"{label} failed (exit {proc.returncode}): {tail or 'no output'}")
    return proc


def ensure_tools(tools: Mapping[str, str]) -> None:
    """Make sure each command of ``tools`` (command → Debian package) is installed.

    Missing ones are installed with ``apt-get install`` (logged); when that is impossible a
    :class:`LabError` names the packages to install by hand.
    """
    missing = {cmd: pkg for cmd, pkg in tools.items() if shutil.which(cmd) is None}
    if not missing:
        return
    packages = sorted(set(missing.values()))
    if shutil.which("apt-get") is None:
        raise LabError(
            f"missing host tools {', '.join(sorted(missing))} and no apt-get to install them: "
            f"install the packages {' '.join(packages)}"
        )
    log.info("lab.tools_installing", packages=packages)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = run(
        ["apt-get", "install", "-y", "--no-install-recommends", *packages],
        check=False,
        env=env,
        timeout=900,
    )
    if proc.returncode != 0:
        # The indices may be missing or stale (fresh machine): update once and retry.
        run(["apt-get", "update"], check=False, env=env, timeout=600)
        proc = run(
            ["apt-get", "install", "-y", "--no-install-recommends", *packages],
            check=False,
            env=env,
            timeout=900,
        )
    still = sorted(cmd for cmd in missing if shutil.which(cmd) is None)
    if proc.returncode != 0 or still:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise LabError(
            f"could not install {' '.join(packages)} with apt-get ({tail[0]}); "
            f"install them by hand (missing: {', '.join(still or sorted(missing))})"
        )
    log.info("lab.tools_installed", packages=packages)


# -- mounts ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    """One line of ``/proc/self/mountinfo``."""

    mount_point: str
    fstype: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    out: list[str] = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[Mount]:
    """Parse the text of a ``mountinfo`` file."""
    result: list[Mount] = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        sep = fields.index("-")
        if len(fields) < sep + 3 or len(fields) < 5:
            continue
        result.append(
            Mount(
                mount_point=_unescape(fields[4]),
                fstype=fields[sep + 1],
                source=_unescape(fields[sep + 2]),
                super_options=fields[sep + 3] if len(fields) > sep + 3 else "",
            )
        )
    return result


def mounts() -> list[Mount]:
    """The mounts of this process's mount namespace."""
    return parse_mountinfo(Path("/proc/self/mountinfo").read_text(encoding="utf-8"))


def is_mounted(path: Path) -> bool:
    """True when something is mounted exactly on ``path``."""
    target = str(path)
    return any(m.mount_point == target for m in mounts())


def umount(path: Path) -> None:
    """Unmount ``path`` (all stacked mounts); lazily as a last resort."""
    for _ in range(10):
        if not is_mounted(path):
            return
        proc = run(["umount", str(path)], check=False, timeout=60)
        if proc.returncode != 0 and "busy" in proc.stderr:
            log.warning("lab.mount_busy_lazy_detach", path=str(path))
            run(["umount", "-l", str(path)], check=False, timeout=60)
    if is_mounted(path):
        raise LabError(f"cannot unmount {path}: still mounted")


# -- processes ---------------------------------------------------------------------------


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` from ``/proc/PID/stat`` (``Z`` zombie), None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The comm field is in parentheses and may hold spaces: the state follows the last ')'.
    after = stat.rsplit(")", 1)[-1].split()
    return after[0] if after else None


def process_alive(pid: int) -> bool:
    """True when ``pid`` exists and is not a zombie (or dead)."""
    return process_state(pid) not in (None, "Z", "X", "x")


def process_cmdline(pid: int) -> list[str]:
    """The argv of ``pid`` (empty when gone)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def namespace_children(pid: int) -> list[int]:
    """The children of ``pid`` (for an ``unshare --fork``: the namespace's PID 1)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text(encoding="ascii")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return []
    return [int(part) for part in text.split()]


def pss_kib_of_namespace(pid1: int) -> int | None:
    """Summed PSS (KiB) of every process in the PID namespace of ``pid1``."""
    try:
        ns = os.readlink(f"/proc/{pid1}/ns/pid")
    except OSError:
        return None
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != ns:
                continue
            text = Path(f"/proc/{entry.name}/smaps_rollup").read_text(encoding="ascii")
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Pss:"):
                total += int(line.split()[1])
                break
    return total


# -- probes --------------------------------------------------------------------------------


def tcp_accepting(port: int, address: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when ``address:port`` accepts a TCP connection."""
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int, address: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``address:port`` (a listener makes ``bind`` fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError:
            return False
    return True


def http_status(port: int, path: str = "/health", timeout: float = 2.0) -> int | None:
    """The HTTP status of ``GET http://127.0.0.1:port/path``, None when unreachable."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        with contextlib.suppress(OSError):
            conn.close()


def dir_usage(path: Path) -> int:
    """Disk bytes used under ``path`` (allocated blocks; hard links counted once)."""
    if not path.exists():
        return 0
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in (*dirs, *files):
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in seen:
                continue
            seen.add(key)
            total += st.st_blocks * 512
    return total

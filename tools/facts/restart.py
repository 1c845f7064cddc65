"""Which processes and services still run replaced code and need a restart after patching.

* :class:`NeedrestartBatch` -- ``needrestart -b`` (Debian/Ubuntu's ``needrestart``, batch mode,
  which never restarts anything): services, containers and sessions to restart, and the kernel
  and microcode status.
* :class:`DeletedLibraries` -- the fallback when needrestart is absent: processes mapping a
  deleted library or executable, from ``/proc/PID/maps``.
* :func:`restart_facts` -- probes for needrestart (:class:`NeedrestartAvailable`) and returns a
  :class:`RestartStatus` from whichever source is available.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar, Final, Literal

import structlog
from pydantic import Field

from patchpilot.core.errors import CommandFailedError, FactParseError
from patchpilot.core.models import CommandResult, DeletedLibraryUse, Record
from patchpilot.tools.facts.base import Fact, gather, stderr_tail

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = [
    "DELETED_LIBRARIES_SCRIPT",
    "LIBRARY_PREFIXES",
    "DeletedLibraries",
    "NeedrestartAvailable",
    "NeedrestartBatch",
    "NeedrestartReport",
    "RestartStatus",
    "restart_facts",
    "restart_status",
]

_log = structlog.get_logger(__name__)

# --------------------------------------------------------------------------- needrestart

_NR_LINE_RE: Final = re.compile(r"^NEEDRESTART-(?P<key>[A-Z]+):(?: (?P<value>.*?))?\s*$")
_NR_PID_RE: Final = re.compile(r"^(?P<comm>.*)=(?P<pids>\d+(?:,\d+)*)$")
_NR_SINGLE: Final = frozenset({"VER", "KCUR", "KEXP", "KSTA", "UCSTA", "UCCUR", "UCEXP"})
_KERNEL_STATUSES: Final = range(4)
_MICROCODE_STATUSES: Final = range(3)


class NeedrestartReport(Record):
    """What ``needrestart -b`` reported.

    ``kernel_status`` (``NEEDRESTART-KSTA``): 0 unknown or not detected (also inside a
    container), 1 no pending upgrade, 2 ABI-compatible upgrade pending, 3 version upgrade
    pending. ``microcode_status`` (``NEEDRESTART-UCSTA``): 0 unknown, 1 current, 2 obsolete.
    ``None`` when needrestart did not print the line (the check was skipped).
    """

    version: str = Field(description="needrestart's version (NEEDRESTART-VER)")
    services: tuple[str, ...] = Field(default=(), description="units to restart (SVC)")
    containers: tuple[str, ...] = Field(default=(), description="e.g. 'LXC web1' (CONT)")
    sessions: tuple[str, ...] = Field(
        default=(), description="'USER @ SESSION' running outdated binaries (SESS)"
    )
    processes: tuple[DeletedLibraryUse, ...] = Field(
        default=(), description="outdated processes (PID; printed in user mode only)"
    )
    kernel_status: int | None = Field(default=None, ge=0, le=3)
    kernel_current: str | None = None
    kernel_expected: str | None = None
    microcode_status: int | None = Field(default=None, ge=0, le=2)
    microcode_current: str | None = None
    microcode_expected: str | None = None


class NeedrestartBatch(Fact[NeedrestartReport]):
    """``needrestart -b``: services to restart and kernel/microcode status (apt-dater format).

    Batch mode never shows a dialog and never restarts anything; it exits 0 (1 for a usage
    error). It runs as root: as another user needrestart only checks that user's processes and
    prints ``NEEDRESTART-PID: COMM=PID[,PID...]`` lines instead of services. Output::

        NEEDRESTART-VER: 3.6
        NEEDRESTART-KCUR: 6.1.0-18-amd64
        NEEDRESTART-KEXP: 6.1.0-31-amd64
        NEEDRESTART-KSTA: 3
        NEEDRESTART-UCSTA: 1
        NEEDRESTART-UCCUR: 0x1000065
        NEEDRESTART-UCEXP: 0x1000065
        NEEDRESTART-SVC: ssh.service
        NEEDRESTART-CONT: LXC web1
        NEEDRESTART-SESS: alice @ session #3

    Returns:
        :class:`NeedrestartReport`, e.g. ``NeedrestartReport(version="3.6",
        services=("ssh.service",), kernel_status=3, kernel_current="6.1.0-18-amd64",
        kernel_expected="6.1.0-31-amd64", microcode_status=1, ...)``. Empty values (apt-dater
        prints ``NEEDRESTART-UCEXP: `` when unknown) become ``None``; duplicates are dropped.

    Raises:
        FactParseError: no ``NEEDRESTART-VER`` line (not needrestart batch output), a line
            that is not ``NEEDRESTART-KEY: value``, a repeated single-valued key, or a status
            that is not a known number.
        CommandFailedError: needrestart exited non-zero (absent: 127 from sudo/sh).
    """

    name: ClassVar[str] = "NeedrestartBatch"
    sudo: ClassVar[bool] = True

    def command(self) -> list[str]:
        """Return ``needrestart -b``."""
        return ["needrestart", "-b"]

    def parse(self, result: CommandResult) -> NeedrestartReport:
        """Parse the ``NEEDRESTART-*`` lines; see the class docstring."""
        self.check_result(result)
        single: dict[str, str | None] = {}
        lists: dict[str, list[str]] = {"SVC": [], "CONT": [], "SESS": []}
        processes: list[DeletedLibraryUse] = []
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if not line.strip():
                continue
            match = _NR_LINE_RE.match(line)
            if match is None:
                raise FactParseError(self.name, "not a NEEDRESTART-KEY: value line", line=line)
            key, value = match["key"], (match["value"] or "").strip() or None
            if key in _NR_SINGLE:
                if key in single:
                    raise FactParseError(self.name, f"NEEDRESTART-{key} repeats", line=line)
                single[key] = value
            elif key in lists:
                if value is not None and value not in lists[key]:
                    lists[key].append(value)
            elif key == "PID":
                processes.extend(self._pid_line(value, line))
            # Other keys: a newer needrestart's additions, ignored (apt-dater does the same).
        if "VER" not in single or single["VER"] is None:
            raise FactParseError(
                self.name,
                "no NEEDRESTART-VER line: not needrestart -b output" + stderr_tail(result),
            )
        return NeedrestartReport(
            version=single["VER"],
            services=tuple(lists["SVC"]),
            containers=tuple(lists["CONT"]),
            sessions=tuple(lists["SESS"]),
            processes=tuple(sorted(processes, key=lambda p: p.pid)),
            kernel_status=self._status(single.get("KSTA"), _KERNEL_STATUSES, "KSTA"),
            kernel_current=single.get("KCUR"),
            kernel_expected=single.get("KEXP"),
            microcode_status=self._status(single.get("UCSTA"), _MICROCODE_STATUSES, "UCSTA"),
            microcode_current=single.get("UCCUR"),
            microcode_expected=single.get("UCEXP"),
        )

    def _status(self, value: str | None, allowed: range, key: str) -> int | None:
        if value is None:
            return None
        if not value.isdigit() or int(value) not in allowed:
            raise FactParseError(self.name, f"NEEDRESTART-{key} is not one of {list(allowed)}")
        return int(value)

    def _pid_line(self, value: str | None, line: str) -> list[DeletedLibraryUse]:
        match = _NR_PID_RE.match(value or "")
        if match is None or not match["comm"]:
            raise FactParseError(self.name, "NEEDRESTART-PID is not COMM=PID[,PID...]", line=line)
        pids = sorted({int(pid) for pid in match["pids"].split(",")})
        if 0 in pids:
            raise FactParseError(self.name, "NEEDRESTART-PID lists pid 0", line=line)
        return [DeletedLibraryUse(pid=pid, command=match["comm"]) for pid in pids]


_PROBE_SCRIPT: Final = 'PATH="$PATH:/usr/sbin:/sbin"; command -v needrestart'


class NeedrestartAvailable(Fact[bool]):
    """Whether ``needrestart`` is installed (``command -v``, with ``/usr/sbin`` on the PATH).

    Runs without sudo: a non-root login's PATH often lacks ``/usr/sbin`` (where needrestart
    lives), so the constant script appends it first.

    Returns:
        ``True`` (exit 0, a path printed, e.g. ``/usr/sbin/needrestart``) or ``False``
        (nothing printed; exit 127 from dash, Debian's ``sh``, or 1 from bash).

    Raises:
        FactParseError: exit 0 without a path.
        CommandFailedError: any other exit status.
    """

    name: ClassVar[str] = "NeedrestartAvailable"
    ok_exit_codes: ClassVar[frozenset[int]] = frozenset({0, 1, 127})

    def command(self) -> list[str]:
        """Return ``sh -c`` with a constant ``command -v needrestart`` script."""
        return ["sh", "-c", _PROBE_SCRIPT]

    def parse(self, result: CommandResult) -> bool:
        """Exit 0 with a path: present; exit 1 or 127 with no output: absent."""
        self.check_result(result)
        path = result.stdout.strip()
        if result.exit_code != 0:
            if path:
                raise CommandFailedError(result.host, result.argv, result.exit_code, result.stderr)
            return False
        if not path.startswith("/") or "\n" in path:
            raise FactParseError(self.name, "command -v printed no path", line=path or None)
        return True


# --------------------------------------------------------------------------- /proc/PID/maps

LIBRARY_PREFIXES: Final = (
    "/usr/",
    "/lib/",
    "/lib32/",
    "/lib64/",
    "/libx32/",
    "/bin/",
    "/sbin/",
    "/opt/",
)
"""Deleted mappings count only under these prefixes: where packages install code. ``/tmp``,
``/var/tmp``, ``/run``, ``/dev/shm``, ``/home`` hold JIT caches and scratch copies that no package
update replaces, and ``/memfd:``, ``/SYSV...``, ``[heap]`` are not files at all."""

DELETED_LIBRARIES_SCRIPT: Final = (
    'echo "== maps"\n'
    "grep -H -F ' (deleted)' /proc/[0-9]*/maps 2>/dev/null\n"
    'echo "== comm"\n'
    'for p in /proc/[0-9]*; do read -r c 2>/dev/null <"$p/comm" && '
    'printf \'%s %s\\n\' "${p#/proc/}" "$c"; done\n'
    "exit 0\n"
)
"""The constant script :class:`DeletedLibraries` runs with ``sh -c``."""

_MAPS_RE: Final = re.compile(
    r"^/proc/(?P<pid>\d+)/maps:[0-9a-f]+-[0-9a-f]+ (?P<perms>[-rwxsp]{4}) [0-9a-f]+ "
    r"[0-9a-f]+:[0-9a-f]+ (?P<inode>\d+) +(?P<path>.*)$"
)
_DELETED: Final = " (deleted)"
_COMM_RE: Final = re.compile(r"^(?P<pid>\d+) (?P<comm>.*)$")
_RPM_TEMP_SUFFIX_RE: Final = re.compile(r";[0-9a-f]{8,}$")


class DeletedLibraries(Fact[list[DeletedLibraryUse]]):
    """Processes still running a deleted (replaced) library or executable, from ``/proc``.

    Runs ``sh -c`` with the constant :data:`DELETED_LIBRARIES_SCRIPT` as root: one
    ``grep -H -F ' (deleted)'`` over every ``/proc/PID/maps`` (one process, whatever the number
    of PIDs), then ``PID COMM`` for every process. Like needrestart, a file counts only when
    mapped executable (``x`` permission) and with a non-zero inode, and only under
    :data:`LIBRARY_PREFIXES`. rpm's temporary ``;<hex>`` suffix is removed from the name.
    A process that exits mid-scan (maps read, comm gone) is dropped; unreadable entries are
    skipped, so without root the list is partial.

    Returns:
        ``list[DeletedLibraryUse]`` sorted by pid (``service`` is ``None``), possibly empty.
        Example: ``DeletedLibraryUse(pid=812, command="sshd",
        libraries=("/usr/lib/x86_64-linux-gnu/libcrypto.so.3",))``.

    Raises:
        FactParseError: the section markers are missing, or a line of either section does not
            parse.
        CommandFailedError: the shell failed (e.g. ``sudo -n`` refused).
    """

    name: ClassVar[str] = "DeletedLibraries"
    sudo: ClassVar[bool] = True

    def command(self) -> list[str]:
        """Return ``sh -c`` with the constant :data:`DELETED_LIBRARIES_SCRIPT`."""
        return ["sh", "-c", DELETED_LIBRARIES_SCRIPT]

    def parse(self, result: CommandResult) -> list[DeletedLibraryUse]:
        """Parse the two sections; see the class docstring."""
        self.check_result(result)
        section: str | None = None
        seen: set[str] = set()
        libraries: dict[int, set[str]] = {}
        comms: dict[int, str] = {}
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if line in ("== maps", "== comm"):
                if line in seen:
                    raise FactParseError(self.name, "section repeats", line=line)
                section = line[3:]
                seen.add(line)
            elif not line.strip():
                continue
            elif section == "maps":
                match = _MAPS_RE.match(line)
                if match is None:
                    raise FactParseError(self.name, "malformed maps line", line=line)
                path, deleted, rest = match["path"].rpartition(_DELETED)
                if not deleted or rest:
                    continue  # " (deleted)" inside the name of a file that is still there
                path = _RPM_TEMP_SUFFIX_RE.sub("", path)
                if "x" in match["perms"] and match["inode"] != "0" and _is_library(path):
                    libraries.setdefault(int(match["pid"]), set()).add(path)
            elif section == "comm":
                found = _COMM_RE.match(line)
                if found is None:
                    raise FactParseError(self.name, "malformed 'PID COMM' line", line=line)
                comms[int(found["pid"])] = found["comm"].strip()
            else:
                raise FactParseError(self.name, "output before the first section", line=line)
        if seen != {"== maps", "== comm"}:
            raise FactParseError(
                self.name, "missing '== maps' / '== comm' markers" + stderr_tail(result)
            )
        return [
            DeletedLibraryUse(pid=pid, command=comms[pid], libraries=tuple(sorted(paths)))
            for pid, paths in sorted(libraries.items())
            if pid in comms and pid > 0
        ]


def _is_library(path: str) -> bool:
    return path.startswith(LIBRARY_PREFIXES) and "/../" not in path


# --------------------------------------------------------------------------- restart_facts


class RestartStatus(Record):
    """What needs a restart on a host, from needrestart or from ``/proc`` maps.

    ``source`` says which: with ``"needrestart"``, ``services`` holds the units needrestart
    would restart and ``users`` only the per-process lines needrestart prints in user mode
    (usually empty: needrestart's batch output has no pids for services); with
    ``"proc-maps"``, ``users`` holds every process mapping a deleted library and ``services``
    is empty (no service lookup). ``kernel_status`` is needrestart's ``KSTA`` (0 unknown,
    1 current, 2 ABI-compatible upgrade pending, 3 version upgrade pending), ``None`` from
    ``/proc``.
    """

    users: tuple[DeletedLibraryUse, ...] = ()
    services: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    sessions: tuple[str, ...] = ()
    source: Literal["needrestart", "proc-maps"]
    kernel_status: int | None = Field(default=None, ge=0, le=3)

    @property
    def restart_needed(self) -> bool:
        """True when any process, service, container or session needs a restart."""
        return bool(self.users or self.services or self.containers or self.sessions)


def restart_facts(transport: Transport) -> RestartStatus:
    """Collect :class:`RestartStatus`: needrestart when installed, else ``/proc`` maps.

    Runs :class:`NeedrestartAvailable` (no sudo), then :class:`NeedrestartBatch` or
    :class:`DeletedLibraries` (both with sudo unless the transport is root).

    Args:
        transport: the host.

    Returns:
        The status, e.g. ``RestartStatus(services=("ssh.service",), source="needrestart",
        kernel_status=1)`` or ``RestartStatus(users=(DeletedLibraryUse(pid=812,
        command="sshd", libraries=(...)),), source="proc-maps")``.

    Raises:
        FactParseError: a command's output does not parse.
        CommandFailedError: a command failed (e.g. ``sudo -n`` needs a password).
        TransportError: the transport could not run a command.
    """
    if gather(transport, NeedrestartAvailable()):
        return restart_status(gather(transport, NeedrestartBatch()))
    return restart_status(gather(transport, DeletedLibraries()))


def restart_status(found: NeedrestartReport | Sequence[DeletedLibraryUse]) -> RestartStatus:
    """The :class:`RestartStatus` of a :class:`NeedrestartBatch` report or of the processes
    :class:`DeletedLibraries` found (for callers that gather the facts themselves, e.g. in one
    batch with :func:`~patchpilot.tools.facts.base.gather_many`)."""
    if isinstance(found, NeedrestartReport):
        _log.debug("facts.restart", source="needrestart", services=len(found.services))
        return RestartStatus(
            users=found.processes,
            services=found.services,
            containers=found.containers,
            sessions=found.sessions,
            source="needrestart",
            kernel_status=found.kernel_status,
        )
    _log.debug("facts.restart", source="proc-maps", processes=len(found))
    return RestartStatus(users=tuple(found), source="proc-maps")

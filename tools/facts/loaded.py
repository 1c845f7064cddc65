"""Which installed packages running processes have loaded: the "reachable" signal of a finding.

A vulnerable library matters most when a process that accepts connections has it mapped. The
listening-socket fact (:class:`~patchpilot.tools.facts.services.ListeningSockets`) knows the
listening processes' pids; :class:`MappedPackages` then reads, in **one** round trip (as root:
other processes' ``maps`` are private):

1. ``PID COMM`` of each listening pid;
2. for each listening pid, the files it maps *executable* (``/proc/PID/maps`` rows with ``x``
   permission and a non-zero inode: shared libraries and the program itself; data files such as
   locale archives are not code), plus the absolute paths on its command line (the script an
   interpreter runs: ``python3.11 /usr/lib/acme-web/server.py``);
3. the union of the same for every other process, joined with dpkg's file lists
   (``grep -F -x`` over ``/var/lib/dpkg/info/*.list``): ``LISTFILE:PATH`` for every owned file.

The parser joins 2 and 3 on the controller: each listening process gets the packages that own
a file it maps, and ``running`` is every package any process maps (a library loaded by a running
process needs that process restarted after the update).

Paths are matched as the kernel prints them and, for ``/usr/...``, also without the ``/usr``
prefix: on a merged-``/usr`` system (Debian 12) ``libc.so.6`` maps as
``/usr/lib/x86_64-linux-gnu/libc.so.6`` while ``libc6`` lists ``/lib/x86_64-linux-gnu/libc.so.6``.
A mapping of a replaced file (``... (deleted)``) counts under its path (its package's new version
owns it). The script leaves out its own ancestors (``sudo``, the login session: they exist only
because patchpilot logged in) and never sees its own pipeline (the process list is taken before
it starts), except a listening process, which is always kept.

Debian family only (dpkg's file lists). Limits: interpreted code is not *mapped*: the
interpreter, its native extensions and the script named on the command line count, modules it
imports (``python3-requests``) do not; a path that is merely an argument (``less
/usr/share/doc/x/README``) counts as loaded; a process that exits mid-scan is skipped; without
root the lists are partial.

Commands needed on the host: ``sh``, ``sed``, ``sort``, ``grep``, ``tr``, ``cat`` (all
Essential on Debian).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import ClassVar, Final

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import CommandResult, LoadedPackages, ProcessPackages
from patchpilot.tools.facts.base import Fact, stderr_tail

__all__ = ["LOADED_PACKAGES_SCRIPT", "MappedPackages", "owners_of", "parse_owner_line"]

LOADED_PACKAGES_SCRIPT: Final = r"""[ -d /var/lib/dpkg/info ] || {
  echo "patchpilot: no dpkg database (/var/lib/dpkg/info): not a Debian-family host" >&2
  exit 3
}
L=" $* "
x='s@^[0-9a-f]*-[0-9a-f]* [-r][-w]x[-sp] [0-9a-f]* [0-9a-f]*:[0-9a-f]* [1-9][0-9]* *\(/.*\)$@\1@p'
pp() { set -- $1; P=$2; }
a=" "
q=$$
while [ -n "$q" ] && [ "$q" -gt 1 ] && read -r s 2>/dev/null <"/proc/$q/stat"; do
  a="$a$q "
  pp "${s##*) }"
  q=$P
done
echo "== comm"
for p in $L; do read -r c 2>/dev/null <"/proc/$p/comm" && printf '%s %s\n' "$p" "$c"; done
for p in $L; do
  echo "== pid $p"
  {
    sed -n "$x" "/proc/$p/maps" 2>/dev/null | sed 's@ (deleted)$@@'
    tr '\0' '\n' <"/proc/$p/cmdline" 2>/dev/null | grep '^/'
  } | sort -u
done
m=""
c=""
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  case "$a" in *" $p "*) case "$L" in *" $p "*) ;; *) continue ;; esac ;; esac
  m="$m $d/maps"
  c="$c $d/cmdline"
done
echo "== owners"
[ -z "$m" ] || {
  sed -n "$x" $m 2>/dev/null | sed 's@ (deleted)$@@'
  cat $c 2>/dev/null | tr '\0' '\n' | grep '^/'
} | sort -u | sed -e p -e 's@^/usr/@/@' | grep -H -F -x -f - /var/lib/dpkg/info/*.list 2>/dev/null
exit 0
"""
"""The constant script :class:`MappedPackages` runs as ``sh -c SCRIPT sh PID...``."""

_DPKG_NAME: Final = r"[a-z0-9][a-z0-9+.-]*"
_OWNER_RE: Final = re.compile(
    rf"^/var/lib/dpkg/info/(?P<package>{_DPKG_NAME})(?::(?P<arch>[a-z0-9-]+))?\.list:"
    r"(?P<path>/.*)$"
)
_COMM_RE: Final = re.compile(r"^(?P<pid>\d+) (?P<comm>.*)$")
_PID_SECTION_RE: Final = re.compile(r"^== pid (?P<pid>\d+)$")
_EXIT_NO_DPKG: Final = 3


def parse_owner_line(line: str) -> tuple[str, str] | None:
    """``/var/lib/dpkg/info/libssl3:amd64.list:/usr/lib/.../libssl.so.3`` -> (package, path).

    >>> parse_owner_line("/var/lib/dpkg/info/libc6:amd64.list:/lib/x86_64-linux-gnu/libc.so.6")
    ('libc6', '/lib/x86_64-linux-gnu/libc.so.6')
    >>> parse_owner_line("garbage") is None
    True
    """
    match = _OWNER_RE.match(line)
    if match is None:
        return None
    return match["package"], match["path"]


def owners_of(path: str, owners: Mapping[str, frozenset[str]]) -> frozenset[str]:
    """The packages owning a mapped ``path``, trying it as printed and without ``/usr``.

    >>> owners_of("/usr/lib/x86_64-linux-gnu/libc.so.6",
    ...           {"/lib/x86_64-linux-gnu/libc.so.6": frozenset({"libc6"})})
    frozenset({'libc6'})
    """
    found = owners.get(path, frozenset())
    if path.startswith("/usr/"):
        found = found | owners.get(path[4:], frozenset())
    return found


class MappedPackages(Fact[LoadedPackages]):
    """The packages whose code the listening processes (``pids``), and all processes, map.

    Runs ``sh -c`` with the constant :data:`LOADED_PACKAGES_SCRIPT` as root, the pids as
    positional parameters (integers, validated here). See the module docstring.

    Args:
        pids: the listening processes (from :class:`ListeningSockets`); may be empty (then only
            ``running`` is collected).

    Returns:
        :class:`~patchpilot.core.models.LoadedPackages`, e.g. ``LoadedPackages(listening=(
        ProcessPackages(pid=812, command="sshd", packages=("libc6", "libssl3",
        "openssh-server", ...)),), running=("cron", "libc6", "libssl3", ...))``. A listening pid
        that exited before it was read is left out.

    Raises:
        ValueError: a pid is not a positive integer.
        FactParseError: a section is missing or repeats, a line does not parse.
        CommandFailedError: the script failed (exit 3: no dpkg database; ``sudo -n`` refused).
    """

    name: ClassVar[str] = "MappedPackages"
    sudo: ClassVar[bool] = True

    def __init__(self, pids: Iterable[int] = ()) -> None:
        checked: set[int] = set()
        for pid in pids:
            if isinstance(pid, bool) or not isinstance(pid, int) or pid < 1:
                raise ValueError(f"not a process id: {pid!r}")
            checked.add(pid)
        self.pids: tuple[int, ...] = tuple(sorted(checked))

    def command(self) -> list[str]:
        """``["sh", "-c", LOADED_PACKAGES_SCRIPT, "sh", PID, ...]``."""
        return ["sh", "-c", LOADED_PACKAGES_SCRIPT, "sh", *map(str, self.pids)]

    def parse(self, result: CommandResult) -> LoadedPackages:
        """Parse the sections and join the mapped paths with their owners."""
        self.check_result(result)
        comms: dict[int, str] = {}
        mapped: dict[int, list[str]] = {}
        owners: dict[str, set[str]] = {}
        section: str | None = None
        current: list[str] | None = None
        seen: set[str] = set()
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if line.startswith("== "):
                key = line
                pid_match = _PID_SECTION_RE.match(line)
                if line not in ("== comm", "== owners") and pid_match is None:
                    raise FactParseError(self.name, "unknown section", line=line)
                if key in seen:
                    raise FactParseError(self.name, "section repeats", line=line)
                seen.add(key)
                section = "pid" if pid_match else line[3:]
                current = mapped.setdefault(int(pid_match["pid"]), []) if pid_match else None
                continue
            if not line.strip():
                continue
            if section is None:
                raise FactParseError(self.name, "output before the first section", line=line)
            if section == "comm":
                found = _COMM_RE.match(line)
                if found is None:
                    raise FactParseError(self.name, "malformed 'PID COMM' line", line=line)
                comms[int(found["pid"])] = found["comm"].strip()
            elif section == "pid":
                if not line.startswith("/"):
                    raise FactParseError(self.name, "a mapped path is not absolute", line=line)
                assert current is not None
                current.append(line)
            else:
                owner = parse_owner_line(line)
                if owner is None:
                    raise FactParseError(self.name, "malformed 'LIST:PATH' owner line", line=line)
                owners.setdefault(owner[1], set()).add(owner[0])
        missing = [s for s in ("== comm", "== owners") if s not in seen]
        if missing:
            raise FactParseError(
                self.name, f"missing section(s) {', '.join(missing)}" + stderr_tail(result)
            )
        frozen = {path: frozenset(names) for path, names in owners.items()}
        listening = tuple(
            ProcessPackages(
                pid=pid,
                command=comms[pid],
                packages=tuple(
                    sorted({name for path in paths for name in owners_of(path, frozen)})
                ),
            )
            for pid, paths in sorted(mapped.items())
            if pid in comms
        )
        running = tuple(sorted({name for names in frozen.values() for name in names}))
        return LoadedPackages(listening=listening, running=running)

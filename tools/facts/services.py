"""Sockets a host listens on (TCP) or is bound to (UDP), read straight from ``/proc``.

Minimal hosts (``debootstrap --variant=minbase``, containers, Alpine) have neither ``ss``
(iproute2) nor ``netstat``, so :class:`ListeningSockets` runs a constant POSIX ``sh`` script
that only needs ``cat``, ``ls`` and ``grep``:

1. ``/proc/net/tcp``, ``tcp6``, ``udp``, ``udp6`` (one section each; the v6 ones are empty when
   IPv6 is disabled);
2. ``PID COMM`` for every process (``read`` is a shell builtin: no process per PID);
3. ``ls -l /proc/[0-9]*/fd`` filtered to the ``/proc/PID/fd:`` headers and the
   ``N -> socket:[INODE]`` links, which map a socket inode to its owners.

The sockets of ``/proc/net`` are those of the network namespace the command runs in; other
processes' ``fd`` directories are readable only by root, so the fact runs with ``sudo``. An
entry that cannot be read (a process that exited mid-scan, no permission) is skipped: its
sockets are still listed, with ``process``/``pid`` ``None``.

Addresses are the kernel's ``%08X`` / ``%08X%08X%08X%08X`` of the in-memory (network-order)
address: on a little-endian CPU (x86-64, arm64, ppc64le, riscv64) each 32-bit word reads
byte-reversed (``0100007F`` is ``127.0.0.1``). Big-endian hosts (s390x) are not supported.
"""

from __future__ import annotations

import ipaddress
import re
from typing import ClassVar, Final, Literal

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import CommandResult, ListeningSocket
from patchpilot.tools.facts.base import Fact, stderr_tail

__all__ = ["ListeningSockets", "decode_proc_net_address"]

LISTEN_SCRIPT: Final = (
    'for f in tcp tcp6 udp udp6; do echo "== /proc/net/$f"; cat "/proc/net/$f" 2>/dev/null; '
    "done\n"
    'echo "== comm"\n'
    'for p in /proc/[0-9]*; do read -r c 2>/dev/null <"$p/comm" && '
    'printf \'%s %s\\n\' "${p#/proc/}" "$c"; done\n'
    'echo "== fd"\n'
    "ls -l /proc/[0-9]*/fd 2>/dev/null | grep -e '^/proc/' -e ' -> socket:'\n"
    "exit 0\n"
)
"""The constant script :class:`ListeningSockets` runs with ``sh -c``."""

_NET_SECTIONS: Final[dict[str, tuple[Literal["tcp", "udp"], int]]] = {
    "/proc/net/tcp": ("tcp", 4),
    "/proc/net/tcp6": ("tcp", 6),
    "/proc/net/udp": ("udp", 4),
    "/proc/net/udp6": ("udp", 6),
}
_REQUIRED_SECTIONS: Final = ("/proc/net/tcp", "/proc/net/udp", "comm", "fd")
_TCP_LISTEN: Final = "0A"
_UDP_UNCONNECTED: Final = "07"
_ROW_RE: Final = re.compile(
    r"^\s*\d+: (?P<laddr>[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):(?P<lport>[0-9A-Fa-f]{4}) "
    r"(?:[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):[0-9A-Fa-f]{4} (?P<state>[0-9A-Fa-f]{2}) "
    r"[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8} [0-9A-Fa-f]{2}:[0-9A-Fa-f]{8} [0-9A-Fa-f]{8}\s+\d+\s+\d+\s+"
    r"(?P<inode>\d+)(?:\s.*)?$"
)
_HEADER_RE: Final = re.compile(r"^\s*sl\s+local_address\s")
_HEX_ADDRESS_RE: Final = re.compile(r"[0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}")
_COMM_RE: Final = re.compile(r"^(?P<pid>\d+) (?P<comm>.*)$")
_FD_DIR_RE: Final = re.compile(r"^/proc/(?P<pid>\d+)/fd:$")
_FD_SOCKET_RE: Final = re.compile(r" -> socket:\[(?P<inode>\d+)\]$")


def decode_proc_net_address(hex_address: str) -> str:
    """Decode a ``/proc/net/{tcp,udp}[6]`` address (little-endian host) to its text form.

    Args:
        hex_address: 8 hex digits (IPv4) or 32 (IPv6, four little-endian 32-bit words).

    Returns:
        ``"0.0.0.0"``, ``"127.0.0.1"``, ``"::"``, ``"::1"``; a v4-mapped IPv6 address is
        written ``"::ffff:127.0.0.1"``.

    Raises:
        ValueError: not 8 or 32 hex digits.
    """
    if not _HEX_ADDRESS_RE.fullmatch(hex_address):
        raise ValueError(f"not a /proc/net address: {hex_address!r}")
    raw = bytes.fromhex(hex_address)
    network_order = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(network_order) == 4:
        return str(ipaddress.IPv4Address(network_order))
    address = ipaddress.IPv6Address(network_order)
    if address.ipv4_mapped is not None:
        return f"::ffff:{address.ipv4_mapped}"
    return str(address)


class ListeningSockets(Fact[list[ListeningSocket]]):
    """Listening TCP sockets and bound, unconnected UDP sockets, with their owning process.

    Runs ``sh -c`` with the constant :data:`LISTEN_SCRIPT` (see the module docstring) as root.
    TCP rows in state ``0A`` (LISTEN) and UDP rows in state ``07`` (unconnected, i.e. bound and
    receiving from anyone) are kept; connected sockets are not services. When several processes
    share a socket (a forking server: master and workers) the lowest PID is reported. Rows are
    deduplicated on ``(protocol, address, port)`` (``SO_REUSEPORT`` groups), keeping one with a
    known process, and sorted by protocol, port and address.

    Returns:
        ``list[ListeningSocket]``, possibly empty. Example:
        ``ListeningSocket(protocol="tcp", address="0.0.0.0", port=22, process="sshd", pid=612)``,
        ``ListeningSocket(protocol="udp", address="::", port=5353, process=None, pid=None)``.

    Raises:
        FactParseError: a section is missing (``/proc/net/tcp`` and ``udp`` must at least print
            their header), an unknown section appears, or a socket row does not parse.
        CommandFailedError: the shell failed (e.g. ``sudo -n`` refused).
    """

    name: ClassVar[str] = "ListeningSockets"
    sudo: ClassVar[bool] = True

    def command(self) -> list[str]:
        """Return ``sh -c`` with the constant :data:`LISTEN_SCRIPT`."""
        return ["sh", "-c", LISTEN_SCRIPT]

    def parse(self, result: CommandResult) -> list[ListeningSocket]:
        """Parse the sections; see the class docstring."""
        self.check_result(result)
        sections: dict[str, list[str]] = {}
        current: list[str] | None = None
        for raw in result.stdout.split("\n"):
            line = raw.removesuffix("\r")
            if line.startswith("== "):
                name = line[3:].strip()
                if name not in _NET_SECTIONS and name not in ("comm", "fd"):
                    raise FactParseError(self.name, "unknown section", line=line)
                if name in sections:
                    raise FactParseError(self.name, "section repeats", line=line)
                current = sections[name] = []
            elif line.strip():
                if current is None:
                    raise FactParseError(self.name, "output before the first section", line=line)
                current.append(line)
        missing = [name for name in _REQUIRED_SECTIONS if name not in sections]
        if missing:
            raise FactParseError(
                self.name, f"missing section(s) {', '.join(missing)}" + stderr_tail(result)
            )
        owners = self._owners(sections["comm"], sections["fd"])
        found: dict[tuple[str, str, int], ListeningSocket] = {}
        for section, (protocol, family) in _NET_SECTIONS.items():
            lines = sections.get(section, [])
            if section in ("/proc/net/tcp", "/proc/net/udp") and not (
                lines and _HEADER_RE.match(lines[0])
            ):
                raise FactParseError(self.name, f"{section} has no header line")
            for line in lines:
                if _HEADER_RE.match(line):
                    continue
                socket = self._row(line, protocol, family, owners)
                if socket is None:
                    continue
                key = (socket.protocol, socket.address, socket.port)
                if key not in found or (found[key].pid is None and socket.pid is not None):
                    found[key] = socket
        return sorted(found.values(), key=lambda s: (s.protocol, s.port, s.address))

    def _row(
        self,
        line: str,
        protocol: Literal["tcp", "udp"],
        family: int,
        owners: dict[int, tuple[int, str]],
    ) -> ListeningSocket | None:
        match = _ROW_RE.match(line)
        if match is None or len(match["laddr"]) != (8 if family == 4 else 32):
            raise FactParseError(self.name, f"malformed {protocol}{family} row", line=line)
        wanted = _TCP_LISTEN if protocol == "tcp" else _UDP_UNCONNECTED
        if match["state"].upper() != wanted:
            return None
        owner = owners.get(int(match["inode"]))
        return ListeningSocket(
            protocol=protocol,
            address=decode_proc_net_address(match["laddr"]),
            port=int(match["lport"], 16),
            process=(owner[1] or None) if owner else None,
            pid=owner[0] if owner else None,
        )

    def _owners(self, comm_lines: list[str], fd_lines: list[str]) -> dict[int, tuple[int, str]]:
        """Map socket inode -> (lowest owning pid, its comm); unreadable entries are skipped."""
        comms: dict[int, str] = {}
        for line in comm_lines:
            match = _COMM_RE.match(line)
            if match is None:
                raise FactParseError(self.name, "malformed 'PID COMM' line", line=line)
            comms[int(match["pid"])] = match["comm"].strip()
        owners: dict[int, tuple[int, str]] = {}
        pid: int | None = None
        for line in fd_lines:
            if (header := _FD_DIR_RE.match(line)) is not None:
                pid = int(header["pid"])
            elif (link := _FD_SOCKET_RE.search(line)) is not None and pid is not None:
                # Inodes 0 are sockets being torn down; a pid whose comm vanished has exited.
                inode = int(link["inode"])
                if inode == 0 or pid not in comms:
                    continue
                if inode not in owners or pid < owners[inode][0]:
                    owners[inode] = (pid, comms[pid])
        return owners

"""ListeningSockets: the /proc/net parser (fixtures also run in test_facts_fixtures)."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchpilot.core.errors import FactParseError
from patchpilot.core.models import CommandResult
from patchpilot.tools.facts import ListeningSockets, decode_proc_net_address
from patchpilot.tools.facts.services import LISTEN_SCRIPT

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facts" / "ListeningSockets"


def _result(stdout: str, exit_code: int = 0) -> CommandResult:
    return CommandResult(
        host="t",
        argv=tuple(ListeningSockets().command()),
        exit_code=exit_code,
        stdout=stdout,
        stderr="",
    )


def test_command_is_a_constant_root_script_without_ss_or_netstat() -> None:
    argv = ListeningSockets().command()
    assert argv == ["sh", "-c", LISTEN_SCRIPT]
    assert ListeningSockets.sudo is True
    assert "ss " not in LISTEN_SCRIPT
    assert "netstat" not in LISTEN_SCRIPT
    assert LISTEN_SCRIPT.rstrip().endswith("exit 0")


@pytest.mark.parametrize(
    ("hex_address", "text"),
    [
        ("00000000", "0.0.0.0"),
        ("0100007F", "127.0.0.1"),
        ("3500007F", "127.0.0.53"),
        ("0A00000A", "10.0.0.10"),
        ("0" * 32, "::"),
        ("00000000000000000000000001000000", "::1"),
        ("0000000000000000FFFF00000100007F", "::ffff:127.0.0.1"),
        ("B80D0120000000000000000001000000", "2001:db8::1"),
        ("000080FE00000000FF0F0002B55A9DFE", "fe80::200:fff:fe9d:5ab5"),
    ],
)
def test_decode_proc_net_address(hex_address: str, text: str) -> None:
    assert decode_proc_net_address(hex_address) == text


@given(packed=st.binary(min_size=4, max_size=4))
def test_decode_ipv4_matches_the_kernels_little_endian_format(packed: bytes) -> None:
    # The kernel prints the in-memory (network-order) __be32 as a native integer with %08X.
    (native,) = struct.unpack("<I", packed)
    assert decode_proc_net_address(f"{native:08X}") == socket.inet_ntoa(packed)


@given(packed=st.binary(min_size=16, max_size=16))
def test_decode_ipv6_matches_the_kernels_little_endian_format(packed: bytes) -> None:
    words = struct.unpack("<4I", packed)
    text = decode_proc_net_address("".join(f"{w:08X}" for w in words))
    address = ipaddress.IPv6Address(packed)
    assert ipaddress.IPv6Address(text) == address


@pytest.mark.parametrize("bad", ["", "0100007", "0100007F00", "XYZ00000"])
def test_decode_refuses_other_lengths(bad: str) -> None:
    with pytest.raises(ValueError, match="not a /proc/net address"):
        decode_proc_net_address(bad)


def test_real_fixture_matches_ss_on_the_recording_machine() -> None:
    data = json.loads((FIXTURES / "debian12_vm_test_listeners.json").read_text("utf-8"))
    sockets = ListeningSockets().parse(_result(data["stdout"]))
    # ss -tuanp at recording time: LISTEN / UNCONN rows owned by the test process
    owned = {(s.protocol, s.address, s.port) for s in sockets if s.pid == 23210}
    assert owned == {
        ("tcp", "0.0.0.0", 18022),
        ("tcp", "127.0.0.1", 18080),
        ("tcp", "::1", 18081),
        ("tcp", "::", 18443),
        ("tcp", "::ffff:127.0.0.1", 18082),
        ("udp", "127.0.0.1", 15353),
        ("udp", "::", 15354),
        ("udp", "0.0.0.0", 56841),
    }
    # the established pair (18080 <-> 32888) and the connected udp socket are not listed
    assert not any(s.port in (32888, 59733) for s in sockets)


def test_shared_sockets_report_the_lowest_pid_and_reuseport_is_deduplicated() -> None:
    data = json.loads((FIXTURES / "synthetic_server.json").read_text("utf-8"))
    sockets = ListeningSockets().parse(_result(data["stdout"]))
    http = [s for s in sockets if s.port == 80]
    assert [(s.pid, s.process) for s in http] == [(900, "nginx")]
    assert len([s for s in sockets if s.port == 443]) == 1
    assert next(s for s in sockets if s.port == 8080).process == "Web Content"


def test_tolerates_unreadable_fd_entries_and_missing_ipv6() -> None:
    stdout = (
        "== /proc/net/tcp\n"
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
        "        0 99 1 0000000000000000 100 0 0 10 0\n"
        "== /proc/net/udp\n"
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode ref pointer drops\n"
        "== comm\n5 sshd\n"
        "== fd\n"
        "lrwx------ 1 root root 64 Jun  2 10:00 3 -> socket:[99]\n"  # no header: unattributed
        "/proc/5/fd:\n"
        "ls: weird line\n"
    )
    (sshd,) = ListeningSockets().parse(_result(stdout))
    assert (sshd.port, sshd.process, sshd.pid) == (22, None, None)


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "garbage\n== /proc/net/tcp\n",
        "== /proc/net/tcp\n== /proc/net/tcp\n",
        "== /proc/net/sctp\n",
        "== /proc/net/tcp\n== /proc/net/udp\n== comm\n== fd\n",  # no headers
        "== /proc/net/tcp\n  sl  local_address rem\n== /proc/net/udp\n  sl  local_address r\n"
        "== comm\nnot-a-pid line\n== fd\n",
    ],
)
def test_refuses_malformed_output(stdout: str) -> None:
    with pytest.raises(FactParseError):
        ListeningSockets().parse(_result(stdout))


_SECTION_LINES = st.sampled_from(
    [
        "== /proc/net/tcp",
        "== /proc/net/tcp6",
        "== /proc/net/udp",
        "== /proc/net/udp6",
        "== comm",
        "== fd",
        "  sl  local_address rem_address   st tx_queue",
        "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0"
        "        0 18235 1 0000000000000000 100 0 0 10 0",
        "   1: 00000000000000000000000001000000:1538 00000000000000000000000000000000:0000 07 "
        "00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0",
        "612 sshd",
        "/proc/612/fd:",
        "lrwx------ 1 root root 64 Jun  2 10:00 3 -> socket:[18235]",
        "lrwx------ 1 root root 64 Jun  2 10:00 4 -> socket:[77]",
        "x",
        "",
    ]
)


@given(
    stdout=st.one_of(st.text(max_size=300), st.lists(_SECTION_LINES, max_size=30).map("\n".join))
)
def test_parser_raises_only_fact_parse_error(stdout: str) -> None:
    try:
        sockets = ListeningSockets().parse(_result(stdout))
    except FactParseError:
        return
    keys = [(s.protocol, s.address, s.port) for s in sockets]
    assert len(keys) == len(set(keys))
    assert all(0 <= s.port <= 65535 for s in sockets)

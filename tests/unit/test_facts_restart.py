"""needrestart batch output, deleted-library scan and restart_facts (fixtures also run in
test_facts_fixtures)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchpilot.core.errors import CommandFailedError, FactParseError
from patchpilot.core.models import CommandResult, DeletedLibraryUse
from patchpilot.tools.facts import (
    DeletedLibraries,
    NeedrestartAvailable,
    NeedrestartBatch,
    RestartStatus,
    restart_facts,
)
from patchpilot.tools.facts.restart import DELETED_LIBRARIES_SCRIPT, LIBRARY_PREFIXES
from tests.fakes import ScriptedTransport


def _result(argv: list[str], stdout: str, exit_code: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(
        host="t", argv=tuple(argv), exit_code=exit_code, stdout=stdout, stderr=stderr
    )


# --------------------------------------------------------------------------- NeedrestartBatch


def test_needrestart_command() -> None:
    assert NeedrestartBatch().command() == ["needrestart", "-b"]
    assert NeedrestartBatch.sudo is True
    assert DeletedLibraries.sudo is True
    assert NeedrestartAvailable.sudo is False


def test_needrestart_empty_values_and_duplicates() -> None:
    stdout = (
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-UCSTA: 0\nNEEDRESTART-UCEXP: \n"
        "NEEDRESTART-SVC: ssh.service\nNEEDRESTART-SVC: ssh.service\nNEEDRESTART-FUTURE: x\n"
    )
    report = NeedrestartBatch().parse(_result(["needrestart", "-b"], stdout))
    assert report.services == ("ssh.service",)
    assert report.microcode_status == 0
    assert report.microcode_expected is None
    assert report.kernel_status is None  # the kernel check was not printed


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "NEEDRESTART-KSTA: 1\n",  # no VER
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-VER: 3.6\n",
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-KSTA: x\n",
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-UCSTA: 3\n",
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-PID: bash\n",
        "NEEDRESTART-VER: 3.6\nNEEDRESTART-PID: bash=0\n",
        "NEEDRESTART-VER: 3.6\nScanning processes...\n",
    ],
)
def test_needrestart_refuses_malformed_output(stdout: str) -> None:
    with pytest.raises(FactParseError):
        NeedrestartBatch().parse(_result(["needrestart", "-b"], stdout))


@given(st.text(max_size=200))
def test_needrestart_parser_raises_only_fact_parse_error(stdout: str) -> None:
    with contextlib.suppress(FactParseError):
        NeedrestartBatch().parse(_result(["needrestart", "-b"], stdout))


# --------------------------------------------------------------------------- NeedrestartAvailable


@pytest.mark.parametrize(
    ("exit_code", "stdout", "present"),
    [(0, "/usr/sbin/needrestart\n", True), (1, "", False), (127, "", False)],
)
def test_needrestart_available(exit_code: int, stdout: str, present: bool) -> None:
    fact = NeedrestartAvailable()
    assert fact.parse(_result(fact.command(), stdout, exit_code)) is present


@pytest.mark.parametrize(("exit_code", "stdout"), [(0, ""), (0, "needrestart\n"), (1, "/x\n")])
def test_needrestart_available_refuses_odd_results(exit_code: int, stdout: str) -> None:
    fact = NeedrestartAvailable()
    with pytest.raises((FactParseError, CommandFailedError)):
        fact.parse(_result(fact.command(), stdout, exit_code))


# --------------------------------------------------------------------------- DeletedLibraries


def _maps(pid: int, path: str, perms: str = "r-xp", inode: int = 4711) -> str:
    return f"/proc/{pid}/maps:7f0000000000-7f0000001000 {perms} 00001000 fe:01 {inode}    {path}"


def test_deleted_libraries_rules() -> None:
    stdout = "\n".join(
        [
            "== maps",
            _maps(10, "/usr/lib/libx.so.1 (deleted)"),
            _maps(10, "/usr/lib/libx.so.1 (deleted)", perms="r--p"),
            _maps(10, "/lib64/liby.so;5f2d9a1b (deleted)"),
            _maps(11, "/usr/lib/locale/locale-archive (deleted)", perms="r--p"),
            _maps(12, "/dev/shm/x (deleted)"),
            _maps(13, "/run/x.so (deleted)"),
            _maps(14, "/usr/lib/zero (deleted)", inode=0),
            _maps(15, "/usr/../tmp/x.so (deleted)"),
            _maps(16, "/opt/app/bin/app (deleted)"),
            "== comm",
            "10 nginx: worker",
            "11 a",
            "12 b",
            "13 c",
            "14 d",
            "15 e",
            "16 app",
        ]
    )
    users = DeletedLibraries().parse(_result(DeletedLibraries().command(), stdout))
    assert users == [
        DeletedLibraryUse(
            pid=10, command="nginx: worker", libraries=("/lib64/liby.so", "/usr/lib/libx.so.1")
        ),
        DeletedLibraryUse(pid=16, command="app", libraries=("/opt/app/bin/app",)),
    ]


def test_deleted_libraries_script_is_constant_and_reads_every_maps_once() -> None:
    assert DeletedLibraries().command() == ["sh", "-c", DELETED_LIBRARIES_SCRIPT]
    assert DELETED_LIBRARIES_SCRIPT.count("grep") == 1
    assert "/tmp/" not in LIBRARY_PREFIXES
    assert "/run/" not in LIBRARY_PREFIXES


_DL_LINES = st.one_of(
    st.sampled_from(["== maps", "== comm", "", "1 init", "42 x y", "garbage"]),
    st.builds(
        _maps,
        st.integers(min_value=0, max_value=99),
        st.sampled_from(
            ["/usr/lib/a.so (deleted)", "/tmp/b (deleted)", "/memfd:x (deleted)", "/usr/c"]
        ),
        st.sampled_from(["r-xp", "r--p", "rw-s"]),
        st.integers(min_value=0, max_value=3),
    ),
)


@given(stdout=st.one_of(st.text(max_size=200), st.lists(_DL_LINES, max_size=20).map("\n".join)))
def test_deleted_libraries_parser_raises_only_fact_parse_error(stdout: str) -> None:
    try:
        users = DeletedLibraries().parse(_result(DeletedLibraries().command(), stdout))
    except FactParseError:
        return
    assert [u.pid for u in users] == sorted({u.pid for u in users})
    assert all(
        u.libraries and all(p.startswith(LIBRARY_PREFIXES) for p in u.libraries) for u in users
    )


# --------------------------------------------------------------------------- restart_facts


def test_restart_facts_prefers_needrestart() -> None:
    def answer(argv: tuple[str, ...]) -> CommandResult:
        if argv == tuple(NeedrestartAvailable().command()):
            return _result(list(argv), "/usr/sbin/needrestart\n")
        assert argv == ("needrestart", "-b")
        return _result(
            list(argv),
            "NEEDRESTART-VER: 3.6\nNEEDRESTART-KSTA: 2\nNEEDRESTART-SVC: ssh.service\n"
            "NEEDRESTART-SESS: bob @ session #2\n",
        )

    transport = ScriptedTransport(answer)
    status = restart_facts(transport)
    assert status == RestartStatus(
        services=("ssh.service",),
        sessions=("bob @ session #2",),
        source="needrestart",
        kernel_status=2,
    )
    assert status.restart_needed
    assert len(transport.calls) == 2


def test_restart_facts_falls_back_to_proc_maps() -> None:
    def answer(argv: tuple[str, ...]) -> CommandResult:
        if argv == tuple(NeedrestartAvailable().command()):
            return _result(list(argv), "", 127)
        assert argv == tuple(DeletedLibraries().command())
        return _result(
            list(argv), "== maps\n" + _maps(7, "/usr/sbin/sshd (deleted)") + "\n== comm\n7 sshd\n"
        )

    status = restart_facts(ScriptedTransport(answer))
    assert status.source == "proc-maps"
    assert status.users == (
        DeletedLibraryUse(pid=7, command="sshd", libraries=("/usr/sbin/sshd",)),
    )
    assert status.services == ()
    assert status.kernel_status is None
    assert status.restart_needed


def test_restart_facts_nothing_to_restart() -> None:
    def answer(argv: tuple[str, ...]) -> CommandResult:
        if argv == tuple(NeedrestartAvailable().command()):
            return _result(list(argv), "", 1)
        return _result(list(argv), "== maps\n== comm\n1 init\n")

    status = restart_facts(ScriptedTransport(answer))
    assert status == RestartStatus(source="proc-maps")
    assert not status.restart_needed

"""LocalTransport: argv without a shell, timeouts, output caps, env and sudo handling."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from patchpilot.core.errors import CommandFailedError, CommandTimeoutError, UnsafeArgumentError
from patchpilot.core.models import CommandResult
from patchpilot.tools.transport import LocalTransport
from patchpilot.tools.transport.base import OutputBuffer
from patchpilot.tools.transport.local import SAFE_PATH, guardian_pid


@pytest.fixture
def local() -> LocalTransport:
    return LocalTransport("here", command_timeout=30)


class RecordingNonRoot(LocalTransport):
    """A local transport that pretends not to be root and records what it would run."""

    def __init__(self) -> None:
        super().__init__("nonroot")
        self.calls: list[tuple[tuple[str, ...], dict[str, str]]] = []

    @property
    def is_root(self) -> bool:
        return False

    def _execute(
        self,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        timeout: float | None,
        stdin: str | None,
    ) -> CommandResult:
        self.calls.append((argv, env))
        return CommandResult(host=self.name, argv=argv, exit_code=0, stdout="", stderr="")


def test_argv_is_not_interpreted_by_a_shell(local: LocalTransport) -> None:
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    hostile = [f"$(touch {marker})", f"`touch {marker}`", f"; touch {marker}", "*", "a'b\"c", "\n"]
    result = local.run(["printf", "%s\\0", *hostile], check=True)
    assert result.stdout.split("\0")[:-1] == hostile
    assert not marker.exists()


def test_result_fields(local: LocalTransport) -> None:
    result = local.run(["sh", "-c", "echo out; echo err >&2; exit 4"])
    assert result.host == "here"
    assert result.argv == ("sh", "-c", "echo out; echo err >&2; exit 4")
    assert (result.exit_code, result.stdout, result.stderr) == (4, "out\n", "err\n")
    assert not result.truncated
    assert result.duration_s >= 0


def test_check_raises_command_failed(local: LocalTransport) -> None:
    with pytest.raises(CommandFailedError) as info:
        local.run(["sh", "-c", "echo nope >&2; exit 1"], check=True)
    assert info.value.exit_code == 1
    assert "nope" in str(info.value)


def test_missing_command_is_127(local: LocalTransport) -> None:
    result = local.run(["patchpilot-no-such-command-xyz"])
    assert result.exit_code == 127
    assert "patchpilot-no-such-command-xyz" in result.stderr


def test_not_executable_is_126(local: LocalTransport, tmp_path: Path) -> None:
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)  # no x bit at all: exec fails with EACCES, even for root
    assert local.run([str(script)]).exit_code == 126


def test_timeout_kills_the_process_group(local: LocalTransport, tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    start = time.monotonic()
    with pytest.raises(CommandTimeoutError) as info:
        local.run(["sh", "-c", f"sleep 30 & echo $! > {pid_file}; wait"], timeout=0.5)
    assert time.monotonic() - start < 10
    assert "within 0.5s" in str(info.value)
    assert isinstance(info.value, TimeoutError)
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.05)
    assert not _alive(child), "the grandchild survived the timeout"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


def test_timeout_default_comes_from_the_transport() -> None:
    quick = LocalTransport(command_timeout=0.3)
    with pytest.raises(CommandTimeoutError):
        quick.run(["sleep", "5"])


def test_output_is_capped_per_stream() -> None:
    capped = LocalTransport(max_output_bytes=1024)
    result = capped.run(["head", "-c", "500000", "/dev/zero"], check=True)
    assert result.truncated
    assert len(result.stdout) == 1024
    result = capped.run(["sh", "-c", "head -c 5000 /dev/zero >&2; echo ok"], check=True)
    assert result.truncated
    assert len(result.stderr) == 1024
    assert result.stdout == "ok\n"
    assert not capped.run(["echo", "small"]).truncated


def test_invalid_utf8_is_replaced(local: LocalTransport) -> None:
    assert local.run(["printf", "a\\377b"]).stdout == "a\ufffdb"


def test_stdin_round_trip_and_large_volumes(local: LocalTransport) -> None:
    assert local.run(["cat"], stdin="héllo\n").stdout == "héllo\n"
    big = "".join(f"{i:08d}\n" for i in range(400_000))  # 3.6 MB: needs concurrent I/O
    result = local.run(["cat"], stdin=big)
    assert result.stdout == big


def test_stdin_not_read_by_the_command(local: LocalTransport) -> None:
    result = local.run(["true"], stdin="x" * 2_000_000)
    assert result.ok


def test_no_stdin_means_eof(local: LocalTransport) -> None:
    assert local.run(["cat"], timeout=5).stdout == ""


def test_minimal_environment(local: LocalTransport, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATCHPILOT_SECRET_TEST", "leak")
    env = dict(line.split("=", 1) for line in local.run(["env"], check=True).stdout.splitlines())
    assert env["LC_ALL"] == "C"
    assert env["PATH"] == SAFE_PATH
    assert "PATCHPILOT_SECRET_TEST" not in env
    result = local.run(["printenv", "PP_X"], env={"PP_X": "$(x) y"})
    assert result.stdout == "$(x) y\n"


@pytest.mark.parametrize("name", ["BAD-NAME", "1X", "A B", "", "X=Y", "É"])
def test_env_names_are_validated(local: LocalTransport, name: str) -> None:
    with pytest.raises(UnsafeArgumentError):
        local.run(["true"], env={name: "v"})


def test_env_value_with_nul_is_refused(local: LocalTransport) -> None:
    with pytest.raises(UnsafeArgumentError):
        local.run(["true"], env={"X": "a\0b"})


@pytest.mark.parametrize("argv", [[], "echo hi", ["echo", "a\0b"], ["echo", 3]])
def test_bad_argv_is_refused(local: LocalTransport, argv: object) -> None:
    with pytest.raises(UnsafeArgumentError):
        local.run(argv)  # type: ignore[arg-type]


def test_is_root_matches_euid(local: LocalTransport) -> None:
    assert local.is_root is (os.geteuid() == 0)


def test_sudo_prefix_when_not_root() -> None:
    t = RecordingNonRoot()
    t.run(["apt-get", "update"], sudo=True)
    t.run(["apt-get", "install", "-y", "x"], sudo=True, env={"DEBIAN_FRONTEND": "noninteractive"})
    t.run(["id", "-u"])
    assert t.calls == [
        (("sudo", "-n", "--", "env", "LC_ALL=C", "apt-get", "update"), {}),
        (
            (
                "sudo",
                "-n",
                "--",
                "env",
                "LC_ALL=C",
                "DEBIAN_FRONTEND=noninteractive",
                "apt-get",
                "install",
                "-y",
                "x",
            ),
            {},
        ),
        (("id", "-u"), {}),
    ]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root")
def test_no_sudo_prefix_when_root(local: LocalTransport) -> None:
    assert local.run(["id", "-u"], sudo=True).argv == ("id", "-u")


def test_context_manager(local: LocalTransport) -> None:
    with local as t:
        assert t.run(["true"]).ok


def test_output_buffer() -> None:
    buf = OutputBuffer(4)
    buf.feed(b"ab")
    assert not buf.truncated
    buf.feed(b"cdef")
    buf.feed(b"gh")
    assert buf.truncated
    assert buf.text() == "abcd"


_KILLED_PARENT = """
import sys
from patchpilot.tools.transport import LocalTransport

pid_file = sys.argv[1]
script = f"echo $$ > {pid_file}; sleep 300 & echo $! >> {pid_file}; wait"
LocalTransport("here").run(["sh", "-c", script], timeout=600)
"""


def test_kill_9_of_patchpilot_kills_the_command_and_its_children(tmp_path: Path) -> None:
    """kill -9 runs no Python code; the guardian still ends the command's process group."""
    pid_file = tmp_path / "pids"
    script = tmp_path / "parent.py"
    script.write_text(_KILLED_PARENT)
    repo = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, str(script), str(pid_file)],
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pid_file.exists() and len(pid_file.read_text().split()) == 2:
                break
            time.sleep(0.05)
        pids = [int(p) for p in pid_file.read_text().split()]
        assert len(pids) == 2
        assert all(_alive(pid) for pid in pids)
    finally:
        parent.kill()  # SIGKILL: no atexit, no finally, nothing of patchpilot runs
        parent.wait(timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids), "a child outlived patchpilot's kill -9"


def test_guardian_forgets_finished_commands(local: LocalTransport) -> None:
    assert local.run(["true"]).ok
    pid = guardian_pid()
    assert pid is not None
    assert _alive(pid)
    assert local.run(["true"]).ok
    assert guardian_pid() == pid  # one guardian per process

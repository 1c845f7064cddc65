"""``MappedPackages``: which packages listening and running processes have loaded.

The parser is pure (recorded and synthetic fixtures in tests/fixtures/facts/MappedPackages
too); discovery runs the fact in one more round trip with the listening pids, on scripted hosts
(:class:`tests.fakes.FakeDebianHost`). The script itself runs for real on the lab
(tests/integration/test_lab_discovery.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from patchpilot.agents.discovery import discover_host
from patchpilot.core.errors import CommandFailedError, FactParseError
from patchpilot.core.models import CommandResult, Host, LoadedPackages, ProcessPackages
from patchpilot.core.settings import DiscoverySettings, Settings
from patchpilot.tools.facts import MappedPackages
from patchpilot.tools.facts.loaded import LOADED_PACKAGES_SCRIPT, owners_of, parse_owner_line
from tests.fakes import FakeDebianHost, fleet_factory


def result(stdout: str, code: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(
        host="h", argv=("sh",), exit_code=code, stdout=stdout, stderr=stderr, truncated=False
    )


SSHD_OUTPUT = """== comm
812 sshd
== pid 812
/usr/lib/x86_64-linux-gnu/libc.so.6
/usr/lib/x86_64-linux-gnu/libcrypto.so.3
/usr/sbin/sshd
/opt/vendor/libunowned.so
== pid 4242
/usr/lib/x86_64-linux-gnu/libc.so.6
== owners
/var/lib/dpkg/info/cron.list:/usr/sbin/cron
/var/lib/dpkg/info/libc6:amd64.list:/lib/x86_64-linux-gnu/libc.so.6
/var/lib/dpkg/info/libssl3:amd64.list:/usr/lib/x86_64-linux-gnu/libcrypto.so.3
/var/lib/dpkg/info/openssh-server.list:/usr/sbin/sshd
"""


def test_listening_processes_get_the_packages_owning_what_they_map() -> None:
    loaded = MappedPackages([812, 4242]).parse(result(SSHD_OUTPUT))
    # libc.so.6 maps under /usr (merged /usr) but libc6 lists it under /lib: both are tried;
    # a file no package owns is ignored; pid 4242 exited before its comm was read: left out
    assert loaded == LoadedPackages(
        listening=(
            ProcessPackages(
                pid=812, command="sshd", packages=("libc6", "libssl3", "openssh-server")
            ),
        ),
        running=("cron", "libc6", "libssl3", "openssh-server"),
    )


def test_the_pids_are_positional_parameters_of_a_constant_script() -> None:
    fact = MappedPackages([900, 812, 812])
    assert fact.command() == ["sh", "-c", LOADED_PACKAGES_SCRIPT, "sh", "812", "900"]
    assert MappedPackages().command() == ["sh", "-c", LOADED_PACKAGES_SCRIPT, "sh"]
    assert fact.sudo


@pytest.mark.parametrize("pid", [0, -1, True, "812", 1.5])
def test_a_pid_must_be_a_positive_integer(pid: object) -> None:
    with pytest.raises(ValueError, match="not a process id"):
        MappedPackages([pid])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("stdout", "reason"),
    [
        ("== comm\n== pid 1\n", "missing section"),
        ("== comm\n== comm\n== owners\n", "section repeats"),
        ("== maps\n== comm\n== owners\n", "unknown section"),
        ("stray\n== comm\n== owners\n", "output before the first section"),
        ("== comm\nsshd\n== owners\n", "malformed 'PID COMM'"),
        ("== comm\n== pid 1\nrelative/path\n== owners\n", "not absolute"),
        ("== comm\n== owners\n/var/lib/dpkg/info/Bad_Name.list:/x\n", "malformed 'LIST:PATH'"),
        ("== comm\n== owners\n/etc/passwd:/x\n", "malformed 'LIST:PATH'"),
    ],
)
def test_malformed_output_fails_loudly(stdout: str, reason: str) -> None:
    with pytest.raises(FactParseError, match=reason):
        MappedPackages([1]).parse(result(stdout))


def test_no_dpkg_database_is_a_command_failure() -> None:
    with pytest.raises(CommandFailedError):
        MappedPackages().parse(result("", 3, "patchpilot: no dpkg database"))


def test_truncated_output_is_refused() -> None:
    cut = result(SSHD_OUTPUT).model_copy(update={"truncated": True})
    with pytest.raises(FactParseError, match="truncated"):
        MappedPackages([812]).parse(cut)


def test_owner_lines_and_the_merged_usr_lookup() -> None:
    assert parse_owner_line("/var/lib/dpkg/info/libstdc++6:amd64.list:/usr/lib/x.so") == (
        "libstdc++6",
        "/usr/lib/x.so",
    )
    owners = {
        "/lib/x86_64-linux-gnu/libc.so.6": frozenset({"libc6"}),
        "/usr/bin/bash": frozenset({"bash"}),
    }
    assert owners_of("/usr/lib/x86_64-linux-gnu/libc.so.6", owners) == {"libc6"}
    assert owners_of("/usr/bin/bash", owners) == {"bash"}
    assert owners_of("/opt/x.so", owners) == frozenset()


def test_the_script_needs_only_essential_tools_and_keeps_its_own_ancestors_out() -> None:
    # The commands it runs besides shell builtins: sed, sort, grep (Essential on Debian).
    for tool in ("sed -n", "sort -u", "grep -H -F -x -f -"):
        assert tool in LOADED_PACKAGES_SCRIPT
    assert "awk" not in LOADED_PACKAGES_SCRIPT
    # ancestors (sudo, the login session) are skipped unless they listen
    assert "/proc/$q/stat" in LOADED_PACKAGES_SCRIPT
    assert 'case "$L" in *" $p "*)' in LOADED_PACKAGES_SCRIPT


# --------------------------------------------------------------------------- discovery


def _host(**extra: object) -> FakeDebianHost:
    return FakeDebianHost(
        "web-1",
        {"openssh-server": "1:9.2p1-2", "libssl3": "3.0.1-1", "cron": "3.0pl1-162"},
        {},
        listening={812: ("sshd", "0.0.0.0", 22)},
        loaded={812: ["libssl3", "openssh-server"], 900: ["cron"]},
        **extra,  # type: ignore[arg-type]
    )


def test_discovery_reads_loaded_packages_for_the_listening_pids(tmp_path: Path) -> None:
    fake = _host()
    host = Host(name="web-1", address="127.0.0.1")
    outcome = discover_host(
        host, Settings(home=tmp_path), transport_factory=fleet_factory({"web-1": fake})
    )
    assert outcome.ok, outcome.error
    assert outcome.facts is not None
    assert outcome.facts.listening is not None
    assert [s.pid for s in outcome.facts.listening] == [812]
    assert outcome.facts.loaded_packages == LoadedPackages(
        listening=(
            ProcessPackages(pid=812, command="sshd", packages=("libssl3", "openssh-server")),
        ),
        running=("cron", "libssl3", "openssh-server"),
    )
    runs = [c for c in fake.commands if "/var/lib/dpkg/info" in " ".join(c)]
    assert len(runs) == 1, "one more round trip, given the listening pids"
    assert runs[0][4:] == ("812",)
    assert not [w for w in outcome.warnings if "loaded packages" in w]


def test_discovery_can_be_told_not_to_read_loaded_packages(tmp_path: Path) -> None:
    fake = _host()
    settings = Settings(home=tmp_path, discovery=DiscoverySettings(loaded_packages=False))
    outcome = discover_host(
        Host(name="web-1", address="127.0.0.1"),
        settings,
        transport_factory=fleet_factory({"web-1": fake}),
    )
    assert outcome.facts is not None
    assert outcome.facts.loaded_packages is None
    assert not [c for c in fake.commands if "/var/lib/dpkg/info" in " ".join(c)]


def test_a_failing_loaded_packages_fact_is_a_warning_not_a_failed_host(tmp_path: Path) -> None:
    fake = _host()

    def refused(pids: tuple[int, ...]) -> CommandResult:
        return result("", 1, "sudo: a password is required")

    fake._loaded = refused  # type: ignore[method-assign]
    outcome = discover_host(
        Host(name="web-1", address="127.0.0.1"),
        Settings(home=tmp_path),
        transport_factory=fleet_factory({"web-1": fake}),
    )
    assert outcome.ok
    assert outcome.facts is not None
    assert outcome.facts.loaded_packages is None
    assert any(w.startswith("loaded packages not collected:") for w in outcome.warnings)

"""AptPendingUpdates: the apt-get simulation parser (fixtures also run in test_facts_fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchpilot.core.errors import CommandFailedError, FactParseError
from patchpilot.core.models import CommandResult
from patchpilot.tools.facts import AptPendingUpdates, is_security_origin, parse_inst_line

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facts" / "AptPendingUpdates"
REAL = FIXTURES / "debian12_bookworm_oldstable.json"


def _result(stdout: str, exit_code: int = 0, stderr: str = "") -> CommandResult:
    return CommandResult(
        host="t",
        argv=tuple(AptPendingUpdates().command()),
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
    )


def test_command_is_a_lock_free_simulation_that_never_updates_lists() -> None:
    argv = AptPendingUpdates().command()
    assert argv == ["apt-get", "-s", "-o", "Debug::NoLocking=1", "dist-upgrade"]
    assert "update" not in argv
    assert AptPendingUpdates.sudo is False


def test_real_output_security_flags_match_an_independent_count() -> None:
    data = json.loads(REAL.read_text(encoding="utf-8"))
    updates = AptPendingUpdates().parse(_result(data["stdout"]))
    inst_lines = [line for line in data["stdout"].splitlines() if line.startswith("Inst ")]
    assert len(updates) == len(inst_lines) == 32
    # Independent oracle: a line is security iff its origin list mentions a -security suite.
    expected_security = {
        line.split()[1] for line in inst_lines if "-security " in line or "-security," in line
    }
    assert {u.name for u in updates if u.security} == expected_security
    assert len(expected_security) == 21
    by_name = {u.name: u for u in updates}
    assert by_name["libssl3"].origins == ("Debian-Security:12/oldstable-security",)
    assert by_name["libssl3"].candidate_version == "3.0.22-1~deb12u2"
    assert by_name["libgcrypt20"].origins == (
        "Debian:12.15/oldstable",
        "Debian-Security:12/oldstable-security",
    )
    assert by_name["libgcrypt20"].security is True
    assert by_name["bash"].security is False
    assert by_name["bash"].installed_version == "5.2.15-2+b8"  # binNMU kept verbatim
    assert by_name["libnss3"].candidate_version == "2:3.87.1-1+deb12u4"  # epoch kept
    assert by_name["perl-modules-5.36"].arch == "all"
    # "[pkg on pkg]" break annotations after the candidate are ignored
    assert by_name["libpam-modules-bin"].candidate_version == "1.5.2-6+deb12u2"


@pytest.mark.parametrize(
    ("origin", "security"),
    [
        ("Debian-Security:12/oldstable-security", True),
        ("Debian-Security:12/bookworm-security", True),
        ("Debian-Security:13/stable-security", True),
        ("Ubuntu:22.04/jammy-security", True),
        ("UbuntuESMApps:22.04/jammy-apps-security", True),
        ("Debian-Security:10/oldoldstable", True),  # buster: label, no suffix
        ("Debian:12.15/oldstable", False),
        ("Debian:12.9/stable-updates", False),
        ("Ubuntu:22.04/jammy-updates", False),
        ("Security Tools:1.0/security-stable", False),  # 'security' in a name is not a suffix
        ("Debian:13/trixie-security-test", False),
        ("localhost", False),
        ("Docker CE:jammy/jammy", False),
    ],
)
def test_security_is_the_suite_suffix_not_a_codename(origin: str, security: bool) -> None:
    assert is_security_origin(origin) is security


def test_new_install_has_no_installed_version() -> None:
    update = parse_inst_line(
        "Inst linux-image-6.1.0-31-amd64 (6.1.128-1 Debian-Security:12/bookworm-security [amd64])"
    )
    assert update.installed_version is None
    assert update.candidate_version == "6.1.128-1"
    assert update.security is True
    assert update.arch == "amd64"


def test_foreign_arch_suffix_moves_to_arch() -> None:
    update = parse_inst_line(
        "Inst libc6:i386 [2.36-9+deb12u7] (2.36-9+deb12u9 Debian:12.9/stable [i386])"
    )
    assert (update.name, update.arch) == ("libc6", "i386")


def test_conflicting_arch_suffix_is_refused() -> None:
    with pytest.raises(FactParseError, match="arch"):
        parse_inst_line("Inst libc6:i386 [1.0] (1.1 Debian:12.9/stable [amd64])")


def test_candidate_without_origin_or_arch() -> None:
    update = parse_inst_line("Inst foo [1.0-1] (1.0-2)")
    assert update.origins == ()
    assert update.arch == ""
    assert update.security is False


@pytest.mark.parametrize(
    "line",
    [
        "Inst",
        "Inst foo",
        "Inst foo [1.0] 1.1 Debian:12/stable [amd64]",
        "Inst foo [1.0] (1.1 Debian:12/stable [amd64]",
        "Inst foo [1 0] (1.1 Debian:12/stable [amd64])",
        "Inst foo [1.0] (1.1 Debian:12/stable [amd64]) trailing garbage",
    ],
)
def test_malformed_inst_lines_raise(line: str) -> None:
    with pytest.raises(FactParseError):
        parse_inst_line(line)


def test_empty_stdout_is_not_an_empty_list() -> None:
    with pytest.raises(FactParseError):
        AptPendingUpdates().parse(_result(""))


def test_zero_pending_is_an_empty_list() -> None:
    stdout = (
        "Reading package lists...\n0 upgraded, 0 newly installed, 0 to remove and 3 not upgraded.\n"
    )
    assert AptPendingUpdates().parse(_result(stdout)) == []


def test_apt_error_exit_raises_with_stderr() -> None:
    with pytest.raises(CommandFailedError, match="Could not get lock"):
        AptPendingUpdates().parse(_result("", 100, "E: Could not get lock /var/lib/dpkg/lock\n"))


def test_truncated_output_is_refused() -> None:
    data = json.loads(REAL.read_text(encoding="utf-8"))
    result = _result(data["stdout"]).model_copy(update={"truncated": True})
    with pytest.raises(FactParseError, match="truncated"):
        AptPendingUpdates().parse(result)

"""Fact parsers on malformed output, property tests, the chooser and collect_host_facts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from patchpilot.core.errors import CommandFailedError, FactParseError, UnsupportedPlatformError
from patchpilot.core.models import (
    CommandResult,
    Ecosystem,
    InstalledPackage,
    OSFamily,
    OSInfo,
)
from patchpilot.tools.facts import (
    ApkPackages,
    DpkgPackages,
    KernelRelease,
    OsRelease,
    RebootRequired,
    RebootStatus,
    RpmKernelRebootRequired,
    RpmPackages,
    apk_kernel_reboot_required,
    collect_host_facts,
    family_for,
    gather,
    package_fact_for,
    parse_dpkg_source_field,
    parse_os_release,
    parse_source_rpm,
    rpm_evr,
    split_epoch,
)
from patchpilot.tools.facts.base import Fact
from tests.fakes import ScriptedTransport, replay

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facts"


def result(
    fact: Fact[Any],
    stdout: str,
    *,
    exit_code: int = 0,
    stderr: str = "",
    truncated: bool = False,
) -> CommandResult:
    return CommandResult(
        host="h1",
        argv=tuple(fact.command()),
        exit_code=exit_code,
        stdout=stdout,
        stderr=stderr,
        truncated=truncated,
    )


def fixture(fact: str, case: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / fact / f"{case}.json").read_text("utf-8"))
    return data


def ReplayTransport(
    name: str, answers: dict[tuple[str, ...], tuple[int, str, str]]
) -> ScriptedTransport:
    """A transport that answers each recorded argv (127 for anything else)."""
    return ScriptedTransport(replay(answers), name)


def answer(fact_name: str, case: str) -> tuple[tuple[str, ...], tuple[int, str, str]]:
    data = fixture(fact_name, case)
    return tuple(data["command"]), (data["exit_code"], data["stdout"], data["stderr"])


# --------------------------------------------------------------------------- base / gather


def test_gather_uses_c_locale_and_no_sudo() -> None:
    transport = ReplayTransport("h1", dict([answer("KernelRelease", "debian12_container_host")]))
    assert gather(transport, KernelRelease()) == "6.18.44-fc-v782"
    argv, env = transport.calls[0], transport.envs[0]
    assert argv == ("uname", "-r")
    assert env == {"LC_ALL": "C"}


def test_non_zero_exit_raises_command_failed_with_stderr() -> None:
    fact = DpkgPackages()
    with pytest.raises(CommandFailedError) as info:
        fact.parse(result(fact, "", exit_code=2, stderr="dpkg-query: error: cannot open db\n"))
    assert info.value.exit_code == 2
    assert "cannot open db" in info.value.stderr


def test_truncated_output_is_refused() -> None:
    fact = DpkgPackages()
    stdout = fixture("DpkgPackages", "debian12_bookworm")["stdout"]
    with pytest.raises(FactParseError, match="truncated"):
        fact.parse(result(fact, stdout, truncated=True))


def test_commands_are_argv_lists_without_interpolation() -> None:
    for fact in (
        OsRelease(),
        KernelRelease(),
        RebootRequired(),
        DpkgPackages(),
        RpmPackages(),
        ApkPackages(),
        RpmKernelRebootRequired("5.14.0-1.el9.x86_64"),
    ):
        argv = fact.command()
        assert isinstance(argv, list)
        assert all(isinstance(arg, str) for arg in argv)
        assert fact.sudo is False


# --------------------------------------------------------------------------- dpkg


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "\n\n",
        "garbage that is not dpkg output\n",
        "bash\tii \t5.2.15-2+b8\tamd64\tbash\n",  # a field missing
        "bash\tii \t5.2.15-2+b8\tamd64\tbash\t5.2.15-2\textra\n",  # a field too many
        "bash ii 5.2.15-2+b8 amd64 bash 5.2.15-2\n",  # spaces instead of tabs
        "bash\tzz \t5.2.15-2\tamd64\tbash\t5.2.15-2\n",  # unknown status
        "bash\tii \t\tamd64\tbash\t5.2.15-2\n",  # empty version
        "bash\tii \t5.2.15-2\tamd64\t\t5.2.15-2\n",  # empty source name
        "bash\tii \t5.2 15\tamd64\tbash\t5.2.15-2\n",  # whitespace in version
        "libc6:i386\tii \t2.36-9\tamd64\tglibc\t2.36-9\n",  # suffix differs from arch
        "bash\tii \t5.2.15-2\t\tbash\t5.2.15-2\n",  # empty arch
    ],
)
def test_dpkg_malformed_output_raises(stdout: str) -> None:
    fact = DpkgPackages()
    with pytest.raises(FactParseError):
        fact.parse(result(fact, stdout))


def test_dpkg_garbage_after_valid_rows_still_raises() -> None:
    fact = DpkgPackages()
    stdout = fixture("DpkgPackages", "debian12_bookworm")["stdout"] + "oops\n"
    with pytest.raises(FactParseError, match="6 tab-separated fields"):
        fact.parse(result(fact, stdout))


def test_dpkg_binnmu_epoch_and_multiarch_rows() -> None:
    fact = DpkgPackages()
    stdout = fixture("DpkgPackages", "debian12_bookworm")["stdout"]
    by_name = {p.name: p for p in fact.parse(result(fact, stdout))}
    assert by_name["bash"].version == "5.2.15-2+b8"
    assert by_name["bash"].source_version == "5.2.15-2"  # binNMU: source version differs
    assert by_name["bsdutils"].epoch == 1
    assert (by_name["bsdutils"].source_name, by_name["bsdutils"].source_version) == (
        "util-linux",
        "2.38.1-5+deb12u3",
    )
    assert by_name["libc6"].arch == "amd64"  # "libc6:amd64" -> name without suffix
    assert all(":" not in name for name in by_name)
    assert all(p.ecosystem is Ecosystem.DEBIAN for p in by_name.values())


def test_split_epoch() -> None:
    assert split_epoch("1:2.38.1-5") == 1
    assert split_epoch("2.38.1-5") is None
    assert split_epoch("10:1") == 10


_DEB_NAME = st.from_regex(r"[a-z0-9][a-z0-9+.-]{1,30}", fullmatch=True)
_DEB_VERSION = st.from_regex(
    r"([1-9][0-9]{0,2}:)?[0-9][A-Za-z0-9.+~]{0,12}(-[A-Za-z0-9.+~]{1,8})?", fullmatch=True
)


@given(name=_DEB_NAME, version=_DEB_VERSION)
def test_dpkg_source_field_round_trip(name: str, version: str) -> None:
    assert parse_dpkg_source_field(f"{name} ({version})") == (name, version)
    assert parse_dpkg_source_field(name) == (name, None)


@pytest.mark.parametrize(
    "value", ["", "(1.0)", "name (1.0", "name (1.0) extra", "na me", "name ()"]
)
def test_dpkg_source_field_rejects_garbage(value: str) -> None:
    with pytest.raises(FactParseError):
        parse_dpkg_source_field(value)


@given(
    rows=st.lists(
        st.tuples(_DEB_NAME, _DEB_VERSION, st.sampled_from(["amd64", "i386", "all"]), _DEB_NAME),
        min_size=1,
        max_size=8,
    ),
    multiarch=st.booleans(),
)
def test_dpkg_rows_round_trip(rows: list[tuple[str, str, str, str]], multiarch: bool) -> None:
    fact = DpkgPackages()
    lines = []
    for name, version, arch, source in rows:
        binary = f"{name}:{arch}" if multiarch and arch != "all" else name
        lines.append(f"{binary}\tii \t{version}\t{arch}\t{source}\t{version}\n")
    parsed = fact.parse(result(fact, "".join(lines)))
    assert [(p.name, p.version, p.arch, p.source_name, p.source_version) for p in parsed] == [
        (name, version, arch, source, version) for name, version, arch, source in rows
    ]
    assert [p.epoch for p in parsed] == [split_epoch(version) for _, version, _, _ in rows]


# --------------------------------------------------------------------------- rpm


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "\n",
        "not rpm output at all\n",
        "bash\t0\t5.1.8\t6.el9\tx86_64\tbash-5.1.8-6.el9.src.rpm\n",  # 6 fields (no label)
        "bash 0 5.1.8 6.el9 x86_64 bash-5.1.8-6.el9.src.rpm (none)\n",  # space-separated
        "bash\t(none)\t5.1.8\t6.el9\tx86_64\tbash-5.1.8-6.el9.src.rpm\t(none)\n",  # EPOCH
        "bash\t0\t\t6.el9\tx86_64\tbash-5.1.8-6.el9.src.rpm\t(none)\n",  # empty version
        "\t0\t5.1.8\t6.el9\tx86_64\tbash-5.1.8-6.el9.src.rpm\t(none)\n",  # empty name
        "gpg-pubkey\t0\t8783d481\t63ceb953\t(none)\t(none)\t(none)\n",  # only a key
    ],
)
def test_rpm_malformed_output_raises(stdout: str) -> None:
    fact = RpmPackages()
    with pytest.raises(FactParseError):
        fact.parse(result(fact, stdout))


def test_rpm_empty_output_error_mentions_stderr() -> None:
    fact = RpmPackages()
    stderr = 'error: incorrect format: unknown tag: "MODULARITYLABEL"\n'
    with pytest.raises(FactParseError, match="unknown tag"):
        fact.parse(result(fact, "", stderr=stderr))


def test_rpm_source_rpm_carries_binary_epoch() -> None:
    fact = RpmPackages()
    line = "openssl-libs\t1\t3.0.7\t27.el9\tx86_64\topenssl-3.0.7-27.el9.src.rpm\t(none)\n"
    (pkg,) = fact.parse(result(fact, line))
    assert pkg == InstalledPackage(
        name="openssl-libs",
        version="1:3.0.7-27.el9",
        arch="x86_64",
        source_name="openssl",
        source_version="1:3.0.7-27.el9",
        ecosystem=Ecosystem.RPM,
        epoch=1,
        module=None,
    )


def test_rpm_unknown_source_rpm_falls_back_to_binary() -> None:
    fact = RpmPackages()
    line = "thirdparty\t0\t1.0\t1\tx86_64\t(none)\t(none)\n"
    (pkg,) = fact.parse(result(fact, line))
    assert (pkg.source_name, pkg.source_version) == ("thirdparty", "1.0-1")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("kernel-5.14.0-503.15.1.el9_5.src.rpm", ("kernel", "5.14.0", "503.15.1.el9_5")),
        (
            "java-1.8.0-openjdk-1.8.0.412.b08-2.el9.src.rpm",
            ("java-1.8.0-openjdk", "1.8.0.412.b08", "2.el9"),
        ),
        ("elasticsearch-8.17.0-1-src.rpm", ("elasticsearch", "8.17.0", "1")),
        ("foo-1.0-1.nosrc.rpm", ("foo", "1.0", "1")),
        ("(none)", None),
        ("garbage", None),
    ],
)
def test_parse_source_rpm(filename: str, expected: tuple[str, str, str] | None) -> None:
    parsed = parse_source_rpm(filename)
    assert (None if parsed is None else tuple(parsed)) == expected


def test_rpm_evr_omits_zero_epoch_and_empty_release() -> None:
    assert rpm_evr(0, "1.0", "1.el9") == "1.0-1.el9"
    assert rpm_evr(2, "1.0", "1.el9") == "2:1.0-1.el9"
    assert rpm_evr(0, "1.0", "") == "1.0"


# --------------------------------------------------------------------------- apk


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "\n\n",
        "this is not an apk database\n",
        "P:musl\nV:1.2.5-r0\nnot a field line\n",
        "P:musl\nA:x86_64\n",  # no version
        "V:1.2.5-r0\nA:x86_64\n",  # no name
        "C:Q1abc=\nS:1234\n",  # neither
    ],
)
def test_apk_malformed_output_raises(stdout: str) -> None:
    fact = ApkPackages()
    with pytest.raises(FactParseError):
        fact.parse(result(fact, stdout))


def test_apk_missing_database_is_command_failure() -> None:
    fact = ApkPackages()
    stderr = "cat: /lib/apk/db/installed: No such file or directory\n"
    with pytest.raises(CommandFailedError):
        fact.parse(result(fact, "", exit_code=1, stderr=stderr))


def test_apk_origin_defaults_to_name() -> None:
    fact = ApkPackages()
    (pkg,) = fact.parse(result(fact, "P:foo\nV:1.0-r0\nA:x86_64\n"))
    assert (pkg.source_name, pkg.source_version, pkg.epoch) == ("foo", "1.0-r0", None)


# --------------------------------------------------------------------------- os-release


def test_os_release_quoting_escapes_comments_and_concatenation() -> None:
    text = (
        "# comment\n"
        "  ; also a comment\n"
        "\n"
        'NAME="Foo \\"Bar\\" \\$HOME \\\\ \\`x\\` \\n"\n'
        "PRETTY_NAME='single $quoted \\ text'\n"
        "ID=foo\\ bar   \n"
        "VERSION=\"1\"'.2'3\n"
        "EMPTY=\n"
        'MULTI="line one\nline two"\n'
    )
    assert parse_os_release(text) == {
        "NAME": 'Foo "Bar" $HOME \\ `x` \\n',
        "PRETTY_NAME": "single $quoted \\ text",
        "ID": "foo bar",
        "VERSION": "1.23",
        "EMPTY": "",
        "MULTI": "line one\nline two",
    }


@pytest.mark.parametrize(
    "text",
    [
        "this is not os-release\n",
        'ID="unterminated\n',
        "ID='unterminated\n",
        "1ID=digit-first\n",
        "ID debian\n",
    ],
)
def test_os_release_malformed_raises(text: str) -> None:
    with pytest.raises(FactParseError):
        parse_os_release(text)


@pytest.mark.parametrize("stdout", ["", "# only a comment\n", 'NAME="No Id"\n', "ID=\n"])
def test_os_release_without_id_raises(stdout: str) -> None:
    fact = OsRelease()
    with pytest.raises(FactParseError, match="no ID"):
        fact.parse(result(fact, stdout))


def test_os_release_missing_files_is_command_failure() -> None:
    fact = OsRelease()
    stderr = "cat: /usr/lib/os-release: No such file or directory\n"
    with pytest.raises(CommandFailedError):
        fact.parse(result(fact, "", exit_code=1, stderr=stderr))


def _double_quote(value: str) -> str:
    escaped = "".join("\\" + c if c in '"\\`$' else c for c in value)
    return f'"{escaped}"'


_VALUES = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
    max_size=40,
)


@given(value=_VALUES)
def test_os_release_double_quote_round_trip(value: str) -> None:
    assert parse_os_release(f"X={_double_quote(value)}\nID=x\n")["X"] == value


@given(value=_VALUES.filter(lambda v: "'" not in v))
def test_os_release_single_quote_round_trip(value: str) -> None:
    assert parse_os_release(f"X='{value}'\nID=x\n")["X"] == value


@pytest.mark.parametrize(
    ("os_id", "id_like", "family"),
    [
        ("debian", (), OSFamily.DEBIAN),
        ("ubuntu", ("debian",), OSFamily.DEBIAN),
        ("zorin", ("ubuntu", "debian"), OSFamily.DEBIAN),
        ("raspbian", ("debian",), OSFamily.DEBIAN),
        ("rhel", ("fedora",), OSFamily.RHEL),
        ("rocky", ("rhel", "centos", "fedora"), OSFamily.RHEL),
        ("ol", ("fedora",), OSFamily.RHEL),
        ("amzn", ("fedora",), OSFamily.RHEL),
        ("someclone", ("rhel",), OSFamily.RHEL),
        ("alpine", (), OSFamily.ALPINE),
        ("postmarketos", ("alpine",), OSFamily.ALPINE),
        ("opensuse-leap", ("suse", "opensuse"), OSFamily.UNKNOWN),
        ("arch", (), OSFamily.UNKNOWN),
        ("Debian", (), OSFamily.DEBIAN),
    ],
)
def test_family_for(os_id: str, id_like: tuple[str, ...], family: OSFamily) -> None:
    assert family_for(os_id, id_like) is family


# --------------------------------------------------------------------------- kernel / reboot


@pytest.mark.parametrize("stdout", ["", "\n", "6.1.0-18-amd64\n6.1.0-17-amd64\n", "6.1 0\n"])
def test_kernel_release_malformed(stdout: str) -> None:
    fact = KernelRelease()
    with pytest.raises(FactParseError):
        fact.parse(result(fact, stdout))


@pytest.mark.parametrize(
    "stdout",
    [
        "",
        "linux-image-6.1.0-18-amd64\n",
        "reboot-required: maybe\n",
        "reboot-required: yes\nnot a name!\n",
    ],
)
def test_reboot_required_malformed(stdout: str) -> None:
    fact = RebootRequired()
    with pytest.raises(FactParseError):
        fact.parse(result(fact, stdout))


def test_reboot_required_ignores_stale_pkgs_without_flag() -> None:
    fact = RebootRequired()
    assert fact.parse(result(fact, "reboot-required: no\nlibc6\n")) == RebootStatus(False, ())


def test_rpm_kernel_reboot_other_failure_raises() -> None:
    fact = RpmKernelRebootRequired("5.14.0-503.15.1.el9_5.x86_64")
    with pytest.raises(CommandFailedError):
        fact.parse(result(fact, "", exit_code=1, stderr="error: rpmdb: BDB0113 Thread/process\n"))


@pytest.mark.parametrize("stdout", ["", "garbage line\n", "kernel-\n"])
def test_rpm_kernel_reboot_malformed(stdout: str) -> None:
    fact = RpmKernelRebootRequired("5.14.0-503.15.1.el9_5.x86_64")
    with pytest.raises(FactParseError):
        fact.parse(result(fact, stdout))


def test_rpm_kernel_reboot_debug_kernel() -> None:
    fact = RpmKernelRebootRequired("5.14.0-503.15.1.el9_5.x86_64+debug")
    assert fact.command() == ["rpm", "-q", "--last", "kernel-debug"]
    stdout = "kernel-debug-5.14.0-503.15.1.el9_5.x86_64   Tue 03 Dec 2024 10:00:00 AM UTC\n"
    assert fact.parse(result(fact, stdout)) == RebootStatus(False, ())


@pytest.mark.parametrize("running", ["", "two words"])
def test_rpm_kernel_reboot_rejects_bad_running_kernel(running: str) -> None:
    with pytest.raises(ValueError, match="not a kernel release"):
        RpmKernelRebootRequired(running)


def _apk(name: str, version: str) -> InstalledPackage:
    return InstalledPackage(
        name=name,
        version=version,
        source_name=name,
        source_version=version,
        ecosystem=Ecosystem.ALPINE,
    )


def test_apk_kernel_reboot_required() -> None:
    pkgs = [_apk("musl", "1.2.5-r0"), _apk("linux-lts", "6.6.14-r0")]
    assert apk_kernel_reboot_required("6.6.14-0-lts", pkgs) == RebootStatus(False, ())
    newer = [_apk("linux-lts", "6.6.15-r0")]
    assert apk_kernel_reboot_required("6.6.14-0-lts", newer) == RebootStatus(True, ("linux-lts",))
    assert apk_kernel_reboot_required("6.6.14-0-lts", [_apk("musl", "1")]) == RebootStatus(False)
    assert apk_kernel_reboot_required("6.1.0-18-amd64", newer) == RebootStatus(False, ())


# --------------------------------------------------------------------------- chooser / host


@pytest.mark.parametrize(
    ("family", "fact_type"),
    [(OSFamily.DEBIAN, DpkgPackages), (OSFamily.RHEL, RpmPackages), (OSFamily.ALPINE, ApkPackages)],
)
def test_package_fact_for(family: OSFamily, fact_type: type) -> None:
    assert isinstance(package_fact_for(OSInfo(id="x", family=family)), fact_type)


def test_package_fact_for_unknown_family() -> None:
    os_info = OSInfo(id="opensuse-leap", id_like=("suse", "opensuse"))
    with pytest.raises(UnsupportedPlatformError, match="opensuse-leap"):
        package_fact_for(os_info)


def test_collect_host_facts_debian() -> None:
    transport = ReplayTransport(
        "deb1",
        dict(
            [
                answer("OsRelease", "debian12_bookworm"),
                answer("KernelRelease", "debian12_container_host"),
                answer("DpkgPackages", "debian12_bookworm"),
                answer("RebootRequired", "synthetic_reboot_pending"),
            ]
        ),
    )
    facts, packages = collect_host_facts(transport)
    assert facts.host == "deb1"
    assert facts.os.family is OSFamily.DEBIAN
    assert facts.os.release == "bookworm"
    assert facts.kernel == "6.18.44-fc-v782"
    assert facts.reboot_required is True
    assert facts.reboot_required_pkgs == ("linux-image-6.8.0-45-generic", "linux-base")
    assert facts.package_count == len(packages) == 64
    assert facts.source_package_count == len({p.source_name for p in packages}) < 64
    assert facts.ecosystem is Ecosystem.DEBIAN
    assert all(env == {"LC_ALL": "C"} for env in transport.envs)


def test_collect_host_facts_rhel() -> None:
    kernel_argv = ("uname", "-r")
    reboot = fixture("RpmKernelRebootRequired", "el7_needs_reboot")
    transport = ReplayTransport(
        "rocky1",
        {
            **dict([answer("OsRelease", "rocky_9_3"), answer("RpmPackages", "almalinux9_modular")]),
            kernel_argv: (0, reboot["fact_args"]["running_kernel"] + "\n", ""),
            tuple(reboot["command"]): (0, reboot["stdout"], ""),
        },
    )
    facts, packages = collect_host_facts(transport)
    assert facts.os.family is OSFamily.RHEL
    assert facts.ecosystem is Ecosystem.RPM
    assert facts.reboot_required is True
    assert facts.reboot_required_pkgs == ("kernel",)
    assert facts.package_count == 6
    assert facts.source_package_count == 3  # dnf, nginx, kernel
    assert any(p.module for p in packages)


def test_collect_host_facts_alpine_needs_no_extra_reboot_command() -> None:
    transport = ReplayTransport(
        "alp1",
        {
            **dict([answer("OsRelease", "alpine_3_19"), answer("ApkPackages", "alpine320_x86_64")]),
            ("uname", "-r"): (0, "6.6.14-0-lts\n", ""),
        },
    )
    facts, _ = collect_host_facts(transport)
    assert facts.os.release == "v3.19"
    assert facts.ecosystem is Ecosystem.ALPINE
    assert facts.reboot_required is False
    assert facts.package_count == 14
    assert len(transport.commands) == 3  # os-release, uname, the apk database
    assert len(transport.calls) == 2  # in two round trips


def test_collect_host_facts_unknown_os_stops_before_inventory() -> None:
    transport = ReplayTransport("arch1", dict([answer("OsRelease", "archlinux")]))
    with pytest.raises(UnsupportedPlatformError):
        collect_host_facts(transport)
    assert len(transport.calls) == 1


def test_collect_host_facts_propagates_parse_errors() -> None:
    dpkg_argv, _ = answer("DpkgPackages", "debian12_bookworm")
    transport = ReplayTransport(
        "deb2",
        {
            **dict([answer("OsRelease", "debian12_bookworm")]),
            ("uname", "-r"): (0, "6.1.0-18-amd64\n", ""),
            dpkg_argv: (0, "", ""),
        },
    )
    with pytest.raises(FactParseError, match="empty package inventory"):
        collect_host_facts(transport)

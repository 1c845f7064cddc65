"""patchpilot.tools.packages.apt_ops and patchpilot.tools.facts.apt_simulate.simulate_install, on a
scripted transport.

Outputs are the ones recorded on the lab (Debian 12, apt 2.6, dpkg 1.21) by the session that
wrote these tools; the fact fixtures under tests/fixtures/facts hold the simulation outputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from patchpilot.core.errors import CommandFailedError, CommandTimeoutError, UnsafeArgumentError
from patchpilot.core.models import CommandResult
from patchpilot.core.validate import validate_service_name
from patchpilot.tools.facts.apt_simulate import (
    reboot_hint_packages,
    simulate_install,
    validate_items,
)
from patchpilot.tools.packages import (
    APT_ENV,
    audit_and_repair,
    install_argv,
    install_exact,
    installed_versions,
    lock_timeout_options,
    refresh_package_lists,
    restart_service,
    service_running,
    wait_for_dpkg_lock,
)
from patchpilot.tools.transport.base import SudoRefusedError, sudo_refusal
from tests.fakes import ScriptedTransport

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "facts"

HELD_ERROR = "E: Held packages were changed and -y was used without --allow-change-held-packages.\n"
REMOVE_ERROR = "E: Packages need to be removed but remove is disabled.\n"
LOCK_ERROR = (
    "E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), "
    "is another process using it?\n"
)
AUDIT_UNPACKED = (
    "The following packages have been unpacked but not yet configured.\n"
    "They must be configured using dpkg --configure or the configure\n"
    "menu option in dselect for them to work:\n"
    " acme-web             acme web service (patchpilot lab demo)\n\n"
)


def _result(code: int = 0, out: str = "", err: str = "") -> CommandResult:
    return CommandResult(host="", argv=("x",), exit_code=code, stdout=out, stderr=err)


def _core(argv: tuple[str, ...]) -> tuple[str, ...]:
    """The command without the ``sudo -n -- env VAR=...`` prefix."""
    if argv[:3] == ("sudo", "-n", "--"):
        rest = argv[4:]
        while rest and "=" in rest[0] and not rest[0].startswith("-"):
            rest = rest[1:]
        return rest
    return argv


class Host:
    """A fake dpkg database answering dpkg-query, apt-get install and friends."""

    def __init__(self, versions: dict[str, str], *, install_error: str = "") -> None:
        self.versions = versions
        self.install_error = install_error
        self.unpacked: set[str] = set()

    def __call__(self, argv: tuple[str, ...]) -> CommandResult:
        core = _core(argv)
        if core[0] == "dpkg-query":
            names = core[core.index("--") + 1 :]
            rows, missing = [], []
            for name in names:
                if name in self.versions:
                    state = "iU " if name in self.unpacked else "ii "
                    rows.append(f"{name}:amd64\t{name}\t{self.versions[name]}\t{state}\n")
                else:
                    missing.append(f"dpkg-query: no packages found matching {name}\n")
            return _result(1 if missing else 0, "".join(rows), "".join(missing))
        if core[:2] == ("apt-get", "-q") and "install" in core and "-f" not in core:
            if self.install_error:
                return _result(100, "Reading package lists...\n", self.install_error)
            for pin in core[core.index("--") + 1 :]:
                name, _, version = pin.partition("=")
                self.versions[name] = version
            return _result(0, "(Reading database ... 5%\nSetting up acme-web (1.1.0) ...\n")
        if core == ("dpkg", "--audit"):
            return _result(0, AUDIT_UNPACKED if self.unpacked else "")
        if core[0] == "sh" and "updates" in core[-1]:
            return _result(0, "")
        if core[:3] == ("dpkg", "--configure", "-a"):
            self.unpacked.clear()
            return _result(0, "Setting up acme-web (1.1.0) ...\n")
        if "check" in core or ("-f" in core and "install" in core):
            return _result(0, "Reading package lists...\n")
        if core[0] == "service":
            return _result(0, f"Restarting {core[1]}\n")
        return _result(127, "", "not scripted")


def _transport(host: Callable[[tuple[str, ...]], CommandResult], **kw: bool) -> ScriptedTransport:
    return ScriptedTransport(host, name="canary-1", **kw)


def test_install_argv_upgrade_and_rollback_shapes() -> None:
    upgrade = install_argv([("acme-web", "1.1.0")], allow_downgrades=False, lock_timeout=30)
    assert upgrade == [
        "apt-get", "-q", "-y", "-o", "DPkg::Lock::Timeout=30",
        "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
        "install", "--only-upgrade", "--no-remove", "--", "acme-web=1.1.0",
    ]  # fmt: skip
    rollback = install_argv(
        [("acme-web", "1.0.0")], allow_downgrades=True, allow_held=True, allow_removals=True
    )
    assert "--only-upgrade" not in rollback
    assert {"--allow-downgrades", "--allow-change-held-packages"} <= set(rollback)
    assert "--no-remove" not in rollback
    assert not any("remove-essential" in arg or "force-yes" in arg for arg in rollback)


@pytest.mark.parametrize(
    "items",
    [
        [("acme-web", "1.0.0; rm -rf /")],
        [("-acme", "1.0")],
        [("acme-web", "1.0"), ("acme-web", "1.1")],
        [],
        ["acme-web=1.0"],
    ],
)
def test_unsafe_items_are_refused(items: list[tuple[str, str]]) -> None:
    with pytest.raises(UnsafeArgumentError):
        validate_items(items)
    transport = _transport(Host({}))
    with pytest.raises(UnsafeArgumentError):
        install_exact(transport, items, allow_downgrades=False)
    assert transport.calls == []


@pytest.mark.parametrize("seconds", [-1, 86401, True, 1.5])
def test_lock_timeout_bounds(seconds: object) -> None:
    with pytest.raises(UnsafeArgumentError):
        lock_timeout_options(seconds)  # type: ignore[arg-type]


def test_installed_versions_reads_only_fully_installed_packages() -> None:
    host = Host({"acme-web": "1.1.0", "openssl": "3.0.20-1~deb12u2"})
    host.unpacked.add("acme-web")
    versions = installed_versions(_transport(host), ["openssl", "acme-web", "nosuchpkg"])
    assert versions == {"openssl": "3.0.20-1~deb12u2", "acme-web": None, "nosuchpkg": None}


def test_installed_versions_raises_on_a_real_dpkg_error() -> None:
    def broken(argv: tuple[str, ...]) -> CommandResult:
        return _result(2, "", "dpkg-query: error: parsing file '/var/lib/dpkg/status'\n")

    with pytest.raises(CommandFailedError):
        installed_versions(_transport(broken), ["acme-web"])


def test_install_exact_upgrades_and_verifies() -> None:
    host = Host({"acme-web": "1.0.0"})
    transport = _transport(host, root=False)
    result = install_exact(transport, [("acme-web", "1.1.0")], allow_downgrades=False)
    assert result.ok
    assert result.changed
    assert result.failure is None
    assert result.before == {"acme-web": "1.0.0"}
    assert result.after == {"acme-web": "1.1.0"}
    assert "Reading database" not in result.stdout_tail
    apt_call = next(c for c in transport.calls if "apt-get" in c)
    assert apt_call[:3] == ("sudo", "-n", "--")
    assert "DEBIAN_FRONTEND=noninteractive" in apt_call
    assert "NEEDRESTART_MODE=l" in apt_call
    assert APT_ENV["DEBIAN_FRONTEND"] == "noninteractive"


def test_install_exact_is_a_noop_at_target() -> None:
    transport = _transport(Host({"acme-web": "1.1.0"}))
    result = install_exact(transport, [("acme-web", "1.1.0")], allow_downgrades=False)
    assert result.ok
    assert not result.changed
    assert result.argv is None
    assert not any("apt-get" in call for call in transport.calls)


@pytest.mark.parametrize(
    ("stderr", "failure"),
    [
        (HELD_ERROR, "held"),
        (REMOVE_ERROR, "removals"),
        (LOCK_ERROR, "lock"),
        ("E: Version '9.9' for 'acme-web' was not found\n", "not-found"),
        ("E: dpkg was interrupted, you must manually run 'dpkg --configure -a'\n", "interrupted"),
        ("E: Sub-process /usr/bin/dpkg returned an error code (1)\n", "apt-error"),
    ],
)
def test_install_exact_classifies_apt_errors(stderr: str, failure: str) -> None:
    host = Host({"acme-web": "1.0.0"}, install_error=stderr)
    result = install_exact(_transport(host), [("acme-web", "1.1.0")], allow_downgrades=False)
    assert not result.ok
    assert result.failure == failure
    assert result.reason == stderr.strip()
    assert result.exit_code == 100
    assert result.after == {"acme-web": "1.0.0"}


def test_install_exact_post_state_mismatch() -> None:
    class Skipping(Host):
        def __call__(self, argv: tuple[str, ...]) -> CommandResult:
            if "install" in _core(argv):  # --only-upgrade skipped a package that is not installed
                return _result(0, "Skipping acme-agent, it is not installed and only upgrades...\n")
            return super().__call__(argv)

    result = install_exact(
        _transport(Skipping({})), [("acme-agent", "2.0.0")], allow_downgrades=False
    )
    assert not result.ok
    assert result.failure == "post-state"
    assert result.reason == "acme-agent is not installed, wanted 2.0.0"


def test_install_exact_timeout_reads_the_post_state() -> None:
    host = Host({"acme-web": "1.0.0"})

    class Slow(ScriptedTransport):
        def _execute(self, argv, *, env, timeout, stdin):  # type: ignore[no-untyped-def]
            if "install" in _core(argv):
                raise CommandTimeoutError(self.name, "timed out after 1s")
            return super()._execute(argv, env=env, timeout=timeout, stdin=stdin)

    result = install_exact(
        Slow(host, name="canary-1"), [("acme-web", "1.1.0")], allow_downgrades=False, timeout=1
    )
    assert not result.ok
    assert result.failure == "timeout"
    assert result.exit_code is None
    assert result.after == {"acme-web": "1.0.0"}


def test_audit_and_repair_nothing_to_do() -> None:
    transport = _transport(Host({"acme-web": "1.0.0"}))
    result = audit_and_repair(transport)
    assert result.ok
    assert not result.needed
    assert result.steps == ()
    assert not any("--configure" in call for call in transport.calls)


def test_audit_and_repair_configures_an_unpacked_package() -> None:
    host = Host({"acme-web": "1.1.0"})
    host.unpacked.add("acme-web")
    result = audit_and_repair(_transport(host))
    assert result.needed
    assert result.ok
    assert result.packages == ("acme-web",)
    assert "unpacked but not yet configured" in result.audit_before
    assert [step.argv[:2] for step in result.steps] == [("dpkg", "--configure"), ("apt-get", "-q")]
    assert "--no-remove" in result.steps[1].argv
    assert result.audit_after == ""


def test_audit_and_repair_reports_a_held_lock() -> None:
    host = Host({"acme-web": "1.1.0"})
    host.unpacked.add("acme-web")

    def locked(argv: tuple[str, ...]) -> CommandResult:
        if "check" in _core(argv):
            return _result(100, "", LOCK_ERROR)
        return host(argv)

    result = audit_and_repair(_transport(locked), lock_timeout=1)
    assert result.needed
    assert not result.ok
    assert result.steps == ()
    assert result.reason is not None
    assert "lock" in result.reason


def test_wait_for_dpkg_lock() -> None:
    free = wait_for_dpkg_lock(_transport(Host({})), 5)
    assert free.acquired
    held = wait_for_dpkg_lock(_transport(lambda argv: _result(100, "", LOCK_ERROR)), 1)
    assert not held.acquired
    assert "dpkg frontend lock" in held.detail


@pytest.mark.parametrize(
    ("code", "out", "running"),
    [
        (0, "acme-web is running", True),
        (3, "acme-web is not running", False),  # LSB, and systemctl for an inactive unit
        (1, "acme-web: unrecognized service", False),
        (1, "Usage: /etc/init.d/legacy {start|stop|restart}", None),  # no status: unknown
        (4, "", None),
    ],
)
def test_service_running_reads_the_status_exit_code(
    code: int, out: str, running: bool | None
) -> None:
    transport = _transport(lambda argv: _result(code, out))
    assert service_running(transport, "acme-web") is running
    assert transport.calls[-1] == ("service", "acme-web", "status")
    with pytest.raises(UnsafeArgumentError):
        service_running(transport, "a;b")


def test_restart_service_validates_the_name() -> None:
    transport = _transport(Host({}))
    result = restart_service(transport, "acme-web")
    assert result.ok
    assert result.output_tail == "Restarting acme-web"
    assert transport.calls[-1] == ("service", "acme-web", "restart")
    for bad in ("-acme", "acme web", "../x", "a;b", "", "..", "x/y"):
        with pytest.raises(UnsafeArgumentError):
            restart_service(transport, bad)
    assert validate_service_name("getty@tty1.service") == "getty@tty1.service"


def test_a_service_the_host_does_not_know_has_nothing_to_restart() -> None:
    """apt ships apt-daily.service: on a host without systemd (the lab) ``service`` knows no
    such service, so nothing by that name runs; any other failure still fails."""
    unknown = _transport(lambda argv: _result(1, err="apt-daily: unrecognized service\n"))
    result = restart_service(unknown, "apt-daily")
    assert (result.ok, result.exit_code) == (True, 1)
    assert result.output_tail == "apt-daily: unrecognized service"
    failing = _transport(lambda argv: _result(1, err="Job for nginx.service failed.\n"))
    assert not restart_service(failing, "nginx").ok
    other = _transport(lambda argv: _result(1, err="apt-daily: unrecognized service\n"))
    assert not restart_service(other, "nginx").ok


def test_reboot_hint_name_rule() -> None:
    names = ["libc6:amd64", "linux-image-6.1.0-21-amd64", "libc6-dev", "dbus", "openssl"]
    assert reboot_hint_packages(names) == ("libc6:amd64", "linux-image-6.1.0-21-amd64", "dbus")


def _fixture(folder: str, case: str) -> tuple[int, str, str]:
    data = json.loads((FIXTURES / folder / f"{case}.json").read_text(encoding="utf-8"))
    return data["exit_code"], data["stdout"], data["stderr"]


def test_simulate_install_adds_services_and_conffiles() -> None:
    sim = _fixture("AptSimulateInstall", "debian12_lab_upgrade_only")

    def respond(argv: tuple[str, ...]) -> CommandResult:
        if argv[0] == "apt-get":
            return _result(*sim)
        script = argv[2]
        if "dpkg-query -L" in script:
            return _result(0, "@@package acme-web\n/etc/init.d/acme-web\n/usr/lib/acme-web\n")
        md5 = "a09d7648c92beda3d1712b439960862d"
        return _result(
            0, f"acme-web\t /etc/init.d/acme-web {md5}\n@@md5sum\n{md5}  /etc/init.d/acme-web\n"
        )

    result = simulate_install(_transport(respond), [("acme-web", "1.1.0")])
    assert [c.name for c in result.upgrades] == ["acme-web"]
    assert result.services == {"acme-web": ("acme-web",)}
    assert result.restart_services == ("acme-web",)
    assert result.conffiles is not None
    assert result.modified_conffiles == ()
    assert not (result.has_removals)
    assert not (result.has_held)
    assert not (result.has_new_packages)


def test_simulate_install_new_packages_have_unknown_services() -> None:
    sim = _fixture("AptSimulateInstall", "debian12_lab_new_install_with_deps")
    transport = _transport(lambda argv: _result(*sim))
    result = simulate_install(
        transport, [("curl", "7.88.1-10+deb12u15")], only_upgrade=False, details=True
    )
    assert result.has_new_packages
    assert len(result.installs) == 13
    assert result.services is not None
    assert set(result.services.values()) == {None}
    assert result.conffiles == ()
    assert len(transport.calls) == 1


def test_refresh_package_lists_is_a_privileged_apt_update_that_waits_for_the_lock() -> None:
    def respond(argv: tuple[str, ...]) -> CommandResult:
        return CommandResult(
            host="", argv=argv, exit_code=0, stdout="Reading package lists...\n", stderr=""
        )

    transport = ScriptedTransport(respond, root=False)
    refresh_package_lists(transport, lock_timeout=30)
    (argv,) = transport.calls
    assert argv[:3] == ("sudo", "-n", "--")
    assert argv[-5:] == ("apt-get", "-q", "-o", "DPkg::Lock::Timeout=30", "update")
    assert "DEBIAN_FRONTEND=noninteractive" in argv  # through sudo's env, not dropped by it

    def fail(argv: tuple[str, ...]) -> CommandResult:
        return CommandResult(host="", argv=argv, exit_code=100, stdout="", stderr="E: no network")

    with pytest.raises(CommandFailedError, match="no network"):
        refresh_package_lists(ScriptedTransport(fail), lock_timeout=30)


# --------------------------------------------------------------------------- sudo refusals

# What sudo 1.9.13 (Debian 12) prints when ``sudo -n`` will not run the command, recorded
# here as user nobody (the real thing runs in test_sudo_refusal_on_this_machine below).
SUDO_PASSWORD = "sudo: a password is required\n"
SUDO_NOT_ALLOWED = (
    "Sorry, user lab is not allowed to execute '/usr/bin/env LC_ALL=C dpkg --audit' as root "
    "on canary-1.\n"
)


def _refusing(message: str, code: int = 1) -> Callable[[tuple[str, ...]], CommandResult]:
    """A host where sudo refuses everything and unprivileged commands work."""
    host = Host({"acme-web": "1.0.0"})

    def respond(argv: tuple[str, ...]) -> CommandResult:
        if argv[:2] == ("sudo", "-n"):
            return _result(code, "", message)
        return host(argv)

    return respond


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (SUDO_PASSWORD, 1),
        (SUDO_NOT_ALLOWED, 1),
        ("sudo: a terminal is required to read the password; either use the -S option\n", 1),
        ("sudo: account validation failure, is your account locked?\n", 1),
        ("env: 'sudo': No such file or directory\n", 127),
        ("sh: 1: sudo: not found\n", 127),
    ],
)
def test_sudo_refusal_is_a_privilege_problem_not_a_broken_dpkg(message: str, code: int) -> None:
    calls: list[Callable[[ScriptedTransport], object]] = [
        audit_and_repair,
        lambda t: install_exact(t, [("acme-web", "1.1.0")], allow_downgrades=False),
        lambda t: wait_for_dpkg_lock(t, 1),
        lambda t: restart_service(t, "acme-web"),
        lambda t: refresh_package_lists(t, lock_timeout=1),
    ]
    for call in calls:
        transport = ScriptedTransport(_refusing(message, code), name="canary-1", root=False)
        with pytest.raises(SudoRefusedError) as info:
            call(transport)
        text = str(info.value)
        assert text.startswith("canary-1: privilege problem: sudo refused")
        assert message.strip() in text
        assert "passwordless sudo" in text
        assert "broken" not in text
        assert "lock" not in text.split("(", maxsplit=1)[0]
        assert isinstance(info.value, CommandFailedError)  # existing handlers still apply


def test_a_failing_command_under_sudo_is_not_a_refusal() -> None:
    # dpkg's own "exit 2" with text mentioning sudo, and apt's lock error, stay what they are.
    lock = ScriptedTransport(lambda argv: _result(100, "", LOCK_ERROR), root=False)
    assert not wait_for_dpkg_lock(lock, 1).acquired
    odd = CommandResult(
        host="h",
        argv=("sudo", "-n", "--", "env", "x"),
        exit_code=2,
        stdout="",
        stderr=SUDO_PASSWORD,
    )
    assert sudo_refusal(odd) is None
    not_sudo = CommandResult(
        host="h", argv=("dpkg", "--audit"), exit_code=1, stdout="", stderr=SUDO_PASSWORD
    )
    assert sudo_refusal(not_sudo) is None
    refused = CommandResult(
        host="h",
        argv=("sudo", "-n", "--", "env", "x"),
        exit_code=1,
        stdout="",
        stderr="x\n" + SUDO_PASSWORD,
    )
    assert sudo_refusal(refused) == "sudo: a password is required"


def test_deployment_reports_sudo_refusal_as_a_privilege_problem(tmp_path: Path) -> None:
    from patchpilot.agents.deployment import deploy_host
    from patchpilot.core.audit import AuditLog
    from patchpilot.core.models import Host as InventoryHost
    from patchpilot.core.plan import PlanItem
    from patchpilot.core.schedule import RebootPolicy
    from patchpilot.core.settings import Settings

    settings = Settings(home=tmp_path / "home")
    item = PlanItem(
        host="canary-1",
        package="acme-web",
        from_version="1.0.0",
        to_version="1.1.0",
        rule="t",
        reason="t",
    )
    result = deploy_host(
        InventoryHost(name="canary-1", address="127.0.0.1"),
        [item],
        settings,
        [],
        dry_run=False,
        reboot_policy=RebootPolicy.NEVER,
        audit=AuditLog.for_settings(settings, run_id="r1", actor="tester"),
        transport_factory=lambda host, s: ScriptedTransport(
            _refusing(SUDO_PASSWORD), name="canary-1", root=False
        ),
    )
    (deployed,) = result.items
    assert deployed.status == "failed"
    assert deployed.reason is not None
    assert "privilege problem" in deployed.reason
    assert "sudo: a password is required" in deployed.reason
    assert "dpkg is in a broken state" not in deployed.reason


_REFUSAL_SCRIPT = """
from patchpilot.tools.packages import audit_and_repair, install_exact, refresh_package_lists
from patchpilot.tools.transport import LocalTransport
from patchpilot.tools.transport.base import SudoRefusedError

transport = LocalTransport("here")
assert not transport.is_root
for name, call in (
    ("audit", audit_and_repair),
    ("install", lambda t: install_exact(t, [("base-files", "12.4")], allow_downgrades=False)),
    ("refresh", lambda t: refresh_package_lists(t, lock_timeout=1)),
):
    try:
        call(transport)
    except SudoRefusedError as exc:
        print(name, "REFUSED", exc)
    else:
        print(name, "NO ERROR")
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or not (shutil.which("setpriv") and shutil.which("sudo")),
    reason="needs root, setpriv and sudo to run as user nobody",
)
def test_sudo_refusal_on_this_machine(tmp_path: Path) -> None:
    """The real sudo, as user nobody (who may not sudo): reported as a privilege problem."""
    script = tmp_path / "refusal.py"
    script.write_text(_REFUSAL_SCRIPT)
    script.chmod(0o644)
    tmp_path.chmod(0o755)
    for parent in tmp_path.parents:
        if parent == Path("/tmp"):
            break
        parent.chmod(parent.stat().st_mode | 0o055)
    res = subprocess.run(
        [
            *("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"),
            *(sys.executable, "-B", str(script)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "HOME": "/nonexistent"},
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    lines = [line for line in res.stdout.splitlines() if " REFUSED " in line or " NO " in line]
    assert [line.split()[:2] for line in lines] == [
        ["audit", "REFUSED"],
        ["install", "REFUSED"],
        ["refresh", "REFUSED"],
    ], res.stdout
    for line in lines:
        assert "privilege problem: sudo refused" in line
        assert "sudo: a password is required" in line
        assert "broken" not in line

"""apt/dpkg operations that change a Debian-family host, with typed results.

Every command is an argv list built from validated input (:mod:`patchpilot.core.validate`), runs as
root
(``sudo -n`` unless already root) with :data:`APT_ENV`:

* ``DEBIAN_FRONTEND=noninteractive``: debconf never asks;
* ``LC_ALL=C``: stable, unlocalised output to classify errors;
* ``NEEDRESTART_MODE=l``: needrestart (when installed) only lists services; restarting them is
  the deployment's explicit step (:func:`restart_service`), never a side effect of apt.

Conffiles: installs pass ``-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold``
(take the maintainer's default when there is one, otherwise keep the local file; never prompt).

The dpkg lock: apt >= 1.9.11 waits for the lock itself with ``-o DPkg::Lock::Timeout=N``
(Debian 12 has apt 2.6), so every apt-get call here carries it (:func:`lock_timeout_options`)
instead of polling ``fuser``/``lsof`` (racy: the lock can be taken between the poll and the
install). Measured on the lab: apt notices a released lock within a few seconds (it re-tries
on its own schedule), and gives up after N seconds with ``E: Unable to acquire the dpkg frontend
lock``. :func:`wait_for_dpkg_lock` exposes the same wait for callers that must run plain
``dpkg`` (which cannot wait): it runs ``apt-get check`` with the option, which takes and
releases the same locks.

sudo: when ``sudo -n`` itself refuses (a password is required, the user may not run the
command, sudo is missing), every function here raises
:class:`~patchpilot.tools.transport.base.SudoRefusedError`, a privilege problem naming sudo's
message, and
never reports it as a broken dpkg, a held lock or a failed install.

Never used: ``--allow-remove-essential``, ``--force-yes``, shell strings. Removals are refused
with ``--no-remove`` unless the caller explicitly allows them; held packages are only changed
with an explicit ``allow_held``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core import versions
from patchpilot.core.errors import (
    CommandFailedError,
    CommandTimeoutError,
    InvalidVersionError,
    UnsafeArgumentError,
)
from patchpilot.core.models import CommandResult, Ecosystem
from patchpilot.core.validate import validate_package_name, validate_service_name
from patchpilot.tools.facts.apt_simulate import validate_items
from patchpilot.tools.transport.base import SudoRefusedError

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = [
    "APT_ENV",
    "DEFAULT_LOCK_TIMEOUT",
    "InstallFailure",
    "InstallResult",
    "LockWaitResult",
    "RepairResult",
    "RepairStep",
    "ServiceResult",
    "audit_and_repair",
    "install_argv",
    "install_exact",
    "installed_versions",
    "lock_timeout_options",
    "refresh_package_lists",
    "restart_service",
    "wait_for_dpkg_lock",
]

REFRESH_TIMEOUT: Final = 600.0
"""Seconds ``apt-get update`` may take on one host."""

_log = structlog.get_logger(__name__)

APT_ENV: Final[Mapping[str, str]] = MappingProxyType(
    {"DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C", "NEEDRESTART_MODE": "l"}
)
"""Environment of every command here (see the module docstring)."""

DEFAULT_LOCK_TIMEOUT: Final = 120
"""Seconds apt waits for the dpkg lock before giving up."""
DEFAULT_INSTALL_TIMEOUT: Final = 900.0
"""Seconds one install may take, lock wait included."""
TAIL_LINES: Final = 40
"""Lines of stdout/stderr kept in results."""

_CONFFILE_OPTIONS: Final = (
    "-o",
    "Dpkg::Options::=--force-confdef",
    "-o",
    "Dpkg::Options::=--force-confold",
)

InstallFailure = Literal[
    "held", "removals", "lock", "not-found", "downgrade", "interrupted", "timeout",
    "apt-error", "post-state",
]  # fmt: skip
"""Why an install failed: the first matching apt error, or a post-state mismatch."""

_FAILURES: Final[tuple[tuple[InstallFailure, re.Pattern[str]], ...]] = (
    ("held", re.compile(r"Held packages were changed")),
    ("removals", re.compile(r"Packages need to be removed but remove is disabled")),
    ("downgrade", re.compile(r"Packages were downgraded and -y was used")),
    ("interrupted", re.compile(r"dpkg was interrupted")),
    ("lock", re.compile(r"Could not get lock|Unable to acquire the dpkg (?:frontend )?lock")),
    ("not-found", re.compile(r"Version '[^']*' for '[^']*' was not found|Unable to locate")),
)
_NOT_FOUND_RE: Final = re.compile(r"no packages found matching (?P<name>\S+)")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class InstallResult(_Record):
    """The outcome of :func:`install_exact` on one host."""

    host: str
    requested: tuple[str, ...] = Field(description="the NAME=VERSION pins")
    changed: bool = Field(description="apt-get ran (False: every package was already at target)")
    ok: bool = Field(description="apt-get succeeded and dpkg reports every requested version")
    failure: InstallFailure | None = None
    reason: str | None = Field(default=None, description="human-readable cause when not ok")
    argv: tuple[str, ...] | None = None
    exit_code: int | None = None
    before: dict[str, str | None] = Field(description="installed versions before (None: absent)")
    after: dict[str, str | None] = Field(description="installed versions read back after")
    stdout_tail: str = ""
    stderr_tail: str = ""
    duration_s: float = 0.0


class LockWaitResult(_Record):
    """The outcome of :func:`wait_for_dpkg_lock`."""

    host: str
    acquired: bool = Field(description="the dpkg locks were free (taken and released) in time")
    waited_s: float
    detail: str = ""


class RepairStep(_Record):
    """One command :func:`audit_and_repair` ran."""

    argv: tuple[str, ...]
    exit_code: int
    output_tail: str = ""
    duration_s: float = 0.0


class RepairResult(_Record):
    """What :func:`audit_and_repair` found and did."""

    host: str
    needed: bool = Field(description="dpkg reported a problem or an unfinished journal")
    packages: tuple[str, ...] = Field(default=(), description="packages named by dpkg --audit")
    journal_pending: bool = Field(default=False, description="/var/lib/dpkg/updates not empty")
    audit_before: str = ""
    steps: tuple[RepairStep, ...] = ()
    audit_after: str = ""
    ok: bool = Field(description="the host ends with a clean dpkg --audit and an empty journal")
    reason: str | None = None


class ServiceResult(_Record):
    """The outcome of :func:`restart_service`."""

    host: str
    service: str
    ok: bool
    exit_code: int
    output_tail: str = ""
    duration_s: float = 0.0


_PROGRESS_RE: Final = re.compile(r"^\(Reading database \.\.\.(?: \d+%)?\s*$")


def _root(transport: Transport, argv: Sequence[str], *, timeout: float) -> CommandResult:
    """Run ``argv`` as root with :data:`APT_ENV`.

    Raises:
        SudoRefusedError: ``sudo -n`` refused to run it (not the command's own failure).
    """
    result = transport.run(argv, sudo=True, env=dict(APT_ENV), timeout=timeout)
    SudoRefusedError.check(result)
    return result


def _tail(text: str, lines: int = TAIL_LINES) -> str:
    """The last ``lines`` lines, without dpkg's ``(Reading database ... N%`` progress lines."""
    kept = [line for line in text.rstrip("\n").splitlines() if not _PROGRESS_RE.match(line)]
    return "\n".join(kept[-lines:])


def lock_timeout_options(seconds: int) -> list[str]:
    """``["-o", "DPkg::Lock::Timeout=N"]``: apt waits up to N seconds for the dpkg lock.

    Raises:
        UnsafeArgumentError: ``seconds`` is not an int in 0..86400.
    """
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 0 <= seconds <= 86400:
        raise UnsafeArgumentError("lock timeout", repr(seconds), "expected 0..86400 seconds")
    return ["-o", f"DPkg::Lock::Timeout={seconds}"]


def installed_versions(transport: Transport, packages: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each package, from dpkg's status database (the pre/post-state).

    Runs ``dpkg-query -W -f '${binary:Package}\\t${Package}\\t${Version}\\t${db:Status-Abbrev}\\n'
    -- PKG...`` (read-only; exit 1 with ``no packages found matching NAME`` is expected for
    packages dpkg has never seen).

    Returns:
        ``{name: version}`` in argument order; ``None`` when the package is not *fully*
        installed: unknown, removed, config-files only, or half-installed/unpacked (a version
        that is not configured must not count as deployed). A ``name:arch`` argument matches
        only that architecture.

    Raises:
        UnsafeArgumentError: a name is refused.
        CommandFailedError: dpkg-query failed otherwise (stderr attached).
    """
    names = tuple(dict.fromkeys(validate_package_name(p, Ecosystem.DEBIAN) for p in packages))
    if not names:
        return {}
    argv = [
        "dpkg-query",
        "-W",
        "-f",
        "${binary:Package}\\t${Package}\\t${Version}\\t${db:Status-Abbrev}\\n",
        "--",
        *names,
    ]
    result = transport.run(argv, env=dict(APT_ENV), timeout=60)
    if result.exit_code not in (0, 1) or (
        result.exit_code == 1 and not _NOT_FOUND_RE.search(result.stderr)
    ):
        raise CommandFailedError(result.host, result.argv, result.exit_code, result.stderr)
    found: dict[str, str] = {}
    for line in result.stdout.splitlines():
        fields = line.split("\t")
        if len(fields) != 4:
            raise CommandFailedError(
                result.host, result.argv, result.exit_code, f"unexpected dpkg-query row {line!r}"
            )
        binary, package, version, abbrev = fields
        if len(abbrev) >= 2 and abbrev[1] == "i" and version:
            found[binary] = version
            found.setdefault(package, version)
    return {name: found.get(name) for name in names}


def install_argv(
    items: Sequence[tuple[str, str]],
    *,
    allow_downgrades: bool,
    allow_held: bool = False,
    allow_removals: bool = False,
    only_upgrade: bool | None = None,
    lock_timeout: int = DEFAULT_LOCK_TIMEOUT,
) -> list[str]:
    """The ``apt-get install`` argv :func:`install_exact` runs (validated; see its docstring)."""
    clean = validate_items(items)
    argv = ["apt-get", "-q", "-y", *lock_timeout_options(lock_timeout), *_CONFFILE_OPTIONS]
    argv.append("install")
    if only_upgrade if only_upgrade is not None else not allow_downgrades:
        argv.append("--only-upgrade")
    if allow_downgrades:
        argv.append("--allow-downgrades")
    if allow_held:
        argv.append("--allow-change-held-packages")
    if not allow_removals:
        argv.append("--no-remove")
    return [*argv, "--", *(f"{name}={version}" for name, version in clean)]


def _same_version(a: str | None, b: str) -> bool:
    if a is None:
        return False
    try:
        return versions.compare(Ecosystem.DEBIAN, a, b) == 0
    except InvalidVersionError:
        return a == b


def _classify(stderr: str) -> InstallFailure:
    for failure, pattern in _FAILURES:
        if pattern.search(stderr):
            return failure
    return "apt-error"


def _last_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("E: ")]
    if errors:
        return errors[-1]
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def install_exact(
    transport: Transport,
    items: Sequence[tuple[str, str]],
    *,
    allow_downgrades: bool,
    allow_held: bool = False,
    allow_removals: bool = False,
    only_upgrade: bool | None = None,
    lock_timeout: int = DEFAULT_LOCK_TIMEOUT,
    timeout: float = DEFAULT_INSTALL_TIMEOUT,
) -> InstallResult:
    """Install exact versions non-interactively and verify them from dpkg afterwards.

    Runs ``apt-get -q -y -o DPkg::Lock::Timeout=N -o Dpkg::Options::=--force-confdef
    -o Dpkg::Options::=--force-confold install [--only-upgrade] [--allow-downgrades]
    [--allow-change-held-packages] [--no-remove] -- PKG=VER...``. ``--only-upgrade`` is used by
    default for upgrades (a requested package that is not installed is then skipped and the
    result fails its post-state check) and left out when ``allow_downgrades`` (a rollback
    installs recorded versions, whatever the direction).

    Idempotent: when every package is already at its target, apt-get is not run
    (``changed=False``, ``ok=True``).

    Args:
        transport: an open transport to the host.
        items: ``(name, version)`` pairs.
        allow_downgrades: pass ``--allow-downgrades`` (rollback).
        allow_held: pass ``--allow-change-held-packages`` (only with an approval).
        allow_removals: leave out ``--no-remove`` (only when the simulation's removals were
            approved).
        only_upgrade: force ``--only-upgrade`` on/off; default ``not allow_downgrades``.
        lock_timeout: seconds apt waits for the dpkg lock.
        timeout: seconds the whole apt-get run may take (including the lock wait).

    Returns:
        An :class:`InstallResult`; ``ok`` is False with ``failure``/``reason`` when apt-get
        failed (held, removals, lock, not-found, downgrade, interrupted, timeout, apt-error) or
        dpkg does not report every requested version afterwards (post-state). After a
        ``timeout`` or ``interrupted`` failure, run :func:`audit_and_repair`.

    Raises:
        UnsafeArgumentError: a name or version is refused.
        SudoRefusedError: sudo refused to run apt-get as root.
        TransportError: the host could not be reached at all.
    """
    clean = validate_items(items)
    argv = install_argv(
        clean,
        allow_downgrades=allow_downgrades,
        allow_held=allow_held,
        allow_removals=allow_removals,
        only_upgrade=only_upgrade,
        lock_timeout=lock_timeout,
    )
    names = [name for name, _ in clean]
    pins = tuple(f"{name}={version}" for name, version in clean)
    before = installed_versions(transport, names)
    if all(_same_version(before[name], version) for name, version in clean):
        _log.info("apt.install.noop", host=transport.name, packages=pins)
        return InstallResult(
            host=transport.name, requested=pins, changed=False, ok=True, before=before, after=before
        )
    _log.info("apt.install.start", host=transport.name, packages=pins, downgrades=allow_downgrades)
    started = time.monotonic()
    result: CommandResult | None = None
    failure: InstallFailure | None = None
    reason: str | None = None
    try:
        result = _root(transport, argv, timeout=timeout)
    except CommandTimeoutError as exc:
        failure, reason = "timeout", f"apt-get did not finish within {timeout:g}s: {exc}"
    duration = time.monotonic() - started
    after = installed_versions(transport, names)
    if result is not None and not result.ok:
        failure = _classify(result.stderr)
        reason = _last_error(result.stderr)
    if failure is None:
        wrong = [
            f"{name} is {after[name] or 'not installed'}, wanted {version}"
            for name, version in clean
            if not _same_version(after[name], version)
        ]
        if wrong:
            failure, reason = "post-state", "; ".join(wrong)
    outcome = InstallResult(
        host=transport.name,
        requested=pins,
        changed=True,
        ok=failure is None,
        failure=failure,
        reason=reason,
        argv=tuple(argv),
        exit_code=None if result is None else result.exit_code,
        before=before,
        after=after,
        stdout_tail=_tail(result.stdout) if result is not None else "",
        stderr_tail=_tail(result.stderr) if result is not None else "",
        duration_s=round(duration, 3),
    )
    _log.info(
        "apt.install.end",
        host=transport.name,
        ok=outcome.ok,
        failure=failure,
        reason=reason,
        duration_s=outcome.duration_s,
    )
    return outcome


def wait_for_dpkg_lock(transport: Transport, timeout: int = DEFAULT_LOCK_TIMEOUT) -> LockWaitResult:
    """Wait (bounded) until the dpkg locks are free, for commands that cannot wait themselves.

    apt-get calls should pass :func:`lock_timeout_options` instead (see the module docstring);
    this is for plain ``dpkg`` (``dpkg --configure -a``), which fails at once on a held lock.
    It runs ``apt-get -q -o DPkg::Lock::Timeout=N check``: apt takes the frontend and dpkg
    locks (waiting up to N seconds), checks the cache and releases them. A free lock can of
    course be taken again right after; the dpkg call that follows fails cleanly then.

    Returns:
        ``acquired`` False only when apt reported a lock error; other ``apt-get check`` errors
        (broken dependencies, an interrupted dpkg) still mean the lock was free.

    Raises:
        SudoRefusedError: sudo refused to run apt-get as root (not a held lock).
    """
    started = time.monotonic()
    argv = ["apt-get", "-q", *lock_timeout_options(timeout), "check"]
    result = _root(transport, argv, timeout=timeout + 60.0)
    waited = round(time.monotonic() - started, 3)
    locked = _classify(result.stderr) == "lock" and not result.ok
    return LockWaitResult(
        host=transport.name,
        acquired=not locked,
        waited_s=waited,
        detail=_last_error(result.stderr) if not result.ok else "",
    )


_AUDIT_PACKAGE_RE: Final = re.compile(r"^ (?P<name>[a-z0-9][a-z0-9+.:-]+)(?:\s|$)")
_JOURNAL_SCRIPT: Final = "ls -A /var/lib/dpkg/updates"


def _audit(transport: Transport) -> tuple[str, tuple[str, ...], bool]:
    """``dpkg --audit`` output, the package names it lists, and whether the journal is pending."""
    audit = _root(transport, ["dpkg", "--audit"], timeout=120)
    if audit.exit_code not in (0, 1):
        raise CommandFailedError(audit.host, audit.argv, audit.exit_code, audit.stderr)
    text = audit.stdout.strip()
    names = tuple(
        dict.fromkeys(
            m["name"] for line in audit.stdout.splitlines() if (m := _AUDIT_PACKAGE_RE.match(line))
        )
    )
    journal = _root(transport, ["sh", "-c", _JOURNAL_SCRIPT], timeout=60)
    pending = journal.ok and bool(journal.stdout.strip())
    if audit.exit_code == 1 and not text:
        text = audit.stderr.strip()
    return text, names, pending


def audit_and_repair(
    transport: Transport,
    *,
    lock_timeout: int = DEFAULT_LOCK_TIMEOUT,
    timeout: float = DEFAULT_INSTALL_TIMEOUT,
) -> RepairResult:
    """Bring a host interrupted mid-install to a known state (crash safety).

    1. ``dpkg --audit`` (non-empty output = half-installed, unpacked-not-configured or
       triggers-pending packages; dpkg 1.21 exits 0 even then) and a look at dpkg's journal
       ``/var/lib/dpkg/updates`` (non-empty after a kill in the middle of dpkg).
    2. When either reports something: :func:`wait_for_dpkg_lock`, then
       ``dpkg --configure -a --force-confdef --force-confold`` and
       ``apt-get -q -y -o DPkg::Lock::Timeout=N ... --no-remove -f install`` (finish what apt
       started, never by removing packages), each bounded by ``timeout``.
    3. ``dpkg --audit`` again.

    Returns:
        A :class:`RepairResult`; ``ok`` when the final audit is clean and the journal empty
        (nothing to do is ``needed=False, ok=True``).

    Raises:
        SudoRefusedError: sudo refused to run dpkg as root (a privilege problem: nothing is
            known about dpkg's state, and it is never reported as broken).
        TransportError: the host could not be reached, or dpkg --audit itself failed.
    """
    before, packages, pending = _audit(transport)
    if not before and not pending:
        return RepairResult(host=transport.name, needed=False, ok=True)
    _log.warning("apt.dpkg_repair.needed", host=transport.name, packages=packages, journal=pending)
    steps: list[RepairStep] = []
    reason: str | None = None
    lock = wait_for_dpkg_lock(transport, lock_timeout)
    commands = [
        ["dpkg", "--configure", "-a", "--force-confdef", "--force-confold"],
        [
            "apt-get",
            "-q",
            "-y",
            *lock_timeout_options(lock_timeout),
            *_CONFFILE_OPTIONS,
            "--no-remove",
            "-f",
            "install",
        ],
    ]
    if not lock.acquired:
        reason = f"dpkg lock still held after {lock_timeout}s: {lock.detail}"
        commands = []
    for argv in commands:
        started = time.monotonic()
        try:
            run = _root(transport, argv, timeout=timeout)
        except CommandTimeoutError as exc:
            steps.append(RepairStep(argv=tuple(argv), exit_code=-1, output_tail=str(exc)))
            reason = f"{argv[0]} timed out after {timeout:g}s"
            break
        steps.append(
            RepairStep(
                argv=tuple(argv),
                exit_code=run.exit_code,
                output_tail=_tail(run.stdout + run.stderr),
                duration_s=round(time.monotonic() - started, 3),
            )
        )
        if not run.ok:
            reason = f"{argv[0]} exited {run.exit_code}: {_last_error(run.stderr)}"
            break
    after, _, still_pending = _audit(transport)
    ok = not after and not still_pending
    if not ok and reason is None:
        reason = "dpkg still reports problems after repair"
    result = RepairResult(
        host=transport.name,
        needed=True,
        packages=packages,
        journal_pending=pending,
        audit_before=before,
        steps=tuple(steps),
        audit_after=after,
        ok=ok,
        reason=None if ok else reason,
    )
    _log.info("apt.dpkg_repair.end", host=transport.name, ok=ok, reason=result.reason)
    return result


def service_running(transport: Transport, name: str, *, timeout: float = 30.0) -> bool | None:
    """Whether a service runs, by ``service NAME status`` (root; ``systemctl status`` on systemd).

    Exit 0 (LSB: running) is ``True``; exit 3 (LSB and systemd: not running, including a
    oneshot unit such as ``apt-daily-upgrade`` between its timer's runs) and
    ``NAME: unrecognized service`` are ``False``; anything else (a script without ``status``,
    a dead process with its pid file) is ``None``: unknown.

    Raises:
        UnsafeArgumentError: the name is refused.
        SudoRefusedError: sudo refused to run it as root.
        CommandTimeoutError: the status did not answer in time.
    """
    service = validate_service_name(name)
    result = _root(transport, ["service", service, "status"], timeout=timeout)
    if result.exit_code == 0:
        return True
    unknown = f"{service}: unrecognized service" in (result.stderr + result.stdout)
    if result.exit_code == 3 or (result.exit_code == 1 and unknown):
        return False
    return None


def restart_service(transport: Transport, name: str, *, timeout: float = 120.0) -> ServiceResult:
    """Restart a service with ``service NAME restart`` (root).

    ``service`` runs the SysV init script on hosts without systemd (the lab) and delegates to
    ``systemctl restart`` on systemd hosts, so one argv serves both.

    Args:
        transport: an open transport to the host.
        name: the service, checked with :func:`patchpilot.core.validate.validate_service_name`.
        timeout: seconds before the transport gives up.

    ``NAME: unrecognized service`` (exit 1) means the host has no init script of that name and
    no systemd running it (a systemd-only unit such as ``apt-daily`` on a host without
    systemd): nothing by that name can be running, so there is nothing to restart and it counts
    as done (``ok``, the message kept in ``output_tail``).

    Returns:
        A :class:`ServiceResult` (``ok`` = exit status 0, or nothing to restart; callers decide,
        then run health checks).

    Raises:
        UnsafeArgumentError: the name is refused.
        SudoRefusedError: sudo refused to run the restart as root.
        CommandTimeoutError: the restart did not finish in time.
    """
    service = validate_service_name(name)
    started = time.monotonic()
    result = _root(transport, ["service", service, "restart"], timeout=timeout)
    unknown = result.exit_code == 1 and f"{service}: unrecognized service" in (
        result.stderr + result.stdout
    )
    outcome = ServiceResult(
        host=transport.name,
        service=service,
        ok=result.ok or unknown,
        exit_code=result.exit_code,
        output_tail=_tail(result.stdout + result.stderr),
        duration_s=round(time.monotonic() - started, 3),
    )
    _log.info("apt.service.restart", host=transport.name, service=service, ok=outcome.ok)
    return outcome


def refresh_package_lists(
    transport: Transport, *, lock_timeout: int = DEFAULT_LOCK_TIMEOUT
) -> CommandResult:
    """Run ``apt-get update`` on the host (root through ``sudo -n``): it changes the host's
    package lists, so discovery runs it only when asked (``scan --refresh``).

    Args:
        transport: an open transport to the host.
        lock_timeout: seconds apt waits for the lists lock held by another apt.

    Returns:
        The command's result.

    Raises:
        SudoRefusedError: sudo refused to run apt-get as root.
        CommandFailedError: apt-get failed (no network, a broken source); its stderr is
            attached.
    """
    return transport.run(
        ["apt-get", "-q", *lock_timeout_options(lock_timeout), "update"],
        sudo=True,
        check=True,
        env=dict(APT_ENV),
        timeout=REFRESH_TIMEOUT + lock_timeout,
    )

"""A scripted :class:`~patchpilot.tools.transport.base.Transport` for hermetic unit tests.

The real transports are tested against a real sshd and this machine (tests/integration); unit
tests of code that *uses* a transport replay recorded command results through this one.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
import re
import shlex
import threading
import time
from collections.abc import Callable, Mapping, Sequence

from patchpilot.core.models import CommandResult, Host
from patchpilot.core.settings import Settings
from patchpilot.tools.transport.base import Transport

__all__ = [
    "HEALTH_ARGV",
    "FakeDebianHost",
    "ScriptedTransport",
    "batch_commands",
    "fleet_factory",
    "replay",
]

_STEP_RE = re.compile(
    r"printf '%s (?P<i>\d+) B\\n' \"\$1\"; (?P<command>.*?); "
    r"printf '\\n%s (?P=i) E %d\\n' \"\$1\" \"\$\?\"",
    re.DOTALL,
)


def batch_commands(argv: tuple[str, ...]) -> list[tuple[str, ...]] | None:
    """The fact commands inside a :func:`~patchpilot.tools.facts.base.gather_many` batch, else
    None."""
    if len(argv) != 5 or argv[:2] != ("sh", "-c") or not argv[4].startswith("pp-"):
        return None
    return [tuple(shlex.split(m["command"])) for m in _STEP_RE.finditer(argv[2])]


class ScriptedTransport(Transport):
    """Answers every argv with ``respond(argv)``; records argv and env (thread-safe).

    Args:
        respond: the answer to one command (its ``host`` and ``argv`` are filled in).
        name: the host name.
        root: what :attr:`is_root` says (``False`` makes ``sudo=True`` commands use ``sudo -n``).
        delay: seconds each command takes (for concurrency tests).
    """

    def __init__(
        self,
        respond: Callable[[tuple[str, ...]], CommandResult],
        name: str = "fake",
        *,
        root: bool = True,
        delay: float = 0.0,
    ) -> None:
        super().__init__(name)
        self.respond = respond
        self.root = root
        self.delay = delay
        self.calls: list[tuple[str, ...]] = []
        """Every round trip, as run (a batch is one ``sh -c`` call)."""
        self.commands: list[tuple[str, ...]] = []
        """Every command, with batches expanded into their fact commands."""
        self.envs: list[dict[str, str]] = []
        self._lock = threading.Lock()

    @property
    def is_root(self) -> bool:
        return self.root

    def _execute(
        self,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        timeout: float | None,
        stdin: str | None,
    ) -> CommandResult:
        with self._lock:
            self.calls.append(argv)
            self.envs.append(env)
        if self.delay:
            time.sleep(self.delay)
        inner = batch_commands(argv)
        if inner is None:
            with self._lock:
                self.commands.append(argv)
            return self.respond(argv).model_copy(update={"host": self.name, "argv": argv})
        # A batch: answer each fact command as a real shell would, between the token's marks.
        token = argv[4]
        out: list[str] = []
        err: list[str] = []
        for i, command in enumerate(inner):
            with self._lock:
                self.commands.append(command)
            result = self.respond(command)
            out.append(f"{token} {i} B\n{result.stdout}\n{token} {i} E {result.exit_code}\n")
            err.append(result.stderr)
        return CommandResult(
            host=self.name, argv=argv, exit_code=0, stdout="".join(out), stderr="".join(err)
        )


def replay(
    answers: Mapping[tuple[str, ...], tuple[int, str, str]],
) -> Callable[[tuple[str, ...]], CommandResult]:
    """A ``respond`` that answers recorded argvs with (exit code, stdout, stderr); 127 else."""

    def respond(argv: tuple[str, ...]) -> CommandResult:
        code, out, err = answers.get(argv, (127, "", "not recorded"))
        return CommandResult(host="", argv=argv, exit_code=code, stdout=out, stderr=err)

    return respond


_OS_RELEASE = """PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
"""

_APT_POLICY = """Package files:
 100 /var/lib/dpkg/status
     release a=now
 500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages
     release v=12,o=Debian,a=oldstable-security,n=bookworm-security,l=Debian-Security,c=main,b=amd64
     origin deb.debian.org
 500 http://deb.debian.org/debian bookworm/main amd64 Packages
     release v=12.12,o=Debian,a=oldstable,n=bookworm,l=Debian,c=main,b=amd64
     origin deb.debian.org
 500 file:/srv/acme-repo ./ Packages
     release c=
Pinned packages:
"""

HEALTH_ARGV = ("acme-health", "--port", "8081")
"""The health check command a :class:`FakeDebianHost` answers (503 for a broken version)."""


def _ok(out: str = "", err: str = "", code: int = 0) -> CommandResult:
    return CommandResult(host="", argv=("x",), exit_code=code, stdout=out, stderr=err)


class FakeDebianHost:
    """A scripted Debian 12 host for whole-graph tests: a dpkg database, a local repository
    offering ``available`` versions, apt simulation and installs, and a health check
    (:data:`HEALTH_ARGV`) that fails while a ``broken`` version is installed.

    Use it as a transport's ``respond``; :meth:`transport` makes a fresh
    :class:`ScriptedTransport` per connection (as the graphs open one per step).

    Args:
        name: the host name.
        installed: package -> installed version.
        available: package -> versions the repository offers, oldest first.
        broken: versions whose health check fails.
        held: packages held with ``apt-mark hold``.
        security: packages whose updates come from ``bookworm-security`` (else the local
            repository).
        unreachable: every connection fails (as an unreachable host).
        host_key_changed: every connection is refused for a changed host key.
        install_error: every real install fails with this message (dpkg refuses to run).
        removes: package -> the installed packages its upgrade removes.
        listening: pid -> (process name, IPv4 address, TCP port) of a listening socket, answered
            by the ``ListeningSockets`` script.
        loaded: pid -> the installed packages whose files that process maps, answered by the
            ``MappedPackages`` script (every pid counts as running; listening ones are also
            read one by one).
        changelogs: package -> the ``debian/changelog`` text its candidate ``.deb`` ships,
            answered by the changelog fetch script (others: "not scripted").
        sources: binary package -> its source package (others: the binary's own name), as
            ``dpkg-query`` reports it (e.g. ``{"zlib1g": "zlib"}``).
    """

    def __init__(
        self,
        name: str,
        installed: Mapping[str, str],
        available: Mapping[str, Sequence[str]],
        *,
        broken: frozenset[str] = frozenset({"1.2.0"}),
        held: frozenset[str] = frozenset(),
        unreachable: bool = False,
        security: frozenset[str] = frozenset(),
        host_key_changed: bool = False,
        install_error: str = "",
        removes: Mapping[str, Sequence[str]] | None = None,
        listening: Mapping[int, tuple[str, str, int]] | None = None,
        loaded: Mapping[int, Sequence[str]] | None = None,
        changelogs: Mapping[str, str] | None = None,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.installed = dict(installed)
        self.available = {k: list(v) for k, v in available.items()}
        self.broken = broken
        self.held = held
        self.unreachable = unreachable
        self.security = security
        self.host_key_changed = host_key_changed
        self.install_error = install_error
        self.removes = dict(removes or {})
        self.listening = dict(listening or {})
        self.loaded = {pid: tuple(names) for pid, names in (loaded or {}).items()}
        self.changelogs = dict(changelogs or {})
        self.sources = dict(sources or {})
        self.installs: list[tuple[str, ...]] = []
        """Every real (not simulated) ``apt-get install``, as run."""
        self.health_checks = 0
        self.commands: list[tuple[str, ...]] = []
        self.on_install: Callable[[], None] | None = None
        """Called after every real install (e.g. to persist the state across processes)."""
        self._lock = threading.Lock()

    def transport(self) -> ScriptedTransport:
        """A new connection to this host."""
        from patchpilot.core.errors import HostConnectError, HostKeyError

        if self.unreachable:
            raise HostConnectError(self.name, "cannot connect to 127.0.0.1:22: connection refused")
        if self.host_key_changed:
            raise HostKeyError(self.name, "host key for [127.0.0.1]:22 does not match known_hosts")
        return ScriptedTransport(self, self.name)

    def __call__(self, argv: tuple[str, ...]) -> CommandResult:
        with self._lock:
            self.commands.append(argv)
            return self._answer(argv)

    # ------------------------------------------------------------------ answers

    def _candidate(self, name: str) -> str | None:
        versions = self.available.get(name) or []
        return versions[-1] if versions else None

    def _answer(self, argv: tuple[str, ...]) -> CommandResult:
        if argv[:2] == ("sh", "-c") and "os-release" in argv[2]:
            return _ok(_OS_RELEASE)
        if argv == ("uname", "-r"):
            return _ok("6.1.0-28-amd64\n")
        if argv[:2] == ("sh", "-c") and "reboot-required" in argv[2]:
            return _ok("reboot-required: no\n")
        if argv[0] == "dpkg-query" and "--" in argv:
            rows, missing = [], []
            for name in argv[argv.index("--") + 1 :]:
                if name in self.installed:
                    rows.append(f"{name}:amd64\t{name}\t{self.installed[name]}\tii \n")
                else:
                    missing.append(f"dpkg-query: no packages found matching {name}\n")
            return _ok("".join(rows), "".join(missing), 1 if missing else 0)
        if argv[0] == "dpkg-query" and any("Status-Want" in a for a in argv):
            return _ok(
                "".join(f"{'hold' if n in self.held else 'install'}\t{n}\n" for n in self.installed)
            )
        if argv[0] == "dpkg-query" and any("binary:Package" in a for a in argv):
            return _ok(
                "".join(
                    f"{n}\tii \t{v}\tamd64\t{self.sources.get(n, n)}\t{v}\n"
                    for n, v in self.installed.items()
                )
            )
        if argv == ("apt-cache", "policy"):
            return _ok(_APT_POLICY)
        if argv[:2] == ("apt-cache", "policy"):
            return _ok(self._candidates(argv[argv.index("--") + 1 :]))
        if argv[0] == "apt-get" and "dist-upgrade" in argv and "-s" in argv:
            return _ok(self._pending())
        if argv[0] == "apt-get" and "-s" in argv:
            return self._simulate(argv)
        if argv[0] == "apt-get" and ("check" in argv or "-f" in argv):
            return _ok()
        if argv[0] == "apt-get" and "install" in argv:
            return self._install(argv)
        if argv == ("dpkg", "--audit"):
            return _ok()
        if argv[:2] == ("dpkg", "--configure"):
            return _ok()
        if argv[0] == "service":
            return _ok()
        if argv[:2] == ("sh", "-c") and "/var/lib/dpkg/info" in argv[2]:
            return self._loaded(tuple(int(pid) for pid in argv[4:]))
        if argv[:2] == ("sh", "-c") and "apt-get download" in argv[2]:
            return self._changelog(argv[4])
        if argv[:2] == ("sh", "-c") and len(argv) > 4:
            return self._script(argv)
        if argv[:2] == ("sh", "-c") and "/proc/net/" in argv[2]:
            return _ok(self._sockets())
        if argv[:2] == ("sh", "-c") and "(deleted)" in argv[2]:
            return _ok("== maps\n== comm\n")
        if argv[:2] == ("sh", "-c") and "needrestart" in argv[2]:
            return _ok("", "", 1)
        if argv == HEALTH_ARGV:
            self.health_checks += 1
            if self.installed.get("acme-web") in self.broken:
                return _ok("", "HTTP 503", 1)
            return _ok("OK\n")
        return _ok("", f"not scripted: {argv}", 127)

    def _sockets(self) -> str:
        """``ListeningSockets`` output: one LISTEN row per :attr:`listening` pid."""
        header = (
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
            "   uid  timeout inode\n"
        )
        rows, comms, fds = [], [], []
        for i, (pid, (comm, address, port)) in enumerate(sorted(self.listening.items())):
            hex_address = ipaddress.IPv4Address(address).packed[::-1].hex().upper()
            inode = 40000 + i
            rows.append(
                f"   {i}: {hex_address}:{port:04X} 00000000:0000 0A 00000000:00000000 "
                f"00:00000000 00000000     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n"
            )
            comms.append(f"{pid} {comm}\n")
            fds.append(
                f"/proc/{pid}/fd:\nlrwx------ 1 root root 64 Jan  1 00:00 3 -> socket:[{inode}]\n"
            )
        return (
            "== /proc/net/tcp\n"
            + header
            + "".join(rows)
            + "== /proc/net/tcp6\n== /proc/net/udp\n"
            + header
            + "== /proc/net/udp6\n== comm\n"
            + "".join(comms)
            + "== fd\n"
            + "".join(fds)
        )

    def _loaded(self, pids: tuple[int, ...]) -> CommandResult:
        """``MappedPackages`` output: each package maps as ``/usr/lib/fake/<package>.so``."""
        out = ["== comm"]
        out += [f"{pid} {self.listening[pid][0]}" for pid in pids if pid in self.listening]
        for pid in pids:
            out.append(f"== pid {pid}")
            out += [f"/usr/lib/fake/{name}.so" for name in sorted(self.loaded.get(pid, ()))]
        out.append("== owners")
        names = sorted({name for packages in self.loaded.values() for name in packages})
        out += [f"/var/lib/dpkg/info/{n}:amd64.list:/usr/lib/fake/{n}.so" for n in names]
        return _ok("\n".join(out) + "\n")

    def _changelog(self, spec: str) -> CommandResult:
        """The changelog fetch script: the member path and the base64 of the gzip text."""
        name = spec.partition("=")[0]
        text = self.changelogs.get(name)
        if text is None:
            return _ok("", f"not scripted: changelog of {spec}", 127)
        data = base64.b64encode(gzip.compress(text.encode())).decode()
        return _ok(f"/usr/share/doc/{name}/changelog.Debian.gz\n{data}\n")

    def _candidates(self, names: Sequence[str]) -> str:
        out: list[str] = []
        for name in names:
            versions = self.available.get(name)
            if not versions:
                out.append(f"{name}:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n")
                continue
            current = self.installed.get(name)
            out += [
                f"{name}:",
                f"  Installed: {current or '(none)'}",
                f"  Candidate: {versions[-1]}",
                "  Version table:",
            ]
            for version in reversed(versions):
                mark = " ***" if version == current else "    "
                out.append(f"{mark} {version} 500")
                if name in self.security and version != current:
                    out.append(
                        "        500 http://deb.debian.org/debian-security "
                        "bookworm-security/main amd64 Packages"
                    )
                else:
                    out.append("        500 file:/srv/acme-repo ./ Packages")
                if version == current:
                    out.append("        100 /var/lib/dpkg/status")
        return "\n".join(out) + "\n"

    def _pending(self) -> str:
        lines = [
            "Reading package lists...",
            "Building dependency tree...",
            "Calculating upgrade...",
        ]
        inst = []
        for name, current in self.installed.items():
            candidate = self._candidate(name)
            if candidate is None or candidate == current or name in self.held:
                continue
            versions = self.available[name]
            if current in versions and versions.index(candidate) < versions.index(current):
                continue
            origin = (
                "Debian-Security:12/oldstable-security [amd64]"
                if name in self.security
                else "lab:lab [all]"
            )
            inst.append(f"Inst {name} [{current}] ({candidate} {origin})")
        lines.append(f"{len(inst)} upgraded, 0 newly installed, 0 to remove and 0 not upgraded.")
        return "\n".join([*lines, *inst]) + "\n"

    def _pins(self, argv: tuple[str, ...]) -> list[tuple[str, str]]:
        return [
            (p.split("=", 1)[0], p.split("=", 1)[1])
            for p in argv[argv.index("--") + 1 :]
            if "=" in p
        ]

    def _simulate(self, argv: tuple[str, ...]) -> CommandResult:
        lines = ["Reading package lists...", "Building dependency tree..."]
        inst: list[str] = []
        held: list[str] = []
        removed: list[str] = []
        up = down = 0
        for name, version in self._pins(argv):
            versions = self.available.get(name, [])
            if version not in versions:
                return _ok("", f"E: Version '{version}' for '{name}' was not found\n", 100)
            current = self.installed.get(name)
            if current == version:
                lines.append(f"{name} is already the newest version ({version}).")
                continue
            if name in self.held:
                held.append(f"   {name} ({current} => {version})")
            if current in versions and versions.index(version) < versions.index(current):
                down += 1
            else:
                up += 1
            inst.append(f"Inst {name} [{current}] ({version} lab:lab [all])")
            removed += [r for r in self.removes.get(name, ()) if r in self.installed]
        if removed:
            lines += ["The following packages will be REMOVED:", "  " + " ".join(removed)]
        if held:
            lines += ["The following held packages will be changed:", *held]
        middle = f"{down} downgraded, " if down else ""
        lines.append(
            f"{up} upgraded, 0 newly installed, {middle}{len(removed)} to remove and 0 not "
            "upgraded."
        )
        remv = [f"Remv {r} [{self.installed[r]}]" for r in removed]
        return _ok("\n".join([*lines, *remv, *inst]) + "\n")

    def _install(self, argv: tuple[str, ...]) -> CommandResult:
        self.installs.append(argv)
        if self.install_error:
            return _ok(
                "",
                f"{self.install_error}\nE: Sub-process /usr/bin/dpkg returned an error code (1)\n",
                100,
            )
        for name, version in self._pins(argv):
            if version not in self.available.get(name, []):
                return _ok("", f"E: Version '{version}' for '{name}' was not found\n", 100)
            if name in self.held and "--allow-change-held-packages" not in argv:
                return _ok("", f"E: Held packages were changed: {name}\n", 100)
            self.installed[name] = version
        if self.on_install is not None:
            self.on_install()
        return _ok("Setting up\n")

    def _script(self, argv: tuple[str, ...]) -> CommandResult:
        script, names = argv[2], argv[4:]
        if "dpkg-query -L" in script:
            out = "".join(
                f"@@package {n}\n" + ("/etc/init.d/acme-web\n" if n == "acme-web" else "")
                for n in names
            )
            return _ok(out)
        if "Conffiles" in script:
            return _ok("".join(f"{n}\t\n" for n in names) + "@@md5sum\n")
        if "reboot-required" in script:
            return _ok("reboot-required: no\n")
        if "updates" in script:
            return _ok("")
        return _ok("", f"not scripted: {argv}", 127)


def fleet_factory(
    hosts: Mapping[str, FakeDebianHost],
) -> Callable[[Host, Settings], Transport]:
    """A ``transport_factory`` that connects to the fake host of the same name."""

    def factory(host: Host, settings: Settings) -> Transport:
        return hosts[host.name].transport()

    return factory

"""Run commands over SSH with paramiko: strict host keys, key/agent auth only, bounded waits.

* **One connection per transport.** The first command connects; later commands reuse the
  connection (reconnecting if it dropped). Use one transport from one thread at a time (a lock
  serialises concurrent callers).
* **Host keys.** Keys load from ``~/.ssh/known_hosts``, ``ssh.known_hosts`` and patchpilot's own
  known_hosts. An unknown key is refused (:class:`HostKeyError` naming the key type, its SHA256
  fingerprint and how to trust it) unless ``ssh.trust_on_first_use`` is on, in which case it is
  accepted and appended to patchpilot's known_hosts. A *changed* key is always refused.
* **Authentication.** Key file, agent and ``~/.ssh/id_*`` only. No password is ever sent and
  nothing ever prompts; an encrypted key file must be loaded into the agent.
* **Timeouts.** ``ssh.connect_timeout`` bounds the TCP connect, the banner, the key exchange,
  authentication and opening a session; a command's timeout bounds the whole command.
* **Retries.** Only connection set-up is retried (``ssh.connect_retries`` attempts, 0.5 s/1 s/2 s
  back-off); host-key and authentication failures never are, and commands never are.
* **Jump hosts.** A host with :attr:`~patchpilot.core.models.Host.jump` is reached as OpenSSH's
  ProxyJump does, without running ``ssh``: paramiko connects to the first bastion (same strict
  host-key check, known_hosts files, key/agent authentication, timeouts), opens a
  ``direct-tcpip`` channel to the next hop and runs the next SSH handshake over that channel,
  up to the target. Each hop's key is looked up under its own name and port
  (``[address]:port``), so the target's key is never confused with a bastion's; every error
  names the hop that failed. The connections are closed target first, then each bastion in
  reverse order. A bastion's user is its own (``user@`` or ssh_config ``User``, else
  ``ssh.default_user``, else the current user), as its key file is (else
  ``ssh.default_key_file``, the agent, ``~/.ssh/id_*``).
* **Commands.** The remote command line is ``env LC_ALL=C [NAME=value...] argv...`` with every
  word quoted by :func:`shlex.quote`, so the remote login shell (which must be POSIX ``sh``
  compatible) sees each argument as one literal word.
* **Ending remote commands.** A command past its timeout (or interrupted with Ctrl-C) is
  signalled through the channel before it is closed: the RFC 4254 "signal" request, ``TERM``
  then ``KILL`` after a grace period, which OpenSSH's sshd delivers with ``killpg`` to the
  command's whole process group (as the login user; ``sudo`` relays ``TERM`` to what it runs).
  OpenSSH refuses session signals for **root** logins (no privilege separation after
  authentication); the timeout error then says the remote process may still be running.
  Deliberately **no pty** (``get_pty``): with one, sshd would hang up the command when the
  connection drops, but a pty merges stderr into stdout, turns ``\n`` into ``\r\n``, echoes
  stdin, makes apt, dpkg and debconf interactive and changes sudo's behaviour, and every parser
  here relies on exact, separate streams. So when patchpilot itself is killed (``kill -9``),
  a remote command keeps running until it ends or next writes to its closed output (which
  kills it with ``SIGPIPE``): read-only discovery commands are bounded, and an install is
  better finished than cut in the middle of dpkg (``patchpilot resume`` checks the host with
  ``dpkg --audit`` either way).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import getpass
import hashlib
import os
import select
import shlex
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

import paramiko
import structlog
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from patchpilot.core.errors import (
    AuthenticationError,
    CommandTimeoutError,
    HostConnectError,
    HostKeyError,
    TransportError,
    UnsafeArgumentError,
)
from patchpilot.core.models import CommandResult, Host
from patchpilot.core.settings import SSHSettings
from patchpilot.core.validate import validate_hostname, validate_user
from patchpilot.tools.transport.base import OutputBuffer, Transport

__all__ = [
    "KEEPALIVE_INTERVAL_S",
    "SSHTransport",
    "build_remote_command",
    "host_key_fingerprint",
    "known_hosts_name",
    "record_host_key",
]

KEEPALIVE_INTERVAL_S: Final = 30
"""Seconds between SSH keepalive packets on an idle connection."""

_CHUNK: Final = 32768
_SIGNAL_GRACE_S: Final = 2.0
"""Seconds between the ``TERM`` and the ``KILL`` signal to a remote command past its timeout."""
_SHORT_KEY_NAMES: Final = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ssh-dss": "dsa"}

_log = structlog.get_logger(__name__)


# --------------------------------------------------------------------------- helpers


def build_remote_command(argv: tuple[str, ...] | list[str], env: Mapping[str, str]) -> str:
    """Build the remote command line: ``env LC_ALL=C [NAME=value...] argv...``, all quoted.

    Args:
        argv: the validated command and arguments.
        env: validated extra environment variables.

    Returns:
        One string where every word is quoted with :func:`shlex.quote`.

    Raises:
        UnsafeArgumentError: ``argv[0]`` contains ``=`` or starts with ``-``, so ``env`` would
            take it for an assignment or an option instead of the command.
    """
    command = argv[0]
    if "=" in command or command.startswith("-"):
        raise UnsafeArgumentError(
            "command", command, "a command name cannot contain '=' or start with '-'"
        )
    words = ["env", "LC_ALL=C", *(f"{name}={value}" for name, value in env.items()), *argv]
    return shlex.join(words)


def host_key_fingerprint(key: paramiko.PKey) -> str:
    """Return the OpenSSH-style SHA256 fingerprint of a public key (``SHA256:base64``)."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    """The name a host's key is stored under in known_hosts (``[address]:port`` unless 22)."""
    return address if port == 22 else f"[{address}]:{port}"


def _endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _short_key_type(key_type: str) -> str:
    if key_type.startswith("ecdsa-"):
        return "ecdsa"
    return _SHORT_KEY_NAMES.get(key_type, key_type)


def _changed_key_message(
    hostname: str, offered: paramiko.PKey, known: paramiko.PKey, files: list[str]
) -> str:
    return (
        f"the SSH host key for {hostname} has CHANGED: the server offered {offered.get_name()} "
        f"{host_key_fingerprint(offered)} but known_hosts has {known.get_name()} "
        f"{host_key_fingerprint(known)}. This is a possible man-in-the-middle attack (or the "
        "host was reinstalled); patchpilot will not connect, even with ssh.trust_on_first_use. "
        "If the change is expected, verify the new fingerprint out of band, remove the old "
        f"entry with `ssh-keygen -R {shlex.quote(hostname)} -f FILE` (FILE: whichever of "
        f"{', '.join(files)} has it) and trust the new key."
    )


def record_host_key(path: Path, hostname: str, key: paramiko.PKey, *, host: str) -> bool:
    """Append ``hostname``'s key to a known_hosts file in OpenSSH format, under a file lock.

    The file (and its directory) is created private to the user when missing. If another
    process recorded a key for ``hostname`` meanwhile, the same key is not written twice and a
    different key raises :class:`HostKeyError`.

    Args:
        path: the known_hosts file (patchpilot's own).
        hostname: the known_hosts name, ``address`` or ``[address]:port``.
        key: the server's public host key.
        host: the inventory name, for errors.

    Returns:
        True when a line was appended, False when the same key was already recorded.

    Raises:
        HostKeyError: a different key is already recorded for ``hostname``.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "r+", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        recorded = paramiko.HostKeys()
        recorded.load(str(path))
        known = recorded.lookup(hostname)
        if known is not None:
            same = known.get(key.get_name())
            if same is not None and same == key:
                return False
            raise HostKeyError(
                host, _changed_key_message(hostname, key, next(iter(known.values())), [str(path)])
            )
        handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        handle.flush()
        os.fsync(handle.fileno())
    return True


@dataclass(frozen=True, slots=True)
class _Hop:
    """One SSH connection on the way to the host: a jump host, or the host itself (last)."""

    address: str
    port: int
    user: str
    key_file: Path | None
    where: str
    """How messages name this hop: ``127.0.0.1:2222`` for a direct host; ``jump host 1 of 2
    'bastion' (127.0.0.1:2201)``; ``10.0.0.5:22 (through bastion)`` for a host behind jumps."""
    prefix: str
    """``"jump host 1 of 2 'bastion' (…): "`` for a jump host, else empty."""
    via: str | None = None
    """For a host behind jump hosts: the last one (``ssh://user@host:port``), which
    ssh-keyscan must run on."""

    @property
    def known_hosts_name(self) -> str:
        return known_hosts_name(self.address, self.port)


class _RejectUnknownHostKey(paramiko.RejectPolicy):
    """Refuse unknown host keys with an actionable :class:`HostKeyError` naming the hop."""

    def __init__(self, transport: SSHTransport, hop: _Hop) -> None:
        self._transport = transport
        self._hop = hop

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> NoReturn:
        t, hop = self._transport, self._hop
        scan = f"ssh-keyscan -p {hop.port} {shlex.quote(hop.address)}"
        if hop.via is not None:  # the host is not reachable from here: scan from the bastion
            scan = f"ssh {shlex.quote(hop.via)} {shlex.quote(scan)}"
        raise HostKeyError(
            t.name,
            f"{hop.prefix}unknown SSH host key for {hostname} ({key.get_name()} "
            f"{host_key_fingerprint(key)}). Verify this fingerprint out of band (on the host: "
            f"`ssh-keygen -lf /etc/ssh/ssh_host_{_short_key_type(key.get_name())}_key.pub`), "
            f"then trust it with `{scan} >> ~/.ssh/known_hosts`, "
            "or set ssh.trust_on_first_use: true (PATCHPILOT_SSH__TRUST_ON_FIRST_USE=true) to "
            f"accept and record it in {t.known_hosts_path}",
        )


class _TrustOnFirstUse(paramiko.MissingHostKeyPolicy):
    """Accept an unknown host key and record it in patchpilot's known_hosts."""

    def __init__(self, transport: SSHTransport, hop: _Hop) -> None:
        self._transport = transport
        self._hop = hop

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        t = self._transport
        try:
            written = record_host_key(t.known_hosts_path, hostname, key, host=t.name)
        except HostKeyError as exc:
            if not self._hop.prefix:
                raise
            # Name the jump host: "{host}: {message}" becomes "{host}: jump host …: {message}".
            raise HostKeyError(t.name, self._hop.prefix + str(exc).split(": ", 1)[1]) from None
        client.get_host_keys().add(hostname, key.get_name(), key)
        if written:
            t.log.warning(
                "ssh.host_key_recorded",
                known_hosts_name=hostname,
                hop=self._hop.where,
                key_type=key.get_name(),
                fingerprint=host_key_fingerprint(key),
                known_hosts=str(t.known_hosts_path),
            )


class _RetryableConnectError(Exception):
    """A connection set-up failure worth another attempt; ``reason`` is for the final error."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- the transport


class SSHTransport(Transport):
    """Runs argv lists on a remote host over one reused paramiko SSH connection."""

    def __init__(self, host: Host, settings: SSHSettings, known_hosts_path: Path | str) -> None:
        """Describe the connection; nothing connects until the first command.

        Args:
            host: the inventory host (address, port, user, key file).
            settings: SSH settings (timeouts, retries, host-key and auth policy, output cap).
            known_hosts_path: patchpilot's own known_hosts file (loaded when present; where
                trust-on-first-use records keys).

        Raises:
            UnsafeArgumentError: the host address, a jump host address or a user name is not
                valid.
        """
        super().__init__(host.name)
        self.host = host
        self.settings = settings
        self.become = host.become
        self.become_user = host.become_user
        self.address = validate_hostname(host.address)
        self.port = host.port
        self.user = validate_user(host.user or settings.default_user or _current_user())
        self.host_known_hosts: Path | None = (
            Path(host.known_hosts).expanduser() if host.known_hosts else None
        )
        key_file = host.key_file or settings.default_key_file
        self.key_file: Path | None = Path(key_file).expanduser() if key_file else None
        self.known_hosts_path = Path(known_hosts_path).expanduser()
        self.connections_opened = 0
        """How many SSH connections this transport has opened (1 while it is reused)."""
        self.log = _log.bind(host=host.name)
        self._endpoint = _endpoint(self.address, self.port)
        self._hops = self._plan_hops(host, settings)
        self._client: paramiko.SSHClient | None = None
        self._jump_clients: list[paramiko.SSHClient] = []
        self._pkeys: dict[Path, paramiko.PKey] = {}
        self._lock = threading.RLock()
        self._is_root: bool | None = True if self.user == "root" else None

    def _plan_hops(self, host: Host, settings: SSHSettings) -> tuple[_Hop, ...]:
        """The connections to make, jump hosts first, the host itself last."""
        hops: list[_Hop] = []
        count = len(host.jump)
        for index, jump in enumerate(host.jump, start=1):
            address = validate_hostname(jump.address)
            user = validate_user(jump.user or settings.default_user or _current_user())
            key = jump.key_file or settings.default_key_file
            where = (
                f"jump host {index} of {count} {jump.name!r} "
                f"({user}@{_endpoint(address, jump.port)})"
            )
            hops.append(
                _Hop(
                    address=address,
                    port=jump.port,
                    user=user,
                    key_file=Path(key).expanduser() if key else None,
                    where=where,
                    prefix=f"{where}: ",
                )
            )
        route = " -> ".join(jump.spec for jump in host.jump)
        hops.append(
            _Hop(
                address=self.address,
                port=self.port,
                user=self.user,
                key_file=self.key_file,
                where=f"{self._endpoint} (through {route})" if route else self._endpoint,
                prefix="",
                via=f"ssh://{host.jump[-1].spec}" if host.jump else None,
            )
        )
        return tuple(hops)

    # -- Transport API -------------------------------------------------------------

    @property
    def is_root(self) -> bool:
        """True when logged in as root (the user is ``root``, else ``id -u`` says 0, once)."""
        if self._is_root is None:
            result = self.run(["id", "-u"], timeout=self.settings.connect_timeout + 30.0)
            self._is_root = result.ok and result.stdout.strip() == "0"
        return self._is_root

    @property
    def connected(self) -> bool:
        """True while the SSH connection (and every jump host's) is open."""
        client = self._client
        if client is None:
            return False
        for each in (*self._jump_clients, client):
            transport = each.get_transport()
            if transport is None or not transport.is_active():
                return False
        return True

    def close(self) -> None:
        """Close the SSH connection, if any, then each jump host's in reverse order (a later
        command reconnects)."""
        with self._lock:
            if self._client is not None:
                self._drop_connection()
                self.log.debug("ssh.disconnected")

    def _execute(
        self,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        timeout: float | None,
        stdin: str | None,
    ) -> CommandResult:
        limit = self.settings.command_timeout if timeout is None else timeout
        command = build_remote_command(argv, env)
        with self._lock:
            channel = self._open_session()
            try:
                return self._run_on_channel(channel, argv, command, limit, stdin)
            finally:
                channel.close()

    # -- commands ------------------------------------------------------------------

    def _run_on_channel(
        self,
        channel: paramiko.Channel,
        argv: tuple[str, ...],
        command: str,
        limit: float,
        stdin: str | None,
    ) -> CommandResult:
        out = OutputBuffer(self.settings.max_output_bytes)
        err = OutputBuffer(self.settings.max_output_bytes)
        start = time.monotonic()
        self.log.debug("command.start", command=argv[0], timeout_s=limit)
        channel.fileno()  # makes the channel select()-able (readable when stdout/stderr has data)
        channel.settimeout(self.settings.connect_timeout)  # bounds any single blocking call
        try:
            channel.exec_command(command)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._drop_connection()
            raise HostConnectError(
                self.name, f"could not start a command on {self._endpoint}: {exc or 'closed'}"
            ) from exc
        try:
            finished = self._pump(channel, stdin, out, err, deadline=start + limit)
        except KeyboardInterrupt:
            _send_signal(channel, "TERM")  # best effort; do not keep the person waiting
            raise
        if not finished:
            killed = _terminate_remote(channel, self.settings.connect_timeout)
            channel.close()
            self.log.debug("command.timeout", command=argv[0], timeout_s=limit, killed=killed)
            what = (
                "it was signalled (TERM, then KILL) and its SSH channel closed"
                if killed
                else "its SSH channel was closed (the server refused the signal request, as "
                "OpenSSH does for root logins: the remote process may keep running until it "
                "next writes output)"
            )
            raise CommandTimeoutError(
                self.name, f"command {argv[0]!r} did not finish within {limit:g}s; {what}"
            )
        # paramiko keeps exit_status at -1 until an exit-status arrives (the wire value is
        # unsigned); exit_status_ready() is also true once the channel merely closed.
        if channel.exit_status == -1 and not channel.eof_received:
            self._connection_lost(argv)
        # -1: no exit status (e.g. the command was killed by a signal).
        exit_code = channel.exit_status
        return self._finish(argv, exit_code, out, err, start)

    @staticmethod
    def _pump(
        channel: paramiko.Channel,
        stdin: str | None,
        out: OutputBuffer,
        err: OutputBuffer,
        *,
        deadline: float,
    ) -> bool:
        """Feed stdin and drain stdout/stderr concurrently until the command is done.

        Returns:
            True when the command finished (EOF and exit status, or the channel closed), False
            when the deadline passed first.
        """
        pending: memoryview | None = memoryview(stdin.encode("utf-8")) if stdin else None
        if pending is None:
            channel.shutdown_write()  # EOF: a command reading stdin never waits for us
        while True:
            if pending is not None and channel.send_ready():
                try:
                    pending = pending[channel.send(bytes(pending[:_CHUNK])) :]
                    if not pending:
                        pending = None
                        channel.shutdown_write()
                except (paramiko.SSHException, EOFError, OSError):
                    pending = None  # the command stopped reading (or exited): keep draining
            busy = False
            while channel.recv_ready():
                out.feed(channel.recv(_CHUNK))
                busy = True
            while channel.recv_stderr_ready():
                err.feed(channel.recv_stderr(_CHUNK))
                busy = True
            finished = channel.closed or (channel.eof_received and channel.exit_status_ready())
            if finished and not channel.recv_ready() and not channel.recv_stderr_ready():
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if busy:
                continue
            wait = min(remaining, 0.05 if pending is not None else 1.0)
            if channel.eof_received:  # output is complete; only the exit status is missing
                channel.status_event.wait(wait)
            else:
                select.select([channel], [], [], wait)

    def _connection_lost(self, argv: tuple[str, ...]) -> NoReturn:
        """The channel closed without EOF or exit status: the connection or session went away."""
        # paramiko closes channels just before it marks the connection inactive: let it settle.
        settle = time.monotonic() + 1.0
        while self.connected and time.monotonic() < settle:
            time.sleep(0.01)
        what = "connection to" if not self.connected else "SSH session on"
        self._drop_connection()
        # Not HostConnectError: the command may have run, so it must not be retried blindly.
        raise TransportError(
            self.name,
            f"{what} {self._endpoint} lost while running {argv[0]!r}; "
            "the command may or may not have completed",
        )

    def _open_session(self) -> paramiko.Channel:
        """Open a session channel, reconnecting once if the connection turns out to be dead."""
        client = self._ensure_connected()
        try:
            return self._new_channel(client)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            # Nothing has run yet, so a fresh connection is safe.
            self.log.info("ssh.session_retry", reason=str(exc) or type(exc).__name__)
            self._drop_connection()
        client = self._ensure_connected()
        try:
            return self._new_channel(client)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            self._drop_connection()
            raise HostConnectError(
                self.name, f"cannot open an SSH session on {self._endpoint}: {exc}"
            ) from exc

    def _new_channel(self, client: paramiko.SSHClient) -> paramiko.Channel:
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise EOFError("connection closed")
        return transport.open_session(timeout=self.settings.connect_timeout)

    # -- connection ----------------------------------------------------------------

    def _ensure_connected(self) -> paramiko.SSHClient:
        if self._client is not None:
            if self.connected:
                return self._client
            self.log.info("ssh.reconnect", reason="connection no longer active")
            self._drop_connection()
        client = self._connect()
        self._client = client
        self.connections_opened += 1
        return client

    def _drop_connection(self) -> None:
        """Close the host's connection, then the jump hosts' (last to first)."""
        clients = [*self._jump_clients, *([self._client] if self._client is not None else [])]
        self._client = None
        self._jump_clients = []
        _close_all(clients)

    def _connect(self) -> paramiko.SSHClient:
        """Connect (through the jump hosts) and authenticate, retrying set-up failures only."""
        pkeys = [self._load_key(hop) for hop in self._hops]
        self._load_host_keys(paramiko.SSHClient())  # known_hosts problems before any network I/O
        attempts = self.settings.connect_retries
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=0.5, min=0.5, max=4.0),
            retry=retry_if_exception_type(_RetryableConnectError),
            before_sleep=self._before_retry,
            reraise=True,
        )
        try:
            clients = retrying(self._connect_once, pkeys)
        except _RetryableConnectError as exc:
            tries = f"{attempts} attempts" if attempts > 1 else "1 attempt"
            raise HostConnectError(
                self.name, f"{exc.reason} (gave up after {tries})"
            ) from exc.__cause__
        self._jump_clients = clients[:-1]
        return clients[-1]

    def _before_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        self.log.info(
            "ssh.connect.retry",
            attempt=state.attempt_number,
            reason=getattr(exc, "reason", str(exc)),
            sleep_s=state.upcoming_sleep,
        )

    def _connect_once(self, pkeys: list[paramiko.PKey | None]) -> list[paramiko.SSHClient]:
        """One attempt: every hop in turn; on failure, what was opened is closed again."""
        opened: list[paramiko.SSHClient] = []
        try:
            for index, (hop, pkey) in enumerate(zip(self._hops, pkeys, strict=True)):
                if index == 0:
                    sock: socket.socket | paramiko.Channel = self._tcp_connect(hop)
                else:
                    sock = self._forward(opened[-1], self._hops[index - 1], hop)
                opened.append(self._handshake(hop, pkey, sock))
        except BaseException:
            _close_all(opened)
            raise
        return opened

    def _tcp_connect(self, hop: _Hop) -> socket.socket:
        timeout, where = self.settings.connect_timeout, hop.where
        try:
            sock = socket.create_connection((hop.address, hop.port), timeout=timeout)
        except socket.gaierror as exc:
            raise _RetryableConnectError(
                f"{hop.prefix}cannot resolve {hop.address}: {exc.strerror}"
            ) from exc
        except ConnectionRefusedError as exc:
            raise _RetryableConnectError(f"connection refused on {where}") from exc
        except TimeoutError as exc:
            raise _RetryableConnectError(
                f"no TCP connection to {where} within {timeout:g}s"
            ) from exc
        except OSError as exc:
            raise _RetryableConnectError(
                f"cannot connect to {where}: {exc.strerror or exc}"
            ) from exc
        # paramiko writes each SSH packet whole, so Nagle only delays the small request
        # packets (channel open, exec) behind the peer's delayed ACK: ~40 ms per command.
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _forward(self, client: paramiko.SSHClient, via: _Hop, hop: _Hop) -> paramiko.Channel:
        """A ``direct-tcpip`` channel from jump host ``via`` to the next hop's SSH port."""
        timeout = self.settings.connect_timeout
        target = _endpoint(hop.address, hop.port)
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise _RetryableConnectError(f"{via.prefix}connection closed before forwarding")
        try:
            return transport.open_channel(
                "direct-tcpip", (hop.address, hop.port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            if exc.code == 1:  # OPEN_ADMINISTRATIVELY_PROHIBITED: a setting, not a glitch
                raise HostConnectError(
                    self.name,
                    f"{via.prefix}the jump host refused to forward to {target} (administratively "
                    "prohibited: allow it with AllowTcpForwarding/PermitOpen in its sshd_config)",
                ) from exc
            raise _RetryableConnectError(
                f"{via.prefix}the jump host could not connect to {target}: "
                f"{exc.text or f'channel open failure {exc.code}'}"
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise _RetryableConnectError(
                f"{via.prefix}no forwarding channel to {target} within {timeout:g}s: "
                f"{exc or type(exc).__name__}"
            ) from exc

    def _handshake(
        self, hop: _Hop, pkey: paramiko.PKey | None, sock: socket.socket | paramiko.Channel
    ) -> paramiko.SSHClient:
        """SSH handshake, host-key check and authentication with one hop over ``sock``."""
        timeout = self.settings.connect_timeout
        self.log.debug("ssh.connect", address=hop.address, port=hop.port, user=hop.user)
        client = paramiko.SSHClient()
        try:
            self._load_host_keys(client)
        except BaseException:
            sock.close()
            raise
        policy: paramiko.MissingHostKeyPolicy = (
            _TrustOnFirstUse(self, hop)
            if self.settings.trust_on_first_use
            else _RejectUnknownHostKey(self, hop)
        )
        client.set_missing_host_key_policy(policy)
        start = time.monotonic()
        try:
            # The address and port name the hop's key in known_hosts ("[address]:port"), so a
            # host behind a jump host is checked under its own name, never the bastion's.
            client.connect(
                hop.address,
                port=hop.port,
                username=hop.user,
                password=None,
                pkey=pkey,
                key_filename=None,
                passphrase=None,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
                channel_timeout=timeout,
                allow_agent=self.settings.use_agent,
                look_for_keys=self.settings.look_for_keys and hop.key_file is None,
                sock=sock,
            )
        except BaseException as exc:
            ssh = client.get_transport()
            got_banner = bool(ssh.remote_version) if ssh is not None else False
            client.close()
            sock.close()
            mapped = self._classify(exc, start, hop, got_banner=got_banner)
            if mapped is exc:
                raise
            raise mapped from exc
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(KEEPALIVE_INTERVAL_S)
        self.log.debug("ssh.connected", hop=hop.where, duration_s=time.monotonic() - start)
        return client

    def _classify(
        self, exc: BaseException, start: float, hop: _Hop, *, got_banner: bool
    ) -> BaseException:
        """Map a paramiko failure to a patchpilot error (or a retryable one) naming the hop."""
        where, timeout = hop.where, self.settings.connect_timeout
        if isinstance(exc, HostKeyError | AuthenticationError):
            return exc
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyError(
                self.name,
                hop.prefix
                + _changed_key_message(
                    hop.known_hosts_name, exc.key, exc.expected_key, self._known_hosts_files()
                ),
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return AuthenticationError(
                self.name,
                f"{hop.prefix}a private key needs a passphrase and patchpilot never prompts: "
                "load it into ssh-agent (ssh-add) and keep ssh.use_agent on",
            )
        if isinstance(exc, paramiko.BadAuthenticationType):
            return AuthenticationError(
                self.name,
                f"{hop.user}@{where} accepts only {', '.join(exc.allowed_types) or 'nothing'}; "
                "patchpilot authenticates with public keys only (never passwords)",
            )
        if isinstance(exc, paramiko.AuthenticationException) or (
            isinstance(exc, paramiko.SSHException)
            and "No authentication methods available" in str(exc)
        ):
            return AuthenticationError(
                self.name,
                f"public-key authentication failed for {hop.user}@{where} "
                f"(tried: {self._identity_sources(hop)}); install the matching public key in "
                f"~{hop.user}/.ssh/authorized_keys on that host (patchpilot never uses "
                "passwords)",
            )
        if isinstance(exc, paramiko.SSHException):
            if not got_banner:
                if isinstance(exc.__context__, EOFError):
                    return _RetryableConnectError(
                        f"{where} closed the connection before sending an SSH banner"
                    )
                if time.monotonic() - start >= timeout * 0.9:
                    return _RetryableConnectError(f"no SSH banner from {where} within {timeout:g}s")
            elif "No existing session" in str(exc) or "timed out" in str(exc):
                # start_client() returned at its timeout with the key exchange unfinished.
                return _RetryableConnectError(
                    f"SSH key exchange with {where} did not complete within {timeout:g}s"
                )
            return _RetryableConnectError(f"SSH handshake with {where} failed: {exc}")
        if isinstance(exc, EOFError | OSError):
            detail = str(exc) or type(exc).__name__
            return _RetryableConnectError(
                f"connection to {where} failed during the SSH handshake: {detail}"
            )
        return exc

    def _known_hosts_files(self) -> list[str]:
        files = ["~/.ssh/known_hosts"]
        if self.settings.known_hosts is not None:
            files.append(str(self.settings.known_hosts.expanduser()))
        if self.host_known_hosts is not None:
            files.append(str(self.host_known_hosts))
        files.append(str(self.known_hosts_path))
        return files

    def _identity_sources(self, hop: _Hop) -> str:
        sources = []
        if hop.key_file is not None:
            sources.append(f"key file {hop.key_file}")
        if self.settings.use_agent:
            sources.append("ssh-agent")
        if self.settings.look_for_keys and hop.key_file is None:
            sources.append("~/.ssh/id_*")
        return ", ".join(sources)

    def _load_key(self, hop: _Hop) -> paramiko.PKey | None:
        """Load a hop's private key once; never prompts for a passphrase."""
        path, prefix = hop.key_file, hop.prefix
        if path is None:
            if not (self.settings.use_agent or self.settings.look_for_keys):
                raise AuthenticationError(
                    self.name,
                    f"{prefix}no SSH identity to offer: set the host's key_file or "
                    "ssh.default_key_file, or enable ssh.use_agent or ssh.look_for_keys",
                )
            return None
        if path in self._pkeys:
            return self._pkeys[path]
        try:
            pkey = paramiko.PKey.from_path(path)
        except (paramiko.PasswordRequiredException, TypeError):
            # cryptography raises TypeError for an encrypted key loaded without a passphrase.
            raise AuthenticationError(
                self.name,
                f"{prefix}SSH key file {path} is encrypted and patchpilot never prompts for a "
                "passphrase: load it into ssh-agent (ssh-add) and keep ssh.use_agent on",
            ) from None
        except FileNotFoundError:
            raise AuthenticationError(
                self.name, f"{prefix}SSH key file {path} does not exist"
            ) from None
        except OSError as exc:
            raise AuthenticationError(
                self.name, f"{prefix}cannot read SSH key file {path}: {exc.strerror or exc}"
            ) from None
        except (paramiko.SSHException, ValueError) as exc:
            raise AuthenticationError(
                self.name, f"{prefix}cannot load SSH key file {path}: {exc}"
            ) from None
        self._pkeys[path] = pkey
        return pkey

    def _load_host_keys(self, client: paramiko.SSHClient) -> None:
        """Load ~/.ssh/known_hosts, ssh.known_hosts and patchpilot's own known_hosts."""
        client.load_system_host_keys()  # a missing ~/.ssh/known_hosts is fine
        extra = self.settings.known_hosts
        files: list[tuple[Path, bool]] = []
        if extra is not None:
            files.append((extra.expanduser(), True))
        if self.host_known_hosts is not None:
            files.append((self.host_known_hosts, True))
        files.append((self.known_hosts_path, False))
        for path, system in files:
            if not path.exists():
                if system:
                    raise HostKeyError(self.name, f"the ssh.known_hosts file {path} does not exist")
                continue
            try:
                if system:
                    client.load_system_host_keys(str(path))
                else:
                    client.load_host_keys(str(path))
            except (OSError, UnicodeDecodeError) as exc:
                raise HostKeyError(
                    self.name, f"cannot read known_hosts file {path}: {exc}"
                ) from None


def _send_signal(channel: paramiko.Channel, name: str, *, reply_within: float = 0.0) -> bool:
    """Send the RFC 4254 section 6.9 "signal" request (``TERM``, ``KILL``) on ``channel``.

    paramiko has no public call for it, so the message is built the way paramiko's own
    ``exec_command`` builds its request. OpenSSH's sshd answers it with ``killpg`` on the
    command's session, as the login user; it refuses it for root logins (no privilege
    separation after authentication) and older servers ignore it.

    Args:
        channel: the command's channel.
        name: the signal, without ``SIG``.
        reply_within: seconds to wait for the server's answer; 0 sends and does not ask.

    Returns:
        True when sent (and, with ``reply_within``, accepted by the server).
    """
    if channel.closed:
        return False
    send = getattr(channel.transport, "_send_user_message", None)  # private, see above
    if send is None:
        return False
    message = paramiko.Message()
    message.add_byte(paramiko.common.cMSG_CHANNEL_REQUEST)
    message.add_int(channel.remote_chanid)
    message.add_string("signal")
    message.add_boolean(reply_within > 0)
    message.add_string(name)
    if reply_within > 0:  # what paramiko's _event_pending() does before a request
        channel.event.clear()
        channel.event_ready = False
    try:
        send(message)
    except (paramiko.SSHException, EOFError, OSError):
        return False
    if reply_within <= 0:
        return True
    # A refusal makes paramiko close the channel, which also sets the event (not ready).
    channel.event.wait(reply_within)
    return channel.event_ready


def _terminate_remote(channel: paramiko.Channel, reply_within: float) -> bool:
    """End a remote command past its timeout: ``TERM``, a grace period, then ``KILL``.

    Returns:
        True when the server accepted the signal and the command ended (its channel closed
        or it reported an exit status); False when the server refused or ignored the signal.
    """

    def ended(wait: float) -> bool:
        deadline = time.monotonic() + wait
        while not (channel.closed or channel.exit_status_ready()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            channel.status_event.wait(min(remaining, 0.05))
            while channel.recv_ready():  # keep the window open so the close can arrive
                channel.recv(_CHUNK)
            while channel.recv_stderr_ready():
                channel.recv_stderr(_CHUNK)
        return True

    if ended(0):
        return True
    if not _send_signal(channel, "TERM", reply_within=reply_within):
        return False
    if ended(_SIGNAL_GRACE_S):
        return True
    _send_signal(channel, "KILL")
    return ended(_SIGNAL_GRACE_S)


def _close_all(clients: list[paramiko.SSHClient]) -> None:
    """Close SSH connections last to first (the host before the jump hosts carrying it)."""
    for client in reversed(clients):
        with contextlib.suppress(Exception):
            client.close()


def _current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        raise AuthenticationError(
            "(local)",
            "cannot determine the current user name: set the host's user or ssh.default_user",
        ) from None

"""How a host is reached: the OpenSSH client config, ProxyJump chains and Ansible's ssh arguments.

Nothing here runs a command or opens a connection: ssh_config is read with
:class:`paramiko.SSHConfig` (after refusing ``Match exec``, which would run a shell command),
and every ProxyJump, ProxyCommand and ``ansible_ssh_*_args`` value is split with :mod:`shlex`
and only *read*. The result is a list of :class:`~patchpilot.core.models.JumpHost`\\ s that the
SSH transport connects through itself (paramiko ``direct-tcpip`` channels), checking each hop's
host key strictly.

Supported, from ssh_config (``ssh.config_file``, default ``~/.ssh/config``):

* ``HostName``, ``Port``, ``User``, ``IdentityFile`` (the first one that exists), ``ProxyJump``
  (``[ssh://][user@]host[:port]``, comma-separated for a chain, ``none``) and ``Include``;
* ``ProxyCommand`` only in the form ``ssh -W %h:%p [-q] [-p PORT] [-l USER] [-i KEY]
  [-J JUMPS] [-o Port=|User=|IdentityFile=|ProxyJump=] [user@]bastion`` (turned into a jump);
  any other ProxyCommand is a :class:`~patchpilot.core.errors.ConfigError` naming the host.

Jump hosts are themselves looked up in ssh_config (their ``HostName``, ``Port``, ``User``,
``IdentityFile`` and their own ``ProxyJump``), as ``ssh -J`` does. Host-key settings
(``StrictHostKeyChecking``, ``UserKnownHostsFile``…) are never applied: patchpilot checks every
hop's key against its own known_hosts files and warns that the setting was ignored.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from patchpilot.core.errors import ConfigError, UnsafeArgumentError
from patchpilot.core.inventory._validate import validate_address, validate_key_file, validate_user
from patchpilot.core.models import JumpHost

if TYPE_CHECKING:
    import paramiko

    from patchpilot.core.settings import SSHSettings

__all__ = [
    "MAX_JUMPS",
    "JumpSpec",
    "Reach",
    "SSHArgs",
    "SSHConfigFile",
    "parse_proxy_command",
    "parse_proxy_jump",
    "parse_ssh_args",
    "resolve_reach",
]

_log = structlog.get_logger(__name__)

MAX_JUMPS: Final = 8
"""Most jump hosts on the way to one host (OpenSSH has no limit; a longer chain is a loop)."""
_MAX_INCLUDE_DEPTH: Final = 16  # as OpenSSH's READCONF_MAX_DEPTH
_MAX_CONFIG_BYTES: Final = 1024 * 1024

# ssh(1) options that take an argument (from its getopt string) and those that do not.
_SSH_ARG_FLAGS: Final = frozenset("bceilmopBDEFIJLOPQRSwW")
_SSH_FLAGS: Final = frozenset("1246afgknqstvxyACGKMNTVXY")
# Flags of a ProxyCommand's ssh that change nothing patchpilot does (quiet, no tty, IP family,
# compression, verbosity, agent/X11 forwarding off or on: patchpilot never forwards either).
_HARMLESS_FLAGS: Final = frozenset("1246aqnNTvCxAXYy")
# -o options that only tune a connection patchpilot makes its own way.
_HARMLESS_OPTIONS: Final = frozenset(
    {
        "batchmode",
        "compression",
        "connectionattempts",
        "connecttimeout",
        "controlmaster",
        "controlpath",
        "controlpersist",
        "forwardagent",
        "forwardx11",
        "identitiesonly",
        "kbdinteractiveauthentication",
        "loglevel",
        "passwordauthentication",
        "preferredauthentications",
        "pubkeyauthentication",
        "requesttty",
        "serveralivecountmax",
        "serveraliveinterval",
        "tcpkeepalive",
    }
)
# Options that would weaken or redirect host-key checking: never applied, always warned about.
_HOST_KEY_OPTIONS: Final = frozenset(
    {
        "stricthostkeychecking",
        "userknownhostsfile",
        "globalknownhostsfile",
        "hostkeyalias",
        "checkhostip",
        "verifyhostkeydns",
        "knownhostscommand",
        "updatehostkeys",
        "hostkeyalgorithms",
    }
)
_DIRECTIVE = re.compile(r"^\s*([A-Za-z][A-Za-z0-9]*)(?:\s*=\s*|\s+)(.*?)\s*$")
_PROXY_FORM = (
    "only `ssh -W %h:%p [-q] [-p PORT] [-l USER] [-i KEY] [-J JUMP] [user@]bastion` is "
    "supported (it is turned into a jump host); patchpilot never runs a ProxyCommand"
)


# --------------------------------------------------------------------------- jump specs


@dataclass(frozen=True, slots=True)
class JumpSpec:
    """A jump host as written (``[user@]host[:port]``), before ssh_config is applied."""

    host: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None


def _port(text: str, what: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{what}: port {text!r} is not a number from 1 to 65535")
    return int(text)


def _checked(kind: str, check: Any, value: str) -> str:
    try:
        return str(check(value))
    except UnsafeArgumentError as exc:
        raise ValueError(f"{kind}: {exc}") from exc


def parse_destination(text: str, what: str = "jump host") -> JumpSpec:
    """Parse ``[ssh://][user@]host[:port]`` (an IPv6 address with a port is bracketed).

    Raises:
        ValueError: an empty, unsafe or malformed value.
    """
    value = text.strip()
    if value.lower().startswith("ssh://"):
        value = value[len("ssh://") :].rstrip("/")
    if not value:
        raise ValueError(f"{what}: empty host")
    user: str | None = None
    if "@" in value:
        user_part, _, value = value.rpartition("@")
        user = _checked(what, validate_user, user_part)
    port: int | None = None
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ValueError(f"{what}: malformed bracketed address {text!r}")
        if rest:
            port = _port(rest[1:], what)
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
        port = _port(port_text, what)
    else:
        host = value  # a name, an IPv4 address or a bare IPv6 address
    return JumpSpec(host=_checked(what, validate_address, host), port=port, user=user)


def parse_proxy_jump(text: str) -> tuple[JumpSpec, ...]:
    """Parse an OpenSSH ProxyJump value: ``none`` or comma-separated destinations.

    Returns:
        The jump hosts, first to last (empty for ``none``).

    Raises:
        ValueError: a malformed or unsafe destination.
    """
    value = text.strip()
    if value.lower() == "none":
        return ()
    if not value:
        raise ValueError("ProxyJump is empty (write `none` for no jump host)")
    specs = tuple(parse_destination(part, "ProxyJump") for part in value.split(","))
    if len(specs) > MAX_JUMPS:
        raise ValueError(f"ProxyJump lists {len(specs)} jump hosts; at most {MAX_JUMPS}")
    return specs


def _ssh_words(tokens: list[str]) -> list[tuple[str | None, str]]:
    """Split ssh(1) arguments into ``(flag, value)`` pairs: positional words have no flag, flags
    without an argument an empty value."""
    words: list[tuple[str | None, str]] = []
    index = 0
    while index < len(tokens):
        word = tokens[index]
        index += 1
        if word == "--":
            words.extend((None, rest) for rest in tokens[index:])
            break
        if not word.startswith("-") or word == "-":
            words.append((None, word))
            continue
        chars = word[1:]
        for position, flag in enumerate(chars):
            if flag in _SSH_ARG_FLAGS:
                value = chars[position + 1 :]
                if not value:
                    if index >= len(tokens):
                        raise ValueError(f"ssh option -{flag} needs a value")
                    value = tokens[index]
                    index += 1
                words.append((flag, value))
                break
            words.append((flag, ""))
    return words


def _option(value: str) -> tuple[str, str]:
    """Split a ``-o`` value (``Key=Value`` or ``Key Value``) into lower-case key and value."""
    match = _DIRECTIVE.match(value)
    if not match:
        raise ValueError(f"malformed ssh option -o {value!r}")
    return match.group(1).lower(), match.group(2).strip().strip("\"'")


def _split(text: str, what: str) -> list[str]:
    if "{{" in text or "{%" in text:
        raise ValueError(f"{what}: Jinja-templated values are not supported")
    try:
        return shlex.split(text, comments=False)
    except ValueError as exc:
        raise ValueError(f"{what}: cannot split {text!r}: {exc}") from exc


def _target_matches(value: str, target: tuple[str, int] | None) -> bool:
    """Whether a ``-W`` value forwards to the host itself (``%h:%p``, or expanded)."""
    if value == "%h:%p":
        return True
    if target is None:
        return False
    host, _ = target
    found, sep, port_text = value.rpartition(":")
    if not sep or not port_text.isdigit():
        return False
    found = found[1:-1] if found.startswith("[") and found.endswith("]") else found
    return found == host and port_text.isdigit()


@dataclass
class _ProxySsh:
    """The options of a ProxyCommand's ``ssh`` read so far (ssh keeps each first value)."""

    text: str
    target: tuple[str, int] | None
    notes: list[str] | None
    forwards_to_host: bool = False
    nested: tuple[JumpSpec, ...] = ()
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    destinations: list[str] = field(default_factory=list)

    def refuse(self, what: str) -> ValueError:
        return ValueError(f"ProxyCommand {self.text!r}: {what}: {_PROXY_FORM}")

    def take(self, flag: str | None, value: str) -> None:
        if flag is None:
            self.destinations.append(value)
        elif flag == "W":
            if not _target_matches(value, self.target):
                raise self.refuse(f"-W {value} does not forward to the host itself (%h:%p)")
            self.forwards_to_host = True
        elif flag == "J":
            self.nested = parse_proxy_jump(value)
        elif flag == "o":
            self.option(value)
        elif flag in ("p", "l", "i"):
            self.option({"p": "Port", "l": "User", "i": "IdentityFile"}[flag] + "=" + value)
        elif flag in "Ecm":
            if self.notes is not None:
                self.notes.append(f"-{flag} {value}")
        elif flag not in _HARMLESS_FLAGS:
            raise self.refuse(f"option -{flag} is not supported")

    def option(self, value: str) -> None:
        key, option_value = _option(value)
        if key == "port":
            if self.port is None:
                self.port = _port(option_value, "ProxyCommand port")
        elif key == "user":
            if self.user is None:
                self.user = _checked("ProxyCommand user", validate_user, option_value)
        elif key == "identityfile":
            if self.key_file is None:
                self.key_file = _checked("ProxyCommand key", validate_key_file, option_value)
        elif key == "proxyjump":
            self.nested = parse_proxy_jump(option_value)
        elif key == "proxycommand":
            raise self.refuse("it nests another ProxyCommand")
        elif self.notes is not None:
            self.notes.append(f"-o {value}")


def parse_proxy_command(
    text: str, *, target: tuple[str, int] | None = None, notes: list[str] | None = None
) -> tuple[JumpSpec, ...]:
    """Turn a ProxyCommand of the form ``ssh -W %h:%p [options] [user@]bastion`` into jumps.

    The command is split with :mod:`shlex` and read, never run.

    Args:
        text: the ProxyCommand value (``none`` means no jump).
        target: ``(hostname, port)`` when ssh_config already expanded ``%h``/``%p`` (paramiko
            does), so ``-W`` may name the host itself; None: ``-W`` must be ``%h:%p``.
        notes: receives the options that were ignored (for a warning).

    Returns:
        The jump hosts (the ProxyCommand's own ``-J`` ones first, then the bastion).

    Raises:
        ValueError: any other command or option, naming what is refused and the supported form.
    """
    if text.strip().lower() == "none":
        return ()
    tokens = _split(text, "ProxyCommand")
    command = _ProxySsh(text, target, notes)
    if not tokens or os.path.basename(tokens[0]) != "ssh":
        raise command.refuse("not an ssh command")
    for flag, value in _ssh_words(tokens[1:]):
        command.take(flag, value)
    if not command.forwards_to_host:
        raise command.refuse("no -W %h:%p")
    if len(command.destinations) != 1:
        found = command.destinations
        raise command.refuse("no bastion" if not found else f"more than a bastion: {found}")
    spec = parse_destination(command.destinations[0], "ProxyCommand bastion")
    bastion = JumpSpec(
        host=spec.host,
        port=command.port if command.port is not None else spec.port,
        user=command.user if command.user is not None else spec.user,
        key_file=command.key_file,
    )
    chain = (*command.nested, bastion)
    if len(chain) > MAX_JUMPS:
        raise command.refuse(f"more than {MAX_JUMPS} jump hosts")
    return chain


# --------------------------------------------------------------------------- Ansible ssh args


@dataclass(frozen=True, slots=True)
class SSHArgs:
    """What patchpilot takes from ``ansible_ssh_common_args``/``ansible_ssh_extra_args``."""

    jumps: tuple[JumpSpec, ...] | None
    """The jump hosts (``-J``, ``-o ProxyJump=``, ``-o ProxyCommand="ssh -W %h:%p …"``);
    empty for an explicit ``none``; None when the arguments name no jump."""
    ignored: tuple[str, ...] = ()
    """Options ignored because patchpilot does not apply them (warned about)."""
    host_key: tuple[str, ...] = ()
    """Host-key options ignored because patchpilot never weakens host-key checking."""


def parse_ssh_args(text: str) -> SSHArgs:
    """Read the jump host out of Ansible's extra ssh arguments; never runs anything.

    Args:
        text: the variable's value, an ssh(1) argument string.

    Returns:
        The jump hosts and the options that were ignored.

    Raises:
        ValueError: a malformed or unsupported jump option (a ProxyCommand that is not
            ``ssh -W %h:%p …``), or several jump options.
    """
    tokens = _split(text, "ssh arguments")
    jumps: tuple[JumpSpec, ...] | None = None
    given: list[str] = []
    ignored: list[str] = []
    host_key: list[str] = []
    for flag, value in _ssh_words(tokens):
        shown = value if flag is None else f"-{flag}" + (f" {value}" if value else "")
        if flag == "J":
            jumps = parse_proxy_jump(value)
            given.append(shown)
        elif flag == "o":
            key, option_value = _option(value)
            if key == "proxyjump":
                jumps = parse_proxy_jump(option_value)
                given.append(shown)
            elif key == "proxycommand":
                jumps = parse_proxy_command(option_value, notes=ignored)
                given.append(shown)
            elif key in _HOST_KEY_OPTIONS:
                host_key.append(shown)
            elif key not in _HARMLESS_OPTIONS:
                ignored.append(shown)
        elif flag is None or flag not in _HARMLESS_FLAGS:
            ignored.append(shown)
    if len(given) > 1:
        raise ValueError(f"several jump options ({', '.join(given)}); give only one")
    return SSHArgs(jumps=jumps, ignored=tuple(ignored), host_key=tuple(host_key))


# --------------------------------------------------------------------------- ssh_config


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    """What ssh_config says about one name (paramiko's lookup, checked)."""

    hostname: str
    port: int | None
    user: str | None
    key_file: str | None
    proxy_jump: str | None
    proxy_command: str | None


def _directive(line: str) -> tuple[str, list[str]] | None:
    match = _DIRECTIVE.match(line)
    if not match or line.lstrip().startswith("#"):
        return None
    try:
        args = shlex.split(match.group(2), comments=True)
    except ValueError:
        args = match.group(2).split()
    return match.group(1).lower(), args


@dataclass
class SSHConfigFile:
    """An OpenSSH client config, read with :class:`paramiko.SSHConfig`.

    ``Include`` is expanded in place (relative paths are under ``~/.ssh``, as OpenSSH reads a
    user config); ``Match exec`` is refused before paramiko ever sees it, since paramiko would
    run its shell command.
    """

    path: str
    config: paramiko.SSHConfig
    _warned: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SSHConfigFile:
        """Read and parse ``path``.

        Raises:
            ConfigError: the file cannot be read, does not parse, or holds ``Match exec``.
        """
        import paramiko

        file = os.fspath(path)
        text = _read_config(Path(file), file, depth=0)
        try:
            config = paramiko.SSHConfig.from_text(text)
        except (paramiko.ssh_exception.ConfigParseError, ValueError) as exc:
            raise ConfigError(f"cannot parse the ssh_config: {exc}", file=file) from exc
        _log.debug("ssh_config.loaded", file=file)
        return cls(path=file, config=config)

    @classmethod
    def from_settings(cls, ssh: SSHSettings) -> SSHConfigFile | None:
        """The ssh_config the settings name (``ssh.config_file``, else ``~/.ssh/config`` when it
        exists), or None when ``ssh.use_ssh_config`` is off.

        Raises:
            ConfigError: a configured ``ssh.config_file`` is missing or invalid.
        """
        if not ssh.use_ssh_config:
            return None
        if ssh.config_file is not None:
            path = ssh.config_file.expanduser()
            if not path.is_file():
                raise ConfigError(
                    f"the ssh.config_file {path} does not exist (or is not a file)",
                    key="ssh.config_file",
                )
            return cls.load(path)
        default = Path("~/.ssh/config").expanduser()
        return cls.load(default) if default.is_file() else None

    def lookup(self, name: str) -> ConfigEntry:
        """What the config says for ``name`` (as ``ssh NAME`` would read it).

        Raises:
            ConfigError: a value in the config is invalid for ``name`` (naming the key).
        """
        try:
            found: dict[str, Any] = dict(self.config.lookup(name))
        except Exception as exc:  # paramiko raises assorted errors (canonicalisation, tokens)
            raise ConfigError(
                f"ssh_config lookup failed: {exc}", file=self.path, key=f"Host {name}"
            ) from exc
        self._warn_host_key_options(name, found)

        def checked(key: str, check: Any) -> Any:
            value = found.get(key)
            if value is None:
                return None
            try:
                return check(str(value))
            except (UnsafeArgumentError, ValueError) as exc:
                raise ConfigError(str(exc), file=self.path, key=f"Host {name}: {key}") from exc

        return ConfigEntry(
            hostname=checked("hostname", validate_address) or name,
            port=checked("port", lambda v: _port(v, "Port")),
            user=checked("user", validate_user),
            key_file=self._identity(name, found.get("identityfile")),
            proxy_jump=found.get("proxyjump"),
            proxy_command=found.get("proxycommand"),
        )

    def _identity(self, name: str, files: Any) -> str | None:
        if not files:
            return None
        candidates = [files] if isinstance(files, str) else list(files)
        for candidate in candidates:
            path = os.path.expanduser(str(candidate))
            if os.path.isfile(path):
                try:
                    return validate_key_file(path)
                except UnsafeArgumentError as exc:
                    raise ConfigError(
                        str(exc), file=self.path, key=f"Host {name}: IdentityFile"
                    ) from exc
        self._warn_once(
            f"identity:{name}",
            "ssh_config.identity_missing",
            host=name,
            identity_files=candidates,
            reason="no IdentityFile of ssh_config exists; the agent and default keys are used",
        )
        return None

    def _warn_host_key_options(self, name: str, found: dict[str, Any]) -> None:
        for key in sorted(_HOST_KEY_OPTIONS & found.keys()):
            value = found[key]
            if key == "stricthostkeychecking" and str(value).lower() in ("yes", "ask"):
                continue
            self._warn_once(
                f"{key}={value}",
                "ssh_config.option_ignored",
                option=key,
                value=value,
                reason="patchpilot always checks host keys strictly against its known_hosts "
                "files (ssh.known_hosts, ~/.ssh/known_hosts, its own); this setting is not applied",
            )

    def _warn_once(self, marker: str, event: str, **fields: Any) -> None:
        if marker not in self._warned:
            self._warned.add(marker)
            _log.warning(event, file=self.path, **fields)

    def jumps_of(self, name: str, entry: ConfigEntry, port: int) -> tuple[JumpSpec, ...] | None:
        """The jump hosts ssh_config gives ``name`` (None: it gives none).

        Raises:
            ConfigError: an unsupported ProxyCommand or a malformed ProxyJump, naming the host.
        """
        jump, command = entry.proxy_jump, entry.proxy_command
        key = f"Host {name}"
        if (
            jump is not None
            and command is not None
            and "none" not in (jump.strip().lower(), command.strip().lower())
        ):
            raise ConfigError(
                "both ProxyJump and ProxyCommand apply to this host (OpenSSH uses whichever "
                "comes first in the file, which patchpilot cannot tell); keep one",
                file=self.path,
                key=key,
            )
        try:
            if jump is not None:
                return parse_proxy_jump(jump)
            if command is not None:
                notes: list[str] = []
                found = parse_proxy_command(command, target=(entry.hostname, port), notes=notes)
                if notes:
                    self._warn_once(
                        f"proxycommand:{name}",
                        "ssh_config.option_ignored",
                        host=name,
                        options=notes,
                        reason="options of the ProxyCommand's ssh that patchpilot does not apply",
                    )
                return found
        except ValueError as exc:
            raise ConfigError(f"{exc}", file=self.path, key=key) from exc
        return None


def _read_config(path: Path, file: str, *, depth: int) -> str:
    """The text of ``path`` with ``Include`` expanded; refuses ``Match exec``."""
    try:
        if path.stat().st_size > _MAX_CONFIG_BYTES:
            raise ConfigError(f"larger than {_MAX_CONFIG_BYTES} bytes", file=str(path))
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the ssh_config: {exc}", file=str(path)) from exc
    lines: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        directive = _directive(line)
        if directive is None:
            lines.append(line)
            continue
        keyword, args = directive
        where = f"line {number}"
        if keyword == "match" and any(a.lower().lstrip("!") == "exec" for a in args):
            raise ConfigError(
                "`Match exec` runs a shell command to decide whether a block applies; patchpilot "
                "never runs commands from ssh_config. Remove it, point ssh.config_file at a "
                "config without it, or set ssh.use_ssh_config: false",
                file=str(path),
                key=where,
            )
        if keyword == "include":
            if depth >= _MAX_INCLUDE_DEPTH:
                raise ConfigError(
                    f"Include nested deeper than {_MAX_INCLUDE_DEPTH}", file=str(path), key=where
                )
            for pattern in args:
                expanded = os.path.expanduser(pattern)
                if not os.path.isabs(expanded):
                    expanded = os.path.join(os.path.expanduser("~/.ssh"), expanded)
                for match in sorted(glob.glob(expanded)):
                    lines.append(_read_config(Path(match), file, depth=depth + 1))
            continue
        lines.append(line)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True, slots=True)
class Reach:
    """Where and how to connect to a host, after ssh_config."""

    address: str
    port: int
    user: str | None
    key_file: str | None
    jump: tuple[JumpHost, ...]


def _jump_host(
    spec: JumpSpec, address: str, port: int, user: str | None, key: str | None
) -> JumpHost:
    return JumpHost(name=spec.host, address=address, port=port, user=user, key_file=key)


def _expand(spec: JumpSpec, config: SSHConfigFile | None, path: tuple[str, ...]) -> list[JumpHost]:
    """A jump host and, before it, the jump hosts ssh_config gives it (as ``ssh -J`` reads)."""
    if spec.host in path:
        chain = " -> ".join((*path, spec.host))
        raise ConfigError(
            f"jump hosts loop: {chain}; exclude the jump host from the ssh_config pattern that "
            "gives it a ProxyJump (e.g. `Host * !bastion`)",
            file=config.path if config is not None else None,
            key=f"Host {spec.host}",
        )
    if len(path) > MAX_JUMPS:
        raise ConfigError(f"more than {MAX_JUMPS} jump hosts on the way to {path[0]}")
    if config is None:
        return [_jump_host(spec, spec.host, spec.port or 22, spec.user, spec.key_file)]
    entry = config.lookup(spec.host)
    port = spec.port or entry.port or 22
    before: list[JumpHost] = []
    for own in config.jumps_of(spec.host, entry, port) or ():
        before.extend(_expand(own, config, (*path, spec.host)))
    hop = _jump_host(
        spec,
        entry.hostname,
        port,
        spec.user or entry.user,
        spec.key_file or entry.key_file,
    )
    return [*before, hop]


def resolve_reach(
    name: str,
    *,
    address: str,
    port: int | None,
    user: str | None,
    key_file: str | None,
    jumps: tuple[JumpSpec, ...] | None,
    config: SSHConfigFile | None,
) -> Reach:
    """Apply ssh_config to an inventory host; the inventory's own values win.

    ``address`` (the inventory address, defaulting to the host name) is what ssh_config's
    ``Host`` patterns match, as ``ssh ADDRESS`` would; its ``HostName`` replaces it. ``Port``,
    ``User``, ``IdentityFile`` and ``ProxyJump``/``ProxyCommand`` apply only where the inventory
    sets none (an empty jump list in the inventory means "no jump host").

    Raises:
        ConfigError: an invalid or unsupported ssh_config value, a loop or too many jumps.
    """
    entry = config.lookup(address) if config is not None else None
    final_port = port if port is not None else (entry.port if entry and entry.port else 22)
    if entry is not None and config is not None:
        if jumps is None:
            jumps = config.jumps_of(address, entry, final_port)
        address = entry.hostname
        user = user or entry.user
        key_file = key_file or entry.key_file
    hops: list[JumpHost] = []
    for spec in jumps or ():
        hops.extend(_expand(spec, config, (name,)))
    if len(hops) > MAX_JUMPS:
        raise ConfigError(f"host {name}: {len(hops)} jump hosts; at most {MAX_JUMPS}")
    return Reach(address=address, port=final_port, user=user, key_file=key_file, jump=tuple(hops))

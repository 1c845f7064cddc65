"""Transports: run argv lists on hosts (local subprocess, SSH via paramiko)."""

from __future__ import annotations

from patchpilot.core.models import Host
from patchpilot.core.settings import Settings
from patchpilot.tools.transport.base import (
    DEFAULT_MAX_OUTPUT,
    Transport,
    TransportFactory,
    check_argv,
)
from patchpilot.tools.transport.local import LocalTransport
from patchpilot.tools.transport.ssh import SSHTransport, build_remote_command

__all__ = [
    "DEFAULT_MAX_OUTPUT",
    "LocalTransport",
    "SSHTransport",
    "Transport",
    "TransportFactory",
    "build_remote_command",
    "check_argv",
    "open_transport",
]


def open_transport(host: Host, settings: Settings) -> Transport:
    """Build the transport for ``host``; nothing connects until its first command.

    Args:
        host: the inventory host. ``transport: local`` runs commands on this machine; anything
            else goes over SSH as ``host.user``, else ``ssh.default_user``, else the current
            user.
        settings: patchpilot settings (the ``ssh`` section and patchpilot's own known_hosts).

    Returns:
        A :class:`LocalTransport` or an :class:`SSHTransport`; use it as a context manager so
        the connection is closed.

    Raises:
        UnsafeArgumentError: the host's address or user name is not valid.
    """
    if host.transport == "local":
        return LocalTransport(
            host.name,
            command_timeout=settings.ssh.command_timeout,
            max_output_bytes=settings.ssh.max_output_bytes,
        )
    return SSHTransport(host, settings.ssh, settings.known_hosts_path)

"""Transports: run argv lists on hosts (local subprocess, SSH via paramiko)."""

from tools.transport.base import DEFAULT_MAX_OUTPUT, Transport, check_argv

__all__ = ["DEFAULT_MAX_OUTPUT", "Transport", "check_argv"]

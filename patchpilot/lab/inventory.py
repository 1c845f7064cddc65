"""The lab's inventory (patchpilot's own YAML format), known_hosts and client key.

Every host is in the group of its Debian release (``bookworm``, ``trixie``): group names are
tags too, so ``--target trixie`` or ``--limit '!trixie'`` select by release.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from patchpilot.lab.base import LAB_USER
from patchpilot.lab.models import LabHost

__all__ = ["ensure_client_key", "inventory_document", "write_inventory", "write_known_hosts"]

_HEADER = (
    "# patchpilot lab fleet, written by `patchpilot lab up` (rewritten on every up/reset).\n"
    "# Hosts are local Debian namespaces + overlayfs on 127.0.0.1, grouped by release\n"
    "# (bookworm = Debian 12, trixie = Debian 13); see patchpilot/lab.\n"
)


def _write_atomic(path: Path, text: str, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    partial.chmod(mode)
    partial.replace(path)


def ensure_client_key(key_file: Path) -> str:
    """Create the lab's client ed25519 key (``key_file`` 0600, ``.pub`` beside it) if missing.

    Returns:
        The public key line (``ssh-ed25519 AAAA… patchpilot-lab``).
    """
    public = key_file.with_name(key_file.name + ".pub")
    if key_file.is_file() and public.is_file():
        key_file.chmod(0o600)
        return public.read_text(encoding="ascii").strip()
    key = Ed25519PrivateKey.generate()
    private_text = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode("ascii")
    public_line = (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode("ascii")
        + " patchpilot-lab"
    )
    key_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_atomic(key_file, private_text, 0o600)
    _write_atomic(public, public_line + "\n", 0o644)
    return public_line


def write_known_hosts(path: Path, lines: Sequence[str]) -> None:
    """Write the lab's known_hosts (replacing the old one: host keys change on reset)."""
    _write_atomic(path, "".join(line + "\n" for line in lines), 0o644)


def inventory_document(
    hosts: Sequence[LabHost], key_file: Path, known_hosts: Path
) -> dict[str, Any]:
    """The inventory as a mapping (see ``configs/inventory.example.yaml`` for the format)."""
    groups: dict[str, list[str]] = {}
    for host in hosts:
        groups.setdefault(host.release, []).append(host.name)
    return {
        "defaults": {
            "user": LAB_USER,
            "key_file": str(key_file),
            "known_hosts": str(known_hosts),
        },
        "hosts": {
            host.name: {
                "address": host.address,
                "port": host.port,
                "tags": list(host.tags),
                "criticality": host.criticality,
                "exposure": host.exposure.value,
                "owner": host.owner,
            }
            for host in hosts
        },
        "groups": {release: {"hosts": names} for release, names in groups.items()},
    }


def write_inventory(
    path: Path, hosts: Sequence[LabHost], key_file: Path, known_hosts: Path
) -> None:
    """Write the lab inventory to ``path`` atomically."""
    document = inventory_document(hosts, key_file, known_hosts)
    text = _HEADER + yaml.safe_dump(document, sort_keys=False, default_flow_style=False)
    _write_atomic(path, text, 0o644)

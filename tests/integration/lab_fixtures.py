"""pytest plugin: a session-scoped lab fleet of real Debian 12 hosts (``patchpilot.lab``).

Register it with ``pytest_plugins = ["tests.integration.lab_fixtures"]``. The ``lab`` fixture
brings up a 3-host lab in a session temp dir, on free ports (so it never collides with a lab
left running under ``PATCHPILOT_HOME``), with the base tarball cached in the user's cache dir
(the first run ever debootstraps, about a minute; later runs extract it in seconds). It tears
everything down at the end of the session.

Not root: skipped, or failed when ``CI`` is set.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchpilot.lab import Lab, LabHost
from patchpilot.lab.system import NOT_ROOT_MESSAGE, port_free

__all__ = ["LabHandle", "free_port_block", "lab"]

LAB_HOSTS = 3


def free_port_block(count: int, *, start: int = 22000, stop: int = 60000) -> int:
    """The first port P such that P..P+count-1 and P+1000..P+1000+count-1 are all free."""
    for first in range(start, stop, 50):
        ports = [*range(first, first + count), *range(first + 1000, first + 1000 + count)]
        if all(port_free(p) for p in ports):
            return first
    raise RuntimeError("no free block of loopback ports for the lab")


@dataclass
class LabHandle:
    """A running lab for tests."""

    lab: Lab

    @property
    def inventory_path(self) -> Path:
        """The lab's patchpilot inventory."""
        return self.lab.inventory_path

    @property
    def hosts(self) -> list[LabHost]:
        """The lab hosts (name, address, port, acme_port, tags…)."""
        return self.lab.hosts()

    def host(self, name: str) -> LabHost:
        """One host by name."""
        return self.lab.host(name)

    def exec(self, name: str, argv: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root inside host ``name`` (nsenter); never raises on exit codes."""
        return self.lab.exec(name, argv)

    def stop_host(self, name: str) -> None:
        """Stop one host (by pid); its state is kept."""
        self.lab.stop_host(name)

    def start_host(self, name: str) -> None:
        """Start (or repair) one host."""
        self.lab.start_host(name)


def _require_root() -> None:
    if os.geteuid() != 0:
        reason = f"lab tests: {NOT_ROOT_MESSAGE}"
        if os.environ.get("CI"):
            pytest.fail(reason + " (CI is set, so this is an error, not a skip)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHandle]:
    """A running 3-host lab (see the module docstring)."""
    _require_root()
    lab_dir = tmp_path_factory.mktemp("lab")
    first = free_port_block(LAB_HOSTS)
    the_lab = Lab(lab_dir)
    try:
        the_lab.up(LAB_HOSTS, base_port=first, acme_base_port=first + 1000)
        yield LabHandle(the_lab)
    finally:
        the_lab.down()
        # The extracted base is ~280 MB: do not leave it in pytest's kept temp dirs.
        from patchpilot.lab.base import remove_tree

        remove_tree(the_lab.base_dir)

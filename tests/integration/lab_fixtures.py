"""pytest plugin: a session-scoped lab fleet of real Debian hosts (``patchpilot.lab``).

Register it with ``pytest_plugins = ["tests.integration.lab_fixtures"]``. The ``lab`` fixture
brings up the default fleet once per session, in a session temp dir, on free ports (so it never
collides with a lab left running under ``PATCHPILOT_HOME``): 3 bookworm hosts (canary-1, web-1,
db-1) and 1 trixie host (trixie-1), with the base tarballs cached in the user's cache dir (the
first run ever debootstraps each release, about a minute each; later runs extract them in
seconds). It tears everything down at the end of the session.

**Two views of one fleet.** :attr:`LabHandle.inventory_path` and :attr:`LabHandle.hosts` are
the *bookworm* hosts only: the fleet the rollout, apt, chat and testing tests were written for
(their rings, approvals and per-host expectations name canary-1, web-1 and db-1), so the trixie
host never joins their runs. :attr:`LabHandle.full_inventory_path` and
:attr:`LabHandle.all_hosts` are the whole fleet, as ``patchpilot lab up`` writes it; the lab's
own tests (``test_lab*.py``) use them.

Not root: skipped, or failed when ``CI`` is set.
"""

from __future__ import annotations

import os
import random
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from patchpilot.lab import Lab, LabHost
from patchpilot.lab.inventory import write_inventory
from patchpilot.lab.system import NOT_ROOT_MESSAGE, port_free

__all__ = ["LabHandle", "free_port_block", "lab"]

LAB_HOSTS = 3
"""Bookworm hosts of the session's lab."""
LAB_TRIXIE_HOSTS = 1
"""Trixie hosts of the session's lab (after the bookworm ones)."""


def free_port_block(count: int, *, start: int | None = None, stop: int = 60000) -> int:
    """A port P such that P..P+count-1 and P+1000..P+1000+count-1 are all free.

    The search starts at a random multiple of 50 (default), so concurrent test sessions on one
    machine rarely race for the same block between this check and their hosts' start.
    """
    first_try = 22000 + 50 * random.randrange(500) if start is None else start
    candidates = [*range(first_try, stop, 50), *range(22000, first_try, 50)]
    for first in candidates:
        ports = [*range(first, first + count), *range(first + 1000, first + 1000 + count)]
        if all(port_free(p) for p in ports):
            return first
    raise RuntimeError("no free block of loopback ports for the lab")


@dataclass
class LabHandle:
    """A running lab for tests (see the module docstring for its two views)."""

    lab: Lab
    bookworm_inventory: Path

    @property
    def inventory_path(self) -> Path:
        """The inventory of the bookworm hosts (canary-1, web-1, db-1)."""
        return self.bookworm_inventory

    @property
    def full_inventory_path(self) -> Path:
        """The lab's own inventory: every host, grouped by release."""
        return self.lab.inventory_path

    @property
    def hosts(self) -> list[LabHost]:
        """The bookworm hosts (name, address, port, acme_port, tags…)."""
        return [h for h in self.lab.hosts() if h.release == "bookworm"]

    @property
    def all_hosts(self) -> list[LabHost]:
        """Every host of the fleet, bookworm then trixie."""
        return self.lab.hosts()

    @property
    def trixie_hosts(self) -> list[LabHost]:
        """The trixie hosts."""
        return [h for h in self.lab.hosts() if h.release == "trixie"]

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
    """A running lab: 3 bookworm hosts and 1 trixie host (see the module docstring)."""
    _require_root()
    lab_dir = tmp_path_factory.mktemp("lab")
    first = free_port_block(LAB_HOSTS + LAB_TRIXIE_HOSTS)
    the_lab = Lab(lab_dir)
    try:
        the_lab.up(
            LAB_HOSTS,
            trixie_hosts=LAB_TRIXIE_HOSTS,
            base_port=first,
            acme_base_port=first + 1000,
        )
        bookworm = lab_dir / "inventory-bookworm.yaml"
        write_inventory(
            bookworm,
            [h for h in the_lab.hosts() if h.release == "bookworm"],
            the_lab.key_file,
            the_lab.known_hosts_path,
        )
        yield LabHandle(the_lab, bookworm)
    finally:
        the_lab.down()
        # Each extracted base is ~300 MB: do not leave them in pytest's kept temp dirs.
        from patchpilot.lab.base import remove_tree

        for base_dir in the_lab.base_dirs():
            remove_tree(base_dir)

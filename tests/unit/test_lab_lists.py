"""The lab's trimmed apt lists: the closure of what dpkg has installed (patchpilot.lab.base)."""

from __future__ import annotations

from pathlib import Path

import pytest

from patchpilot.lab import base as base_mod
from patchpilot.lab.base import installed_packages, package_closure

STATUS = """Package: libc6
Status: install ok installed
Version: 2.36-9

Package: openssh-server
Status: install ok installed
Depends: libc6 (>= 2.34), openssh-client (= 1:9.2p1-2)
Version: 1:9.2p1-2

Package: gone
Status: deinstall ok config-files
Version: 1

Package: never
Status: purge ok not-installed
"""

LIST = """Package: libc6
Version: 2.36-9+deb12u9
Depends: libgcc-s1

Package: libgcc-s1
Version: 12.2.0-14
Pre-Depends: gcc-12-base (= 12.2.0-14)

Package: gcc-12-base
Version: 12.2.0-14

Package: openssh-server
Version: 1:9.2p1-2+deb12u5
Depends: libc6 (>= 2.36), openssh-client (= 1:9.2p1-2+deb12u5), default-mta | mail-transport-agent
Recommends: ncurses-term

Package: openssh-client
Version: 1:9.2p1-2+deb12u5
Depends: libc6:any

Package: ncurses-term
Version: 6.4-4

Package: exim4-daemon-light
Version: 4.96-15
Provides: mail-transport-agent

Package: postfix
Version: 3.7.11-0
Provides: mail-transport-agent, default-mta

Package: unrelated-game
Version: 1.0
Depends: libc6
"""


def test_installed_are_what_dpkg_has_or_half_has() -> None:
    assert installed_packages(STATUS) == {"libc6", "openssh-server", "gone"}


def test_the_closure_follows_every_alternative_version_and_provider() -> None:
    keep = package_closure(installed_packages(STATUS), [LIST])
    assert keep == {
        "libc6",
        "openssh-server",
        "gone",
        "libgcc-s1",  # a new dependency of an upgrade
        "gcc-12-base",  # Pre-Depends, transitively
        "openssh-client",  # a version-pinned dependency; ":any" is stripped
        "ncurses-term",  # Recommends: apt installs new recommends on upgrade
        "default-mta",
        "mail-transport-agent",
        "exim4-daemon-light",  # both providers of the virtual name
        "postfix",
    }
    assert "unrelated-game" not in keep


def test_trim_keeps_the_closure_and_the_file_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = tmp_path / "var" / "lib" / "apt" / "lists"
    lists.mkdir(parents=True)
    (tmp_path / "var" / "lib" / "dpkg").mkdir(parents=True)
    (tmp_path / "var" / "lib" / "dpkg" / "status").write_text(STATUS)
    packages = lists / "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
    packages.write_text(LIST)
    packages.chmod(0o644)
    translation = lists / "deb.debian.org_debian_dists_bookworm_main_i18n_Translation-en"
    translation.write_text("Package: unrelated-game\nDescription-md5: 0\n")
    ran: list[list[str]] = []
    monkeypatch.setattr(base_mod, "run", lambda argv, **_: ran.append(list(argv)))

    kept, total = base_mod.trim_package_lists(tmp_path)

    assert (kept, total) == (8, 9)  # every paragraph but unrelated-game
    text = packages.read_text()
    assert "Package: unrelated-game" not in text
    assert (
        "Package: postfix\nVersion: 3.7.11-0\nProvides: mail-transport-agent, default-mta" in text
    )
    assert packages.stat().st_mode & 0o777 == 0o644
    assert "unrelated-game" in translation.read_text()  # only Packages lists are trimmed
    assert not list(lists.glob("*.trim"))
    assert ran == [
        ["chroot", str(tmp_path), "apt-cache", "-o", "Dir::Etc::sourceparts=-", "gencaches"]
    ]

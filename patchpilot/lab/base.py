"""The lab's base root filesystems: debootstrap once per release, customise, cache as zstd.

One base per Debian release the fleet uses (:data:`RELEASES`: ``bookworm``, Debian 12, and
``trixie``, Debian 13), each built and cached on its own. The cache lives in
``$PATCHPILOT_LAB_CACHE``, else ``$XDG_CACHE_HOME/patchpilot/lab``, else
``~/.cache/patchpilot/lab``: ``base-<release>.tar.zst`` and ``base-<release>.json``
(:class:`~patchpilot.lab.models.BaseMeta`). It is shared by every lab of the user; a lab
extracts a release's tarball into ``$LAB/base`` (bookworm) or ``$LAB/base-<release>``
(seconds) and records the metadata beside it (``base.json``, ``base-<release>.json``).

Each base gets its release's suite, ``-updates`` and ``-security`` from Debian's mirror; the
packages themselves come from the suite (the last point release), so the security suite
always holds real pending updates.

Callers must never modify a base directory while an overlay is mounted on it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import structlog
from pydantic import ValidationError

from patchpilot.core.errors import LabError
from patchpilot.lab.models import BASE_FORMAT_VERSION, DEFAULT_RELEASE, BaseMeta
from patchpilot.lab.system import ensure_tools, mounts, run

__all__ = [
    "DEBIAN_MIRROR",
    "DEFAULT_RELEASE",
    "INCLUDE",
    "LAB_USER",
    "RELEASES",
    "SECURITY_MIRROR",
    "SUITE",
    "TRIXIE",
    "LabRelease",
    "base_age_days",
    "cache_dir",
    "cache_lock",
    "check_release",
    "copy_resolv_conf",
    "customise_base",
    "debootstrap",
    "extract_tarball",
    "make_tarball",
    "meta_path_of",
    "read_meta",
    "refresh_base",
    "remove_tree",
    "sources_list",
    "sshd_lab_conf",
    "tarball_path",
    "write_meta",
]

log = structlog.get_logger(__name__, agent="lab")  # lazy: bound after configure_logging()

#: The default release (kept under its historic name).
SUITE = DEFAULT_RELEASE
TRIXIE = "trixie"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
INCLUDE = ("openssh-server", "python3", "ca-certificates", "sudo")
LAB_USER = "lab"

_CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "HOME": "/root",
    "DEBIAN_FRONTEND": "noninteractive",
}


@dataclass(frozen=True)
class LabRelease:
    """A Debian release the lab can build a base of."""

    codename: str
    version: str
    sshd_extra: str = ""
    """Release-specific lines of the lab's sshd configuration."""

    @property
    def label(self) -> str:
        """``Debian 13 (trixie)``."""
        return f"Debian {self.version} ({self.codename})"


#: The releases the lab knows, by codename.
RELEASES: Mapping[str, LabRelease] = {
    DEFAULT_RELEASE: LabRelease(DEFAULT_RELEASE, "12"),
    TRIXIE: LabRelease(
        TRIXIE,
        "13",
        # GOTCHA: OpenSSH >= 9.8 penalises a source address for connections that close before
        # authenticating (every port probe of `lab status`, `wait_ssh`...). All lab clients
        # come from 127.0.0.1, so the penalty would lock every client out. bookworm's 9.2
        # does not know the option (it would refuse to start).
        sshd_extra="PerSourcePenalties no\n",
    ),
}


def check_release(release: str) -> LabRelease:
    """The :class:`LabRelease` called ``release``.

    Raises:
        LabError: the lab cannot build that release.
    """
    known = RELEASES.get(release)
    if known is None:
        raise LabError(
            f"the lab has no base for release {release!r} (known: {', '.join(RELEASES)})"
        )
    return known


def sources_list(release: str = DEFAULT_RELEASE) -> str:
    """``/etc/apt/sources.list`` of a base: the release, its -updates and -security."""
    check_release(release)
    return (
        f"deb {DEBIAN_MIRROR} {release} main\n"
        f"deb {DEBIAN_MIRROR} {release}-updates main\n"
        f"deb {SECURITY_MIRROR} {release}-security main\n"
    )


SOURCES_LIST = sources_list(DEFAULT_RELEASE)
ACME_LIST = "deb [trusted=yes] file:/srv/acme-repo ./\n"
APT_CONF = (
    "// patchpilot lab: no source cache and no kept .debs in every host's overlay (saves\n"
    "// ~40 MB per host). The package cache stays, as on any real host: without it every apt\n"
    "// command re-reads ~80 MB of lists (1-2 s of CPU each), which is not what a fleet does.\n"
    'Dir::Cache::srcpkgcache "";\n'
    'APT::Keep-Downloaded-Packages "false";\n'
)
SSHD_LAB_CONF = (
    "# patchpilot lab: keys only, no root, no PAM (there is no init system)\n"
    "PasswordAuthentication no\n"
    "KbdInteractiveAuthentication no\n"
    "PermitRootLogin no\n"
    "PubkeyAuthentication yes\n"
    "UsePAM no\n"
    "PidFile /run/sshd.pid\n"
)


def sshd_lab_conf(release: str = DEFAULT_RELEASE) -> str:
    """``/etc/ssh/sshd_config.d/lab.conf`` of a base of ``release``."""
    return SSHD_LAB_CONF + check_release(release).sshd_extra


def cache_dir() -> Path:
    """Where the base tarball is cached (see the module docstring)."""
    explicit = os.environ.get("PATCHPILOT_LAB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    root = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return root / "patchpilot" / "lab"


def tarball_path(cache: Path, suite: str = SUITE) -> Path:
    """The cached tarball of release ``suite``; its metadata is the same name with ``.json``."""
    check_release(suite)
    return cache / f"base-{suite}.tar.zst"


def meta_path_of(tarball: Path) -> Path:
    """The metadata file beside a tarball."""
    return tarball.with_name(tarball.name.removesuffix(".tar.zst") + ".json")


@contextlib.contextmanager
def cache_lock(cache: Path, release: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on the cache directory (another lab may be using it), or on
    ``release``'s part of it only (so two releases' bases are built at the same time)."""
    cache.mkdir(parents=True, exist_ok=True)
    with (cache / (".lock" if release is None else f".lock-{release}")).open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_meta(path: Path) -> BaseMeta | None:
    """Read a :class:`BaseMeta`; None when missing, unreadable or of another format version."""
    try:
        meta = BaseMeta.model_validate_json(path.read_text(encoding="utf-8"))
    except (OSError, ValidationError, ValueError):
        return None
    return meta if meta.format_version == BASE_FORMAT_VERSION else None


def write_meta(path: Path, meta: BaseMeta) -> None:
    """Write a :class:`BaseMeta` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(meta.model_dump_json(indent=2) + "\n", encoding="utf-8")
    partial.replace(path)


def base_age_days(meta: BaseMeta, now: datetime | None = None) -> float:
    """Days since the base's apt indices were last refreshed."""
    current = now or datetime.now(UTC)
    return (current - meta.refreshed_at).total_seconds() / 86400


def _chroot(root: Path, *argv: str, what: str, timeout: float = 600) -> None:
    run(["chroot", str(root), *argv], env=_CHROOT_ENV, what=what, timeout=timeout)


def copy_resolv_conf(root: Path) -> None:
    """Copy this machine's resolver configuration into ``root/etc/resolv.conf``."""
    target = root / "etc" / "resolv.conf"
    try:
        text = Path("/etc/resolv.conf").read_text(encoding="utf-8")
    except OSError:
        log.warning("lab.no_resolv_conf")
        return
    if target.is_symlink() or target.is_dir():
        target.unlink()
    target.write_text(text, encoding="utf-8")
    target.chmod(0o644)


def debootstrap(target: Path, *, suite: str = SUITE, mirror: str = DEBIAN_MIRROR) -> None:
    """``debootstrap --variant=minbase`` ``suite`` into ``target`` (which must not exist)."""
    ensure_tools({"debootstrap": "debootstrap"})
    started = time.monotonic()
    log.info("lab.debootstrap_started", suite=suite, target=str(target))
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(INCLUDE)}",
            suite,
            str(target),
            mirror,
        ],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        timeout=1800,
        what="debootstrap",
    )
    log.info("lab.debootstrap_done", seconds=round(time.monotonic() - started, 1))


def _lab_init_text() -> str:
    return resources.files("patchpilot.lab").joinpath("assets", "lab-init").read_text("utf-8")


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)


_FIELD = re.compile(r"^(Package|Status|Depends|Pre-Depends|Recommends|Provides):[ \t]*(.*)$", re.M)
_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]*")


def _paragraphs(text: str) -> Iterator[tuple[str, dict[str, str]]]:
    """Each paragraph of a Packages or dpkg status file, with the fields the closure needs."""
    for paragraph in text.split("\n\n"):
        fields = dict(_FIELD.findall(paragraph))
        if "Package" in fields:
            yield paragraph.strip("\n"), fields


def _names(relation: str) -> Iterator[str]:
    """Package names in a ``Depends``-style field, every alternative (``a (>= 1) | b:any``)."""
    for part in re.split(r"[,|]", relation):
        found = _NAME.match(part.strip())
        if found:
            yield found.group(0)


def package_closure(installed: Iterable[str], lists: Iterable[str]) -> set[str]:
    """The names apt may need for the packages ``installed``: themselves and, transitively,
    every name any version of them names in Depends, Pre-Depends or Recommends (each
    alternative), and the real packages that provide a virtual name among them.

    Args:
        installed: the starting names (the packages dpkg has installed).
        lists: the texts of apt's ``*_Packages`` lists.
    """
    needs: dict[str, set[str]] = {}
    providers: dict[str, set[str]] = {}
    for text in lists:
        for _, fields in _paragraphs(text):
            name = fields["Package"]
            named = needs.setdefault(name, set())
            for field in ("Depends", "Pre-Depends", "Recommends"):
                named.update(_names(fields.get(field, "")))
            for virtual in _names(fields.get("Provides", "")):
                providers.setdefault(virtual, set()).add(name)
    keep: set[str] = set()
    todo = list(installed)
    while todo:
        name = todo.pop()
        if name not in keep:
            keep.add(name)
            todo.extend(needs.get(name, ()))
            todo.extend(providers.get(name, ()))
    return keep


def installed_packages(status_text: str) -> set[str]:
    """The names dpkg's ``status`` file lists as installed (or half-way there)."""
    return {
        fields["Package"]
        for _, fields in _paragraphs(status_text)
        if fields.get("Status", "").split()[-1:] != ["not-installed"]
    }


def trim_package_lists(root: Path) -> tuple[int, int]:
    """Keep in the base's Debian ``*_Packages`` lists only the :func:`package_closure` of what
    dpkg has installed, then rebuild apt's cache.

    A base's lists name ~64,000 packages; the closure of a minimal host's ~130 is ~1,000. Every
    apt command a scan or a run sends (``apt-get -s``, ``apt-cache policy``) walks the whole
    cache: with the closure ``apt-get -s dist-upgrade`` takes ~0.08 s of CPU instead of ~0.9 s,
    with the same answer (the same upgrades, versions and new dependencies), since nothing
    outside the closure can be installed by an upgrade of what is there. A fleet host keeps its
    full lists; the lab's are trimmed because it runs a dozen hosts on two cores.
    (``scan --refresh`` on a lab host fetches full lists again, which only makes it slower.)

    Returns:
        (packages kept, packages listed before), counted as paragraphs.
    """
    lists_dir = root / "var" / "lib" / "apt" / "lists"
    status = (root / "var" / "lib" / "dpkg" / "status").read_text(encoding="utf-8")
    files = sorted(lists_dir.glob("*_Packages"))
    texts = [f.read_text(encoding="utf-8") for f in files]
    keep = package_closure(installed_packages(status), texts)
    kept = total = 0
    for path, text in zip(files, texts, strict=True):
        chosen = []
        for paragraph, fields in _paragraphs(text):
            total += 1
            if fields["Package"] in keep:
                chosen.append(paragraph)
        kept += len(chosen)
        tmp = path.with_name(path.name + ".trim")
        tmp.write_text("\n\n".join(chosen) + "\n", encoding="utf-8")
        stat = path.stat()
        os.chmod(tmp, stat.st_mode & 0o7777)
        tmp.replace(path)
    run(  # the Debian sources only: the acme repo is bind-mounted when a host starts
        ["chroot", str(root), "apt-cache", "-o", "Dir::Etc::sourceparts=-", "gencaches"],
        env=_CHROOT_ENV,
        what="apt-cache gencaches in the base",
    )
    log.info("lab.lists_trimmed", kept=kept, listed=total)
    return kept, total


def customise_base(root: Path, release: str = DEFAULT_RELEASE) -> None:
    """Apply the one-time lab customisation to a fresh debootstrap of ``release`` in ``root``.

    The lab user (key login only), passwordless sudo, sshd settings, no host keys, an empty
    machine-id, apt settings, a permissive policy-rc.d, ``/sbin/lab-init``, the release's
    Debian sources (then ``apt-get update`` and :func:`trim_package_lists`) and, last, the
    local acme repo source.
    """
    check_release(release)
    etc = root / "etc"
    passwd = (etc / "passwd").read_text(encoding="utf-8")
    if not any(line.startswith(f"{LAB_USER}:") for line in passwd.splitlines()):
        _chroot(root, "useradd", "-m", "-s", "/bin/bash", "-G", "sudo", LAB_USER, what="useradd")
    # GOTCHA: useradd leaves "!" (locked); with UsePAM no, sshd refuses locked accounts.
    _chroot(root, "usermod", "-p", "*", LAB_USER, what="usermod -p")
    ssh_dir = root / "home" / LAB_USER / ".ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    _chroot(root, "chown", f"{LAB_USER}:{LAB_USER}", f"/home/{LAB_USER}/.ssh", what="chown .ssh")
    _write(etc / "sudoers.d" / LAB_USER, f"{LAB_USER} ALL=(ALL) NOPASSWD:ALL\n", 0o440)
    _write(etc / "ssh" / "sshd_config.d" / "lab.conf", sshd_lab_conf(release))
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    _write(etc / "machine-id", "")
    dbus_id = root / "var" / "lib" / "dbus" / "machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()
    _write(etc / "hostname", "localhost\n")
    _write(etc / "apt" / "apt.conf.d" / "90lab", APT_CONF)
    _write(root / "usr" / "sbin" / "policy-rc.d", "#!/bin/sh\nexit 0\n", 0o755)
    _write(root / "sbin" / "lab-init", _lab_init_text(), 0o755)
    (etc / "lab-autostart").mkdir(mode=0o755, exist_ok=True)
    _write(etc / "apt" / "sources.list", sources_list(release))
    for deb822 in (etc / "apt" / "sources.list.d").glob("*.sources"):
        deb822.unlink()  # only the sources above (none today; a future debootstrap may add one)
    copy_resolv_conf(root)
    _chroot(root, "apt-get", "update", what="apt-get update in the base")
    _chroot(root, "apt-get", "clean", what="apt-get clean in the base")
    trim_package_lists(root)
    # Only now: the repo is bind-mounted at host start, so the base update must not see it.
    _write(etc / "apt" / "sources.list.d" / "acme.list", ACME_LIST)
    (root / "srv" / "acme-repo").mkdir(mode=0o755, parents=True, exist_ok=True)


def refresh_base(root: Path) -> None:
    """``apt-get update`` of the Debian sources in an extracted base (no overlay mounted!)."""
    copy_resolv_conf(root)
    started = time.monotonic()
    run(
        [
            "chroot",
            str(root),
            "apt-get",
            "update",
            "-o",
            "Dir::Etc::sourceparts=-",
        ],
        env=_CHROOT_ENV,
        what="apt-get update in the base",
    )
    _chroot(root, "apt-get", "clean", what="apt-get clean in the base")
    trim_package_lists(root)
    log.info("lab.base_refreshed", seconds=round(time.monotonic() - started, 1))


def make_tarball(root: Path, tarball: Path) -> int:
    """Pack ``root`` into a zstd tarball atomically; return its size in bytes."""
    ensure_tools({"zstd": "zstd"})
    tarball.parent.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(f".{tarball.name}.partial")
    started = time.monotonic()
    run(
        [
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--acls",
            "--zstd",
            "-C",
            str(root),
            "-cf",
            str(partial),
            ".",
        ],
        what="tar (base tarball)",
        timeout=1800,
    )
    partial.replace(tarball)
    size = tarball.stat().st_size
    log.info(
        "cached the base tarball",
        tarball=str(tarball),
        mib=round(size / 2**20, 1),
        seconds=round(time.monotonic() - started, 1),
    )
    return size


def extract_tarball(tarball: Path, target: Path) -> None:
    """Extract a base tarball into ``target`` (created; must not exist)."""
    ensure_tools({"zstd": "zstd"})
    if target.exists():
        raise LabError(f"refusing to extract the base over an existing {target}")
    target.mkdir(parents=True)
    target.chmod(0o755)
    started = time.monotonic()
    run(
        [
            "tar",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--acls",
            "--zstd",
            "-C",
            str(target),
            "-xpf",
            str(tarball),
        ],
        what="tar (extract the base)",
        timeout=1800,
    )
    log.info("lab.base_extracted", target=str(target), seconds=round(time.monotonic() - started, 1))


def remove_tree(path: Path) -> None:
    """Delete a directory tree; refuses when anything is mounted inside it."""
    inside = [m.mount_point for m in mounts() if Path(m.mount_point).is_relative_to(path)]
    if inside:
        raise LabError(f"refusing to delete {path}: {inside[0]} is mounted inside it")
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)

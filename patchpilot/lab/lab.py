"""The lab fleet: bring N Debian 12 (+ M Debian 13) hosts up, down, report, reset them.

Layout of a lab directory (``$PATCHPILOT_HOME/lab`` for the CLI)::

    base/                 extracted bookworm base rootfs (overlay lower; never modified
                          while mounted)
    base.json             metadata of base/ (BaseMeta)
    base-trixie/          the trixie base, extracted when the fleet has trixie hosts
    base-trixie.json      its metadata
    hosts/NAME/           upper/ work/ root/ console.log pid provisioned
    repo/                 the local apt repo (bind-mounted read-only at /srv/acme-repo)
    keys/                 id_ed25519 (0600), id_ed25519.pub, known_hosts
    inventory.yaml        patchpilot inventory of the running fleet
    policy.yaml           the default policy plus an acme-web health check of every host
    state.json            LabState

Fleet: ``hosts`` bookworm hosts (the profile's cycle: canary-1, web-1, db-1…) plus
``trixie_hosts`` trixie hosts (trixie-1…) after them; see :mod:`patchpilot.lab.profile`.
``--hosts N`` counts the bookworm hosts only, so ``lab up --hosts 3`` is canary-1, web-1, db-1
and (by default) trixie-1; ``--trixie-hosts 0`` gives a bookworm-only fleet.

Lifecycle rules:

* ``up`` is idempotent and repairs: hosts running and answering SSH are kept; dead ones (after
  a reboot, a crash or a kill) get their stale mounts cleaned and are restarted; a missing base
  is extracted from the cache, a missing cache is built with debootstrap. A stale base (older
  than ``max_base_age_days``) is refreshed with ``apt-get update`` when no host is running, and
  re-cached. Each release's base is handled on its own, and only when a host uses it. ``up``
  without a host count keeps the previous one (default 3 bookworm + 1 trixie; a lab brought up
  before trixie hosts existed gets its trixie host on the next ``up``).
* Growing the fleet provisions the new hosts. **Shrinking it stops the extra hosts and deletes
  their upper layers** (their names leave the inventory); a later ``up`` with more hosts
  provisions them fresh.
* ``down`` stops every host by pid and unmounts it; upper layers (host state) are kept.
* ``reset`` = ``down``, delete every host's upper/work (so host keys and machine-ids too),
  then ``up`` with the same count and ports; known_hosts is rewritten.
* ``--rebuild-base`` debootstraps new bases (every release the fleet uses); since upper layers
  belong to the base they were made on, it also resets every host.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import structlog
from pydantic import ValidationError

from patchpilot.core.errors import LabError
from patchpilot.lab import base as base_mod
from patchpilot.lab.hosts import (
    HostPaths,
    exec_in_host,
    find_pid1,
    host_key_lines,
    is_our_unshare,
    mount_overlay,
    start_host,
    stop_host,
    unmount_root,
    wait_ssh,
    write_identity,
)
from patchpilot.lab.inventory import ensure_client_key, write_inventory, write_known_hosts
from patchpilot.lab.models import (
    DEFAULT_RELEASE,
    STATE_FORMAT_VERSION,
    BaseMeta,
    HostState,
    LabBaseStatus,
    LabHost,
    LabHostStatus,
    LabState,
    LabStatus,
)
from patchpilot.lab.policy import write_lab_policy
from patchpilot.lab.profile import (
    DEFAULT_ACME_BASE_PORT,
    DEFAULT_BASE_PORT,
    DEFAULT_TRIXIE_HOSTS,
    MAX_HOSTS,
    fleet_profile,
    host_release,
)
from patchpilot.lab.repo import build_repo, repo_stamp
from patchpilot.lab.system import (
    dir_usage,
    http_status,
    is_mounted,
    mounts,
    port_free,
    pss_kib_of_namespace,
    require_root,
    tcp_accepting,
)

__all__ = ["DEFAULT_HOSTS", "DEFAULT_MAX_BASE_AGE_DAYS", "Lab"]

log = structlog.get_logger(__name__, agent="lab")  # lazy: bound after configure_logging()

DEFAULT_HOSTS = 3
DEFAULT_MAX_BASE_AGE_DAYS = 7.0
_PARALLEL = 6
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._+/@:-]*$")
_ACME_UPDATE = (
    "apt-get",
    "update",
    "-o",
    "Dir::Etc::sourcelist=sources.list.d/acme.list",
    "-o",
    "Dir::Etc::sourceparts=-",
    "-o",
    "APT::Get::List-Cleanup=0",
)
_REPO_MOUNT = "/srv/acme-repo"


def _now() -> datetime:
    return datetime.now(UTC)


class Lab:
    """A lab fleet rooted at ``lab_dir`` (all methods but :meth:`status` need root).

    Args:
        lab_dir: the lab directory (``$PATCHPILOT_HOME/lab`` for the CLI); created on ``up``.
        cache: where the base tarball is cached (default: :func:`base.cache_dir`).
        progress: called with a short message at each step (the CLI shows it).
    """

    def __init__(
        self,
        lab_dir: Path,
        *,
        cache: Path | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.dir = Path(os.path.realpath(Path(lab_dir).expanduser()))
        if not _SAFE_PATH.match(str(self.dir)):
            raise LabError(
                f"lab directory {self.dir} holds spaces or special characters; "
                "use a plain path (mount options and mountinfo cannot carry them)"
            )
        self.cache = Path(os.path.realpath(cache)) if cache else base_mod.cache_dir()
        self._progress_cb = progress
        self._lock_depth = 0
        self._lock_handle: IO[str] | None = None

    # -- paths ---------------------------------------------------------------------------

    @property
    def base_dir(self) -> Path:
        """The extracted bookworm base (overlay lower)."""
        return self.dir / "base"

    @property
    def base_meta_path(self) -> Path:
        """Metadata of the extracted bookworm base."""
        return self.dir / "base.json"

    def base_dir_for(self, release: str) -> Path:
        """The extracted base of ``release`` (``base/`` for bookworm, else ``base-RELEASE/``)."""
        base_mod.check_release(release)
        return self.base_dir if release == DEFAULT_RELEASE else self.dir / f"base-{release}"

    def base_meta_path_for(self, release: str) -> Path:
        """Metadata of the extracted base of ``release``."""
        return self.base_dir_for(release).with_name(self.base_dir_for(release).name + ".json")

    def base_dirs(self) -> list[Path]:
        """The base directories of every release the lab knows (present or not)."""
        return [self.base_dir_for(release) for release in base_mod.RELEASES]

    @property
    def hosts_dir(self) -> Path:
        """Per-host directories."""
        return self.dir / "hosts"

    @property
    def repo_dir(self) -> Path:
        """The local apt repository."""
        return self.dir / "repo"

    @property
    def key_file(self) -> Path:
        """The client private key (ed25519, 0600)."""
        return self.dir / "keys" / "id_ed25519"

    @property
    def known_hosts_path(self) -> Path:
        """known_hosts with every host's keys as ``[127.0.0.1]:PORT``."""
        return self.dir / "keys" / "known_hosts"

    @property
    def inventory_path(self) -> Path:
        """The patchpilot inventory of the fleet."""
        return self.dir / "inventory.yaml"

    @property
    def policy_path(self) -> Path:
        """The lab's policy: the bundled default plus an acme-web health check per host."""
        return self.dir / "policy.yaml"

    @property
    def state_path(self) -> Path:
        """``state.json``."""
        return self.dir / "state.json"

    def host_paths(self, name: str) -> HostPaths:
        """The directory layout of host ``name``."""
        return HostPaths(self.hosts_dir / name)

    # -- state ---------------------------------------------------------------------------

    def load_state(self) -> LabState:
        """Read ``state.json`` (an empty state when missing; a corrupt one is an error)."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return LabState()
        try:
            state = LabState.model_validate_json(text)
        except (ValidationError, ValueError) as exc:
            raise LabError(
                f"{self.state_path} is corrupt ({exc.__class__.__name__}); "
                "delete it and run `patchpilot lab up` again"
            ) from exc
        if state.format_version != STATE_FORMAT_VERSION:
            raise LabError(
                f"{self.state_path} has format {state.format_version}, expected "
                f"{STATE_FORMAT_VERSION}: run `patchpilot lab down`, delete it, then `lab up`"
            )
        return state

    def save_state(self, state: LabState) -> None:
        """Write ``state.json`` atomically."""
        state.updated_at = _now()
        self.dir.mkdir(parents=True, exist_ok=True)
        partial = self.state_path.with_name(".state.json.tmp")
        partial.write_text(state.model_dump_json(indent=2) + "\n", encoding="utf-8")
        partial.replace(self.state_path)

    def hosts(self) -> list[LabHost]:
        """The hosts of the fleet as last brought up (empty before the first ``up``)."""
        state = self.load_state()
        return fleet_profile(
            state.hosts_count,
            trixie=state.trixie_hosts or 0,
            base_port=state.base_port,
            acme_base_port=state.acme_base_port,
        )

    def host(self, name: str) -> LabHost:
        """The lab host called ``name``."""
        for host in self.hosts():
            if host.name == name:
                return host
        raise LabError(f"no lab host called {name!r} (have: {[h.name for h in self.hosts()]})")

    # -- helpers -------------------------------------------------------------------------

    def _progress(self, message: str, **fields: object) -> None:
        if self._progress_cb is None:
            log.info(message, **fields)
        else:  # the caller shows it; keep the log line for --log-level debug
            log.debug(message, **fields)
            self._progress_cb(message)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the lab directory (re-entrant within this object)."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        handle = (self.dir / ".lock").open("a")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("lab.lock_wait")
                fcntl.flock(handle, fcntl.LOCK_EX)
            self._lock_depth = 1
            yield
        finally:
            self._lock_depth = 0
            handle.close()

    def _base_in_use(self, release: str = DEFAULT_RELEASE) -> bool:
        lower = f"lowerdir={self.base_dir_for(release)}"
        return any(
            m.fstype == "overlay" and lower in m.super_options.split(",") for m in mounts()
        ) or any(
            is_mounted(self.host_paths(p.name).root)
            for p in self._host_dirs()
            if host_release(p.name) == release
        )

    def _host_dirs(self) -> list[Path]:
        if not self.hosts_dir.is_dir():
            return []
        return sorted(p for p in self.hosts_dir.iterdir() if p.is_dir())

    def _running_pid(self, name: str) -> int | None:
        paths = self.host_paths(name)
        pid = paths.read_pid()
        if pid is not None and is_our_unshare(pid, paths.root):
            return pid
        return None

    def _stop_and_unmount(self, name: str) -> None:
        paths = self.host_paths(name)
        stop_host(name, paths.read_pid(), paths.root)
        unmount_root(paths)
        paths.pid_file.unlink(missing_ok=True)

    # -- base ----------------------------------------------------------------------------

    def _build_base(self, release: str) -> BaseMeta:
        """debootstrap + customise into a temporary dir, cache it, move it into place."""
        target = self.base_dir_for(release)
        new = target.with_name(target.name + ".new")
        base_mod.remove_tree(new)
        self._progress(
            f"building the {release} base with debootstrap (about a minute)", release=release
        )
        try:
            base_mod.debootstrap(new, suite=release)
            base_mod.customise_base(new, release)
            tarball = base_mod.tarball_path(self.cache, release)
            self._progress("caching the base tarball", tarball=str(tarball))
            size = base_mod.make_tarball(new, tarball)
        except BaseException:
            with contextlib.suppress(LabError, OSError):
                base_mod.remove_tree(new)
            raise
        now = _now()
        meta = BaseMeta(
            suite=release,
            mirror=base_mod.DEBIAN_MIRROR,
            include=base_mod.INCLUDE,
            built_at=now,
            refreshed_at=now,
            tarball=tarball.name,
            tarball_bytes=size,
        )
        base_mod.write_meta(base_mod.meta_path_of(tarball), meta)
        base_mod.remove_tree(target)
        new.rename(target)
        base_mod.write_meta(self.base_meta_path_for(release), meta)
        return meta

    def _extract_base(self, release: str, tarball: Path, meta: BaseMeta) -> BaseMeta:
        target = self.base_dir_for(release)
        new = target.with_name(target.name + ".new")
        base_mod.remove_tree(new)
        self._progress(f"extracting the cached {release} base", tarball=str(tarball))
        try:
            base_mod.extract_tarball(tarball, new)
        except BaseException:
            with contextlib.suppress(LabError, OSError):
                base_mod.remove_tree(new)
            raise
        base_mod.remove_tree(target)
        new.rename(target)
        base_mod.write_meta(self.base_meta_path_for(release), meta)
        return meta

    def _ensure_bases_for_hosts(
        self,
        state: LabState,
        profile: Sequence[LabHost],
        *,
        rebuild: bool,
        max_age_days: float,
    ) -> tuple[LabState, dict[str, datetime]]:
        """:meth:`_ensure_base` of every release ``profile`` uses, then reset the hosts of a
        release whose base is not the one their overlays were made on (a rebuilt or
        re-extracted base of another build or format).

        Returns:
            The state to continue with (without the reset hosts) and each base's build time.
        """
        releases = list(dict.fromkeys(h.release for h in profile))
        built: dict[str, datetime] = {}
        had: dict[str, tuple[bool, BaseMeta | None]] = {}
        for release in releases:
            had_base = self.base_dir_for(release).is_dir()
            meta_path = self.base_meta_path_for(release)
            had[release] = (had_base, base_mod.read_meta(meta_path) if had_base else None)
        # Each release's base is built (debootstrap: mostly waiting on the mirror) or extracted
        # on its own thread: two releases take about as long as the slower one.
        with ThreadPoolExecutor(max_workers=len(releases) or 1) as pool:
            futures = [
                pool.submit(self._ensure_base, r, rebuild=rebuild, max_age_days=max_age_days)
                for r in releases
            ]
            for future in futures:
                future.result()
        for release in releases:
            had_base, before = had[release]
            after = base_mod.read_meta(self.base_meta_path_for(release))
            if after is not None:
                built[release] = after.built_at
            recorded = state.bases_built_at.get(release)
            changed = (had_base and before is None) or (
                recorded is not None and recorded != built.get(release)
            )
            stale_hosts = [p for p in self._host_dirs() if host_release(p.name) == release]
            if changed and stale_hosts:
                # An overlay upper belongs to the base it was made on: fresh hosts.
                self._progress(f"the {release} base changed: resetting its hosts")
                for host_dir in stale_hosts:
                    self._stop_and_unmount(host_dir.name)
                    base_mod.remove_tree(host_dir)
                gone = {p.name for p in stale_hosts}
                state = state.model_copy(
                    update={"hosts": [h for h in state.hosts if h.name not in gone]}
                )
        self._drop_unused_bases(releases)
        return state, built

    def _drop_unused_bases(self, used: Sequence[str]) -> None:
        """Delete the extracted bases (not the cached tarballs) no host uses any more."""
        for release in base_mod.RELEASES:
            if release in used or release == DEFAULT_RELEASE:
                continue
            base_dir = self.base_dir_for(release)
            if base_dir.is_dir() and not self._base_in_use(release):
                self._progress(f"removing the unused {release} base", release=release)
                base_mod.remove_tree(base_dir)
                self.base_meta_path_for(release).unlink(missing_ok=True)

    def _ensure_base(self, release: str, *, rebuild: bool, max_age_days: float) -> None:
        base_dir = self.base_dir_for(release)
        meta_path = self.base_meta_path_for(release)
        # left over by an interrupted run
        base_mod.remove_tree(base_dir.with_name(base_dir.name + ".new"))
        meta = base_mod.read_meta(meta_path) if base_dir.is_dir() else None
        with base_mod.cache_lock(self.cache, release):
            tarball = base_mod.tarball_path(self.cache, release)
            cache_meta = (
                base_mod.read_meta(base_mod.meta_path_of(tarball)) if tarball.is_file() else None
            )
            if rebuild or (meta is None and cache_meta is None):
                if self._base_in_use(release):
                    raise LabError(
                        f"cannot rebuild the {release} base while hosts use it: run `lab down`"
                    )
                self._build_base(release)
                return
            if meta is None:
                if self._base_in_use(release):
                    raise LabError(f"{base_dir} is incomplete but mounted: run `lab down`")
                assert cache_meta is not None
                meta = self._extract_base(release, tarball, cache_meta)
            age = base_mod.base_age_days(meta)
            if age <= max_age_days:
                return
            if self._base_in_use(release):
                log.warning(
                    "the base is stale but hosts are running on it; `patchpilot lab down` "
                    "then `up` refreshes it",
                    release=release,
                    age_days=round(age, 1),
                    max_age_days=max_age_days,
                )
                return
            self._progress(
                f"refreshing the stale {release} base (apt-get update)", age_days=round(age, 1)
            )
            base_mod.refresh_base(base_dir)
            meta = meta.model_copy(update={"refreshed_at": _now()})
            size = base_mod.make_tarball(base_dir, tarball)
            meta = meta.model_copy(update={"tarball": tarball.name, "tarball_bytes": size})
            base_mod.write_meta(base_mod.meta_path_of(tarball), meta)
            base_mod.write_meta(meta_path, meta)

    # -- hosts ---------------------------------------------------------------------------

    def _provision(self, host: LabHost, pid: int) -> None:
        """Install acme-web 1.0.0 (and db-1's extras, holds) inside a started host.

        ``dpkg -i`` straight from the bind-mounted repo and ``dpkg --set-selections`` give the
        same dpkg state as ``apt-get install`` / ``apt-mark hold`` in a fraction of the time
        (every apt run re-reads ~55 MB of indices: the lab disables apt's binary caches).
        """
        paths = self.host_paths(host.name)
        self._progress(f"provisioning {host.name}", host=host.name)
        debs = []
        for item in ("acme-web=1.0.0", *host.extra_packages):
            name, _, version = item.partition("=")
            debs.append(f"{_REPO_MOUNT}/{name}_{version}_all.deb")
        steps: list[tuple[Sequence[str], str | None]] = [
            (("dpkg", "--force-confdef", "--force-confold", "-i", *debs), None)
        ]
        if host.held:
            selections = "".join(f"{name} hold\n" for name in host.held)
            steps.append((("dpkg", "--set-selections"), selections))
        for argv, stdin in steps:
            proc = exec_in_host(host.name, pid, paths.root, argv, input_text=stdin)
            if proc.returncode != 0:
                tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
                raise LabError(
                    f"provisioning {host.name}: {' '.join(argv[:2])} exited "
                    f"{proc.returncode}: {' | '.join(tail)}"
                )
        paths.provisioned_marker.write_text(_now().isoformat() + "\n", encoding="utf-8")

    def _host_healthy(self, host: LabHost, pid: int | None, state: HostState | None) -> bool:
        paths = self.host_paths(host.name)
        if pid is None or state is None:
            return False
        if (state.port, state.acme_port, state.release) != (
            host.port,
            host.acme_port,
            host.release,
        ):
            return False
        if not paths.provisioned_marker.is_file():
            return False
        try:
            wait_ssh(host.name, host.port, timeout=3.0)
        except LabError:
            return False
        return True

    def _bring_up_host(
        self,
        host: LabHost,
        public_key: str,
        old: HostState | None,
        *,
        repo_changed: bool = False,
    ) -> HostState:
        """Keep a healthy running host, else (re)start it; provision it when new.

        A kept host re-reads the acme repository's index when the repository was rebuilt
        (otherwise its apt would refuse the new files: hash sum mismatch).
        """
        paths = self.host_paths(host.name)
        bound = log.bind(host=host.name)
        pid = self._running_pid(host.name)
        if self._host_healthy(host, pid, old):
            bound.debug("host already running", pid=pid)
            assert old is not None
            assert pid is not None
            if repo_changed:
                for argv in (_ACME_UPDATE, ("apt-cache", "gencaches")):
                    proc = exec_in_host(host.name, pid, paths.root, argv)
                    if proc.returncode != 0:
                        bound.warning(
                            "lab.acme_index_refresh_failed",
                            command=argv[0],
                            stderr=proc.stderr[-300:],
                        )
            return old
        if pid is not None:
            bound.info("restarting host (unhealthy or reconfigured)", pid=pid)
        self._stop_and_unmount(host.name)
        for port, what in ((host.port, "sshd"), (host.acme_port, "acme-web")):
            if not port_free(port):
                raise LabError(
                    f"port 127.0.0.1:{port} ({what} of {host.name}) is in use by something "
                    "else: choose other ports with --base-port / --acme-base-port"
                )
        self._progress(f"starting {host.name}", host=host.name)
        mount_overlay(self.base_dir_for(host.release), paths, host.name)
        write_identity(host, paths.root, public_key)
        new_pid = start_host(host.name, paths, self.repo_dir)
        try:
            proc = exec_in_host(host.name, new_pid, paths.root, _ACME_UPDATE)
            if proc.returncode != 0:
                bound.warning("apt-get update of the acme repo failed", stderr=proc.stderr[-300:])
            if not paths.provisioned_marker.is_file():
                self._provision(host, new_pid)
            # Build apt's package cache once now (the lists and dpkg status just changed), as
            # any host has it: otherwise the first apt commands of many sessions at once all
            # rebuild it (1-2 s of CPU each).
            proc = exec_in_host(host.name, new_pid, paths.root, ("apt-cache", "gencaches"))
            if proc.returncode != 0:
                bound.warning("apt-cache gencaches failed", stderr=proc.stderr[-300:])
            wait_ssh(host.name, host.port)
        except BaseException:
            with contextlib.suppress(LabError, OSError):
                self._stop_and_unmount(host.name)
            raise
        return HostState(
            name=host.name,
            index=host.index,
            port=host.port,
            acme_port=host.acme_port,
            pid=new_pid,
            provisioned=True,
            started_at=_now(),
            release=host.release,
        )

    def _write_access_files(self, hosts: Sequence[LabHost]) -> None:
        lines: list[str] = []
        for host in hosts:
            lines += host_key_lines(self.host_paths(host.name).upper, host.port)
        write_known_hosts(self.known_hosts_path, lines)
        write_inventory(self.inventory_path, hosts, self.key_file, self.known_hosts_path)
        write_lab_policy(self.policy_path, hosts)

    def _wait_services(self, hosts: Sequence[LabHost], timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        pending = list(hosts)
        while pending and time.monotonic() < deadline:
            pending = [h for h in pending if http_status(h.acme_port, timeout=1.0) is None]
            if pending:
                time.sleep(0.1)
        for host in pending:
            log.warning("lab.acme_web_not_answering", host=host.name, port=host.acme_port)

    # -- public API ----------------------------------------------------------------------

    def up(
        self,
        hosts: int | None = None,
        *,
        trixie_hosts: int | None = None,
        base_port: int | None = None,
        acme_base_port: int | None = None,
        rebuild_base: bool = False,
        max_base_age_days: float = DEFAULT_MAX_BASE_AGE_DAYS,
    ) -> LabStatus:
        """Bring the fleet up (idempotent; repairs dead hosts). See the module docstring.

        Args:
            hosts: number of bookworm hosts (default: as before, else 3).
            trixie_hosts: number of trixie hosts after them (default: as before, else 1).
            base_port: sshd port of host 1 (host i gets base_port + i - 1, the trixie hosts
                counting after the bookworm ones; default as before, else 2201).
            acme_base_port: acme-web port of host 1 (default as before, else 8081).
            rebuild_base: debootstrap fresh bases (and reset every host).
            max_base_age_days: refresh the base's apt indices when older than this.

        Returns:
            The status after bring-up.
        """
        require_root()
        started = time.monotonic()
        with self._locked():
            state = self.load_state()
            known = state.hosts_count > 0
            count = hosts if hosts is not None else (state.hosts_count or DEFAULT_HOSTS)
            trixie = trixie_hosts
            if trixie is None:
                trixie = DEFAULT_TRIXIE_HOSTS if state.trixie_hosts is None else state.trixie_hosts
            ssh_base = base_port or (state.base_port if known else DEFAULT_BASE_PORT)
            acme_base = acme_base_port or (
                state.acme_base_port if known else DEFAULT_ACME_BASE_PORT
            )
            _check_layout(count, ssh_base, acme_base, trixie=trixie)
            if max_base_age_days < 0:
                raise LabError("--max-base-age-days must be >= 0")
            profile = fleet_profile(
                count, trixie=trixie, base_port=ssh_base, acme_base_port=acme_base
            )
            total = len(profile)
            wanted = {h.name for h in profile}

            # Hosts that are dead (crash, kill, reboot) or no longer wanted: clean them up.
            for host_dir in self._host_dirs():
                name = host_dir.name
                if name not in wanted:
                    self._progress(f"removing extra host {name} (fleet shrinks to {total})")
                    self._stop_and_unmount(name)
                    base_mod.remove_tree(host_dir)
                elif self._running_pid(name) is None:
                    self._stop_and_unmount(name)

            if rebuild_base:
                self._progress("stopping and resetting every host for the new base")
                for host_dir in self._host_dirs():
                    self._stop_and_unmount(host_dir.name)
                    base_mod.remove_tree(host_dir)
            state, built_at = self._ensure_bases_for_hosts(
                state, profile, rebuild=rebuild_base, max_age_days=max_base_age_days
            )

            public_key = ensure_client_key(self.key_file)
            stamp_before = repo_stamp(self.repo_dir)
            build_repo(self.repo_dir)
            repo_changed = repo_stamp(self.repo_dir) != stamp_before
            new_state = LabState(
                hosts_count=count,
                trixie_hosts=trixie,
                base_port=ssh_base,
                acme_base_port=acme_base,
                hosts=[],
                bases_built_at=built_at,
            )
            errors: list[BaseException] = []
            # Hosts are independent: bring them up in parallel (12 hosts ≈ 3 hosts' time).
            with ThreadPoolExecutor(max_workers=min(_PARALLEL, total)) as pool:
                futures = [
                    pool.submit(
                        self._bring_up_host,
                        host,
                        public_key,
                        state.host(host.name),
                        repo_changed=repo_changed,
                    )
                    for host in profile
                ]
                for host, future in zip(profile, futures, strict=True):
                    try:
                        new_state.hosts.append(future.result())
                    except Exception as exc:
                        errors.append(exc)
                        # Record whatever runs, even after a failure, so `down` can stop it.
                        new_state.hosts.append(
                            HostState(
                                name=host.name,
                                index=host.index,
                                port=host.port,
                                acme_port=host.acme_port,
                                pid=self._running_pid(host.name),
                                release=host.release,
                            )
                        )
            self.save_state(new_state)
            if errors:
                raise errors[0]
            self._write_access_files(profile)
            self._wait_services(profile)
        log.info(
            "lab is up",
            hosts=total,
            trixie_hosts=trixie,
            seconds=round(time.monotonic() - started, 1),
            inventory=str(self.inventory_path),
            policy=str(self.policy_path),
        )
        return self.status()

    def down(self) -> LabStatus:
        """Stop every host by pid and unmount it; upper layers (host state) are kept."""
        require_root()
        started = time.monotonic()
        with self._locked():
            for host_dir in self._host_dirs():
                self._progress(f"stopping {host_dir.name}", host=host_dir.name)
                self._stop_and_unmount(host_dir.name)
            if self.state_path.is_file():
                state = self.load_state()
                for hs in state.hosts:
                    hs.pid = None
                self.save_state(state)
        log.info("lab.down", seconds=round(time.monotonic() - started, 2))
        return self.status()

    def reset(self) -> LabStatus:
        """``down``, delete every host's upper/work (fresh from base), then ``up`` again."""
        require_root()
        with self._locked():
            state = self.load_state()
            self.down()
            for host_dir in self._host_dirs():
                self._progress(f"wiping {host_dir.name}", host=host_dir.name)
                base_mod.remove_tree(host_dir)
            self.known_hosts_path.unlink(missing_ok=True)
            if state.hosts_count:
                return self.up(
                    state.hosts_count,
                    trixie_hosts=state.trixie_hosts or 0,
                    base_port=state.base_port,
                    acme_base_port=state.acme_base_port,
                )
            return self.up()

    def stop_host(self, name: str) -> None:
        """Stop one host (by pid) and unmount it; its upper is kept."""
        require_root()
        self.host(name)
        with self._locked():
            self._stop_and_unmount(name)
            state = self.load_state()
            hs = state.host(name)
            if hs is not None:
                hs.pid = None
                self.save_state(state)

    def start_host(self, name: str) -> None:
        """(Re)start one host of the fleet (no-op when it runs and answers SSH)."""
        require_root()
        host = self.host(name)
        with self._locked():
            if not self.base_dir_for(host.release).is_dir():
                raise LabError(f"the lab has no {host.release} base: run `patchpilot lab up`")
            state = self.load_state()
            public_key = ensure_client_key(self.key_file)
            new = self._bring_up_host(host, public_key, state.host(name))
            state.hosts = [new if h.name == name else h for h in state.hosts]
            self.save_state(state)
            self._wait_services([host])

    def exec(
        self, name: str, argv: Sequence[str], *, input_text: str | None = None, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as root inside host ``name``; the result is returned whatever the exit."""
        paths = self.host_paths(name)
        return exec_in_host(
            name, paths.read_pid(), paths.root, argv, input_text=input_text, timeout=timeout
        )

    def status(self) -> LabStatus:
        """The live status of every host (works without root, with less detail)."""
        hosts = self.hosts() if self.state_path.is_file() else []
        releases = list(dict.fromkeys([DEFAULT_RELEASE, *(h.release for h in hosts)]))
        bases = []
        for release in releases:
            meta = base_mod.read_meta(self.base_meta_path_for(release))
            bases.append(
                LabBaseStatus(
                    release=release,
                    present=self.base_dir_for(release).is_dir() and meta is not None,
                    built_at=meta.built_at if meta else None,
                    refreshed_at=meta.refreshed_at if meta else None,
                )
            )
        used = {h.release for h in hosts} or {DEFAULT_RELEASE}
        result = LabStatus(
            lab_dir=self.dir,
            inventory_path=self.inventory_path,
            policy_path=self.policy_path,
            base_present=all(b.present for b in bases if b.release in used),
            base_refreshed_at=bases[0].refreshed_at,
            bases=bases,
        )
        for host in hosts:
            paths = self.host_paths(host.name)
            pid = paths.read_pid()
            running = pid is not None and is_our_unshare(pid, paths.root)
            pid1 = find_pid1(pid, paths.root) if running and pid is not None else None
            result.hosts.append(
                LabHostStatus(
                    name=host.name,
                    address=host.address,
                    port=host.port,
                    acme_port=host.acme_port,
                    release=host.release,
                    pid=pid if running else None,
                    running=running,
                    ssh_ok=running and tcp_accepting(host.port),
                    health=http_status(host.acme_port) if running else None,
                    upper_bytes=dir_usage(paths.upper),
                    memory_kib=pss_kib_of_namespace(pid1) if pid1 is not None else None,
                )
            )
        return result


def _check_layout(count: int, base_port: int, acme_base_port: int, *, trixie: int = 0) -> None:
    if not 1 <= count <= MAX_HOSTS:
        raise LabError(f"--hosts must be between 1 and {MAX_HOSTS}, got {count}")
    if not 0 <= trixie <= MAX_HOSTS - count:
        raise LabError(
            f"--trixie-hosts must be between 0 and {MAX_HOSTS - count} with --hosts {count} "
            f"(at most {MAX_HOSTS} hosts in all), got {trixie}"
        )
    count += trixie
    for label, first in (("--base-port", base_port), ("--acme-base-port", acme_base_port)):
        if not 1024 <= first <= 65535 - count:
            raise LabError(f"{label} {first} is out of range (1024..{65535 - count})")
    ssh = set(range(base_port, base_port + count))
    acme = set(range(acme_base_port, acme_base_port + count))
    if ssh & acme:
        raise LabError(
            f"sshd ports {base_port}..{base_port + count - 1} overlap acme-web ports "
            f"{acme_base_port}..{acme_base_port + count - 1}"
        )

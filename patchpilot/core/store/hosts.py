"""Discovery results per run and host: snapshots (facts, packages, pending updates) or failures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from patchpilot.core.models import (
    Ecosystem,
    HostFacts,
    InstalledPackage,
    InstallState,
    PendingUpdate,
    utcnow,
)
from patchpilot.core.store.base import StoreBase, require_run
from patchpilot.core.store.records import (
    HostResult,
    HostSnapshot,
)
from patchpilot.core.store.schema import to_db_time

__all__ = ["HostsRepository"]


class HostsRepository(StoreBase):
    """Discovery snapshots and host failures of a run; part of ``Store``."""

    def save_host_snapshot(
        self,
        run_id: str,
        facts: HostFacts,
        packages: Sequence[InstalledPackage],
        pending: Sequence[PendingUpdate],
        warnings: Sequence[str] = (),
    ) -> None:
        """Save what discovery found on one host; replaces that (run, host) entirely.

        Args:
            run_id: The run (must exist).
            facts: The host's facts (``facts.host`` names the host).
            packages: Installed packages.
            pending: Upgrades its package manager offers.
            warnings: What discovery could not collect (kept as the host's message).

        Raises:
            StoreError: If the run is unknown.
        """
        host = facts.host
        with self._transaction(f"save snapshot of {host} in run {run_id}") as conn:
            require_run(conn, run_id)
            conn.execute("DELETE FROM run_hosts WHERE run_id = ? AND host = ?", (run_id, host))
            conn.execute(
                "INSERT INTO run_hosts (run_id, host, ok, package_count, facts, message,"
                " recorded_at) VALUES (?, ?, 1, ?, ?, ?, ?)",
                (
                    run_id,
                    host,
                    len(packages),
                    facts.model_dump_json(),
                    "\n".join(warnings) or None,
                    to_db_time(utcnow()),
                ),
            )
            conn.executemany(
                "INSERT INTO host_packages (run_id, host, name, version, arch, source_name,"
                " source_version, state, ecosystem, epoch, module)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        run_id,
                        host,
                        p.name,
                        p.version,
                        p.arch,
                        p.source_name,
                        p.source_version,
                        p.state.value,
                        p.ecosystem.value,
                        p.epoch,
                        p.module,
                    )
                    for p in packages
                ],
            )
            conn.executemany(
                "INSERT INTO host_pending (run_id, host, doc) VALUES (?, ?, ?)",
                [(run_id, host, u.model_dump_json()) for u in pending],
            )

    @staticmethod
    def _package(row: tuple[Any, ...]) -> InstalledPackage:
        name, version, arch, source_name, source_version, state, ecosystem, epoch, module = row
        return InstalledPackage(
            name=name,
            version=version,
            arch=arch,
            source_name=source_name,
            source_version=source_version,
            state=InstallState(state),
            ecosystem=Ecosystem(ecosystem),
            epoch=epoch,
            module=module,
        )

    def load_host_snapshot(self, run_id: str, host: str) -> HostSnapshot | None:
        """What discovery saved for ``host`` in ``run_id``.

        Returns:
            The snapshot (packages and pending updates in saved order), or None when none was
            saved (or the host failed).
        """
        with self._transaction(f"load snapshot of {host}", write=False) as conn:
            row = conn.execute(
                "SELECT facts FROM run_hosts WHERE run_id = ? AND host = ? AND ok = 1",
                (run_id, host),
            ).fetchone()
            if row is None:
                return None
            packages = tuple(
                self._package(row)
                for row in conn.execute(
                    "SELECT name, version, arch, source_name, source_version, state, ecosystem,"
                    " epoch, module FROM host_packages WHERE run_id = ? AND host = ?"
                    " ORDER BY rowid",
                    (run_id, host),
                )
            )
            pending = tuple(
                PendingUpdate.model_validate_json(doc)
                for (doc,) in conn.execute(
                    "SELECT doc FROM host_pending WHERE run_id = ? AND host = ? ORDER BY rowid",
                    (run_id, host),
                )
            )
        return HostSnapshot(
            facts=HostFacts.model_validate_json(row[0]), packages=packages, pending=pending
        )

    def record_host_failure(self, run_id: str, host: str, error_type: str, message: str) -> None:
        """Record that discovery failed on ``host`` (replaces any snapshot of that run/host).

        Args:
            run_id: The run (must exist).
            host: The host.
            error_type: The exception class name, e.g. ``HostKeyError``.
            message: The (actionable) error message.

        Raises:
            StoreError: If the run is unknown.
        """
        with self._transaction(f"record failure of {host} in run {run_id}") as conn:
            require_run(conn, run_id)
            conn.execute("DELETE FROM run_hosts WHERE run_id = ? AND host = ?", (run_id, host))
            conn.execute(
                "INSERT INTO run_hosts (run_id, host, ok, error_type, message, recorded_at)"
                " VALUES (?, ?, 0, ?, ?, ?)",
                (run_id, host, error_type, message, to_db_time(utcnow())),
            )

    def host_results(self, run_id: str, *, details: bool = False) -> list[HostResult]:
        """Discovery outcome of every host of a run, sorted by host.

        Args:
            run_id: The run.
            details: also load each reachable host's facts and pending updates (not its
                package inventory).
        """
        conn = self._conn()
        rows = conn.execute(
            "SELECT host, ok, error_type, message, package_count, facts FROM run_hosts"
            " WHERE run_id = ? ORDER BY host",
            (run_id,),
        ).fetchall()
        pending: dict[str, list[PendingUpdate]] = {}
        if details:
            for host, doc in conn.execute(
                "SELECT host, doc FROM host_pending WHERE run_id = ? ORDER BY rowid", (run_id,)
            ):
                pending.setdefault(host, []).append(PendingUpdate.model_validate_json(doc))
        results = []
        for host, ok, error_type, message, package_count, facts in rows:
            results.append(
                HostResult(
                    host=host,
                    ok=bool(ok),
                    error_type=error_type,
                    message=None if ok else message,
                    warnings=tuple(message.split("\n")) if ok and message else (),
                    package_count=package_count,
                    facts=HostFacts.model_validate_json(facts) if details and facts else None,
                    pending=tuple(pending.get(host, ())),
                )
            )
        return results

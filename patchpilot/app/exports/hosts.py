"""Which discovery snapshot of each host a report's exports describe.

A report of a run describes that run's snapshots. A report of stored findings (``patchpilot
findings``) has no run: each host's findings come from its latest scan, so its OS (for the
findings' purls) and its installed packages (the CycloneDX components) come from its latest
successful discovery, searched newest run first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from patchpilot.core.models import OSInfo
from patchpilot.core.store import HostSnapshot, Store

__all__ = ["MAX_RUNS_SEARCHED", "host_os", "latest_host_runs", "report_snapshots"]

MAX_RUNS_SEARCHED: Final = 10_000
"""How many runs, newest first, are searched for a host's latest discovery."""


def latest_host_runs(store: Store, hosts: Collection[str]) -> dict[str, str]:
    """Host -> the newest run that discovered it successfully (hosts never discovered: absent)."""
    wanted = set(hosts)
    found: dict[str, str] = {}
    if not wanted:
        return found
    for run in store.list_runs(limit=MAX_RUNS_SEARCHED):
        for result in store.host_results(run.run_id):
            if result.ok and result.host in wanted and result.host not in found:
                found[result.host] = run.run_id
        if len(found) == len(wanted):
            break
    return found


def _host_runs(store: Store, hosts: Collection[str], run_id: str | None) -> dict[str, str]:
    """Host -> the run whose snapshot describes it: ``run_id``, or each host's latest."""
    if run_id is not None:
        return dict.fromkeys(hosts, run_id)
    return latest_host_runs(store, hosts)


def host_os(
    store: Store, hosts: Collection[str], *, run_id: str | None = None
) -> dict[str, OSInfo]:
    """Host -> its OS as discovery recorded it in ``run_id`` (default: its latest discovery)."""
    runs: dict[str, set[str]] = {}
    for host, found_in in _host_runs(store, hosts, run_id).items():
        runs.setdefault(found_in, set()).add(host)
    found: dict[str, OSInfo] = {}
    for found_in, names in runs.items():
        for result in store.host_results(found_in, details=True):
            if result.host in names and result.facts is not None:
                found[result.host] = result.facts.os
    return found


def report_snapshots(
    store: Store, document: Mapping[str, Any], *, run_id: str | None = None
) -> dict[str, HostSnapshot]:
    """Host -> the discovery snapshot a ``patchpilot.report/v1`` document describes.

    The report of a run: that run's snapshot of every host it reached and of every host with
    a finding. A report without a run (stored findings): each host with a finding, in
    ``run_id`` when the findings were of that run (``findings --run``), else in its latest
    successful discovery.
    """
    run = document.get("run")
    names = {f["host"] for f in document.get("findings", [])}
    if run is not None:
        run_id = str(run["run_id"])
        names |= {h["name"] for h in document.get("hosts", []) if h.get("ok")}
    snapshots: dict[str, HostSnapshot] = {}
    for host, found_in in sorted(_host_runs(store, names, run_id).items()):
        snapshot = store.load_host_snapshot(found_in, host)
        if snapshot is not None:
            snapshots[host] = snapshot
    return snapshots

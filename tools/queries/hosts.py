"""Questions about the hosts' latest snapshots: pending updates, reboots and restarts, holds.

Each reads every selected host's latest successful discovery (``patchpilot scan`` or a patch
run) from the store: the same facts ``patchpilot report`` prints in its hosts table.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from patchpilot.core.intents import PackageSpec
from patchpilot.core.models import FixStatus, UpdateOrigin
from patchpilot.core.plan import closes_security_advisory
from patchpilot.tools.queries.base import QueryContext, QueryResult, QueryTool, register
from patchpilot.tools.queries.common import (
    ScopedInput,
    joined,
    latest_snapshots,
    resolve_scope,
    shown,
)

__all__ = [
    "HOLDS",
    "PENDING_UPDATES",
    "REBOOT_NEEDED",
    "HoldsInput",
    "PendingUpdatesInput",
    "RebootInput",
]

NO_SNAPSHOT = "No scanned host in scope: run `patchpilot scan` first."
SHOWN_PER_HOST = 8
"""Lines per host in an answer's text (every row is in the rows)."""


def _no_snapshot(unresolved: str) -> str:
    return NO_SNAPSHOT + (f" {unresolved}" if unresolved else "")


# --------------------------------------------------------------------------- pending updates


class PendingUpdatesInput(ScopedInput):
    """Which pending updates to list."""

    security_only: bool = Field(
        default=False,
        description="only updates that close a known security advisory (a -security suite or "
        "origin, or CVEs it fixes)",
    )
    origin: UpdateOrigin | None = Field(
        default=None, description="only updates from this origin (security, third-party, ...)"
    )
    packages: tuple[PackageSpec, ...] = Field(
        default=(), description="only these packages (binary or source names)"
    )
    include_held: bool = Field(
        default=True, description="list held updates too (marked held: apt will not install them)"
    )


def _pending(context: QueryContext, args: PendingUpdatesInput) -> QueryResult:
    scope = resolve_scope(context, args)
    snapshots = latest_snapshots(context.store, scope)
    names = {p.name for p in args.packages}
    rows: list[dict[str, Any]] = []
    for host, (run_id, result) in snapshots.items():
        for u in result.pending:
            if args.security_only and not closes_security_advisory(u):
                continue
            if args.origin is not None and u.origin is not args.origin:
                continue
            if names and u.name not in names and u.source_name not in names:
                continue
            if u.held and not args.include_held:
                continue
            rows.append(
                {
                    "host": host,
                    "package": u.name,
                    "arch": u.arch,
                    "source_package": u.source_name,
                    "installed": u.installed_version,
                    "candidate": u.candidate_version,
                    "origin": u.origin.value,
                    "security": u.security,
                    "held": u.held,
                    "cves": list(u.cves),
                    "urgency": u.urgency.value if u.urgency else None,
                    "run_id": run_id,
                }
            )
    what = "security updates" if args.security_only else "pending updates"
    if args.origin is not None:
        what += f" from {args.origin.value} repositories"
    if names:
        what += " of " + ", ".join(sorted(names))
    understood = f"{what} {args.describe_scope()}"
    if not args.include_held:
        understood += ", held ones left out"
    if not snapshots:
        text = _no_snapshot(scope.note())
    else:
        hosts = sorted({r["host"] for r in rows})
        security = sum(1 for r in rows if r["security"])
        held = sum(1 for r in rows if r["held"])
        lines = [
            f"{len(rows)} {what} on {len(hosts)} of {len(snapshots)} scanned host(s)"
            + (f" ({security} security, {held} held)" if rows else ".")
            + (":" if rows else "")
        ]
        for host in hosts:
            mine = [r for r in rows if r["host"] == host]
            lines.append(f"{shown(host)} ({len(mine)}):")
            for r in mine[:SHOWN_PER_HOST]:
                marks = [
                    m
                    for m, on in (
                        ("security", r["security"] and r["origin"] != "security"),
                        ("held", r["held"]),
                    )
                    if on
                ]
                cves = f"; {joined(r['cves'])}" if r["cves"] else ""
                lines.append(
                    f"- {shown(r['package'])} {shown(r['installed'] or 'none')} -> "
                    f"{shown(r['candidate'])} ({', '.join([r['origin'], *marks])}{cves})"
                )
            if len(mine) > SHOWN_PER_HOST:
                lines.append(f"- … {len(mine) - SHOWN_PER_HOST} more")
        if scope.note():
            lines.append(scope.note())
        text = "\n".join(lines)
    return QueryResult.of(
        "pending_updates",
        understood,
        ("host", "package", "installed", "candidate", "origin", "security", "held"),
        rows,
        text,
    )


PENDING_UPDATES = register(
    QueryTool(
        name="pending_updates",
        description="Updates the hosts' package managers offer (latest scan per host), by host, "
        "tag or group; filters: security only, origin, package; held updates are marked.",
        input_model=PendingUpdatesInput,
        run=_pending,
    )
)


# --------------------------------------------------------------------------- reboot needed


class RebootInput(ScopedInput):
    """Which hosts to check for a needed reboot or service restart."""

    include_restarts: bool = Field(
        default=True,
        description="also hosts whose processes still use deleted libraries (service restart)",
    )


def _reboot(context: QueryContext, args: RebootInput) -> QueryResult:
    scope = resolve_scope(context, args)
    snapshots = latest_snapshots(context.store, scope)
    rows: list[dict[str, Any]] = []
    for host, (run_id, result) in snapshots.items():
        facts = result.facts
        if facts is None:
            continue
        users = list(facts.deleted_library_users or ())
        services = sorted(
            {*(facts.services_needing_restart or ()), *(u.service for u in users if u.service)}
        )
        restart = args.include_restarts and bool(users or services)
        if not facts.reboot_required and not restart:
            continue
        rows.append(
            {
                "host": host,
                "reboot_required": facts.reboot_required,
                "reboot_packages": list(facts.reboot_required_pkgs),
                "restart_services": services if args.include_restarts else [],
                "processes": [
                    {"pid": u.pid, "command": u.command, "service": u.service} for u in users
                ]
                if args.include_restarts
                else [],
                "kernel": facts.kernel,
                "collected_at": facts.collected_at.isoformat(),
                "run_id": run_id,
            }
        )
    understood = (
        "hosts that need a reboot"
        + (" or a service restart" if args.include_restarts else "")
        + f" {args.describe_scope()}"
    )
    if not snapshots:
        text = _no_snapshot(scope.note())
    else:
        reboot = [r for r in rows if r["reboot_required"]]
        restarts = [r for r in rows if r["restart_services"] or r["processes"]]
        lines = [
            f"{len(reboot)} of {len(snapshots)} scanned host(s) need a reboot"
            + (": " + ", ".join(shown(r["host"]) for r in reboot) if reboot else ".")
        ]
        for r in reboot:
            pkgs = joined(r["reboot_packages"], 5) or "no package named"
            lines.append(f"- {shown(r['host'])}: reboot ({pkgs})")
        if args.include_restarts:
            lines.append(
                f"{len(restarts)} host(s) run processes that still use deleted libraries"
                + (" (restart them):" if restarts else ".")
            )
            for r in restarts:
                what = joined(r["restart_services"], 5) or joined(
                    (f"{p['command']} (pid {p['pid']})" for p in r["processes"]), 5
                )
                lines.append(f"- {shown(r['host'])}: restart {what}")
        if scope.note():
            lines.append(scope.note())
        text = "\n".join(lines)
    return QueryResult.of(
        "reboot_needed",
        understood,
        ("host", "reboot_required", "reboot_packages", "restart_services"),
        rows,
        text,
    )


REBOOT_NEEDED = register(
    QueryTool(
        name="reboot_needed",
        description="Hosts that need a reboot (with the packages asking for it) or a service "
        "restart (processes still using deleted libraries), from the latest scan per host.",
        input_model=RebootInput,
        run=_reboot,
    )
)


# --------------------------------------------------------------------------- holds


class HoldsInput(ScopedInput):
    """Which hosts' held packages to list."""

    packages: tuple[PackageSpec, ...] = Field(default=(), description="only these packages")


def _holds(context: QueryContext, args: HoldsInput) -> QueryResult:
    scope = resolve_scope(context, args)
    snapshots = latest_snapshots(context.store, scope)
    names = {p.name for p in args.packages}
    findings = context.store.findings() if snapshots else []
    rows: list[dict[str, Any]] = []
    unknown: list[str] = []
    for host, (run_id, result) in snapshots.items():
        facts = result.facts
        if facts is None or facts.held_packages is None:
            unknown.append(host)
            continue
        for package in facts.held_packages:
            if names and package not in names:
                continue
            update = next((u for u in result.pending if u.name == package), None)
            kept = [
                r.finding
                for r in findings
                if r.finding.host == host
                and (package in r.finding.binary_packages or r.finding.source_package == package)
            ]
            rows.append(
                {
                    "host": host,
                    "package": package,
                    "held_update": update.candidate_version if update else None,
                    "installed": update.installed_version if update else None,
                    "security": update.security if update else False,
                    "findings": [f.advisory_id for f in kept],
                    "cves": sorted({c for f in kept for c in f.cves}),
                    "fix_blocked": any(f.fix.status is FixStatus.HELD for f in kept),
                    "run_id": run_id,
                }
            )
    understood = "held packages" + (f" ({', '.join(sorted(names))})" if names else "")
    understood += f" {args.describe_scope()}"
    if not snapshots:
        text = _no_snapshot(scope.note())
    else:
        hosts = sorted({r["host"] for r in rows})
        lines = [
            f"{len(rows)} held package(s) on {len(hosts)} of {len(snapshots)} scanned host(s)"
            + (":" if rows else ".")
        ]
        for r in rows:
            offered = (
                f"; keeps off {shown(r['installed'] or 'none')} -> {shown(r['held_update'])}"
                + (" (security)" if r["security"] else "")
                if r["held_update"]
                else "; no update offered"
            )
            open_ = (
                f"; keeps {len(r['findings'])} finding(s) open ({joined(r['findings'], 2)})"
                if r["findings"]
                else ""
            )
            lines.append(f"- {shown(r['host'])}: {shown(r['package'])}{offered}{open_}")
        if unknown:
            lines.append(f"Holds not collected on: {joined(unknown, 10)}.")
        if rows:
            lines.append("Release a hold on the host (`apt-mark unhold PACKAGE`) to patch it.")
        if scope.note():
            lines.append(scope.note())
        text = "\n".join(lines)
    return QueryResult.of(
        "holds",
        understood,
        ("host", "package", "held_update", "findings"),
        rows,
        text,
    )


HOLDS = register(
    QueryTool(
        name="holds",
        description="Packages the hosts hold (apt-mark hold), with the update each hold keeps "
        "off and the findings it keeps open (latest scan per host).",
        input_model=HoldsInput,
        run=_holds,
    )
)

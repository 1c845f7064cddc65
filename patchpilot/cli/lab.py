"""``patchpilot lab up | down | status | reset``: the local Debian 12 + 13 lab fleet.

The lab lives in ``$PATCHPILOT_HOME/lab`` (``ctx.obj.settings.home / "lab"``). Progress goes to
stderr; tables and JSON to stdout. Errors are :class:`~patchpilot.core.errors.LabError`\\ s. Every
value printed goes through :func:`_safe` (control characters shown as escapes, rich markup
escaped): host names, paths and progress text come from files a user can edit.
"""

from __future__ import annotations

import contextlib
import math
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Protocol

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from patchpilot.core.settings import Settings
from patchpilot.core.text import inert
from patchpilot.lab.lab import DEFAULT_MAX_BASE_AGE_DAYS, Lab
from patchpilot.lab.models import LabStatus
from patchpilot.lab.profile import MAX_HOSTS

__all__ = ["lab_app"]

lab_app = typer.Typer(
    name="lab",
    help=(
        "A local fleet of real Debian 12 (bookworm) and 13 (trixie) hosts (namespaces + "
        "overlayfs, SSH on 127.0.0.1)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _HasSettings(Protocol):
    @property
    def settings(self) -> Settings: ...


class LabFormat(StrEnum):
    """Output formats of ``lab up`` and ``lab status``."""

    TABLE = "table"
    JSON = "json"


MAX_BASE_AGE_DAYS = 3650.0
"""Largest ``--max-base-age-days`` accepted (ten years: "never refresh" in practice)."""


def _safe(value: object) -> str:
    """``value`` inert on a terminal and literal in rich markup."""
    return escape(inert(str(value)))


def _finite_days(value: float) -> float:
    """Refuse ``nan`` (click's range check lets it through)."""
    if not math.isfinite(value):
        raise typer.BadParameter(f"{value} is not a number of days")
    return value


def _out() -> Console:
    return Console(width=None if sys.stdout.isatty() else 200, emoji=False)


def _err() -> Console:
    return Console(
        stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False, soft_wrap=True
    )


def _spinner(console: Console, message: str) -> contextlib.AbstractContextManager[object]:
    """A rich spinner on a terminal; nothing otherwise (progress lines still print)."""
    if console.is_terminal:
        return console.status(message)
    return contextlib.nullcontext()


def _lab_dir(ctx: typer.Context) -> Path:
    obj: _HasSettings = ctx.obj
    return obj.settings.home / "lab"


def _size(num: int) -> str:
    if num >= 2**20:
        return f"{num / 2**20:.1f} MiB"
    return f"{num / 2**10:.0f} KiB"


def _render(status: LabStatus, fmt: LabFormat) -> None:
    out = _out()
    if fmt is LabFormat.JSON:
        out.print_json(status.model_dump_json())
        return
    table = Table(title=f"lab {_safe(status.lab_dir)}")
    columns = ("host", "release", "ssh", "pid", "running", "ssh ok", "acme-web", "upper", "memory")
    for column in columns:
        table.add_column(column)
    for host in status.hosts:
        health = "-" if host.health is None else str(host.health)
        style = "green" if host.health == 200 else ("red" if host.running else "dim")
        table.add_row(
            _safe(host.name),
            _safe(host.release),
            _safe(f"{host.address}:{host.port}"),
            str(host.pid or "-"),
            "yes" if host.running else "no",
            "yes" if host.ssh_ok else "no",
            f"[{style}]{_safe(health)}[/] :{host.acme_port}",
            _size(host.upper_bytes),
            "-" if host.memory_kib is None else f"{host.memory_kib / 1024:.1f} MiB",
        )
    out.print(table)
    if not status.hosts:
        out.print("no lab hosts: run `patchpilot lab up`")


def _lab(ctx: typer.Context, console: Console) -> Lab:
    return Lab(_lab_dir(ctx), progress=lambda msg: console.print(f"[dim]… {_safe(msg)}[/]"))


@lab_app.command("up")
def up(
    ctx: typer.Context,
    hosts: Annotated[
        int | None,
        typer.Option(
            "--hosts",
            "-n",
            min=1,
            max=MAX_HOSTS,
            help=(
                f"Number of bookworm hosts, 1-{MAX_HOSTS} (default: as before, else 3); "
                "the trixie hosts come on top."
            ),
        ),
    ] = None,
    trixie_hosts: Annotated[
        int | None,
        typer.Option(
            "--trixie-hosts",
            min=0,
            max=MAX_HOSTS - 1,
            help=(
                "Number of Debian 13 (trixie) hosts after the bookworm ones, trixie-1… "
                "(default: as before, else 1; 0: bookworm only)."
            ),
        ),
    ] = None,
    base_port: Annotated[
        int | None,
        typer.Option(
            "--base-port",
            min=1024,
            max=65535,
            help="sshd port of host 1 (default: as before, else 2201).",
        ),
    ] = None,
    acme_base_port: Annotated[
        int | None,
        typer.Option(
            "--acme-base-port", min=1024, max=65535, help="acme-web port of host 1 (default 8081)."
        ),
    ] = None,
    rebuild_base: Annotated[
        bool,
        typer.Option(
            "--rebuild-base", help="debootstrap fresh bases, one per release (resets every host)."
        ),
    ] = False,
    max_base_age_days: Annotated[
        float,
        typer.Option(
            "--max-base-age-days",
            min=0,
            max=MAX_BASE_AGE_DAYS,
            callback=_finite_days,
            help="Refresh the base's apt indices when older.",
        ),
    ] = DEFAULT_MAX_BASE_AGE_DAYS,
    fmt: Annotated[LabFormat, typer.Option("--format", "-f", help="table | json")] = (
        LabFormat.TABLE
    ),
) -> None:
    """Bring the lab up (idempotent: keeps running hosts, repairs dead ones)."""
    err = _err()
    lab = _lab(ctx, err)
    with _spinner(err, "bringing the lab up…"):
        status = lab.up(
            hosts,
            trixie_hosts=trixie_hosts,
            base_port=base_port,
            acme_base_port=acme_base_port,
            rebuild_base=rebuild_base,
            max_base_age_days=max_base_age_days,
        )
    _render(status, fmt)
    # With --format json, stdout carries the JSON only.
    tail = _out() if fmt is LabFormat.TABLE else err
    tail.print(f"inventory: {_safe(status.inventory_path)}")
    tail.print(
        f"policy: {_safe(status.policy_path)} (default + acme-web health checks; "
        "select it with PATCHPILOT_POLICY)"
    )
    tail.print(f"next: patchpilot scan --inventory {_safe(status.inventory_path)}")


@lab_app.command("down")
def down(ctx: typer.Context) -> None:
    """Stop every lab host (by pid) and unmount it; host state is kept."""
    err = _err()
    lab = _lab(ctx, err)
    status = lab.down()
    err.print(f"lab is down ({len(status.hosts)} hosts stopped; state kept)")


@lab_app.command("status")
def status(
    ctx: typer.Context,
    fmt: Annotated[LabFormat, typer.Option("--format", "-f", help="table | json")] = (
        LabFormat.TABLE
    ),
) -> None:
    """Show each host: pid, running, SSH port, acme-web health, disk and memory."""
    lab = Lab(_lab_dir(ctx))
    _render(lab.status(), fmt)


@lab_app.command("reset")
def reset(ctx: typer.Context) -> None:
    """Stop the lab, wipe every host back to the base, bring it up again (same size)."""
    err = _err()
    lab = _lab(ctx, err)
    with _spinner(err, "resetting the lab…"):
        result = lab.reset()
    _render(result, LabFormat.TABLE)
    err.print(f"inventory: {_safe(result.inventory_path)}")
    err.print(f"policy: {_safe(result.policy_path)}")

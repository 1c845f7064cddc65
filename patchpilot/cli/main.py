"""The ``patchpilot`` command line: every command registered, in one place, and the entry point.

The typer app, its global options and the output helpers are in :mod:`patchpilot.cli.app`;
the commands live in one module per seam and are registered here explicitly (no module
registers itself when imported):

- :mod:`patchpilot.cli.inventory`: ``inventory``, ``facts``
- :mod:`patchpilot.cli.scan`: ``scan``, ``findings``, ``report``, ``runs``, ``resume``
- :mod:`patchpilot.cli.accept`: ``accept`` (and ``accept --list``), ``unaccept``
- :mod:`patchpilot.cli.compliance`: ``compliance`` (SLA compliance: table, json, csv, html)
- :mod:`patchpilot.cli.analytics`: ``analytics`` (process analytics), ``forecast`` (workload)
- :mod:`patchpilot.cli.feeds`: ``feeds update|import|status``
- :mod:`patchpilot.cli.run`: ``run``, ``approvals``, ``approve``, ``reject``, ``baseline``
- :mod:`patchpilot.cli.chat`: ``ask``, ``chat``, ``memory search``
- :mod:`patchpilot.cli.lab`: ``lab up|status|down|reset``
- :mod:`patchpilot.cli.schedules`: ``schedules list|add|remove|next|suggest``
- :mod:`patchpilot.cli.serve`: ``serve`` (the REST API and the run executor)
- :mod:`patchpilot.cli.users`: ``users add|list|disable|token`` (the service's users)

Commands import the use cases (and with them langgraph, chromadb, paramiko, openai) when they
run, so ``patchpilot --version`` and ``patchpilot inventory`` import none of them. Exit codes:
:mod:`patchpilot.cli.app` and, for patch runs, :mod:`patchpilot.cli.run`.
"""

from __future__ import annotations

import sys

import structlog
import typer

from patchpilot.cli import accept, chat, compliance, feeds, inventory, run, scan, schedules
from patchpilot.cli.analytics import analytics_cmd, forecast_cmd
from patchpilot.cli.app import ExitCode, app, err, safe
from patchpilot.cli.lab import lab_app
from patchpilot.cli.serve import serve_cmd
from patchpilot.cli.users import users_app
from patchpilot.core.errors import (
    ConfigError,
    InvalidInputError,
    NotAuthorizedError,
    PatchpilotError,
)

__all__ = ["ExitCode", "app", "main", "register", "safe"]


def register(cli: typer.Typer) -> typer.Typer:
    """Register every command and command group on ``cli`` (in ``--help`` order)."""
    cli.command("inventory")(inventory.inventory_cmd)
    cli.command("facts")(inventory.facts_cmd)
    cli.add_typer(feeds.feeds_app, name="feeds")
    cli.add_typer(lab_app, name="lab")
    cli.command("scan")(scan.scan_cmd)
    cli.command("findings")(scan.findings_cmd)
    cli.command("report")(scan.report_cmd)
    cli.command("runs")(scan.runs_cmd)
    cli.command("resume")(scan.resume_cmd)
    cli.command("accept")(accept.accept_cmd)
    cli.command("unaccept")(accept.unaccept_cmd)
    cli.command("compliance")(compliance.compliance_cmd)
    cli.command("analytics")(analytics_cmd)
    cli.command("forecast")(forecast_cmd)
    cli.command("run")(run.run_cmd)
    cli.command("approve")(run.approve_cmd)
    cli.command("reject")(run.reject_cmd)
    cli.command("approvals")(run.approvals_cmd)
    cli.command("cancel")(run.cancel_cmd)
    cli.add_typer(run.baseline_app, name="baseline")
    cli.command("ask")(chat.ask_cmd)
    cli.command("chat")(chat.chat_cmd)
    cli.add_typer(chat.memory_app, name="memory")
    cli.command("serve")(serve_cmd)
    cli.add_typer(schedules.schedules_app, name="schedules")
    cli.add_typer(users_app, name="users")
    return cli


register(app)


def main() -> None:
    """Console-script entry point: run the app and map errors to exit codes."""
    try:
        app()
    except ConfigError as exc:
        err.print(f"[red]configuration error:[/] {safe(exc)}")
        sys.exit(ExitCode.USAGE)
    except InvalidInputError as exc:  # refused at the boundary: nothing was done
        err.print(f"[red]invalid input:[/] {safe(exc)}")
        sys.exit(ExitCode.USAGE)
    except NotAuthorizedError as exc:
        err.print(f"[red]not authorized:[/] {safe(exc)}")
        sys.exit(ExitCode.ERROR)
    except PatchpilotError as exc:
        err.print(f"[red]error:[/] {safe(exc)}")
        sys.exit(ExitCode.ERROR)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    except Exception as exc:  # a bug: say so plainly, keep the traceback for --log-level debug
        structlog.get_logger(__name__).debug("internal_error", exc_info=True)
        err.print(
            f"[red]internal error:[/] {safe(type(exc).__name__)}: {safe(exc)} "
            "(re-run with --log-level debug for the traceback, and please report it)"
        )
        sys.exit(ExitCode.ERROR)


if __name__ == "__main__":
    main()

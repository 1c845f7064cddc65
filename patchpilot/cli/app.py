"""The typer app, its global options and context, and what every command shares.

Exit codes (stable; scripts may rely on them):

====  ==========================================================================
0     success
1     operational or internal error (the message says which)
2     usage or configuration error: bad flag, bad settings/inventory/policy
      file, unknown target or --limit pattern matching nothing
3     partial failure: some targeted hosts failed, the others succeeded
4     every targeted host failed
5     findings at or above the --fail-on / --fail-on-score threshold (CI gating; a finding
      or pending security update of unknown severity counts unless --unknown-severity ignore)
9     --require-feeds: no advisory feed imported, or a feed is stale
130   interrupted (Ctrl-C)
====  ==========================================================================

(``run``, ``approve``, ``reject`` and ``resume`` of a patch run add theirs: see
:mod:`patchpilot.cli.run`.)

Everything printed that comes from outside patchpilot (inventory values, host output, feed
records, run targets, error messages quoting any of them) goes through :func:`safe`: control
characters become visible escapes (:func:`patchpilot.core.text.inert`) and rich markup is escaped,
so neither a terminal escape sequence nor a ``[...]`` in the text can change what is shown.

This module imports nothing heavy (no langgraph, chromadb, paramiko or openai): a command
imports the use cases it calls when it runs, so ``--version`` and ``inventory`` start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from patchpilot import __version__
from patchpilot.core.auth import Action, Principal, allowed
from patchpilot.core.errors import ConfigError, NotAuthorizedError, ReportWriteError
from patchpilot.core.inventory import Inventory, load_inventory
from patchpilot.core.logging import configure_logging
from patchpilot.core.settings import Settings, load_settings
from patchpilot.core.text import inert
from patchpilot.core.tracing import apply_tracing

if TYPE_CHECKING:
    from patchpilot.core.store import Store

__all__ = [
    "MAX_CONCURRENCY",
    "ConcurrencyOpt",
    "Context",
    "ExitCode",
    "FormatOpt",
    "InventoryOpt",
    "LimitOpt",
    "OutputFileOpt",
    "OutputFormat",
    "ReportFormat",
    "app",
    "emit_json",
    "err",
    "host_progress",
    "inventory_for",
    "json_text",
    "out",
    "safe",
    "write_report_file",
]

MAX_CONCURRENCY = 512
"""Largest ``--concurrency`` accepted (the ``concurrency`` setting's bound)."""


def safe(value: object) -> str:
    """``value`` as text that is inert on a terminal and literal in rich markup.

    Control characters (escape sequences, bidirectional overrides) become visible ``\\xNN``
    escapes and ``[`` is escaped, so the text prints exactly as it is, whoever wrote it.
    """
    return escape(inert(str(value)))


class ExitCode(IntEnum):
    """Process exit codes (see the module docstring)."""

    OK = 0
    ERROR = 1
    USAGE = 2
    PARTIAL = 3
    ALL_FAILED = 4
    FINDINGS = 5
    FEEDS_UNUSABLE = 9
    INTERRUPTED = 130


class OutputFormat(StrEnum):
    """Output formats of listing commands."""

    TABLE = "table"
    JSON = "json"


class ReportFormat(StrEnum):
    """Output formats of findings and reports."""

    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MARKDOWN = "markdown"
    SARIF = "sarif"
    CYCLONEDX = "cyclonedx"
    HTML = "html"


# Pipes and CI logs get a wide fixed width instead of rich's 80 columns, so nothing is cut.
# No emoji codes: ":name:" in outside text must print as it is.
out = Console(width=None if sys.stdout.isatty() else 200, emoji=False)
# Messages on stderr are never hard-wrapped (a long path would split words a reader or grep
# looks for); the terminal wraps them.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200, emoji=False, soft_wrap=True)

app = typer.Typer(
    name="patchpilot",
    help="LLM-assisted, guard-railed patch management for Linux fleets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class LogLevel(StrEnum):
    """``--log-level`` values."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(StrEnum):
    """``--log-format`` values."""

    CONSOLE = "console"
    JSON = "json"


TOKEN_ENV = "PATCHPILOT_TOKEN"  # noqa: S105 (the variable's name, not a token)
"""An API token (``patchpilot users add``): the CLI then acts as that user, with its role."""

_OPTION_NAMES = {"home": "--home", "log_level": "--log-level", "log_format": "--log-format"}
"""The global option that sets each settings override (named in errors)."""


class Context:
    """Options shared by every command, resolved once in the app callback."""

    def __init__(self, config: Path | None, overrides: dict[str, Any]) -> None:
        self.config = config
        self.overrides = overrides
        self._settings: Settings | None = None
        self._principal: Principal | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(
                self.config, option_names=_OPTION_NAMES, **self.overrides
            )
            configure_logging(self._settings.log_level, self._settings.log_format)
            # before any command imports langchain: traces leave only if tracing.enabled
            apply_tracing(self._settings.tracing)
        return self._settings

    @property
    def principal(self) -> Principal | None:
        """The user of ``$PATCHPILOT_TOKEN`` (an API token from ``patchpilot users add``),
        authenticated against the store once; None when the variable is unset.

        Raises:
            NotAuthorizedError: the variable is set but not a valid token (unknown, revoked,
                or its user is disabled).
        """
        token = os.environ.get(TOKEN_ENV)
        if token is None:
            return None
        if self._principal is None:
            from patchpilot.app.users import authenticate

            with self.store() as store:
                who = authenticate(store, token.strip())
            if who is None:
                raise NotAuthorizedError(
                    f"{TOKEN_ENV} is not a valid token (unknown, revoked, or its user is "
                    "disabled): see `patchpilot users list` and `patchpilot users token NAME`"
                )
            self._principal = who
        return self._principal

    @property
    def actor(self) -> str:
        """The acting identity of a CLI command: the user of ``$PATCHPILOT_TOKEN`` when it is
        set, else the OS user."""
        from patchpilot.core.audit import current_actor

        who = self.principal
        return who.name if who is not None else current_actor()

    def require(self, action: Action) -> None:
        """Refuse ``action`` to a token user whose role may not do it (the OS user, without a
        token, may do what the local install lets them: the policy's approvers and the
        self-approval rule still apply).

        Raises:
            NotAuthorizedError: the token user's role does not allow ``action``.
        """
        who = self.principal
        if who is not None and not allowed(who.role, action):
            raise NotAuthorizedError(f"user {who.name} ({who.role.value}) may not {action.value}")

    def store(self) -> Store:
        """The store under the settings' home."""
        from patchpilot.core.store import Store

        return Store(self.settings.store_path)


def _version(value: bool) -> None:
    if value:
        out.print(f"patchpilot {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="Settings YAML (default: $PATCHPILOT_CONFIG, then $PATCHPILOT_HOME/config.yaml).",
        ),
    ] = None,
    home: Annotated[
        str | None, typer.Option("--home", help="Data directory (overrides PATCHPILOT_HOME).")
    ] = None,
    log_level: Annotated[
        LogLevel | None, typer.Option("--log-level", help="Log level (logs go to stderr).")
    ] = None,
    log_format: Annotated[
        LogFormat | None, typer.Option("--log-format", help="Log format (logs go to stderr).")
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    overrides: dict[str, Any] = {}
    if home is not None:
        overrides["home"] = home  # a str: an empty one is refused, never read as "."
    if log_level is not None:
        overrides["log_level"] = log_level.value
    if log_format is not None:
        overrides["log_format"] = log_format.value
    ctx.obj = Context(config, overrides)
    if not ctx.resilient_parsing:
        _ = ctx.obj.settings  # fail fast on bad settings and configure logging first


def inventory_for(ctx: Context, path: Path | None, *, required: bool) -> Inventory:
    """The inventory of ``--inventory`` (``-``: standard input) or the settings (empty when not
    ``required``), completed from ssh_config per the ``ssh`` settings."""
    path = path or ctx.settings.inventory
    if path is None:
        if required:
            raise ConfigError(
                "no inventory: pass --inventory FILE (patchpilot YAML or an Ansible INI/YAML "
                "inventory) or set `inventory` in the settings",
                key="inventory",
            )
        return Inventory([])  # `local` needs no inventory
    return load_inventory(path, ssh=ctx.settings.ssh)


def json_text(document: dict[str, Any]) -> str:
    """One JSON document as printed (two-space indent, a final newline)."""
    return json.dumps(document, indent=2, sort_keys=False, default=str) + "\n"


def emit_json(document: dict[str, Any]) -> None:
    """Write one JSON document to stdout."""
    sys.stdout.write(json_text(document))


def write_report_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temporary file beside it, flushed to disk, then
    renamed over it (readers see the old file or the whole new one, never a partial one).

    The file gets mode 0600 (a report describes the fleet's weaknesses), like ``mkstemp``.

    Raises:
        ReportWriteError: the directory does not exist or is not writable, the disk is full...
    """
    target = path.expanduser()
    if target.is_dir():
        raise ReportWriteError(f"--output {path}: is a directory; name a file")
    tmp: str | None = None
    try:
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        raise ReportWriteError(
            f"--output {path}: cannot write the report ({exc.strerror or exc}); check that the "
            "directory exists and is writable"
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


@contextmanager
def host_progress(
    total: int, stages: tuple[str, ...], *, show: bool = True
) -> Iterator[Callable[[str, str, bool], None]]:
    """Per-host progress bars on stderr, one per stage; silent when not a terminal.

    Yields ``advance(stage, host, ok)``, safe to call from worker threads.
    """
    with Progress(
        TextColumn("[bold]{task.fields[stage]:<8}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not (show and err.is_terminal),
    ) as progress:
        tasks = {stage: progress.add_task("", total=total, stage=stage) for stage in stages}

        def advance(stage: str, host: str, ok: bool) -> None:
            task = tasks.get(stage)
            if task is not None:
                progress.update(
                    task, advance=1, description=f"{safe(host)} {'ok' if ok else 'FAILED'}"
                )

        yield advance


InventoryOpt = Annotated[
    Path | None,
    typer.Option(
        "--inventory",
        "-i",
        help="Inventory file: patchpilot YAML, Ansible INI/YAML or `ansible-inventory --list` "
        "JSON; '-' reads standard input.",
    ),
]
LimitOpt = Annotated[
    str | None,
    typer.Option("--limit", "-l", help="Ansible-style host pattern, e.g. 'web*:&prod:!web-3'."),
]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", "-f", help="Output format.")]
ReportFormatOpt = Annotated[ReportFormat, typer.Option("--format", "-f", help="Output format.")]
OutputFileOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Write the report to this file (atomically) instead of standard output; not with "
        "--format table.",
        dir_okay=False,
    ),
]
ConcurrencyOpt = Annotated[
    int | None,
    typer.Option(
        "--concurrency",
        min=1,
        max=MAX_CONCURRENCY,
        help=f"Hosts at once, 1-{MAX_CONCURRENCY} (default: settings).",
    ),
]

"""``patchpilot serve``: the REST API (:mod:`patchpilot.api`), the web dashboard
(:mod:`patchpilot.web`) and the run executor, until stopped.

It binds ``service.host:service.port`` (default ``127.0.0.1:8080``); an address that is not
loopback is refused unless ``--allow-remote`` is given, because the API speaks plain HTTP:
put TLS in a reverse proxy in front of it (README, "Running as a service"). Logs are structlog
JSON lines on standard error. SIGTERM or Ctrl-C stop the server, then the executor (a run in
progress stops at its next checkpoint and is resumed by the next start).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import structlog
import typer

from patchpilot.cli.app import Context, err
from patchpilot.core.errors import ConfigError
from patchpilot.core.logging import configure_logging

if TYPE_CHECKING:
    from patchpilot.app.executor import Executor

__all__ = ["is_loopback", "serve_cmd"]

log = structlog.get_logger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (``localhost`` counts)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _executor(c: Context, inventory: Path, policy: Path) -> Executor:
    """The service's executor, its run events going to the configured notifications."""
    from patchpilot.app.executor import Executor
    from patchpilot.app.notify import Notifier

    settings = c.settings
    return Executor(
        settings,
        inventory,
        policy,
        notifier=Notifier(settings.notifications),
        workers=settings.service.workers,
    )


def serve_cmd(
    ctx: typer.Context,
    inventory: Annotated[
        Path | None,
        typer.Option("--inventory", "-i", help="The inventory the service manages."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="The policy in force (default: the settings').")
    ] = None,
    host: Annotated[
        str | None,
        typer.Option("--host", help="Address to listen on (default service.host: 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help="TCP port (default service.port: 8080)."),
    ] = None,
    allow_remote: Annotated[
        bool,
        typer.Option(
            "--allow-remote",
            help="Allow a non-loopback --host (plain HTTP: use a TLS reverse proxy instead).",
        ),
    ] = False,
) -> None:
    """Serve the REST API (/api/v1) and run queued, resumed and scheduled runs until stopped."""
    import uvicorn

    from patchpilot.api import create_app

    c: Context = ctx.obj
    settings = c.settings
    inventory_path = inventory or settings.inventory
    if inventory_path is None:
        raise ConfigError(
            "no inventory: pass --inventory FILE or set `inventory` in the settings",
            key="inventory",
        )
    if not inventory_path.is_file():
        raise ConfigError(f"{inventory_path} is not a file", key="--inventory")
    policy_path = policy or settings.policy_path
    if not policy_path.is_file():
        raise ConfigError(f"{policy_path} is not a file", key="--policy")
    # Load both once now: a broken file stops here, not on the first request.
    from patchpilot.core.inventory import load_inventory
    from patchpilot.core.policy import load_policy

    load_inventory(inventory_path, ssh=settings.ssh)
    load_policy(policy_path)
    bind = host or settings.service.host
    if not is_loopback(bind) and not allow_remote:
        raise ConfigError(
            f"{bind} is not a loopback address: the API speaks plain HTTP; keep it on "
            "127.0.0.1 behind a TLS reverse proxy, or pass --allow-remote",
            key="--host",
        )
    configure_logging("debug" if settings.log_level == "debug" else "info", "json")
    executor = _executor(c, inventory_path.resolve(), policy_path.resolve())
    app = create_app(
        settings,
        inventory=inventory_path.resolve(),
        policy=policy_path.resolve(),
        executor=executor,
    )
    from patchpilot.web import install as install_web

    install_web(app)  # the web dashboard at / (README "Web dashboard")
    config = uvicorn.Config(
        app,
        host=bind,
        port=port or settings.service.port,
        log_config=None,
        access_log=False,
        server_header=False,
        proxy_headers=False,
    )
    server = uvicorn.Server(config)
    executor.start()
    log.info("service.started", host=bind, port=config.port, inventory=str(inventory_path))
    try:
        server.run()
    finally:
        executor.stop()
        if executor.notifier is not None:
            executor.notifier.close()
        log.info("service.stopped")
    if not server.started:
        err.print(f"[red]could not listen on {bind}:{config.port}[/] (see the log above)")
        raise typer.Exit(1)

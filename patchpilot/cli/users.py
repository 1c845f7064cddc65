"""``users add|list|disable|token|password``: the service's users, roles, tokens, passwords.

A new token is printed once, alone, on the last line of standard output (what to do with it
goes to standard error), so ``TOKEN=$(patchpilot users add alice --role approver)`` captures
exactly the token. The acting identity recorded in the audit log is the OS user.

A web dashboard password is only ever read from standard input (``--password-stdin``: one
line, never an argument, so it stays out of shell history and ``ps``):
``printf '%s\n' "$PW" | patchpilot users add alice --role approver --password-stdin``.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.table import Table

from patchpilot.cli.app import Context, FormatOpt, OutputFormat, emit_json, err, out, safe
from patchpilot.core.auth import Role
from patchpilot.core.errors import InvalidInputError

__all__ = ["users_app"]

users_app = typer.Typer(
    help="Users of the service (patchpilot serve): roles and API tokens.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The user's name (letters, digits, . _ @ -).")]


PasswordStdinOpt = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the user's web dashboard password from standard input (one line, "
        "at least 12 characters).",
    ),
]


def _read_password() -> str:
    """One line of standard input, without its line ending."""
    line = sys.stdin.readline(4096 + 2)
    password = line.removesuffix("\n").removesuffix("\r")
    if not password:
        raise InvalidInputError("password", "no password on standard input (one line)")
    return password


def _print_token(token: str, what: str) -> None:
    err.print(f"{safe(what)}; the API token follows, shown only this once (store it now):")
    sys.stdout.write(token + "\n")
    sys.stdout.flush()


@users_app.command("add")
def users_add_cmd(
    ctx: typer.Context,
    name: NameArg,
    role: Annotated[Role, typer.Option("--role", help="What the user may do.")],
    password_stdin: PasswordStdinOpt = False,
) -> None:
    """Add a user with a role and print their API token (on the last line of stdout)."""
    from patchpilot.app.users import add_user

    c: Context = ctx.obj
    password = _read_password() if password_stdin else None
    with c.store() as store:
        token = add_user(store, name, role, actor=c.actor, password=password)
    what = f"added user {name} ({role.value})" + (" with a password" if password else "")
    _print_token(token, what)


@users_app.command("list")
def users_list_cmd(ctx: typer.Context, fmt: FormatOpt = OutputFormat.TABLE) -> None:
    """List users, their roles and whether they are disabled (never a token)."""
    from patchpilot.app.users import list_users

    c: Context = ctx.obj
    with c.store() as store:
        users = list_users(store)
    if fmt is OutputFormat.JSON:
        emit_json(
            {"schema": "patchpilot.users/v1", "users": [u.model_dump(mode="json") for u in users]}
        )
        return
    if not users:
        out.print("no users; add one with `patchpilot users add NAME --role ROLE`")
        return
    table = Table(title="users", title_justify="left")
    for col in ("name", "role", "state", "token id", "token issued", "created by"):
        table.add_column(col, overflow="fold")
    for u in users:
        table.add_row(
            safe(u.name),
            u.role.value,
            "[red]disabled[/]" if u.disabled else "enabled",
            safe(u.token_id or "-"),
            u.token_created_at.strftime("%Y-%m-%d %H:%M") if u.token_created_at else "-",
            safe(u.created_by),
        )
    out.print(table)


@users_app.command("disable")
def users_disable_cmd(ctx: typer.Context, name: NameArg) -> None:
    """Disable a user: their tokens stop working at once (the user stays in the history)."""
    from patchpilot.app.users import disable_user

    c: Context = ctx.obj
    with c.store() as store:
        disable_user(store, name, actor=c.actor)
    out.print(f"user {safe(name)} is disabled; their tokens no longer authenticate")


@users_app.command("token")
def users_token_cmd(ctx: typer.Context, name: NameArg) -> None:
    """Issue a new API token for a user (printed last); their earlier tokens stop working."""
    from patchpilot.app.users import new_token

    c: Context = ctx.obj
    with c.store() as store:
        token = new_token(store, name, actor=c.actor)
    _print_token(token, f"new token for user {name}; the earlier ones no longer work")


@users_app.command("password")
def users_password_cmd(
    ctx: typer.Context, name: NameArg, password_stdin: PasswordStdinOpt = False
) -> None:
    """Set or change a user's web dashboard password (read from stdin); their web sessions end."""
    from patchpilot.app.users import set_password

    if not password_stdin:
        raise InvalidInputError(
            "--password-stdin", "pass --password-stdin and the password on standard input"
        )
    c: Context = ctx.obj
    password = _read_password()
    with c.store() as store:
        set_password(store, name, password, actor=c.actor)
    out.print(f"password of user {safe(name)} set; their open web sessions have ended")

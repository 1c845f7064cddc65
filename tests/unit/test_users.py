"""Users, roles and API tokens: the store's rows, argon2 hashing, authentication, the CLI.

Real SQLite store, real argon2 (argon2-cffi), real audit log; the CLI through typer's runner.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from patchpilot.app import users
from patchpilot.core.audit import read_events
from patchpilot.core.auth import Principal, Role
from patchpilot.core.errors import InvalidInputError, UnknownTargetError
from patchpilot.core.store import Store, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Store:
    users.forget_verified()
    return Store(tmp_path / "home" / "patchpilot.db")


def _secret(token: str) -> str:
    return token.split("_", 2)[2]


# --------------------------------------------------------------------------- store and hashing


def test_a_new_user_gets_a_token_that_is_stored_only_as_an_argon2_hash(store: Store) -> None:
    token = users.add_user(store, "alice", Role.APPROVER, actor="root")
    assert token.startswith("pp_")
    token_id = users.parse_token(token)
    assert token_id is not None
    assert len(_secret(token)) == 43  # secrets.token_urlsafe(32)
    row = store.token_row(token_id)
    assert row is not None
    assert row.hash.startswith("$argon2id$")
    assert users.HASHER.verify(row.hash, token)
    assert (row.user_name, row.role, row.revoked, row.user_disabled) == (
        "alice",
        Role.APPROVER,
        False,
        False,
    )
    store.close()
    # nothing of the secret is anywhere in the database files
    db = store.path.parent
    for path in db.iterdir():
        if path.name.startswith("patchpilot.db"):
            assert _secret(token).encode() not in path.read_bytes(), path.name


def test_users_are_listed_without_tokens_and_names_are_unique(store: Store) -> None:
    users.add_user(store, "bob", "operator", actor="root")
    users.add_user(store, "alice", "admin", actor="root")
    listed = users.list_users(store)
    assert [(u.name, u.role, u.disabled, u.created_by) for u in listed] == [
        ("alice", Role.ADMIN, False, "root"),
        ("bob", Role.OPERATOR, False, "root"),
    ]
    assert "hash" not in listed[0].model_dump()
    with pytest.raises(StoreError, match="exists already"):
        users.add_user(store, "alice", "viewer", actor="root")
    assert store.has_users()


@pytest.mark.parametrize(
    ("name", "role"),
    [
        ("", "viewer"),
        ("a b", "viewer"),
        ("-dash", "viewer"),
        ("x" * 65, "viewer"),
        ("esc\x1b[2J", "viewer"),
        ("patchpilot", "admin"),
        ("alice", "superuser"),
    ],
)
def test_bad_names_and_roles_are_refused_before_anything_is_stored(
    store: Store, name: str, role: str
) -> None:
    with pytest.raises(InvalidInputError):
        users.add_user(store, name, role, actor="root")
    assert users.list_users(store) == []
    assert not store.has_users()


def test_the_store_refuses_a_token_that_is_not_an_argon2_hash(store: Store) -> None:
    with pytest.raises(StoreError, match="argon2"):
        store.add_user("eve", Role.ADMIN, actor="x", token_id="abcdefgh1234", token_hash="plain")
    with pytest.raises(StoreError, match="malformed token id"):
        store.add_user("eve", Role.ADMIN, actor="x", token_id="../x", token_hash="$argon2id$x")
    assert store.users() == []


# --------------------------------------------------------------------------- authenticate


def test_a_good_token_authenticates_to_its_user_and_role(store: Store) -> None:
    token = users.add_user(store, "alice", "approver", actor="root")
    assert users.authenticate(store, token) == Principal(name="alice", role=Role.APPROVER)
    # again (remembered in this process): same answer
    assert users.authenticate(store, token) == Principal(name="alice", role=Role.APPROVER)


def test_a_wrong_secret_or_an_unknown_id_authenticates_nobody(store: Store) -> None:
    token = users.add_user(store, "alice", "approver", actor="root")
    token_id = users.parse_token(token)
    assert token_id is not None
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert users.authenticate(store, flipped) is None
    other_id = "z" * 12 if token_id != "z" * 12 else "y" * 12
    assert users.authenticate(store, token.replace(token_id, other_id)) is None
    assert users.authenticate(store, token) is not None  # the right one still works


@pytest.mark.parametrize(
    "token",
    [
        "",
        "Bearer pp_abc",
        "pp_",
        "pp_ABCDEFGHIJKL_" + "a" * 43,
        "pp_abcdefghijkl_" + "a" * 42,
        "pp_abcdefghijkl_" + "a" * 43 + "\n",
        "pp_abcdefghijkl_" + "a" * 10_000,
        "pp_abcdefghijkl_" + "é" * 43,
        "' OR 1=1 --",
        "\x00",
    ],
)
def test_malformed_tokens_authenticate_nobody_and_raise_nothing(store: Store, token: str) -> None:
    users.add_user(store, "alice", "admin", actor="root")
    assert users.authenticate(store, token) is None


def test_a_disabled_user_is_refused_at_once_even_with_a_remembered_token(store: Store) -> None:
    token = users.add_user(store, "alice", "approver", actor="root")
    assert users.authenticate(store, token) is not None  # now remembered
    record = users.disable_user(store, "alice", actor="root")
    assert record.disabled
    assert record.token_id is None  # revoked
    assert users.authenticate(store, token) is None
    users.disable_user(store, "alice", actor="root")  # idempotent
    with pytest.raises(StoreError, match="disabled"):
        users.new_token(store, "alice", actor="root")


def test_a_new_token_replaces_the_old_one(store: Store) -> None:
    old = users.add_user(store, "alice", "operator", actor="root")
    assert users.authenticate(store, old) is not None
    new = users.new_token(store, "alice", actor="admin")
    assert new != old
    assert users.authenticate(store, old) is None
    assert users.authenticate(store, new) == Principal(name="alice", role=Role.OPERATOR)


def test_unknown_users_are_named_in_the_error(store: Store) -> None:
    with pytest.raises(UnknownTargetError, match="nobody"):
        users.disable_user(store, "nobody", actor="root")
    with pytest.raises(UnknownTargetError, match="nobody"):
        users.new_token(store, "nobody", actor="root")


def test_a_tampered_hash_authenticates_nobody(store: Store) -> None:
    token = users.add_user(store, "alice", "admin", actor="root")
    token_id = users.parse_token(token)
    store.close()
    with sqlite3.connect(store.path) as raw:
        raw.execute(
            "UPDATE user_tokens SET hash = '$argon2id$garbage' WHERE token_id = ?", (token_id,)
        )
    users.forget_verified()
    with Store(store.path) as reopened:
        assert users.authenticate(reopened, token) is None


def test_every_change_is_audit_logged_with_the_actor(store: Store) -> None:
    users.add_user(store, "alice", "approver", actor="root")
    users.new_token(store, "alice", actor="admin1")
    users.disable_user(store, "alice", actor="admin2")
    events = read_events(store.path.parent / "audit.log")
    assert [(e.action, e.actor, e.details["user"]) for e in events] == [
        ("user.added", "root", "alice"),
        ("user.token_issued", "admin1", "alice"),
        ("user.disabled", "admin2", "alice"),
    ]
    assert events[0].details["role"] == "approver"
    assert all("pp_" not in json.dumps(e.details) for e in events)  # never a token


def test_the_schema_migrates_to_the_users_tables(store: Store) -> None:
    names = {
        row[0]
        for row in store._conn().execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    assert {"users", "user_tokens", "approval_votes"} <= names


# --------------------------------------------------------------------------- CLI


@pytest.fixture
def cli_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    users.forget_verified()
    return tmp_path / "cli-home"


def _cli(home: Path, *args: str) -> tuple[int, str, str]:
    from patchpilot.cli.main import app

    result = CliRunner().invoke(app, ["--home", str(home), *args])
    return result.exit_code, result.stdout, result.stderr


def test_users_add_prints_the_token_on_the_last_line_of_stdout(cli_home: Path) -> None:
    code, stdout, stderr = _cli(cli_home, "users", "add", "alice", "--role", "approver")
    assert code == 0, stderr
    token = stdout.splitlines()[-1]
    assert "shown only this once" in stderr
    with Store(cli_home / "patchpilot.db") as store:
        assert users.authenticate(store, token) == Principal(name="alice", role=Role.APPROVER)

    code, stdout, _ = _cli(cli_home, "users", "list", "--format", "json")
    assert code == 0
    document = json.loads(stdout)
    assert document["schema"] == "patchpilot.users/v1"
    assert [(u["name"], u["role"], u["disabled"]) for u in document["users"]] == [
        ("alice", "approver", False)
    ]
    assert token not in stdout

    code, stdout, _ = _cli(cli_home, "users", "token", "alice")
    assert code == 0
    new = stdout.splitlines()[-1]
    code, stdout, _ = _cli(cli_home, "users", "disable", "alice")
    assert code == 0
    assert "disabled" in stdout
    with Store(cli_home / "patchpilot.db") as store:
        assert users.authenticate(store, token) is None
        assert users.authenticate(store, new) is None


def test_users_add_refuses_a_bad_role_and_a_duplicate(cli_home: Path) -> None:
    code, _, stderr = _cli(cli_home, "users", "add", "alice", "--role", "root")
    assert code == 2
    assert "root" in stderr
    assert _cli(cli_home, "users", "add", "alice", "--role", "viewer")[0] == 0
    code, stdout, _ = _cli(cli_home, "users", "add", "alice", "--role", "viewer")
    assert code != 0
    assert "pp_" not in stdout  # no token printed for a refused user


# --------------------------------------------------------------------------- CLI as a token user


def _cli_as(home: Path, token: str, *args: str) -> Result:
    from patchpilot.cli.main import app

    return CliRunner().invoke(app, ["--home", str(home), *args], env={"PATCHPILOT_TOKEN": token})


def test_with_patchpilot_token_the_cli_acts_as_that_user_with_its_role(cli_home: Path) -> None:
    from patchpilot.core.errors import NotAuthorizedError

    tokens = {}
    for name, role in (("otto", "operator"), ("anna", "approver"), ("vera", "viewer")):
        code, stdout, stderr = _cli(cli_home, "users", "add", name, "--role", role)
        assert code == 0, stderr
        tokens[name] = stdout.splitlines()[-1]

    cron = ["schedules", "add", "--kind", "scan", "--cron", "*/5 * * * *", "--format", "json"]
    added = _cli_as(cli_home, tokens["otto"], *cron)
    assert added.exit_code == 0, added.stderr
    assert json.loads(added.stdout)["created_by"] == "otto"  # the token's user, not the OS user
    [event] = [e for e in read_events(cli_home / "audit.log") if e.action == "schedule.added"]
    assert event.actor == "otto"

    # roles: a viewer may not schedule, an approver may not start or cancel, an operator may
    # not decide; nothing is done
    for who, args in (
        ("vera", cron),
        ("anna", ["run", "-t", "local", "--only", "acme-web"]),
        ("anna", ["cancel", "20261206T120000Z-abc123"]),
        ("otto", ["approve", "20261206T120000Z-abc123", "--comment", "mine"]),
    ):
        refused = _cli_as(cli_home, tokens[who], *args)
        assert isinstance(refused.exception, NotAuthorizedError), (who, args, refused.output)
        assert f"user {who} (" in str(refused.exception)
    with Store(cli_home / "patchpilot.db") as store:
        assert len(store.schedules()) == 1

    # a bad token is refused before anything runs
    bad = _cli_as(cli_home, "pp_nope_nope", *cron)
    assert isinstance(bad.exception, NotAuthorizedError)
    assert "PATCHPILOT_TOKEN is not a valid token" in str(bad.exception)

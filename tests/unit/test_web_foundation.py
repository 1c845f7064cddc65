"""The web dashboard's foundation (issue 16): login, sessions, CSRF, bearer tokens, headers.

The app is the real one (:func:`patchpilot.api.create_app` plus :func:`patchpilot.web.install`)
on a real SQLite store with real users and argon2 passwords (the ``World`` of
tests/unit/test_api.py), driven through FastAPI's TestClient.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from patchpilot.app import users
from patchpilot.core.audit import AUDIT_FILE, read_events
from patchpilot.core.auth import Action, Principal, Role
from patchpilot.core.errors import InvalidInputError
from patchpilot.core.models import utcnow
from patchpilot.core.store import Store
from patchpilot.web import install, session
from patchpilot.web.session import COOKIE, require_page, safe_next
from tests.unit.test_api import World

PASSWORD = "anna-approver-password"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'"
)


class Web:
    """The World's app with the dashboard installed, a browser-like client, and passwords."""

    def __init__(self, world: World) -> None:
        self.world = world
        install(world.app)
        users.set_password(world.store, "anna", PASSWORD, actor="admin")
        users.set_password(world.store, "vera", "vera-viewer-password", actor="admin")
        self.client = TestClient(world.app, follow_redirects=False)

    def fresh(self) -> TestClient:
        """Another client (its own cookie jar) on the same app."""
        return TestClient(self.world.app, follow_redirects=False)

    def login(
        self,
        client: TestClient | None = None,
        user: str = "anna",
        password: str = PASSWORD,
        next_path: str = "/",
    ) -> object:
        c = client or self.client
        form = c.get("/login")
        assert form.status_code == 200
        token = field(form.text, "csrf_token")
        return c.post(
            "/login",
            data={"username": user, "password": password, "next": next_path, "csrf_token": token},
        )


def field(html: str, name: str) -> str:
    """The value of the (first) hidden input ``name`` of a page."""
    match = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert match, f"no {name} field"
    return match.group(1)


@pytest.fixture
def web(world: World) -> Iterator[Web]:
    w = Web(world)
    try:
        yield w
    finally:
        w.client.close()


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    import os

    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    users.forget_verified()
    w = World(tmp_path / "home")
    try:
        yield w
    finally:
        w.client.close()
        w.store.close()


# --------------------------------------------------------------------------- login


def test_a_page_without_a_login_redirects_to_the_login_form(web: Web) -> None:
    response = web.client.get("/findings?host=web-1")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/findings%3Fhost%3Dweb-1"
    form = web.client.get(response.headers["location"])
    assert form.status_code == 200
    for name in ("username", "password", "csrf_token", "next"):
        assert f'name="{name}"' in form.text
    assert field(form.text, "next") == "/findings?host=web-1"


def test_login_sets_an_httponly_samesite_cookie_and_goes_to_next(web: Web) -> None:
    response = web.login(next_path="/settings")
    assert response.status_code == 303  # type: ignore[attr-defined]
    assert response.headers["location"] == "/settings"  # type: ignore[attr-defined]
    cookie = next(
        c
        for c in response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
        if c.startswith(COOKIE + "=")
    )
    flags = {part.strip().lower() for part in cookie.split(";")}
    assert "httponly" in flags
    assert "samesite=lax" in flags
    assert f"max-age={web.world.settings.service.session_ttl}" in flags
    assert "secure" not in flags  # plain http here; https requests get Secure
    page = web.client.get("/settings")
    assert page.status_code == 200
    assert "anna" in page.text
    assert "approver" in page.text
    # the session id is not stored: only its hash
    session_id = web.client.cookies[COOKIE]
    with Store(web.world.settings.store_path) as store:
        rows = store._conn().execute("SELECT id_hash FROM web_sessions").fetchall()
    assert rows
    assert all(session_id not in row[0] for row in rows)


def test_the_session_cookie_is_secure_over_https(web: Web) -> None:
    client = TestClient(web.world.app, base_url="https://testserver", follow_redirects=False)
    response = web.login(client)
    cookie = next(
        c
        for c in response.headers.get_list("set-cookie")  # type: ignore[attr-defined]
        if c.startswith(COOKIE + "=")
    )
    assert "secure" in {part.strip().lower() for part in cookie.split(";")}


@pytest.mark.parametrize(
    ("user", "password"),
    [
        ("anna", "not-the-password"),  # wrong password
        ("nobody", PASSWORD),  # unknown user
        ("otto", PASSWORD),  # a user without a password
        ("anna", ""),
    ],
)
def test_wrong_credentials_get_401_with_one_generic_message(
    web: Web, user: str, password: str
) -> None:
    response = web.login(user=user, password=password)
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert "Wrong user name or password" in response.text  # type: ignore[attr-defined]
    assert COOKIE not in web.client.cookies
    assert web.client.get("/").status_code == 303


def test_a_disabled_user_cannot_log_in_and_their_session_ends(web: Web) -> None:
    assert web.login().status_code == 303  # type: ignore[attr-defined]
    assert web.client.get("/").status_code == 200
    users.disable_user(web.world.store, "anna", actor="admin")
    assert web.client.get("/").status_code == 303
    assert users.verify_password(web.world.store, "anna", PASSWORD) is None
    assert web.login(web.fresh()).status_code == 401  # type: ignore[attr-defined]


def test_failed_logins_are_throttled_per_user(web: Web) -> None:
    for _ in range(5):
        assert web.login(password="wrong-password-x").status_code == 401  # type: ignore[attr-defined]
    blocked = web.login()  # even the right password waits now
    assert blocked.status_code == 429  # type: ignore[attr-defined]
    assert blocked.headers["retry-after"] == "60"  # type: ignore[attr-defined]
    assert COOKIE not in web.client.cookies
    # another user from the same client address is throttled too (per address)
    assert web.login(user="vera", password="vera-viewer-password").status_code == 429  # type: ignore[attr-defined]


def test_login_throttle_counts_per_user_and_per_address() -> None:
    throttle = session.LoginThrottle(limit=2, window=60)
    throttle.failed("anna", "10.0.0.1")
    assert not throttle.blocked("anna", "10.0.0.2")
    throttle.failed("anna", "10.0.0.2")
    assert throttle.blocked("anna", "10.0.0.3")  # the user: two failures
    assert not throttle.blocked("vera", "10.0.0.3")
    throttle.failed("vera", "10.0.0.1")
    assert throttle.blocked("bob", "10.0.0.1")  # the address: two failures
    throttle.succeeded("anna")
    assert not throttle.blocked("anna", "10.0.0.9")


def test_a_session_expires_after_session_ttl(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    web.login()
    assert web.client.get("/").status_code == 200
    ttl = web.world.settings.service.session_ttl
    later = utcnow() + timedelta(seconds=ttl + 1)
    monkeypatch.setattr(session, "clock", lambda: later)
    response = web.client.get("/")
    assert response.status_code == 303
    assert response.headers["location"] == "/login"


def test_logout_ends_the_session_server_side(web: Web) -> None:
    web.login()
    page = web.client.get("/")
    old_cookie = web.client.cookies[COOKIE]
    token = field(page.text, "csrf_token")
    response = web.client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/login"
    # the old cookie, replayed by another client, no longer works
    replay = web.fresh()
    replay.cookies.set(COOKIE, old_cookie)
    assert replay.get("/").status_code == 303


def test_a_new_password_ends_the_users_sessions(web: Web) -> None:
    web.login()
    assert web.client.get("/").status_code == 200
    users.set_password(web.world.store, "anna", "a-brand-new-password", actor="admin")
    assert web.client.get("/").status_code == 303
    assert web.login(web.fresh(), password="a-brand-new-password").status_code == 303  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- CSRF


@pytest.mark.parametrize("token", [None, "", "x" * 43])
def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(
    web: Web, token: str | None
) -> None:
    web.login()
    page = web.client.get("/")
    assert 'name="csrf_token"' in page.text  # every form carries it
    data = {} if token is None else {"csrf_token": token}
    response = web.client.post("/logout", data=data)
    assert response.status_code == 403
    assert "CSRF" in response.text
    assert web.client.get("/").status_code == 200  # still logged in: nothing changed


def test_a_cross_site_form_post_is_refused(web: Web) -> None:
    web.login()
    token = field(web.client.get("/").text, "csrf_token")
    response = web.client.post(
        "/logout", data={"csrf_token": token}, headers={"Origin": "https://evil.example"}
    )
    assert response.status_code == 403
    assert web.client.get("/").status_code == 200


def test_the_login_form_token_must_match_its_cookie(web: Web) -> None:
    web.client.get("/login")
    response = web.client.post(
        "/login", data={"username": "anna", "password": PASSWORD, "csrf_token": "forged" * 5}
    )
    assert response.status_code == 403
    assert COOKIE not in web.client.cookies


def test_a_script_may_log_in_with_just_username_and_password(web: Web) -> None:
    """The contract: POST /login with the form fields username and password."""
    client = web.fresh()
    response = client.post("/login", data={"username": "anna", "password": PASSWORD})
    assert response.status_code == 303
    assert client.get("/").status_code == 200


# --------------------------------------------------------------------------- bearer tokens


def test_pages_accept_the_api_bearer_token(web: Web) -> None:
    client = web.fresh()
    for path in ("/", "/findings", "/settings"):
        response = client.get(path, headers=web.world.auth("vera"))
        assert response.status_code == 200, path
        assert "vera" in response.text
    # a bearer request needs no CSRF token (a browser never sends the header by itself)
    response = client.post("/logout", headers=web.world.auth("vera"))
    assert response.status_code == 303


@pytest.mark.parametrize(
    "header", ["Bearer pp_nottoken", "Bearer " + "x" * 600, "Basic YWxhZGRpbjpvcGVu"]
)
def test_a_bad_bearer_token_is_401_not_a_redirect(web: Web, header: str) -> None:
    response = web.fresh().get("/", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_require_page_refuses_a_role_with_a_403_page(web: Web) -> None:
    @web.world.app.get("/test-only-admin")
    def only_admin(who: Principal = Depends(require_page(Action.MANAGE_USERS))) -> dict[str, str]:  # noqa: B008
        return {"who": who.name}

    client = web.fresh()
    response = client.get("/test-only-admin", headers=web.world.auth("vera"))
    assert response.status_code == 403
    assert "text/html" in response.headers["content-type"]
    assert "may not manage-users" in response.text
    assert client.get("/test-only-admin", headers=web.world.auth("ada")).json() == {"who": "ada"}


# --------------------------------------------------------------------------- headers, redirects


@pytest.mark.parametrize("path", ["/login", "/static/app.css", "/static/app.js", "/"])
def test_security_headers_are_on_every_web_response(web: Web, path: str) -> None:
    response = web.client.get(path)
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"


def test_pages_have_no_inline_script_or_style(web: Web) -> None:
    web.login()
    for path in ("/", "/findings", "/settings", "/login"):
        html = web.client.get(path).text
        assert "<style" not in html
        assert 'style="' not in html
        for tag in re.findall(r"<script[^>]*>", html):
            assert 'src="/static/' in tag, tag
        assert re.search(r"<script[^>]*>\s*[^<\s]", html) is None  # no inline body


def test_the_api_keeps_its_own_errors_and_headers(web: Web) -> None:
    response = web.fresh().get("/api/v1/runs")
    assert response.status_code == 401
    assert response.json()["detail"].startswith("a bearer token is required")
    assert "content-security-policy" not in response.headers


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "http:/evil.example",
        "javascript:alert(1)",
        "/login",
        "/%0d%0aSet-Cookie:x=1",
    ],
)
def test_next_never_leaves_the_site(web: Web, target: str) -> None:
    response = web.login(next_path=target)
    assert response.status_code == 303  # type: ignore[attr-defined]
    location = response.headers["location"]  # type: ignore[attr-defined]
    assert location.startswith("/")
    assert not location.startswith("//")
    assert "evil" not in location or location.startswith("/%")


def test_safe_next_keeps_same_site_paths_only() -> None:
    assert safe_next("/runs?kind=scan") == "/runs?kind=scan"
    assert safe_next("/findings?host=web-1&kev=yes") == "/findings?host=web-1&kev=yes"
    for bad in ("", None, "runs", "//x", "/\\x", "https://x/", "/ spaced", "/login?next=/"):
        assert safe_next(bad) == "/"


# --------------------------------------------------------------------------- passwords


def test_passwords_are_argon2id_hashes_and_verified(world: World) -> None:
    users.set_password(world.store, "otto", "otto-operator-pass", actor="admin")
    row = world.store.password_row("otto")
    assert row is not None
    assert row.hash is not None
    assert row.hash.startswith("$argon2id$")
    assert "otto-operator-pass" not in row.hash
    assert users.verify_password(world.store, "otto", "otto-operator-pass") == Principal(
        name="otto", role=Role.OPERATOR
    )
    assert users.verify_password(world.store, "otto", "otto-operator-pas") is None
    assert users.verify_password(world.store, "ghost", "otto-operator-pass") is None
    for bad in ("short", "x" * 1025, "line\nbreak-password"):
        with pytest.raises(InvalidInputError):
            users.set_password(world.store, "otto", bad, actor="admin")
    events = [e.action for e in read_events(world.settings)]
    assert "user.password_set" in events


def _cli(home: Path, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
    from patchpilot.cli.main import app

    result = CliRunner().invoke(app, ["--home", str(home), *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_users_add_password_stdin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    home = tmp_path / "cli-home"
    code, stdout, stderr = _cli(
        home,
        "users",
        "add",
        "alice",
        "--role",
        "approver",
        "--password-stdin",
        stdin="alice-secret-password\n",
    )
    assert code == 0, stderr
    token = stdout.splitlines()[-1]
    assert token.startswith("pp_")  # the token is still the last line
    assert "alice-secret-password" not in stdout + stderr
    with Store(home / "patchpilot.db") as store:
        assert users.verify_password(store, "alice", "alice-secret-password") == Principal(
            name="alice", role=Role.APPROVER
        )
        assert users.authenticate(store, token) is not None

    # too short: refused, and no user is added
    code, stdout, _ = _cli(
        home, "users", "add", "bob", "--role", "viewer", "--password-stdin", stdin="short\n"
    )
    assert code != 0
    assert "pp_" not in stdout
    with Store(home / "patchpilot.db") as store:
        assert store.user("bob") is None

    # change it
    code, _, stderr = _cli(
        home, "users", "password", "alice", "--password-stdin", stdin="another-long-password\n"
    )
    assert code == 0, stderr
    with Store(home / "patchpilot.db") as store:
        assert users.verify_password(store, "alice", "alice-secret-password") is None
        assert users.verify_password(store, "alice", "another-long-password") is not None
    assert (home / AUDIT_FILE).exists()
    code, _, _ = _cli(home, "users", "password", "nobody", "--password-stdin", stdin="x" * 20)
    assert code != 0

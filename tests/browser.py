"""A real headless Chromium for the web dashboard's browser tests (issue 16).

- :func:`browser`: Debian's ``chromium`` driven by selenium through the system
  ``/usr/bin/chromedriver`` (the path is given explicitly, so Selenium Manager never runs and
  nothing is downloaded), headless, in a temporary profile under the test's ``tmp_path``; quit
  in teardown (which ends the chromedriver and browser processes this fixture started, and
  only those). Without Chromium the test is skipped, or fails when ``CI`` is set (``CI=true``).
- :func:`wait_until`: a bounded explicit wait (``WebDriverWait``).
- :func:`screenshot`: a PNG of the page under the test's temporary directory.
- :func:`login`: the ``/login`` form (fields ``username`` and ``password``).
- :func:`live_server`: an ASGI app served by uvicorn in a thread on a free loopback port.

Use them with ``pytest_plugins = ["tests.browser"]`` (tests/conftest.py registers it).
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30.0
"""Bounded wait (seconds) for something the page or the server does; never a timing assertion."""
IMPLICIT_WAIT = 0.5
MAX_SHOT_HEIGHT = 4000

T = TypeVar("T")


def _missing() -> list[str]:
    return [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]


def chromium_options(profile: Path) -> webdriver.ChromeOptions:
    """Headless Chromium in its own profile, with nothing that reaches the network by itself."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1366,900",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--password-store=basic",
    ):
        options.add_argument(argument)
    return options


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A headless Chromium (selenium WebDriver), quit after the test."""
    missing = _missing()
    if missing:
        reason = (
            f"no headless Chromium: {', '.join(missing)} missing; scripts/setup installs "
            "Debian's chromium and chromium-driver (as root)"
        )
        if os.environ.get("CI"):  # as the sshd fixtures: in CI a missing browser is an error
            pytest.fail(reason)
        pytest.skip(reason)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    service = Service(
        executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log")
    )
    driver = webdriver.Chrome(service=service, options=chromium_options(profile))
    try:
        driver.implicitly_wait(IMPLICIT_WAIT)
        driver.set_page_load_timeout(WAIT * 2)
        yield driver
    finally:
        driver.quit()  # ends the chromedriver this fixture started and its browser


def wait_until(
    driver: WebDriver,
    condition: Callable[[WebDriver], T],
    *,
    timeout: float = WAIT,
    poll: float = 0.2,
    what: str = "",
) -> T:
    """``condition(driver)`` once it is truthy, polling every ``poll`` seconds for at most
    ``timeout`` seconds (an element missing or replaced meanwhile counts as not yet)."""
    try:
        waiting = WebDriverWait(
            driver,
            timeout,
            poll_frequency=poll,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        return waiting.until(condition)
    except TimeoutException:
        pytest.fail(
            f"waited {timeout:.0f} s for {what or condition!r}; the page is "
            f"{driver.current_url}:\n{_page_text(driver)[-2000:]}"
        )


def _page_text(driver: WebDriver) -> str:
    try:
        return str(driver.find_element(By.TAG_NAME, "body").text)
    except WebDriverException:  # only a diagnostic for a failure message
        return str(driver.page_source)


def path_of(driver: WebDriver) -> str:
    """The path of the page the browser shows (``/login``, ``/runs/ID``...)."""
    return urlsplit(driver.current_url).path


def screenshot(driver: WebDriver, tmp_path: Path, name: str, *, full_page: bool = True) -> Path:
    """A PNG of the page, ``tmp_path/screenshots/NAME.png``: the whole page (up to
    :data:`MAX_SHOT_HEIGHT` pixels) at the window's width, or only the window."""
    folder = tmp_path / "screenshots"
    folder.mkdir(exist_ok=True)
    target = folder / f"{name}.png"
    size = driver.get_window_size()
    if full_page:
        chrome, height = driver.execute_script(
            "return [window.outerHeight - window.innerHeight,"
            " document.documentElement.scrollHeight]"
        )
        driver.set_window_size(size["width"], min(int(height) + int(chrome), MAX_SHOT_HEIGHT))
    try:
        assert driver.save_screenshot(str(target)), target
    finally:
        if full_page:
            driver.set_window_size(size["width"], size["height"])
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", target
    return target


def login(driver: WebDriver, base: str, username: str, password: str) -> None:
    """Log in through the ``/login`` form; returns once the browser has left ``/login``."""
    driver.get(f"{base}/login")
    form = driver.find_element(By.CSS_SELECTOR, "form:has(input[name=username])")
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    submit_and_wait(driver, form)
    assert path_of(driver) != "/login", f"login as {username} failed:\n{_page_text(driver)}"


def submit_and_wait(driver: WebDriver, form: WebElement) -> None:
    """Click ``form``'s submit button and wait for the next page to load."""
    # The old page is marked with a token of its own; the next page has none. (Selenium's
    # staleness_of asks the old element, and Chromium can answer that with an "unhandled
    # inspector error" while the document is being replaced: a race, not a failure.)
    token = uuid.uuid4().hex
    driver.execute_script("window.__patchpilotPage = arguments[0]", token)
    form.find_element(By.CSS_SELECTOR, "button[type=submit], input[type=submit], button").click()

    def next_page_loaded(d: WebDriver) -> bool:
        try:
            return bool(
                d.execute_script(
                    "return window.__patchpilotPage !== arguments[0]"
                    " && document.readyState === 'complete'",
                    token,
                )
            )
        except WebDriverException:  # the browser is between the two documents
            return False

    wait_until(driver, next_page_loaded, what="the form's answer")


def run_status(driver: WebDriver) -> str:
    """The run's status on a run page (``/runs/ID``): the first badge of its live part."""
    return str(driver.find_element(By.CSS_SELECTOR, "#run-live .badge").text).strip()


def browser_cookies(driver: WebDriver) -> dict[str, str]:
    """The browser's cookies for the current site, for an HTTP client acting as that session."""
    return {str(c["name"]): str(c["value"]) for c in driver.get_cookies()}


def has_element(driver: WebDriver, css: str) -> bool:
    """Whether the page has an element matching ``css`` (no implicit wait)."""
    found: Any = driver.execute_script("return document.querySelector(arguments[0]) !== null", css)
    return bool(found)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def live_server(app: Any) -> Iterator[str]:
    """Serve the ASGI ``app`` with uvicorn in a thread on 127.0.0.1 (a free port); yields the
    base URL; the server is stopped (and its thread joined) on exit."""
    import uvicorn

    config = uvicorn.Config(
        app, host="127.0.0.1", port=free_port(), log_config=None, access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="live-server", daemon=True)
    thread.start()
    ready = threading.Event()
    for _ in range(int(WAIT * 20)):
        if server.started or not thread.is_alive():
            break
        ready.wait(0.05)
    if not server.started:
        server.should_exit = True
        thread.join(WAIT)
        pytest.fail("uvicorn did not start in the test's thread")
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(WAIT)

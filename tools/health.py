"""Typed health checks, run before and after a change to decide whether a host is healthy.

Three kinds, a pydantic discriminated union on ``kind`` (:data:`HealthCheck`), all from policy or
configuration files, never from LLM output or advisory text:

* :class:`HttpCheck` — from the controller, with ``httpx``: status, optional body substring and
  latency bound. ``url`` is a template whose only fields are ``{address}`` (the inventory
  address; IPv6 gets brackets) and ``{name}`` (the inventory name); ``url_overrides`` maps a host
  name to its own template (e.g. the lab's per-host ``acme-web`` ports)::

      HttpCheck(url="http://{address}:8080/health",
                url_overrides={"canary-1": "http://{address}:24611/health"})

* :class:`CommandCheck` — an argv run on the host through the transport; passes on
  ``expect_exit``. Elements are checked for NUL and newlines; the argv is never a shell string.
* :class:`ProcessCheck` — a process whose name (``/proc/PID/comm``, at most 15 characters) is
  exactly ``name`` runs on the host: ``pgrep -x -- NAME`` (procps; present on the lab's minbase
  hosts), or a constant ``sh`` loop over ``/proc/*/comm`` where ``pgrep`` is missing.

Every check polls: ``retries`` more attempts ``interval_s`` apart after a failure, because a
service restarted by a postinst binds its port a moment later. :func:`run_check` returns a
:class:`CheckResult`; it raises only for configuration errors (an HTTP check without a host).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import httpx
import structlog

from patchpilot.core.checks import (
    CHECK_ADAPTER,
    CheckResult,
    CommandCheck,
    HealthCheck,
    HttpCheck,
    ProcessCheck,
)
from patchpilot.core.errors import ConfigError, TransportError
from patchpilot.core.models import Host

if TYPE_CHECKING:
    from patchpilot.tools.transport.base import Transport

__all__ = [
    "CHECK_ADAPTER",
    "CheckResult",
    "CommandCheck",
    "HealthCheck",
    "HttpCheck",
    "ProcessCheck",
    "render_url",
    "run_check",
    "run_checks",
]

_log = structlog.get_logger(__name__)

_PROCESS_SCRIPT: Final = (
    'if command -v pgrep >/dev/null 2>&1; then exec pgrep -x -- "$1"; fi; '
    "found=1; for f in /proc/[0-9]*/comm; do "
    'IFS= read -r c < "$f" 2>/dev/null || continue; '
    'if [ "$c" = "$1" ]; then p=${f#/proc/}; echo "${p%/comm}"; found=0; fi; '
    'done; exit "$found"'
)
_ENV: Final = {"LC_ALL": "C"}


def render_url(check: HttpCheck, host: Host) -> str:
    """The URL ``check`` requests for ``host`` (its override, else ``url``), placeholders filled.

    Raises:
        ConfigError: the rendered URL is not a valid http(s) URL.
    """
    template = check.url_overrides.get(host.name, check.url)
    address = f"[{host.address}]" if ":" in host.address else host.address
    url = template.format(address=address, name=host.name)
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"health check URL {url!r} is invalid: {exc}") from None
    if parsed.scheme not in {"http", "https"} or not parsed.host:
        raise ConfigError(f"health check URL {url!r} is not an http(s) URL with a host")
    return url


def _http_once(check: HttpCheck, url: str, client: httpx.Client) -> tuple[bool, dict[str, object]]:
    started = time.monotonic()
    try:
        response = client.get(url, timeout=check.timeout_s)
    except httpx.HTTPError as exc:
        latency = (time.monotonic() - started) * 1000
        return False, {"latency_ms": round(latency, 1), "detail": f"{type(exc).__name__}: {exc}"}
    latency = (time.monotonic() - started) * 1000
    fields: dict[str, object] = {
        "latency_ms": round(latency, 1),
        "status_code": response.status_code,
    }
    if response.status_code != check.expect_status:
        fields["detail"] = f"HTTP {response.status_code}, expected {check.expect_status}"
        return False, fields
    if check.body_contains is not None and check.body_contains not in response.text:
        fields["detail"] = f"body does not contain {check.body_contains!r}"
        return False, fields
    if check.max_latency_ms is not None and latency > check.max_latency_ms:
        fields["detail"] = f"latency {latency:.0f} ms > {check.max_latency_ms:g} ms"
        return False, fields
    fields["detail"] = f"HTTP {response.status_code}"
    return True, fields


def _command_once(check: CommandCheck, transport: Transport) -> tuple[bool, dict[str, object]]:
    started = time.monotonic()
    try:
        result = transport.run(check.argv, sudo=check.sudo, env=_ENV, timeout=check.timeout_s)
    except TransportError as exc:
        return False, {"detail": str(exc)}
    fields: dict[str, object] = {
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
        "exit_code": result.exit_code,
    }
    ok = result.exit_code == check.expect_exit
    tail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
    verdict = "" if ok else f", expected {check.expect_exit}"
    fields["detail"] = f"exit {result.exit_code}{verdict}" + (f": {tail[0]}" if tail[0] else "")
    return ok, fields


def _process_once(check: ProcessCheck, transport: Transport) -> tuple[bool, dict[str, object]]:
    started = time.monotonic()
    argv = ["sh", "-c", _PROCESS_SCRIPT, "sh", check.name]
    try:
        result = transport.run(argv, env=_ENV, timeout=check.timeout_s)
    except TransportError as exc:
        return False, {"detail": str(exc)}
    fields: dict[str, object] = {
        "latency_ms": round((time.monotonic() - started) * 1000, 1),
        "exit_code": result.exit_code,
    }
    pids = [p for p in result.stdout.split() if p.isdigit()]
    if result.exit_code == 0 and pids:
        fields["detail"] = f"running: pid {', '.join(pids)}"
        return True, fields
    if result.exit_code == 1:
        fields["detail"] = f"no process named {check.name!r}"
    else:
        err = result.stderr.strip().splitlines()[-1:] or ["no output"]
        fields["detail"] = f"process lookup failed (exit {result.exit_code}): {err[0]}"
    return False, fields


def run_check(
    check: HttpCheck | CommandCheck | ProcessCheck,
    transport: Transport,
    host: Host | None = None,
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> CheckResult:
    """Run one check, polling up to ``check.retries`` more times ``interval_s`` apart.

    Args:
        check: the check.
        transport: an open transport to the host (command and process checks run there).
        host: the inventory host; required by :class:`HttpCheck` (its address fills the URL).
        client: an ``httpx.Client`` to reuse (one is created, without proxies from the
            environment and without following redirects, when omitted).
        sleep: the pause between attempts (tests pass a fake).

    Returns:
        The :class:`CheckResult` of the first passing attempt, or of the last one.

    Raises:
        ConfigError: an HTTP check without ``host``, or its URL does not render.
    """
    attempt: Callable[[], tuple[bool, dict[str, object]]]
    owned: httpx.Client | None = None
    if isinstance(check, HttpCheck):
        if host is None:
            raise ConfigError("an HTTP health check needs the inventory host (its address)")
        target = render_url(check, host)
        if client is None:
            owned = client = httpx.Client(trust_env=False, follow_redirects=False)
        http = client

        def attempt() -> tuple[bool, dict[str, object]]:
            return _http_once(check, target, http)

    elif isinstance(check, CommandCheck):
        target = " ".join(check.argv)

        def attempt() -> tuple[bool, dict[str, object]]:
            return _command_once(check, transport)

    else:
        target = check.name

        def attempt() -> tuple[bool, dict[str, object]]:
            return _process_once(check, transport)

    try:
        count = 0
        while True:
            count += 1
            ok, fields = attempt()
            if ok or count > check.retries:
                break
            sleep(check.interval_s)
    finally:
        if owned is not None:
            owned.close()
    result = CheckResult(
        kind=check.kind,
        host=transport.name,
        target=target,
        ok=ok,
        attempts=count,
        latency_ms=_float(fields.get("latency_ms")),
        status_code=_int(fields.get("status_code")),
        exit_code=_int(fields.get("exit_code")),
        detail=str(fields.get("detail", "")),
    )
    _log.info(
        "health.check",
        host=result.host,
        kind=result.kind,
        target=target,
        ok=ok,
        attempts=count,
        detail=result.detail,
    )
    return result


def run_checks(
    checks: Sequence[HttpCheck | CommandCheck | ProcessCheck],
    transport: Transport,
    host: Host | None = None,
    *,
    client: httpx.Client | None = None,
) -> list[CheckResult]:
    """Run every check in order (all of them, even after a failure) and return their results."""
    return [run_check(check, transport, host, client=client) for check in checks]


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None

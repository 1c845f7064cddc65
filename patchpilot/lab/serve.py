"""acme-web releases as plain processes on 127.0.0.1, for tests and benchmarks.

The very ``server.py`` each lab package installs (:func:`patchpilot.lab.repo.web_server_source`)
runs with this interpreter on a free loopback port, without a lab host around it::

    with serve_release("1.3.0") as url:          # "http://127.0.0.1:PORT/"
        httpx.get(url + "health")

    with serve_releases(["1.0.0", "1.1.0"]) as urls:   # started together, one URL each
        ...

The servers bind 127.0.0.1 only (the server's own code does); on leaving the block every process
started here is terminated by its pid (killed if it does not stop), and its script folder removed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog

from patchpilot.core.errors import LabError
from patchpilot.lab.repo import WEB_VERSIONS, web_server_source

__all__ = ["serve_release", "serve_releases"]

_log = structlog.get_logger(__name__, agent="lab")

#: Attempts per server when another process takes the free port first.
_ATTEMPTS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _start(script: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env={**os.environ, "ACME_PORT": str(port), "PYTHONDONTWRITEBYTECODE": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End one server by its pid: SIGTERM, then SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def serve_releases(versions: Sequence[str], *, timeout_s: float = 20.0) -> Iterator[list[str]]:
    """Run the acme-web server of each of ``versions`` on loopback; yield their base URLs.

    The servers start together and are waited for together (each must accept connections
    within ``timeout_s``); a server that exits before it listens (its port was taken in the
    meantime) is started again on another port, at most three times. The same version may be
    given several times (several hosts on one release): each gets its own process.

    Raises:
        LabError: a version is not one of the lab repository's, or a server did not listen.
    """
    unknown = sorted(set(versions) - set(WEB_VERSIONS))
    if unknown:
        raise LabError(f"no acme-web release {unknown} in the lab repository ({WEB_VERSIONS})")
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="acme-web-") as folder:
        try:
            slots: list[tuple[subprocess.Popen[bytes], int]] = []
            scripts: list[Path] = []
            for index, version in enumerate(versions):
                script = Path(folder) / f"server-{index}-{version}.py"
                script.write_text(web_server_source(version), encoding="utf-8")
                scripts.append(script)
                proc, port = _start(script)
                procs.append(proc)
                slots.append((proc, port))
            live = [
                _wait(slot, script, procs, timeout_s)
                for slot, script in zip(slots, scripts, strict=True)
            ]
            _log.debug(
                "lab.serve.started",
                servers=[
                    {"version": version, "port": port, "pid": proc.pid}
                    for version, (proc, port) in zip(versions, live, strict=True)
                ],
            )
            yield [f"http://127.0.0.1:{port}/" for _, port in live]
        finally:
            for proc in procs:
                _stop(proc)
            _log.debug("lab.serve.stopped", pids=[p.pid for p in procs])


def _wait(
    slot: tuple[subprocess.Popen[bytes], int],
    script: Path,
    procs: list[subprocess.Popen[bytes]],
    timeout_s: float,
) -> tuple[subprocess.Popen[bytes], int]:
    """``slot``'s server and the port it listens on (restarted on a new port if it died)."""
    proc, port = slot
    for attempt in range(_ATTEMPTS):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _listening(port):
                return proc, port
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        else:
            raise LabError(f"acme-web ({script.name}) did not listen on 127.0.0.1:{port}")
        if attempt + 1 < _ATTEMPTS:
            proc, port = _start(script)
            procs.append(proc)
    raise LabError(f"acme-web ({script.name}) exited before listening, {_ATTEMPTS} times")


@contextmanager
def serve_release(version: str, *, timeout_s: float = 20.0) -> Iterator[str]:
    """:func:`serve_releases` for one release: yield ``http://127.0.0.1:PORT/``.

    Raises:
        LabError: ``version`` is not a release of the lab repository, or it did not listen.
    """
    with serve_releases([version], timeout_s=timeout_s) as urls:
        yield urls[0]

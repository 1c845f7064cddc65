"""Load test of the REST API's read endpoints on loopback (``patchpilot serve`` as a process).

Fills a fresh data directory (a viewer user, ``--runs`` finished scan runs, ``--approvals``
pending approvals, an audit log), starts ``patchpilot serve`` on 127.0.0.1 on a free port,
then runs ``--clients`` concurrent clients (httpx.AsyncClient) over the read endpoints
(``/api/v1/runs``, ``/runs/{id}``, ``/approvals``, ``/findings``, ``/hosts``, ``/audit``,
``/health``) until ``--seconds`` have passed or ``--requests`` were sent, whichever comes
first. Prints requests/s, p50, p99 and the error count (anything but a 200, or a transport
error). No assertions: the figures go in the note.

    .venv/bin/python benchmarks/api.py [--clients 50] [--seconds 10] [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import httpx

from patchpilot.app import users
from patchpilot.core.audit import AuditLog
from patchpilot.core.logging import configure_logging
from patchpilot.core.models import utcnow
from patchpilot.core.store import Store

REPO = Path(__file__).resolve().parents[1]
PATCHPILOT = Path(sys.executable).parent / "patchpilot"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fill(home: Path, runs: int, approvals: int) -> tuple[str, list[str]]:
    """A viewer's token and the run ids of a filled store."""
    now = utcnow()
    ids: list[str] = []
    with Store(home / "patchpilot.db") as store:
        token = users.add_user(store, "bench", "viewer", actor="bench")
        audit = AuditLog(home / "audit.log", actor="bench")
        for n in range(runs):
            run_id = f"20260101T{n // 3600 % 24:02d}{n // 60 % 60:02d}{n % 60:02d}Z-{n:06x}"
            kind = "run" if n < approvals else "scan"
            store.create_run(
                run_id,
                kind=kind,
                target="all",
                params={"hosts": ["web-1"]},
                started_at=now - timedelta(minutes=n),
            )
            if kind == "run":
                store.request_approval(
                    run_id,
                    f"plan-{n}",
                    f"{n:064x}",
                    ["web-1 is tagged prod"],
                    {"items": []},
                    requested_at=now,
                    expires_at=now + timedelta(days=1),
                )
            else:
                store.finish_run(run_id, status="succeeded", summary={"findings": 0})
            audit.record("bench.filled", run_id=run_id)
            ids.append(run_id)
    return token, ids


async def client(
    base: str,
    headers: dict[str, str],
    paths: list[str],
    deadline: float,
    budget: list[int],
    latencies: list[float],
    errors: list[str],
    offset: int,
    by_path: dict[str, list[float]],
) -> None:
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as http:
        i = offset
        while time.monotonic() < deadline and budget[0] > 0:
            budget[0] -= 1
            path = paths[i % len(paths)]
            i += 1
            started = time.perf_counter()
            try:
                response = await http.get(path)
                if response.status_code != 200:
                    errors.append(f"{path}: {response.status_code}")
            except httpx.HTTPError as exc:
                errors.append(f"{path}: {type(exc).__name__}")
            latencies.append(time.perf_counter() - started)
            by_path.setdefault(path, []).append(latencies[-1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def start_service(tmp: Path, home: Path, inventory: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``patchpilot serve`` on a free loopback port, answering; (the process, its base URL)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPILOT_")}
    env["PATCHPILOT_HOME"] = str(home)
    log_file = tmp / "serve.log"
    with log_file.open("wb") as log:
        server = subprocess.Popen(
            [
                str(PATCHPILOT),
                "serve",
                "--inventory",
                str(inventory),
                "--policy",
                str(REPO / "configs" / "policy.yaml"),
                "--port",
                str(port),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/api/v1/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            break
        time.sleep(0.1)
    stop(server)
    sys.exit("patchpilot serve did not answer:\n" + log_file.read_text()[-3000:])


def stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the service this script started (by its pid)."""
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--approvals", type=int, default=20)
    args = parser.parse_args()
    configure_logging("warning")

    with tempfile.TemporaryDirectory(prefix="pp-api-bench-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        inventory = Path(tmp) / "inventory.yaml"
        inventory.write_text("hosts:\n  web-1:\n    address: 127.0.0.1\n    tags: [web, prod]\n")
        token, ids = fill(home, args.runs, args.approvals)
        server, base = start_service(Path(tmp), home, inventory)
        paths = [
            "/api/v1/runs?limit=50",
            f"/api/v1/runs/{ids[-1]}",
            "/api/v1/approvals",
            "/api/v1/findings",
            "/api/v1/hosts",
            "/api/v1/audit?limit=50",
            "/api/v1/health",
        ]
        headers = {"Authorization": f"Bearer {token}"}
        # one request first: the token's argon2 verification (~0.1 s) is then cached
        httpx.get(f"{base}/api/v1/runs?limit=1", headers=headers, timeout=30)
        latencies: list[float] = []
        by_path: dict[str, list[float]] = {}
        errors: list[str] = []
        budget = [args.requests]
        started = time.monotonic()
        deadline = started + args.seconds

        async def load() -> None:
            await asyncio.gather(
                *(
                    client(base, headers, paths, deadline, budget, latencies, errors, n, by_path)
                    for n in range(args.clients)
                )
            )

        try:
            asyncio.run(load())
            elapsed = time.monotonic() - started
        finally:
            stop(server)
    print(f"clients      {args.clients}")
    print(f"requests     {len(latencies)} in {elapsed:.1f} s")
    print(f"requests/s   {len(latencies) / elapsed:.0f}")
    print(f"p50          {percentile(latencies, 0.50) * 1000:.1f} ms")
    print(f"p99          {percentile(latencies, 0.99) * 1000:.1f} ms")
    print(f"errors       {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    for path, values in sorted(by_path.items()):
        print(f"  {path:<45} p50 {percentile(values, 0.5) * 1000:7.1f} ms")


if __name__ == "__main__":
    main()

"""CLI start-up latency: the median wall time of a few commands against ``python -c pass``.

Each command runs once to warm up (bytecode written, as on a user's machine:
``PYTHONDONTWRITEBYTECODE`` is unset for it) and then ``--runs`` times (default 7) in a fresh
process with an empty ``PATCHPILOT_HOME`` in a temporary directory (every other
``PATCHPILOT_*`` variable unset, so no LLM), and the script prints the median and its ratio to
the interpreter's own start-up. No assertions: the figures are for the eye (and the change
note), never a timed test. It runs ``python -m patchpilot`` from the current directory, so
running it from another checkout measures that checkout.

    .venv/bin/python benchmarks/cli_latency.py
    .venv/bin/python benchmarks/cli_latency.py --runs 11
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: tuple[tuple[str, list[str]], ...] = (
    ("python -c pass", [sys.executable, "-c", "pass"]),
    ("patchpilot --version", [sys.executable, "-m", "patchpilot", "--version"]),
    ("patchpilot inventory", [sys.executable, "-m", "patchpilot", "inventory", "-i", "{inv}"]),
    ("patchpilot findings", [sys.executable, "-m", "patchpilot", "findings"]),
    (
        'patchpilot ask "show pending approvals"',
        [sys.executable, "-m", "patchpilot", "ask", "show pending approvals"],
    ),
)

INVENTORY = "hosts:\n  web-1:\n    address: 127.0.0.1\n"


def _env(home: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PATCHPILOT_") and k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PATCHPILOT_HOME"] = str(home)
    return env


def _time(argv: list[str], env: dict[str, str], runs: int) -> tuple[float, int]:
    subprocess.run(argv, env=env, capture_output=True, check=False)  # warm-up
    times = []
    code = 0
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        code = proc.returncode
    return statistics.median(times), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (default 7)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="patchpilot-latency-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        inventory = Path(tmp) / "inventory.yaml"
        inventory.write_text(INVENTORY)
        env = _env(home)
        baseline = None
        print(f"{'command':<42} {'median':>9} {'ratio':>7}  exit")
        for label, template in COMMANDS:
            argv = [a.replace("{inv}", str(inventory)) for a in template]
            median, code = _time(argv, env, args.runs)
            if baseline is None:
                baseline = median
            print(f"{label:<42} {median * 1000:>7.0f}ms {median / baseline:>6.1f}x  {code}")


if __name__ == "__main__":
    main()

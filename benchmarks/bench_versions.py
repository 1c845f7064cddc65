"""Throughput of patchpilot.core.versions: comparisons (and sort keys) per second, per ecosystem.

Usage::

    .venv/bin/python benchmarks/bench_versions.py [--seconds 1.0]

Prints a table; makes no assertions. The version pairs are realistic (distribution package
versions that differ late, the common case when matching advisories). "hot" repeats five pairs,
so parsed versions come from the modules' LRU caches (as when one installed version is checked
against many advisories); "cold" cycles through 20,000 distinct pairs, more than the caches
hold, so every comparison parses and validates both versions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from patchpilot.core.versions import compare, sort_key

PAIRS: dict[str, list[tuple[str, str]]] = {
    "debian": [
        ("1:9.2p1-2+deb12u3", "1:9.2p1-2+deb12u2"),
        ("2.36-9+deb12u7", "2.36-9+deb12u10"),
        ("3.0.15-1~deb12u1", "3.0.15-1"),
        ("1.18.36-0.17.35-18", "1.18.36-19"),
        ("252.30-1~deb12u2", "252.31-1~deb12u1"),
    ],
    "rpm": [
        ("1:3.0.7-27.el9", "1:3.0.7-24.el9"),
        ("2.34-100.el9_4.2", "2.34-100.el9_4.3"),
        ("5.14.0-427.13.1.el9_4", "5.14.0-427.20.1.el9_4"),
        ("1.0~rc1^git20240101-1.fc40", "1.0-1.fc40"),
        ("8.0.26-1.module_f35+12345", "8.0.26-1.module_f35+12346"),
    ],
    "alpine": [
        ("3.3.2-r0", "3.3.1-r1"),
        ("1.36.1-r29", "1.36.1-r30"),
        ("2.40.1_git20240101-r0", "2.40.1-r0"),
        ("9.7_p1-r4", "9.7_p1-r5"),
        ("8.2.0015", "8.2.002"),
    ],
    "pypi": [
        ("2.32.3", "2.32.4"),
        ("1.26.18", "1.26.20"),
        ("3.0.0rc1", "3.0.0"),
        ("1!2.0.post1.dev3", "1!2.0.post1"),
        ("24.1+local.7", "24.1"),
    ],
}
COLD_PAIRS = 20_000


def _vary(eco: str, version: str, i: int) -> str:
    """A distinct valid version derived from ``version``."""
    if eco == "debian":
        return f"{version}+c{i}"
    if eco == "rpm":
        return f"{version}.c{i}"
    if eco == "alpine":
        return f"{i}.{version}"
    return version + (f".c{i}" if "+" in version else f"+c{i}")


def _cold(eco: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    rounds = COLD_PAIRS // len(pairs)
    return [(_vary(eco, a, i), _vary(eco, b, i)) for i in range(rounds) for a, b in pairs]


def _rate(fn: Callable[[], object], ops_per_call: int, seconds: float) -> float:
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        calls += 1
        if time.perf_counter() >= deadline:
            break
    return calls * ops_per_call / (time.perf_counter() - start)


def main() -> None:
    """Measure and print comparisons/second and sort keys/second per ecosystem."""
    parser = argparse.ArgumentParser(description="patchpilot.core.versions throughput")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per measurement")
    args = parser.parse_args()

    print(f"{'ecosystem':<10} {'compare/s hot':>14} {'compare/s cold':>15} {'sort_key/s':>11}")
    for eco, pairs in PAIRS.items():
        cold = _cold(eco, pairs)

        def compare_hot(eco: str = eco, pairs: list[tuple[str, str]] = pairs) -> None:
            for a, b in pairs:
                compare(eco, a, b)

        def compare_cold(eco: str = eco, cold: list[tuple[str, str]] = cold) -> None:
            for a, b in cold:
                compare(eco, a, b)

        def key_cold(eco: str = eco, cold: list[tuple[str, str]] = cold) -> None:
            for a, _ in cold:
                sort_key(eco, a)

        hot = _rate(compare_hot, len(pairs), args.seconds)
        cold_rate = _rate(compare_cold, len(cold), args.seconds)
        keys = _rate(key_cold, len(cold), args.seconds)
        print(f"{eco:<10} {hot:>14,.0f} {cold_rate:>15,.0f} {keys:>11,.0f}")


if __name__ == "__main__":
    main()

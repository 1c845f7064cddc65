"""Fault injection for crash-recovery tests: ``PATCHPILOT_FAILPOINTS=assess`` kills the process.

A failpoint is a named place in the code (``failpoint("assess")``). When its name is listed in
the comma-separated ``PATCHPILOT_FAILPOINTS`` environment variable, the process sends itself
SIGKILL there — exactly what ``kill -9`` does, with no cleanup, no flushing and no exception
handler running — so tests can prove that a run resumes correctly from its checkpoints.
``NAME#N`` kills on the N-th time the process reaches ``NAME`` (e.g. ``deploy.after_install#2``:
after the second host's install). Unset (always, in production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["failpoint"]

_hits: dict[str, int] = {}
_lock = threading.Lock()


def _armed(name: str, enabled: str) -> bool:
    for spec in (p.strip() for p in enabled.split(",")):
        point, _, nth = spec.partition("#")
        if point != name:
            continue
        if not nth:
            return True
        with _lock:
            _hits[name] = _hits.get(name, 0) + 1
            return _hits[name] == int(nth)
    return False


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``name`` is an enabled failpoint (see the module)."""
    enabled = os.environ.get("PATCHPILOT_FAILPOINTS")
    if enabled and _armed(name, enabled):
        os.kill(os.getpid(), signal.SIGKILL)

"""Fault injection for crash-recovery tests: ``PATCHPILOT_FAILPOINTS=assess`` kills the process.

A failpoint is a named place in the code (``failpoint("assess")``). When its name is listed in
the comma-separated ``PATCHPILOT_FAILPOINTS`` environment variable, the process sends itself
SIGKILL there — exactly what ``kill -9`` does, with no cleanup, no flushing and no exception
handler running — so tests can prove that a run resumes correctly from its checkpoints.
``NAME#N`` fires on the N-th time the process reaches ``NAME`` (e.g. ``deploy.after_install#2``:
after the second host's install). An action after a colon chooses what happens instead of the
kill: ``NAME:raise`` raises :class:`FailpointError` (an unexpected error, to prove that a failure
after a side effect still ends the run in a status it can be resumed from), and
``NAME:sleep=SECONDS`` pauses there (to hold a run busy while a test tries to drive it from
another process). Unset (always, in production) it costs one dictionary lookup.

Failpoints in the code: ``scan.discovered`` (a host's snapshot is stored), ``scan.sourced``,
``assess`` (before a host's assessment), ``scan.assessed`` (its findings are stored),
``scan.prioritized``, ``deploy.after_install``, ``run.after_ring`` (a ring deployed, before its
summary is checkpointed), ``run.analysis_soak`` (a ring's post-patch analysis, after its soak,
before sampling) and ``run.finish`` (before the run's result is recorded).
"""

from __future__ import annotations

import os
import signal
import threading
import time

__all__ = ["FailpointError", "failpoint"]

_hits: dict[str, int] = {}
_lock = threading.Lock()


class FailpointError(RuntimeError):
    """Raised by a failpoint armed with ``:raise`` (see the module)."""


def _armed(name: str, enabled: str) -> str | None:
    """The action of ``name`` if it fires now (``kill``, ``raise``, ``sleep=S``), else None."""
    for entry in (p.strip() for p in enabled.split(",")):
        spec, _, action = entry.partition(":")
        point, _, nth = spec.partition("#")
        if point != name:
            continue
        if not nth:
            return action or "kill"
        with _lock:
            _hits[name] = _hits.get(name, 0) + 1
            return (action or "kill") if _hits[name] == int(nth) else None
    return None


def failpoint(name: str) -> None:
    """Kill this process (or raise, or pause) if ``name`` is an enabled failpoint."""
    enabled = os.environ.get("PATCHPILOT_FAILPOINTS")
    if not enabled:
        return
    action = _armed(name, enabled)
    if action is None:
        return
    if action == "raise":
        raise FailpointError(f"failpoint {name} raised (PATCHPILOT_FAILPOINTS)")
    if action.startswith("sleep="):
        time.sleep(float(action.removeprefix("sleep=")))
        return
    os.kill(os.getpid(), signal.SIGKILL)

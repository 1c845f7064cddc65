"""Fault injection for crash-recovery tests: ``PATCHPILOT_FAILPOINTS=assess`` kills the process.

A failpoint is a named place in the code (``failpoint("assess")``). When its name is listed in
the comma-separated ``PATCHPILOT_FAILPOINTS`` environment variable, the process sends itself
SIGKILL there — exactly what ``kill -9`` does, with no cleanup, no flushing and no exception
handler running — so tests can prove that a run resumes correctly from its checkpoints. Unset
(always, in production) it costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

__all__ = ["failpoint"]


def failpoint(name: str) -> None:
    """Kill this process with SIGKILL if ``name`` is an enabled failpoint."""
    enabled = os.environ.get("PATCHPILOT_FAILPOINTS")
    if enabled and name in {p.strip() for p in enabled.split(",")}:
        os.kill(os.getpid(), signal.SIGKILL)

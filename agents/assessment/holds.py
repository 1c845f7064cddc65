"""Held packages keep their exposure visible: a fixed finding on a held package is ``held``.

A package the host holds (``apt-mark hold``) is the one most likely to stay vulnerable, so its
findings are never dropped: a ``fixed`` finding with any held binary becomes
:attr:`~patchpilot.core.models.FixStatus.HELD` with the same fixed version. It is visible in
every report, counts for gates and compliance, and is not actionable (nothing is planned for
it) until the hold is released.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from patchpilot.core.models import Finding, FixStatus

__all__ = ["apply_holds"]


def apply_holds(findings: Sequence[Finding], held_packages: Iterable[str] | None) -> list[Finding]:
    """``findings`` with every fixed finding on a held binary package marked ``held``.

    Args:
        findings: one host's findings.
        held_packages: the binary packages that host holds (``None``: not known).

    Returns:
        The findings in the same order; unchanged ones are the same objects.
    """
    held = {name.split(":", 1)[0] for name in held_packages or ()}
    if not held:
        return list(findings)
    return [
        f.model_copy(update={"fix": f.fix.held()})
        if f.fix.status is FixStatus.FIXED and held.intersection(f.binary_packages)
        else f
        for f in findings
    ]

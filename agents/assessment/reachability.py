"""Fix reachability: whether the host's own repositories already offer the fix.

From the pending updates (``apt-get -s dist-upgrade``,
:class:`patchpilot.tools.facts.AptPendingUpdates`): :func:`fix_reachable` per source package
and :func:`kernel_image_updates` for the running kernel's image.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Final

from patchpilot.agents.assessment.verdicts import _BINNMU_RE, _DEFAULT_CACHE, VerdictCache
from patchpilot.core.errors import InvalidVersionError
from patchpilot.core.models import (
    Ecosystem,
    InstalledPackage,
    PendingUpdate,
)

__all__ = ["fix_reachable", "kernel_image_updates"]


def _binary_tracks_source(package: InstalledPackage) -> bool:
    """Whether the binary's version is its source's (possibly a ``+bN`` binNMU of it)."""
    if package.version == package.source_version:
        return True
    head, tail = (
        package.version[: len(package.source_version)],
        package.version[len(package.source_version) :],
    )
    return head == package.source_version and bool(_BINNMU_RE.match(tail))


def fix_reachable(
    binaries: Sequence[InstalledPackage],
    fixed_version: str,
    pending: Mapping[str, Sequence[PendingUpdate]] | None,
    ecosystem: Ecosystem,
    cache: VerdictCache | None = None,
    *,
    kernel_updates: Sequence[PendingUpdate] = (),
) -> bool | None:
    """Whether the host's repositories offer a version of the finding's binaries with the fix.

    Heuristic (the candidate is a *binary* version, the fix a *source* version):

    * a pending upgrade of one of the binaries whose installed version equals its source
      version, or is a binNMU of it (``<source version>+bN``), reaches the fix when its
      candidate version is >= the fixed version (a binNMU of the fix, ``<fixed>+b1``, sorts
      after the fix, and ``<old>+b9`` before it);
    * a binary with its own version scheme (``libldb2 2:2.6.2+samba4.17.12...`` from ``samba``)
      cannot be compared with a source version: any pending upgrade of it is taken as
      reaching the fix (the candidate comes from a newer upload of the same source);
    * an architecture-qualified update only matches the installed binary of that architecture;
    * for the running kernel, a new kernel ABI is a *new* package (``linux-image-6.1.0-22-amd64``
      next to the running ``-18-``), so ``kernel_updates`` (:func:`kernel_image_updates`) are
      also compared: an image's version is its kernel source version.

    Args:
        binaries: the finding's installed binary packages.
        fixed_version: the fixed source version.
        pending: pending updates by binary name; ``None`` when they were not collected.
        ecosystem: the version ordering.
        cache: comparison memo (default: the module's).
        kernel_updates: pending kernel images of the running flavour (kernel findings only).

    Returns:
        ``True`` reached, ``False`` pending data exists and nothing reaches the fix, ``None``
        unknown (no pending data, or a candidate version that does not parse).
    """
    if pending is None:
        return None
    memo = cache if cache is not None else _DEFAULT_CACHE
    unknown = False
    for update in kernel_updates:
        try:
            if memo.compare(ecosystem, update.candidate_version, fixed_version) >= 0:
                return True
        except InvalidVersionError:
            unknown = True
    for package in binaries:
        for update in pending.get(package.name, ()):
            if update.arch and package.arch and update.arch != package.arch:
                continue
            if not _binary_tracks_source(package):
                return True
            try:
                if memo.compare(ecosystem, update.candidate_version, fixed_version) >= 0:
                    return True
            except InvalidVersionError:
                unknown = True
    return None if unknown else False


_KERNEL_RELEASE_RE: Final = re.compile(r"^\d+\.\d+(?:\.\d+)?-\d+(?:\.\d+)*-(?P<flavour>.+)$")


def kernel_image_updates(
    kernel_release: str, pending: Sequence[PendingUpdate] | None
) -> list[PendingUpdate]:
    """Pending kernel images of the running kernel's flavour, any ABI (new installs included).

    For ``6.1.0-18-amd64`` this matches ``linux-image-6.1.0-22-amd64`` (and ``-unsigned``
    variants) but not ``linux-image-6.1.0-22-cloud-amd64`` nor the ``linux-image-amd64``
    metapackage; for Ubuntu's ``5.15.0-91-generic``, ``linux-image-5.15.0-92-generic``.

    Args:
        kernel_release: ``uname -r``.
        pending: the host's pending updates (``None``: not collected).

    Returns:
        The matching updates (empty when the release has no ``<abi>-<flavour>`` shape).
    """
    match = _KERNEL_RELEASE_RE.match(kernel_release)
    if match is None or not pending:
        return []
    image = re.compile(
        r"^linux-image-(?:unsigned-)?\d+\.\d+(?:\.\d+)?-\d+(?:\.\d+)*-"
        + re.escape(match["flavour"])
        + r"(?:-unsigned)?$"
    )
    return [u for u in pending if image.match(u.name)]


def _index_pending(
    pending: Sequence[PendingUpdate] | None,
) -> dict[str, list[PendingUpdate]] | None:
    if pending is None:
        return None
    index: dict[str, list[PendingUpdate]] = {}
    for update in pending:
        index.setdefault(update.name, []).append(update)
    return index

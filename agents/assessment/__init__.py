"""Assessment: which advisories affect a host, decided deterministically from its inventory.

Pure functions: the caller passes the host's facts, its installed packages, the advisories
(already scoped to the host's ecosystem and release) and optionally its pending updates; no
store, network or clock is read except ``now`` when it is not given.

Rules (see ``design/research/vulnerability-scanners.md`` sections 1.2, 1.3 and (b)):

* **Source packages.** Binaries are grouped by ``(source_name, source_version)`` and matched on
  the *source* package with the *source* version (``${source:Version}``), never on a binary's
  version: a binNMU ``bash 5.2.15-2+b8`` is source ``5.2.15-2``, and ``libldb2
  2:2.6.2+samba4.17.12+dfsg-0+deb12u1`` is source ``samba 2:4.17.12+dfsg-0+deb12u1``.
* **Fix states.** ``fixed(v)``: affected iff installed source version < ``v``
  (:func:`patchpilot.core.versions.compare` in the host's ecosystem). ``no-fix-yet``, ``deferred``,
  ``will-not-fix`` and ``end-of-life``: a visible, non-actionable finding. ``not-affected``
  and ``unimportant``: no finding, counted.
* **Per release, never across.** An advisory scoped to a release (Debian codename:
  ``bookworm``, ``trixie``) is matched only against hosts of that release (``os.release``); on
  a host of another release it is ``out_of_scope`` (counted, no finding), so a bookworm fix
  (``+deb12uN``) never decides a trixie package nor the other way round. A release with no
  entry for an advisory gets no verdict from it: a DSA/DLA names each release it fixes, and
  the tracker's JSON export has an entry for each release that ships the package (Trivy's
  "inherit the sid fix" rule is for the raw ``CVE/list``, which patchpilot does not read). On
  a host whose release is unknown, a release-scoped advisory is an error (unknown is not
  safe); advisories without a release apply to every release.
* **Kernel.** Only the running kernel counts (Vuls' rule). A kernel source package
  (:func:`is_kernel_source`) is kept only when one of its binaries belongs to the running
  release (``linux-image-<uname -r>``, headers or modules of that release, see
  :func:`running_kernel_binaries`); every other installed kernel source is pruned (counted, no
  finding). The kept source is renamed to its canonical name (``linux-signed-amd64`` ->
  ``linux``) and its version is the running image binary's version, which equals the ``linux``
  source version (the signed template's own source version ``6.1.76+1`` does not).
* **Unknown is not safe.** A version that does not parse never means "not vulnerable": the
  (source package, reason) pair goes to :attr:`AssessmentResult.errors`, and a
  :class:`~patchpilot.agents.assessment.verdicts.DataQualityWarning` with the record to
  :attr:`AssessmentResult.data_quality`. Malformed versions the package manager orders are
  ordered (:func:`patchpilot.core.versions.compare`), not reported.
* **Fix reachability** (:func:`fix_reachable`): whether the host's own repositories already
  offer the fix, from ``apt-get -s dist-upgrade``
  (:class:`patchpilot.tools.facts.AptPendingUpdates`).

Verdicts are cached per (ecosystem, release, source package, installed source version) in a
:class:`VerdictCache`, so a fleet sharing versions compares each pair once.


Modules: :mod:`.verdicts` (results, the verdict cache), :mod:`.kernel` (running-kernel
selection), :mod:`.reachability` (fix reachability), :mod:`.matching` (:func:`assess_host`),
:mod:`.pending` (findings from pending updates when no feed is imported), :mod:`.holds`
(fixed findings on held packages become ``held``: visible, not actionable).
"""

from __future__ import annotations

from patchpilot.agents.assessment.holds import apply_holds
from patchpilot.agents.assessment.kernel import (
    canonical_kernel_source,
    is_kernel_source,
    running_kernel_binaries,
)
from patchpilot.agents.assessment.matching import assess_host
from patchpilot.agents.assessment.pending import findings_from_pending, pending_advisory_id
from patchpilot.agents.assessment.reachability import fix_reachable, kernel_image_updates
from patchpilot.agents.assessment.verdicts import (
    AdvisorySource,
    AssessmentCounters,
    AssessmentResult,
    VerdictCache,
)

__all__ = [
    "AdvisorySource",
    "AssessmentCounters",
    "AssessmentResult",
    "VerdictCache",
    "apply_holds",
    "assess_host",
    "canonical_kernel_source",
    "findings_from_pending",
    "fix_reachable",
    "is_kernel_source",
    "kernel_image_updates",
    "pending_advisory_id",
    "running_kernel_binaries",
]

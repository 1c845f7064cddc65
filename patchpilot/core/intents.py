"""Typed chat requests: what an operator asked the orchestrator to do, once understood.

A :class:`ChatRequest` is the single boundary between free text and the rest of patchpilot.
The deterministic parser (:func:`patchpilot.agents.intake.parse_request`) builds one, and so will
any
LLM-backed parser: both produce the *same* frozen model, so everything downstream (the
orchestrator, approvals, the audit log) handles one shape and applies one set of checks.

Safety rules carried by the model itself, whichever parser built it:

* every :class:`PackageSpec` name and version passed
  :func:`patchpilot.core.validate.validate_package_name`
  / :func:`patchpilot.core.validate.validate_version` for Debian, so nothing unsafe can reach apt
  later;
* CVE ids are normalised to ``CVE-YYYY-NNNN`` upper case and anything else is refused;
* host names pass :func:`patchpilot.core.validate.validate_hostname`, tags and groups are plain
  names,
  run ids have the scan-run form ``20261127T101941Z-31b1dc``;
* :attr:`ChatRequest.is_actionable` is true only for a clear ``patch``/``rollback`` with an
  explicit scope (hosts, tags, groups or all hosts) and nothing left to clarify; a rollback also
  needs at least one package. Approve/reject decisions act only through
  :attr:`ChatRequest.is_decision` (a run id and nothing to clarify).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from patchpilot.core.errors import UnsafeArgumentError
from patchpilot.core.models import Ecosystem, FixStatus, Severity
from patchpilot.core.validate import validate_hostname, validate_package_name, validate_version

__all__ = [
    "ACTION_INTENTS",
    "DECISION_INTENTS",
    "MAX_COMMENT_LENGTH",
    "RUN_ID_RE",
    "ChatRequest",
    "Intent",
    "PackageSpec",
    "Scope",
    "StatusTopic",
    "TagMatch",
    "When",
    "normalize_cve",
    "normalize_run_id",
]

RUN_ID_RE: Final = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")
"""A scan/patch run id as made by :mod:`patchpilot.graphs.scan`: UTC timestamp, ``-``, six hex
digits."""

MAX_COMMENT_LENGTH: Final = 500
"""Longest free-text comment kept on a request (approval/rejection reason)."""

_CVE_RE: Final = re.compile(r"^CVE-(\d{4})-(\d{4,7})$")
_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class Intent(StrEnum):
    """What the operator wants.

    ``patch`` and ``rollback`` change hosts; ``approve``/``reject`` decide on a run; the
    others are read-only questions; ``unknown`` is answered with the parser's help text.
    """

    PATCH = "patch"
    ROLLBACK = "rollback"
    EXPOSURE = "exposure"
    EXPLAIN = "explain"
    HISTORY = "history"
    STATUS = "status"
    APPROVE = "approve"
    REJECT = "reject"
    UNKNOWN = "unknown"


ACTION_INTENTS: Final = frozenset({Intent.PATCH, Intent.ROLLBACK})
"""Intents that change hosts."""
DECISION_INTENTS: Final = frozenset({Intent.APPROVE, Intent.REJECT})
"""Intents that decide on an existing run."""


class When(StrEnum):
    """When a change should happen."""

    NOW = "now"
    TONIGHT = "tonight"
    NEXT_WINDOW = "next_window"
    SCHEDULED = "scheduled"
    """At a given time ("at 22:00", "on Saturday", "tomorrow morning"): ``not_before`` says
    when (:func:`patchpilot.agents.intake.when.read_when`)."""
    UNSPECIFIED = "unspecified"


class TagMatch(StrEnum):
    """How several tags combine: hosts with *all* of them ("the prod web servers") or *any*."""

    ALL = "all"
    ANY = "any"


class StatusTopic(StrEnum):
    """What a ``status`` question is about (``general`` when it does not say)."""

    APPROVALS = "approvals"
    RUNS = "runs"
    COMPLIANCE = "compliance"
    """Compliance and SLA state per host (due and overdue findings)."""
    FINDINGS = "findings"
    """Findings by any filter the CLI has (severity, KEV, fix state, overdue, package, CVE)."""
    PENDING = "pending"
    """Pending updates per host, tag or group (``security_only`` for the security ones)."""
    REBOOT = "reboot"
    """Hosts that need a reboot or a service restart."""
    HOLDS = "holds"
    """Held packages, per host."""
    FEEDS = "feeds"
    """Feed freshness."""
    GENERAL = "general"


def normalize_cve(value: str) -> str:
    """Return ``value`` as an upper-case ``CVE-YYYY-NNNN`` id.

    Args:
        value: a CVE id in any case (``cve-2024-6387``).

    Returns:
        The normalised id.

    Raises:
        ValueError: ``value`` is not a CVE id.
    """
    cve = value.strip().upper()
    if not _CVE_RE.fullmatch(cve):
        raise ValueError(f"not a CVE id: {value[:40]!r}")
    return cve


def normalize_run_id(value: str) -> str:
    """Return a run id with its timestamp upper case and its suffix lower case.

    Args:
        value: a run id in any case (``20261127t101941z-31B1DC``).

    Returns:
        The normalised id, e.g. ``20261127T101941Z-31b1dc``.

    Raises:
        ValueError: ``value`` is not a run id.
    """
    stamp, sep, suffix = value.strip().partition("-")
    run_id = f"{stamp.upper()}{sep}{suffix.lower()}"
    if not RUN_ID_RE.fullmatch(run_id):
        raise ValueError(f"not a run id: {value[:40]!r}")
    return run_id


def _host(value: str) -> str:
    try:
        return validate_hostname(value)
    except UnsafeArgumentError as exc:
        raise ValueError(str(exc)) from None


def _name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"not a tag or group name: {value[:40]!r}")
    return value


HostName = Annotated[str, AfterValidator(_host)]
TagName = Annotated[str, AfterValidator(_name)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PackageSpec(_Frozen):
    """A Debian package, optionally pinned to an exact version; both are validated."""

    name: str
    version: str | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        try:
            return validate_package_name(value, Ecosystem.DEBIAN)
        except UnsafeArgumentError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("version")
    @classmethod
    def _valid_version(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return validate_version(value, Ecosystem.DEBIAN)
        except UnsafeArgumentError as exc:
            raise ValueError(str(exc)) from None

    def __str__(self) -> str:
        return self.name if self.version is None else f"{self.name}={self.version}"


class Scope(_Frozen):
    """Which hosts a request is about. Empty means "not said" (never "everything").

    The selected hosts are the union of ``hosts``, the tag selection and ``groups`` (or every
    host with ``all_hosts``). With several tags, ``tag_match`` says whether a host needs all of
    them (``the prod web servers``) or any of them (``staging and canary``).
    """

    hosts: tuple[HostName, ...] = ()
    tags: tuple[TagName, ...] = ()
    tag_match: TagMatch = TagMatch.ANY
    groups: tuple[TagName, ...] = ()
    all_hosts: bool = False

    @property
    def is_explicit(self) -> bool:
        """True when the request names hosts, tags, groups or explicitly all hosts."""
        return self.all_hosts or bool(self.hosts or self.tags or self.groups)

    def describe(self) -> str:
        """A short phrase such as ``hosts web-1, db-1`` or ``all hosts``."""
        if self.all_hosts:
            return "all hosts"
        parts = []
        if self.hosts:
            parts.append("hosts " + ", ".join(self.hosts))
        if self.tags:
            joiner = " + " if self.tag_match is TagMatch.ALL else " or "
            parts.append("hosts tagged " + joiner.join(self.tags))
        if self.groups:
            parts.append("groups " + ", ".join(self.groups))
        return " and ".join(parts) if parts else "no hosts named"


class ChatRequest(_Frozen):
    """One operator request, understood. Built by a parser; never mutated."""

    intent: Intent
    scope: Scope = Scope()
    packages: tuple[PackageSpec, ...] = ()
    cves: tuple[str, ...] = ()
    severity_at_least: Severity | None = None
    kev_only: bool = False
    when: When = When.UNSPECIFIED
    dry_run: bool = False
    run_id: str | None = None
    status_topic: StatusTopic | None = None
    security_only: bool = False
    """Only security updates/findings ("what security updates are pending")."""
    overdue: bool = False
    """Only findings past their SLA due date ("everything that's overdue")."""
    fix_state: FixStatus | None = None
    """Only findings in this fix state ("which held packages are vulnerable")."""
    not_before: datetime | None = None
    """A change may not start before this time (UTC): "tonight", "at 22:00", "on Saturday"
    (the run then waits for it inside the policy's windows)."""
    comment: str | None = Field(default=None, max_length=MAX_COMMENT_LENGTH)
    newest: bool = False
    confidence: float = Field(default=0.0, ge=0.0, le=1.0)
    unparsed: tuple[str, ...] = ()
    needs_clarification: str | None = None

    @field_validator("cves")
    @classmethod
    def _valid_cves(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(normalize_cve(cve) for cve in value))

    @field_validator("run_id")
    @classmethod
    def _valid_run_id(cls, value: str | None) -> str | None:
        return None if value is None else normalize_run_id(value)

    @field_validator("needs_clarification")
    @classmethod
    def _non_empty_question(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("needs_clarification must be a question or None")
        return value

    @property
    def is_actionable(self) -> bool:
        """True when the orchestrator may plan a change: a clear patch/rollback, nothing to ask.

        Defence in depth: besides ``needs_clarification`` being unset, the scope must be explicit
        and a rollback must name a package, whichever parser built the request.
        """
        if self.intent not in ACTION_INTENTS or self.needs_clarification is not None:
            return False
        if not self.scope.is_explicit:
            return False
        return self.intent is not Intent.ROLLBACK or bool(self.packages)

    @property
    def is_decision(self) -> bool:
        """True for an approve/reject of a named run with nothing left to clarify."""
        return (
            self.intent in DECISION_INTENTS
            and self.run_id is not None
            and self.needs_clarification is None
        )

    @property
    def acts(self) -> bool:
        """True when the orchestrator would act on this request (change or decision)."""
        return self.is_actionable or self.is_decision

    def describe(self) -> str:
        """One human line, e.g. ``patch openssl on tags staging (≥ critical, tonight)``."""
        if self.intent is Intent.UNKNOWN:
            line = "request not understood"
        else:
            line = self.intent.value
            if self.status_topic is not None and self.status_topic is not StatusTopic.GENERAL:
                line += f" of {self.status_topic.value}"
            if self.run_id:
                line += f" run {self.run_id}"
            if self.newest:
                line += (
                    " the latest for"
                    if self.intent in ACTION_INTENTS
                    else " the newest advisory for"
                )
            if self.packages:
                line += " " + ", ".join(str(p) for p in self.packages)
            elif self.intent is Intent.PATCH:
                line += " pending updates"
            if self.cves:
                line += " for " + ", ".join(self.cves)
            if self.scope.is_explicit:
                line += " on " + self.scope.describe()
            details = []
            if self.severity_at_least is not None:
                details.append(f"severity ≥ {self.severity_at_least.value}")
            if self.kev_only:
                details.append("known-exploited only")
            if self.security_only:
                details.append("security only")
            if self.overdue:
                details.append("overdue only")
            if self.fix_state is not None:
                details.append(f"fix state {self.fix_state.value}")
            if self.when is not When.UNSPECIFIED:
                details.append(self.when.value.replace("_", " "))
            if self.not_before is not None:
                details.append(f"not before {self.not_before:%Y-%m-%d %H:%M} UTC")
            if self.dry_run:
                details.append("dry run")
            if self.comment:
                details.append(f"comment: {self.comment}")
            if details:
                line += " (" + ", ".join(details) + ")"
        if self.needs_clarification:
            line += f" — needs clarification: {self.needs_clarification}"
        return line

"""Assembling the :class:`~patchpilot.core.intents.ChatRequest`: :func:`parse_request`,
the clarifying questions and :func:`help_text`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

import structlog

from patchpilot.agents.intake.decision import _before_comment, _comment, _decide, _Decision, _topic
from patchpilot.agents.intake.extraction import _extract, _Found, _is_content
from patchpilot.agents.intake.lexicon import (
    _ANY_VERBS,
    _EXAMPLE_RUN_ID,
    _MAX_LISTED,
    _MAX_UNPARSED,
    _VERBS,
    MAX_TEXT_LENGTH,
    WHICH_RUN,
    _Cat,
)
from patchpilot.agents.intake.tokens import (
    _classify,
    _Item,
    _Kind,
    _Lexicon,
    _lexicon,
    _normalise,
    _tokenise,
)
from patchpilot.agents.intake.when import WhenReading, read_when
from patchpilot.core.intents import (
    ACTION_INTENTS,
    DECISION_INTENTS,
    ChatRequest,
    Intent,
    PackageSpec,
    Scope,
    StatusTopic,
    TagMatch,
    When,
)
from patchpilot.core.models import FixStatus

log = structlog.get_logger("patchpilot.agents.intake")

__all__ = ["help_text", "parse_request"]


def _listed(values: Iterable[str]) -> str:
    values = list(values)
    shown = ", ".join(repr(v) for v in values[:_MAX_LISTED])
    return shown + (", …" if len(values) > _MAX_LISTED else "")


def _action_question(decision: _Decision, found: _Found, lex: _Lexicon) -> str | None:
    """Why a patch/rollback cannot be acted on as written (None when it can)."""
    verb = "roll back" if decision.intent is Intent.ROLLBACK else "patch"
    if found.negations:
        return (
            f"I can't act on exclusions or negations ({_listed(found.negations)}). Please name "
            f"exactly what to {verb} and where, e.g. '{verb} openssl on web-1'."
        )
    if decision.conflict:
        return f"Do you want to {decision.conflict}? Please ask for one change at a time."
    if found.choices:
        return (
            f"{_listed(found.choices)} leaves the choice open: please name exactly which hosts "
            f"and packages to {verb}."
        )
    # "what would happen if ..." is a hypothetical (a dry run), not a condition.
    sequence = [w for w in found.sequence if not (decision.hypothetical and w.lower() == "if")]
    if sequence:
        return (
            f"I can't order or condition changes ({_listed(sequence)}). Please ask for "
            "one step at a time, e.g. 'patch canary-1 now', then 'patch prod' later."
        )
    if found.unknown_hosts:
        known = _listed(sorted(set(lex.hosts.values())))
        return f"I don't know host(s) {_listed(found.unknown_hosts)}. Known hosts: {known}."
    if found.invalid:
        return f"{_listed(found.invalid)} is not a valid Debian package name or version."
    if found.unknown_packages:
        return (
            f"I don't know package(s) {_listed(found.unknown_packages)}. "
            "Please check the name (e.g. 'upgrade openssl on web-1')."
        )
    if found.unknown_scope:
        tags = _listed(sorted(set(lex.tags.values())))
        return (
            f"I don't know which hosts {_listed(found.unknown_scope)} means. Name hosts, "
            f"tags ({tags}) or say 'all hosts'."
        )
    if found.question_only:
        return (
            f"I can answer questions about {_listed(found.question_only)}, but not act on "
            f"them in a change. Please name exactly what to {verb} and where, e.g. "
            f"'{verb} openssl on web-1'."
        )
    if found.orphan_versions:
        return (
            f"Which package should go to version {_listed(found.orphan_versions)}? "
            "Say e.g. 'upgrade acme-web to 1.1.0 on staging'."
        )
    if not (found.hosts or found.tags or found.groups or found.all_hosts):
        return (
            f"Which hosts should I {verb}? Name hosts (e.g. web-1), tags (e.g. staging) "
            "or say 'all hosts'."
        )
    if decision.intent is Intent.ROLLBACK and not found.packages:
        return "Which package should I roll back (e.g. 'roll back acme-web on web-2')?"
    if found.when_question is not None:
        return found.when_question
    if len(found.whens) > 1 or found.bad_times:
        extra = f" ({_listed(found.bad_times)} is not supported yet)" if found.bad_times else ""
        return f"When: now, tonight or at the next maintenance window?{extra}"
    if len(found.tag_joins) > 1:
        return (
            f"Should I take hosts with all of the tags {_listed(found.tags)} or with any of them?"
        )
    if found.unparsed:
        return (
            f"I did not understand {_listed(found.unparsed)}. Please rephrase; "
            "say 'help' for examples."
        )
    return None


def _decision_question(decision: _Decision, found: _Found, items: Sequence[_Item]) -> str | None:
    verb = decision.intent.value
    head = _before_comment(items)
    if _Cat.NEGATION in head:
        return f"Do you want to {verb} the run? Please say 'approve RUN-ID' or 'reject RUN-ID'."
    if decision.conflict:
        return "Do you want to approve or reject the run?"
    if not found.run_ids:
        if _ANY_VERBS & head or found.hosts or found.tags or found.groups or found.packages:
            # "approve it and patch web-1": never resolved to a run shown earlier
            return f"Please send the {verb} on its own, with the run id, then ask for the change."
        return f"{WHICH_RUN} Give its id, e.g. '{verb} {_EXAMPLE_RUN_ID}'."
    if len(found.run_ids) > 1:
        return f"Please {verb} one run at a time ({_listed(found.run_ids)})."
    if _Cat.COMMENT not in head and _VERBS & _after_run_id(items):
        return f"Please send the {verb} on its own, then ask for the change separately."
    return None


def _after_run_id(items: Sequence[_Item]) -> set[_Cat]:
    """Categories after the run id and before any "because"/"reason" marker."""
    cats: set[_Cat] = set()
    seen = False
    for item in items:
        if item.cat is _Cat.COMMENT:
            break
        if seen and item.cat is not None:
            cats.add(item.cat)
        seen = seen or item.kind is _Kind.RUNID
    return cats


def _question_question(found: _Found, lex: _Lexicon) -> str | None:
    if found.unknown_hosts:
        known = _listed(sorted(set(lex.hosts.values())))
        return f"I don't know host(s) {_listed(found.unknown_hosts)}. Known hosts: {known}."
    if found.unknown_packages:
        return f"I don't know package(s) {_listed(found.unknown_packages)}."
    return None


def _unknown(question: str | None = None, unparsed: Sequence[str] = ()) -> ChatRequest:
    return ChatRequest(
        intent=Intent.UNKNOWN,
        confidence=0.0,
        unparsed=tuple(unparsed[:_MAX_UNPARSED]),
        needs_clarification=question,
    )


def parse_request(
    text: str,
    *,
    known_hosts: Iterable[str] = (),
    known_tags: Iterable[str] = (),
    known_packages: Iterable[str] = (),
    now: datetime | None = None,
    timezone: str | ZoneInfo = "UTC",
) -> ChatRequest:
    """Parse one chat message into a :class:`ChatRequest` (see the module docstring's grammar).

    Deterministic and side-effect free: the same text, known lists and ``now`` give the same
    request.

    Args:
        text: the operator's message (untrusted; at most :data:`MAX_TEXT_LENGTH` characters).
        known_hosts: inventory host names; when given, other host-like names are refused.
        known_tags: inventory tags; defaults to :data:`DEFAULT_TAGS` when empty.
        known_packages: package names the fleet has; when given, other names are refused.
        now: the current time (timezone-aware). When given, a change's time words are read by
            :func:`~patchpilot.agents.intake.when.read_when` ("tonight", "at 22:00", "on
            Saturday", "in 2 hours"...) into ``when`` and ``not_before``, and unclear ones are
            asked back; without it only now / tonight / next window are understood and other
            times are asked back.
        timezone: the policy's time zone, for wall-clock times (with ``now``).

    Returns:
        The request. ``intent`` is ``unknown`` when nothing was understood (answer with
        :func:`help_text`); ``needs_clarification`` holds a question when it must not be acted on.

    Raises:
        ValueError: ``now`` is naive or ``timezone`` is not an IANA time zone.
    """
    if not isinstance(text, str):
        return _unknown("Please send the request as text.")
    if len(text) > MAX_TEXT_LENGTH:
        log.info("intake.too_long", length=len(text))
        return _unknown(
            f"That message is too long ({len(text)} characters; at most {MAX_TEXT_LENGTH}). "
            "Please send one short request."
        )
    lex = _lexicon(
        tuple(sorted({h for h in known_hosts if isinstance(h, str) and h})),
        tuple(sorted({t for t in known_tags if isinstance(t, str) and t})),
        tuple(sorted({p for p in known_packages if isinstance(p, str) and p})),
    )
    normalised = _normalise(text)
    words = _tokenise(normalised, lex)
    items: list[_Item] = []
    for word in words:
        previous = next((it for it in reversed(items) if _is_content(it)), None)
        items.append(_classify(word, lex, previous))
    found = _extract(items, lex)
    decision = _decide(items, found)
    if now is not None and decision.intent in ACTION_INTENTS:
        _apply_when(found, read_when(normalised, now=now, timezone=timezone))
    request = _assemble(decision, found, items, normalised, lex)
    log.debug(
        "intake.parsed",
        length=len(text),
        intent=request.intent.value,
        confidence=request.confidence,
        clarify=request.needs_clarification is not None,
    )
    return request


def _assemble(
    decision: _Decision, found: _Found, items: Sequence[_Item], text: str, lex: _Lexicon
) -> ChatRequest:
    intent = decision.intent
    if intent is Intent.UNKNOWN:
        return _unknown(unparsed=found.unparsed)
    if intent in DECISION_INTENTS:
        question = _decision_question(decision, found, items)
        run_id = found.run_ids[0] if found.run_ids else None
        return ChatRequest(
            intent=intent,
            run_id=run_id,
            comment=_comment(text, items),
            confidence=_confidence(decision, found, question),
            needs_clarification=question,
        )
    is_action = intent in ACTION_INTENTS
    _attach_version(found, question=not is_action)
    if is_action:
        question = _action_question(decision, found, lex)
    else:
        question = _question_question(found, lex)
    tag_match = TagMatch.ALL if TagMatch.ALL in found.tag_joins else TagMatch.ANY
    if len(found.tag_joins) > 1:
        tag_match = TagMatch.ALL  # the narrower reading; a clarification is asked anyway
    # "all hosts in staging" means the staging hosts: the narrower reading wins. In a question,
    # "everything" and "anywhere" mean every host too (in a change they never widen the scope).
    wide = found.all_hosts or (not is_action and (found.everything or found.anywhere))
    all_hosts = wide and not (found.hosts or found.tags or found.groups)
    scope = Scope(
        hosts=tuple(found.hosts),
        tags=tuple(found.tags),
        tag_match=tag_match if len(found.tags) > 1 else TagMatch.ANY,
        groups=tuple(found.groups),
        all_hosts=all_hosts,
    )
    severity = None
    if found.severities and intent is not Intent.EXPLAIN:
        severity = min(found.severities, key=lambda s: s.rank)
    topic = _topic(items, found) if intent is Intent.STATUS else None
    fix_state = found.fix_states[0] if len(found.fix_states) == 1 else None
    if fix_state is None and found.holds and topic is StatusTopic.FINDINGS:
        fix_state = FixStatus.HELD  # "findings that are held", "vulns held back"
    return ChatRequest(
        intent=intent,
        scope=scope,
        packages=tuple(found.packages),
        cves=tuple(found.cves),
        severity_at_least=severity,
        kev_only=found.kev,
        security_only=found.security,
        overdue=found.overdue and not is_action,
        fix_state=None if is_action else fix_state,
        when=found.whens[0] if is_action and len(found.whens) == 1 else When.UNSPECIFIED,
        not_before=found.not_before if is_action and question is None else None,
        dry_run=decision.dry_run and is_action,
        run_id=found.run_ids[0] if found.run_ids else None,
        status_topic=topic,
        newest=found.newest,
        confidence=_confidence(decision, found, question),
        unparsed=tuple(found.unparsed[:_MAX_UNPARSED]),
        needs_clarification=question,
    )


def _apply_when(found: _Found, reading: WhenReading) -> None:
    """Take the time reading of :func:`read_when` in place of the grammar's own time words.

    The words of the phrases it read ("at 22:00", "on saturday", "in 2 hours") are no longer
    unknown, orderings or stray versions; any other such word still blocks the change.
    """
    if reading.clarification is not None:
        found.when_question = reading.clarification
        return
    if reading.when is When.UNSPECIFIED:
        return  # no time phrase it knows (a misspelt "imediately"): the grammar's reading stays
    found.whens = [reading.when]
    found.bad_times = []
    found.not_before = reading.not_before
    words = {w for phrase in reading.phrases for w in phrase.lower().split()}
    for seq in (found.unparsed, found.sequence, found.unknown_scope, found.orphan_versions):
        seq[:] = [w for w in seq if w.lower() not in words]
    found.to_versions[:] = [w for w in found.to_versions if w.lower() not in words]


def _attach_version(found: _Found, *, question: bool) -> None:
    """One package and one stray version: the version is that package's.

    "revert openssl on web-1 to 3.0.11-1" (a change: only a version written after "to") or
    "why is acme-web not at 1.1.0 on db-1" (a question: any stray version).
    """
    if len(found.packages) != 1 or found.packages[0].version is not None:
        return
    versions = found.orphan_versions if question else found.to_versions
    if len(found.orphan_versions) != 1 or len(versions) != 1:
        return
    spec = found.packages[0]
    try:
        found.packages[0] = PackageSpec(name=spec.name, version=versions[0])
    except ValueError:
        found.invalid.append(versions[0])
    found.orphan_versions.clear()
    found.to_versions.clear()


def _confidence(decision: _Decision, found: _Found, question: str | None) -> float:
    score = decision.strength - 0.1 * found.fuzzy - 0.05 * len(found.unparsed)
    if question is not None:
        score = min(score, 0.5)
    return round(max(0.05, min(1.0, score)), 2)


def help_text() -> str:
    """What the request parser understands, with examples (the answer to any unknown request)."""
    return f"""\
I understand these requests (one per message):

Change hosts (needs hosts, tags or "all hosts"; I ask again when something is unclear):
  patch the critical ones on staging tonight
  upgrade acme-web to 1.1.0 on staging now        (also: acme-web=1.1.0)
  install security updates on web-1 and db-1 in the next maintenance window
  update openssl on the prod web servers          (hosts tagged both prod and web)
  roll back acme-web on web-2                     (also: revert, downgrade, undo)
  dry run: patch high and above on all hosts      (also: simulate, preview, plan only,
                                                   what would happen if ...)

Questions:
  which hosts are exposed to CVE-2024-6387?
  which hosts are affected by the newest openssl advisory?
  what security updates are pending on db-1?  /  whats pending on the prod boxes
  any KEV stuff on the fleet?  /  critical findings on staging with no fix yet
  show me everything that's overdue  /  which hosts are out of SLA?
  which hosts need a reboot?  /  what packages are on hold?  /  how fresh are the feeds?
  why is web-2 non-compliant?  /  why wasn't db-1 upgraded to acme-web 1.1.0?
  what happened the last time we upgraded openssl?  /  any incidents on db-1?
  show pending approvals  /  list runs  /  compliance summary for prod
  status of {_EXAMPLE_RUN_ID}  /  what did {_EXAMPLE_RUN_ID} do?

Decisions on a run:
  approve {_EXAMPLE_RUN_ID}
  reject {_EXAMPLE_RUN_ID} because the canary failed

Words I know: severities (critical, high/important, medium, low, "and above"), KEV
("known exploited"), "security", times (now, asap, tonight, next window; with the chat's clock
also at 22:00, on Saturday, tomorrow morning), CVE ids (CVE-2024-6387).
"""

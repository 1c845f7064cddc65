"""Deciding the intent from the classified words, and the topic and comment that go with it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from patchpilot.agents.intake.extraction import _Found, _is_content, _next_content
from patchpilot.agents.intake.lexicon import (
    _ANY_VERBS,
    _APPROVAL_WORDS,
    _HISTORY_CUES,
    _LEADING,
    _NOUN_AFTER_VERB,
    _STATUSISH,
    _TOPIC_ORDER,
    _VERBS,
    _Cat,
)
from patchpilot.agents.intake.tokens import _Item, _Kind
from patchpilot.core.intents import (
    MAX_COMMENT_LENGTH,
    Intent,
    StatusTopic,
)


@dataclass(frozen=True, slots=True)
class _Decision:
    intent: Intent
    strength: float
    dry_run: bool = False
    conflict: str | None = None
    hypothetical: bool = False  # "what would happen if ...", "should we ..."


def _action_of(cats: Iterable[_Cat]) -> Intent | None:
    kinds = {
        Intent.PATCH if c in {_Cat.PATCH_V, _Cat.PATCH_X} else Intent.ROLLBACK
        for c in cats
        if c in _ANY_VERBS
    }
    if Intent.ROLLBACK in kinds:
        return Intent.ROLLBACK
    return Intent.PATCH if kinds else None


def _decide(items: Sequence[_Item], found: _Found) -> _Decision:
    """Pick the intent (see the grammar's rule order in the module docstring)."""
    kws = [it for it in items if it.kind is _Kind.KW]
    cats = [it.cat for it in kws if it.cat is not None]
    catset = set(cats)
    words = {it.value for it in kws}
    leads = [it for it in kws if it.cat in _LEADING]
    lead = leads[0] if leads else None
    lead_i = items.index(lead) if lead is not None else -1
    nxt = _next_content(items, lead_i) if lead is not None else None
    noun_after = nxt is not None and items[nxt].value in _NOUN_AFTER_VERB
    is_question = lead is not None and lead.cat in {_Cat.QLEAD, _Cat.AUX}
    base_verbs = [c for c in cats if c in _VERBS]

    decision_lead = lead is not None and lead.cat in {_Cat.APPROVE_V, _Cat.REJECT_V}
    if _Cat.EXPLAIN in catset or ("reason" in words and not decision_lead):
        return _Decision(Intent.EXPLAIN, 0.9)
    if lead is not None and lead.cat in {_Cat.APPROVE_V, _Cat.REJECT_V}:
        other = _Cat.REJECT_V if lead.cat is _Cat.APPROVE_V else _Cat.APPROVE_V
        intent = Intent.APPROVE if lead.cat is _Cat.APPROVE_V else Intent.REJECT
        conflict = "approve or reject" if other in _before_comment(items) else None
        return _Decision(intent, 0.95, conflict=conflict)
    if _Cat.GOAHEAD in catset and found.run_ids and not base_verbs:
        return _Decision(Intent.APPROVE, 0.8)
    if lead is not None and lead.cat in _VERBS and not noun_after:
        intent = Intent.PATCH if lead.cat is _Cat.PATCH_V else Intent.ROLLBACK
        later = {c for c in cats if c in _ANY_VERBS}
        conflict = None
        if intent is Intent.PATCH and later & {_Cat.ROLLBACK_V, _Cat.ROLLBACK_X}:
            conflict = "patch or roll back"
        return _Decision(intent, 0.95, dry_run=found.dry, conflict=conflict)
    about_feeds = any(it.cat is _Cat.STATUS and it.payload == "feeds" for it in kws)
    if about_feeds and not base_verbs:  # "when were the feeds last updated": not history
        return _Decision(Intent.STATUS, 0.85)
    hypothetical = catset & {_Cat.WHATWOULD, _Cat.SHOULD} or (
        lead is not None and lead.cat is _Cat.DRYRUN
    )
    action = _action_of(cats)
    if hypothetical and action is not None:
        return _Decision(
            action,
            0.85,
            dry_run=True,
            conflict=_verb_conflict(cats),
            hypothetical=bool(catset & {_Cat.WHATWOULD, _Cat.SHOULD}),
        )
    history = bool(words & _HISTORY_CUES) or (
        _Cat.LAST in catset and action is not None and not found.run_ids
    )
    if history and not (found.run_ids and "whathappened" in words):
        return _Decision(Intent.HISTORY, 0.9)
    if lead is not None and lead.value == "did" and action is not None and not found.run_ids:
        return _Decision(Intent.HISTORY, 0.75)
    if is_question:
        return _question_intent(lead, cats, found, action=action, base_verbs=bool(base_verbs))
    if base_verbs and action is not None and not noun_after:
        return _Decision(action, 0.85, dry_run=found.dry, conflict=_verb_conflict(cats))
    if items and items[0].value == "get" and action is not None:  # "get db-1 patched tonight"
        return _Decision(action, 0.8, dry_run=found.dry, conflict=_verb_conflict(cats))
    if _Cat.EXPOSURE in catset:
        return _Decision(Intent.EXPOSURE, 0.8)
    first = next((it for it in items if _is_content(it)), None)
    if first is not None and first.value in {"reboot", "restart"}:
        return _Decision(Intent.UNKNOWN, 0.0)  # "reboot db-1" is a command we do not take
    # Findings filters alone ("any KEV stuff on the fleet?", "critical ones on db-1?").
    filters_only = action is None and bool(found.kev or found.severities)
    if catset & _STATUSISH or found.run_ids or filters_only:
        return _Decision(Intent.STATUS, 0.75)
    if found.cves:
        return _Decision(Intent.EXPOSURE, 0.6)
    return _Decision(Intent.UNKNOWN, 0.0)


def _question_intent(
    lead: _Item | None,
    cats: Sequence[_Cat],
    found: _Found,
    *,
    action: Intent | None,
    base_verbs: bool,
) -> _Decision:
    """The intent of a question (a message led by which/what/show/is/does ...)."""
    catset = set(cats)
    about_hosts = _Cat.SCOPE_NOUN in catset or bool(found.hosts)
    specific = bool(found.cves or found.packages or found.severities or found.kev)
    which_hosts = lead is not None and lead.value in {"which", "what", "who"} and about_hosts
    if _Cat.EXPOSURE in catset or (which_hosts and specific):
        return _Decision(Intent.EXPOSURE, 0.9)
    if catset & _STATUSISH or found.run_ids:
        return _Decision(Intent.STATUS, 0.85)
    if found.cves or (about_hosts and specific) or found.newest:
        return _Decision(Intent.EXPOSURE, 0.75)
    if base_verbs and action is not None:
        return _Decision(action, 0.7, dry_run=True, conflict=_verb_conflict(cats))
    if about_hosts and action is not None:  # "what needs patching on web-2?"
        return _Decision(Intent.EXPOSURE, 0.7)
    if action is None and (found.kev or found.severities):  # "what kev stuff is there?"
        return _Decision(Intent.STATUS, 0.75)
    return _Decision(Intent.UNKNOWN, 0.0)


def _verb_conflict(cats: Iterable[_Cat]) -> str | None:
    present = set(cats)
    patch = present & {_Cat.PATCH_V}
    rollback = present & {_Cat.ROLLBACK_V}
    return "patch or roll back" if patch and rollback else None


def _before_comment(items: Sequence[_Item]) -> set[_Cat]:
    cats: set[_Cat] = set()
    for item in items:
        if item.kind is _Kind.RUNID or item.cat is _Cat.COMMENT:
            break
        if item.cat is not None:
            cats.add(item.cat)
    return cats


def _topic(items: Sequence[_Item], found: _Found) -> StatusTopic:
    """What a status question is about (see :data:`_TOPIC_ORDER` for which one wins)."""
    topics: set[StatusTopic] = set()
    approvals_named = False
    for it in items:
        if it.cat in {_Cat.STATUS, _Cat.OVERDUE}:
            topics.add(StatusTopic(it.payload))
        elif it.cat is _Cat.REBOOT:
            topics.add(StatusTopic.REBOOT)
        elif it.cat is _Cat.HOLDWORD:
            topics.add(StatusTopic.HOLDS)
        elif it.cat is _Cat.FIXSTATE:
            topics.add(StatusTopic.FINDINGS)
        elif it.cat is _Cat.APPROVE_V:  # "waiting for sign off"
            topics.add(StatusTopic.APPROVALS)
        approvals_named = approvals_named or it.cat is _Cat.APPROVE_V or it.value in _APPROVAL_WORDS
    if any(it.cat is _Cat.PATCH_X for it in items) and not approvals_named:
        # "updates waiting", "pending patches": updates to install, not approvals
        topics.discard(StatusTopic.APPROVALS)
        topics.add(StatusTopic.PENDING)
    if StatusTopic.HOLDS in topics and StatusTopic.FINDINGS in topics:
        topics.discard(StatusTopic.HOLDS)  # "vulns that are held": findings in fix state held
    if found.run_ids:
        topics.add(StatusTopic.RUNS)
    if not topics and (found.kev or found.severities or found.cves):
        topics.add(StatusTopic.FINDINGS)
    for topic in _TOPIC_ORDER:
        if topic in topics:
            return topic
    return StatusTopic.GENERAL


def _comment(text: str, items: Sequence[_Item]) -> str | None:
    """Free text after the run id or a "because"/"reason" marker, for approve/reject."""
    cut: int | None = None
    for i, item in enumerate(items):
        if item.kind is _Kind.RUNID or item.cat is _Cat.COMMENT:
            cut = i
            break
    if cut is None:
        return None
    rest = list(items[cut:]) if items[cut].cat is _Cat.COMMENT else list(items[cut + 1 :])
    while rest and rest[0].cat in {_Cat.AND, _Cat.COMMENT}:
        rest = rest[1:]  # ", reason: ..." / "because ..." -> the reason itself
    if not rest or all(not _is_content(it) or it.cat is _Cat.AND for it in rest):
        return None
    comment = " ".join(text[rest[0].start :].split()).strip(" :-,.")
    return comment[:MAX_COMMENT_LENGTH] or None

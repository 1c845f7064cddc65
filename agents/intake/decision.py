"""Deciding the intent from the classified words, and the topic and comment that go with it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from patchpilot.agents.intake.extraction import _Found, _is_content, _next_content
from patchpilot.agents.intake.lexicon import (
    _ANY_VERBS,
    _HISTORY_CUES,
    _LEADING,
    _NOUN_AFTER_VERB,
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
    about_hosts = _Cat.SCOPE_NOUN in catset or bool(found.hosts)
    specific = bool(found.cves or found.packages or found.severities or found.kev)
    which_hosts = lead is not None and lead.value in {"which", "what", "who"} and about_hosts
    if is_question:
        if _Cat.EXPOSURE in catset or (which_hosts and specific):
            return _Decision(Intent.EXPOSURE, 0.9)
        if _Cat.STATUS in catset or found.run_ids:
            return _Decision(Intent.STATUS, 0.85)
        if found.cves or (about_hosts and specific) or found.newest:
            return _Decision(Intent.EXPOSURE, 0.75)
        if base_verbs and action is not None:
            return _Decision(action, 0.7, dry_run=True, conflict=_verb_conflict(cats))
        if about_hosts and action is not None:  # "what needs patching on web-2?"
            return _Decision(Intent.EXPOSURE, 0.7)
        return _Decision(Intent.UNKNOWN, 0.0)
    if base_verbs and action is not None and not noun_after:
        return _Decision(action, 0.85, dry_run=found.dry, conflict=_verb_conflict(cats))
    if items and items[0].value == "get" and action is not None:  # "get db-1 patched tonight"
        return _Decision(action, 0.8, dry_run=found.dry, conflict=_verb_conflict(cats))
    if _Cat.EXPOSURE in catset:
        return _Decision(Intent.EXPOSURE, 0.8)
    if _Cat.STATUS in catset or found.run_ids:
        return _Decision(Intent.STATUS, 0.75)
    if found.cves:
        return _Decision(Intent.EXPOSURE, 0.6)
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
    topics = {StatusTopic(it.payload) for it in items if it.cat is _Cat.STATUS}
    if any(it.cat is _Cat.PATCH_X for it in items) and not any(
        it.value in {"approval", "approvals"} for it in items
    ):
        topics.discard(StatusTopic.APPROVALS)  # "pending updates" are findings, not approvals
        topics.add(StatusTopic.FINDINGS)
    if found.run_ids:
        topics.add(StatusTopic.RUNS)
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

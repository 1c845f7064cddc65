"""Extracting the request's entities from the classified words: hosts, tags, packages,
versions, CVEs, severities, times and run ids, each validated before it is kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from patchpilot.agents.intake.lexicon import _INCIDENT_CUES, _PKG_INTRO, _QUESTION_ONLY, _Cat
from patchpilot.agents.intake.tokens import _HOST_SHAPE_RE, _Item, _Kind, _Lexicon
from patchpilot.core.errors import UnsafeArgumentError
from patchpilot.core.intents import (
    PackageSpec,
    TagMatch,
    When,
)
from patchpilot.core.models import Ecosystem, FixStatus, Severity
from patchpilot.core.validate import validate_hostname, validate_package_name, validate_version


@dataclass
class _Found:
    """Everything pulled out of the items, before the intent decides what is kept."""

    hosts: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    tag_joins: set[TagMatch] = field(default_factory=set)
    groups: list[str] = field(default_factory=list)
    all_hosts: bool = False
    packages: list[PackageSpec] = field(default_factory=list)
    cves: list[str] = field(default_factory=list)
    severities: list[Severity] = field(default_factory=list)
    kev: bool = False
    security: bool = False
    overdue: bool = False
    fix_states: list[FixStatus] = field(default_factory=list)
    holds: bool = False
    anywhere: bool = False
    everything: bool = False
    question_only: list[str] = field(default_factory=list)
    """Words that only make sense in a question (a change naming one is asked back)."""
    newest: bool = False
    whens: list[When] = field(default_factory=list)
    bad_times: list[str] = field(default_factory=list)
    not_before: datetime | None = None
    when_question: str | None = None
    """:func:`~patchpilot.agents.intake.when.read_when`'s question about unclear time words."""
    dry: bool = False
    run_ids: list[str] = field(default_factory=list)
    unknown_hosts: list[str] = field(default_factory=list)
    unknown_packages: list[str] = field(default_factory=list)
    unknown_scope: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    orphan_versions: list[str] = field(default_factory=list)
    to_versions: list[str] = field(default_factory=list)
    """Orphan versions written right after "to"/"version" ("... on web-1 to 1.2.0")."""
    negations: list[str] = field(default_factory=list)
    sequence: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)
    unparsed: list[str] = field(default_factory=list)
    fuzzy: int = 0


def _add(seq: list[str], value: str) -> None:
    if value not in seq:
        seq.append(value)


def _is_content(item: _Item) -> bool:
    return not (item.kind is _Kind.KW and item.cat is _Cat.STOP)


def _next_content(items: Sequence[_Item], i: int) -> int | None:
    for j in range(i + 1, len(items)):
        if _is_content(items[j]):
            return j
    return None


def _prev_content(items: Sequence[_Item], i: int) -> int | None:
    for j in range(i - 1, -1, -1):
        if _is_content(items[j]):
            return j
    return None


def _valid_name(name: str) -> bool:
    try:
        validate_package_name(name, Ecosystem.DEBIAN)
    except UnsafeArgumentError:
        return False
    return True


def _valid_version(version: str) -> bool:
    try:
        validate_version(version, Ecosystem.DEBIAN)
    except UnsafeArgumentError:
        return False
    return True


def _version_after(items: Sequence[_Item], i: int, used: set[int]) -> str | None:
    """A version following the package at ``i``: ``PKG [to] [version] 1.2``; marks it used."""
    j = _next_content(items, i)
    path: list[int] = []
    while j is not None and items[j].cat in {_Cat.TO, _Cat.VERSION_WORD} and len(path) < 2:
        path.append(j)
        j = _next_content(items, j)
    if j is None or items[j].kind not in {_Kind.VERSION, _Kind.NUMBER}:
        return None
    if items[j].kind is _Kind.NUMBER and not path:
        return None
    used.update(path)
    used.add(j)
    return items[j].value


def _add_package(found: _Found, name: str, version: str | None, raw: str) -> None:
    if not _valid_name(name):
        _add(found.invalid, raw)
        return
    if version is not None and not _valid_version(version):
        _add(found.invalid, version)
        return
    spec = PackageSpec(name=name, version=version)
    if spec not in found.packages:
        found.packages.append(spec)


def _extract(items: Sequence[_Item], lex: _Lexicon) -> _Found:
    """Walk the items once, collecting entities and filters with their context."""
    found = _Found()
    used: set[int] = set()
    scope_ctx = False
    pkg_ctx = False
    pkg_chain = False  # just after a package: "openssl and nginx" continues the list
    last_tag: int | None = None
    for i, item in enumerate(items):
        found.fuzzy += item.fuzzy
        if i in used:
            continue
        kind, cat = item.kind, item.cat
        keeps_scope = kind in {_Kind.HOST, _Kind.TAG} or cat in {_Cat.AND, _Cat.STOP}
        keeps_pkg = cat is _Cat.STOP
        if kind is _Kind.RUNID:
            _add(found.run_ids, item.value)
        elif kind is _Kind.CVE:
            _add(found.cves, item.value)
        elif kind is _Kind.HOST:
            _add(found.hosts, item.value)
        elif kind is _Kind.TAG:
            if last_tag is not None and item.value not in found.tags:
                between = items[last_tag + 1 : i]
                joined = any(b.cat is _Cat.AND for b in between)
                found.tag_joins.add(TagMatch.ANY if joined else TagMatch.ALL)
            _add(found.tags, item.value)
            last_tag = i
        elif kind in {_Kind.PIN, _Kind.PKG, _Kind.VERSION, _Kind.NUMBER}:
            _package_or_version(found, items, i, used)
        elif kind is _Kind.WEIRD:
            _add(found.unparsed, item.raw[:40])
        elif kind is _Kind.WORD:
            _word(found, items, i, lex, used, scope_ctx=scope_ctx, pkg_ctx=pkg_ctx)
            keeps_scope = True
        elif kind is _Kind.KW:
            _keyword(found, items, i, used)
        if cat in {_Cat.PREP, _Cat.TO}:
            scope_ctx = True
        elif not keeps_scope:
            scope_ctx = False
        if cat in _PKG_INTRO or (cat is _Cat.AND and pkg_chain):
            pkg_ctx = True
        elif not keeps_pkg:
            pkg_ctx = False
        if kind in {_Kind.PKG, _Kind.PIN}:
            pkg_chain = True
        elif cat not in {_Cat.AND, _Cat.STOP}:
            pkg_chain = False
    return found


def _package_or_version(found: _Found, items: Sequence[_Item], i: int, used: set[int]) -> None:
    """A known package (with the version that follows it), a pin, or a stray version."""
    item = items[i]
    if item.kind is _Kind.PIN:
        if item.payload == "unknown":
            (found.unknown_packages if _valid_name(item.value) else found.invalid).append(
                item.value
            )
        else:
            _add_package(found, item.value, item.version, item.raw)
    elif item.kind is _Kind.PKG:
        _add_package(found, item.value, _version_after(items, i, used), item.raw)
    else:
        prev = _prev_content(items, i)
        after_to = prev is not None and items[prev].cat in {_Cat.TO, _Cat.VERSION_WORD}
        if item.kind is _Kind.VERSION or after_to:
            _add(found.orphan_versions, item.value)
            if after_to:
                _add(found.to_versions, item.value)
        else:
            _add(found.unparsed, item.raw)


_CHOICE_KINDS: Final = frozenset(
    {_Kind.HOST, _Kind.TAG, _Kind.PKG, _Kind.PIN, _Kind.VERSION, _Kind.NUMBER, _Kind.WORD}
)


def _between_entities(items: Sequence[_Item], i: int) -> bool:
    """True for "web-1 or web-2" / "1.1.0 or 1.2.0" (a choice), not "high or critical"."""
    before, after = _prev_content(items, i), _next_content(items, i)
    return (
        before is not None
        and after is not None
        and items[before].kind in _CHOICE_KINDS
        and items[after].kind in _CHOICE_KINDS
    )


def _keyword(found: _Found, items: Sequence[_Item], i: int, used: set[int]) -> None:
    """Record what a filter, time, scope or negation keyword says."""
    item = items[i]
    cat = item.cat
    if cat is _Cat.SEVERITY:
        found.severities.append(Severity(item.payload))
    elif cat is _Cat.KEV:
        found.kev = True
    elif cat is _Cat.SECURITY:
        found.security = True
    elif cat in _QUESTION_ONLY:
        _question_only(found, item)
    elif cat is _Cat.HISTORY and item.value in _INCIDENT_CUES:
        _add(found.question_only, item.raw)
    elif cat is _Cat.STATUS and item.payload == "feeds":
        _add(found.question_only, item.raw)  # "update the feeds" is not a patch
    elif cat is _Cat.ALLPKGS and item.value == "everything":
        found.everything = True
    elif cat is _Cat.NEWEST:
        found.newest = True
    elif cat is _Cat.TIME:
        when = When(item.payload)
        if when not in found.whens:
            found.whens.append(when)
    elif cat is _Cat.TIME_BAD:
        _add(found.bad_times, item.raw)
    elif cat is _Cat.DRYRUN:
        found.dry = True
    elif cat is _Cat.FLEET:
        found.all_hosts = True
    elif cat in {_Cat.ALL, _Cat.EVERY}:
        nxt = _next_content(items, i)
        if nxt is not None and items[nxt].cat is _Cat.SCOPE_NOUN:  # "all hosts", "every server"
            found.all_hosts = True
    elif cat is _Cat.NEGATION:
        _add(found.negations, item.raw)
    elif cat is _Cat.SEQUENCE or (item.value == "when" and _prev_content(items, i) is not None):
        _add(found.sequence, item.raw)  # "when" after the start is a condition, not a question
    elif cat is _Cat.UNSUPPORTED:
        _add(found.unparsed, item.raw)
    elif item.value in {"or", "nor"} and _between_entities(items, i):
        _add(found.choices, item.raw)
    elif cat is _Cat.GROUP_NOUN:
        _group(found, items, i, used)


def _question_only(found: _Found, item: _Item) -> None:
    """A filter or topic of questions: recorded, and remembered as blocking any change."""
    _add(found.question_only, item.raw)
    if item.cat is _Cat.OVERDUE:
        found.overdue = True
    elif item.cat is _Cat.FIXSTATE:
        state = FixStatus(item.payload)
        if state not in found.fix_states:
            found.fix_states.append(state)
    elif item.cat is _Cat.HOLDWORD:
        found.holds = True
    elif item.cat is _Cat.ANYWHERE:
        found.anywhere = True


def _group(found: _Found, items: Sequence[_Item], i: int, used: set[int]) -> None:
    """``group dmz`` / ``the dmz group``: take the unclassified word beside ``group``."""
    for j in (_next_content(items, i), _prev_content(items, i)):
        if j is None or j in used:
            continue
        other = items[j]
        if other.kind is _Kind.TAG:
            return
        if other.kind is _Kind.WORD and re.fullmatch(r"[a-z0-9][a-z0-9_.-]{0,62}", other.value):
            _add(found.groups, other.value)
            used.add(j)
            if other.value in found.unparsed:
                found.unparsed.remove(other.value)
            if other.value in found.unknown_scope:
                found.unknown_scope.remove(other.value)
            return


def _word(
    found: _Found,
    items: Sequence[_Item],
    i: int,
    lex: _Lexicon,
    used: set[int],
    *,
    scope_ctx: bool,
    pkg_ctx: bool,
) -> None:
    """Decide what an unrecognised word is from its context (see the module grammar)."""
    item = items[i]
    word = item.value
    nxt = _next_content(items, i)
    nxt_item = items[nxt] if nxt is not None else None
    host_shaped = bool(_HOST_SHAPE_RE.fullmatch(word))
    before_version = nxt_item is not None and (
        nxt_item.kind is _Kind.VERSION
        or nxt_item.cat is _Cat.PKG_NOUN
        or (nxt_item.cat is _Cat.TO and _version_after(items, i, set()) is not None)
    )
    if pkg_ctx or before_version:
        if host_shaped and lex.has_hosts and not before_version:
            _add(found.unknown_hosts, word)
        elif lex.has_packages:
            (found.unknown_packages if _valid_name(word) else found.invalid).append(word)
        else:
            _add_package(found, word, _version_after(items, i, used), item.raw)
        return
    if nxt_item is not None and nxt_item.cat is _Cat.GROUP_NOUN:
        return  # "the dmz group": handled by _group
    before_scope_noun = nxt_item is not None and nxt_item.cat is _Cat.SCOPE_NOUN
    if scope_ctx or before_scope_noun:
        if lex.has_hosts and host_shaped:
            _add(found.unknown_hosts, word)
        elif not lex.has_hosts and scope_ctx and not before_scope_noun and _valid_host(word):
            _add(found.hosts, word)
        elif not lex.has_tags and before_scope_noun:
            _add(found.tags, word)
        else:
            _add(found.unknown_scope, word)
            _add(found.unparsed, item.raw)
        return
    if lex.has_hosts and host_shaped:
        _add(found.unknown_hosts, word)
        return
    _add(found.unparsed, item.raw)


def _valid_host(word: str) -> bool:
    try:
        validate_hostname(word)
    except UnsafeArgumentError:
        return False
    return True

"""Choosing hosts: a target (host, group, tag or ``local``) narrowed by an Ansible ``--limit``.

The limit language is Ansible's host-pattern language:

* ``all`` or ``*``: every host;
* a host name, a group name or a tag;
* a glob (``web*``, ``db-?``, ``[ab]*``) or, with a leading ``~``, a regular expression
  (``~web0[12]``, matched from the start of the name); a glob or regex is tried against group
  and tag names and, when none matches or the pattern looks like a host name (holds ``.``,
  ``?``, ``*`` or ``[``), against host names too;
* terms separated by ``,`` (or ``:`` when there is no comma), combined as Ansible does: first
  the union of the plain terms (``all`` when there is none), then each ``&term`` intersects,
  then each ``!term`` excludes;
* a subscript on a non-regex term picks by position in inventory order: ``web[0]``, ``web[-1]``,
  ``web[0:2]`` (inclusive), ``web[1:]``.

Unlike Ansible, a term that matches nothing is an error (:class:`UnknownTargetError`), not a
warning: a mistyped ``!prod-db`` must not silently select the production database. The result is
always in inventory order.

**Bounded work.** A limit is untrusted text (it may come from a chat line or a CI variable), so
it is bounded before it is evaluated: at most :data:`MAX_LIMIT_LENGTH` characters, no control
characters, each ``~regex`` at most :data:`MAX_REGEX_LENGTH` characters. Regular expressions
run on RE2 (``google-re2``), whose matching time is linear in the pattern and the name and
whose memory is capped: a pattern that backtracks catastrophically in Python's ``re`` (such as
``~(a+)+$``) cannot hang a selection. RE2 has no look-around and no back-references; such a
pattern (like any invalid or too large one) is refused with a :class:`ConfigError` (exit 2)
that says why. Globs keep :mod:`fnmatch` semantics (its translation has no exponential case).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Protocol

import re2

from patchpilot.core.errors import ConfigError, InvalidInputError, UnknownTargetError
from patchpilot.core.inventory._graph import LOCAL_ADDRESS
from patchpilot.core.inventory._model import Inventory
from patchpilot.core.models import Host
from patchpilot.core.text import bounded

__all__ = [
    "LOCAL_HOST",
    "LOCAL_TARGET",
    "MAX_LIMIT_LENGTH",
    "MAX_REGEX_LENGTH",
    "select_hosts",
    "split_patterns",
]

#: The target naming the machine patchpilot runs on.
LOCAL_TARGET: Final = "local"
#: The built-in local host, used when the inventory does not define ``local`` itself.
LOCAL_HOST: Final = Host(name=LOCAL_TARGET, address=LOCAL_ADDRESS, transport="local")

#: Longest ``--limit`` expression (or target) accepted, in characters.
MAX_LIMIT_LENGTH: Final = 4096
#: Longest ``~regex`` term accepted, in characters (without the ``~``).
MAX_REGEX_LENGTH: Final = 512
_RE2_MAX_MEM: Final = 8 << 20  # bytes RE2 may use for one compiled pattern

_ALL_WORDS: Final = frozenset({"all", "*"})
_LIST_SHOWN: Final = 10
# Patchpilot's own patterns run on RE2 too: linear time whatever the (bounded) input.
_SPLIT_RE: Final = re2.compile(r"(?:[^\s:\[\]]|\[[^\]]*\])+")
_SINGLE_ADDRESS_RE: Final = re2.compile(r"^(?:\[.+\]:[0-9]+|(?:[^:\[\]]|\[[^\]]*\])*:[0-9]+)$")
_SUBSCRIPT_RE: Final = re2.compile(r"^(.+)\[(?:(-?[0-9]+)|([0-9]+)([:-])([0-9]*))\]$")
_HOSTLIKE_CHARS: Final = (".", "?", "*", "[")


class _Matcher(Protocol):
    """What a compiled glob (``re``) or ``~regex`` (RE2) offers: an anchored-at-start match."""

    def match(self, text: str, /) -> object: ...


def _re2_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # RE2 would print its own copy of the error to stderr
    options.max_mem = _RE2_MAX_MEM
    return options


_RE2_OPTIONS: Final = _re2_options()


def _check_length(text: str, *, what: str, key: str) -> None:
    """Refuse over-long or control-character text before any pattern work (exit 2)."""
    try:
        bounded(text, what=what, max_length=MAX_LIMIT_LENGTH, newlines=False)
    except InvalidInputError as exc:
        raise ConfigError(f"{what} refused: {exc.reason}", key=key) from None


def split_patterns(pattern: str) -> list[str]:
    """Split a limit expression into terms, as Ansible's ``split_host_pattern`` does.

    With a comma, terms are comma-separated. Without one, ``:`` separates terms unless the whole
    expression is an IPv6 address or a ``host:port``; a ``[x:y]`` bracket is never split.

    Args:
        pattern: the expression, e.g. ``"web*:&prod:!web3"`` or ``"web1, db1"``.

    Returns:
        The non-empty terms, stripped, in order.

    Raises:
        ConfigError: when brackets are unbalanced (Ansible would silently drop them), or the
            expression is longer than :data:`MAX_LIMIT_LENGTH` or holds a control character.
    """
    _check_length(pattern, what="limit", key="limit")
    if "," in pattern:
        parts = pattern.split(",")
    else:
        text = pattern.strip()
        single = bool(_SINGLE_ADDRESS_RE.match(text))
        if not single and ":" in text:
            try:
                ipaddress.IPv6Address(text)
                single = True
            except ValueError:
                single = False
        if not single and text.count("[") != text.count("]"):
            raise ConfigError(f"unbalanced '[' or ']' in limit {pattern!r}", key="limit")
        parts = [text] if single else _SPLIT_RE.findall(text)
    return [part.strip() for part in parts if part.strip()]


def _order(terms: Sequence[str]) -> list[str]:
    regular = [t for t in terms if t[0] not in "&!"]
    intersect = [t for t in terms if t[0] == "&"]
    exclude = [t for t in terms if t[0] == "!"]
    return (regular or ["all"]) + intersect + exclude


def _matcher(term: str) -> _Matcher:
    """Compile a glob (``re``, via :func:`fnmatch.translate`) or a ``~regex`` (RE2).

    Raises:
        ConfigError: the pattern is too long, invalid, uses what RE2 lacks (look-around,
            back-references) or needs more than RE2's memory cap.
    """
    if not term.startswith("~"):
        try:
            return re.compile(fnmatch.translate(term))
        except re.error as exc:
            raise ConfigError(f"invalid pattern {term!r}: {exc}", key="limit") from exc
    expression = term[1:]
    if len(expression) > MAX_REGEX_LENGTH:
        raise ConfigError(
            f"regular expression {term[:40]!r}… is {len(expression)} characters long, "
            f"at most {MAX_REGEX_LENGTH} are accepted",
            key="limit",
        )
    try:
        return re2.compile(expression, options=_RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ConfigError(
            f"invalid pattern {term!r}: {reason} (regular expressions use RE2 syntax: "
            "no look-around, no back-references)",
            key="limit",
        ) from None


def _split_subscript(term: str) -> tuple[str, tuple[int, int | None] | None]:
    if term.startswith("~"):
        return term, None
    match = _SUBSCRIPT_RE.match(term)
    if not match:
        return term, None
    base, index, start, sep, end = match.groups()
    if index is not None:
        return base, (int(index), None)
    if sep == "-":
        raise ConfigError(f"use [x:y] instead of [x-y] in {term!r}", key="limit")
    return base, (int(start), int(end) if end else -1)


class _Universe:
    """The hosts a limit is evaluated against, with their labels (groups and tags)."""

    def __init__(self, inventory: Inventory, hosts: Sequence[Host]) -> None:
        self.hosts = {host.name: host for host in hosts}
        self.order = {name: index for index, name in enumerate(self.hosts)}
        labels: dict[str, set[str]] = {}
        for source in (inventory.groups, inventory.tags):
            for label, members in source.items():
                labels.setdefault(label, set()).update(m for m in members if m in self.hosts)
        ungrouped = {name for name, host in self.hosts.items() if not host.groups}
        if ungrouped and "ungrouped" not in labels:
            labels["ungrouped"] = ungrouped
        self.labels: Mapping[str, set[str]] = labels

    def sort(self, names: Iterable[str]) -> list[str]:
        return sorted(set(names), key=self.order.__getitem__)

    def match(self, term: str) -> list[str]:
        """Names matched by one term without its ``&``/``!`` prefix, in inventory order."""
        if term in self.hosts:
            return [term]
        if term in _ALL_WORDS:
            return list(self.hosts)
        expr, subscript = _split_subscript(term)
        if expr in _ALL_WORDS:
            found = list(self.hosts)
        else:
            regex = _matcher(expr)
            labels = [label for label in self.labels if regex.match(label)]
            found = [name for label in labels for name in self.labels[label]]
            if not labels or expr.startswith("~") or any(c in expr for c in _HOSTLIKE_CHARS):
                found += [name for name in self.hosts if regex.match(name)]
            found = self.sort(found)
        if subscript is None or not found:
            return found
        start, end = subscript
        try:
            if end is None:
                return [found[start]]
            return found[start : (len(found) if end == -1 else end + 1)]
        except IndexError:
            raise UnknownTargetError(
                f"subscript in {term!r} is out of range: it matches {len(found)} host(s)",
                key="limit",
            ) from None


def _available(inventory: Inventory) -> str:
    def shown(names: Sequence[str]) -> str:
        if not names:
            return "(none)"
        more = len(names) - _LIST_SHOWN
        text = ", ".join(names[:_LIST_SHOWN])
        return f"{text}, … ({more} more)" if more > 0 else text

    labels = [t for t in inventory.tags if t not in inventory.groups]
    return (
        f"hosts: {shown(list(inventory.hosts))}; groups: {shown(list(inventory.groups))}; "
        f"tags: {shown(labels)}"
    )


def _resolve_target(inventory: Inventory, target: str | None) -> list[Host]:
    if target is None or target in _ALL_WORDS:
        return list(inventory.hosts.values())
    if target in inventory.hosts:
        return [inventory.hosts[target]]
    if target in inventory.groups or target in inventory.tags:
        wanted = {*inventory.groups.get(target, ()), *inventory.tags.get(target, ())}
        if not wanted:
            raise UnknownTargetError(
                f"group {target!r} has no hosts", file=inventory.source, key="target"
            )
        return [host for host in inventory.hosts.values() if host.name in wanted]
    if target == LOCAL_TARGET:
        return [LOCAL_HOST]
    hint = " (use --limit for patterns)" if any(c in target for c in "*?[~,:&!") else ""
    reason = (
        f"target {target!r} is not a host, group or tag of the inventory{hint}; "
        f"available {_available(inventory)}"
    )
    raise UnknownTargetError(reason, file=inventory.source, key="target")


def select_hosts(
    inventory: Inventory, target: str | None = None, limit: str | None = None
) -> list[Host]:
    """Select the hosts to act on.

    Args:
        inventory: the loaded inventory.
        target: a host name, a group name, a tag, None/``all`` for every host, or ``local``:
            when the inventory has no host, group or tag called ``local``, a built-in host
            with transport ``local`` and address 127.0.0.1.
        limit: an Ansible host pattern narrowing the target (see the module docstring), or
            None.

    Returns:
        The selected hosts, in inventory order, without duplicates.

    Raises:
        UnknownTargetError: when the target is unknown, a limit term matches nothing, or the
            limit leaves no host of the target; the message lists what is available.
        ConfigError: when the limit is malformed (bad regex, bad subscript), or the limit or
            target is too long or holds a control character (see the module docstring).
    """
    if target is not None:
        _check_length(target, what="target", key="target")
    hosts = _resolve_target(inventory, target)
    if limit is None or not limit.strip():
        return hosts
    builtin_local = [LOCAL_HOST] if hosts == [LOCAL_HOST] else []
    universe = _Universe(inventory, [*inventory.hosts.values(), *builtin_local])
    chosen: dict[str, None] = {}
    for term in _order(split_patterns(limit)):
        bare = term[1:] if term[0] in "&!" else term
        if not bare:
            raise ConfigError(f"empty pattern after {term!r} in limit {limit!r}", key="limit")
        matched = universe.match(bare)
        if not matched:
            raise UnknownTargetError(
                f"limit term {bare!r} matches no host, group or tag; "
                f"available {_available(inventory)}",
                file=inventory.source,
                key="limit",
            )
        if term[0] == "&":
            keep = set(matched)
            chosen = {name: None for name in chosen if name in keep}
        elif term[0] == "!":
            drop = set(matched)
            chosen = {name: None for name in chosen if name not in drop}
        else:
            chosen.update(dict.fromkeys(matched))
    result = [host for host in hosts if host.name in chosen]
    if not result:
        raise UnknownTargetError(
            f"limit {limit!r} leaves no host of target {target or 'all'!r} "
            f"(the limit selects: {', '.join(universe.sort(chosen)) or 'nothing'})",
            file=inventory.source,
            key="limit",
        )
    return result

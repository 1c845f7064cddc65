"""Intake: the deterministic chat-request parser of the orchestrator (no LLM).

:func:`parse_request` turns one operator message into a
:class:`~patchpilot.core.intents.ChatRequest`.
The text is untrusted data: it is capped at :data:`MAX_TEXT_LENGTH` characters and
:data:`MAX_TOKENS` words, scanned with linear regular expressions only, never evaluated, and every
package name or version that could reach apt passes :mod:`patchpilot.core.validate` (an invalid one
is never
accepted, never passed through). When in doubt the parser keeps the intent but sets
``needs_clarification``, so the orchestrator asks instead of acting; when it understands nothing
the intent is ``unknown`` and the orchestrator answers with :func:`help_text`.

Grammar
=======

Matching is case-insensitive and word-based. Politeness and filler ("please", "could you",
"can you", "kindly", "thanks", "I want to", "let's"...) are ignored. Keywords tolerate typos
("upgrdae", "pacth", "rolback", "stagging", "aprove") through :func:`difflib.get_close_matches`
(cutoff 0.8, words of four letters or more, same first letter); known hosts, tags and packages
tolerate typos the same way, and additionally the digits must agree, so ``web-3`` never becomes
``web-1`` and ``libssl`` never becomes ``libssl3``.

Intents (first rule that applies wins):

* ``explain``: "why ...", "explain ...", "how come ...", "what is the reason ..."
  (why is web-2 non-compliant? / why was openssl not patched on db-1? / why is this finding high?)
* ``approve`` / ``reject``: a leading "approve", "lgtm", "sign off", "go ahead with",
  "proceed with" / "reject", "deny", "decline", "veto" plus a run id such as
  ``20261127T101941Z-31b1dc``; text after the id or after "because", "reason", "comment", "note"
  becomes the comment.
* ``patch``: a leading (or, outside a question, any) "patch", "upgrade", "update", "install",
  "apply", "fix", "remediate", "deploy", "roll out", "bump";
  ``rollback``: "roll back", "rollback", "revert", "downgrade", "undo", "restore", "go back".
  "dry run", "simulate", "preview", "plan only", "what would (happen)", "what if",
  "should we ...", "without applying" make it a dry run (also with past forms:
  "what would happen if we upgraded openssl on prod?").
* ``history``: "what happened", "last time", "history", "previously", "past", "outcome",
  "track record", "how did ... go", "did ... (upgrade/patch)" questions, "last" with a patch verb.
* ``exposure``: "exposed", "exposure", "affected", "vulnerable", "impacted", "at risk", or a
  which/what/show question about hosts and a CVE, package, severity or KEV; a bare CVE id too.
* ``status``: "status", "pending", "approval(s)", "waiting", "runs", "progress", "compliance",
  "compliant", "summary", "overview", "dashboard", "report", "findings"; a bare run id too.
  ``status_topic`` is approvals, runs, compliance, findings or general.
* otherwise ``unknown``.

Scope (required for patch/rollback, optional for questions):

* hosts: known host names ("on web-1 and db-1", "web-2", typos "web1"); with no known hosts,
  words after "on"/"in"/"across"/"for"/"to" that are valid host names;
* tags: known tags and synonyms ("on staging", "the prod web servers", "production" -> prod,
  "databases" -> db); tags written side by side ("prod web servers") must *all* match
  (``tag_match=all``), tags joined by "and" or "," match *any* ("or" asks which);
* groups: "group dmz", "the dmz group";
* all hosts: "all hosts/servers/machines", "every host", "everywhere", "the (whole) fleet";
  with hosts, tags or groups beside it the narrower reading wins ("all hosts in staging" is the
  staging hosts). "everything"/"all packages" is about packages, never about hosts: "patch
  everything" asks which hosts.

Packages and versions: known package names (exact, then close match); with no known packages, a
valid Debian name right after a patch/rollback verb or "package", or followed by a version or
"advisory". Versions: "acme-web to 1.1.0", "acme-web to version 1.1.0", "acme-web 1.1.0",
"acme-web=1.1.0" (also ``==``). A version without a package asks which package.

Filters: CVE ids (``CVE-2024-6387``, "cve 2024 6387"); severity "critical"/"crit",
"high"/"important"/"severe", "medium"/"moderate", "low" (the lowest one named is the floor:
"high and above" -> high); "kev", "known exploited", "actively exploited" -> ``kev_only``;
"newest", "latest", "most recent" -> ``newest``.

Time: "now", "right now", "right away", "immediately", "asap", "at once" -> now; "tonight",
"tonite", "this evening" -> tonight; "next (maintenance) window", "maintenance window", "patch
window" -> next_window. Other times ("tomorrow", "monday", "at 3pm") ask again.

Clarification (intent kept, nothing done) for patch/rollback when: no explicit scope; a negation
or exclusion ("don't", "not", "non", "except", "but", "other", "without", "unless", "skip"); an
order or condition ("then", "first", "before", "after", "from", "if", "once", "while", a "when" that
does not start the sentence; "if" is allowed in "what would happen if"); a choice ("web-1 or
web-2", "1.1.0 or 1.2.0"); both patch and rollback verbs; an unknown host, tag or package; an
invalid name or version; a version with no package; a rollback with no package; two different
times or an unsupported one; tags joined both side by side and with "and"; or any meaningful word
left over, including quantifiers and actions the grammar does not handle ("some", "one", "like",
"older", "check", "reboot", "remove", "uninstall", "hold"...). Only sentence punctuation is
trimmed from words: "web-*" or "1.1.0;reboot" stay unrecognised and so block the request.
For approve/reject: no run id, more than one, a negation before the id, or another change
requested after it ("approve RUN and patch web-1") asks again.

Every keyword belongs to exactly one category (checked when the module is imported), so adding a
word to two lists fails loudly instead of one silently winning.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum, auto
from functools import lru_cache
from typing import Final

import structlog

from patchpilot.core.errors import UnsafeArgumentError
from patchpilot.core.intents import (
    ACTION_INTENTS,
    DECISION_INTENTS,
    MAX_COMMENT_LENGTH,
    ChatRequest,
    Intent,
    PackageSpec,
    Scope,
    StatusTopic,
    TagMatch,
    When,
)
from patchpilot.core.models import Ecosystem, Severity
from patchpilot.core.validate import validate_hostname, validate_package_name, validate_version

__all__ = [
    "DEFAULT_TAGS",
    "FUZZY_CUTOFF",
    "MAX_TEXT_LENGTH",
    "MAX_TOKENS",
    "WHICH_RUN",
    "help_text",
    "parse_request",
]

log = structlog.get_logger(__name__)

MAX_TEXT_LENGTH: Final = 2000
"""Longest message parsed, in characters; longer ones are refused with a clarification."""
WHICH_RUN: Final = "Which run?"
"""How the grammar's question starts when a decision names no run (and nothing else is wrong)."""
MAX_TOKENS: Final = 400
"""Most words looked at (a 2,000-character message has fewer in practice)."""
FUZZY_CUTOFF: Final = 0.8
"""difflib ratio needed to take a misspelt word for a keyword, host, tag or package."""
DEFAULT_TAGS: Final = ("staging", "prod", "dev", "test", "qa", "web", "db", "canary")
"""Tags recognised when the caller passes no ``known_tags``."""

_MIN_FUZZY_LENGTH: Final = 4
_MAX_LISTED: Final = 8
_MAX_UNPARSED: Final = 20
_EXAMPLE_RUN_ID: Final = "20261127T101941Z-31b1dc"

# --------------------------------------------------------------------------- lexicon


class _Cat(Enum):
    """Keyword categories."""

    PATCH_V = auto()  # imperative patch verbs
    PATCH_X = auto()  # other forms and nouns (upgraded, patching, updates)
    ROLLBACK_V = auto()
    ROLLBACK_X = auto()
    APPROVE_V = auto()
    REJECT_V = auto()
    GOAHEAD = auto()
    EXPLAIN = auto()
    HISTORY = auto()
    LAST = auto()
    EXPOSURE = auto()
    STATUS = auto()  # payload: StatusTopic value
    QLEAD = auto()  # which, what, show, list...
    AUX = auto()  # is, are, did...
    SHOULD = auto()
    WHATWOULD = auto()
    SEVERITY = auto()  # payload: Severity value
    KEV = auto()
    NEWEST = auto()
    TIME = auto()  # payload: When value
    TIME_BAD = auto()
    DRYRUN = auto()
    ALL = auto()
    EVERY = auto()
    FLEET = auto()
    SCOPE_NOUN = auto()
    GROUP_NOUN = auto()
    PREP = auto()
    TO = auto()
    VERSION_WORD = auto()
    PKG_NOUN = auto()
    ALLPKGS = auto()
    AND = auto()
    NEGATION = auto()
    SEQUENCE = auto()  # then, first, before, after, if, once: ordering or conditions
    UNSUPPORTED = auto()  # meaningful words the grammar does not handle: never ignored
    COMMENT = auto()
    STOP = auto()


def _words(cat: _Cat, words: str, payload: str = "") -> dict[str, tuple[_Cat, str]]:
    return dict.fromkeys(words.split(), (cat, payload))


def _vocabulary(*groups: dict[str, tuple[_Cat, str]]) -> dict[str, tuple[_Cat, str]]:
    """Merge keyword groups; a word in two groups is a bug (the later one would win silently)."""
    merged: dict[str, tuple[_Cat, str]] = {}
    for group in groups:
        for word, meaning in group.items():
            if word in merged:
                raise ValueError(f"keyword {word!r} is in two categories")
            merged[word] = meaning
    return merged


_KEYWORDS: Final[dict[str, tuple[_Cat, str]]] = _vocabulary(
    _words(_Cat.PATCH_V, "patch upgrade update install apply fix remediate deploy rollout bump"),
    _words(
        _Cat.PATCH_X,
        "patched upgraded updated installed applied fixed deployed rolledout patching upgrading "
        "updating installing applying fixing deploying remediating remediated patches upgrades "
        "updates fixes",
    ),
    _words(_Cat.ROLLBACK_V, "rollback roll-back revert downgrade undo restore"),
    _words(
        _Cat.ROLLBACK_X,
        "rolledback rollingback reverted downgraded rollbacks reverting downgrading restored "
        "undone",
    ),
    _words(_Cat.APPROVE_V, "approve lgtm greenlight"),
    _words(_Cat.REJECT_V, "reject deny decline veto refuse"),
    _words(_Cat.GOAHEAD, "goahead proceed"),
    _words(_Cat.EXPLAIN, "why explain explanation"),
    _words(
        _Cat.HISTORY,
        "whathappened lasttime history historically previously past outcome outcomes howdid "
        "happened went",
    ),
    _words(_Cat.LAST, "last"),
    _words(
        _Cat.EXPOSURE,
        "exposed exposure exposures affected vulnerable impacted susceptible atrisk",
    ),
    _words(_Cat.STATUS, "status summary overview dashboard report state", "general"),
    _words(_Cat.STATUS, "pending approval approvals awaiting waiting queue queued", "approvals"),
    _words(_Cat.STATUS, "approved rejected denied declined", "approvals"),
    _words(_Cat.STATUS, "run runs progress running deployments", "runs"),
    _words(
        _Cat.STATUS, "compliance compliant noncompliant non-compliant uncompliant", "compliance"
    ),
    _words(_Cat.STATUS, "findings finding vulnerabilities", "findings"),
    _words(_Cat.QLEAD, "which what who how show list tell give display where when"),
    _words(_Cat.AUX, "is are was were do does did has have"),
    _words(_Cat.SHOULD, "should shall"),
    _words(_Cat.WHATWOULD, "whatwould"),
    _words(_Cat.SEVERITY, "critical crit criticals", Severity.CRITICAL.value),
    _words(_Cat.SEVERITY, "high highs important severe", Severity.HIGH.value),
    _words(_Cat.SEVERITY, "medium moderate", Severity.MEDIUM.value),
    _words(_Cat.SEVERITY, "low", Severity.LOW.value),
    _words(_Cat.KEV, "kev kevs kev-listed exploited known-exploited"),
    _words(_Cat.NEWEST, "newest latest"),
    _words(_Cat.TIME, "now immediately asap", When.NOW.value),
    _words(_Cat.TIME, "tonight tonite 2nite 2night", When.TONIGHT.value),
    _words(_Cat.TIME, "nextwindow", When.NEXT_WINDOW.value),
    _words(
        _Cat.TIME_BAD,
        "tomorrow later soon weekend week month monday tuesday wednesday thursday friday "
        "saturday sunday morning afternoon noon midnight am pm",
    ),
    _words(
        _Cat.DRYRUN,
        "dryrun dry-run simulate simulation simulated preview plan planonly plan-only rehearse "
        "noop",
    ),
    _words(_Cat.ALL, "all"),
    _words(_Cat.EVERY, "every each"),
    _words(_Cat.FLEET, "fleet everywhere fleetwide fleet-wide"),
    _words(
        _Cat.SCOPE_NOUN,
        "host hosts server servers machine machines node nodes system systems box boxes vm vms "
        "instance instances",
    ),
    _words(_Cat.GROUP_NOUN, "group groups"),
    _words(_Cat.PREP, "on in across for within"),
    _words(_Cat.TO, "to = =="),
    _words(_Cat.VERSION_WORD, "version"),
    _words(_Cat.PKG_NOUN, "package packages pkg pkgs advisory advisories"),
    _words(_Cat.ALLPKGS, "everything anything"),
    _words(_Cat.AND, "and or plus & , as-well-as"),
    _words(
        _Cat.NEGATION,
        "not dont never except excluding exclude without skip skipping leave avoid nor no isnt "
        "arent didnt doesnt havent hasnt cant wont shouldnt but besides unless minus apart "
        "aside instead other non",
    ),
    _words(
        _Cat.SEQUENCE,
        "then first before after afterwards followed once if until second from while whenever",
    ),
    _words(
        _Cat.UNSUPPORTED,
        "some few several half random like similar old older newer check see verify reboot "
        "restart shutdown poweroff halt delete remove purge uninstall reinstall wipe erase kill "
        "stop start disable enable hold unhold pin unpin freeze unfreeze lock unlock rebuild "
        "reimage destroy drop migrate",
    ),
    _words(_Cat.COMMENT, "because reason comment note due"),
    _words(
        _Cat.STOP,
        "the a an of with it its this that these those them they their there here we us "
        "our i me my you your u ya please pls plz kindly could can would will just also "
        "so ok okay hey hi hello thanks thank thx cheers team folks guys lets let go want "
        "wanna need needs wouldlike know ones only still yet already currently "
        "whole entire previous prior many much about regarding re into up out over "
        "as well than get make sure doing done be been being id im ive whats "
        "atleast orabove security tag tags tagged env environment environments "
        "happen time times any more ago wasnt werent during by",
    ),
)
"""word -> (category, payload). Multi-word phrases are first merged by :data:`_PHRASES`."""

_PHRASES: Final[dict[tuple[str, ...], str]] = {
    ("next", "maintenance", "window"): "nextwindow",
    ("roll", "back"): "rollback",
    ("rolled", "back"): "rolledback",
    ("rolling", "back"): "rollingback",
    ("roll", "out"): "rollout",
    ("rolled", "out"): "rolledout",
    ("go", "back"): "rollback",
    ("dry", "run"): "dryrun",
    ("test", "run"): "dryrun",
    ("plan", "only"): "planonly",
    ("only", "plan"): "planonly",
    ("just", "plan"): "planonly",
    ("no", "changes"): "dryrun",
    ("without", "applying"): "dryrun",
    ("without", "changing"): "dryrun",
    ("without", "changes"): "dryrun",
    ("what", "would"): "whatwould",
    ("what", "if"): "whatwould",
    ("right", "now"): "now",
    ("right", "away"): "now",
    ("straight", "away"): "now",
    ("at", "once"): "now",
    ("this", "evening"): "tonight",
    ("this", "night"): "tonight",
    ("later", "tonight"): "tonight",
    ("next", "window"): "nextwindow",
    ("maintenance", "window"): "nextwindow",
    ("next", "maintenance"): "nextwindow",
    ("patch", "window"): "nextwindow",
    ("change", "window"): "nextwindow",
    ("known", "exploited"): "kev",
    ("actively", "exploited"): "kev",
    ("what", "happened"): "whathappened",
    ("last", "time"): "lasttime",
    ("how", "did"): "howdid",
    ("how", "come"): "why",
    ("track", "record"): "history",
    ("non", "compliant"): "noncompliant",
    ("not", "compliant"): "noncompliant",
    ("go", "ahead"): "goahead",
    ("sign", "off"): "approve",
    ("at", "least"): "atleast",
    ("and", "above"): "orabove",
    ("or", "above"): "orabove",
    ("or", "higher"): "orabove",
    ("and", "higher"): "orabove",
    ("or", "worse"): "orabove",
    ("and", "up"): "orabove",
    ("or", "more"): "orabove",
    ("most", "recent"): "newest",
    ("do", "not"): "dont",
    ("but", "not"): "not",
    ("at", "risk"): "atrisk",
    ("as", "well", "as"): "as-well-as",
    ("would", "like"): "wouldlike",
    ("id", "like"): "wouldlike",
    ("wed", "like"): "wouldlike",  # we'd like
}
_MAX_PHRASE: Final = max(len(k) for k in _PHRASES)
_PHRASE_PARTS: Final = frozenset(w for k in _PHRASES for w in k)
# Phrase words that mean nothing on their own; any other left-over part ("dry", "recent",
# "risk", "back") stays a meaningful unknown word, so a patch request asks instead of acting.
_BENIGN_PARTS: Final = frozenset(
    {"what", "how", "do", "as", "at", "this", "just", "go", "up", "more", "most", "well", "would",
     "right", "straight", "away"}
)  # fmt: skip

_TAG_SYNONYMS: Final = {
    "production": "prod",
    "prd": "prod",
    "stage": "staging",
    "stg": "staging",
    "database": "db",
    "databases": "db",
    "webserver": "web",
    "webservers": "web",
    "frontend": "web",
    "frontends": "web",
    "canaries": "canary",
}

# A question is about a change only through these verbs; other categories never "lead".
_LEADING: Final = frozenset(
    {
        _Cat.PATCH_V,
        _Cat.ROLLBACK_V,
        _Cat.APPROVE_V,
        _Cat.REJECT_V,
        _Cat.GOAHEAD,
        _Cat.QLEAD,
        _Cat.AUX,
        _Cat.SHOULD,
        _Cat.WHATWOULD,
        _Cat.EXPLAIN,
        _Cat.HISTORY,
        _Cat.DRYRUN,
    }
)
_VERBS: Final = frozenset({_Cat.PATCH_V, _Cat.ROLLBACK_V})
_ANY_VERBS: Final = frozenset({_Cat.PATCH_V, _Cat.PATCH_X, _Cat.ROLLBACK_V, _Cat.ROLLBACK_X})
_PKG_INTRO: Final = _ANY_VERBS | {_Cat.PKG_NOUN}
# Words that, right after a patch verb, turn it into a noun ("patch status", "upgrade history").
_NOUN_AFTER_VERB: Final = frozenset(
    {"status", "history", "report", "summary", "compliance", "progress", "outcome", "outcomes"}
)
_HISTORY_CUES: Final = frozenset(
    {
        "whathappened",
        "lasttime",
        "history",
        "historically",
        "previously",
        "past",
        "outcome",
        "outcomes",
        "howdid",
        "happened",
        "went",
    }
)
_TOPIC_ORDER: Final = (
    StatusTopic.APPROVALS,
    StatusTopic.RUNS,
    StatusTopic.COMPLIANCE,
    StatusTopic.FINDINGS,
)

# --------------------------------------------------------------------------- token shapes

_TOKEN_RE: Final = re.compile(r"[^\s,]+|,")
_CLEAN_RE: Final = re.compile(r"[a-z0-9][a-z0-9.+:~=_-]*")
# Only sentence punctuation is trimmed; shell metacharacters ($ ` * | ; inside a word...) make
# the word unrecognisable, so "web-*" or "1.1.0;reboot" are never read as "web" or "1.1.0".
_LEAD_STRIP: Final = "\"'([{<-"
_TRAIL_STRIP: Final = ".,;:!?\"')]}>"
_RUN_ID_RE: Final = re.compile(r"\d{8}t\d{6}z-[0-9a-f]{6}")
_CVE_TEXT_RE: Final = re.compile(r"\bcve[\s_-]?(\d{4})[\s_-]+(\d{4,7})\b", re.IGNORECASE)
_CVE_RE: Final = re.compile(r"cve-\d{4}-\d{4,7}")
_VERSION_RE: Final = re.compile(r"v?\d[a-z0-9.+:~_-]*")
_NUMBER_RE: Final = re.compile(r"\d+")
_CLOCK_RE: Final = re.compile(r"\d{1,2}(?::\d{2})?(?:am|pm|h)|\d{1,2}:\d{2}")
_HOST_SHAPE_RE: Final = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*[-_]?\d+(?:\.[a-z0-9.-]+)?")
_DIGITS_RE: Final = re.compile(r"\d+")
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class _Kind(Enum):
    KW = auto()
    HOST = auto()
    TAG = auto()
    PKG = auto()
    PIN = auto()
    CVE = auto()
    RUNID = auto()
    VERSION = auto()
    NUMBER = auto()
    WORD = auto()
    WEIRD = auto()


@dataclass(frozen=True, slots=True)
class _Item:
    """One word (or merged phrase) of the message, classified."""

    kind: _Kind
    value: str
    raw: str
    start: int
    end: int
    cat: _Cat | None = None
    payload: str = ""
    fuzzy: bool = False
    version: str = ""


@dataclass(frozen=True, slots=True)
class _Word:
    low: str
    raw: str
    start: int
    end: int
    clean: bool
    fuzzy: bool = False


class _Lexicon:
    """The vocabulary of one call: keywords plus the caller's hosts, tags and packages."""

    def __init__(
        self, hosts: tuple[str, ...], tags: tuple[str, ...], packages: tuple[str, ...]
    ) -> None:
        self.has_hosts = bool(hosts)
        self.has_tags = bool(tags)
        self.has_packages = bool(packages)
        self.hosts: dict[str, str] = {h.lower(): h for h in hosts}
        shorts: dict[str, list[str]] = {}
        for host in hosts:
            short = host.split(".", 1)[0].lower()
            if short != host.lower():
                shorts.setdefault(short, []).append(host)
        for short, owners in shorts.items():
            if len(owners) == 1 and short not in self.hosts:
                self.hosts[short] = owners[0]
        self.tags: dict[str, str] = {t.lower(): t for t in (tags or DEFAULT_TAGS)}
        for alias, tag in _TAG_SYNONYMS.items():
            if tag in self.tags and alias not in self.tags:
                self.tags[alias] = self.tags[tag]
        self.packages: dict[str, str] = {p.lower(): p for p in packages}
        fuzzy_targets: dict[str, tuple[str, str]] = {}
        for word in (*_KEYWORDS, *_PHRASE_PARTS):
            if len(word) >= _MIN_FUZZY_LENGTH and _KEYWORDS.get(word, (None,))[0] is not _Cat.STOP:
                fuzzy_targets.setdefault(word, ("kw", word))
        entities: tuple[tuple[str, dict[str, str]], ...] = (
            ("host", self.hosts),
            ("tag", self.tags),
            ("pkg", self.packages),
        )
        for kind, names in entities:
            for name in names:
                fuzzy_targets.setdefault(name, (kind, name))
        self._by_initial: dict[str, list[str]] = {}
        for word in fuzzy_targets:
            self._by_initial.setdefault(word[0], []).append(word)
        self._cache: dict[str, str | None] = {}

    def known(self, low: str) -> bool:
        """True when ``low`` is a keyword, phrase part, host, tag or package as written."""
        return (
            low in _KEYWORDS
            or low in _PHRASE_PARTS
            or low in self.hosts
            or low in self.tags
            or low in self.packages
        )

    def correct(self, low: str) -> str | None:
        """The vocabulary word ``low`` is probably a typo of, or None (ambiguous or no match)."""
        if low in self._cache:
            return self._cache[low]
        result: str | None = None
        if len(low) >= _MIN_FUZZY_LENGTH and not low[0].isdigit():
            digits = _DIGITS_RE.findall(low)
            candidates = [
                w for w in self._by_initial.get(low[0], ()) if _DIGITS_RE.findall(w) == digits
            ]
            close = difflib.get_close_matches(low, candidates, n=2, cutoff=FUZZY_CUTOFF)
            if len(close) == 1:
                result = close[0]
            elif len(close) == 2:
                first, second = (difflib.SequenceMatcher(None, low, w).ratio() for w in close)
                result = close[0] if first - second > 0.02 else None
        if len(self._cache) < 4096:
            self._cache[low] = result
        return result


@lru_cache(maxsize=16)
def _lexicon(hosts: tuple[str, ...], tags: tuple[str, ...], packages: tuple[str, ...]) -> _Lexicon:
    return _Lexicon(hosts, tags, packages)


# --------------------------------------------------------------------------- tokenising


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("\u201c", '"')
    text = text.replace("\u201d", '"').replace("\u2013", "-").replace("\u2014", "-")
    text = _CONTROL_RE.sub(" ", text)
    return _CVE_TEXT_RE.sub(lambda m: f"CVE-{m.group(1)}-{m.group(2)}", text)


def _tokenise(text: str, lex: _Lexicon) -> list[_Word]:
    words: list[_Word] = []
    for match in _TOKEN_RE.finditer(text):
        if len(words) >= MAX_TOKENS:
            break
        raw = match.group().lstrip(_LEAD_STRIP).rstrip(_TRAIL_STRIP)
        if not raw:
            if match.group() in {"&", "=", ","}:
                raw = match.group()
            else:
                continue
        start = match.start() + (len(match.group()) - len(match.group().lstrip(_LEAD_STRIP)))
        low = raw.lower()
        if low.endswith("'s"):
            low = low[:-2]
        if "'" in low and low.replace("'", "").isalpha():
            low = low.replace("'", "")
        clean = bool(_CLEAN_RE.fullmatch(low)) or low in {"&", "=", "==", ","}
        fuzzy = False
        if clean and not lex.known(low) and not _VERSION_RE.fullmatch(low) and "=" not in low:
            corrected = lex.correct(low)
            if corrected is not None:
                low, fuzzy = corrected, True
        words.append(_Word(low, raw, start, start + len(raw), clean, fuzzy))
    return _merge_phrases(words)


def _merge_phrases(words: list[_Word]) -> list[_Word]:
    merged: list[_Word] = []
    i = 0
    while i < len(words):
        for size in range(min(_MAX_PHRASE, len(words) - i), 1, -1):
            key = tuple(w.low for w in words[i : i + size])
            if key in _PHRASES:
                part = words[i : i + size]
                merged.append(
                    _Word(
                        _PHRASES[key],
                        " ".join(w.raw for w in part),
                        part[0].start,
                        part[-1].end,
                        clean=True,
                        fuzzy=any(w.fuzzy for w in part),
                    )
                )
                i += size
                break
        else:
            merged.append(words[i])
            i += 1
    return merged


def _classify(word: _Word, lex: _Lexicon, previous: _Item | None) -> _Item:
    low, raw, start, end = word.low, word.raw, word.start, word.end
    if not word.clean:
        return _Item(_Kind.WEIRD, raw[:40], raw, start, end)
    if _RUN_ID_RE.fullmatch(low):
        return _Item(_Kind.RUNID, low, raw, start, end)
    if _CVE_RE.fullmatch(low):
        return _Item(_Kind.CVE, low.upper(), raw, start, end)
    if "=" in low and low not in {"=", "=="}:
        name = low.partition("=")[0]
        version = raw.partition("=")[2].removeprefix("=")  # versions are case-sensitive
        if name in lex.packages or not lex.has_packages:
            return _Item(_Kind.PIN, lex.packages.get(name, name), raw, start, end, version=version)
        corrected = lex.correct(name)
        if corrected is not None and corrected in lex.packages:
            pkg = lex.packages[corrected]
            return _Item(_Kind.PIN, pkg, raw, start, end, version=version, fuzzy=True)
        return _Item(_Kind.PIN, name, raw, start, end, version=version, payload="unknown")
    after_verb = previous is not None and previous.cat in _PKG_INTRO
    if low in lex.packages and (after_verb or low not in _KEYWORDS):
        return _Item(_Kind.PKG, lex.packages[low], raw, start, end, fuzzy=word.fuzzy)
    if low in _KEYWORDS:
        cat, payload = _KEYWORDS[low]
        return _Item(_Kind.KW, low, raw, start, end, cat=cat, payload=payload, fuzzy=word.fuzzy)
    if low in lex.hosts:
        return _Item(_Kind.HOST, lex.hosts[low], raw, start, end, fuzzy=word.fuzzy)
    if low in lex.tags:
        return _Item(_Kind.TAG, lex.tags[low], raw, start, end, fuzzy=word.fuzzy)
    if low.endswith("s") and low[:-1] in lex.tags:
        return _Item(_Kind.TAG, lex.tags[low[:-1]], raw, start, end, fuzzy=word.fuzzy)
    if _CLOCK_RE.fullmatch(low):
        return _Item(_Kind.KW, low, raw, start, end, cat=_Cat.TIME_BAD)
    if _NUMBER_RE.fullmatch(low):
        return _Item(_Kind.NUMBER, low, raw, start, end)
    if _VERSION_RE.fullmatch(low):
        # Keep the case as typed (Debian versions are case-sensitive). They start with a digit,
        # so "v1.1.0" can only mean 1.1.0.
        version = raw[1:] if raw[:1] in {"v", "V"} else raw
        return _Item(_Kind.VERSION, version, raw, start, end)
    if low in _BENIGN_PARTS:
        return _Item(_Kind.KW, low, raw, start, end, cat=_Cat.STOP)
    return _Item(_Kind.WORD, low, raw, start, end)


# --------------------------------------------------------------------------- extraction


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
    newest: bool = False
    whens: list[When] = field(default_factory=list)
    bad_times: list[str] = field(default_factory=list)
    dry: bool = False
    run_ids: list[str] = field(default_factory=list)
    unknown_hosts: list[str] = field(default_factory=list)
    unknown_packages: list[str] = field(default_factory=list)
    unknown_scope: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    orphan_versions: list[str] = field(default_factory=list)
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


# --------------------------------------------------------------------------- intent


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


# --------------------------------------------------------------------------- assembly


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
) -> ChatRequest:
    """Parse one chat message into a :class:`ChatRequest` (see the module docstring's grammar).

    Deterministic and side-effect free: the same text and known lists give the same request.

    Args:
        text: the operator's message (untrusted; at most :data:`MAX_TEXT_LENGTH` characters).
        known_hosts: inventory host names; when given, other host-like names are refused.
        known_tags: inventory tags; defaults to :data:`DEFAULT_TAGS` when empty.
        known_packages: package names the fleet has; when given, other names are refused.

    Returns:
        The request. ``intent`` is ``unknown`` when nothing was understood (answer with
        :func:`help_text`); ``needs_clarification`` holds a question when it must not be acted on.
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
    if intent in ACTION_INTENTS:
        question = _action_question(decision, found, lex)
    else:
        question = _question_question(found, lex)
    tag_match = TagMatch.ALL if TagMatch.ALL in found.tag_joins else TagMatch.ANY
    if len(found.tag_joins) > 1:
        tag_match = TagMatch.ALL  # the narrower reading; a clarification is asked anyway
    # "all hosts in staging" means the staging hosts: the narrower reading wins.
    all_hosts = found.all_hosts and not (found.hosts or found.tags or found.groups)
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
    is_action = intent in ACTION_INTENTS
    return ChatRequest(
        intent=intent,
        scope=scope,
        packages=tuple(found.packages),
        cves=tuple(found.cves),
        severity_at_least=severity,
        kev_only=found.kev,
        when=found.whens[0] if is_action and len(found.whens) == 1 else When.UNSPECIFIED,
        dry_run=decision.dry_run and is_action,
        run_id=found.run_ids[0] if found.run_ids else None,
        status_topic=_topic(items, found) if intent is Intent.STATUS else None,
        newest=found.newest,
        confidence=_confidence(decision, found, question),
        unparsed=tuple(found.unparsed[:_MAX_UNPARSED]),
        needs_clarification=question,
    )


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
  why is web-2 non-compliant?  /  why was openssl not patched on db-1?
  what happened the last time we upgraded openssl?
  show pending approvals  /  list runs  /  compliance summary for prod
  status of {_EXAMPLE_RUN_ID}

Decisions on a run:
  approve {_EXAMPLE_RUN_ID}
  reject {_EXAMPLE_RUN_ID} because the canary failed

Words I know: severities (critical, high/important, medium, low, "and above"), KEV
("known exploited"), times (now, asap, tonight, next window), CVE ids (CVE-2024-6387).
"""

"""The intake vocabulary: keyword categories, phrases, tag synonyms and the limits.

Every keyword belongs to exactly one category (:func:`_vocabulary` refuses a word listed twice
when the module is imported).
"""

from __future__ import annotations

from enum import Enum, auto
from typing import Final

from patchpilot.core.intents import (
    StatusTopic,
    When,
)
from patchpilot.core.models import FixStatus, Severity

__all__ = ["DEFAULT_TAGS", "FUZZY_CUTOFF", "MAX_TEXT_LENGTH", "MAX_TOKENS", "WHICH_RUN"]

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
    SECURITY = auto()  # "security updates": security_only
    OVERDUE = auto()  # payload: StatusTopic value (findings or compliance); questions only
    FIXSTATE = auto()  # payload: FixStatus value; questions only
    REBOOT = auto()  # reboots and service restarts; questions only (never an action)
    HOLDWORD = auto()  # held packages; questions only (never an action)
    ANYWHERE = auto()  # "anywhere": all hosts, in questions only
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
        "happened went incident incidents failure failures broke broken",
    ),
    _words(_Cat.LAST, "last"),
    _words(
        _Cat.EXPOSURE,
        "exposed exposure exposures affected vulnerable impacted susceptible atrisk",
    ),
    _words(_Cat.STATUS, "status summary overview dashboard report state", "general"),
    _words(_Cat.STATUS, "approval approvals awaiting waiting queue queued", "approvals"),
    _words(_Cat.STATUS, "pending outstanding available upgradable upgradeable", "pending"),
    _words(_Cat.STATUS, "feed feeds freshness feeddata", "feeds"),
    _words(_Cat.STATUS, "approved rejected denied declined", "approvals"),
    _words(_Cat.STATUS, "run runs progress running deployments", "runs"),
    _words(
        _Cat.STATUS,
        "compliance compliant noncompliant non-compliant uncompliant sla slas",
        "compliance",
    ),
    _words(
        _Cat.STATUS, "findings finding vulnerabilities vulnerability vulns vuln cves", "findings"
    ),
    _words(_Cat.OVERDUE, "overdue pastdue", "findings"),
    _words(_Cat.OVERDUE, "breach breaches breaching breached outofsla", "compliance"),
    _words(_Cat.FIXSTATE, "fixable", FixStatus.FIXED.value),
    _words(_Cat.FIXSTATE, "unfixed nofix", FixStatus.NO_FIX_YET.value),
    _words(_Cat.FIXSTATE, "wontfix", FixStatus.WILL_NOT_FIX.value),
    _words(_Cat.FIXSTATE, "deferred postponed", FixStatus.DEFERRED.value),
    _words(_Cat.FIXSTATE, "eol endoflife", FixStatus.END_OF_LIFE.value),
    _words(
        _Cat.REBOOT,
        "reboot reboots rebooting rebooted restart restarts restarting restarted rebootrequired",
    ),
    _words(_Cat.HOLDWORD, "held holds onhold heldback pinned"),
    _words(_Cat.SECURITY, "security"),
    _words(_Cat.ANYWHERE, "anywhere"),
    _words(_Cat.QLEAD, "which what whats who how show list tell give display where when"),
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
        "some few several half random like similar old older newer check see verify "
        "shutdown poweroff halt delete remove purge uninstall reinstall wipe erase kill "
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
        "as well than get make sure doing done be been being id im ive "
        "atleast orabove tag tags tagged env environment environments "
        "happen time times any more ago wasnt werent during by stuff looklike",
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
    ("look", "like"): "looklike",  # "what would an upgrade ... look like"
    ("next", "maint", "window"): "nextwindow",
    ("maint", "window"): "nextwindow",
    ("past", "due"): "pastdue",
    ("out", "of", "sla"): "outofsla",
    ("no", "fix", "yet"): "nofix",
    ("no", "fix"): "nofix",
    ("without", "a", "fix"): "nofix",
    ("without", "fix"): "nofix",
    ("with", "a", "fix"): "fixable",
    ("fix", "available"): "fixable",
    ("wont", "fix"): "wontfix",
    ("will", "not", "fix"): "wontfix",
    ("end", "of", "life"): "endoflife",
    ("on", "hold"): "onhold",
    ("held", "back"): "heldback",
    ("reboot", "required"): "rebootrequired",
    ("restart", "required"): "rebootrequired",
    ("advisory", "data"): "feeddata",
    ("vulnerability", "data"): "feeddata",
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
_INCIDENT_CUES: Final = frozenset(
    {"incident", "incidents", "failure", "failures", "broke", "broken"}
)
"""History words that never belong in a change request (they block one, as unknown words do)."""
_HISTORY_CUES: Final = _INCIDENT_CUES | frozenset(
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
_QUESTION_ONLY: Final = frozenset(
    {_Cat.OVERDUE, _Cat.FIXSTATE, _Cat.REBOOT, _Cat.HOLDWORD, _Cat.ANYWHERE}
)
"""Question filters and topics with no meaning in a change: a change request naming one is
asked back (like an unknown word), never acted on with the word ignored."""
_STATUSISH: Final = frozenset(
    {_Cat.STATUS, _Cat.OVERDUE, _Cat.FIXSTATE, _Cat.REBOOT, _Cat.HOLDWORD}
)
"""Categories that make a question a ``status`` question."""
_APPROVAL_WORDS: Final = frozenset(
    {"approval", "approvals", "approve", "approved", "rejected", "denied", "declined"}
)
_TOPIC_ORDER: Final = (
    StatusTopic.FEEDS,
    StatusTopic.REBOOT,
    StatusTopic.HOLDS,
    StatusTopic.APPROVALS,
    StatusTopic.RUNS,
    StatusTopic.COMPLIANCE,
    StatusTopic.FINDINGS,
    StatusTopic.PENDING,
)

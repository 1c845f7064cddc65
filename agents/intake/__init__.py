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
  "track record", "how did ... go", "did ... (upgrade/patch)" questions, "last" with a patch verb,
  "incident(s)", "failure(s)", "broke(n)", "what went wrong".
* ``exposure``: "exposed", "exposure", "affected", "vulnerable", "impacted", "at risk", or a
  which/what/show question about hosts and a CVE, package, severity or KEV; a bare CVE id too.
* ``status``: "status", "pending", "approval(s)", "waiting", "runs", "progress", "compliance",
  "compliant", "sla", "summary", "overview", "dashboard", "report", "findings", "vulns", "cves",
  "reboot", "restart", "held", "holds", "on hold", "pinned", "feeds", "freshness", "overdue",
  "past due", "breach"...; a bare run id, or findings filters alone ("any KEV stuff on the
  fleet?") too. ``status_topic`` (the first that applies): ``feeds`` (feed, feeds, freshness,
  advisory data); ``reboot`` (reboot(s), restart(s), reboot required: "which hosts need a
  reboot?"); ``holds`` (held, holds, on hold, pinned; with a findings word it is findings in
  fix state held instead); ``approvals`` (approval, awaiting, waiting, queue, sign off);
  ``runs`` (runs, progress, a run id: "what did RUN do?"); ``compliance`` (compliance, compliant,
  SLA, breach, out of SLA); ``findings`` (findings, vulns, CVEs, overdue, a fix state, or only
  severity/KEV/CVE filters); ``pending`` (pending, outstanding, available, upgradable, or
  updates/patches/fixes without an approval word: "whats pending on the prod boxes", "security
  updates waiting on the web nodes"); else ``general``.
* otherwise ``unknown``. A message starting with a bare "reboot"/"restart" is a command the
  grammar does not take (``unknown``), never a question.

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

Question filters (questions only; in a change request they are asked back, never ignored):
"overdue", "past due", "breach(es/ing)", "out of SLA" -> ``overdue``; "fixable", "with a fix",
"fix available" -> fix state fixed; "no fix (yet)", "without a fix", "unfixed" -> no-fix-yet;
"won't fix" -> will-not-fix; "deferred", "postponed" -> deferred; "end of life", "eol" ->
end-of-life; "held"/"held back" with a findings word -> held. "everything" and "anywhere" mean all
hosts in a question ("show me everything that's overdue"); in a change "everything" is about
packages and "anywhere" is asked back. "security" ("security updates", "the zlib security fix")
-> ``security_only``, in questions and changes (it only narrows a change).

Filters: CVE ids (``CVE-2024-6387``, "cve 2024 6387"); severity "critical"/"crit",
"high"/"important"/"severe", "medium"/"moderate", "low" (the lowest one named is the floor:
"high and above" -> high); "kev", "known exploited", "actively exploited" -> ``kev_only``;
"newest", "latest", "most recent" -> ``newest``.

Time: "now", "right now", "right away", "immediately", "asap", "at once" -> now; "tonight",
"tonite", "this evening" -> tonight; "next (maintenance) window", "maintenance window", "patch
window", "maint window" -> next_window. With a clock (``parse_request(..., now=...)``, as the chat
should call it) a change's time words are read by :func:`patchpilot.agents.intake.when.read_when`:
"tonight", "at 22:00", "on Saturday", "tomorrow morning", "in 2 hours" set ``when`` and
``not_before``, unclear ones ("later", "at 9", "before 22:00", two times) are asked back. Without
a clock other times ("tomorrow", "monday", "at 3pm") ask again.

Versions: with one package named, a version written after "to" ("revert openssl on web-1 to
3.0.11-1") is that package's; in a question any stray version is ("why is acme-web not at 1.1.0
on db-1").

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

Modules: :mod:`.lexicon` (vocabulary and limits), :mod:`.tokens` (normalising,
tokenising, classifying), :mod:`.extraction` (entities), :mod:`.decision` (the intent),
:mod:`.parser` (:func:`parse_request`, :func:`help_text`).
"""

from __future__ import annotations

from patchpilot.agents.intake.lexicon import (
    DEFAULT_TAGS,
    FUZZY_CUTOFF,
    MAX_TEXT_LENGTH,
    MAX_TOKENS,
    WHICH_RUN,
)
from patchpilot.agents.intake.parser import help_text, parse_request

__all__ = [
    "DEFAULT_TAGS",
    "FUZZY_CUTOFF",
    "MAX_TEXT_LENGTH",
    "MAX_TOKENS",
    "WHICH_RUN",
    "help_text",
    "parse_request",
]

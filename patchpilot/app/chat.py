"""The chat orchestrator: understand a request, answer from read-only tools, or plan a change.

``patchpilot ask "…"`` and ``patchpilot chat`` go through :meth:`Orchestrator.handle`:

1. **Understand** the text as a typed :class:`~patchpilot.core.intents.ChatRequest`: with an LLM
   configured, the ``intake`` prompt (the text fenced as untrusted data) and a validated
   structured answer that may only name known hosts, tags and packages; otherwise, or when the
   LLM fails or refuses, the documented deterministic grammar (:mod:`patchpilot.agents.intake`).
   Anything
   neither understands gets the grammar's help text; ambiguity gets a question back.
2. **Questions** are answered by read-only tools over the store and the vector memory:
   exposure (which hosts have an open finding for a CVE, a package, or a package's newest
   advisory), explain (why a host is non-compliant: its last run's deployments and its open,
   overdue findings), history (past outcomes of a package, recalled items cited by id), status
   (pending approvals, recent runs). Pending updates, findings by filter (KEV, overdue, fix
   state, severity), reboots, holds, compliance, runs, run details, feeds and "why was X not
   upgraded" are answered by the typed question tools (:mod:`patchpilot.tools.queries`,
   :mod:`patchpilot.app.questions`): their rows are the answer's facts, and the text says what
   the question was understood as. With an LLM, the ``answer`` prompt may phrase the reply
   from those facts (fenced), citing only recalled ids; the facts are returned either way.
3. **Changes** ("patch the critical ones on staging tonight", "upgrade acme-web to 1.1.0 on
   staging now", "roll back acme-web on web-2") start a normal patch run
   (:func:`patchpilot.graphs.run.start_run`) that stops at the approval checkpoint **always** (a
   chat
   request never deploys without a person's approval, whatever the policy says), with the frozen
   plan shown in full. ``approve RUN_ID`` / ``reject RUN_ID`` decide it like the CLI does.

Nothing the model says becomes a command: it fills a typed request that is validated against
the inventory, and the change itself is the same plan → test → approve → deploy run as any other.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cmp_to_key
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.agents.intake import MAX_TEXT_LENGTH, WHICH_RUN, help_text, parse_request
from patchpilot.agents.intake.when import policy_timezone
from patchpilot.app.approvals import DecisionSource, decide
from patchpilot.app.questions import CATALOG as QUESTION_TOOLS  # registers the tools
from patchpilot.core.errors import InvalidVersionError, PatchpilotError
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
from patchpilot.core.inventory import Inventory
from patchpilot.core.models import FixStatus, Host, Severity, utcnow
from patchpilot.core.policy import Policy
from patchpilot.core.schedule import MaintenanceWindow
from patchpilot.core.settings import Settings
from patchpilot.core.store import FindingRecord, Store
from patchpilot.core.text import inert
from patchpilot.core.versions import compare
from patchpilot.graphs.run import RunContext, RunResult, load_run_state, result_of, start_run
from patchpilot.graphs.run_document import run_document
from patchpilot.prompts import as_json, fence, load_prompt
from patchpilot.tools.llm import LLMClient, LLMFallback, try_complete
from patchpilot.tools.queries import QueryContext, call_tool

__all__ = [
    "GRAMMAR_CERTAIN",
    "ChatAnswer",
    "ChatReply",
    "LLMIntake",
    "Orchestrator",
    "is_question",
    "llm_hooks",
    "model_text_problem",
]

log = structlog.get_logger(__name__)


class ChatReply(BaseModel):
    """What the ``answer`` prompt returns (validated; ``cited`` must be recalled ids)."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(max_length=4000)
    cited: list[str] = Field(default_factory=list)


class ChatAnswer(BaseModel):
    """The orchestrator's answer to one request.

    ``text`` is always the core's answer, built from the facts; a model's phrasing is only ever
    an addition in ``llm_text`` (control characters escaped, shown marked as model-written).
    """

    model_config = ConfigDict(frozen=True)

    text: str = Field(description="the core's answer, from the facts (always present)")
    llm_text: str | None = Field(
        default=None, description="the model's phrasing of the same facts, if any (untrusted)"
    )
    request: ChatRequest
    facts: dict[str, Any] = Field(default_factory=dict)
    run: dict[str, Any] | None = Field(default=None, description="the run document, if any")
    cited: tuple[str, ...] = ()
    understood_by: Literal["grammar", "llm"] = "grammar"
    answered_by: Literal["core", "llm"] = "core"
    llm_notes: tuple[str, ...] = Field(
        default=(), description="why the LLM was not used or was overruled"
    )


CHAT_APPROVAL = "requested in chat: a person approves every change asked for in chat"


class ChangeOrder(BaseModel):
    """A change the chat asks for, as :func:`patchpilot.graphs.run.start_run` takes it (what
    :attr:`Orchestrator.submit` queues)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    hosts: tuple[Host, ...]
    target: str
    policy: Policy
    only: tuple[tuple[str, str | None], ...]
    dry_run: bool
    rollback: dict[str, str] | None
    must_approve: str
    not_before: datetime | None
    security_only: bool


GRAMMAR_CERTAIN: float = 0.85
"""Grammar confidence from which the LLM is not asked at all (its reading could only add risk
and latency)."""

_QUESTION_LEADS = frozenset(
    [
        "which",
        "what",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "is",
        "are",
        "was",
        "were",
        "do",
        "does",
        "did",
        "has",
        "have",
        "any",
        "show",
        "list",
        "tell",
        "explain",
    ]
)
_POLITE_LEADS = frozenset({"can", "could", "would", "will", "please"})


def is_question(text: str) -> bool:
    """Whether the person's words are a question (which a model may never turn into a change).

    A question starts with a question word or a read verb (``which``, ``what``, ``why``, ``is``,
    ``show``, ``list`` …), or ends with ``?`` without a polite request lead (``can you …?``).
    """
    words = re.findall(r"[a-z]+", text.lower())
    if not words:
        return False
    if words[0] in _QUESTION_LEADS:
        return True
    return text.rstrip().endswith("?") and words[0] not in _POLITE_LEADS


_SHELL_ADVICE = re.compile(
    r"`|\$\(|\|\s*(?:sudo\s+)?(?:ba|z|da)?sh\b|\b(?:curl|wget|sudo|rm\s+-|chmod|chown|dd\s+if=|"
    r"mkfs|apt-get|apt\s+install|dpkg\s+-|systemctl|bash\s+-c)\b",
    re.IGNORECASE,
)


def model_text_problem(text: str) -> str | None:
    """Why a model's prose must not be shown (it suggests shell commands), or None."""
    if _SHELL_ADVICE.search(text):
        return "the model's text suggests shell commands; patchpilot never shows those: withheld"
    return None


@dataclass
class Orchestrator:
    """One chat session (``history`` keeps its turns)."""

    settings: Settings
    store: Store
    inventory: Inventory
    policy: Policy
    make_context: Callable[[Policy], RunContext]
    memory: Any | None = None
    """A :class:`patchpilot.tools.memory.VectorMemory` (recall for history questions), or None."""
    understand_llm: Callable[[str, Inventory], tuple[ChatRequest | None, str | None]] | None = None
    """``(text, inventory) -> (request or None, note)``: the LLM intake (None: no LLM)."""
    phrase_llm: (
        Callable[[str, dict[str, Any], Sequence[str]], tuple[ChatReply | None, str | None]] | None
    ) = None
    """``(question, facts, recalled ids) -> (reply or None, note)``: the LLM answer writer."""
    history: list[ChatAnswer] = field(default_factory=list)
    clock: Callable[[], datetime] = field(default=utcnow)
    actor: str | None = None
    """Who is chatting (the identity recorded with any decision; default: the OS user)."""
    decider: Callable[..., RunResult] = field(default=decide)
    """Records a decision and continues the run (:func:`patchpilot.app.approvals.decide`)."""
    agent_llm: LLMClient | None = None
    """The session's LLM client for the tool-calling agent that also answers questions
    (:mod:`patchpilot.graphs.chat_agent`; issue 14 item 5), or None (no agent)."""
    submit: Callable[[ChangeOrder], str] | None = None
    """Queue a change instead of driving it in this call (the service's executor, ``POST
    /api/v1/ask``): returns the run id, the answer says it is queued. None: driven here."""
    _findings: list[FindingRecord] | None = field(default=None, init=False, repr=False)

    # ------------------------------------------------------------------ entry point

    def handle(self, text: str) -> ChatAnswer:
        """Answer one chat request (see the module docstring)."""
        self._findings = None  # loaded at most once per request
        if len(text) > MAX_TEXT_LENGTH:  # bounded before anything reads it (grammar or LLM)
            request = parse_request(text)  # answers "too long" without tokenising
            answer = self._answer(
                request, request.needs_clarification or help_text(), {}, "grammar", []
            )
            self.history.append(answer)
            return answer
        request, understood_by, notes = self._understand(text)
        request = self._resolve_run(request)
        log.info(
            "chat.request",
            intent=request.intent.value,
            understood_by=understood_by,
            actionable=request.is_actionable,
        )
        if request.intent is Intent.UNKNOWN:
            answer = self._answer(request, help_text(), {}, understood_by, notes)
        elif request.needs_clarification:
            answer = self._answer(request, request.needs_clarification, {}, understood_by, notes)
        elif request.intent in ACTION_INTENTS and not request.is_actionable:
            answer = self._answer(
                request,
                "On which hosts? Name them, a tag or a group (e.g. `on staging`, `on web-1`), "
                "or say `on all hosts`.",
                {},
                understood_by,
                notes,
            )
        else:
            handler = {
                Intent.EXPOSURE: self._exposure,
                Intent.EXPLAIN: self._explain,
                Intent.HISTORY: self._history,
                Intent.STATUS: self._status,
                Intent.PATCH: self._change,
                Intent.ROLLBACK: self._change,
                Intent.APPROVE: self._decide,
                Intent.REJECT: self._decide,
            }[request.intent]
            try:
                answer = handler(request, text, understood_by, notes)
            except PatchpilotError as exc:
                answer = self._answer(
                    request, f"I could not do that: {exc}", {}, understood_by, notes
                )
        # ---- issue 14 item 5: with an LLM, a question also goes to the tool-calling agent
        # (patchpilot.graphs.chat_agent: read-only tools, bounded steps and calls). Never a
        # change or a decision; the core's text stays, the tool results it cites are added, the
        # model's text is only an addition (escaped, shell advice withheld); an LLM failure
        # keeps the deterministic answer.
        if (
            self.agent_llm is not None
            and answer.run is None
            and request.intent not in (*ACTION_INTENTS, *DECISION_INTENTS)
            and (request.intent is not Intent.UNKNOWN or is_question(text))
        ):
            from patchpilot.graphs.chat_agent import run_chat_agent
            from patchpilot.tools.queries import QueryContext

            inv = self.inventory
            agent = run_chat_agent(
                self.agent_llm,
                QueryContext(self.settings, self.store, self.policy, inv),
                text,
                understood=request.describe(),
                hosts=list(inv.hosts),
                tags=[*inv.tags, *inv.groups],
            )
            agent_notes = [*answer.llm_notes, *agent.notes]
            if not agent.failed:
                said = agent.final_text
                problem = model_text_problem(said) if said else None
                agent_notes += [problem] if problem else []
                shown = inert(said) if said and not problem else None
                cited = agent.facts_text() if agent.used else ""
                core = "" if request.intent is Intent.UNKNOWN and cited else answer.text
                answer = answer.model_copy(
                    update={
                        "text": "\n\n".join(t for t in (core, cited) if t),
                        "llm_text": shown or answer.llm_text,
                        "facts": {**answer.facts, "agent": agent.facts()},
                        "answered_by": "llm" if shown else answer.answered_by,
                    }
                )
            answer = answer.model_copy(update={"llm_notes": tuple(agent_notes)})
        # ---- end of the agent block
        self.history.append(answer)
        return answer

    # ------------------------------------------------------------------ understanding

    def _understand(self, text: str) -> tuple[ChatRequest, Literal["grammar", "llm"], list[str]]:
        """The request, by the grammar, or by the LLM where the grammar is unsure.

        The rules (each a guarantee, tested in tests/unit/test_chat_safety.py):

        - a decision (approve/reject) is only ever read by the grammar, from the person's own
          words; the LLM is not even asked, and an LLM reading of a decision is discarded;
        - when the grammar is certain (confidence ≥ :data:`GRAMMAR_CERTAIN`, nothing to ask),
          the LLM is not asked;
        - a question never becomes a change: an LLM reading of a change is discarded when the
          words are a question (:func:`is_question`) or the grammar read them as one.
        """
        inv = self.inventory
        grammar = parse_request(
            text,
            known_hosts=list(inv.hosts),
            known_tags=list(inv.tags),
            known_packages=self._known_packages(),
            now=self.clock(),
            timezone=policy_timezone(self.policy.schedule),
        )
        notes: list[str] = []
        if self.understand_llm is None:
            return grammar, "grammar", notes
        if grammar.intent in DECISION_INTENTS:
            notes.append("decisions are read by the grammar only: the LLM was not asked")
            return grammar, "grammar", notes
        if (
            grammar.intent is not Intent.UNKNOWN
            and grammar.needs_clarification is None
            and grammar.confidence >= GRAMMAR_CERTAIN
        ):
            notes.append("understood by the grammar: the LLM was not asked")
            return grammar, "grammar", notes
        parsed, note = self.understand_llm(text, inv)
        if note:
            notes.append(note)
        if parsed is None:
            return grammar, "grammar", notes
        if parsed.intent in DECISION_INTENTS:
            notes.append(
                f"the model read a decision ({parsed.intent.value}) the grammar did not: "
                "ignored; only your own words decide (say `approve RUN_ID` or `reject RUN_ID`)"
            )
            return grammar, "grammar", notes
        if parsed.intent in ACTION_INTENTS and (
            is_question(text) or grammar.intent not in (*ACTION_INTENTS, Intent.UNKNOWN)
        ):
            notes.append(
                f"the model read a change ({parsed.intent.value}) in a question: ignored; "
                "a question never becomes a change"
            )
            return grammar, "grammar", notes
        return parsed, "llm", notes

    def _resolve_run(self, request: ChatRequest) -> ChatRequest:
        """``approve`` / ``reject`` without an id: the run this session just showed, if any.

        Only when the grammar's one question was "which run?" (no negation, no conflict, no
        second request) and this session's latest answer showed a run that is still waiting:
        the person confirms the run shown. Never "the only pending run" of somebody else.
        """
        if (
            request.intent not in DECISION_INTENTS
            or request.run_id is not None
            or not (request.needs_clarification or "").startswith(WHICH_RUN)
        ):
            return request
        pending = {a.run_id for a in self.store.approvals("pending")}
        shown = next((a.run for a in reversed(self.history) if a.run is not None), None)
        if shown is None or shown["run_id"] not in pending:
            return request
        return request.model_copy(update={"run_id": shown["run_id"], "needs_clarification": None})

    def _known_packages(self) -> list[str]:
        names: set[str] = set()
        for record in self._latest_findings():
            names.add(record.finding.source_package)
            names.update(record.finding.binary_packages)
        names.update(o.package for o in self.store.recent_outcomes(limit=500))
        for run in self.store.list_runs(limit=5):  # what the hosts' repositories offer
            for result in self.store.host_results(run.run_id, details=True):
                names.update(u.name for u in result.pending)
                names.update(u.source_name for u in result.pending if u.source_name)
        return sorted(names)

    # ------------------------------------------------------------------ answering

    def _answer(
        self,
        request: ChatRequest,
        text: str,
        facts: dict[str, Any],
        understood_by: Literal["grammar", "llm"],
        notes: list[str],
        *,
        question: str | None = None,
        recalled: Sequence[str] = (),
        run: dict[str, Any] | None = None,
        phrase: bool = False,
    ) -> ChatAnswer:
        answered_by: Literal["core", "llm"] = "core"
        cited = tuple(recalled)
        llm_text: str | None = None
        if phrase and self.phrase_llm is not None and question is not None:
            reply, note = self.phrase_llm(question, facts, recalled)
            if note:
                notes.append(note)
            problem = model_text_problem(reply.text) if reply is not None else None
            if problem:
                notes.append(problem)
            elif reply is not None:
                llm_text, answered_by = inert(reply.text), "llm"
                cited = tuple(c for c in reply.cited if c in set(recalled)) or cited
        return ChatAnswer(
            text=text,
            llm_text=llm_text,
            request=request,
            facts=facts,
            run=run,
            cited=cited,
            understood_by=understood_by,
            answered_by=answered_by,
            llm_notes=tuple(notes),
        )

    def _scope_hosts(self, request: ChatRequest) -> list[Host]:
        inv = self.inventory
        scope = request.scope
        if scope.all_hosts:
            return list(inv.hosts.values())
        wanted: set[str] = {h for h in scope.hosts if h in inv.hosts}
        members = [
            set(inv.tags.get(tag, ())) | set(inv.groups.get(tag, ()))
            for tag in (*scope.tags, *scope.groups)
        ]
        if members:
            if scope.tag_match is TagMatch.ALL:  # "the prod web servers": every tag
                wanted |= set.intersection(*members)
            else:
                wanted |= set.union(*members)
        return [h for n, h in inv.hosts.items() if n in wanted]

    def _latest_findings(self) -> list[FindingRecord]:
        """Each host's findings from its latest run (loaded once per request)."""
        if self._findings is None:
            self._findings = self.store.findings()
        return self._findings

    # -- question tools
    def _query_context(self) -> QueryContext:
        """What the question tools read (this session's store, inventory, memory, clock)."""
        return QueryContext(
            settings=self.settings,
            store=self.store,
            policy=self.policy,
            inventory=self.inventory,
            extra={"memory": self.memory, "now": self.clock()},
        )

    def _scope_args(self, request: ChatRequest) -> dict[str, Any]:
        """The request's scope as a tool's scope arguments (all hosts: no restriction)."""
        scope = request.scope
        if scope.all_hosts:
            return {}
        return {
            "hosts": list(scope.hosts),
            "tags": list(scope.tags),
            "tag_match": scope.tag_match.value,
            "groups": list(scope.groups),
        }

    def _findings_args(self, request: ChatRequest) -> dict[str, Any]:
        return {
            **self._scope_args(request),
            "severity_at_least": (
                request.severity_at_least.value if request.severity_at_least else None
            ),
            "kev_only": request.kev_only,
            "fix_state": request.fix_state.value if request.fix_state else None,
            "overdue": request.overdue,
            "packages": [p.model_dump() for p in request.packages],
            "cves": list(request.cves),
        }

    def _status_tool(self, request: ChatRequest) -> tuple[str, dict[str, Any]] | None:
        """The question tool and its arguments for a status question (None: the overview)."""
        topic = request.status_topic or StatusTopic.GENERAL
        scope = self._scope_args(request)
        packages = [p.model_dump() for p in request.packages]
        if request.run_id is not None and topic in (StatusTopic.RUNS, StatusTopic.GENERAL):
            return "run_details", {"run_id": request.run_id}
        if topic is StatusTopic.PENDING:
            return "pending_updates", {
                **scope,
                "security_only": request.security_only,
                "packages": packages,
            }
        if topic is StatusTopic.REBOOT:
            return "reboot_needed", scope
        if topic is StatusTopic.HOLDS:
            return "holds", {**scope, "packages": packages}
        if topic is StatusTopic.FEEDS:
            return "feeds", {}
        if topic is StatusTopic.COMPLIANCE:
            if request.overdue and not request.scope.is_explicit:
                return "findings", self._findings_args(request)
            return "compliance", {**scope, "overdue_only": request.overdue}
        if topic is StatusTopic.FINDINGS or _filtered(request):
            return "findings", self._findings_args(request)
        if topic is StatusTopic.RUNS:
            return "runs", {}
        return None

    def _tool_answer(
        self,
        request: ChatRequest,
        text: str,
        understood_by: Any,
        notes: list[str],
        tool: str,
        arguments: dict[str, Any],
    ) -> ChatAnswer:
        """Answer with one question tool: its rows are the facts, its text the answer."""
        assert tool in QUESTION_TOOLS, tool  # a tool of this module's choosing, never a model's
        result = call_tool(self._query_context(), tool, arguments)
        log.info("chat.tool", tool=tool, rows=result.total, error=result.error is not None)
        facts = {
            "tool": result.tool,
            "arguments": arguments,
            "understood_as": result.understood_as,
            "rows": [dict(r) for r in result.rows],
            "total": result.total,
        }
        if result.error is not None:
            facts["error"] = result.error
            body = f"I could not answer that: {result.error}"
        else:
            body = f"{result.text}\n(understood as: {result.understood_as})"
        return self._answer(request, body, facts, understood_by, notes, question=text, phrase=True)

    def _why_not_patched(
        self,
        request: ChatRequest,
        text: str,
        hosts: list[Host],
        understood_by: Any,
        notes: list[str],
    ) -> ChatAnswer:
        """ "why wasn't db-1 upgraded to acme-web 1.1.0?": one why_not_patched call per host
        and package (a few at most)."""
        calls = [
            {"host": h.name, "package": p.model_dump()}
            for h in hosts[:5]
            for p in request.packages[:3]
        ]
        if len(calls) == 1:
            return self._tool_answer(
                request, text, understood_by, notes, "why_not_patched", calls[0]
            )
        context = self._query_context()
        results = [call_tool(context, "why_not_patched", args) for args in calls]
        facts = {
            "tool": "why_not_patched",
            "arguments": calls,
            "understood_as": "; ".join(r.understood_as for r in results),
            "rows": [dict(row) for r in results for row in r.rows],
            "total": sum(r.total for r in results),
        }
        body = "\n".join(r.error or r.text for r in results)
        body += f"\n(understood as: {facts['understood_as']})"
        return self._answer(request, body, facts, understood_by, notes, question=text, phrase=True)

    # -- exposure
    def _exposure(
        self, request: ChatRequest, text: str, understood_by: Any, notes: list[str]
    ) -> ChatAnswer:
        if _filtered(request):  # "any KEV stuff", "everything overdue", "critical ones"
            return self._tool_answer(
                request, text, understood_by, notes, "findings", self._findings_args(request)
            )
        scoped = {h.name for h in self._scope_hosts(request)} if _has_scope(request) else None
        names = {p.name for p in request.packages}
        records = [
            r
            for r in self._latest_findings()
            if (scoped is None or r.finding.host in scoped)
            and (not request.cves or set(request.cves) & set(r.finding.cves))
            and (
                not names
                or r.finding.source_package in names
                or names & set(r.finding.binary_packages)
            )
        ]
        advisory: str | None = None
        if request.newest and records:
            advisory = _newest_advisory(records)
            records = [r for r in records if r.finding.advisory_id == advisory]
        hosts = sorted({r.finding.host for r in records})
        rows = [
            {
                "host": r.finding.host,
                "package": r.finding.source_package,
                "installed": r.finding.installed_source_version,
                "fixed": r.finding.fixed_version,
                "fix_state": r.finding.fix.status.value,
                "advisory": r.finding.advisory_id,
                "cves": list(r.finding.cves),
                "score": r.risk.score if r.risk else None,
            }
            for r in sorted(records, key=lambda r: (r.finding.host, r.finding.advisory_id))
        ]
        what = (
            ", ".join(request.cves)
            or (f"the newest {', '.join(sorted(names))} advisory ({advisory})" if advisory else "")
            or ", ".join(sorted(names))
            or "any finding"
        )
        scanned = sorted({r.finding.host for r in self._latest_findings()})
        if not self.store.list_runs(limit=1):
            body = "No scan yet: run `patchpilot scan` (or `patchpilot run`) first."
        elif not hosts:
            body = (
                f"No scanned host is exposed to {what} (scanned: {', '.join(scanned) or 'none'})."
            )
        else:
            lines = [f"{len(hosts)} host(s) exposed to {what}: {', '.join(hosts)}."]
            for r in sorted(records, key=lambda r: (r.finding.host, r.finding.advisory_id))[:20]:
                f = r.finding
                fix = f", fixed in {f.fixed_version}" if f.fixed_version else ", no fix yet"
                if f.fix.status is FixStatus.HELD:
                    fix += " (held on the host: unhold it to patch)"
                cves = "; " + " ".join(f.cves[:3]) if f.cves else ""
                lines.append(
                    f"- {f.host}: {f.source_package} {f.installed_source_version}{fix} "
                    f"({f.advisory_id}{cves})"
                )
            body = "\n".join(lines)
        facts = {"exposed": rows, "hosts": hosts, "advisory": advisory, "scanned": scanned}
        return self._answer(request, body, facts, understood_by, notes, question=text, phrase=True)

    # -- explain
    def _explain(
        self, request: ChatRequest, text: str, understood_by: Any, notes: list[str]
    ) -> ChatAnswer:
        hosts = self._scope_hosts(request)
        if request.packages and hosts:
            return self._why_not_patched(request, text, hosts, understood_by, notes)
        if request.packages and not hosts:  # "why was acme-web 1.3.0 rolled back?": its history
            return self._history(request, text, understood_by, notes)
        if len(hosts) != 1:
            return self._answer(
                request,
                "Which host? e.g. `why is web-1 non-compliant?`",
                {},
                understood_by,
                notes,
            )
        host = hosts[0].name
        today = self.clock().astimezone(UTC).date()
        open_findings = [r for r in self._latest_findings() if r.finding.host == host]
        overdue = [
            r for r in open_findings if r.risk and r.risk.due_date and r.risk.due_date < today
        ]
        run_rows: list[dict[str, Any]] = []
        compliance: str | None = None
        run_id: str | None = None
        for run in self.store.list_runs(limit=50):
            if run.kind == "run" and host in run.params.get("hosts", []):
                snapshot = load_run_state(run.run_id, self.settings)
                if snapshot is None:
                    continue
                doc = run_document(
                    result_of(run.run_id, snapshot),
                    snapshot,
                    self.store.deployments(run.run_id),
                    self.store.approval(run.run_id),
                )
                run_rows = [d for d in doc["deployments"] if d["host"] == host]
                compliance = doc["compliance"].get(host)
                run_id = run.run_id
                break
        lines: list[str] = []
        if compliance is not None:
            lines.append(f"{host}: compliance {compliance} after run {run_id}.")
            for row in run_rows:
                reason = f": {row['reason']}" if row["reason"] else ""
                lines.append(
                    f"- {row['package']} {row['from']} -> {row['to']}: {row['status']}{reason}"
                )
        else:
            lines.append(f"{host} has not been patched by patchpilot yet (no run includes it).")
        if open_findings:
            lines.append(
                f"{len(open_findings)} open finding(s), {len(overdue)} overdue"
                + (
                    ": "
                    + ", ".join(
                        f"{r.finding.source_package} (due {r.risk.due_date})"
                        for r in overdue[:5]
                        if r.risk
                    )
                    if overdue
                    else "."
                )
            )
        facts = {
            "host": host,
            "compliance": compliance,
            "run_id": run_id,
            "deployments": run_rows,
            "open_findings": len(open_findings),
            "overdue": [
                {"package": r.finding.source_package, "due": str(r.risk.due_date)}
                for r in overdue
                if r.risk
            ],
        }
        return self._answer(
            request, "\n".join(lines), facts, understood_by, notes, question=text, phrase=True
        )

    # -- history
    def _history(
        self, request: ChatRequest, text: str, understood_by: Any, notes: list[str]
    ) -> ChatAnswer:
        names = [p.name for p in request.packages]
        outcomes = []
        for name in names or ["*"]:
            package = None if name == "*" else name
            outcomes.extend(self.store.recent_outcomes(package=package, limit=20))
        recalled: list[dict[str, Any]] = []
        if self.memory is not None:
            query = text if not names else f"{' '.join(names)} upgrade outcome"
            try:
                for item in self.memory.recall(query, kinds=("outcomes", "incidents"), k=5):
                    if names and not any(n in item.text for n in names):
                        continue
                    recalled.append(
                        {
                            "id": item.id,
                            "kind": item.kind,
                            "text": item.text,
                            "distance": round(item.distance, 3),
                        }
                    )
            except PatchpilotError as exc:
                notes.append(f"memory unavailable: {exc}")
        lines: list[str] = []
        if outcomes:
            last_run = outcomes[0].run_id
            latest = [o for o in outcomes if o.run_id == last_run]
            lines.append(
                f"The last time {', '.join(names) or 'anything'} was deployed (run {last_run}, "
                f"{latest[0].at:%Y-%m-%d %H:%M} UTC):"
            )
            for o in latest:
                error = f": {o.error}" if o.error else ""
                lines.append(
                    f"- {o.host}: {o.package} {o.from_version or 'none'} -> {o.to_version}: "
                    f"{o.status.value}{error}"
                )
        else:
            lines.append(f"No recorded deployment of {', '.join(names) or 'any package'} yet.")
        if recalled:
            lines.append("From memory:")
            lines.extend(f"- [{r['id']}] {r['text']}" for r in recalled)
        facts = {
            "outcomes": [o.model_dump(mode="json") for o in outcomes[:20]],
            "recalled": recalled,
        }
        return self._answer(
            request,
            "\n".join(lines),
            facts,
            understood_by,
            notes,
            question=text,
            recalled=[r["id"] for r in recalled],
            phrase=True,
        )

    # -- status
    def _status(
        self, request: ChatRequest, text: str, understood_by: Any, notes: list[str]
    ) -> ChatAnswer:
        call = self._status_tool(request)
        if call is not None:
            return self._tool_answer(request, text, understood_by, notes, *call)
        pending = self.store.approvals("pending")
        runs = self.store.list_runs(limit=5)
        lines = [f"{len(pending)} run(s) waiting for approval" + (":" if pending else ".")]
        for a in pending:
            lines.append(
                f"- {a.run_id}: {len(a.payload.get('items', []))} item(s); "
                f"{'; '.join(a.reasons)}; expires {a.expires_at:%Y-%m-%d %H:%M} UTC"
            )
        if runs:
            lines.append("Recent runs:")
            lines.extend(f"- {r.run_id} {r.kind} {r.target}: {r.status}" for r in runs)
        facts = {
            "pending_approvals": [a.run_id for a in pending],
            "runs": [{"run_id": r.run_id, "kind": r.kind, "status": r.status} for r in runs],
        }
        return self._answer(request, "\n".join(lines), facts, understood_by, notes)

    # -- approve / reject
    def _decide(
        self, request: ChatRequest, text: str, understood_by: Any, notes: list[str]
    ) -> ChatAnswer:
        # Defence in depth: _understand never lets a model's reading through, and this checks
        # it again: a decision needs the grammar's reading of the person's words and a run id
        # they named (or confirmed when it was shown).
        if understood_by != "grammar" or not request.is_decision or request.run_id is None:
            pending = self.store.approvals("pending")
            verb = "approve" if request.intent is Intent.APPROVE else "reject"
            return self._answer(
                request,
                f"Which run? Say `{verb} RUN_ID`; waiting: "
                + (", ".join(a.run_id for a in pending) or "nothing"),
                {"pending_approvals": [a.run_id for a in pending]},
                understood_by,
                notes,
            )
        status: Literal["approved", "rejected"] = (
            "approved" if request.intent is Intent.APPROVE else "rejected"
        )
        result = self.decider(
            self.settings,
            self.store,
            request.run_id,
            status,
            comment=request.comment or "via patchpilot chat",
            make_context=self.make_context,
            source=DecisionSource(parser="grammar", words=text),
            actor=self.actor,
        )
        return self._run_answer(request, result, understood_by, notes)

    # -- changes
    def _change(
        self, request: ChatRequest, text: str, understood_by: Any, notes: list[str]
    ) -> ChatAnswer:
        hosts = self._scope_hosts(request)
        if not hosts:
            return self._answer(
                request,
                "None of the hosts named is in the inventory "
                f"({', '.join(self.inventory.hosts) or 'empty'}).",
                {},
                understood_by,
                notes,
            )
        only: list[tuple[str, str | None]] = [(p.name, p.version) for p in request.packages]
        rollback: dict[str, str] | None = None
        if request.intent is Intent.ROLLBACK:
            if len(request.packages) != 1:
                return self._answer(
                    request, "Roll back which package? e.g. `roll back acme-web on web-2`", {},
                    understood_by, notes,
                )  # fmt: skip
            rollback = self._rollback_targets(request, hosts)
            if not rollback:
                return self._answer(
                    request,
                    f"No recorded earlier version of {request.packages[0].name} on "
                    f"{', '.join(h.name for h in hosts)}: name one, e.g. "
                    f"`roll back {request.packages[0].name} to 1.0.0 on {hosts[0].name}`.",
                    {},
                    understood_by,
                    notes,
                )
        elif not only and (request.severity_at_least or request.kev_only or request.cves):
            only = self._packages_matching(request, hosts)
            if not only:
                threshold = (
                    request.severity_at_least.value if request.severity_at_least else "the filter"
                )
                return self._answer(
                    request,
                    f"No open finding on {', '.join(h.name for h in hosts)} matches {threshold} "
                    "(findings without feeds have unknown severity: `patchpilot feeds update`).",
                    {},
                    understood_by,
                    notes,
                )
        policy = self._chat_policy(request)
        if self.submit is not None:
            run_id = self.submit(
                ChangeOrder(
                    hosts=tuple(hosts),
                    target="chat: " + request.describe(),
                    policy=policy,
                    only=tuple(only),
                    dry_run=request.dry_run,
                    rollback=rollback,
                    must_approve=CHAT_APPROVAL,
                    not_before=request.not_before,
                    security_only=request.security_only,
                )
            )
            text = (
                f"Run {run_id}: queued. It will plan and test "
                + ", ".join(h.name for h in hosts)
                + ", then wait for a person's approval before anything is deployed "
                f"(`approve {run_id}`)."
            )
            queued = {"schema": "patchpilot.run/v1", "run_id": run_id, "status": "queued"}
            return self._answer(
                request, text, {"run_id": run_id, "status": "queued"}, understood_by, notes,
                run={**queued, "trigger": "chat"},
            )  # fmt: skip
        context = self.make_context(policy)
        result = start_run(
            hosts,
            context,
            target="chat: " + request.describe(),
            policy=policy,
            only=only,
            dry_run=request.dry_run,
            offline=True,
            rollback=rollback,
            must_approve=CHAT_APPROVAL,
            not_before=request.not_before,
            trigger="chat",
            security_only=request.security_only,
        )
        return self._run_answer(request, result, understood_by, notes)

    def _chat_policy(self, request: ChatRequest) -> Policy:
        """The policy, with tonight's window when asked and the policy has none."""
        schedule = self.policy.schedule
        if request.when.value == "tonight" and schedule.is_always_open:
            window = MaintenanceWindow(
                name="tonight",
                cron="0 20 * * *",
                duration="PT10H",
                cutoff="PT1H",
                timezone=schedule.timezone,
            )
            schedule = schedule.model_copy(update={"windows": (window,), "always_open": False})
        return self.policy.model_copy(update={"schedule": schedule})

    def _packages_matching(
        self, request: ChatRequest, hosts: list[Host]
    ) -> list[tuple[str, str | None]]:
        names = {h.name for h in hosts}
        found: set[str] = set()
        for r in self._latest_findings():
            f = r.finding
            if f.host not in names:
                continue
            if request.severity_at_least is not None and not _at_least(
                f.severity, request.severity_at_least
            ):
                continue
            if request.kev_only and not r.kev:
                continue
            if request.cves and not set(request.cves) & set(f.cves):
                continue
            found.update(f.binary_packages)
        return [(n, None) for n in sorted(found)]

    def _rollback_targets(self, request: ChatRequest, hosts: list[Host]) -> dict[str, str]:
        spec = request.packages[0]
        if spec.version:
            return {h.name: spec.version for h in hosts}
        targets: dict[str, str] = {}
        for host in hosts:
            for outcome in self.store.recent_outcomes(package=spec.name, host=host.name):
                if outcome.status.value == "success" and outcome.from_version:
                    targets[host.name] = outcome.from_version
                    break
        return targets

    def _run_answer(
        self, request: ChatRequest, result: RunResult, understood_by: Any, notes: list[str]
    ) -> ChatAnswer:
        snapshot = load_run_state(result.run_id, self.settings)
        doc = run_document(
            result,
            snapshot,
            self.store.deployments(result.run_id),
            self.store.approval(result.run_id),
        )
        lines = [
            f"Run {result.run_id}: {result.status}"
            + (f" ({result.reason})" if result.reason else "")
        ]
        plan = doc.get("plan")
        if plan:
            lines.append(
                f"Frozen plan {plan['plan_id']} (sha256 {plan['content_hash'][:12]}), "
                f"{len(plan['items'])} item(s):"
            )
            rows = {(d["host"], d["package"]): d for d in doc["deployments"]}
            for item in plan["items"]:
                row = rows.get((item["host"], item["package"]), {})
                test = (item.get("test") or {}).get("status", "-")
                lines.append(
                    f"- {item['host']}: {item['package']} {item['from'] or 'none'} -> {item['to']} "
                    f"(test {test}; {row.get('status', '-')})"
                )
        if doc.get("not_before") and result.status not in ("completed", "failed", "rejected"):
            lines.append(
                f"Deploys not before {doc['not_before']} (UTC), inside the policy's "
                "maintenance windows."
            )
        if doc.get("hint"):
            lines.append(doc["hint"])
        return self._answer(
            request, "\n".join(lines), {"run_id": result.run_id}, understood_by, notes, run=doc
        )


def _filtered(request: ChatRequest) -> bool:
    """Whether a question filters findings beyond a package or CVE (KEV, overdue, state,
    severity): those are answered by the ``findings`` tool."""
    return not request.newest and (
        request.kev_only
        or request.overdue
        or request.fix_state is not None
        or request.severity_at_least is not None
    )


def _has_scope(request: ChatRequest) -> bool:
    s = request.scope
    return bool(s.all_hosts or s.hosts or s.tags or s.groups)


def _at_least(severity: Severity, threshold: Severity) -> bool:
    if severity is Severity.UNKNOWN:
        return threshold is Severity.UNKNOWN
    return severity.rank >= threshold.rank


def _newest_advisory(records: Sequence[FindingRecord]) -> str:
    """The advisory with the highest fixed version (then the highest id)."""

    def order(a: FindingRecord, b: FindingRecord) -> int:
        va, vb = a.finding.fixed_version, b.finding.fixed_version
        if va and vb:
            try:
                by_version = compare("debian", va, vb)
            except InvalidVersionError:
                by_version = 0
        else:
            by_version = bool(va) - bool(vb)
        ida, idb = a.finding.advisory_id, b.finding.advisory_id
        return by_version or (ida > idb) - (ida < idb)

    return max(records, key=cmp_to_key(order)).finding.advisory_id


# --------------------------------------------------------------------------- LLM assistance


class LLMPackage(BaseModel):
    """A package the model read in the request."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: str | None


class LLMIntake(BaseModel):
    """What the ``intake`` prompt returns (strict schema; validated against the inventory)."""

    model_config = ConfigDict(extra="forbid")

    intent: Intent
    hosts: list[str]
    tags: list[str]
    tag_match: TagMatch
    groups: list[str]
    all_hosts: bool
    packages: list[LLMPackage]
    cves: list[str]
    severity_at_least: Severity | None
    kev_only: bool
    when: When
    dry_run: bool
    run_id: str | None
    newest: bool
    needs_clarification: str | None


def _mentioned(word: str, text: str) -> bool:
    return word.lower() in text.lower()


def _keep(
    kind: str,
    names: Sequence[str],
    known: Collection[str],
    text: str,
    change: bool,
    notes: list[str],
) -> list[str]:
    """The names that exist and, for a change, that the person wrote; notes for the rest."""
    kept = []
    for name in names:
        if name not in known:
            notes.append(f"the model named {kind} {name!r}, not in the inventory: ignored")
        elif change and not _mentioned(name, text):
            notes.append(f"the model added {kind} {name!r} the request does not name: ignored")
        else:
            kept.append(name)
    return kept


def validate_intake(
    raw: LLMIntake,
    text: str,
    known_hosts: Collection[str],
    known_tags: Collection[str],
    grammar: ChatRequest,
) -> tuple[ChatRequest, list[str]]:
    """Turn the model's reading into a request, keeping only what the core allows.

    Hosts and tags must exist in the inventory; for a change, every host, tag and package must
    also be named in the person's own words, and "all hosts" must be what the grammar read too
    (so text that talks the model into a wider scope changes nothing). Anything dropped is
    noted, and a change that lost anything is turned into a question instead of an action.
    """
    notes: list[str] = []
    change = raw.intent in ACTION_INTENTS
    hosts = _keep("host", raw.hosts, known_hosts, text, change, notes)
    tags = _keep("tag", raw.tags, known_tags, text, change, notes)
    groups = _keep("group", raw.groups, known_tags, text, change, notes)
    # Several tags: the narrower reading wins ("the prod web servers" is prod AND web).
    narrow = TagMatch.ALL in (raw.tag_match, grammar.scope.tag_match)
    tag_match = TagMatch.ALL if narrow else TagMatch.ANY
    all_hosts = raw.all_hosts and (not change or grammar.scope.all_hosts)
    if raw.all_hosts and not all_hosts:
        notes.append("the model widened the scope to all hosts; the request does not: ignored")
    packages: list[PackageSpec] = []
    for package in raw.packages:
        try:
            spec = PackageSpec(name=package.name, version=package.version)
        except ValueError:
            notes.append(f"the model named an invalid package {package.name!r}: ignored")
            continue
        if change and not _mentioned(spec.name, text):
            notes.append(
                f"the model added package {spec.name!r} the request does not name: ignored"
            )
            continue
        packages.append(spec)
    cves: list[str] = []
    for cve in raw.cves:
        digits = re.fullmatch(r"CVE-(\d{4})-(\d{4,})", cve.upper())
        if digits and all(_mentioned(d, text) for d in digits.groups()):
            cves.append(cve.upper())
        else:
            notes.append(f"the model named CVE {cve!r} the request does not: ignored")
    run_id = raw.run_id if raw.run_id and _mentioned(raw.run_id, text) else None
    if raw.run_id and run_id is None:
        notes.append(f"the model named run {raw.run_id!r} the request does not: ignored")
    clarification = raw.needs_clarification
    if change and notes and clarification is None:
        clarification = "I am not sure which hosts or packages you mean; please name them exactly."
    request = ChatRequest(
        intent=raw.intent,
        scope=Scope(
            hosts=tuple(hosts),
            tags=tuple(tags),
            tag_match=tag_match,
            groups=tuple(groups),
            all_hosts=all_hosts,
        ),
        packages=tuple(packages),
        cves=tuple(cves),
        severity_at_least=raw.severity_at_least,
        kev_only=raw.kev_only,
        when=raw.when,
        dry_run=raw.dry_run or grammar.dry_run,
        run_id=run_id,
        newest=raw.newest,
        confidence=0.8,
        needs_clarification=clarification,
    )
    return request, notes


def llm_hooks(
    client: LLMClient, store: Store
) -> tuple[
    Callable[[str, Inventory], tuple[ChatRequest | None, str | None]],
    Callable[[str, dict[str, Any], Sequence[str]], tuple[ChatReply | None, str | None]],
]:
    """The orchestrator's LLM intake and answer writer over ``client`` (see the module)."""
    intake = load_prompt("intake")
    answer = load_prompt("answer")

    def understand(text: str, inventory: Inventory) -> tuple[ChatRequest | None, str | None]:
        grammar = parse_request(
            text, known_hosts=list(inventory.hosts), known_tags=list(inventory.tags)
        )
        packages = sorted({r.finding.source_package for r in store.findings()})
        messages = intake.messages(
            request=fence("chat request", text),
            hosts=as_json(sorted(inventory.hosts)),
            tags=as_json(sorted(set(inventory.tags) | set(inventory.groups))),
            packages=as_json(packages[:300]),
            grammar=help_text(),
        )
        result = try_complete(client, "intake", intake.version, messages, LLMIntake)
        if isinstance(result, LLMFallback):
            return None, f"LLM intake unavailable ({result.reason}); used the grammar"
        try:
            request, dropped = validate_intake(
                result.value,
                text,
                set(inventory.hosts),
                set(inventory.tags) | set(inventory.groups),
                grammar,
            )
        except ValueError as exc:
            return None, f"LLM intake refused ({exc}); used the grammar"
        note = (
            f"LLM intake ({result.model}, prompt intake v{intake.version}, "
            f"{result.usage.total_tokens} tokens{', cached' if result.cached else ''})"
        )
        if dropped:
            note += "; " + "; ".join(dropped)
        return request, note

    def phrase(
        question: str, facts: dict[str, Any], recalled: Sequence[str]
    ) -> tuple[ChatReply | None, str | None]:
        messages = answer.messages(
            question=fence("question", question), results=fence("facts", as_json(facts))
        )
        result = try_complete(client, "answer", answer.version, messages, ChatReply)
        if isinstance(result, LLMFallback):
            return None, f"LLM answer unavailable ({result.reason}); answered by the core"
        reply = result.value
        unknown = [c for c in reply.cited if c not in set(recalled)]
        if unknown:
            reply = ChatReply(text=reply.text, cited=[c for c in reply.cited if c in set(recalled)])
            return reply, f"the model cited unknown ids {unknown}: dropped"
        return reply, None

    return understand, phrase


_BENCH_CLIENT: list[LLMClient | None] = []


def parse_with_llm(
    text: str,
    *,
    known_hosts: Collection[str] = (),
    known_tags: Collection[str] = (),
    known_packages: Collection[str] = (),
) -> ChatRequest:
    """The LLM intake alone (``benchmarks/intents.py --llm``), with the settings' endpoint.

    A failed or refused LLM answer is an ``unknown`` request (a safe miss), never the grammar's.

    Raises:
        ConfigError: no LLM is configured (``llm.base_url``).
    """
    from patchpilot.core.errors import ConfigError
    from patchpilot.core.settings import load_settings
    from patchpilot.tools.llm import make_client

    if not _BENCH_CLIENT:
        settings = load_settings()
        _BENCH_CLIENT.append(make_client(settings.llm, cache_dir=settings.cache_dir))
    client = _BENCH_CLIENT[0]
    if client is None:
        raise ConfigError("no LLM configured: set llm.base_url (PATCHPILOT_LLM__BASE_URL)")
    prompt = load_prompt("intake")
    messages = prompt.messages(
        request=fence("chat request", text),
        hosts=as_json(sorted(known_hosts)),
        tags=as_json(sorted(known_tags)),
        packages=as_json(sorted(known_packages)),
        grammar=help_text(),
    )
    grammar = parse_request(
        text, known_hosts=known_hosts, known_tags=known_tags, known_packages=known_packages
    )
    result = try_complete(client, "intake", prompt.version, messages, LLMIntake)
    if isinstance(result, LLMFallback):
        return ChatRequest(intent=Intent.UNKNOWN, needs_clarification=result.reason[:400])
    try:
        request, _notes = validate_intake(result.value, text, known_hosts, known_tags, grammar)
    except ValueError as exc:
        return ChatRequest(intent=Intent.UNKNOWN, needs_clarification=str(exc)[:400])
    return request

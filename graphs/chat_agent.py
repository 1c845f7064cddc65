"""The chat's LLM path for questions: a LangGraph tool-calling agent over the read-only tools.

With an LLM configured, a *question* (never a change, never a decision) is also put to this
agent. It offers the model every tool of :data:`~patchpilot.tools.queries.CATALOG` as an OpenAI
function tool, runs the calls the model asks for, sends the numbered results back, and stops at
the model's text answer or at a bound::

    START -> model --(tool calls)--> tools --> model ... --(text / bound)--> final -> END

* **Tools.** Each catalog entry is wrapped as a langchain-core :class:`StructuredTool` (its
  pydantic input model as ``args_schema``, :func:`~patchpilot.tools.queries.call_tool` as its
  function) and the OpenAI schemas are derived from those wrappers
  (:func:`~langchain_core.utils.function_calling.convert_to_openai_tool`, with
  ``additionalProperties: false`` since the input models refuse unknown fields). The tools node
  runs every call through :func:`~patchpilot.tools.queries.call_tool`: an unknown tool, arguments
  that are not a JSON object or do not validate (wrong types, extra fields) come back to the
  model as an error result, and count. Every tool reads the store only: there is no tool that
  approves, rejects, plans, patches or widens anything.
* **Bounds.** At most ``llm.agent_max_steps`` model turns and ``llm.agent_max_tool_calls`` tool
  calls per question (calls past the budget are refused, and the model's next turn is offered no
  tools, so it must answer); the same call with the same arguments twice is refused and ends the
  loop; every model turn goes through
  :meth:`~patchpilot.tools.llm.client.LLMClient.complete_with_tools` (deadline, size cap,
  retries, the run's call and token budget, reasoning-model parameters). Any LLM failure ends
  the agent with ``stopped == "llm_error"``: the caller keeps its deterministic answer.
* **Citations.** Tool results go to the model numbered (``[1]``, ``[2]`` …) and fenced as
  untrusted data; :class:`AgentAnswer` lists every call (tool, arguments, row count, error) and
  which numbers the model's text referenced. The model's text is returned raw: the application
  layer escapes it, withholds shell advice and shows it marked as model-written, after the facts.

Messages are langchain-core messages in the graph's state; they become OpenAI messages only at
the boundary (:func:`to_openai_messages`), and the model's turn becomes an :class:`AIMessage`
right after the call.
"""

from __future__ import annotations

import functools
import json
import operator
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import structlog
from langchain_core.messages import (
    AIMessage,
    AnyMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolMessage,
    convert_to_openai_messages,
)
from langchain_core.tools import StructuredTool
from langchain_core.utils.function_calling import convert_to_openai_tool
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.settings import LLMSettings
from patchpilot.core.text import inert
from patchpilot.prompts import Prompt, as_json, fence, load_prompt
from patchpilot.tools.llm.client import LLMClient, RequestedToolCall
from patchpilot.tools.llm.errors import LLMError
from patchpilot.tools.queries import CATALOG, QueryContext, QueryResult, call_tool

__all__ = [
    "AgentAnswer",
    "AgentCall",
    "Stop",
    "build_chat_agent",
    "catalog_tools",
    "openai_tools",
    "run_chat_agent",
    "to_openai_messages",
]

log = structlog.get_logger(__name__)

TASK: Final = "chat_agent"
"""The prompt and the LLM task name."""
MAX_RESULT_CHARS: Final = 6000
"""Most characters of one tool result sent to the model (rows are dropped from the end)."""
_LABEL_ARGS_MAX: Final = 160
_REF = re.compile(r"\[(\d{1,4})\]")
_DECISION_WORDS = re.compile(r"\b(approve|approved|reject|rejected|deploy now)\b", re.IGNORECASE)

Stop = Literal["answered", "steps", "tool_budget", "loop", "llm_error", "no_answer"]
"""Why the agent stopped: the model answered in text, or which bound ended it."""


class AgentCall(BaseModel):
    """One tool call the model asked for, and what came of it (a citation when ``ok``)."""

    model_config = ConfigDict(frozen=True)

    ref: int = Field(ge=1, description="the result's number as the model saw it: [ref]")
    tool: str
    arguments: dict[str, Any] | str = Field(
        description="the arguments as the model sent them (raw text when not a JSON object)"
    )
    status: Literal["ok", "error", "refused"] = Field(
        description="ok: ran; error: unknown tool or bad arguments (counted); "
        "refused: past the budget or a repeated call (not run)"
    )
    understood_as: str = ""
    total: int = 0
    columns: tuple[str, ...] = ()
    rows: tuple[dict[str, Any], ...] = ()
    text: str = ""
    error: str | None = None

    @property
    def label(self) -> str:
        """``[1] pending_updates(hosts=[db-1]): 14 rows``, control characters escaped."""
        if isinstance(self.arguments, dict):
            shown = ", ".join(f"{k}={_short(v)}" for k, v in self.arguments.items())
        else:
            shown = self.arguments
        if len(shown) > _LABEL_ARGS_MAX:
            shown = shown[: _LABEL_ARGS_MAX - 1] + "…"
        outcome = (
            f"{self.total} row{'s' if self.total != 1 else ''}"
            if self.status == "ok"
            else f"{self.status}: {self.error}"
        )
        return inert(f"[{self.ref}] {self.tool or '?'}({shown}): {outcome}", newlines=False)


class AgentAnswer(BaseModel):
    """What the agent did for one question (see the module docstring)."""

    model_config = ConfigDict(frozen=True)

    final_text: str | None = Field(
        default=None, description="the model's answer, raw and untrusted (None: no answer)"
    )
    calls: tuple[AgentCall, ...] = ()
    referenced: tuple[int, ...] = Field(
        default=(), description="result numbers the model's text cites that were tool results"
    )
    steps: int = Field(default=0, description="model turns")
    stopped: Stop = "no_answer"
    reason: str = ""
    model: str | None = None
    tokens: int = 0
    notes: tuple[str, ...] = ()

    @property
    def used(self) -> tuple[AgentCall, ...]:
        """The calls that ran (the citable results)."""
        return tuple(c for c in self.calls if c.status == "ok")

    @property
    def failed(self) -> bool:
        """The LLM failed: the caller keeps its deterministic answer unchanged."""
        return self.stopped == "llm_error"

    def facts_text(self) -> str:
        """The tool results the model used, as the core prints them (no model text)."""
        lines = ["Read-only tool results the model asked for:"]
        for call in self.used:
            lines.append(call.label)
            if call.understood_as:
                lines.append(f"    understood as: {inert(call.understood_as, newlines=False)}")
            lines.extend(f"    {line}" for line in inert(call.text).splitlines() if line.strip())
        refused = len(self.calls) - len(self.used)
        if refused:
            lines.append(f"{refused} call(s) refused (see the notes).")
        return "\n".join(lines)

    def facts(self) -> dict[str, Any]:
        """The agent's part of the answer's facts (JSON-ready)."""
        return {
            "stopped": self.stopped,
            "reason": self.reason,
            "model": self.model,
            "steps": self.steps,
            "tokens": self.tokens,
            "tool_calls": [
                {
                    "ref": c.ref,
                    "citation": c.label,
                    "tool": c.tool,
                    "arguments": c.arguments,
                    "status": c.status,
                    "rows": c.total,
                    "understood_as": c.understood_as,
                    "error": c.error,
                    "columns": list(c.columns),
                    "data": [dict(r) for r in c.rows],
                }
                for c in self.calls
            ],
            "cited": list(self.referenced),
        }


# --------------------------------------------------------------------------- the tools


def catalog_tools(context: QueryContext) -> dict[str, StructuredTool]:
    """Every catalog tool as a langchain-core :class:`StructuredTool` bound to ``context``.

    The wrapper's function is :func:`~patchpilot.tools.queries.call_tool` (validation, errors as
    results), returning the :class:`~patchpilot.tools.queries.QueryResult` as a dict.
    """
    return {
        name: StructuredTool.from_function(
            func=functools.partial(_run_tool, context, name),
            name=name,
            description=tool.description,
            args_schema=tool.input_model,
        )
        for name, tool in sorted(CATALOG.items())
    }


def _run_tool(context: QueryContext, name: str, **arguments: Any) -> dict[str, Any]:
    return call_tool(context, name, arguments).model_dump(mode="json")


def openai_tools(tools: Mapping[str, StructuredTool]) -> list[dict[str, Any]]:
    """The OpenAI ``tools=[...]`` entries, derived from the langchain-core wrappers."""
    schemas: list[dict[str, Any]] = []
    for tool in tools.values():
        schema = convert_to_openai_tool(tool)
        parameters = schema["function"].setdefault("parameters", {"type": "object"})
        parameters.setdefault("properties", {})
        parameters["additionalProperties"] = False  # the input models refuse unknown fields
        schemas.append(schema)
    return schemas


# --------------------------------------------------------------------------- the graph


@dataclass(frozen=True)
class AgentDeps:
    """What the nodes use (the graph's runtime context)."""

    client: LLMClient
    query: QueryContext
    prompt: Prompt
    schemas: list[dict[str, Any]]
    max_steps: int
    max_tool_calls: int


class AgentState(BaseModel):
    """Messages, the calls made so far, and the bounds' counters."""

    messages: Annotated[list[AnyMessage], add_messages] = Field(default_factory=list)
    calls: Annotated[list[AgentCall], operator.add] = Field(default_factory=list)
    seen: Annotated[list[str], operator.add] = Field(default_factory=list)
    steps: int = 0
    tokens: int = 0
    tools_offered: bool = True
    model: str | None = None
    stopped: Stop | None = None
    reason: str = ""


def model_node(state: AgentState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """One model turn with the tools offered (none once the tool-call budget is spent)."""
    deps = runtime.context
    if state.steps >= deps.max_steps:
        return {
            "stopped": "steps",
            "reason": f"{state.steps} model turns reached llm.agent_max_steps={deps.max_steps}",
        }
    offered = deps.schemas if _counted(state.calls) < deps.max_tool_calls else []
    try:
        turn = deps.client.complete_with_tools(
            TASK, deps.prompt.version, to_openai_messages(state.messages), offered
        )
    except LLMError as exc:
        log.warning("chat.agent.llm_failed", step=state.steps + 1, error=type(exc).__name__)
        return {"steps": state.steps + 1, "stopped": "llm_error", "reason": str(exc)}
    taken = {
        c["id"] or ""
        for m in state.messages
        if isinstance(m, AIMessage)
        for c in (*m.tool_calls, *m.invalid_tool_calls)
    }
    return {
        "messages": [_ai_message(turn.content, turn.tool_calls, taken)],
        "steps": state.steps + 1,
        "tokens": state.tokens + turn.usage.total_tokens,
        "model": turn.model,
        "tools_offered": bool(offered),
    }


def tools_node(state: AgentState, runtime: Runtime[AgentDeps]) -> dict[str, Any]:
    """Run (or refuse) every call of the model's last turn; one result message per call."""
    deps = runtime.context
    last = state.messages[-1]
    assert isinstance(last, AIMessage)  # the graph routes here only after one
    used = _counted(state.calls)
    seen = set(state.seen)
    calls: list[AgentCall] = []
    messages: list[ToolMessage] = []
    stopped: Stop | None = None
    reason = ""
    requested: list[tuple[str, str, dict[str, Any] | str, str | None]] = [
        (c["id"] or "", c["name"], dict(c["args"]), None) for c in last.tool_calls
    ]
    requested += [
        (c["id"] or "", c["name"] or "", c["args"] or "", c["error"] or "not a JSON object")
        for c in last.invalid_tool_calls
    ]
    for call_id, name, arguments, invalid in requested:
        ref = len(state.calls) + len(calls) + 1
        signature = f"{name}:{_canonical(arguments)}"
        if used >= deps.max_tool_calls:
            call = AgentCall(
                ref=ref,
                tool=name,
                arguments=arguments,
                status="refused",
                error=f"refused: the tool-call budget is spent "
                f"(llm.agent_max_tool_calls={deps.max_tool_calls}); answer from the results "
                "you have",
            )
            if not state.tools_offered:  # asked for tools it was not offered: end it here
                stopped = "tool_budget"
                reason = (
                    f"the model asked for tools past llm.agent_max_tool_calls={deps.max_tool_calls}"
                )
        elif signature in seen:
            call = AgentCall(
                ref=ref,
                tool=name,
                arguments=arguments,
                status="refused",
                error="refused: a repeated call (same tool, same arguments) ends the loop",
            )
            stopped, reason = "loop", f"the model repeated a call: {name}"
        else:
            seen.add(signature)
            used += 1
            call = _run(deps.query, ref, name, arguments, invalid)
        calls.append(call)
        messages.append(
            ToolMessage(
                content=_result_content(call),
                tool_call_id=call_id,
                name=name or "unknown",
                status="success" if call.status == "ok" else "error",
            )
        )
        log.info(
            "chat.agent.tool_call",
            ref=ref,
            tool=inert(name, newlines=False)[:64],
            status=call.status,
            rows=call.total,
        )
    return {
        "messages": messages,
        "calls": calls,
        "seen": sorted(seen - set(state.seen)),
        "stopped": stopped,
        "reason": reason,
    }


def final_node(state: AgentState) -> dict[str, Any]:
    """The end: why the agent stopped (the answer itself is read by :func:`run_chat_agent`)."""
    if state.stopped is not None:
        return {}
    last = state.messages[-1] if state.messages else None
    if isinstance(last, AIMessage) and not last.tool_calls and not last.invalid_tool_calls:
        return {"stopped": "answered"}
    return {"stopped": "no_answer", "reason": "the model gave no text answer"}


def _after_model(state: AgentState) -> Literal["tools", "final"]:
    last = state.messages[-1] if state.messages else None
    if (
        state.stopped is None
        and isinstance(last, AIMessage)
        and (last.tool_calls or last.invalid_tool_calls)
    ):
        return "tools"
    return "final"


def _after_tools(state: AgentState) -> Literal["model", "final"]:
    return "final" if state.stopped is not None else "model"


def build_chat_agent() -> StateGraph[AgentState, AgentDeps, AgentState, AgentState]:
    """The agent's graph (compile it; it needs no checkpointer: a question is not durable)."""
    graph = StateGraph(AgentState, context_schema=AgentDeps)
    graph.add_node("model", model_node)
    graph.add_node("tools", tools_node)
    graph.add_node("final", final_node)
    graph.add_edge(START, "model")
    graph.add_conditional_edges("model", _after_model, ["tools", "final"])
    graph.add_conditional_edges("tools", _after_tools, ["model", "final"])
    graph.add_edge("final", END)
    return graph


@functools.cache
def _compiled() -> CompiledStateGraph[AgentState, AgentDeps, AgentState, AgentState]:
    return build_chat_agent().compile(name="chat_agent")


def run_chat_agent(
    client: LLMClient,
    context: QueryContext,
    question: str,
    *,
    understood: str,
    hosts: Collection[str] = (),
    tags: Collection[str] = (),
    settings: LLMSettings | None = None,
) -> AgentAnswer:
    """Put ``question`` to the tool-calling agent; never raises an LLM error.

    Args:
        client: The session's LLM client (its call and token budget is shared).
        context: What the read-only tools read.
        question: The person's words (fenced as untrusted data in the prompt).
        understood: What the deterministic parser read (e.g. the request's description).
        hosts: The inventory's host names (the model may name only those).
        tags: The inventory's tags and groups.
        settings: The agent's bounds (default: the client's settings).

    Returns:
        What the agent did; ``failed`` when the LLM failed (keep the deterministic answer).
    """
    bounds = settings or client.settings
    prompt = load_prompt(TASK)
    schemas = openai_tools(catalog_tools(context))
    rendered = prompt.messages(
        question=fence("question", question),
        understood=fence("parser reading", understood),
        hosts=as_json(sorted(hosts)[:300]),
        tags=as_json(sorted(tags)[:300]),
        max_tool_calls=str(bounds.agent_max_tool_calls),
    )
    deps = AgentDeps(
        client=client,
        query=context,
        prompt=prompt,
        schemas=schemas,
        max_steps=bounds.agent_max_steps,
        max_tool_calls=bounds.agent_max_tool_calls,
    )
    start = AgentState(
        messages=[SystemMessage(rendered[0]["content"]), HumanMessage(rendered[1]["content"])]
    )
    out = AgentState.model_validate(
        _compiled().invoke(
            start,
            context=deps,
            config={"recursion_limit": 2 * bounds.agent_max_steps + 4},
        )
    )
    return _answer(out)


def _answer(state: AgentState) -> AgentAnswer:
    stopped: Stop = state.stopped or "no_answer"
    text: str | None = None
    notes: list[str] = []
    last = state.messages[-1] if state.messages else None
    if stopped == "answered" and isinstance(last, AIMessage):
        text = last.text if isinstance(last.text, str) else str(last.text)
    oks = {c.ref for c in state.calls if c.status == "ok"}
    referenced: tuple[int, ...] = ()
    if text:
        refs = sorted({int(n) for n in _REF.findall(text)})
        referenced = tuple(n for n in refs if n in oks)
        unknown = [n for n in refs if n not in oks]
        if unknown:
            notes.append(f"the model's text cites {unknown}, which are no tool results: ignored")
        if oks and not referenced:
            notes.append("the model's text cites none of the tool results")
        if _DECISION_WORDS.search(text):
            notes.append(
                "the model's text speaks of approving or rejecting: it decides nothing; only "
                "your own words do (`approve RUN_ID` / `reject RUN_ID`)"
            )
    errors = [c for c in state.calls if c.status != "ok"]
    for call in errors:
        notes.append(f"tool call {call.label}")
    summary = (
        f"LLM agent ({state.model or 'no model answer'}, prompt {TASK}): {state.steps} turn(s), "
        f"{len(oks)} tool result(s), {len(errors)} refused, {state.tokens} tokens; "
        f"stopped: {stopped}"
    )
    if state.reason:
        summary += f" ({state.reason})"
    log.info(
        "chat.agent.done",
        stopped=stopped,
        steps=state.steps,
        tool_calls=len(state.calls),
        refused=len(errors),
        tokens=state.tokens,
    )
    return AgentAnswer(
        final_text=text,
        calls=tuple(state.calls),
        referenced=referenced,
        steps=state.steps,
        stopped=stopped,
        reason=state.reason,
        model=state.model,
        tokens=state.tokens,
        notes=(summary, *notes),
    )


# --------------------------------------------------------------------------- helpers


def to_openai_messages(messages: Sequence[AnyMessage]) -> list[dict[str, Any]]:
    """langchain-core messages as OpenAI chat messages (the boundary to the LLM client).

    Calls whose arguments were not valid JSON (``invalid_tool_calls``) are sent back as the
    model wrote them, so each tool result answers a call the endpoint knows.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        converted = convert_to_openai_messages(message)
        assert isinstance(converted, dict)  # one message in, one out
        if isinstance(message, AIMessage) and message.invalid_tool_calls:
            calls = list(converted.get("tool_calls", []))
            calls += [
                {
                    "type": "function",
                    "id": c["id"] or "",
                    "function": {"name": c["name"] or "", "arguments": c["args"] or ""},
                }
                for c in message.invalid_tool_calls
            ]
            converted["tool_calls"] = calls
        if converted.get("role") == "assistant":
            converted = {
                k: v for k, v in converted.items() if k in ("role", "content", "tool_calls")
            }
            if not isinstance(converted.get("content"), str):
                converted["content"] = ""
        elif converted.get("role") == "tool":
            converted = {k: converted[k] for k in ("role", "content", "tool_call_id")}
        out.append(converted)
    return out


def _ai_message(
    content: str | None, calls: Sequence[RequestedToolCall], taken: set[str]
) -> AIMessage:
    """The model's turn as an :class:`AIMessage`; missing or repeated call ids replaced."""
    valid: list[ToolCall] = []
    invalid: list[InvalidToolCall] = []
    ids = set(taken)
    for index, call in enumerate(calls, start=1):
        call_id = call.id
        if not call_id or call_id in ids:
            call_id = f"pp_call_{len(ids) + index}"
        ids.add(call_id)
        try:
            args = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError as exc:
            invalid.append(
                InvalidToolCall(
                    name=call.name,
                    args=call.arguments,
                    id=call_id,
                    error=f"not JSON: {exc}",
                    type="invalid_tool_call",
                )
            )
            continue
        if not isinstance(args, dict):
            invalid.append(
                InvalidToolCall(
                    name=call.name,
                    args=call.arguments,
                    id=call_id,
                    error="the arguments are not a JSON object",
                    type="invalid_tool_call",
                )
            )
            continue
        valid.append(ToolCall(name=call.name, args=args, id=call_id, type="tool_call"))
    return AIMessage(content=content or "", tool_calls=valid, invalid_tool_calls=invalid)


def _run(
    context: QueryContext,
    ref: int,
    name: str,
    arguments: dict[str, Any] | str,
    invalid: str | None,
) -> AgentCall:
    if invalid is not None or not isinstance(arguments, dict):
        return AgentCall(
            ref=ref,
            tool=name,
            arguments=arguments,
            status="error",
            error=f"bad arguments: {invalid or 'not a JSON object'}",
        )
    try:
        result = call_tool(context, name, arguments)
    except PatchpilotError as exc:  # a tool that cannot read the store: an error result
        result = QueryResult(tool=name, understood_as="", error=f"the tool failed: {exc}")
    except Exception as exc:  # a tool's bug, reached by a model's arguments: logged, not fatal
        log.exception("chat.agent.tool_crashed", tool=name)
        result = QueryResult(
            tool=name, understood_as="", error=f"the tool failed ({type(exc).__name__})"
        )
    if result.error is not None:
        return AgentCall(
            ref=ref,
            tool=name,
            arguments=arguments,
            status="error",
            understood_as=result.understood_as,
            error=result.error,
        )
    return AgentCall(
        ref=ref,
        tool=name,
        arguments=arguments,
        status="ok",
        understood_as=result.understood_as,
        total=result.total,
        columns=result.columns,
        rows=result.rows,
        text=result.text,
    )


def _result_content(call: AgentCall) -> str:
    """The result as the model reads it: numbered, fenced, rows cut to fit."""
    payload: dict[str, Any] = {"result": f"[{call.ref}]", "tool": call.tool}
    if call.status != "ok":
        payload["error"] = call.error
        return fence(f"tool result [{call.ref}]", as_json(payload))
    payload.update(understood_as=call.understood_as, total=call.total, columns=list(call.columns))
    rows: list[dict[str, Any]] = []
    base = len(as_json(payload)) + len(call.text)
    size = base
    for row in call.rows:
        size += len(as_json(row)) + 1
        if size > MAX_RESULT_CHARS:
            break
        rows.append(row)
    payload["rows"] = rows
    if len(rows) < call.total:
        payload["rows_shown"] = f"{len(rows)} of {call.total}"
    if base < MAX_RESULT_CHARS:
        payload["text"] = call.text
    return fence(f"tool result [{call.ref}]", as_json(payload))


def _counted(calls: Sequence[AgentCall]) -> int:
    """Calls that count against the budget (run or refused for bad input)."""
    return sum(1 for c in calls if c.status != "refused")


def _canonical(arguments: dict[str, Any] | str) -> str:
    if isinstance(arguments, str):
        return arguments.strip()
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)


def _short(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_short(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)

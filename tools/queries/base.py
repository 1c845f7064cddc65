"""The contract of a read-only question tool: typed input, typed rows, no side effects.

Every question the chat answers (pending updates, findings, reboots, holds, compliance, runs,
approvals, history, feeds…) is one :class:`QueryTool`: a name, a one-line description, a
pydantic input model and a function from ``(QueryContext, input)`` to a :class:`QueryResult`
with the rows the CLI would print. The deterministic chat calls them directly; the LLM agent
sees the same catalog (:data:`CATALOG`) as OpenAI tools (name, description, the input model's
JSON Schema) and can only call them through :func:`call_tool`, which validates the arguments
and never raises on bad input from a model: it returns an error result the agent can read.

Tools read the store (and settings/inventory, already loaded); they never write, plan, decide
or open a connection.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from patchpilot.core.inventory import Inventory
from patchpilot.core.policy import Policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store

__all__ = [
    "CATALOG",
    "QueryContext",
    "QueryInput",
    "QueryResult",
    "QueryTool",
    "call_tool",
    "register",
]

MAX_ROWS = 200
"""Most rows one tool returns (the answer says how many more there were)."""


class QueryInput(BaseModel):
    """Base of every tool's input: unknown fields are refused, nothing is coerced silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class QueryResult(BaseModel):
    """What a tool returns: the rows, what the question was understood as, and any error."""

    model_config = ConfigDict(frozen=True)

    tool: str
    understood_as: str = Field(description="the question as the tool read it, one line")
    columns: tuple[str, ...] = ()
    rows: tuple[dict[str, Any], ...] = ()
    total: int = Field(default=0, description="rows before the MAX_ROWS cut")
    text: str = Field(default="", description="the answer for a person, built from the rows")
    error: str | None = Field(default=None, description="why the call was refused, if it was")

    @classmethod
    def of(
        cls,
        tool: str,
        understood_as: str,
        columns: Sequence[str],
        rows: Sequence[dict[str, Any]],
        text: str,
    ) -> QueryResult:
        """A result with ``rows`` cut to :data:`MAX_ROWS` and ``total`` how many there were."""
        return cls(
            tool=tool,
            understood_as=understood_as,
            columns=tuple(columns),
            rows=tuple(rows[:MAX_ROWS]),
            total=len(rows),
            text=text,
        )


@dataclass
class QueryContext:
    """What tools may read. Built once per chat session by the application layer."""

    settings: Settings
    store: Store
    policy: Policy | None = None
    inventory: Inventory | None = None
    extra: dict[str, Any] = field(default_factory=dict)


In = TypeVar("In", bound=QueryInput)


@dataclass(frozen=True)
class QueryTool(Generic[In]):
    """One read-only question tool."""

    name: str
    description: str
    input_model: type[In]
    run: Callable[[QueryContext, In], QueryResult]

    def openai_schema(self) -> dict[str, Any]:
        """The tool as OpenAI's ``tools=[{"type": "function", ...}]`` entry."""
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_model.model_json_schema(),
            },
        }


CATALOG: dict[str, QueryTool[Any]] = {}
"""Every registered tool by name (filled by the modules of this package on import)."""


def register(tool: QueryTool[In]) -> QueryTool[In]:
    """Add ``tool`` to :data:`CATALOG` (names are unique)."""
    if tool.name in CATALOG:
        raise ValueError(f"query tool {tool.name!r} is registered twice")
    CATALOG[tool.name] = tool
    return tool


def call_tool(context: QueryContext, name: str, arguments: Mapping[str, Any] | None) -> QueryResult:
    """Validate ``arguments`` for tool ``name`` and run it; bad input is an error result.

    An unknown tool or arguments that do not validate never raise: the result's ``error``
    says what was wrong, so a model (or a person) can correct the call.
    """
    tool = CATALOG.get(name)
    if tool is None:
        known = ", ".join(sorted(CATALOG))
        return QueryResult(tool=name, understood_as="", error=f"no tool {name!r}; tools: {known}")
    try:
        args = tool.input_model.model_validate(dict(arguments or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
        )
        return QueryResult(tool=name, understood_as="", error=f"bad arguments: {problems}")
    return tool.run(context, args)

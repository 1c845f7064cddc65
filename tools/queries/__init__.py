"""Read-only question tools over the store: the chat's (and the LLM agent's) typed tools.

See :mod:`patchpilot.tools.queries.base` for the contract. Importing this package registers
every tool in :data:`CATALOG`.
"""

from __future__ import annotations

from patchpilot.tools.queries.base import (
    CATALOG,
    QueryContext,
    QueryInput,
    QueryResult,
    QueryTool,
    call_tool,
    register,
)

__all__ = [
    "CATALOG",
    "QueryContext",
    "QueryInput",
    "QueryResult",
    "QueryTool",
    "call_tool",
    "register",
]

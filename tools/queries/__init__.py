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
from patchpilot.tools.queries.feeds import FEEDS
from patchpilot.tools.queries.findings import FINDINGS
from patchpilot.tools.queries.history import HISTORY
from patchpilot.tools.queries.hosts import HOLDS, PENDING_UPDATES, REBOOT_NEEDED
from patchpilot.tools.queries.runs import APPROVALS, RUNS

__all__ = [
    "APPROVALS",
    "CATALOG",
    "FEEDS",
    "FINDINGS",
    "HISTORY",
    "HOLDS",
    "PENDING_UPDATES",
    "REBOOT_NEEDED",
    "RUNS",
    "QueryContext",
    "QueryInput",
    "QueryResult",
    "QueryTool",
    "call_tool",
    "register",
]

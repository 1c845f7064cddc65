"""Vector memory: past decisions, upgrade outcomes and incidents, recalled by similarity.

A tool (it stores and recalls; it never decides and never calls an agent)::

    from patchpilot.tools.memory import OutcomeMemory, VectorMemory

    with VectorMemory.open(settings) as memory:
        memory.remember_outcome(OutcomeMemory(run_id="r1", host="canary-1", package="acme-web",
                                              from_version="1.1.0", to_version="1.2.0",
                                              status="rollback", error="HTTP 503"))
        memory.recall("acme-web health check failed", kinds=("outcomes", "incidents"))
        memory.outcomes_for("acme-web", "1.2.0")

* :mod:`patchpilot.tools.memory.store`: :class:`VectorMemory` over Chroma (embedded or a server);
* :mod:`patchpilot.tools.memory.records`: the frozen records and :class:`Recalled`;
* :mod:`patchpilot.tools.memory.embeddings`: the registered, offline
  :class:`HashingEmbeddingFunction`
  and the OpenAI-compatible one;
* :mod:`patchpilot.tools.memory.errors`: :class:`VectorMemoryError` and its subclasses.
"""

from __future__ import annotations

from patchpilot.tools.memory.embeddings import (
    HashingEmbeddingFunction,
    OpenAICompatEmbeddingFunction,
    embedding_function,
)
from patchpilot.tools.memory.errors import (
    EmbeddingMismatchError,
    VectorMemoryError,
    VectorMemoryUnavailable,
)
from patchpilot.tools.memory.records import (
    KINDS,
    DecisionMemory,
    IncidentMemory,
    MemoryKind,
    MemoryRecord,
    OutcomeMemory,
    OutcomeStatus,
    Recalled,
)
from patchpilot.tools.memory.store import VectorMemory

__all__ = [
    "KINDS",
    "DecisionMemory",
    "EmbeddingMismatchError",
    "HashingEmbeddingFunction",
    "IncidentMemory",
    "MemoryKind",
    "MemoryRecord",
    "OpenAICompatEmbeddingFunction",
    "OutcomeMemory",
    "OutcomeStatus",
    "Recalled",
    "VectorMemory",
    "VectorMemoryError",
    "VectorMemoryUnavailable",
    "embedding_function",
]

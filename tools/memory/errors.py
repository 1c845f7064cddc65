"""Vector-memory errors.

All derive from :class:`patchpilot.core.errors.PatchpilotError`; the builtin mixins decide whether a
caller (LangGraph's default retry policy, our CLI) retries them:

    PatchpilotError
    └── VectorMemoryError                          any failure of the Chroma-backed memory
        ├── VectorMemoryUnavailable (ConnectionError)  server / embeddings endpoint unreachable
        └── EmbeddingMismatchError (ValueError)        memory built with another embedding

Every message starts with the memory's location (its directory or server URL), so an operator
knows which store to look at.
"""

from __future__ import annotations

from patchpilot.core.errors import PatchpilotError

__all__ = ["EmbeddingMismatchError", "VectorMemoryError", "VectorMemoryUnavailable"]


class VectorMemoryError(PatchpilotError):
    """The vector memory could not be opened, written or queried.

    Attributes:
        location: The memory's directory or server URL.
        reason: What went wrong and what to do about it, without the location.
    """

    def __init__(self, location: str, reason: str) -> None:
        self.location = location
        self.reason = reason
        super().__init__(f"vector memory {location}: {reason}")


class VectorMemoryUnavailable(VectorMemoryError, ConnectionError):
    """The Chroma server or the embeddings endpoint could not be reached (transient; retried)."""


class EmbeddingMismatchError(VectorMemoryError, ValueError):
    """The memory was built with a different embedding function than the one configured.

    Vectors of different embedding functions are not comparable, so this is never retried: point
    the settings back at the original embedding, or at a fresh memory.
    """

"""Feed errors.

Both derive from :class:`patchpilot.errors.PatchpilotError` and from the builtin that decides
whether a caller (LangGraph's default retry policy, our own CLI) retries them:

    PatchpilotError
    ├── FeedError (ValueError)             bad, oversized, wrong-schema or non-UTF-8 document
    └── FeedFetchError (ConnectionError)   network / HTTP failure that outlived our retries

A :class:`FeedError` is deterministic (the same bytes fail the same way) and is never retried; a
:class:`FeedFetchError` is transient and may be retried later.
"""

from __future__ import annotations

from patchpilot.errors import PatchpilotError

__all__ = ["FeedError", "FeedFetchError"]


class FeedError(PatchpilotError, ValueError):
    """A feed document is malformed, oversized, not UTF-8 or not in the expected schema.

    The message names the document and, when known, the line number or the record, so an
    operator can find the offending bytes.

    Attributes:
        reason: What is wrong, without the location.
        source: The URL or file path of the document, if known.
        line: The 1-based line number of the offending line, if known.
        record: The record (advisory id, file inside an archive…) at fault, if known.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | None = None,
        line: int | None = None,
        record: str | None = None,
    ) -> None:
        self.reason = reason
        self.source = source
        self.line = line
        self.record = record
        where: list[str] = []
        if source:
            where.append(source)
        if line is not None:
            where.append(f"line {line}")
        if record:
            where.append(f"record {record}")
        super().__init__(f"{', '.join(where)}: {reason}" if where else reason)


class FeedFetchError(PatchpilotError, ConnectionError):
    """Downloading a feed failed (network error or HTTP error status) after all retries.

    Attributes:
        url: The URL that failed (credentials never included).
        reason: What went wrong.
        status: The last HTTP status received, if any.
        attempts: How many attempts were made.
    """

    def __init__(
        self, url: str, reason: str, *, status: int | None = None, attempts: int | None = None
    ) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        self.attempts = attempts
        after = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
        super().__init__(f"fetching {url} failed{after}: {reason}")

"""Helpers shared by the feed parsers: decoding, size limits, dates and untrusted text."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, date, datetime
from typing import Any, Final

from patchpilot.core.errors import FeedError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SUMMARY_MAX_CHARS",
    "clean_text",
    "decode_utf8",
    "load_json",
    "parse_date",
    "parse_timestamp",
    "sha256_hex",
    "truncation_hint",
]

DEFAULT_MAX_BYTES: Final = 512 * 1024 * 1024
"""Largest document (or decompressed document) a parser or the fetcher accepts by default."""

SUMMARY_MAX_CHARS: Final = 500
"""Advisory summaries are truncated to this many characters."""

# ANSI/VT escape sequences: CSI (ESC [ … final), OSC (ESC ] … BEL or ST), and two-byte escapes.
_ANSI_RE: Final = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, terminated by BEL or ST (or unterminated)
    r"|\x1b[P^_][^\x1b]*(?:\x1b\\)?"  # DCS / PM / APC strings
    r"|\x1b[@-Z\\-_]"  # other two-byte escapes
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
# Remaining control characters (except tab and newline), DEL, C1 controls, and the Unicode
# bidirectional overrides/isolates used in "Trojan Source" style display attacks.
_CONTROL_RE: Final = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def sha256_hex(data: bytes) -> str:
    """Return the hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def decode_utf8(data: bytes, *, source: str) -> str:
    """Decode a feed document as strict UTF-8 (a leading BOM is dropped).

    Args:
        data: The raw bytes.
        source: Where they came from, for the error message.

    Returns:
        The text.

    Raises:
        FeedError: If the bytes are not valid UTF-8; names the line and byte offset.
    """
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FeedError(
            f"not valid UTF-8 (byte offset {exc.start}: {exc.reason})", source=source, line=line
        ) from None


def load_json(data: bytes, *, source: str) -> Any:
    """Decode and parse a JSON document.

    Args:
        data: The raw bytes (UTF-8).
        source: Where they came from, for the error message.

    Returns:
        The parsed document.

    Raises:
        FeedError: If the bytes are not UTF-8 or not JSON (a truncated download, for example).
    """
    text = decode_utf8(data, source=source)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = "extra data after the document" if exc.msg == "Extra data" else exc.msg
        raise FeedError(
            f"not valid JSON: {reason}, column {exc.colno}{truncation_hint(exc, text)}",
            source=source,
            line=exc.lineno,
        ) from None
    except (ValueError, RecursionError) as exc:  # huge integers, absurd nesting
        raise FeedError(f"not valid JSON: {exc}", source=source) from None


def truncation_hint(exc: json.JSONDecodeError, text: str) -> str:
    """A hint to add to a JSON error that looks like a cut-off document."""
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        return " (document is truncated?)"
    return ""


def clean_text(text: object, *, limit: int | None = SUMMARY_MAX_CHARS) -> str | None:
    """Make untrusted feed text safe to store and display; it stays plain data.

    ANSI/VT escape sequences, control characters (other than tab and newline) and bidirectional
    overrides are removed; line endings are normalised; the result is stripped and truncated to
    ``limit`` characters (an ellipsis marks the cut). Nothing else is changed: shell
    metacharacters and instruction-like wording are kept verbatim, because the text is only
    ever stored and shown, never interpreted.

    Args:
        text: The feed's text; anything that is not a string gives ``None``.
        limit: The maximum length, or ``None`` for no limit.

    Returns:
        The cleaned text, or ``None`` when there is none.
    """
    if not isinstance(text, str):
        return None
    cleaned = _ANSI_RE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    cleaned = _CONTROL_RE.sub("", cleaned).strip()
    if not cleaned:
        return None
    if limit is not None and len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 1, 0)].rstrip() + "…"
    return cleaned


def parse_timestamp(
    value: object, *, what: str, source: str, record: str | None = None
) -> datetime:
    """Parse an ISO 8601 / RFC 3339 timestamp; a naive one is taken as UTC.

    Args:
        value: The feed's value.
        what: The field name, for the error message.
        source: Where it came from, for the error message.
        record: The record it belongs to, for the error message.

    Returns:
        A timezone-aware datetime in UTC.

    Raises:
        FeedError: If it is not a timestamp.
    """
    if not isinstance(value, str):
        raise FeedError(
            f"{what} is not a timestamp string: {value!r}", source=source, record=record
        )
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise FeedError(
            f"{what} is not a timestamp: {value!r}", source=source, record=record
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def parse_date(value: object, *, what: str, source: str, record: str | None = None) -> date:
    """Parse a ``YYYY-MM-DD`` date.

    Args:
        value: The feed's value.
        what: The field name, for the error message.
        source: Where it came from, for the error message.
        record: The record it belongs to, for the error message.

    Returns:
        The date.

    Raises:
        FeedError: If it is not a date.
    """
    if not isinstance(value, str):
        raise FeedError(f"{what} is not a date string: {value!r}", source=source, record=record)
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise FeedError(f"{what} is not a date: {value!r}", source=source, record=record) from None

"""Rendering and bounding text that comes from outside patchpilot.

Every string from outside (inventory, feeds, comments, chat, an LLM) is untrusted. Two rules:

- **Bound it before processing it**: :func:`bounded` refuses text that is too long or carries
  control characters, with :class:`~patchpilot.core.errors.InvalidInputError`, at the boundary and
  before any side effect.
- **Render it inert on every output**: :func:`inert` replaces control characters (C0 except
  newline and tab, DEL, C1, and the Unicode bidirectional overrides) by visible ``\\xNN`` /
  ``\\uNNNN`` escapes, so terminal escape sequences in an approval comment, a host name or a
  model's answer can never drive the reader's terminal.
"""

from __future__ import annotations

import re
from typing import Final

from patchpilot.core.errors import InvalidInputError

__all__ = ["MAX_COMMENT_LENGTH", "bounded", "has_control", "inert"]

MAX_COMMENT_LENGTH: Final = 2000
"""Longest approval/rejection/acceptance comment accepted, in characters."""

# C0 controls except \t and \n, DEL, C1 controls, bidi embeddings/overrides/isolates,
# line/paragraph separators (they move the cursor like a newline in some terminals).
_CONTROL: Final = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)
_CONTROL_OR_NEWLINE: Final = re.compile(
    "[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]"
)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def has_control(text: str, *, newlines: bool = True) -> bool:
    """Whether ``text`` holds a character :func:`inert` would escape."""
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    return pattern.search(text) is not None


def inert(text: str, *, newlines: bool = True) -> str:
    """``text`` with every control character shown as a visible escape (see the module).

    Args:
        text: Untrusted text.
        newlines: Keep ``\\n`` and ``\\t`` as they are (else they are escaped too).
    """
    pattern = _CONTROL if newlines else _CONTROL_OR_NEWLINE
    return pattern.sub(_escape, text)


def bounded(
    text: str, *, what: str, max_length: int = MAX_COMMENT_LENGTH, newlines: bool = True
) -> str:
    """``text`` unchanged if it is at most ``max_length`` characters with no control character.

    Raises:
        InvalidInputError: too long, or a control character (an escape sequence) in it;
            the message names ``what`` and says how to fix it.
    """
    if len(text) > max_length:
        raise InvalidInputError(
            what, f"{len(text)} characters, at most {max_length} are accepted; shorten it"
        )
    if has_control(text, newlines=newlines):
        found = (_CONTROL if newlines else _CONTROL_OR_NEWLINE).search(text)
        assert found is not None
        raise InvalidInputError(
            what,
            f"control character {_escape(found)} at position {found.start()} "
            "(terminal escape sequences are refused); remove it",
        )
    return text

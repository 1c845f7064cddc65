"""Request bodies of the REST API: pydantic models that refuse unknown fields (422).

Every string has an upper bound; package specs, comments and chat text are validated with the
same rules as the CLI (:mod:`patchpilot.core.validate`, :func:`patchpilot.core.text.bounded`), so
what the API accepts the CLI would have accepted too.
"""

from __future__ import annotations

from typing import Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.models import Ecosystem
from patchpilot.core.text import MAX_COMMENT_LENGTH, bounded
from patchpilot.core.validate import split_pin, validate_package_name

__all__ = [
    "MAX_ASK_LENGTH",
    "MAX_ONLY_ITEMS",
    "MAX_PATTERN_LENGTH",
    "AskBody",
    "DecisionBody",
    "RunCreate",
    "parse_only",
]

MAX_ONLY_ITEMS: Final = 200
"""Most ``only`` entries in one run request."""
MAX_PATTERN_LENGTH: Final = 1000
"""Longest ``limit``/``target`` pattern accepted."""
MAX_ASK_LENGTH: Final = 4000
"""Longest ``POST /api/v1/ask`` text (the chat reads at most 2,000 characters and says so)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


def parse_only(specs: list[str]) -> list[tuple[str, str | None]]:
    """``NAME`` or ``NAME=VERSION`` specs as ``(name, version)`` pairs (as ``run --only``).

    Raises:
        ValueError: a spec is not a valid Debian package name or pin.
    """
    parsed: list[tuple[str, str | None]] = []
    for spec in specs:
        try:
            if "=" in spec:
                parsed.append(split_pin(spec, Ecosystem.DEBIAN))
            else:
                parsed.append((validate_package_name(spec, Ecosystem.DEBIAN), None))
        except PatchpilotError as exc:
            raise ValueError(f"{spec!r}: {exc}") from exc
    return parsed


class RunCreate(_Body):
    """``POST /api/v1/runs``: what to patch (both optional: every pending update, all hosts)."""

    only: list[str] | None = Field(
        default=None,
        max_length=MAX_ONLY_ITEMS,
        description="NAME or NAME=VERSION items, as `patchpilot run --only`",
        examples=[["acme-web=1.1.0"]],
    )
    limit: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_PATTERN_LENGTH,
        description="host pattern, as `patchpilot run --limit` (`all`: every host)",
        examples=["all"],
    )
    target: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="a host, group or tag (default: all)",
    )
    dry_run: bool = Field(default=False, description="plan, test and pre-check only")
    security_only: bool = Field(
        default=False,
        description="plan only updates that close a known security advisory, as `patchpilot "
        "run --security-only` (the others are listed as excluded: not a security update)",
    )

    @field_validator("only")
    @classmethod
    def _only(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            for spec in value:
                bounded(spec, what="only", max_length=MAX_PATTERN_LENGTH, newlines=False)
            parse_only(value)
        return value

    @field_validator("limit", "target")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None:
            bounded(value, what="pattern", max_length=MAX_PATTERN_LENGTH, newlines=False)
        return value


class DecisionBody(_Body):
    """``POST /api/v1/approvals/{run_id}/approve`` (or ``/reject``): why."""

    comment: str | None = Field(
        default=None,
        max_length=MAX_COMMENT_LENGTH,
        description=f"why (audit-logged; at most {MAX_COMMENT_LENGTH} characters, no control "
        "characters)",
    )

    @field_validator("comment")
    @classmethod
    def _comment(cls, value: str | None) -> str | None:
        return None if value is None else bounded(value, what="comment")


class AskBody(_Body):
    """``POST /api/v1/ask``: one chat request."""

    text: str = Field(min_length=1, max_length=MAX_ASK_LENGTH, description="the request")

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return bounded(value, what="text", max_length=MAX_ASK_LENGTH, newlines=False)

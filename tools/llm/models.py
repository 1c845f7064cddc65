"""The records an LLM call returns: its result, the fallback, and token/call accounting."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, computed_field

__all__ = ["LLMFallback", "LLMResult", "LLMUsage", "TokenUsage"]

T = TypeVar("T", bound=BaseModel)


class TokenUsage(BaseModel):
    """Tokens spent by one call (all its attempts), as the endpoint reported them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: TokenUsage) -> TokenUsage:
        return TokenUsage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
        )


class LLMUsage(BaseModel):
    """What one :class:`~patchpilot.tools.llm.client.LLMClient` has spent so far (one client per
    run).

    Attributes:
        calls: requests sent to the endpoint, every attempt included (what the call budget
            counts); cache hits are not calls.
        prompt_tokens: prompt tokens reported by the endpoint.
        completion_tokens: completion tokens reported by the endpoint.
        cache_hits: answers served from the response cache.
        retries: attempts that failed transiently and were retried.
        failures: calls (``complete``/``embed``) that ended in an :class:`LLMError`.
        fallbacks: failures that :func:`~patchpilot.tools.llm.client.try_complete` turned into an
            :class:`LLMFallback`.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    calls: int = Field(default=0, ge=0)
    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cache_hits: int = Field(default=0, ge=0)
    retries: int = Field(default=0, ge=0)
    failures: int = Field(default=0, ge=0)
    fallbacks: int = Field(default=0, ge=0)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens (what the token budget counts)."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class LLMResult(Generic[T]):
    """A validated structured answer.

    A dataclass rather than a pydantic model so ``value`` keeps its own type (a pydantic field
    typed by a ``TypeVar`` would serialise a subclass as its bound).

    Attributes:
        value: the answer, validated against the requested schema.
        task: the task (prompt name) asked.
        prompt_version: the prompt's version.
        model: the model that answered (as the endpoint named it; the configured model for a
            cache hit).
        usage: tokens spent by this call, all attempts included (zero for a cache hit).
        cached: True when the answer came from the response cache (nothing was sent).
        attempts: requests sent for this call (0 for a cache hit).
    """

    value: T
    task: str
    prompt_version: str
    model: str
    usage: TokenUsage
    cached: bool
    attempts: int


class LLMFallback(BaseModel):
    """No usable LLM answer: the agent falls back to its deterministic core and says so.

    Attributes:
        task: the task (prompt name) that was asked.
        reason: why, for the run report (e.g. ``"no LLM configured"`` or the error message).
        error: the :class:`~patchpilot.tools.llm.errors.LLMError` class name, ``None`` when no LLM
        is
            configured.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    reason: str
    error: str | None = None

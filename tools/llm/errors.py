"""LLM errors.

All derive from :class:`patchpilot.core.errors.PatchpilotError`. :class:`LLMError` also derives from
``RuntimeError`` on purpose: :class:`~patchpilot.tools.llm.client.LLMClient` already retried
whatever can
be retried (tenacity, the *only* retry layer), and LangGraph's default retry policy never retries
a ``RuntimeError``, so a node that lets an LLM error escape is not retried a second time::

    PatchpilotError
    └── LLMError (RuntimeError)                   any failure of an LLM call
        ├── LLMConfigError (ValueError)           the settings cannot work (no base_url, no
        │                                         embeddings model, bad messages)
        ├── LLMRequestError (ValueError)          the endpoint refused the request (400, 401,
        │                                         403, 404, 422...): never retried
        ├── LLMUnavailableError                   429 / 5xx / timeout / connection failure on
        │                                         every attempt (retries exhausted)
        ├── LLMOutputError (ValueError)           the answer is not valid JSON for the schema,
        │                                         truncated, refused or filtered (after retries)
        └── LLMBudgetExceeded                     the run's call or token budget is spent;
                                                  raised before sending

Every message names the endpoint (``base_url``), the model and, when known, the task, and says
what to do. Agents normally never see these: :func:`~patchpilot.tools.llm.client.try_complete`
turns any of
them into an :class:`~patchpilot.tools.llm.models.LLMFallback` and the agent runs its deterministic
core.
"""

from __future__ import annotations

from patchpilot.core.errors import PatchpilotError

__all__ = [
    "LLMBudgetExceeded",
    "LLMConfigError",
    "LLMError",
    "LLMOutputError",
    "LLMRequestError",
    "LLMUnavailableError",
]


class LLMError(PatchpilotError, RuntimeError):
    """An LLM call failed.

    Attributes:
        reason: what went wrong and what to do, without the location.
        base_url: the endpoint, when known.
        model: the model, when known.
        task: the task (prompt name) of the call, when known.
        attempts: requests sent for this call before giving up (0: none was sent).
    """

    def __init__(
        self,
        reason: str,
        *,
        base_url: str | None = None,
        model: str | None = None,
        task: str | None = None,
        attempts: int = 0,
    ) -> None:
        self.reason = reason
        self.base_url = base_url
        self.model = model
        self.task = task
        self.attempts = attempts
        where = []
        if model:
            where.append(f"model {model}")
        if base_url:
            where.append(f"at {base_url}")
        if task:
            where.append(f"task {task}")
        prefix = f"LLM {' '.join(where)}: " if where else "LLM: "
        super().__init__(prefix + reason)


class LLMConfigError(LLMError, ValueError):
    """The LLM settings (or the arguments of a call) cannot work; fix the configuration."""


class LLMRequestError(LLMError, ValueError):
    """The endpoint refused the request with a status that retrying cannot fix.

    Attributes:
        status: the HTTP status (400, 401, 403, 404, 422...).
    """

    def __init__(
        self,
        reason: str,
        *,
        status: int,
        base_url: str | None = None,
        model: str | None = None,
        task: str | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        super().__init__(
            f"HTTP {status}: {reason}",
            base_url=base_url,
            model=model,
            task=task,
            attempts=attempts,
        )


class LLMUnavailableError(LLMError):
    """Rate limits, server errors, timeouts or connection failures outlasted every retry.

    Deliberately *not* a ``ConnectionError``: that would make LangGraph's default policy retry
    again on top of our own retries.
    """


class LLMOutputError(LLMError, ValueError):
    """The model's answer was unusable (not JSON, not the schema, truncated, refused, filtered)."""


class LLMBudgetExceeded(LLMError):
    """The run's budget of LLM calls or tokens is spent; no request was sent.

    Attributes:
        limit: which budget (``"calls"`` or ``"tokens"``).
        used: what the run has used so far.
        allowed: the configured limit.
    """

    def __init__(
        self,
        limit: str,
        used: int,
        allowed: int,
        *,
        base_url: str | None = None,
        model: str | None = None,
        task: str | None = None,
    ) -> None:
        self.limit = limit
        self.used = used
        self.allowed = allowed
        setting = "max_calls_per_run" if limit == "calls" else "max_tokens_per_run"
        super().__init__(
            f"the run's {limit} budget is spent ({used} used of {allowed}); "
            f"raise llm.{setting} or continue without the LLM",
            base_url=base_url,
            model=model,
            task=task,
        )

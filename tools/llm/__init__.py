"""Optional LLM assistance: structured answers from any OpenAI-compatible endpoint.

:mod:`.client` holds :class:`LLMClient` (strict ``json_schema`` output validated with pydantic,
one tenacity retry layer, a total deadline per call, a per-run budget, a response cache) plus
:func:`make_client` and :func:`try_complete`; :mod:`.transport` the bounded HTTP client the SDK
is given (every connect/read/write within the call's ``llm.deadline``, bodies capped at
``llm.max_response_bytes`` while they are read); :mod:`.params` what each endpoint and model
accepts (``max_completion_tokens`` or ``max_tokens``, a temperature or none), learned from its
400s and remembered per process and in ``<cache_dir>/llm/endpoints.json``; :mod:`.models` the
records (:class:`LLMResult`, :class:`LLMFallback`, :class:`LLMUsage`); :mod:`.errors` the
exception family.

No LLM configured is the default and a supported mode: :func:`make_client` returns ``None``,
:func:`try_complete` then returns an :class:`LLMFallback`, and every agent runs its
deterministic core::

    client = make_client(settings.llm, cache_dir=settings.cache_dir, run_id=run_id)
    answer = try_complete(client, prompt.name, prompt.version, messages, Schema)
    if isinstance(answer, LLMFallback):
        ...  # deterministic core; report answer.reason
    else:
        ...  # answer.value is a validated Schema: check it against the plan before use
"""

from __future__ import annotations

from patchpilot.tools.llm.client import (
    DEFAULT_MAX_WAIT,
    CallOptions,
    LLMClient,
    make_client,
    try_complete,
)
from patchpilot.tools.llm.errors import (
    LLMBudgetExceeded,
    LLMConfigError,
    LLMError,
    LLMOutputError,
    LLMRequestError,
    LLMUnavailableError,
)
from patchpilot.tools.llm.models import LLMFallback, LLMResult, LLMUsage, TokenUsage
from patchpilot.tools.llm.transport import ResponseRefused, deadline_scope, make_http_client

__all__ = [
    "DEFAULT_MAX_WAIT",
    "CallOptions",
    "LLMBudgetExceeded",
    "LLMClient",
    "LLMConfigError",
    "LLMError",
    "LLMFallback",
    "LLMOutputError",
    "LLMRequestError",
    "LLMResult",
    "LLMUnavailableError",
    "LLMUsage",
    "ResponseRefused",
    "TokenUsage",
    "deadline_scope",
    "make_client",
    "make_http_client",
    "try_complete",
]

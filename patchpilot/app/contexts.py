"""The one factory of the run-time context of a scan or a patch run, for every use case.

A scan's start and its resume, a run's start and every continuation (resume, approve, reject,
expiry, the chat) build their context here, from :meth:`ScanContext.create
<patchpilot.graphs.scan.ScanContext.create>`, so a resumed run has the changelogs, memory and
LLM its start had. A patch run's audit log names the acting identity (``actor``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from patchpilot.core.audit import AuditLog
from patchpilot.core.policy import Policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store
from patchpilot.graphs.run import MetricsCollector, ProvidersCollector, RunContext, StoreStages
from patchpilot.graphs.scan import ScanContext
from patchpilot.tools.metrics import HostProvider, HttpProvider, PrometheusProvider, Providers

if TYPE_CHECKING:
    from patchpilot.tools.llm import LLMClient
    from patchpilot.tools.memory import VectorMemory

__all__ = ["metric_providers", "run_context", "run_context_factory", "scan_context"]


def scan_context(settings: Settings, store: Store, policy: Policy) -> ScanContext:
    """The context of a scan (start and resume alike)."""
    return ScanContext.create(settings, store, policy)


def run_context(
    settings: Settings,
    store: Store,
    policy: Policy,
    *,
    actor: str,
    memory: VectorMemory | None = None,
    llm: LLMClient | None = None,
) -> RunContext:
    """The context of a patch run (start and every continuation alike), audited as ``actor``.

    ``memory`` and ``llm`` share ones already open (a chat session); by default the factory
    opens them as the start did.
    """
    context = RunContext.create(settings, store, policy, memory=memory, llm=llm)
    context.audit = AuditLog.for_settings(settings, actor=actor)
    context.stages = StoreStages(store, context.clock)  # stage times in the store
    context.metrics = lambda: metric_providers(context)  # post-patch analysis
    return context


def metric_providers(context: RunContext) -> MetricsCollector:
    """The real metric providers of a run's post-patch analysis: HTTP probes, Prometheus, and
    host signals over the run's own transport factory (closed after each collection)."""
    settings = context.settings
    factory = context.transport_factory
    return ProvidersCollector(
        Providers(
            http=HttpProvider(),
            prometheus=PrometheusProvider(),
            host=HostProvider(lambda host: factory(host, settings)),
        )
    )


def run_context_factory(
    settings: Settings, store: Store, *, actor: str
) -> Callable[[Policy], RunContext]:
    """:func:`run_context` for a run's frozen policy (what continuing a run needs)."""
    return lambda policy: run_context(settings, store, policy, actor=actor)

"""The SQLite store: one facade, :class:`Store`, over the store's repositories.

One database file (``Settings.store_path``) in WAL mode, with foreign keys on and a busy
timeout, so several threads and processes can read while one writes. Each thread gets its own
connection; every write is one explicit ``BEGIN IMMEDIATE`` transaction that either commits
whole or rolls back whole (a failed write leaves the store as it was). The schema is versioned
with ``PRAGMA user_version`` and migrated forward on open (:mod:`patchpilot.core.store.schema`).

Bulk data (inventories, findings, outcomes) lives here; graph state carries only run ids.
Feed text (advisory summaries...) is untrusted data: stored and returned, never interpreted,
and SQL only ever receives it as bound parameters.

Each group of tables has its repository, a class over the shared connection and transaction
helpers of :class:`~patchpilot.core.store.base.StoreBase`:

========================  =================================================================
repository                tables / methods
========================  =================================================================
``FeedsRepository``       ``feeds``: import_batch, feed_status, feed_validators
``AdvisoriesRepository``  advisories, provenance, CVSS/EPSS/KEV: has_advisories,
                          advisories_for, advisory_index, advisories_by_cve,
                          advisory_provenance, enrichment
``RunsRepository``        ``runs``: create_run, finish_run, set_run_status, list_runs, get_run
``HostsRepository``       ``run_hosts``, packages, pending: save_host_snapshot,
                          load_host_snapshot, record_host_failure, host_results
``FindingsRepository``    findings, first seen, risk: replace_findings(_bulk),
                          first_seen_map, save_risk, findings
``OutcomesRepository``    ``deployment_outcomes``: record_outcome, recent_outcomes, outcomes
``RolloutRepository``     deployments, approvals, baseline rejections
``VotesRepository``       ``approval_votes``: approvals by N distinct people (vote_approval)
``UsersRepository``       ``users``, ``user_tokens``: add_user, replace_token, disable_user,
                          users, token_row (tokens stored as argon2 hashes only)
``SessionsRepository``    passwords, ``web_sessions``: set_password_hash, password_row,
                          create_session, live_session, end_session
``FleetRepository``       read-only fleet summaries (discovery, findings, history) for the
                          dashboard: discovery_overview, findings_overview...
``JobsRepository``        ``jobs``: the service executor's queue (enqueue_run, claim_job...)
``SchedulesRepository``   ``schedules``, ``schedule_occurrences``: add/list/remove, claim
                          each occurrence exactly once
``StagesRepository``      ``run_stages``, ``run_cancels``: stage durations (stage_started,
                          stage_ended, run_stages), cancel requests (request_cancel)
``ComplianceRepository``  ``compliance_items``, ``compliance_events``, ``compliance_scans``:
                          compliance history against SLAs (compliance_pending,
                          compliance_apply, compliance_items, claim_compliance_breaches)
``LoadRepository``        ``load_samples``: the hosts' load history (record_load_samples,
                          load_samples); read-only history for analytics and forecasts
========================  =================================================================
"""

from __future__ import annotations

from patchpilot.core.store.advisories import AdvisoriesRepository
from patchpilot.core.store.compliance import ComplianceRepository
from patchpilot.core.store.feeds import PUBLISHED_LAG, FeedsRepository
from patchpilot.core.store.findings import FindingsRepository
from patchpilot.core.store.fleet import FleetRepository
from patchpilot.core.store.hosts import HostsRepository
from patchpilot.core.store.jobs import JobsRepository
from patchpilot.core.store.load import LoadRepository
from patchpilot.core.store.outcomes import OutcomesRepository
from patchpilot.core.store.rollout import RolloutRepository
from patchpilot.core.store.runs import RunsRepository
from patchpilot.core.store.schedules import SchedulesRepository
from patchpilot.core.store.sessions import SessionsRepository
from patchpilot.core.store.stages import StagesRepository
from patchpilot.core.store.users import UsersRepository
from patchpilot.core.store.votes import VotesRepository

__all__ = ["PUBLISHED_LAG", "Store"]


class Store(
    FeedsRepository,
    AdvisoriesRepository,
    RunsRepository,
    HostsRepository,
    FindingsRepository,
    OutcomesRepository,
    VotesRepository,
    RolloutRepository,
    UsersRepository,
    SessionsRepository,
    FleetRepository,
    SchedulesRepository,
    StagesRepository,
    ComplianceRepository,
    LoadRepository,
    JobsRepository,
):
    """patchpilot's SQLite store; safe to share between threads.

    Example::

        with Store(settings.store_path) as store:
            stats = store.import_batch(batch)
            index = store.advisory_index(Ecosystem.DEBIAN, "bookworm")

    Every method raises :class:`StoreError` when SQLite fails or the data is refused; a
    failed write changes nothing. The methods live in the repositories listed in
    :mod:`patchpilot.core.store.core`; opening, ``close()`` and ``with`` in
    :class:`~patchpilot.core.store.base.StoreBase`.
    """

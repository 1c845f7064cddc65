"""Who may decide a run's approval: never its requester, N distinct approvers, approver groups.

Real patch-run graph on scripted Debian hosts (as tests/unit/test_graph_run.py), real store,
checkpointer and audit log; decisions go through :mod:`patchpilot.app.approvals`, the one
entry point every interface (CLI, chat, API) uses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import pytest

from patchpilot.app import approvals, users
from patchpilot.app.approvals import DecisionSource, record_decision, requester_of
from patchpilot.core.audit import AuditLog, read_events
from patchpilot.core.errors import NotAuthorizedError, SelfApprovalError
from patchpilot.core.models import utcnow
from patchpilot.core.policy import Policy, load_policy
from patchpilot.core.settings import Settings
from patchpilot.core.store import Store, StoreError
from patchpilot.graphs.run import RunContext, RunResult, start_run
from tests.fakes import FakeDebianHost, fleet_factory
from tests.unit.test_graph_run import HOSTS, make_fleet, write_policy

CLI = DecisionSource(parser="cli", words="patchpilot approve")


class World:
    """A run requested by ``olivia`` on canary-1, web-1 (prod) and db-1 (prod)."""

    def __init__(self, home: Path, policy: Policy) -> None:
        self.settings = Settings(home=home)
        self.fleet: dict[str, FakeDebianHost] = make_fleet()
        self.policy = policy
        self.now = utcnow()

    def context(self, store: Store, actor: str) -> RunContext:
        return RunContext(
            settings=self.settings,
            store=store,
            policy=self.policy,
            transport_factory=fleet_factory(self.fleet),
            clock=lambda: self.now,
            audit=AuditLog.for_settings(self.settings, actor=actor),
        )

    def start(self, requester: str = "olivia") -> RunResult:
        with Store(self.settings.store_path) as store:
            result = start_run(
                HOSTS,
                self.context(store, requester),
                target="all",
                policy=self.policy,
                only=[("acme-web", "1.1.0")],
            )
        assert result.status == "awaiting_approval", result.reason
        return result

    def decide(
        self, run_id: str, who: str, status: Literal["approved", "rejected"] = "approved"
    ) -> RunResult:
        with Store(self.settings.store_path) as store:
            return approvals.decide(
                self.settings,
                store,
                run_id,
                status,
                comment=f"{who} says {status}",
                make_context=lambda policy: self.context(store, who),
                source=CLI,
                actor=who,
            )

    def add_users(self, **roles: str) -> None:
        with Store(self.settings.store_path) as store:
            for name, role in roles.items():
                users.add_user(store, name, role, actor="admin")

    def installed(self) -> set[str]:
        return {h.installed["acme-web"] for h in self.fleet.values()}

    def audit(self, run_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        return [(e.action, e.actor, e.details) for e in read_events(self.settings, run_id=run_id)]

    def approval_status(self, run_id: str) -> str:
        with Store(self.settings.store_path) as store:
            record = store.approval(run_id)
        assert record is not None
        return record.status


@pytest.fixture
def world(tmp_path: Path) -> Callable[..., World]:
    def make(**approvals_policy: Any) -> World:
        home = tmp_path / "home"
        policy = load_policy(write_policy(home, approvals={"tags": ["prod"], **approvals_policy}))
        return World(home, policy)

    return make


# --------------------------------------------------------------------------- no self-approval


def test_the_requester_may_not_approve_their_own_run_and_a_viewer_may_not_either(
    world: Callable[..., World],
) -> None:
    w = world()
    w.add_users(olivia="operator", alice="approver", vic="viewer")
    run = w.start()
    with pytest.raises(SelfApprovalError, match="olivia"):
        w.decide(run.run_id, "olivia")
    with pytest.raises(NotAuthorizedError) as refused:
        w.decide(run.run_id, "vic")
    assert not isinstance(refused.value, SelfApprovalError)
    assert w.approval_status(run.run_id) == "pending"
    assert w.installed() == {"1.0.0"}

    done = w.decide(run.run_id, "alice")
    assert done.status == "completed", done.reason
    assert w.installed() == {"1.1.0"}
    events = w.audit(run.run_id)
    refusals = [(actor, d["reason"]) for a, actor, d in events if a == "approval.refused"]
    assert refusals == [("olivia", "self-approval"), ("vic", "not an approver")]
    assert ("run.started", "olivia") in [(a, actor) for a, actor, _ in events]
    assert ("approval.granted", "alice") in [(a, actor) for a, actor, _ in events]


def test_the_requester_may_not_reject_their_own_run_either(world: Callable[..., World]) -> None:
    w = world()
    w.add_users(olivia="admin")
    run = w.start()
    with pytest.raises(SelfApprovalError):
        w.decide(run.run_id, "OLIVIA", "rejected")  # names compare case-insensitively
    assert w.approval_status(run.run_id) == "pending"


def test_a_disabled_approver_is_refused(world: Callable[..., World]) -> None:
    w = world()
    w.add_users(alice="approver")
    run = w.start()
    with Store(w.settings.store_path) as store:
        users.disable_user(store, "alice", actor="admin")
    with pytest.raises(NotAuthorizedError, match="disabled"):
        w.decide(run.run_id, "alice")
    assert w.approval_status(run.run_id) == "pending"


def test_without_users_the_requester_is_refused_by_default(world: Callable[..., World]) -> None:
    w = world()
    run = w.start(requester="ops")
    with pytest.raises(SelfApprovalError):
        w.decide(run.run_id, "ops")
    with pytest.raises(SelfApprovalError):
        w.decide(run.run_id, "OPS", status="rejected")  # names compare without case
    assert w.approval_status(run.run_id) == "pending"
    assert w.installed() == {"1.0.0"}
    assert w.decide(run.run_id, "someone-else").status == "completed"


def test_a_one_person_install_may_approve_its_own_runs_when_the_policy_says_so(
    world: Callable[..., World],
) -> None:
    w = world(refuse_self_approval=False)
    run = w.start(requester="ops")
    done = w.decide(run.run_id, "ops")
    assert done.status == "completed", done.reason
    assert w.installed() == {"1.1.0"}


def test_with_users_the_requester_is_refused_whatever_the_policy(
    world: Callable[..., World],
) -> None:
    w = world(refuse_self_approval=False)
    w.add_users(olivia="admin", anna="approver")
    run = w.start(requester="olivia")
    with pytest.raises(SelfApprovalError):
        w.decide(run.run_id, "olivia")
    assert w.decide(run.run_id, "anna").status == "completed"


def test_the_requester_is_who_started_the_run(world: Callable[..., World]) -> None:
    w = world()
    run = w.start(requester="olivia")
    with Store(w.settings.store_path) as store:
        assert requester_of(w.settings, store, run.run_id) == "olivia"
        assert requester_of(w.settings, store, "no-such-run") is None


# --------------------------------------------------------------------------- N approvers


def test_two_approvers_are_needed_and_the_audit_names_each(world: Callable[..., World]) -> None:
    w = world(required=2)
    w.add_users(olivia="operator", alice="approver", bob="admin")
    run = w.start()

    first = w.decide(run.run_id, "alice")
    assert first.status == "awaiting_approval"
    assert "approved so far by alice" in (first.reason or "")
    assert w.approval_status(run.run_id) == "pending"
    assert w.installed() == {"1.0.0"}  # one approval of two deploys nothing
    with pytest.raises(StoreError, match="alice already approved"):
        w.decide(run.run_id, "alice")  # the same person twice is still one approver

    done = w.decide(run.run_id, "bob")
    assert done.status == "completed", done.reason
    assert w.installed() == {"1.1.0"}
    with Store(w.settings.store_path) as store:
        record = store.approval(run.run_id)
        votes = store.approval_votes(run.run_id)
    assert record is not None
    assert record.status == "approved"
    assert record.decided_by == "alice, bob"
    assert [(v.voter, v.decision) for v in votes] == [("alice", "approved"), ("bob", "approved")]
    decisions = [
        (a, actor, d.get("approvers"))
        for a, actor, d in w.audit(run.run_id)
        if a.startswith("approval.")
    ]
    assert ("approval.voted", "alice", ["alice"]) in decisions
    assert ("approval.granted", "bob", ["alice", "bob"]) in decisions


def test_one_rejection_rejects_whatever_the_approvals(world: Callable[..., World]) -> None:
    w = world(required=3)
    w.add_users(olivia="operator", alice="approver", bob="approver")
    run = w.start()
    assert w.decide(run.run_id, "alice").status == "awaiting_approval"
    done = w.decide(run.run_id, "bob", "rejected")
    assert done.status == "rejected"
    assert "bob" in (done.reason or "")
    assert w.installed() == {"1.0.0"}
    assert not any(f.installs for f in w.fleet.values())
    actions = [(a, actor) for a, actor, _ in w.audit(run.run_id) if a.startswith("approval.")]
    assert actions[-2:] == [("approval.voted", "alice"), ("approval.rejected", "bob")]


def test_an_approver_group_of_the_scope_must_take_part(world: Callable[..., World]) -> None:
    group = {"name": "db-owners", "tags": ["db"], "approvers": ["dana"]}
    w = world(groups=[group])
    w.add_users(olivia="operator", alice="approver", dana="approver")
    run = w.start()  # db-1 carries the tag db
    waiting = w.decide(run.run_id, "alice")
    assert waiting.status == "awaiting_approval"
    voted = [d for a, _, d in w.audit(run.run_id) if a == "approval.voted"]
    assert voted[-1]["missing"] == ["an approver of group db-owners"]
    assert w.decide(run.run_id, "dana").status == "completed"


def test_a_group_outside_the_scope_is_not_needed(world: Callable[..., World]) -> None:
    w = world(groups=[{"name": "mail", "tags": ["mail"], "approvers": ["mo"]}])
    run = w.start(requester="ops")
    assert w.decide(run.run_id, "alice").status == "completed"


# --------------------------------------------------------------------------- the store's votes


def _pending(store: Store, run_id: str = "run-1") -> None:
    now = datetime.now(UTC)
    store.create_run(run_id, kind="run", target="all", params={})
    store.request_approval(
        run_id, "plan-1", "0" * 64, ["prod"], {}, requested_at=now, expires_at=now + timedelta(1)
    )


def test_concurrent_votes_decide_exactly_once(tmp_path: Path) -> None:
    with Store(tmp_path / "p.db") as store:
        _pending(store)
        outcomes: list[bool] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(4)

        def vote(voter: str) -> None:
            barrier.wait()
            try:
                outcomes.append(store.vote_approval("run-1", voter, "approved", required=2).decided)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=vote, args=(f"p{i}",)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        record = store.approval("run-1")
    # the second vote decides; the later ones find nothing pending
    assert sorted(outcomes) == [False, True]
    assert len(errors) == 2
    assert all(isinstance(e, StoreError) and "no pending approval" in str(e) for e in errors)
    assert record is not None
    assert record.status == "approved"
    assert record.decided_by is not None
    assert len(record.decided_by.split(", ")) == 2


def test_an_approval_vote_after_the_expiry_is_refused(tmp_path: Path) -> None:
    with Store(tmp_path / "p.db") as store:
        _pending(store)
        later = datetime.now(UTC) + timedelta(days=2)
        with pytest.raises(StoreError, match="expired"):
            store.vote_approval("run-1", "alice", "approved", at=later)
        assert store.approval_votes("run-1") == []
        rejected = store.vote_approval("run-1", "alice", "rejected", at=later)
    assert rejected.decided
    assert rejected.approval.status == "rejected"


def test_record_decision_returns_the_pending_record_for_a_vote(world: Callable[..., World]) -> None:
    w = world(required=2)
    run = w.start(requester="ops")
    with Store(w.settings.store_path) as store:
        record = record_decision(
            w.settings, store, run.run_id, "approved", comment=None, source=CLI, actor="alice"
        )
    assert record.status == "pending"

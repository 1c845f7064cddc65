"""Who may do what: roles, the authenticated principal, and the permission table.

The service authenticates a bearer token to a :class:`Principal` (a user name and one
:class:`Role`); every use case still takes the acting identity as a plain name (``actor``), so
the CLI (the OS user) and the service (the authenticated user) call the same code. What a role
may do is one table (:data:`PERMISSIONS`), checked by :func:`allowed`; a use case that needs a
role raises :class:`~patchpilot.core.errors.NotAuthorizedError`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from pydantic import BaseModel, ConfigDict

__all__ = ["PERMISSIONS", "Action", "Principal", "Role", "allowed"]


class Role(StrEnum):
    """A user's role; each includes the ones before it, except that only ``approver`` and
    ``admin`` may decide approvals."""

    VIEWER = "viewer"
    """Read everything: runs, findings, hosts, compliance, schedules, the audit log."""
    OPERATOR = "operator"
    """Also start scans and runs, cancel runs, ask the chat for changes, manage schedules."""
    APPROVER = "approver"
    """Also approve or reject runs (never their own)."""
    ADMIN = "admin"
    """Everything, including users."""


class Action(StrEnum):
    """What a request wants to do."""

    READ = "read"
    START = "start"
    CANCEL = "cancel"
    SCHEDULE = "schedule"
    DECIDE = "decide"
    MANAGE_USERS = "manage-users"


PERMISSIONS: Final[dict[Role, frozenset[Action]]] = {
    Role.VIEWER: frozenset({Action.READ}),
    Role.OPERATOR: frozenset({Action.READ, Action.START, Action.CANCEL, Action.SCHEDULE}),
    Role.APPROVER: frozenset({Action.READ, Action.DECIDE}),
    Role.ADMIN: frozenset(Action),
}
"""The permission table. An approver does not start runs (separation of duties); an admin may
do everything but still never approves a run they requested (see the approvals use case)."""


class Principal(BaseModel):
    """An authenticated user."""

    model_config = ConfigDict(frozen=True)

    name: str
    role: Role


def allowed(role: Role, action: Action) -> bool:
    """Whether ``role`` may do ``action``."""
    return action in PERMISSIONS[role]

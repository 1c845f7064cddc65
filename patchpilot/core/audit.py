"""The append-only audit log: who did what, when, to which host and package.

One JSON object per line in ``settings.home / "audit.log"``::

    {"at": "2026-11-27T09:00:00.123456Z", "run_id": "r1", "actor": "alice",
     "action": "approval.granted", "host": null, "package": null, "details": {"comment": "ok"}}

Actions are dotted names (``plan.frozen``, ``approval.granted``, ``approval.rejected``,
``approval.expired``, ``deploy.started``, ``deploy.installed``, ``deploy.failed``,
``health.failed``, ``rollback.done``, ``ring.halted`` ...); see :mod:`patchpilot.agents.deployment`
for the
events a rollout writes.

Guarantees:

* **append-only**: the file is opened with ``O_RDWR | O_APPEND | O_CREAT`` (the read is of the
  last byte only, see below); it is never truncated or rewritten, nothing here deletes or
  edits a line, and with ``O_APPEND`` every write lands at the end;
* **whole lines**: each event is one ``write`` of one complete line, under an exclusive
  ``fcntl.flock`` on the file, so appends from threads and from several processes never
  interleave; a line torn by a crash (no final newline) is terminated before the next event, so
  only that one line is lost;
* **durable**: ``fsync`` after every event (approvals and rollbacks are rare; durability matters
  more than throughput).

:func:`read_events` skips (and logs) a line that does not parse, e.g. one torn by a crash.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import structlog
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator

from patchpilot.core.errors import PatchpilotError
from patchpilot.core.settings import Settings

__all__ = ["AUDIT_FILE", "AuditError", "AuditEvent", "AuditLog", "current_actor", "read_events"]

log = structlog.get_logger(__name__)

AUDIT_FILE: Final = "audit.log"
"""File name of the audit log under ``settings.home``."""

_MODE: Final = 0o600


class AuditError(PatchpilotError, OSError):
    """The audit log could not be written or read."""


class AuditEvent(BaseModel):
    """One audit log line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    at: AwareDatetime = Field(description="when it happened (UTC)")
    run_id: str | None = None
    actor: str = Field(min_length=1, description="who: an OS user name, or given explicitly")
    action: str = Field(min_length=1, pattern=r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$")
    host: str | None = None
    package: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def to_line(self) -> bytes:
        """The event as one JSON line (UTF-8, ``\\n``-terminated, no embedded newline)."""
        data = self.model_dump(mode="json")
        data["at"] = self.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
        return (text + "\n").encode("utf-8")


def current_actor() -> str:
    """The OS user running patchpilot (``getpass.getuser()``, else ``uid:N``)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class AuditLog:
    """Append and read audit events in one file (see the module docstring).

    Thread-safe and multi-process safe: every :meth:`record` opens its own file descriptor, takes
    an exclusive ``flock``, appends one line, fsyncs and closes.

    Args:
        path: the log file (created with mode 0600, parent directories included).
        actor: the default actor (the OS user when omitted).
        run_id: the default run id of events recorded through this object.

    Example::

        audit = AuditLog.for_settings(settings, run_id="run-1")
        audit.record("approval.granted", details={"comment": "go"})
        [e.action for e in audit.read_events("run-1")]   # ['approval.granted']
    """

    def __init__(self, path: Path, *, actor: str | None = None, run_id: str | None = None) -> None:
        self.path = Path(path)
        self.actor = actor or current_actor()
        self.run_id = run_id

    @classmethod
    def for_settings(
        cls, settings: Settings, *, actor: str | None = None, run_id: str | None = None
    ) -> AuditLog:
        """The audit log under ``settings.home``."""
        return cls(settings.home / AUDIT_FILE, actor=actor, run_id=run_id)

    def bind(self, *, run_id: str | None = None, actor: str | None = None) -> AuditLog:
        """A log on the same file with other defaults."""
        return AuditLog(self.path, actor=actor or self.actor, run_id=run_id or self.run_id)

    def record(
        self,
        action: str,
        *,
        host: str | None = None,
        package: str | None = None,
        details: Mapping[str, Any] | None = None,
        run_id: str | None = None,
        actor: str | None = None,
        at: datetime | None = None,
    ) -> AuditEvent:
        """Append one event and return it.

        Raises:
            AuditError: the file could not be written (the event is then not recorded).
            pydantic.ValidationError: a malformed action name or a naive ``at``.
        """
        event = AuditEvent(
            at=at or datetime.now(UTC),
            run_id=run_id if run_id is not None else self.run_id,
            actor=actor or self.actor,
            action=action,
            host=host,
            package=package,
            details=dict(details or {}),
        )
        self.append(event)
        return event

    def append(self, event: AuditEvent) -> None:
        """Append an event as one line, under an exclusive lock, flushed and fsynced.

        Raises:
            AuditError: the file could not be written.
        """
        line = event.to_line()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _MODE)
        except OSError as exc:
            raise AuditError(f"cannot open the audit log {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = b"\n" + line  # terminate a line torn by a crash; keep ours whole
                _write_all(fd, line)
                os.fsync(fd)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditError(f"cannot append to the audit log {self.path}: {exc}") from exc
        finally:
            os.close(fd)

    def read_events(self, run_id: str | None = None) -> list[AuditEvent]:
        """Every event in file order, or those of one run (see :func:`read_events`)."""
        return read_events(self.path, run_id=run_id)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r}, actor={self.actor!r}, run_id={self.run_id!r})"


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditError(f"cannot read the audit log {path}: {exc}") from exc
    with os.fdopen(fd, "rb") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_SH)  # no half-written line from a writer
        data = handle.read()
    yield from enumerate(data.split(b"\n"), start=1)


def read_events(source: Path | Settings, *, run_id: str | None = None) -> list[AuditEvent]:
    """Read the audit log: every event in file order, or only those of ``run_id``.

    Args:
        source: the log file, or settings (``settings.home / "audit.log"``).
        run_id: keep only this run's events.

    Returns:
        The events; an absent file is an empty log. Unparseable lines (a line torn by a crash)
        are skipped with a warning.

    Raises:
        AuditError: the file exists but cannot be read.
    """
    path = source.home / AUDIT_FILE if isinstance(source, Settings) else Path(source)
    events: list[AuditEvent] = []
    for number, raw in _lines(path):
        if not raw.strip():
            continue
        try:
            event = AuditEvent.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("audit.line_unreadable", path=str(path), line=number, error=str(exc))
            continue
        if run_id is None or event.run_id == run_id:
            events.append(event)
    return events

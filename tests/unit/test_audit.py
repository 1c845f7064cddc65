"""patchpilot.core.audit: append-only JSON lines, whole under concurrency, from threads and
processes."""

from __future__ import annotations

import getpass
import json
import subprocess
import sys
import textwrap
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from pydantic import ValidationError

from patchpilot.core.audit import AUDIT_FILE, AuditError, AuditEvent, AuditLog, read_events
from patchpilot.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
BIG = "x" * 20_000  # lines far above PIPE_BUF (4096): whole only thanks to the lock


def _check_lines(path: Path, expected: int) -> list[dict[str, object]]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    rows = [json.loads(line) for line in raw.split(b"\n")[:-1]]  # every line parses
    assert len(rows) == expected
    return rows


def test_record_writes_one_json_line(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    audit = AuditLog.for_settings(settings, run_id="run-1", actor="alice")
    event = audit.record(
        "approval.granted", host="web-1", package="acme-web", details={"comment": "go"}
    )
    path = settings.home / AUDIT_FILE
    (row,) = _check_lines(path, 1)
    assert row == {
        "at": event.at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "run_id": "run-1",
        "actor": "alice",
        "action": "approval.granted",
        "host": "web-1",
        "package": "acme-web",
        "details": {"comment": "go"},
    }
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_events(settings) == [event]


def test_actor_defaults_to_the_os_user(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    assert audit.record("plan.frozen").actor == getpass.getuser()
    assert audit.record("plan.frozen", actor="bob").actor == "bob"


def test_times_are_utc(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log")
    berlin = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=1)))
    event = audit.record("approval.expired", at=berlin)
    assert event.at == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert '"at":"2026-01-01T11:00:00.000000Z"' in (tmp_path / "audit.log").read_text()
    with pytest.raises(ValidationError):
        audit.record("approval.expired", at=datetime(2026, 1, 1))


@pytest.mark.parametrize("action", ["", "Approval", "approval..granted", "a b", "x.\n"])
def test_malformed_actions_are_refused(tmp_path: Path, action: str) -> None:
    with pytest.raises(ValidationError):
        AuditLog(tmp_path / "audit.log").record(action)
    assert not (tmp_path / "audit.log").exists()


def test_read_events_filters_by_run_and_keeps_order(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.log", run_id="a")
    audit.record("deploy.started", host="h1")
    audit.record("deploy.started", host="h2", run_id="b")
    audit.bind(run_id="b").record("rollback.done", host="h2")
    audit.record("deploy.finished", host="h1")
    assert [e.action for e in audit.read_events("a")] == ["deploy.started", "deploy.finished"]
    assert [e.host for e in audit.read_events("b")] == ["h2", "h2"]
    assert len(audit.read_events()) == 4
    assert read_events(tmp_path / "missing.log") == []


def test_appends_never_rewrite_existing_content(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path)
    audit.record("plan.frozen")
    first = path.read_bytes()
    audit.record("approval.granted")
    assert path.read_bytes().startswith(first)


def test_a_torn_line_is_terminated_and_skipped(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLog(path, run_id="r")
    audit.record("deploy.started")
    with path.open("ab") as handle:
        handle.write(b'{"at": "2026-01-01T00:00:00Z", "run_id": "r", "act')  # a crash mid-line
    audit.record("deploy.finished")
    assert [e.action for e in audit.read_events()] == ["deploy.started", "deploy.finished"]
    assert path.read_bytes().count(b"\n") == 3


def test_unwritable_log_raises_our_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(AuditError, match="cannot open the audit log"):
        AuditLog(blocker / "audit.log").record("plan.frozen")


def test_concurrent_appends_from_threads_keep_every_line_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    threads, per_thread = 8, 25

    def writer(n: int) -> None:
        audit = AuditLog(path, run_id=f"t{n}")
        for i in range(per_thread):
            audit.record("deploy.installed", host=f"h{n}", details={"i": i, "pad": BIG})

    workers = [threading.Thread(target=writer, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rows = _check_lines(path, threads * per_thread)
    for n in range(threads):
        mine = [r["details"]["i"] for r in rows if r["run_id"] == f"t{n}"]  # type: ignore[index]
        assert mine == list(range(per_thread))


def test_concurrent_appends_from_two_processes_keep_every_line_whole(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    per_process = 150
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from patchpilot.core.audit import AuditLog
        audit = AuditLog(Path(sys.argv[1]), run_id=sys.argv[2], actor="proc")
        for i in range(int(sys.argv[3])):
            audit.record("health.failed", details={"i": i, "pad": "y" * 20000})
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(path), run, str(per_process)], cwd=REPO)
        for run in ("p1", "p2")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    rows = _check_lines(path, 2 * per_process)
    runs = [r["run_id"] for r in rows]
    assert runs.count("p1") == runs.count("p2") == per_process
    events = read_events(path, run_id="p2")
    assert [e.details["i"] for e in events] == list(range(per_process))
    assert all(isinstance(e, AuditEvent) for e in events)

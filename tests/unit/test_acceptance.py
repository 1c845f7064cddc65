"""Risk acceptances: the model, its host patterns, and the accept file (read, append, remove).

Real files under tmp_path; concurrent appends from real processes.
"""

from __future__ import annotations

import multiprocessing
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from patchpilot.core.acceptance import (
    MAX_REASON_LENGTH,
    Acceptance,
    Acceptances,
    append_acceptance,
    host_matcher,
    new_acceptance,
    normalize_id,
    parse_until,
    read_acceptances,
    remove_acceptances,
)
from patchpilot.core.errors import ConfigError, InvalidInputError
from patchpilot.core.models import Finding, FixState, Severity

NOW = datetime(2026, 6, 1, 9, 30, tzinfo=UTC)
TODAY = NOW.date()


def _new(ident: str = "DSA-5678-1", **kw: object) -> Acceptance:
    args: dict[str, object] = {
        "host": "all",
        "reason": "compensating WAF rule (TICKET-42)",
        "until": TODAY + timedelta(days=30),
        "by": "alice",
        "now": NOW,
    }
    args.update(kw)
    return new_acceptance(ident, **args)  # type: ignore[arg-type]


def _finding(
    host: str = "web-1", advisory: str = "DSA-5678-1", cves: tuple[str, ...] = ("CVE-2026-0001",)
) -> Finding:
    return Finding(
        host=host,
        source_package="openssl",
        binary_packages=("libssl3",),
        installed_source_version="3.0.1",
        advisory_id=advisory,
        cves=cves,
        fix=FixState.fixed("3.0.2"),
        fix_reachable=True,
        severity=Severity.HIGH,
        first_seen=NOW,
    )


# --------------------------------------------------------------------------- ids and dates


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("DSA-5678-1", "DSA-5678-1"),
        ("dla-3456-1", "DLA-3456-1"),
        ("USN-6543-1", "USN-6543-1"),
        ("cve-2024-6387", "CVE-2024-6387"),
        (" CVE-2024-12345 ", "CVE-2024-12345"),
        ("debian-security-update:openssl", "debian-security-update:openssl"),
        ("Debian-Update:libfoo+bar", "debian-update:libfoo+bar"),
        ("GHSA-jfh8-c2jp-5v3q", "GHSA-jfh8-c2jp-5v3q"),
        ("RHSA-2024:1234", "RHSA-2024:1234"),
        ("PYSEC-2021-1", "PYSEC-2021-1"),
    ],
)
def test_ids_are_validated_and_canonical(raw: str, canonical: str) -> None:
    assert normalize_id(raw) == canonical


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("CVE-2024-123", "not a CVE id"),
        ("CVE-24-1234", "not a CVE id"),
        ("DSA-56x8", "Debian/Ubuntu advisory id"),
        ("debian-update:Bad Name", "source package name"),
        ("openssl", "not an advisory or CVE id"),
        ("", "not an advisory or CVE id"),
        ("DSA-1-1\x1b[2J", "not an advisory or CVE id"),
        ("X-" + "1" * 200, "not an advisory or CVE id"),
        ("; rm -rf /", "not an advisory or CVE id"),
    ],
)
def test_bad_ids_are_refused_with_the_reason(raw: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        normalize_id(raw)
    with pytest.raises(InvalidInputError, match=needle) as caught:
        _new(raw)
    assert caught.value.what == "ID"


def test_until_takes_a_date_or_days() -> None:
    assert parse_until("2026-12-31", TODAY) == date(2026, 12, 31)
    assert parse_until("30d", TODAY) == TODAY + timedelta(days=30)
    assert parse_until("+7d", TODAY) == TODAY + timedelta(days=7)
    for bad in ("2026-13-01", "2026-02-30", "next week", "31/12/2026", "30", "20261231"):
        with pytest.raises(InvalidInputError, match="--until"):
            parse_until(bad, TODAY)


def test_until_in_the_past_or_beyond_the_horizon_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="in the past"):
        _new(until=TODAY - timedelta(days=1))
    assert _new(until=TODAY).until == TODAY, "today is allowed: it holds through today"
    assert _new(until=TODAY + timedelta(days=365)).until == TODAY + timedelta(days=365)
    with pytest.raises(InvalidInputError, match="more than 365 days"):
        _new(until=TODAY + timedelta(days=366))
    with pytest.raises(InvalidInputError, match="more than 30 days"):
        _new(until=TODAY + timedelta(days=31), max_days=30)


def test_reason_is_required_bounded_and_inert() -> None:
    with pytest.raises(InvalidInputError, match="reason"):
        _new(reason="   ")
    with pytest.raises(InvalidInputError, match="at most"):
        _new(reason="x" * (MAX_REASON_LENGTH + 1))
    with pytest.raises(InvalidInputError, match="control character"):
        _new(reason="ok\x1b]8;;http://evil\x07click")
    with pytest.raises(InvalidInputError, match="control character"):
        _new(reason="two\nlines")
    assert _new(reason="  padded  ").reason == "padded"


def test_the_entry_records_who_and_when() -> None:
    entry = _new(by="alice")
    assert entry.by == "alice"
    assert entry.created == NOW
    assert entry.summary()["until"] == (TODAY + timedelta(days=30)).isoformat()


# --------------------------------------------------------------------------- host patterns


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("all", ["web-1", "db-1"], []),
        ("*", ["web-1"], []),
        ("web-1", ["web-1"], ["web-10", "db-1"]),
        ("web-*", ["web-1", "web-canary"], ["db-1"]),
        ("web-*,!web-canary", ["web-1"], ["web-canary", "db-1"]),
        ("web-*:db-1", ["web-2", "db-1"], ["db-2"]),
        ("*,&*-1", ["web-1", "db-1"], ["web-2"]),
        ("~web-[0-9]+$", ["web-12"], ["web-canary"]),
        ("db-?", ["db-1"], ["db-12"]),
    ],
)
def test_host_patterns_use_the_limit_language_on_names(
    pattern: str, yes: list[str], no: list[str]
) -> None:
    matches = host_matcher(pattern)
    assert [h for h in yes if not matches(h)] == []
    assert [h for h in no if matches(h)] == []


@pytest.mark.parametrize(
    ("pattern", "needle"),
    [
        ("web[0]", "subscripts"),
        ("~(a+)\\1", "RE2"),
        ("~(?=x)", "RE2"),
        ("web-[1", "unbalanced"),
        ("web,!", "empty term"),
        ("web\x1b[2J", "control"),
        ("", "empty"),
    ],
)
def test_bad_host_patterns_are_refused(pattern: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        host_matcher(pattern)
    with pytest.raises(InvalidInputError, match=needle) as caught:
        _new(host=pattern)
    assert caught.value.what == "--host"


# --------------------------------------------------------------------------- matching


def test_a_live_acceptance_covers_its_advisory_on_matching_hosts() -> None:
    entry = _new("dsa-5678-1", host="web-*")
    live = Acceptances(entries=(entry,), today=TODAY)
    assert live.for_finding(_finding("web-1")) == entry
    assert live.for_finding(_finding("db-1")) is None
    assert live.for_finding(_finding("web-1", advisory="DSA-5678-2")) is None


def test_an_acceptance_holds_through_its_until_day_and_not_after() -> None:
    entry = _new(until=TODAY + timedelta(days=3))
    on_the_day = Acceptances(entries=(entry,), today=TODAY + timedelta(days=3))
    after = Acceptances(entries=(entry,), today=TODAY + timedelta(days=4))
    assert on_the_day.for_finding(_finding()) == entry
    assert after.for_finding(_finding()) is None
    assert after.live == ()


def test_cve_acceptances_cover_a_finding_only_when_every_cve_is_accepted() -> None:
    one = _new("CVE-2026-0001", until=TODAY + timedelta(days=10))
    two = _new("CVE-2026-0002", until=TODAY + timedelta(days=5))
    finding = _finding(advisory="DSA-1-1", cves=("CVE-2026-0001", "CVE-2026-0002"))
    partial = Acceptances(entries=(one,), today=TODAY)
    assert partial.for_finding(finding) is None, "one CVE accepted must not hide the other"
    full = Acceptances(entries=(one, two), today=TODAY)
    assert full.for_finding(finding) == two, "the risk returns when the first one expires"
    later = Acceptances(entries=(one, two), today=TODAY + timedelta(days=6))
    assert later.for_finding(finding) is None
    no_cves = _finding(advisory="debian-security-update:openssl", cves=())
    assert full.for_finding(no_cves) is None


# --------------------------------------------------------------------------- the file


def test_an_absent_file_has_no_entries(tmp_path: Path) -> None:
    assert read_acceptances(tmp_path / "none.yaml", today=TODAY) == []


def test_append_then_read_back_and_renew(tmp_path: Path) -> None:
    path = tmp_path / "home" / "acceptances.yaml"
    first = _new("DSA-5678-1", host="web-*")
    assert append_acceptance(path, first, today=TODAY) is None
    second = _new("CVE-2024-6387", reason="x: y # not a comment", by="bob")
    append_acceptance(path, second, today=TODAY)
    assert read_acceptances(path, today=TODAY) == [first, second]
    renewal = _new("dsa-5678-1", host="web-*", by="carol", until=TODAY + timedelta(days=90))
    assert append_acceptance(path, renewal, today=TODAY) == first
    assert read_acceptances(path, today=TODAY) == [second, renewal]
    other_hosts = _new("DSA-5678-1", host="db-*")
    assert append_acceptance(path, other_hosts, today=TODAY) is None
    assert len(read_acceptances(path, today=TODAY)) == 3


def test_hand_written_comments_survive_appends_and_removals(tmp_path: Path) -> None:
    path = tmp_path / "acceptances.yaml"
    path.write_text(
        "# owned by the security team\n"
        "acceptances:\n"
        "- id: DSA-5678-1   # the web thing\n"
        "  host: web-*\n"
        "  reason: >\n"
        "    vendor blocks the upgrade\n"
        "  until: 2026-12-31\n"
        "  by: alice\n"
        "# about the CVE\n"
        "- {id: CVE-2024-6387, reason: x, until: 2026-07-01, by: bob}\n"
        "# end of list\n"
    )
    append_acceptance(path, _new("DLA-1-1"), today=TODAY)
    text = path.read_text()
    assert "# owned by the security team" in text
    assert "# the web thing" in text
    assert text.index("DLA-1-1") < text.index("# end of list")
    assert [e.id for e in read_acceptances(path, today=TODAY)] == [
        "DSA-5678-1",
        "CVE-2024-6387",
        "DLA-1-1",
    ]
    removed = remove_acceptances(path, "dsa-5678-1", today=TODAY)
    assert [e.id for e in removed] == ["DSA-5678-1"]
    text = path.read_text()
    assert "# owned by the security team" in text
    assert "# about the CVE" in text
    assert "vendor blocks the upgrade" not in text
    assert [e.id for e in read_acceptances(path, today=TODAY)] == ["CVE-2024-6387", "DLA-1-1"]


def test_remove_by_host_pattern_and_nothing_to_remove(tmp_path: Path) -> None:
    path = tmp_path / "acceptances.yaml"
    append_acceptance(path, _new(host="web-*"), today=TODAY)
    append_acceptance(path, _new(host="db-*"), today=TODAY)
    assert remove_acceptances(path, "DSA-5678-1", host="mail-*", today=TODAY) == []
    assert [e.host for e in remove_acceptances(path, "DSA-5678-1", host="db-*", today=TODAY)] == [
        "db-*"
    ]
    assert [e.host for e in read_acceptances(path, today=TODAY)] == ["web-*"]
    assert remove_acceptances(tmp_path / "absent.yaml", "DSA-5678-1", today=TODAY) == []


def test_a_failing_audit_record_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "acceptances.yaml"
    append_acceptance(path, _new("DSA-1-1"), today=TODAY)
    before = path.read_bytes()

    def fail(_replaced: Acceptance | None) -> None:
        raise OSError("audit log is full")

    with pytest.raises(OSError, match="audit log is full"):
        append_acceptance(path, _new("DSA-2-1"), today=TODAY, then=fail)
    assert path.read_bytes() == before
    fresh = tmp_path / "fresh.yaml"
    with pytest.raises(OSError, match="audit log is full"):
        append_acceptance(fresh, _new("DSA-2-1"), today=TODAY, then=fail)
    assert not fresh.exists()


def _append_many(path: str, worker: int, count: int) -> None:
    for i in range(count):
        entry = _new(f"DSA-{worker}{i:03d}-1", by=f"worker{worker}")
        append_acceptance(Path(path), entry, today=TODAY)


def test_concurrent_appends_from_processes_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "acceptances.yaml"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_append_many, args=(str(path), w, 8)) for w in range(1, 5)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    ids = {e.id for e in read_acceptances(path, today=TODAY)}
    assert ids == {f"DSA-{w}{i:03d}-1" for w in range(1, 5) for i in range(8)}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("text", "needle", "key"),
    [
        ("acceptances: {id: x}\n", "must be a list", "acceptances"),
        ("acceptance: []\n", "unknown top-level key", "acceptance"),
        ("acceptances:\n- just a string\n", "entry 1: must be a mapping", "acceptances[0]"),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2026-07-01, by: a}\n"
            "- {id: CVE-2024-12, reason: r, until: 2026-07-01, by: a}\n",
            "entry 2 ('CVE-2024-12'): id: 'CVE-2024-12' is not a CVE id",
            "acceptances[1].id",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2026-31-12, by: a}\n",
            "not a valid one (month must be in 1..12)",
            None,
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: '2026-02-30', by: a}\n",
            "entry 1 ('DSA-1-1'): until: '2026-02-30' is not a valid date",
            "acceptances[0].until",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2026-07-01T00:00:00, by: a}\n",
            "YYYY-MM-DD",
            "acceptances[0].until",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2026-07-01}\n",
            "by: missing",
            "acceptances[0].by",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2026-07-01, by: a, note: x}\n",
            "note: unknown key",
            "acceptances[0].note",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, host: 'web[0]', reason: r, until: 2026-07-01, by: a}\n",
            "subscripts",
            "acceptances[0].host",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2099-01-01, by: a}\n",
            "at most 365 are allowed",
            "acceptances[0].until",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2026-09-01, by: a, "
            "created: '2025-01-01T00:00:00Z'}\n",
            "days after created",
            "acceptances[0].until",
        ),
        (
            "acceptances:\n- {id: DSA-1-1, reason: r, until: 2026-07-01, by: a}\n"
            "- {id: dsa-1-1, reason: s, until: 2026-08-01, by: b}\n",
            "entry 2 ('dsa-1-1') repeats entry 1",
            "acceptances[1]",
        ),
        ("acceptances: [\n", "not valid YAML", None),
        ("acceptances: []\nacceptances: []\n", "duplicate key", "acceptances"),
    ],
)
def test_a_bad_hand_edited_file_is_refused_naming_the_entry(
    tmp_path: Path, text: str, needle: str, key: str | None
) -> None:
    path = tmp_path / "acceptances.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        read_acceptances(path, today=TODAY)
    assert needle in str(caught.value)
    assert caught.value.file == str(path)
    assert caught.value.key == key
    before = path.read_text()
    with pytest.raises(ConfigError):
        append_acceptance(path, _new("DLA-9-1"), today=TODAY)
    assert path.read_text() == before, "a write never 'fixes' a file it cannot read"


def test_a_hand_written_entry_without_created_or_host_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "acceptances.yaml"
    path.write_text(
        "acceptances:\n"
        "  - id: cve-2024-6387\n"
        "    reason: accepted in the change board of 2026-05-30\n"
        "    until: '2026-06-30'\n"
        "    by: ciso\n"
        "  - id: DLA-1-1\n"
        "    reason: r\n"
        "    until: 2026-01-01\n"  # expired: listed, never matches
        "    by: ciso\n"
        "    created: 2025-12-01 10:00:00\n"
    )
    first, expired = read_acceptances(path, today=TODAY)
    assert (first.id, first.host, first.created) == ("CVE-2024-6387", "all", None)
    assert expired.created == datetime(2025, 12, 1, 10, tzinfo=UTC)
    assert not expired.live(TODAY)
    with pytest.raises(ConfigError, match="is a directory"):
        read_acceptances(tmp_path, today=TODAY)

"""The advisory merge rule, import idempotence and all-or-nothing imports.

Rule (research doc (b) points 5 and 10): per (ecosystem, release, source package, advisory id),
the newest fixed version wins across feeds and imports; a record that is not fixed never erases
a fixed one (it stays as provenance); otherwise a newer import replaces the state.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from patchpilot.core.feeds import FeedKind
from patchpilot.core.models import Advisory, Ecosystem, FixState, FixStatus, Severity
from patchpilot.core.store import SourceRecord, Store, StoreError, merge_records
from patchpilot.core.store.importer import BatchImporter
from patchpilot.core.versions import compare, sort_key
from tests.unit.test_store import T0, adv, batch

DSA_SOURCE = "https://security-tracker.debian.org/tracker/data/DSA/list"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh store."""
    with Store(tmp_path / "patchpilot.db") as s:
        yield s


def merged(store: Store, package: str = "openssh", advisory_id: str = "CVE-2024-6387") -> Advisory:
    """The one merged advisory of a key."""
    (advisory,) = [
        a
        for a in store.advisories_for(Ecosystem.DEBIAN, "bookworm", package)
        if a.id == advisory_id
    ]
    return advisory


def dump(store: Store) -> list[str]:
    """The whole database as SQL (for byte-for-byte comparisons)."""
    return list(store._conn().iterdump())


def day(n: float) -> datetime:
    """``n`` days after T0."""
    return T0 + timedelta(days=n)


# --------------------------------------------------------------------------- the rule


def test_older_fixed_then_newer_fixed(store: Store) -> None:
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u2"), fetched_at=T0))
    stats = store.import_batch(batch(adv(version="1:9.2p1-2+deb12u3"), fetched_at=day(1)))
    assert (stats.changed, stats.fix_changed, stats.provenance_only) == (1, 1, 0)
    assert merged(store).fix.version == "1:9.2p1-2+deb12u3"


def test_newer_fixed_then_older_fixed(store: Store) -> None:
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u3"), fetched_at=T0))
    # A later import that states an older fixed version does not move the fix back.
    stats = store.import_batch(batch(adv(version="1:9.2p1-2+deb12u2"), fetched_at=day(1)))
    assert (stats.unchanged, stats.provenance_only, stats.fix_changed) == (1, 1, 0)
    assert merged(store).fix.version == "1:9.2p1-2+deb12u3"
    provenance = store.advisory_provenance(Ecosystem.DEBIAN, "bookworm", "openssh", "CVE-2024-6387")
    assert len(provenance) == 2
    assert provenance[0].fetched_at == T0  # the winner first


def test_fixed_then_unfixed_keeps_fixed(store: Store) -> None:
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u3"), fetched_at=T0))
    stats = store.import_batch(
        batch(adv(version=None, status=FixStatus.NO_FIX_YET), fetched_at=day(1))
    )
    assert stats.provenance_only == 1
    assert stats.changed == 0
    result = merged(store)
    assert result.fix.status is FixStatus.FIXED
    assert result.fix.version == "1:9.2p1-2+deb12u3"
    assert len(store.advisory_provenance(Ecosystem.DEBIAN, "bookworm", "openssh", result.id)) == 2


def test_unfixed_then_fixed(store: Store) -> None:
    store.import_batch(batch(adv(version=None, status=FixStatus.DEFERRED), fetched_at=T0))
    assert merged(store).fix.status is FixStatus.DEFERRED
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u3"), fetched_at=day(1)))
    assert merged(store).fix.version == "1:9.2p1-2+deb12u3"


def test_newer_unfixed_replaces_older_unfixed(store: Store) -> None:
    store.import_batch(batch(adv(version=None, status=FixStatus.NO_FIX_YET), fetched_at=T0))
    stats = store.import_batch(
        batch(adv(version=None, status=FixStatus.WILL_NOT_FIX), fetched_at=day(1))
    )
    assert (stats.changed, stats.fix_changed) == (1, 1)
    assert merged(store).fix.status is FixStatus.WILL_NOT_FIX
    # An older document imported late does not replace the newer state...
    store.import_batch(batch(adv(version=None, status=FixStatus.DEFERRED), fetched_at=day(-1)))
    assert merged(store).fix.status is FixStatus.WILL_NOT_FIX
    # ...but the feed stating the older state again, later, does.
    store.import_batch(batch(adv(version=None, status=FixStatus.NO_FIX_YET), fetched_at=day(2)))
    assert merged(store).fix.status is FixStatus.NO_FIX_YET


def test_two_feeds_newest_fixed_version_wins(store: Store) -> None:
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u2"), fetched_at=T0))
    store.import_batch(
        batch(
            adv(version="1:9.2p1-2+deb12u3", feed="debian-dsa", source=DSA_SOURCE),
            kind=FeedKind.DEBIAN_DSA,
            source=DSA_SOURCE,
            fetched_at=T0,
        )
    )
    result = merged(store)
    assert result.fix.version == "1:9.2p1-2+deb12u3"
    assert result.feed == "debian-dsa"
    assert result.provenance.source == DSA_SOURCE
    # The tracker catching up with a newer fix wins in turn; the DSA record stays provenance.
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u4"), fetched_at=day(1)))
    result = merged(store)
    assert (result.fix.version, result.feed) == ("1:9.2p1-2+deb12u4", "debian-json")
    feeds = [
        p.feed
        for p in store.advisory_provenance(Ecosystem.DEBIAN, "bookworm", "openssh", result.id)
    ]
    assert feeds == ["debian-json", "debian-dsa", "debian-json"]


def test_version_order_is_dpkg_not_text(store: Store) -> None:
    store.import_batch(batch(adv(version="1:1.0-1"), fetched_at=T0))
    store.import_batch(batch(adv(version="9.9-1"), fetched_at=day(1)))
    assert merged(store).fix.version == "1:1.0-1"  # the epoch wins
    store.import_batch(batch(adv(version="1:1.0~rc1-1"), fetched_at=day(2)))
    assert merged(store).fix.version == "1:1.0-1"  # ~ sorts before


def test_equal_versions_tie_goes_to_newest_record(store: Store) -> None:
    store.import_batch(batch(adv(version="1.0", severity=Severity.LOW), fetched_at=T0))
    store.import_batch(batch(adv(version="1.0-0", severity=Severity.HIGH), fetched_at=day(1)))
    result = merged(store)
    assert compare("debian", result.fix.version or "", "1.0") == 0
    assert result.severity is Severity.HIGH


def test_merged_advisory_unions_aliases_and_fills_gaps(store: Store) -> None:
    store.import_batch(
        batch(
            adv(
                "DSA-5724-1",
                version=None,
                aliases=("CVE-2024-6387",),
                severity=Severity.HIGH,
                summary="regreSSHion",
            ),
            fetched_at=T0,
        )
    )
    store.import_batch(
        batch(
            adv(
                "DSA-5724-1",
                version="1:9.2p1-2+deb12u3",
                aliases=("CVE-2024-6409",),
                severity=Severity.UNKNOWN,
            ),
            fetched_at=day(1),
        )
    )
    result = merged(store, advisory_id="DSA-5724-1")
    assert result.fix.version == "1:9.2p1-2+deb12u3"
    assert result.aliases == ("CVE-2024-6409", "CVE-2024-6387")
    assert result.severity is Severity.HIGH  # the winner had none
    assert result.summary == "regreSSHion"
    assert [a.id for a in store.advisories_by_cve("CVE-2024-6387")] == ["DSA-5724-1"]
    assert [a.id for a in store.advisories_by_cve("CVE-2024-6409")] == ["DSA-5724-1"]


def test_keys_are_scoped_by_release_and_ecosystem(store: Store) -> None:
    store.import_batch(
        batch(
            adv(version="1:9.2p1-2+deb12u3"),
            adv(version="1:8.4p1-5+deb11u3", release="bullseye"),
            adv(version=None, release="trixie"),
        )
    )
    assert merged(store).fix.version == "1:9.2p1-2+deb12u3"
    bullseye = store.advisories_for(Ecosystem.DEBIAN, "bullseye", "openssh")
    assert [a.fix.version for a in bullseye] == ["1:8.4p1-5+deb11u3"]
    trixie = store.advisories_for(Ecosystem.DEBIAN, "trixie", "openssh")
    assert [a.fix.status for a in trixie] == [FixStatus.NO_FIX_YET]


def test_unfixed_advisories_are_stored(store: Store) -> None:
    stats = store.import_batch(
        batch(
            *(
                adv(f"CVE-2024-{n:04d}", version=None, status=s)
                for n, s in enumerate(FixStatus)
                if s not in (FixStatus.FIXED, FixStatus.HELD)
            )
        )
    )
    assert stats.created == len(FixStatus) - 2
    statuses = {a.fix.status for a in store.advisory_index(Ecosystem.DEBIAN, "bookworm")["openssh"]}
    assert statuses == set(FixStatus) - {FixStatus.FIXED, FixStatus.HELD}


# --------------------------------------------------------------------------- idempotence


def test_importing_the_same_batch_twice_changes_nothing(store: Store) -> None:
    b = batch(adv(), adv("CVE-2024-6409", version=None), fetched_at=T0)
    first = store.import_batch(b)
    assert (first.created, first.duplicate) == (2, False)
    before = dump(store)
    second = store.import_batch(b)
    assert second.duplicate
    assert (second.created, second.changed, second.advisories) == (0, 0, 2)
    assert dump(store) == before


def test_same_records_in_another_document_change_no_advisory(store: Store) -> None:
    records = (adv(), adv("CVE-2024-6409", version=None))
    store.import_batch(batch(*records, fetched_at=T0))
    advisories_before = store._conn().execute("SELECT * FROM advisories ORDER BY id").fetchall()
    stats = store.import_batch(batch(*records, fetched_at=T0))  # same fetch time, new sha256
    assert (stats.duplicate, stats.created, stats.changed, stats.unchanged) == (False, 0, 0, 2)
    assert (
        store._conn().execute("SELECT * FROM advisories ORDER BY id").fetchall()
        == advisories_before
    )
    count = store._conn().execute("SELECT count(*) FROM advisory_records").fetchone()[0]
    assert count == 2  # the same statements are not duplicated as provenance


def test_restated_record_with_new_content_updates_in_place(store: Store) -> None:
    store.import_batch(batch(adv(severity=Severity.LOW), fetched_at=T0))
    stats = store.import_batch(batch(adv(severity=Severity.CRITICAL), fetched_at=day(1)))
    assert (stats.changed, stats.fix_changed, stats.unchanged) == (1, 0, 0)
    assert merged(store).severity is Severity.CRITICAL
    count = store._conn().execute("SELECT count(*) FROM advisory_records").fetchone()[0]
    assert count == 1  # same statement (feed, source, record id, fix): one provenance row


def test_restating_keeps_first_seen_provenance(store: Store) -> None:
    first = adv().model_copy(
        update={"provenance": adv().provenance.model_copy(update={"fetched_at": T0})}
    )
    again = adv().model_copy(
        update={"provenance": adv().provenance.model_copy(update={"fetched_at": day(1)})}
    )
    store.import_batch(batch(first, fetched_at=T0))
    stats = store.import_batch(batch(again, fetched_at=day(1)))
    assert (stats.changed, stats.unchanged) == (0, 1)
    assert merged(store).provenance.fetched_at == T0  # when the feed first said so


def test_one_key_twice_in_a_batch(store: Store) -> None:
    stats = store.import_batch(
        batch(adv(version="1:9.2p1-2+deb12u3"), adv(version="1:9.2p1-2+deb12u2", feed="x"))
    )
    assert (stats.created, stats.unchanged, stats.provenance_only) == (1, 1, 1)
    assert merged(store).fix.version == "1:9.2p1-2+deb12u3"


def test_advisory_index_cache_follows_changes(tmp_path: Path) -> None:
    path = tmp_path / "p.db"
    with Store(path) as reader, Store(path) as writer:
        writer.import_batch(batch(adv(version="1:9.2p1-2+deb12u2"), fetched_at=T0))
        first = reader.advisory_index(Ecosystem.DEBIAN, "bookworm")
        first["openssh"].clear()  # callers may mutate what they get
        again = reader.advisory_index(Ecosystem.DEBIAN, "bookworm")
        assert [a.fix.version for a in again["openssh"]] == ["1:9.2p1-2+deb12u2"]
        # A restatement changes no advisory; a newer fix (from another Store) shows at once.
        writer.import_batch(batch(adv(version="1:9.2p1-2+deb12u2"), fetched_at=day(1)))
        writer.import_batch(batch(adv(version="1:9.2p1-2+deb12u3"), fetched_at=day(2)))
        latest = reader.advisory_index(Ecosystem.DEBIAN, "bookworm")
        assert [a.fix.version for a in latest["openssh"]] == ["1:9.2p1-2+deb12u3"]
    with Store(path, index_cache_size=0) as uncached:
        assert uncached.advisory_index(Ecosystem.DEBIAN, "bookworm") == latest


# --------------------------------------------------------------------------- rollback


@pytest.mark.parametrize("flush_every", [1, 2000])
def test_failure_midway_rolls_back_everything(
    store: Store, monkeypatch: pytest.MonkeyPatch, flush_every: int
) -> None:
    monkeypatch.setattr(BatchImporter, "FLUSH_EVERY", flush_every)
    store.import_batch(
        batch(adv(version="1:9.2p1-2+deb12u2"), adv("CVE-2024-0001", "zlib", "1.0-1"))
    )
    before = dump(store)
    real = BatchImporter.add_advisory
    calls = 0

    def flaky(self: BatchImporter, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("disk on fire")
        real(self, *args, **kwargs)

    monkeypatch.setattr(BatchImporter, "add_advisory", flaky)
    second = batch(
        adv(version="1:9.2p1-2+deb12u3"),  # would change the first key
        adv("CVE-2024-0004", "curl", "8.0-1"),  # a new key, written when flush_every == 1
        adv("CVE-2024-0002", "curl", "8.0-1"),  # raises
        adv("CVE-2024-0003", "curl", "8.0-2"),
        fetched_at=day(1),
    )
    with pytest.raises(RuntimeError, match="disk on fire"):
        store.import_batch(second)
    assert calls == 3
    assert dump(store) == before
    monkeypatch.undo()
    assert merged(store).fix.version == "1:9.2p1-2+deb12u2"
    # The store still works, and the same batch imports fine afterwards (not a duplicate).
    stats = store.import_batch(second)
    assert (stats.duplicate, stats.created, stats.changed) == (False, 3, 1)


def test_invalid_version_midway_rolls_back(store: Store) -> None:
    store.import_batch(batch(adv(version="1:9.2p1-2+deb12u2")))
    before = dump(store)
    with pytest.raises(StoreError, match=r"CVE-2024-0002.*invalid debian version"):
        store.import_batch(
            batch(
                adv(version="1:9.2p1-2+deb12u3"),
                adv("CVE-2024-0002", "zlib", "not a version!"),
                fetched_at=day(1),
            )
        )
    assert dump(store) == before


def test_sqlite_constraint_failure_rolls_back(store: Store) -> None:
    store.import_batch(batch(adv()))
    before = dump(store)
    # A record that slipped past validation ("fixed" without a version) violates the table's
    # CHECK constraint; the records before it in the batch are rolled back too.
    broken = adv("CVE-2024-0002", "zlib").model_copy(
        update={"fix": FixState.model_construct(status=FixStatus.FIXED, version=None)}
    )
    with pytest.raises(StoreError, match=r"rolled back.*CHECK constraint"):
        store.import_batch(batch(adv(version="1:9.2p1-2+deb12u9"), broken, fetched_at=day(1)))
    assert dump(store) == before


# --------------------------------------------------------------------------- properties

DEB_VERSIONS = [
    "1.0-1",
    "1.0-2",
    "1.0-10",
    "1.0~rc1-1",
    "1.0-1+deb12u1",
    "1.0-1~deb12u1",
    "1:0.9-1",
    "2.0-1",
    "1.0",
    "1.0-0",
    "10.0-1",
]
UNFIXED = [s for s in FixStatus if s not in (FixStatus.FIXED, FixStatus.HELD)]


Rec = tuple[str | None, FixStatus, str, int, Severity, tuple[str, ...]]


@st.composite
def record_sets(draw: st.DrawFn) -> list[Rec]:
    """Records of one key: (fixed version or None, status, feed, fetch hour, severity,
    aliases), with distinct hours."""
    n = draw(st.integers(min_value=1, max_value=6))
    hours = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n, unique=True))
    out: list[Rec] = []
    for hour in hours:
        fixed = draw(st.booleans())
        version = draw(st.sampled_from(DEB_VERSIONS)) if fixed else None
        status = FixStatus.FIXED if fixed else draw(st.sampled_from(UNFIXED))
        feed = draw(st.sampled_from(["debian-json", "debian-dsa"]))
        severity = draw(st.sampled_from([Severity.UNKNOWN, Severity.LOW, Severity.HIGH]))
        aliases = tuple(draw(st.sets(st.sampled_from(["CVE-2024-0001", "CVE-2024-0002"]))))
        out.append((version, status, feed, hour, severity, aliases))
    return out


def _advisory(record: Rec) -> Advisory:
    version, status, feed, _, severity, aliases = record
    return adv(
        version=version,
        status=status,
        feed=feed,
        source=feed,
        severity=severity,
        aliases=aliases,
    )


def _expected(records: list[Rec]) -> tuple[FixStatus, str | None]:
    """The rule, stated directly: max fixed version by dpkg order, else the newest state."""
    fixed = [r[0] for r in records if r[0] is not None]
    if fixed:
        return FixStatus.FIXED, max(fixed, key=functools.partial(sort_key, "debian"))
    newest = max(records, key=lambda r: r[3])
    return newest[1], None


def _check(result: Advisory, records: list[Rec]) -> None:
    status, version = _expected(records)
    assert result.fix.status is status
    if version is None:
        assert result.fix.version is None
    else:
        assert result.fix.version is not None
        assert compare("debian", result.fix.version, version) == 0


@settings(max_examples=300, deadline=None)
@given(records=record_sets(), data=st.data())
def test_merge_rule_is_order_independent_pure(records: list[Rec], data: st.DataObject) -> None:
    order = data.draw(st.permutations(range(len(records))))
    sources = [
        SourceRecord(
            advisory=_advisory(r),
            seen_at=(T0 + timedelta(hours=r[3])).isoformat(),
            import_id=i,
            seq=0,
        )
        for i, r in enumerate(records)
    ]
    result, winner = merge_records([sources[i] for i in order])
    _check(result, records)
    assert (result, winner) == merge_records(sources)  # the whole merged advisory
    assert set(result.cves) == {"CVE-2024-6387"} | {a for r in records for a in r[5]}
    if result.severity is Severity.UNKNOWN:
        assert all(r[4] is Severity.UNKNOWN for r in records)


def _import_all(store: Store, records: list[Rec], order: Sequence[int]) -> Advisory:
    for i in order:
        store.import_batch(
            batch(
                _advisory(records[i]),
                fetched_at=T0 + timedelta(hours=records[i][3]),
                source=records[i][2],
            )
        )
    return merged(store)


@settings(max_examples=60, deadline=None)
@given(records=record_sets(), data=st.data())
def test_merge_rule_through_the_store_any_import_order(
    records: list[Rec], data: st.DataObject
) -> None:
    order = data.draw(st.permutations(range(len(records))))
    chronological = sorted(range(len(records)), key=lambda i: records[i][3])
    with tempfile.TemporaryDirectory() as tmp:
        with Store(Path(tmp) / "a.db") as store:
            result = _import_all(store, records, order)
            _check(result, records)
            provenance = store.advisory_provenance(
                Ecosystem.DEBIAN, "bookworm", "openssh", "CVE-2024-6387"
            )
            assert provenance[0] == result.provenance
            # One provenance row per distinct statement (feed, source, record id, fix state).
            assert len(provenance) == len({(r[0], r[1], r[2]) for r in records})
        with Store(Path(tmp) / "b.db") as store:
            expected = _import_all(store, records, chronological)
    # Any import order gives what importing in fetch order gives (but for when the winning
    # statement was first seen, which depends on which copy of it came first).
    unstamped = {"provenance": {"fetched_at"}}
    assert result.model_dump(exclude=unstamped) == expected.model_dump(exclude=unstamped)

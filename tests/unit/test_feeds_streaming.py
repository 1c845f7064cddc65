"""Feed files are streamed: bounded memory on big files, same results, empty lists refused.

The big-file tests generate 200+ MB documents in tmp_path (deleted afterwards), import them in
a subprocess and check its peak RSS: whole-file reading needed about seven times the file
(a 210 MB DSA list: > 1.5 GB); streaming stays far below 400 MB. No timing is asserted.
"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import patchpilot.tools.feeds._stream as stream_module
from patchpilot.agents.sourcing import import_feed
from patchpilot.core.feeds import FeedBatch, RecordStream
from patchpilot.core.models import Advisory, Ecosystem
from patchpilot.core.store import Store
from patchpilot.tools.feeds import FeedError, FeedKind, debian, parse_bytes, parse_feed
from patchpilot.tools.feeds._stream import Document

NOW = datetime(2025, 2, 14, tzinfo=UTC)
MiB = 1024 * 1024


@pytest.fixture
def small_keep(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make every multi-record document stream its records (the large-document path)."""
    monkeypatch.setattr(stream_module, "KEEP_IN_MEMORY", 3)
    return 3


# --------------------------------------------------------------------------- generators


def _dsa_entry(n: int, *, pad: int = 0) -> str:
    note = f"\tNOTE: {'x' * pad}\n" if pad else ""
    return (
        f"[{1 + n % 28:02d} Mar 2025] DSA-{n}-1 pkg{n} - security update\n"
        f"\t{{CVE-2025-{10000 + n % 90000} CVE-2024-{10000 + n % 80000}}}\n"
        f"\t[bookworm] - pkg{n} 1.{n}-1+deb12u1\n"
        f"\t[bullseye] - pkg{n} <not-affected> (Vulnerable code not present)\n"
        f"{note}"
    )


def write_dsa_list(path: Path, *, target_bytes: int, pad: int = 0) -> int:
    """A syntactically real DSA list of about ``target_bytes``; returns the advisory count."""
    size = entries = 0
    with path.open("w", encoding="utf-8") as out:
        while size < target_bytes:
            entries += 1
            block = _dsa_entry(entries, pad=pad)
            out.write(block)
            size += len(block)
    return 2 * entries


def write_tracker_json(path: Path, *, target_bytes: int, description: int = 0) -> int:
    """A tracker-export-shaped JSON document of about ``target_bytes``; returns advisories."""
    size = advisories = 0
    text = "d" * description
    with path.open("w", encoding="utf-8") as out:
        out.write("{")
        package = 0
        while size < target_bytes:
            package += 1
            cves = {
                f"CVE-2024-{10000 + package * 10 + k}": {
                    "description": text,
                    "releases": {
                        "bookworm": {
                            "status": "resolved",
                            "fixed_version": f"1.{k}-1",
                            "urgency": "low",
                        }
                    },
                }
                for k in range(4)
            }
            chunk = ("," if package > 1 else "") + json.dumps(f"pkg{package}") + ":"
            chunk += json.dumps(cves)
            out.write(chunk)
            size += len(chunk)
            advisories += 4
        out.write("}\n")
    return advisories


# --------------------------------------------------------------------------- empty lists


@pytest.mark.parametrize("kind", [FeedKind.DEBIAN_DSA, FeedKind.DEBIAN_DLA])
@pytest.mark.parametrize(
    "content",
    [b"", b"\n\n   \n", b"\xef\xbb\xbf", b"\tNOTE: nothing here\n"],
    ids=["zero-bytes", "blank-lines", "bom-only", "note-only"],
)
def test_empty_list_is_refused_and_store_unchanged(
    tmp_path: Path, kind: FeedKind, content: bytes
) -> None:
    """Defect 10: an empty DSA/DLA file is an error naming the file, never an empty import."""
    path = tmp_path / "list"
    path.write_bytes(content)
    prefix = "DSA" if kind is FeedKind.DEBIAN_DSA else "DLA"
    with Store(tmp_path / "p.db") as store:
        before = store.feed_status()
        with pytest.raises(FeedError, match=f"no {prefix} advisory in the document") as info:
            import_feed(store, kind, path)
        assert info.value.source == str(path)
        assert str(path) in str(info.value)
        assert store.feed_status() == before == []
        assert not store.has_advisories()


def test_empty_list_bytes_are_refused() -> None:
    with pytest.raises(FeedError, match="empty or holds no"):
        parse_bytes(FeedKind.DEBIAN_DSA, b"", source="DSA_list")


def test_list_of_headers_without_packages_is_still_a_list() -> None:
    """Entries naming no package are real (24 in the DSA list): not "empty"."""
    batch = parse_bytes(FeedKind.DEBIAN_DSA, b"[01 Mar 2025] DSA-1-1 foo - x\n", fetched_at=NOW)
    assert batch.advisories == ()


# --------------------------------------------------------------------------- stream == tuple


def _assert_same(streamed: FeedBatch, kept: FeedBatch) -> None:
    assert streamed.sha256 == kept.sha256
    assert streamed.published_at == kept.published_at
    for name in ("advisories", "epss", "kev", "cvss"):
        ours, theirs = getattr(streamed, name), getattr(kept, name)
        assert len(ours) == len(theirs)
        assert list(ours) == list(theirs)


@pytest.mark.parametrize(
    ("kind", "sample"),
    [
        (FeedKind.DEBIAN_DSA, "debian/DSA_list_2025-02-13.txt"),
        (FeedKind.DEBIAN_DLA, "debian/DLA_list_2025-02-13.txt"),
        (FeedKind.DEBIAN_JSON, "debian/tracker-json-export-excerpt.json"),
        (FeedKind.KEV, "kev/known_exploited_vulnerabilities.json"),
        (FeedKind.OSV, "osv/records"),
    ],
)
def test_streamed_records_equal_kept_records(
    shared_dir: Path, kind: FeedKind, sample: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shared_dir / "feeds" / sample
    kept = parse_feed(kind, path, fetched_at=NOW)
    monkeypatch.setattr(stream_module, "KEEP_IN_MEMORY", 3)
    streamed = parse_feed(kind, path, fetched_at=NOW)
    stream_kinds = {
        FeedKind.KEV: streamed.kev,
    }
    records = stream_kinds.get(kind, streamed.advisories)
    assert isinstance(records, RecordStream)
    _assert_same(streamed, kept)
    assert records[1] == list(records)[1]
    assert records[-1] == list(records)[-1]


def _epss_csv(rows: int, *, percentile: bool) -> bytes:
    lines = ["#model_version:v2023.03.01,score_date:2023-03-07T00:00:00+0000"]
    lines.append("cve,epss,percentile" if percentile else "cve,epss")
    for n in range(rows):
        score = (n % 997) / 1000
        lines.append(f"CVE-2023-{10000 + n},{score}" + (f",{score}" if percentile else ""))
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("percentile", [True, False])
@pytest.mark.parametrize("compress", [True, False])
def test_streamed_epss_equals_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, percentile: bool, compress: bool
) -> None:
    data = _epss_csv(500, percentile=percentile)
    path = tmp_path / ("epss.csv.gz" if compress else "epss.csv")
    path.write_bytes(gzip.compress(data) if compress else data)
    kept = parse_feed(FeedKind.EPSS, path, fetched_at=NOW)
    monkeypatch.setattr(stream_module, "KEEP_IN_MEMORY", 3)
    streamed = parse_feed(FeedKind.EPSS, path, fetched_at=NOW)
    assert isinstance(streamed.epss, RecordStream)
    _assert_same(streamed, kept)
    if not percentile:  # computed from the file: the best score has percentile 1
        assert max(e.percentile for _, e in streamed.epss) == 1.0


def test_building_a_batch_never_iterates_a_stream() -> None:
    calls: list[int] = []

    def factory() -> Iterator[object]:
        calls.append(1)
        return iter(())

    stream = RecordStream(factory, 0, source="x")
    batch = FeedBatch(
        kind=FeedKind.KEV,
        source="x",
        fetched_at=NOW,
        sha256="0",
        kev=stream,  # type: ignore[arg-type]
    )
    batch.model_copy(update={"etag": "e"})
    assert calls == []
    assert batch.kev is stream


def test_streamed_import_equals_kept_import(
    shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = shared_dir / "feeds/debian/DLA_list_2025-02-13.txt"
    with Store(tmp_path / "kept.db") as store:
        kept = import_feed(store, FeedKind.DEBIAN_DLA, path)
        kept_rows = _facts(store.advisory_index(Ecosystem.DEBIAN, "bullseye"))
    monkeypatch.setattr(stream_module, "KEEP_IN_MEMORY", 3)
    with Store(tmp_path / "streamed.db") as store:
        streamed = import_feed(store, FeedKind.DEBIAN_DLA, path)
        streamed_rows = _facts(store.advisory_index(Ecosystem.DEBIAN, "bullseye"))
    assert (streamed.advisories, streamed.created) == (kept.advisories, kept.created)
    assert kept.created == 4225
    assert streamed_rows == kept_rows
    assert len(kept_rows) > 100


def _facts(index: dict[str, list[Advisory]]) -> dict[str, list[tuple[object, ...]]]:
    return {
        package: [(a.id, a.fix, a.severity, a.cves, a.summary) for a in advisories]
        for package, advisories in index.items()
    }


def test_document_changed_after_validation_rolls_the_import_back(
    tmp_path: Path, small_keep: int
) -> None:
    """The stream re-reads the file at import time; a changed file is refused, nothing kept."""
    path = tmp_path / "DSA_list"
    write_dsa_list(path, target_bytes=5_000)
    batch = parse_feed(FeedKind.DEBIAN_DSA, path, fetched_at=NOW)
    assert isinstance(batch.advisories, RecordStream)
    with path.open("a", encoding="utf-8") as out:  # same records, then one more entry
        out.write(_dsa_entry(999_999))
    with Store(tmp_path / "p.db") as store:
        with pytest.raises(FeedError, match="changed"):
            store.import_batch(batch)
        assert store.feed_status() == []
        assert not store.has_advisories()


def test_document_edited_in_place_is_detected(tmp_path: Path, small_keep: int) -> None:
    path = tmp_path / "DSA_list"
    write_dsa_list(path, target_bytes=5_000)
    batch = parse_feed(FeedKind.DEBIAN_DSA, path, fetched_at=NOW)
    path.write_text(path.read_text().replace("deb12u1", "deb12u2"))  # same count, other bytes
    with Store(tmp_path / "p.db") as store:
        with pytest.raises(FeedError, match="changed between its validation and its import"):
            store.import_batch(batch)
        assert not store.has_advisories()


# --------------------------------------------------------------------------- bounded reads


def test_overlong_line_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "DSA_list"
    path.write_bytes(b"[01 Mar 2025] DSA-1-1 foo - " + b"x" * (2 * MiB) + b"\n")
    with pytest.raises(FeedError, match=r"line 1: line longer than 1048576 bytes"):
        parse_feed(FeedKind.DEBIAN_DSA, path)


def test_file_growing_past_the_limit_while_read_is_refused(tmp_path: Path) -> None:
    """The size limit holds on the bytes actually read, not only on the size stat() saw."""
    data = (_dsa_entry(1) * 50).encode()
    document = Document("grown", lambda: io.BytesIO(data), size=10)
    with pytest.raises(FeedError, match="document exceeds the size limit of 1000 bytes"):
        debian.parse_dsa(document, source="grown", fetched_at=NOW, max_bytes=1000)


def test_big_json_syntax_error_without_a_precise_reparse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the precise-error size, the ijson message is used (no whole-file json.loads)."""
    monkeypatch.setattr(stream_module, "PRECISE_ERROR_MAX_BYTES", 10)
    path = tmp_path / "tracker.json"
    path.write_bytes(b'{"pkg": {"CVE-2025-1": {"releases": {}}, ')
    with pytest.raises(FeedError, match=r"not valid JSON: .*\(document is truncated\?\)"):
        parse_feed(FeedKind.DEBIAN_JSON, path)
    path.write_bytes(b'{"pkg": {"CVE-2025-1": {"description": "caf\xe9", "releases": {}}}}')
    with pytest.raises(FeedError, match="not valid UTF-8"):
        parse_feed(FeedKind.DEBIAN_JSON, path)


# --------------------------------------------------------------------------- big files (RSS)


_IMPORT_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    from patchpilot.agents.sourcing import import_feed
    from patchpilot.core.store import Store
    kind, path, db = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    with Store(db) as store:
        stats = import_feed(store, kind, path)
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child of a large pytest
    # process would report the parent's high-water mark; VmHWM belongs to this address space.
    peak = next(int(line.split()[1]) for line in open("/proc/self/status")
                if line.startswith("VmHWM:"))  # KiB
    print(json.dumps({"advisories": stats.advisories, "created": stats.created,
                      "peak_kib": peak}))
    """
)


def _import_in_subprocess(kind: FeedKind, path: Path, db: Path) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_SCRIPT, kind.value, str(path), str(db)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "write"),
    [
        (FeedKind.DEBIAN_DSA, lambda p: write_dsa_list(p, target_bytes=210 * MiB, pad=8000)),
        (
            FeedKind.DEBIAN_JSON,
            lambda p: write_tracker_json(p, target_bytes=210 * MiB, description=8000),
        ),
    ],
    ids=["dsa-list", "tracker-json"],
)
def test_big_feed_import_has_bounded_memory(tmp_path: Path, kind: FeedKind, write: object) -> None:
    """Defect 7: a 210 MB feed file imports with a peak RSS far below the file's size x 2.

    Whole-file reading needed > 1.5 GB for the DSA list and ~1 GB for the JSON; both files
    also hold more advisories than a batch keeps in memory, so the records are streamed too.
    """
    path = tmp_path / f"big-{kind.value}"
    try:
        expected = write(path)  # type: ignore[operator]
        assert path.stat().st_size > 200 * MiB
        assert expected > stream_module.KEEP_IN_MEMORY
        result = _import_in_subprocess(kind, path, tmp_path / "p.db")
    finally:
        path.unlink(missing_ok=True)
    assert result["advisories"] == result["created"] == expected
    peak_mib = result["peak_kib"] / 1024
    print(f"{kind.value}: 210 MiB file, {expected} advisories, peak RSS {peak_mib:.0f} MiB")
    assert peak_mib < 400

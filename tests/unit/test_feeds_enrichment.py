"""KEV, EPSS and NVD parsers against the real samples, plus their failure modes."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from patchpilot.tools.feeds import FeedError, FeedKind, parse_feed
from patchpilot.tools.feeds import epss as epss_feed
from patchpilot.tools.feeds import kev as kev_feed
from patchpilot.tools.feeds import nvd as nvd_feed

NOW = datetime(2025, 9, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- KEV


@pytest.fixture(scope="module")
def kev_path(shared_dir: Path) -> Path:
    return shared_dir / "feeds/kev/known_exploited_vulnerabilities.json"


def test_real_kev_catalog(kev_path: Path) -> None:
    batch = parse_feed(FeedKind.KEV, kev_path, fetched_at=NOW)
    assert len(batch.kev) == 1404
    assert len({cve for cve, _ in batch.kev}) == 1404
    assert batch.published_at == datetime(2025, 8, 25, 17, 4, 19, 979600, tzinfo=UTC)
    cve, first = batch.kev[0]
    assert cve == "CVE-2025-48384"
    assert (first.date_added, first.due_date) == (date(2025, 8, 25), date(2025, 9, 15))
    assert first.known_ransomware_use is None  # "Unknown" is not "no"
    assert Counter(entry.known_ransomware_use for _, entry in batch.kev) == {None: 1111, True: 293}
    assert batch.advisories == ()
    assert batch.epss == ()
    assert batch.cvss == ()


def _kev(entries: list[dict[str, Any]], **catalog: Any) -> bytes:
    document: dict[str, Any] = {
        "catalogVersion": "1",
        "dateReleased": "2025-08-25T17:04:19.9796Z",
        "count": len(entries),
        "vulnerabilities": entries,
    }
    document.update(catalog)
    return json.dumps(document).encode()


def _kev_entry(**overrides: Any) -> dict[str, Any]:
    entry = {
        "cveID": "CVE-2025-0001",
        "vendorProject": "v",
        "product": "p",
        "vulnerabilityName": "n",
        "dateAdded": "2025-01-01",
        "shortDescription": "d",
        "requiredAction": "a",
        "dueDate": "2025-01-22",
        "knownRansomwareCampaignUse": "Known",
    }
    entry.update(overrides)
    return entry


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_kev([_kev_entry()], count=2), r"count 2 does not match its 1 entries"),
        (_kev([_kev_entry(cveID="CVE-25-1")]), r"malformed cveID 'CVE-25-1'"),
        (
            _kev([{k: v for k, v in _kev_entry().items() if k != "dueDate"}]),
            r"record CVE-2025-0001: missing dueDate",
        ),
        (_kev([_kev_entry(dateAdded="01/01/2025")]), r"dateAdded is not a date"),
        (_kev([_kev_entry(knownRansomwareCampaignUse="Maybe")]), r"Known or Unknown"),
        (_kev([], dateReleased="soon"), r"dateReleased is not a timestamp"),
        (
            json.dumps({"vulnerabilities": []}).encode(),
            r"missing catalogVersion, dateReleased, count",
        ),
        (b"[]", r"must be a JSON object"),
    ],
)
def test_kev_errors(data: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        kev_feed.parse(data, source="kev", fetched_at=NOW)


def test_truncated_kev_file(kev_path: Path) -> None:
    data = kev_path.read_bytes()[:50_000]
    with pytest.raises(
        FeedError, match=r"known_exploited_vulnerabilities\.json, line \d+: not valid JSON"
    ):
        parse_feed(FeedKind.KEV, data, source=str(kev_path))


def test_kev_known_and_unknown_ransomware() -> None:
    batch = kev_feed.parse(
        _kev(
            [_kev_entry(), _kev_entry(cveID="CVE-2025-0002", knownRansomwareCampaignUse="Unknown")]
        ),
        source="kev",
        fetched_at=NOW,
    )
    assert [entry.known_ransomware_use for _, entry in batch.kev] == [True, None]


# --------------------------------------------------------------------------- EPSS


@pytest.mark.parametrize(
    ("name", "score_date", "first"),
    [
        ("epss_scores-2021-04-14.csv.gz", date(2021, 4, 14), (0.65117, 1.0)),  # percentile computed
        ("epss_scores-2021-09-01.csv.gz", date(2021, 9, 1), (0.65117, 0.9981063485700858)),
        ("epss_scores-2022-02-04.csv.gz", date(2022, 2, 4), (0.96817, 0.99999)),
        ("epss_scores-2023-03-07.csv.gz", date(2023, 3, 7), (0.97567, 0.99995)),
    ],
)
def test_real_epss_files(
    shared_dir: Path, name: str, score_date: date, first: tuple[float, float]
) -> None:
    batch = parse_feed(FeedKind.EPSS, shared_dir / "feeds/epss" / name, fetched_at=NOW)
    assert len(batch.epss) == 2
    assert [cve for cve, _ in batch.epss] == ["CVE-2020-5902", "CVE-2018-19571"]
    _, score = batch.epss[0]
    assert (score.probability, score.percentile) == first
    assert {s.score_date for _, s in batch.epss} == {score_date}
    assert batch.published_at == datetime(
        score_date.year, score_date.month, score_date.day, tzinfo=UTC
    )


def test_epss_uncompressed_csv(shared_dir: Path) -> None:
    raw = gzip.decompress((shared_dir / "feeds/epss/epss_scores-2023-03-07.csv.gz").read_bytes())
    batch = epss_feed.parse(raw, source="current.csv", fetched_at=NOW)
    assert len(batch.epss) == 2
    assert batch.epss[1][1].score_date == date(2023, 3, 7)  # from the comment line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("#score_date:2023-03-07\ncve,score\nCVE-2020-1,0.1\n", r"lacks the cve and epss columns"),
        (
            "#score_date:2023-03-07\ncve,epss,percentile\nCVE-2020-1,0.1\n",
            r"line 3: expected 3 columns, got 2",
        ),
        (
            "#score_date:2023-03-07\ncve,epss,percentile\nCVE-2020-1000,high,0.5\n",
            r"line 3: a score is not a number",
        ),
        (
            "#score_date:2023-03-07\ncve,epss,percentile\nCVE-2020-1000,1.5,0.5\n",
            r"line 3: score 1.5 .* outside",
        ),
        (
            "#score_date:2023-03-07\ncve,epss,percentile\nCVE-2020-1000,nan,0.5\n",
            r"not a finite number",
        ),
        ("#score_date:2023-03-07\ncve,epss,percentile\nCVE-1,0.1,0.5\n", r"malformed CVE id"),
        ("#score_date:2023-03-07\ncve,epss,percentile\n", r"no score rows"),
        ("#score_date:someday\ncve,epss,percentile\nCVE-2020-1,0.1,0.5\n", r"malformed score_date"),
        ("cve,epss,percentile\nCVE-2020-1,0.1,0.5\n", r"no score_date"),
        ("", r"no CSV header"),
    ],
)
def test_epss_errors(text: str, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        epss_feed.parse(text.encode(), source="scores.csv", fetched_at=NOW)


def test_epss_truncated_gzip(shared_dir: Path) -> None:
    data = (shared_dir / "feeds/epss/epss_scores-2023-03-07.csv.gz").read_bytes()
    with pytest.raises(FeedError, match="gzip"):
        epss_feed.parse(data[:-12], source="cut.csv.gz", fetched_at=NOW)


def test_epss_gzip_bomb() -> None:
    data = gzip.compress(b"#score_date:2023-03-07\ncve,epss,percentile\n" + b"\n" * 1_000_000)
    with pytest.raises(FeedError, match="decompressed document exceeds the size limit"):
        epss_feed.parse(data, source="bomb.csv.gz", fetched_at=NOW, max_bytes=10_000)


def test_epss_non_utf8() -> None:
    data = gzip.compress(b"#score_date:2023-03-07\ncve,epss\nCVE-2020-1\xff,0.1\n")
    with pytest.raises(FeedError, match=r"line 3: not valid UTF-8"):
        epss_feed.parse(data, source="x.csv.gz", fetched_at=NOW)


# --------------------------------------------------------------------------- NVD


@pytest.fixture(scope="module")
def nvd_dir(shared_dir: Path) -> Path:
    return shared_dir / "feeds/nvd"


def test_real_nvd_pages(nvd_dir: Path) -> None:
    pages = {
        p.name: parse_feed(FeedKind.NVD, p, fetched_at=NOW) for p in sorted(nvd_dir.glob("*.json"))
    }
    counts = {name: len(batch.cvss) for name, batch in pages.items()}
    assert counts == {
        "page-0-1.json": 1,
        "page-0-3.json": 3,
        "page-3-3.json": 2,
        "page-6-3.json": 0,
        "ssvc-affected-0-1.json": 1,
    }
    (log4shell,) = pages["ssvc-affected-0-1.json"].cvss
    cve, score = log4shell
    assert cve == "CVE-2021-44228"
    # NVD's Primary score is preferred over the CNA's Secondary one; v2 is ignored.
    assert (score.version, score.base_score, score.source) == ("3.1", 10.0, "nvd@nist.gov")
    assert score.vector == "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"
    by_cve = dict(pages["page-3-3.json"].cvss)
    assert by_cve["CVE-2023-6069"].version == "3.0"
    assert by_cve["CVE-2023-45167"].version == "3.1"
    assert pages["page-0-3.json"].published_at == datetime(
        2023, 11, 10, 8, 41, 24, 983000, tzinfo=UTC
    )


def test_real_nvd_directory_is_imported_together(nvd_dir: Path) -> None:
    batch = parse_feed(FeedKind.NVD, nvd_dir, fetched_at=NOW)
    # page-0-1 repeats the first CVE of page-0-3: one score per (CVE, version)
    assert sorted(cve for cve, _ in batch.cvss) == [
        "CVE-2021-44228",
        "CVE-2023-36014",
        "CVE-2023-36024",
        "CVE-2023-45167",
        "CVE-2023-46729",
        "CVE-2023-6069",
    ]
    assert {score.version for _, score in batch.cvss} == {"3.0", "3.1"}


def _metric(
    version: str, score: object, kind: str = "Secondary", source: str = "cna@example.org"
) -> dict[str, Any]:
    prefix = f"CVSS:{version}/"
    return {
        "source": source,
        "type": kind,
        "cvssData": {"version": version, "vectorString": prefix + "AV:N/AC:L", "baseScore": score},
    }


def _nvd(
    metrics: dict[str, Any], cve: str = "CVE-2024-0001", modified: str = "2024-01-02T00:00:00.000"
) -> bytes:
    return json.dumps(
        {
            "resultsPerPage": 1,
            "startIndex": 0,
            "totalResults": 1,
            "format": "NVD_CVE",
            "version": "2.0",
            "timestamp": "2024-01-03T00:00:00.000",
            "vulnerabilities": [{"cve": {"id": cve, "lastModified": modified, "metrics": metrics}}],
        }
    ).encode()


def test_nvd_v40_and_v31_and_primary_preference() -> None:
    data = _nvd(
        {
            "cvssMetricV40": [_metric("4.0", 9.3), _metric("4.0", 8.7, "Primary", "nvd@nist.gov")],
            "cvssMetricV31": [_metric("3.1", 9.8)],
        }
    )
    batch = nvd_feed.parse(data, source="p", fetched_at=NOW)
    got = {score.version: score for _, score in batch.cvss}
    assert set(got) == {"4.0", "3.1"}
    assert (got["4.0"].base_score, got["4.0"].source) == (8.7, "nvd@nist.gov")
    assert got["3.1"].base_score == 9.8


def test_nvd_newest_record_wins_across_pages() -> None:
    old = _nvd({"cvssMetricV31": [_metric("3.1", 5.0)]}, modified="2024-01-01T00:00:00")
    new = _nvd({"cvssMetricV31": [_metric("3.1", 7.5)]}, modified="2024-02-01T00:00:00")
    batch = nvd_feed.parse_pages(
        [("new", new), ("old", old)], source="d", fetched_at=NOW, sha256="x"
    )
    assert [score.base_score for _, score in batch.cvss] == [7.5]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"resultsPerPage": 1}', r"no 'vulnerabilities' list"),
        (_nvd({}, cve="GHSA-1"), r"malformed CVE id 'GHSA-1'"),
        (_nvd({"cvssMetricV31": [_metric("3.1", 11.0)]}), r"invalid CVSS 3.1 score"),
        (
            _nvd({"cvssMetricV31": [_metric("3.0", 5.0)]}),
            r"cvssData.version '3.0' under the CVSS 3.1 key",
        ),
        (_nvd({"cvssMetricV31": [{"type": "Primary"}]}), r"needs 'cvssData'"),
        (_nvd({"cvssMetricV31": "x"}), r"must be a list"),
        (_nvd({"cvssMetricV31": [_metric("3.1", "high")]}), r"baseScore 'high' is not a number"),
        (_nvd({}, modified="never"), r"lastModified is not a timestamp"),
        (b'{"vulnerabilities": [{"cve": {"id": "CVE-2024-1"', r"not valid JSON.*truncated"),
    ],
)
def test_nvd_errors(data: bytes, message: str) -> None:
    with pytest.raises(FeedError, match=message):
        nvd_feed.parse(data, source="p", fetched_at=NOW)

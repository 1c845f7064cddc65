"""``patchpilot report --format html``: one self-contained page an auditor opens offline (issue 18,
item 6).

In process (typer's CliRunner) against real stores: a scan filled as the scan graph fills it
(tests/unit/test_exports.py: three hosts, findings in every fix state, CVSS, EPSS and KEV
imported as feeds) plus hostile strings from outside, and real patch runs of the run graph on
the scripted fleet of tests/fakes.py with the post-patch analysis of
tests/unit/test_graph_analysis.py (one approved with a hostile comment, one whose canary is
rolled back). Every page is parsed: no script, no external resource, no event handler, and the
hostile strings are text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner, Result

from patchpilot.app.report_html import MAX_HOST_BARS, duration, render_scan
from patchpilot.app.svg import BAR_WIDTH, LABEL_CHARS, bar_chart
from patchpilot.cli.main import app
from patchpilot.core.feeds import FeedKind
from patchpilot.core.models import (
    Finding,
    FixState,
    Provenance,
    RiskAssessment,
    Severity,
    SSVCOutcome,
    utcnow,
)
from patchpilot.core.policy import load_policy
from patchpilot.core.store import Store, finding_key
from patchpilot.graphs.run import RunResult, StoreStages, continue_run
from tests.unit.test_exports import RUN, T0, _batch, fill, import_epss_and_kev
from tests.unit.test_graph_analysis import (
    SLOW,
    ScriptedMetrics,
    World,
    analysis_section,
    plain_tracebacks,
)
from tests.unit.test_graph_run import Harness, make_fleet, write_policy

__all__ = ["plain_tracebacks"]  # the autouse fixture, shared with test_graph_run

SCRIPT_ADVISORY = "<script>alert('advisory')</script>"
HOSTILE_HOST = 'web-"9"<svg onload=alert(1)>'
HOSTILE_RATIONALE = "</td></tr><script>alert(2)</script><a href='https://evil.example/x'>x</a>"
HOSTILE_VERSION = '1:"><img src=https://evil.example/p.png>'
HOSTILE_COMMENT = "<img src=x onerror=alert(3)> go, see https://evil.example/"
RESOURCE_ATTRIBUTES = {"src", "href", "xlink:href", "action", "formaction", "poster", "srcset"}


class Page(HTMLParser):
    """Every tag and attribute of a page, and its text."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def named(self, tag: str) -> list[dict[str, str | None]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def words(self) -> str:
        return " ".join(" ".join(self.text).split())


def assert_self_contained(page: str) -> Page:
    """One offline file: no script, no resource loaded from anywhere, no event handler, a CSP
    that forbids loading anything; returns the parsed page."""
    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    parsed = Page(page)
    names = {name for name, _ in parsed.tags}
    assert not names & {"script", "link", "img", "iframe", "object", "embed", "base", "form"}
    for name, attrs in parsed.tags:
        assert not RESOURCE_ATTRIBUTES & set(attrs), (name, attrs)
        assert not [a for a in attrs if a.startswith("on")], (name, attrs)
    for style in (a.get("style") or "" for _, a in parsed.tags):
        assert "url(" not in style
    css = page[page.index("<style>") : page.index("</style>")]
    for banned in ("url(", "@import", "http"):
        assert banned not in css
    (csp,) = [m for m in parsed.named("meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert (csp.get("content") or "").startswith("default-src 'none'")
    assert parsed.named("svg"), "the charts are inline SVG"
    return parsed


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh home; the CLI's logging configuration is undone afterwards."""
    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    saved = structlog.get_config()
    yield tmp_path / "home"
    structlog.configure(**saved)


def cli(home: Path, *args: str) -> Result:
    return CliRunner().invoke(app, ["--home", str(home), *args])


def fill_hostile(store: Store) -> None:
    """``fill`` plus a host whose name, advisory, rationale and a data-quality warning are
    hostile, and a data-quality warning on the run."""
    fill(store)
    evil = Finding(
        host=HOSTILE_HOST,
        source_package="libxml2",
        installed_source_version="2.9.14+dfsg-1.3~deb12u1",
        binary_packages=("libxml2",),
        advisory_id=SCRIPT_ADVISORY,
        cves=("CVE-2026-0009",),
        fix=FixState.fixed("2.9.14+dfsg-1.3~deb12u2"),
        fix_reachable=True,
        severity=Severity.CRITICAL,
        first_seen=T0,
        provenance=(
            Provenance(feed="debian-dsa", source="https://evil.example/feed", fetched_at=T0),
        ),
    )
    store.replace_findings(RUN, HOSTILE_HOST, [evil])
    store.save_risk(
        RUN,
        [
            RiskAssessment(
                finding_key=finding_key(evil),
                score=97.5,
                factors=(),
                ssvc=SSVCOutcome.ACT,
                due_date=date(2026, 1, 3),
                rationale=HOSTILE_RATIONALE,
            )
        ],
    )
    quality = {
        "source": "host",
        "record": "DSA-5724-1",
        "package": "openssh",
        "version": HOSTILE_VERSION,
        "problem": "nothing after colon in version number",
        "hosts": ["web-1"],
    }
    store.finish_run(
        RUN,
        status="completed",
        summary={"findings": 7, "mode": "advisories", "data_quality": [quality]},
    )


# --------------------------------------------------------------------------- a scan


def test_the_scan_report_is_one_self_contained_page_with_every_part(
    home: Path, tmp_path: Path
) -> None:
    with Store(home / "patchpilot.db") as opened:
        fill_hostile(opened)
        import_epss_and_kev(opened)
        old = _batch(FeedKind.NVD).model_copy(update={"fetched_at": utcnow() - timedelta(days=90)})
        opened.import_batch(old)
    target = tmp_path / "out" / "report.html"
    target.parent.mkdir()
    result = cli(home, "report", RUN, "--format", "html", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "wrote the html report to" in result.stderr
    assert "<html" not in result.stdout  # the file has it, not the terminal
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert [p.name for p in target.parent.iterdir()] == ["report.html"]  # no temp file left
    page = target.read_text(encoding="utf-8")
    parsed = assert_self_contained(page)
    words = parsed.words

    # the hostile strings are text, exactly as they came
    assert SCRIPT_ADVISORY in words
    assert HOSTILE_RATIONALE in words
    assert HOSTILE_HOST in words
    assert HOSTILE_VERSION in words
    assert "&lt;script&gt;alert(&#39;advisory&#39;)&lt;/script&gt;" in page
    assert "evil.example" not in "".join(str(a) for _, a in parsed.tags)

    # summary, hosts (with the unreachable one), findings per fix, feeds, data quality
    for heading in (
        "Open findings by severity",
        "Findings per host",
        "Hosts",
        "Findings, one row per host and fix",
        "Feeds",
        "Data-quality warnings",
    ):
        assert heading in words
    assert "db-1: connection refused" in words
    assert "Debian GNU/Linux 12 (bookworm)" in words
    rows = [r for r in page.split("<tr>") if "DSA-5900-1" in r]
    (openssl,) = rows
    assert "internet-facing, fixed upstream" in openssl  # the rationale
    assert "2026-02-01" in openssl  # the due date
    assert "attend" in openssl  # SSVC
    assert "KEV" in openssl  # CVE-2026-0001 is in the KEV feed
    assert "91.0 %" in openssl  # its EPSS
    assert "3.0.11-1~deb12u2 &rarr; 3.0.15-1~deb12u1" in openssl
    feeds = page[page.index("<h2>Feeds</h2>") : page.index("<h2>Data-quality")]
    by_kind = {r.split("</td>")[0]: r for r in feeds.split("<tr><td>")[1:]}
    assert set(by_kind) == {"epss", "kev", "nvd"}
    assert "fresh" in by_kind["epss"]
    assert "fresh" in by_kind["kev"]
    assert "stale" in by_kind["nvd"]
    assert '<td class="num">90</td>' in by_kind["nvd"]  # its age in days
    assert "Stale feeds: nvd" in words
    assert "nothing after colon in version number" in words

    # the charts: open findings by severity (critical: db-2's and the hostile one), per host
    severity_svg, host_svg = parsed.named("svg")
    assert severity_svg.get("aria-label") == "open findings by severity"
    assert host_svg.get("aria-label") == "findings per host"
    chart_text = page[page.index("<svg") : page.index("<h2>Hosts</h2>")]
    assert "<title>critical: 2</title>" in chart_text
    assert "<title>high: 1</title>" in chart_text
    assert "<title>web-1: 5 (1 KEV)</title>" in chart_text
    assert "web-&#34;9&#34;&lt;svg onload=alert(1)&gt;: 1</title>" in chart_text


def test_findings_and_the_latest_report_print_html_to_stdout(home: Path) -> None:
    with Store(home / "patchpilot.db") as opened:
        fill(opened)
    for args in (("report",), ("findings", "--host", "web-1")):
        result = cli(home, *args, "-f", "html")
        assert result.exit_code == 0, result.output
        parsed = assert_self_contained(result.stdout)
        assert "DSA-5900-1" in parsed.words
    assert "db-2" not in parsed.words  # findings --host web-1 only


def test_the_table_refusal_names_html(home: Path, tmp_path: Path) -> None:
    with Store(home / "patchpilot.db") as opened:
        fill(opened)
    result = cli(home, "report", RUN, "-o", str(tmp_path / "r.html"))
    assert result.exit_code == 2
    assert "cyclonedx or html" in result.output


# --------------------------------------------------------------------------- patch runs


def make_world(home: Path, profiles: dict[str, tuple[float, float]] | None = None) -> World:
    fleet = make_fleet()
    policy = write_policy(home, analysis=analysis_section())  # web-1, db-1: prod, approval
    return World(Harness(home, fleet, load_policy(policy)), ScriptedMetrics(fleet, profiles))


def approve(w: World, waiting: RunResult, comment: str) -> RunResult:
    """Approve as ``patchpilot approve --comment`` records it, then continue the run."""
    decision = w.h.decide(waiting, "approved", by="alice")
    with Store(w.h.settings.store_path) as opened:
        opened.decide_approval(
            waiting.run_id, "approved", by="alice", at=decision.at, comment=comment, via="cli"
        )
    with Store(w.h.settings.store_path) as opened:
        return continue_run(
            waiting.run_id,
            w.h.context(opened, stages=StoreStages(opened), **w.context_args()),
            decision=decision,
        )


def section(page: str, heading: str, end: str) -> str:
    return page[page.index(f"<h2>{heading}</h2>") : page.index(f"<h2>{end}</h2>")]


def test_a_patch_run_report_shows_plan_approval_rings_hosts_analysis_and_stages(
    home: Path, tmp_path: Path
) -> None:
    w = make_world(home)
    waiting = w.start()
    assert waiting.status == "awaiting_approval"
    done = approve(w, waiting, HOSTILE_COMMENT)
    assert done.status == "completed", done.reason

    target = tmp_path / "run.html"
    result = cli(home, "report", done.run_id, "-f", "html", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert "wrote the html report to" in result.stderr
    page = target.read_text(encoding="utf-8")
    parsed = assert_self_contained(page)
    words = parsed.words
    assert f"Patch run {done.run_id}" in words
    assert HOSTILE_COMMENT in words  # text, not an image nor a link
    assert "&lt;img src=x onerror=alert(3)&gt;" in page

    outcome = section(page, "Outcome", "Plan")
    assert "st-completed" in outcome
    plan = section(page, "Plan", "Approval")
    assert plan.count("1.0.0 &rarr; 1.1.0") == 3  # canary-1, web-1, db-1
    assert "local-repository" in plan
    approval = Page(section(page, "Approval", "Rings and waves")).words
    assert "approved by alice" in approval
    assert "via cli" in approval
    assert "web-1 is tagged prod (approvals.tags)" in approval
    rings = Page(section(page, "Rings and waves", "Hosts")).words
    assert "canary done wave 1: canary-1 installed" in rings
    assert "broad done wave 1:" in rings
    assert "wave 2:" in rings
    hosts = Page(section(page, "Hosts", "Rollbacks")).words
    for host in ("canary-1", "web-1", "db-1"):
        assert f"{host} " in hosts
    assert hosts.count("acme-web 1.0.0 → 1.1.0 installed") == 3
    assert "before: command acme-health --port 8081: ok" in hosts
    assert "after: command acme-health --port 8081: ok" in hosts
    assert "restarted: acme-web" in hosts
    assert "Nothing was rolled back." in section(page, "Rollbacks", "Post-patch analysis")
    analysis = Page(section(page, "Post-patch analysis", "Stage durations")).words
    assert "Ring canary: pass score 100 · continue" in analysis
    assert "Ring broad: pass" in analysis
    assert "latency (seconds)" in analysis
    assert "error_rate (ratio)" in analysis
    assert "against peers baseline db-1, web-1" in analysis

    stages = section(page, "Stage durations", "Predicted impact of each wave")
    (chart,) = Page(stages).named("svg")
    assert chart.get("aria-label") == "duration of each stage of the run"
    for label in ("discovery", "deployment · canary", "analysis · broad", "awaiting_approval"):
        assert f"<title>{label}: " in stages
    assert "acme-web" in section(page, "Predicted impact of each wave", "Scan of the run")
    # the scan part follows, with each host's compliance after the run
    scan = page[page.index("<h2>Scan of the run</h2>") :]
    assert scan.count("<td>installed</td>") == 3


def test_a_rolled_back_canary_is_in_the_report_with_its_evidence(
    home: Path, tmp_path: Path
) -> None:
    w = make_world(home, {"1.1.0": SLOW})
    waiting = w.start()
    done = approve(w, waiting, "ok")
    assert done.status == "halted", done.reason

    result = cli(home, "report", done.run_id, "--format", "html")
    assert result.exit_code == 0, result.output
    page = result.stdout
    parsed = assert_self_contained(page)
    assert "st-halted" in section(page, "Outcome", "Plan")
    assert "analysis failed: latency" in parsed.words
    rings = Page(section(page, "Rings and waves", "Hosts")).words
    assert "canary halted wave 1: canary-1 rolled_back" in rings
    assert "broad not-started" in rings
    rollbacks = Page(section(page, "Rollbacks", "Post-patch analysis")).words
    assert "canary-1 acme-web 1.0.0 → 1.1.0 canary analysis failed" in rollbacks
    hosts = Page(section(page, "Hosts", "Rollbacks")).words
    assert "rollback: done acme-web=1.0.0" in hosts
    analysis = Page(section(page, "Post-patch analysis", "Stage durations")).words
    assert "Ring canary: fail score 0 · rolled_back" in analysis
    assert "latency (seconds) critical High" in analysis


def test_a_run_waiting_for_approval_says_so_and_what_has_not_ended(home: Path) -> None:
    w = make_world(home)
    waiting = w.start()
    assert waiting.status == "awaiting_approval"
    result = cli(home, "report", waiting.run_id, "-f", "html")
    assert result.exit_code == 0, result.output
    page = result.stdout
    parsed = assert_self_contained(page)
    assert "st-awaiting_approval" in section(page, "Outcome", "Plan")
    assert f"patchpilot approve {waiting.run_id}" in parsed.words  # the next step
    approval = Page(section(page, "Approval", "Rings and waves")).words
    assert "pending" in approval
    assert "db-1 is tagged prod (approvals.tags)" in approval
    hosts = Page(section(page, "Hosts", "Rollbacks")).words
    assert hosts.count("acme-web 1.0.0 → 1.1.0 pending waiting for approval") == 3
    stages = section(page, "Stage durations", "Predicted impact of each wave")
    assert "<title>awaiting_approval: not ended</title>" in stages
    assert "No post-patch analysis ran" in parsed.words


# --------------------------------------------------------------------------- the parts


def test_bars_scale_to_the_largest_value_and_keep_long_labels_whole_in_the_tooltip() -> None:
    long = "a-very-long-host-name-in-a-big-fleet.example"
    chart = bar_chart(
        [
            {"label": "zero", "value": 0},
            {"label": long, "value": 4, "text": "4 (1 KEV)"},
            {"label": "half", "value": 2, "color": "#123456"},
            {"label": "negative", "value": -3},
        ]
    )
    zero, big, half, negative = chart["bars"]
    assert (zero["w"], negative["w"]) == (0.0, 0.0)
    assert half["w"] == big["w"] / 2
    assert chart["width"] == BAR_WIDTH
    assert chart["label_width"] + big["w"] < BAR_WIDTH  # room left for the value
    assert big["label"] == long[: LABEL_CHARS - 1] + "…"
    assert big["title"] == long
    assert big["text"] == "4 (1 KEV)"
    assert (half["text"], half["color"]) == ("2", "#123456")
    assert [b["y"] for b in chart["bars"]] == sorted({b["y"] for b in chart["bars"]})
    assert chart["height"] > chart["bars"][-1]["y"] + chart["bar_height"]
    assert bar_chart([])["bars"] == []


def test_the_host_chart_keeps_the_hosts_with_the_most_findings() -> None:
    findings = [
        {"host": f"h{i:03}", "severity": "low", "kev": False, "accepted": None}
        for i in range(MAX_HOST_BARS + 5)
        for _ in range(i + 1)
    ]
    document: dict[str, Any] = {
        "schema": "patchpilot.report/v1",
        "generated_at": None,
        "run": None,
        "data": {"feeds": [], "stale_feeds": [], "hint": None, "data_quality": []},
        "hosts": [],
        "findings": findings,
        "fixes": [],
        "summary": {"findings": len(findings)},
    }
    parsed = assert_self_contained(render_scan(document))
    assert "and 5 more host(s) with fewer findings" in parsed.words
    page = render_scan(document)
    assert f"<title>h{MAX_HOST_BARS + 4:03}: {MAX_HOST_BARS + 5}</title>" in page
    assert "<title>h004:" not in page  # among the five with the fewest


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "–"),
        (0.0123, "0.01 s"),
        (4.25, "4.2 s"),
        (42.4, "42 s"),
        (185, "3 min 5 s"),
        (7200, "2 h 0 min"),
        (100_000, "1 d 3 h"),
    ],
)
def test_durations_read_as_words(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_time_axis_labels_read_in_hours_under_a_day() -> None:
    from patchpilot.app.svg import chart_km

    # items fixed within hours: the axis must not read 0, 0, 0, 0, 0
    curve = [
        {"days": 0.05, "open": 0.5, "censored": False},
        {"days": 0.2, "open": 0.5, "censored": True},
    ]
    labels = [x["text"] for x in chart_km(curve)["x_labels"]]
    assert labels == ["0.0 h", "1.2 h", "2.4 h", "3.6 h", "4.8 h"]

"""Workload forecasts (patchpilot/app/forecast.py): the models on synthetic series with a known
level and seasonality, the rolling-origin backtest's arithmetic, weekly counting, the forecast
from a real SQLite store's first-seen history and ``patchpilot forecast``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from patchpilot.app.forecast import (
    backtest,
    forecast,
    forecast_series,
    holt_winters,
    naive,
    season_length,
    seasonal_naive,
    ses,
    week_start,
    weekly_counts,
)
from patchpilot.core.errors import InvalidInputError
from patchpilot.core.models import Finding, FixState, utcnow
from patchpilot.core.settings import load_settings
from patchpilot.core.store import Store

PATTERN = (1.0, 6.0, 2.0, 3.0)  # a season of 4 weeks


def seasonal(seasons: int, level: float = 0.0) -> list[float]:
    return [v + level for _ in range(seasons) for v in PATTERN]


# --------------------------------------------------------------------------- models


def test_naive_and_seasonal_naive() -> None:
    assert naive([3, 1, 4], 2) == [4.0, 4.0]
    assert seasonal_naive(seasonal(3), 6, 4) == [1.0, 6.0, 2.0, 3.0, 1.0, 6.0]
    with pytest.raises(ValueError, match="full season"):
        seasonal_naive([1.0, 2.0], 2, 4)


def test_ses_finds_the_level() -> None:
    noisy = [5.0 + (0.5 if i % 2 else -0.5) for i in range(40)]
    assert all(abs(v - 5.0) < 0.6 for v in ses(noisy, 4))
    assert ses([2.0] * 10, 3) == [2.0, 2.0, 2.0]  # a flat series needs no fit


def test_holt_winters_learns_the_season() -> None:
    predicted = holt_winters(seasonal(10, level=10.0), 8, 4)
    expected = [v + 10.0 for v in PATTERN] * 2
    assert all(abs(p - e) < 0.25 for p, e in zip(predicted, expected, strict=True))
    with pytest.raises(ValueError, match="two full seasons"):
        holt_winters(seasonal(1), 4, 4)


def test_season_length() -> None:
    assert season_length(26 + 4 + 104, 4, 26) == 52
    assert season_length(26 + 4 + 103, 4, 26) == 4


# --------------------------------------------------------------------------- backtest


def test_backtest_arithmetic_by_hand() -> None:
    # origins 3 and 4: naive says [3, 3] then [4, 4] for [4, 5] and [5, 6] -> errors 1, 2, 1, 2
    result = backtest([1, 2, 3, 4, 5, 6], 2, season=4, min_train=3, models=("naive",))
    assert result.origins == 2
    assert result.mae == {"naive": 1.5}
    assert result.winner == "naive"
    assert result.beats_naive is False


def test_backtest_step_and_latest_origins() -> None:
    y = [float(i) for i in range(20)]
    every_other = backtest(y, 1, season=4, min_train=10, step=2, models=("naive",))
    assert every_other.origins == 5  # 10, 12, 14, 16, 18
    assert every_other.mae == {"naive": 1.0}  # a trend of one per week: naive is one behind
    latest = backtest(y, 1, season=4, min_train=10, max_origins=3, models=("naive",))
    assert latest.origins == 3


def test_seasonal_series_seasonal_models_beat_naive() -> None:
    result = backtest(seasonal(12), 4, season=4, min_train=16, step=4)
    assert result.mae["seasonal_naive"] == 0.0
    assert result.winner == "seasonal_naive"  # a tie with holt_winters goes to the simpler
    assert result.mae["holt_winters"] < 0.3
    # origins 16, 20 ... 44 (step 4): naive repeats the last week (3) for [1, 6, 2, 3]:
    # errors 2, 3, 1, 0 -> mean 1.5 at each origin
    assert result.mae["naive"] == 1.5
    assert result.beats_naive is True
    assert result.text == "seasonal_naive wins (MAE 0; beats the naive baseline's 1.5)"


def test_a_random_walk_is_not_beaten() -> None:
    y = [0, 0, 0, 5, 5, 5, 5, 2, 2, 2, 2, 2, 9, 9, 9, 9, 9, 9]
    result = backtest(
        [float(v) for v in y], 1, season=4, min_train=8, models=("naive", "seasonal_naive")
    )
    assert result.mae["naive"] < result.mae["seasonal_naive"]
    assert result.winner == "naive"
    assert "no model beats it" in result.text


def test_not_enough_history() -> None:
    result = backtest([1.0, 2.0], 4, season=4, min_train=8)
    assert result.origins == 0
    assert result.winner is None
    assert result.text == "not enough history for a backtest: 2 weeks, need at least 12"
    short = forecast_series("x", "x", [(date(2026, 1, 5), 3.0)], weeks=4)
    assert short.model == "naive"
    assert [w.value for w in short.forecast] == [3.0] * 4
    assert short.forecast[0].week == date(2026, 1, 12)


def test_forecasts_are_never_negative() -> None:
    falling = [10.0, 8.0, 6.0, 4.0, 2.0, 0.0, 0.0, 0.0]
    result = forecast_series(
        "x", "x", [(date(2026, 1, 5) + timedelta(days=7 * i), v) for i, v in enumerate(falling)],
        weeks=4, min_train=4,
    )  # fmt: skip
    assert all(v >= 0 for values in result.models.values() for v in values)


# --------------------------------------------------------------------------- weeks


def test_week_start_and_weekly_counts() -> None:
    assert week_start(datetime(2025, 2, 16, 23, 0, tzinfo=UTC)) == date(2025, 2, 10)
    events = [
        (datetime(2025, 2, 10, 1, tzinfo=UTC), "DSA-1"),
        (datetime(2025, 2, 12, 1, tzinfo=UTC), "DSA-1"),  # the same advisory counts once
        (datetime(2025, 2, 13, 1, tzinfo=UTC), "DSA-2"),
        (datetime(2025, 2, 26, 1, tzinfo=UTC), "DLA-3"),
    ]
    assert weekly_counts(events) == [
        (date(2025, 2, 10), 2),
        (date(2025, 2, 17), 0),
        (date(2025, 2, 24), 1),
    ]
    assert weekly_counts([], start=date(2025, 2, 10), end=date(2025, 2, 24)) == [
        (date(2025, 2, 10), 0),
        (date(2025, 2, 17), 0),
    ]


# --------------------------------------------------------------------------- from the store

MONDAY = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
WEEKS = 24


def _finding(host: str, advisory: str, at: datetime) -> Finding:
    return Finding(
        host=host,
        source_package="openssl",
        binary_packages=("libssl3",),
        installed_source_version="3.0.1-1",
        advisory_id=advisory,
        fix=FixState.fixed("3.0.1-2"),
        fix_reachable=True,
        first_seen=at,
    )


def fill_history(store: Store, monday: datetime = MONDAY) -> None:
    """A weekly scan of two hosts; week 0 finds a backlog of 30 advisories on web-1, then week
    ``w`` brings PATTERN[w % 4] new advisories (on web-1; on db-1 too in odd weeks)."""
    seen: dict[str, list[Finding]] = {"web-1": [], "db-1": []}
    seen["web-1"] = [_finding("web-1", f"DSA-old-{i}", monday) for i in range(30)]
    for week in range(WEEKS):
        at = monday + timedelta(days=7 * week)
        if week:
            for n in range(int(PATTERN[week % 4])):
                advisory = f"DSA-{week}-{n}"
                seen["web-1"].append(_finding("web-1", advisory, at))
                if week % 2:
                    seen["db-1"].append(_finding("db-1", advisory, at))
        rid = f"{at:%Y%m%dT%H%M%SZ}-{week:06x}"
        store.create_run(rid, kind="scan", target="all", params={}, started_at=at)
        for host, findings in seen.items():
            store.replace_findings(rid, host, findings)
        store.finish_run(rid, status="completed", summary={})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "store.db") as s:
        yield s


def test_forecast_from_the_fleet_history(store: Store) -> None:
    fill_history(store)
    now = MONDAY + timedelta(days=7 * WEEKS, hours=3)  # early in the week after the last scan
    result = forecast(store, weeks=4, now=now)
    advisories, hosts = result.series
    assert advisories.name == "advisories"
    assert advisories.weeks == WEEKS - 1  # the backlog week is left out
    assert [h.value for h in advisories.history] == [PATTERN[w % 4] for w in range(1, WEEKS)][-26:]
    assert [h.value for h in hosts.history] == [2.0 if w % 2 else 1.0 for w in range(1, WEEKS)]
    assert advisories.backtest.origins > 0
    assert advisories.backtest.season == 4
    assert set(advisories.backtest.mae) >= {"naive", "seasonal_naive", "ses"}
    assert advisories.model == "seasonal_naive"
    assert [w.value for w in advisories.forecast] == [
        PATTERN[w % 4] for w in range(WEEKS, WEEKS + 4)
    ]
    assert advisories.forecast[0].week == week_start(now)
    assert "advisories: about 3.0 per week (seasonal_naive;" in result.text
    document = result.document()
    assert document["schema"] == "patchpilot.forecast/v1"
    assert forecast(store, weeks=4, now=now).document() == document


def test_forecast_without_history(store: Store) -> None:
    result = forecast(store, weeks=8)
    assert result.series == ()
    assert result.text.startswith("no findings recorded yet")
    with pytest.raises(InvalidInputError):
        forecast(store, weeks=3)
    with pytest.raises(InvalidInputError):
        forecast(store, weeks=9)


def test_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from patchpilot.cli.main import app

    for name in [k for k in os.environ if k.startswith("PATCHPILOT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("PATCHPILOT_HOME", str(tmp_path / "home"))
    start = datetime.combine(week_start(utcnow()), time(9), tzinfo=UTC)
    with Store(load_settings(None).store_path) as store:
        fill_history(store, start - timedelta(days=7 * WEEKS))  # the last scan: last week
    runner = CliRunner()
    result = runner.invoke(app, ["forecast", "--weeks", "6", "--format", "json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["weeks"] == 6
    assert [s["name"] for s in doc["series"]] == ["advisories", "hosts"]
    assert all(len(s["forecast"]) == 6 for s in doc["series"])
    table = runner.invoke(app, ["forecast"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert "backtest (" in table.stdout
    assert "seasonal_naive *" in table.stdout
    assert runner.invoke(app, ["forecast", "--weeks", "9"]).exit_code == 2

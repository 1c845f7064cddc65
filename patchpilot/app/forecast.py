"""Workload forecasts: weekly new advisories affecting the fleet and hosts needing patches.

``patchpilot forecast`` (:func:`forecast`) reads the fleet's history in the store: when each
(host, source package, advisory) was first seen affected (``finding_first_seen``). Per week
(Monday 00:00 UTC to Monday), two series:

- ``advisories``: advisories first seen on any host of the fleet that week;
- ``hosts``: hosts with at least one advisory first seen that week (they need patching).

The first week of the history is left out (it is the backlog the first scan found, not that
week's workload), and so is the current week (not over yet).

Models (:data:`MODELS`): ``naive`` (next weeks = the last week; the baseline), ``seasonal_naive``
(each week = the same week of the last season), ``ses`` (simple exponential smoothing,
statsmodels ``SimpleExpSmoothing``) and ``holt_winters`` (additive seasonal exponential
smoothing, statsmodels ``ExponentialSmoothing``, when the history holds two seasons). The
season is 52 weeks when the history is long enough for it, else 4 weeks.

Backtest (:func:`backtest`): rolling origin. For each origin ``t`` from ``min_train`` on, every
model is fitted on weeks ``[0, t)`` and forecasts ``t .. t + horizon - 1``; the MAE of a model is
the mean absolute error over all those forecasts. The model with the lowest MAE wins (a tie
goes to the simpler model, in :data:`MODELS` order) and forecasts the coming weeks; the report
says whether it beats the naive baseline. The same arithmetic runs the benchmark on the real
DSA/DLA history (``benchmarks/forecast.py``).
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final

import structlog
from numpy.linalg import LinAlgError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from patchpilot.core.errors import InvalidInputError
from patchpilot.core.models import utcnow
from patchpilot.core.store import Store

__all__ = [
    "MODELS",
    "SCHEMA",
    "BacktestResult",
    "Forecast",
    "SeriesForecast",
    "backtest",
    "forecast",
    "forecast_series",
    "holt_winters",
    "naive",
    "season_length",
    "seasonal_naive",
    "ses",
    "week_start",
    "weekly_counts",
]

log = structlog.get_logger(__name__)

SCHEMA: Final = "patchpilot.forecast/v1"
MODELS: Final = ("naive", "seasonal_naive", "ses", "holt_winters")
"""The models, simplest first (a tie in the backtest goes to the earlier)."""
BASELINE: Final = "naive"
MIN_WEEKS: Final = 4
MAX_WEEKS: Final = 8
LONG_SEASON: Final = 52
SHORT_SEASON: Final = 4

Model = Callable[[Sequence[float], int, int], list[float]]
"""``(history, horizon, season) -> forecasts`` (``horizon`` values)."""


# --------------------------------------------------------------------------- models


def naive(y: Sequence[float], h: int, m: int = 1) -> list[float]:
    """Every coming week is the last week.

    >>> naive([1, 2, 5], 3)
    [5.0, 5.0, 5.0]
    """
    if not y:
        raise ValueError("naive needs at least one value")
    return [float(y[-1])] * h


def seasonal_naive(y: Sequence[float], h: int, m: int) -> list[float]:
    """Each coming week is the same week of the last season (``m`` weeks ago).

    >>> seasonal_naive([1, 2, 3, 4, 5, 6], 3, 4)
    [3.0, 4.0, 5.0]
    """
    if m < 1 or len(y) < m:
        raise ValueError(f"seasonal naive needs a full season ({m} values)")
    return [float(y[len(y) - m + (i % m)]) for i in range(h)]


def _fitted(build: Callable[[], Any], h: int) -> list[float]:
    with warnings.catch_warnings():  # convergence chatter on short or flat series
        warnings.simplefilter("ignore")
        result = build().fit()
        values = [float(v) for v in result.forecast(h)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("the model did not converge to finite forecasts")
    return values


def ses(y: Sequence[float], h: int, m: int = 1) -> list[float]:
    """Simple exponential smoothing (statsmodels ``SimpleExpSmoothing``, level only)."""
    from statsmodels.tsa.holtwinters import (  # type: ignore[import-untyped,unused-ignore]
        SimpleExpSmoothing,
    )

    if len(y) < 2:
        raise ValueError("exponential smoothing needs at least two values")
    data = [float(v) for v in y]
    if len(set(data)) == 1:  # a flat series: the level is the value (no fit to do)
        return [data[0]] * h
    return _fitted(lambda: SimpleExpSmoothing(data, initialization_method="estimated"), h)


def holt_winters(y: Sequence[float], h: int, m: int) -> list[float]:
    """Additive seasonal exponential smoothing (statsmodels ``ExponentialSmoothing``, no
    trend, season ``m``); needs two full seasons."""
    from statsmodels.tsa.holtwinters import (  # type: ignore[import-untyped,unused-ignore]
        ExponentialSmoothing,
    )

    if m < 2 or len(y) < 2 * m:
        raise ValueError(f"Holt-Winters needs two full seasons ({2 * m} values)")
    data = [float(v) for v in y]
    if len(set(data)) == 1:
        return [data[0]] * h
    return _fitted(
        lambda: ExponentialSmoothing(
            data,
            trend=None,
            seasonal="add",
            seasonal_periods=m,
            initialization_method="estimated",
        ),
        h,
    )


_MODEL_FUNCS: Final[Mapping[str, Model]] = {
    "naive": naive,
    "seasonal_naive": seasonal_naive,
    "ses": ses,
    "holt_winters": holt_winters,
}


def _usable(model: str, n: int, m: int) -> bool:
    """Whether ``model`` can be fitted on ``n`` values with season ``m``."""
    return {
        "naive": n >= 1,
        "seasonal_naive": n >= m,
        "ses": n >= 2,
        "holt_winters": m >= 2 and n >= 2 * m,
    }[model]


def _predict(model: str, y: Sequence[float], h: int, m: int) -> list[float]:
    """Forecasts of ``model``, never negative (counts); a model that fails to fit falls back
    to the naive forecast (and says so in the log)."""
    try:
        values = _MODEL_FUNCS[model](y, h, m)
    except (ValueError, ArithmeticError, LinAlgError) as exc:
        log.info("forecast.model_fallback", model=model, error=str(exc)[:200])
        values = naive(y, h)
    return [max(0.0, v) for v in values]


def season_length(n: int, horizon: int, min_train: int) -> int:
    """52 weeks when ``n`` weeks hold two years besides the backtest's first origin and one
    horizon, else 4.

    >>> season_length(600, 4, 26), season_length(60, 4, 26)
    (52, 4)
    """
    return LONG_SEASON if n >= 2 * LONG_SEASON + horizon + min_train else SHORT_SEASON


# --------------------------------------------------------------------------- backtest


class BacktestResult(BaseModel):
    """The rolling-origin backtest of every usable model on one series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    horizon: int
    season: int
    origins: int = Field(description="forecast origins (0: not enough history)")
    mae: dict[str, float] = Field(description="model -> mean absolute error")
    winner: str | None
    beats_naive: bool | None = Field(description="the winner's MAE is below the naive one's")
    text: str


def backtest(
    y: Sequence[float],
    horizon: int,
    *,
    season: int,
    min_train: int,
    step: int = 1,
    max_origins: int | None = None,
    models: Sequence[str] = MODELS,
) -> BacktestResult:
    """Rolling-origin backtest: the MAE of each model over every origin and horizon step.

    Origins are ``min_train, min_train + step, ... , len(y) - horizon`` (the latest
    ``max_origins`` of them when given). A model is scored only when it can be fitted at the
    first origin (``holt_winters`` needs two seasons).
    """
    if horizon < 1 or min_train < 1 or step < 1:
        raise ValueError("horizon, min_train and step must be at least 1")
    origins = list(range(min_train, len(y) - horizon + 1, step))
    if max_origins is not None:
        origins = origins[-max_origins:] if max_origins > 0 else []
    if not origins:
        text = (
            f"not enough history for a backtest: {len(y)} weeks, need at least "
            f"{min_train + horizon}"
        )
        return BacktestResult(
            horizon=horizon,
            season=season,
            origins=0,
            mae={},
            winner=None,
            beats_naive=None,
            text=text,
        )
    scored = [m for m in MODELS if m in models and _usable(m, origins[0], season)]
    errors: dict[str, list[float]] = defaultdict(list)
    for t in origins:
        train, actual = y[:t], y[t : t + horizon]
        for model in scored:
            predicted = _predict(model, train, horizon, season)
            errors[model] += [abs(p - a) for p, a in zip(predicted, actual, strict=True)]
    mae = {m: round(sum(errors[m]) / len(errors[m]), 4) for m in scored}
    winner = min(scored, key=lambda m: (mae[m], MODELS.index(m)))
    beats = mae[winner] < mae[BASELINE] if BASELINE in mae else None
    text = f"{winner} wins (MAE {mae[winner]:g}"
    if BASELINE in mae:
        if beats:
            text += f"; beats the naive baseline's {mae[BASELINE]:g})"
        else:
            text += f"; the naive baseline's is {mae[BASELINE]:g}: no model beats it)"
    else:
        text += ")"
    return BacktestResult(
        horizon=horizon,
        season=season,
        origins=len(origins),
        mae=mae,
        winner=winner,
        beats_naive=beats,
        text=text,
    )


# --------------------------------------------------------------------------- series


def week_start(moment: datetime | date) -> date:
    """The Monday (UTC) of the week of ``moment``.

    >>> week_start(date(2025, 2, 13))
    datetime.date(2025, 2, 10)
    """
    day = moment.astimezone(UTC).date() if isinstance(moment, datetime) else moment
    return day - timedelta(days=day.weekday())


def weekly_counts(
    events: Iterable[tuple[datetime | date, str]],
    *,
    start: date | None = None,
    end: date | None = None,
) -> list[tuple[date, int]]:
    """Distinct keys per week, every week from ``start`` (default: the first event's) to
    ``end`` (exclusive, a Monday; default: after the last event's), empty weeks as 0."""
    keys: dict[date, set[str]] = defaultdict(set)
    for moment, key in events:
        keys[week_start(moment)].add(key)
    if not keys and (start is None or end is None):
        return []
    first = week_start(start) if start is not None else min(keys)
    stop = week_start(end) if end is not None else max(keys) + timedelta(days=7)
    out: list[tuple[date, int]] = []
    week = first
    while week < stop:
        out.append((week, len(keys.get(week, ()))))
        week += timedelta(days=7)
    return out


class WeekValue(BaseModel):
    """One week of a series (its Monday, UTC)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    week: date
    value: float


class SeriesForecast(BaseModel):
    """History, backtest and forecast of one series."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    description: str
    weeks: int = Field(description="weeks of history")
    history: tuple[WeekValue, ...] = Field(description="the latest weeks (at most 26)")
    backtest: BacktestResult
    model: str = Field(description="the model that forecasts (the backtest's winner)")
    forecast: tuple[WeekValue, ...]
    models: dict[str, tuple[float, ...]] = Field(description="every usable model's forecast")


def forecast_series(
    name: str,
    description: str,
    series: Sequence[tuple[date, float]],
    *,
    weeks: int,
    min_train: int | None = None,
    max_origins: int | None = 104,
) -> SeriesForecast:
    """Backtest the models on ``series`` and forecast the next ``weeks`` with the winner."""
    values = [float(v) for _, v in series]
    n = len(values)
    train = min_train if min_train is not None else max(8, min(26, n // 2))
    season = season_length(n, weeks, train)
    result = backtest(values, weeks, season=season, min_train=train, max_origins=max_origins)
    model = result.winner or BASELINE
    upcoming: list[date] = []
    if series:
        last = series[-1][0]
        upcoming = [last + timedelta(days=7 * (i + 1)) for i in range(weeks)]
    models: dict[str, tuple[float, ...]] = {}
    if values:
        for candidate in MODELS:
            if _usable(candidate, n, season):
                predicted = _predict(candidate, values, weeks, season)
                models[candidate] = tuple(round(v, 2) for v in predicted)
    chosen = models.get(model, ())
    return SeriesForecast(
        name=name,
        description=description,
        weeks=n,
        history=tuple(WeekValue(week=w, value=v) for w, v in series[-26:]),
        backtest=result,
        model=model,
        forecast=tuple(WeekValue(week=w, value=v) for w, v in zip(upcoming, chosen, strict=False)),
        models=models,
    )


class Forecast(BaseModel):
    """``patchpilot.forecast/v1``."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    schema_: str = Field(default=SCHEMA, alias="schema")
    generated_at: AwareDatetime
    weeks: int
    series: tuple[SeriesForecast, ...]
    text: str

    def document(self) -> dict[str, Any]:
        """The JSON form."""
        return self.model_dump(mode="json", by_alias=True)


def forecast(store: Store, *, weeks: int = 4, now: datetime | None = None) -> Forecast:
    """Forecast the next ``weeks`` (4 to 8) of the fleet's patch workload from its history.

    Raises:
        InvalidInputError: ``weeks`` outside 4..8.
    """
    if not MIN_WEEKS <= weeks <= MAX_WEEKS:
        raise InvalidInputError("weeks", f"give {MIN_WEEKS} to {MAX_WEEKS} weeks")
    now = now or utcnow()
    rows = store.first_seen_history()
    this_week = week_start(now)
    first_advisory: dict[str, datetime] = {}
    for row in rows:
        known = first_advisory.get(row.advisory_id)
        if known is None or row.first_seen < known:
            first_advisory[row.advisory_id] = row.first_seen
    if not rows:
        return Forecast(
            generated_at=now,
            weeks=weeks,
            series=(),
            text="no findings recorded yet: scan the fleet (a scan schedule) to build a history",
        )
    start = week_start(min(r.first_seen for r in rows)) + timedelta(days=7)  # skip the backlog
    advisories = weekly_counts(
        ((t, a) for a, t in first_advisory.items() if t.date() < this_week),
        start=start,
        end=this_week,
    )
    hosts = weekly_counts(
        ((r.first_seen, r.host) for r in rows if r.first_seen.date() < this_week),
        start=start,
        end=this_week,
    )
    series = (
        forecast_series(
            "advisories",
            "new advisories affecting the fleet per week",
            [(w, float(v)) for w, v in advisories],
            weeks=weeks,
        ),
        forecast_series(
            "hosts",
            "hosts with a newly seen advisory (needing patches) per week",
            [(w, float(v)) for w, v in hosts],
            weeks=weeks,
        ),
    )
    parts = []
    for s in series:
        if not s.forecast:
            parts.append(f"{s.name}: no complete week of history after the first scan yet")
            continue
        mean = sum(v.value for v in s.forecast) / len(s.forecast)
        parts.append(f"{s.name}: about {mean:.1f} per week ({s.model}; {s.backtest.text})")
    return Forecast(generated_at=now, weeks=weeks, series=series, text="; ".join(parts))

"""``analytics`` and ``forecast``: how the patch process goes, and the workload coming.

``patchpilot analytics [--since DAYS] [--run RUN_ID]`` prints the process analytics of the
patch runs (:func:`patchpilot.app.analytics.analytics`: stage durations, lead time, hosts per
hour, rollback and failure rates, approval wait, the bottleneck and what would shorten it);
with ``--run``, the predicted impact of that run's plan, wave by wave
(:func:`patchpilot.app.analytics.run_impact`). ``patchpilot forecast [--weeks 4..8]`` prints
the weekly workload forecast and its backtest (:func:`patchpilot.app.forecast.forecast`).
``--format json`` prints the ``patchpilot.analytics/v1``, ``patchpilot.impact/v1`` or
``patchpilot.forecast/v1`` document.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from patchpilot.cli.app import Context, FormatOpt, OutputFormat, emit_json, out, safe

__all__ = ["analytics_cmd", "forecast_cmd"]


def _seconds(value: float | None) -> str:
    from patchpilot.app.analytics import human_seconds

    return human_seconds(value)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _print_analytics(doc: dict[str, Any]) -> None:
    out.print(safe(doc["text"]), highlight=False)
    if not doc["ended_runs"]:
        return
    table = Table("stage", "runs", "median", "p90", "total", "share of lead time")
    for row in [*doc["stages"], *doc["rings"]]:
        table.add_row(
            safe(row["stage"]),
            str(row["runs"]),
            _seconds(row["median_s"]),
            _seconds(row["p90_s"]),
            _seconds(row["total_s"]),
            _percent(row["share"]),
        )
    lead = doc["lead_time"]
    table.add_row(
        "lead time",
        str(lead["count"]),
        _seconds(lead["median_s"]),
        _seconds(lead["p90_s"]),
        _seconds(lead["total_s"]),
        "100.0 %",
    )
    out.print(table)
    wait = doc["approval_wait"]
    hph = doc["hosts_per_hour"]
    out.print(
        f"hosts deployed {doc['hosts_deployed']}"
        f" ({'-' if hph is None else hph} per hour of deployment); rollback rate "
        f"{_percent(doc['rollback_rate'])}, host failure rate {_percent(doc['failure_rate'])}, "
        f"run failure rate {_percent(doc['run_failure_rate'])}",
        highlight=False,
    )
    out.print(
        f"approval wait: {wait['decided']} decided of {wait['requests']} requests "
        f"({wait['pending']} pending, {wait['expired']} expired); median "
        f"{_seconds(wait['median_s'])}, p90 {_seconds(wait['p90_s'])}",
        highlight=False,
    )
    if doc["bottleneck"]:
        out.print(f"bottleneck: {safe(doc['bottleneck']['text'])}", highlight=False)
    for suggestion in doc["suggestions"]:
        out.print(f"- {safe(suggestion)}", highlight=False)


def _print_impact(doc: dict[str, Any]) -> None:
    table = Table(
        "ring", "wave", "hosts", "in flight", "packages", "services restarted", "expected", "basis"
    )
    for wave in doc["waves"]:
        table.add_row(
            safe(wave["ring"]),
            str(wave["wave"]),
            safe(", ".join(wave["hosts"])),
            str(wave["hosts_in_flight"]),
            safe(", ".join(wave["packages"])),
            safe(", ".join(wave["services"]) or "-"),
            _seconds(wave["expected_seconds"]),
            safe(wave["basis"]),
        )
    out.print(table)
    out.print(
        f"run {safe(doc['run_id'])}: expected {_seconds(doc['expected_seconds'])} in all, from "
        f"{doc['history']} past host deployments",
        highlight=False,
    )


def analytics_cmd(
    ctx: typer.Context,
    since: Annotated[
        int, typer.Option("--since", min=1, max=3650, help="Runs started in the last DAYS days.")
    ] = 90,
    run_id: Annotated[
        str | None,
        typer.Option("--run", help="The predicted impact of this run's plan, wave by wave."),
    ] = None,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Process analytics of the patch runs: stage durations, lead time, bottleneck."""
    from patchpilot.app import analytics

    c: Context = ctx.obj
    with c.store() as store:
        if run_id is not None:
            doc = analytics.run_impact(c.settings, store, run_id).document()
        else:
            doc = analytics.analytics(store, since_days=since).document()
    if fmt is OutputFormat.JSON:
        emit_json(doc)
    elif run_id is not None:
        _print_impact(doc)
    else:
        _print_analytics(doc)


def _print_forecast(doc: dict[str, Any]) -> None:
    out.print(safe(doc["text"]), highlight=False)
    for series in doc["series"]:
        backtest = series["backtest"]
        table = Table(title=f"{series['description']} ({series['weeks']} weeks of history)")
        table.add_column("week of")
        models = list(series["models"])
        for model in models:
            suffix = " *" if model == series["model"] else ""
            table.add_column(f"{model}{suffix}", justify="right")
        for i, week in enumerate(series["forecast"]):
            table.add_row(week["week"], *(f"{series['models'][m][i]:g}" for m in models))
        out.print(table)
        if backtest["origins"]:
            maes = ", ".join(f"{m} {v:g}" for m, v in backtest["mae"].items())
            out.print(
                f"backtest ({backtest['origins']} origins, horizon {backtest['horizon']}, season "
                f"{backtest['season']}): MAE {maes}; {backtest['text']}",
                highlight=False,
            )
        else:
            out.print(f"backtest: {backtest['text']}", highlight=False)


def forecast_cmd(
    ctx: typer.Context,
    weeks: Annotated[
        int, typer.Option("--weeks", min=4, max=8, help="Weeks to forecast (4 to 8).")
    ] = 4,
    fmt: FormatOpt = OutputFormat.TABLE,
) -> None:
    """Forecast the weekly new advisories and hosts needing patches (backtested)."""
    from patchpilot.app.forecast import forecast

    c: Context = ctx.obj
    with c.store() as store:
        doc = forecast(store, weeks=weeks).document()
    if fmt is OutputFormat.JSON:
        emit_json(doc)
        return
    _print_forecast(doc)

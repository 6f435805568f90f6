"""Top-level ``finmeta`` commands of the benchmark layer: ``metrics``, ``report``, ``compare`` (and later
``train``, ``backtest``, ``bench``, ``tune``).

:func:`register` adds every function of :data:`COMMANDS` to the ``finmeta`` app; to add a command,
write a function with typer parameters (its docstring is the help and must show an example) and
append ``(name, function)`` to :data:`COMMANDS`. Commands raise :class:`finmeta.errors.FinMetaError`
subclasses for user errors; ``finmeta.cli.main`` prints them as one line and exits 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import typer

from benchmarks.metrics import ALL_FIGURES, MetricsError, TRADING_DAYS_STOCK


def _finite_or_none(x: float) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _psr_of(frame: pd.DataFrame) -> float:
    """PSR against 0 of the file's simple returns (per-period Sharpe, their skewness and kurtosis;
    :func:`benchmarks.stats.psr`)."""
    from benchmarks.metrics import simple_returns
    from benchmarks.stats import psr, sharpe_per_period, skew_kurt

    r = simple_returns(frame["account_value"])
    if r.size < 2:
        return float("nan")
    sk, ku = skew_kurt(r)
    return psr(float(sharpe_per_period(r)), int(r.size), sk, ku)


def metrics_cmd(
    file: Path = typer.Argument(..., metavar="FILE", help="CSV (.csv, .csv.gz) or Parquet file of account values."),
    periods_per_year: float = typer.Option(
        None, "--periods-per-year", "-p",
        help="Periods a year: 252 daily stocks (default), 365 daily crypto, bars a year intraday.",
    ),
    column: str = typer.Option(None, "--column", "-c", help="Value column when the file has several numeric columns."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (same figure names; nan/inf -> null)."),
) -> None:
    """Print the performance figures of an account-value series.

    The file holds one value column (dated or not; an unnamed index column is ignored). Periods a year are never inferred from dates: the default is 252 (daily stocks). psr is the probabilistic Sharpe ratio against 0 (Bailey & Lopez de Prado 2012; docs/metrics.md).

    Example: finmeta metrics run/values/ppo.csv --periods-per-year 365 --json
    """
    from benchmarks.report import metrics_of_frame, read_account_values

    if periods_per_year is not None and not periods_per_year > 0:
        raise MetricsError(f"--periods-per-year must be > 0, got {periods_per_year}")
    frame = read_account_values(file, column=column)
    ppy_note = "given" if periods_per_year is not None else "default: daily stocks; not inferred from dates"
    ppy = float(periods_per_year) if periods_per_year is not None else float(TRADING_DAYS_STOCK)
    figs = metrics_of_frame(frame, ppy, name=str(file))
    figs["psr"] = _psr_of(frame)
    dated = isinstance(frame.index, pd.DatetimeIndex)
    if as_json:
        payload = {k: _finite_or_none(v) for k, v in figs.items()}
        payload.update(
            periods_per_year=ppy,
            n_values=int(len(frame)),
            start=str(frame.index[0]) if dated else None,
            end=str(frame.index[-1]) if dated else None,
            file=str(file),
        )
        typer.echo(json.dumps(payload))
        return
    span = f", {frame.index[0].date()} -> {frame.index[-1].date()}" if dated else ", undated"
    typer.echo(f"{file}: {len(frame)} values{span}")
    typer.echo(f"periods per year: {ppy:g} ({ppy_note})")
    width = max(len(k) for k in ALL_FIGURES)
    for k, v in figs.items():
        typer.echo(f"{k:<{width}}  {v:.4f}" if math.isfinite(v) else f"{k:<{width}}  {v}")


def report_cmd(
    run_dir: Path = typer.Argument(..., metavar="RUN_DIR", help="Run directory holding values/<agent>[_seed<k>].csv|parquet."),
    periods_per_year: float = typer.Option(
        None, "--periods-per-year", "-p",
        help="Periods a year (default: manifest.json's periods_per_year, else 252).",
    ),
    benchmark: str = typer.Option(None, "--benchmark", "-b", help="Agent whose curve is the tearsheets' benchmark."),
    tearsheets: bool = typer.Option(True, "--tearsheets/--no-tearsheets", help="Write quantstats HTML tearsheets."),
) -> None:
    """(Re)build tables, plots and tearsheets of a run directory from its saved account values.

    Writes table.csv, table_seeds.csv, table.md, table.tex, equity.png, drawdown.png, tearsheets/<agent>.html and tearsheets/index.html (see docs/metrics.md for the layout), and the statistics: Sharpe intervals, PSR/DSR, tests against the index and the best rule baseline, PBO, SPA (stats.json, sharpe_intervals.png, improvement.png; docs/metrics.md).

    Example: finmeta report ~/.finmeta/runs/dow30_ppo --benchmark index
    """
    from benchmarks.report import build_report, stats_markdown, table_markdown

    if periods_per_year is not None and not periods_per_year > 0:
        raise MetricsError(f"--periods-per-year must be > 0, got {periods_per_year}")
    res = build_report(run_dir, periods_per_year=periods_per_year, benchmark=benchmark, tearsheets=tearsheets)
    typer.echo(f"periods per year: {res['periods_per_year']:g} ({res['periods_source']})")
    typer.echo(table_markdown(res["table"]).rstrip())
    if res.get("statistics"):
        typer.echo("")
        typer.echo(stats_markdown(res["table"], res["statistics"]).rstrip())
    fallbacks = [a for a, info in res["tearsheets"].items() if info.get("fallback")]
    for a in fallbacks:
        typer.echo(f"warning: quantstats failed for {a}; wrote a plain HTML page ({res['tearsheets'][a]['error']})", err=True)
    typer.echo(f"wrote {run_dir}/table.csv, table.md, table.tex, equity.png, drawdown.png"
               + (", stats.json, sharpe_intervals.png, improvement.png" if (Path(run_dir) / "stats.json").is_file() else "")
               + (f", {len(res['tearsheets'])} tearsheet(s) linked from tearsheets/index.html" if res["tearsheets"] else ""))


def compare_cmd(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="Run directory A (the reference, e.g. the SB3 run)."),
    run_b: Path = typer.Argument(None, metavar="[RUN_B]", help="Run directory B (the change, e.g. the torch run); none with --row."),
    agents: str = typer.Option(None, "--agents", help="Comma-separated agents (default: every learned agent both runs have; with --row: every other row)."),
    row: str = typer.Option(None, "--row", help="Compare this row of RUN_A with its other rows (or those --agents names) instead of two runs."),
    label_a: str = typer.Option("A", "--label-a", help="Name of run A in the table (e.g. sb3)."),
    label_b: str = typer.Option("B", "--label-b", help="Name of run B in the table (e.g. torch)."),
    periods_per_year: float = typer.Option(
        None, "--periods-per-year", "-p", help="Periods a year (default: the manifests', which must agree; else 252)."),
    reps: int = typer.Option(1000, "--reps", help="Bootstrap resamples of the seeds."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    any_data: bool = typer.Option(False, "--any-data", help="Compare runs whose manifests name different datasets."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """Compare the rows two run directories share: Sharpe of each, B - A with a 95 % seed-bootstrap interval, the paired HAC test on the same dates, P(B > A) and action repeat (docs/metrics.md, "Comparing two runs"). With --row, one row of a run against its other rows (MoE against its ablations, ensemble against its members).

    Examples: finmeta compare runs/finrl_sb3 runs/finrl_torch --label-a sb3 --label-b torch --agents td3,sac;
    finmeta compare runs/moe_dow30 --row moe --agents moe_no_diversity,moe_single
    """
    from benchmarks.compare import compare_markdown, compare_rows, compare_rows_markdown, compare_runs
    from benchmarks.stats import json_ready

    if reps < 100:
        raise MetricsError(f"--reps must be >= 100, got {reps}")
    names = [a.strip() for a in agents.split(",") if a.strip()] if agents else None
    if row is not None:
        if run_b is not None:
            raise MetricsError(f"--row compares rows of one run: give RUN_A only, not also {run_b}")
        res = compare_rows(run_a, row, names, periods_per_year=periods_per_year, reps=reps, seed=seed)
        extra, markdown = {}, compare_rows_markdown
    else:
        if run_b is None:
            raise MetricsError("give two run directories (RUN_A RUN_B), or one with --row ROW")
        res = compare_runs(run_a, run_b, names, periods_per_year=periods_per_year, reps=reps, seed=seed, any_data=any_data)
        extra, markdown = {"labels": [label_a, label_b]}, (lambda r: compare_markdown(r, label_a, label_b))
    if as_json:
        payload = {**{k: v for k, v in res.items() if k != "table"}, **extra,
                   "rows": res["table"].to_dict(orient="records")}
        typer.echo(json.dumps(json_ready(payload)))
    else:
        typer.echo(markdown(res).rstrip())


COMMANDS: list[tuple[str, Callable[..., None]]] = [
    ("metrics", metrics_cmd),
    ("report", report_cmd),
    ("compare", compare_cmd),
]
"""``(name, function)`` of every top-level command this layer adds; append new ones here."""


def register(app: typer.Typer) -> None:
    """Add the benchmark layer's commands (:data:`COMMANDS`) to the ``finmeta`` app."""
    for name, func in COMMANDS:
        app.command(name, help=func.__doc__, no_args_is_help=True)(func)

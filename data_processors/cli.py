"""``finmeta data download|import|features|info|list|check``.

Every command stores or reads datasets through :mod:`data_processors.store`. User errors are
:class:`~finmeta.errors.FinMetaError` subclasses: ``finmeta.cli.main`` prints them as one line and
exits with code 2. Progress goes to stderr (rich), results to stdout.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator, Optional

import typer

from finmeta.errors import ConfigError

from .schema import DEFAULT_INDICATORS

data_app = typer.Typer(
    rich_markup_mode=None,  # plain click help: no <bool> type labels, defaults wrapped not cut
    help="Download, import, feature and inspect datasets.\n\nExample: finmeta data list",
    no_args_is_help=True,
)

FORMATS = ("canonical", "yahoo", "baostock", "tushare", "akshare", "binance", "netease", "fx")


def _console():
    from rich.console import Console

    return Console(stderr=True)


@contextlib.contextmanager
def _progress(description: str) -> Iterator[None]:
    """A transient spinner with elapsed time on stderr while a long step runs (terminals only)."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = _console()
    if not console.is_terminal:  # pipes, logs and tests get no control characters
        yield
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console, transient=True) as prog:
        prog.add_task(description, total=None)
        yield


def _done(manifest: dict, what: str) -> None:
    typer.echo(f"{what} dataset {manifest['name']}: {manifest['rows']} rows, {manifest['num_tickers']} tickers, "
               f"{manifest['start']} .. {manifest['end']} ({manifest['freq']}), sha256 {manifest['sha256'][:16]}")


def _check_policy(policy: str) -> None:
    from .clean import OHLC_POLICIES

    if policy not in OHLC_POLICIES:
        raise ConfigError(f"--on-bad-ohlc {policy!r}: use one of {', '.join(OHLC_POLICIES)}")


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in (value or "").split(",") if v.strip()]


# ----------------------------------------------------------------------------------------------
@data_app.command("download")
def download_cmd(
    source: str = typer.Option(..., "--source", "-s", help="Source name: yahoo, baostock, tushare, akshare, "
                               "binance, fx, synthetic."),
    tickers: str = typer.Option(..., "--tickers", "-t", help="Comma-separated tickers, e.g. AAPL,MSFT."),
    start: str = typer.Option(..., "--start", help="First date (inclusive), YYYY-MM-DD."),
    end: str = typer.Option(..., "--end", help="End date (exclusive), YYYY-MM-DD."),
    freq: str = typer.Option("1d", "--freq", help="Bar frequency: 1d 1w 1mo 1m 5m 15m 30m 60m 1h."),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name to store it under."),
    on_bad_ohlc: str = typer.Option("error", "--on-bad-ohlc", help="Bars whose high/low do not enclose open/close: "
                                    "'error' (refuse, listing every problem class), 'clip' (widen high/low) or "
                                    "'drop' (remove the bar); the count is in the manifest."),
) -> None:
    """Download bars from a vendor, validate them and store them as dataset NAME.

    Example: finmeta data download --source yahoo --tickers AAPL,MSFT --start 2020-01-01 --end 2021-01-01 --name tech
    """
    from .clean import validate
    from .sources import get_source
    from .store import _check_name, save_dataset

    _check_name(name)
    _check_policy(on_bad_ohlc)
    tics = _csv(tickers)
    if not tics:
        raise ConfigError("--tickers: give at least one ticker, e.g. --tickers AAPL,MSFT")
    if source == "synthetic" and len(tics) == 1 and tics[0].isdigit():
        tics = int(tics[0])  # the synthetic market takes a count: --tickers 5 = SYN00..SYN04
    src = get_source(source)
    n = tics if isinstance(tics, int) else len(tics)
    with _progress(f"downloading {n} tickers from {source}"):
        df = src.download(tics, start, end, freq)
    with _progress("validating and storing"):
        df, ohlc = _repair(df, on_bad_ohlc, f"{source} download")
        validate(df, where=f"{source} download")
        manifest = save_dataset(name, df, source=source,
                                params={"tickers": sorted(df["tic"].unique().tolist()), "start": start, "end": end, "freq": freq,
                                        "calendar": getattr(src, "calendar", None), "ohlc_repair": ohlc})
    _ohlc_note(ohlc)
    _done(manifest, "stored")


@data_app.command("import")
def import_cmd(
    file: Path = typer.Argument(..., metavar="FILE", help="The vendor file (CSV, .csv.gz, or Parquet for canonical)."),
    fmt: str = typer.Option("canonical", "--format", "-f", help=f"File format: {', '.join(FORMATS)}."),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name to store it under."),
    symbol: Optional[str] = typer.Option(None, "--symbol", help="Ticker for one-ticker files without a ticker column."),
    tz: Optional[str] = typer.Option(None, "--tz", help="Time zone of naive intraday times, e.g. America/New_York."),
    label: Optional[str] = typer.Option(None, "--label", help="Intraday stamps are bar 'open' or bar 'end' times."),
    freq: Optional[str] = typer.Option(None, "--freq", help="Bar frequency when it cannot be inferred."),
    on_bad_ohlc: str = typer.Option("error", "--on-bad-ohlc", help="Bars whose high/low do not enclose open/close: "
                                    "'error' (refuse, listing every problem class), 'clip' (widen high/low) or "
                                    "'drop' (remove the bar); the count is in the manifest."),
) -> None:
    """Import a vendor file through its source's normaliser, validate it and store it as dataset NAME.

    Example: finmeta data import dow30_daily.csv.gz --format yahoo --name dow30
    """
    from .clean import validate
    from .sources import get_source
    from .store import _check_name, file_sha256, save_dataset

    _check_name(name)
    _check_policy(on_bad_ohlc)
    options = {k: v for k, v in {"symbol": symbol, "tz": tz, "label": label, "freq": freq}.items() if v is not None}
    src = get_source(fmt)
    with _progress(f"reading {file.name} as {fmt}"):
        df = src.read_file(file, **options)
    with _progress("validating and storing"):
        df, ohlc = _repair(df, on_bad_ohlc, str(file))
        validate(df, where=str(file))
        manifest = save_dataset(name, df, source=fmt,
                                params={"file": file.name, "file_sha256": file_sha256(file), "format": fmt,
                                        "options": options, "calendar": getattr(src, "calendar", None),
                                        "ohlc_repair": ohlc})
    _ohlc_note(ohlc)
    _done(manifest, "imported")


def _repair(df, policy: str, where: str):
    from .clean import repair_ohlc

    return repair_ohlc(df, policy, where)


def _ohlc_note(record: dict) -> None:
    if record.get("rows_changed"):
        verb = "dropped" if record["policy"] == "drop" else "clipped"
        classes = ", ".join(f"{k} {v}" for k, v in record.items() if k not in ("policy", "rows_changed") and v)
        _console().print(f"--on-bad-ohlc {record['policy']}: {record['rows_changed']} bars {verb} ({classes})",
                         highlight=False)


def _load_vix(spec: str):
    """``--vix``: an existing file (read as canonical) or a stored dataset name; ^VIX rows when mixed."""
    from .store import load_dataset

    path = Path(spec)
    if path.is_file():
        from .sources import get_source

        vix = get_source("canonical").read_file(path)
    else:
        vix = load_dataset(spec)
    tics = set(vix["tic"].astype(str).unique())
    if len(tics) > 1:
        pick = [t for t in tics if t.upper().lstrip("^") == "VIX"]
        if not pick:
            raise ConfigError(f"--vix {spec}: holds tickers {sorted(tics)[:10]}; none is ^VIX")
        vix = vix[vix["tic"].astype(str) == pick[0]].reset_index(drop=True)
    return vix


@data_app.command("features")
def features_cmd(
    name: str = typer.Argument(..., metavar="NAME", help="The stored dataset to clean and feature."),
    out: str = typer.Option(..., "--out", "-o", help="Name of the new dataset."),
    engine: str = typer.Option("stockstats", "--engine", help="Indicator engine: stockstats or talib."),
    indicators: Optional[str] = typer.Option(None, "--indicators",
                                             help=f"Comma-separated indicators (default {', '.join(DEFAULT_INDICATORS)}); "
                                                  f"'none' for no indicators."),
    vix: Optional[str] = typer.Option(None, "--vix", help="VIX as a dataset name or a file (canonical/long CSV)."),
    turbulence: bool = typer.Option(True, "--turbulence/--no-turbulence", help="Add the turbulence index."),
    turbulence_window: int = typer.Option(252, "--turbulence-window", help="Look-back bars of the turbulence index."),
    calendar: Optional[str] = typer.Option(None, "--calendar",
                                           help="Trading calendar: XNYS, XSHG, 24/7, FX (default: the source's)."),
    min_coverage: float = typer.Option(0.0, "--min-coverage", help="Drop tickers with less coverage (0..1)."),
    max_gap: Optional[int] = typer.Option(None, "--max-gap", help="Drop tickers with a longer run of missing bars."),
    late_start: str = typer.Option("cut", "--late-start", help="Late tickers: 'cut' the panel start or 'drop' them."),
    news: Optional[Path] = typer.Option(None, "--news", help="A headlines CSV: adds the daily VADER `sentiment` "
                                                              "(news after the close counts for the next session)."),
    on_bad_ohlc: str = typer.Option("error", "--on-bad-ohlc", help="Bars whose high/low do not enclose open/close: "
                                    "'error' (refuse, listing every problem class), 'clip' (widen high/low) or "
                                    "'drop' (remove the bar); the count is in the manifest."),
) -> None:
    """Clean dataset NAME on its exchange calendar (forward fill only), add features, store as --out.

    Example: finmeta data features dow30 --out dow30_feat --engine stockstats --vix vix --calendar XNYS
    """
    from .clean import clean
    from .features.pipeline import add_features
    from .store import _check_name, dataset_info, load_dataset, save_dataset, stored_calendar

    _check_name(out)
    _check_policy(on_bad_ohlc)
    if engine not in ("stockstats", "talib"):
        raise ConfigError(f"--engine {engine!r}: use stockstats or talib")
    inds = () if (indicators or "").strip().lower() == "none" else (tuple(_csv(indicators)) or DEFAULT_INDICATORS)
    parent = dataset_info(name, verify=False)
    df = load_dataset(name)
    cal = stored_calendar(name, calendar, key="--calendar")  # the bench's rule for a stored dataset's calendar
    vix_df = _load_vix(vix) if vix else None
    daily_news = None
    if news is not None:
        from .features.sentiment import daily_sentiment, read_news

        with _progress(f"scoring headlines in {news.name} (VADER)"):
            daily_news = daily_sentiment(read_news(news), calendar=cal)
    with _progress(f"cleaning {name} on {cal}"):
        cleaned, report = clean(df, cal, where=f"dataset {name}", min_coverage=min_coverage, max_gap=max_gap,
                                late_start=late_start, on_bad_ohlc=on_bad_ohlc)
    _console().print(report.summary(), highlight=False)
    with _progress(f"adding features ({engine})"):
        feat = add_features(cleaned, indicators=inds, engine=engine, vix=vix_df, turbulence=turbulence,
                            turbulence_window=turbulence_window, sentiment=daily_news)
    with _progress("storing"):
        manifest = save_dataset(out, feat, source=parent.get("source", "unknown"), params={
            "parent": name, "parent_sha256": parent.get("sha256"), "calendar": cal,
            "clean": {"min_coverage": min_coverage, "max_gap": max_gap, "late_start": late_start,
                      "on_bad_ohlc": on_bad_ohlc, "report": report.to_dict()},
            "features": {"engine": engine, "indicators": list(inds), "vix": vix, "turbulence": turbulence,
                         "turbulence_window": turbulence_window, "news": str(news) if news else None},
        })
    _done(manifest, "stored")


@data_app.command("info")
def info_cmd(
    name: str = typer.Argument(..., metavar="NAME", help="Dataset name."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Show a dataset's manifest (rows, tickers, span, frequency, columns, sha256) and check its hash.

    Exits with code 1 when the integrity check fails.

    Example: finmeta data info dow30 --json
    """
    from .store import dataset_info

    info = dataset_info(name)
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        if info.get("integrity") != "ok":
            raise typer.Exit(1)
        return
    tick = info.get("tickers", [])
    lines = [(key, info.get(key)) for key in ("name", "source", "rows", "num_tickers", "start", "end", "freq",
                                               "sha256", "integrity", "created", "path")]
    lines.append(("tickers", ", ".join(tick[:30]) + (f" ... (+{len(tick) - 30})" if len(tick) > 30 else "")))
    lines.append(("columns", ", ".join(info.get("columns", []))))
    width = max(len(k) for k, _ in lines)
    for key, value in lines:
        typer.echo(f"{key:<{width}}  {value}")
    if info.get("integrity") != "ok":
        raise typer.Exit(1)


@data_app.command("list")
def list_cmd() -> None:
    """List the stored datasets.

    Example: finmeta data list
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from finmeta.errors import FinMetaError
    from finmeta.paths import datasets_dir

    from .store import dataset_info, list_datasets

    names = list_datasets()
    if not names:
        typer.echo(f"no datasets in {datasets_dir()}; create one with `finmeta data import` or `download`")
        return
    table = Table(title=f"datasets in {datasets_dir()}")
    for col in ("name", "source", "rows", "tickers", "start", "end", "freq"):
        table.add_column(col)
    for n in names:
        try:
            i = dataset_info(n, verify=False)
        except FinMetaError as exc:
            table.add_row(escape(n), escape(f"[broken: {exc}]"), "", "", "", "", "")
            continue
        table.add_row(*(escape(str(v)) for v in (n, i.get("source"), i.get("rows"), i.get("num_tickers"),
                                                i.get("start"), i.get("end"), i.get("freq"))))
    Console(width=160).print(table)


@data_app.command("check")
def check_cmd(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="Dataset to check (default: every folder in the store)."),
    keep_orphans: bool = typer.Option(False, "--keep-orphans", help="Report unreferenced files, do not remove them."),
) -> None:
    """Verify every stored artefact (manifest, data file, sha256, rows, columns) and remove orphan files.

    Orphans are data files no manifest names and temporary files a killed writer left. Exits with
    code 1 when a dataset fails a check.

    Example: finmeta data check dow30
    """
    from finmeta.paths import datasets_dir

    from .store import check_dataset, store_folders

    names = [name] if name else store_folders()
    if not names:
        typer.echo(f"no datasets in {datasets_dir()}")
        return
    failed = 0
    for n in names:
        r = check_dataset(n, remove_orphans=not keep_orphans)
        what = f"{r['rows']} rows, sha256 {str(r['sha256'])[:16]}" if r["sha256"] else "no valid manifest"
        typer.echo(f"{r['status']:<6}  {n}  ({what})")
        for p in r["problems"]:
            typer.echo(f"        problem: {p}")
        for o in r["orphans"]:
            typer.echo(f"        orphan {'removed' if r['removed'] else 'kept'}: {o}")
        failed += r["status"] != "ok"
    if failed:
        typer.echo(f"{failed} of {len(names)} dataset folder(s) failed", err=True)
        raise typer.Exit(1)

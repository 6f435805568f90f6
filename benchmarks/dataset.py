"""Config -> dataset: the raw frame a config's ``data`` section names, cleaned on its calendar,
featured, as :class:`~data_processors.arrays.MarketArrays` with provenance; and the index rows.

The frame -> arrays chain is the data layer's (:func:`data_processors.clean.clean`,
:func:`data_processors.features.pipeline.add_features`, :func:`data_processors.arrays.to_arrays`
with :func:`data_processors.arrays.frame_hash`, a stored dataset's calendar from
:func:`data_processors.store.stored_calendar`): ``DataProcessor`` and ``finmeta data features`` use
the same pieces, so they agree on the dataset hash and on a stored dataset's calendar.

Used by :mod:`benchmarks.run` (the bench), :mod:`benchmarks.tune` (the tuner, with ``before=``)
and the trade stage; it imports nothing from the orchestrator.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from data_processors.arrays import MarketArrays, frame_hash, to_arrays
from data_processors.schema import CANONICAL_COLUMNS
from data_processors.store import stored_calendar as dataset_calendar  # the store's rule, one for all chains
from finmeta.errors import ConfigError
from finmeta.jsonutil import to_jsonable
from finmeta.timeparse import parse_date


def _expand(value: str) -> str:
    out = os.path.expandvars(os.path.expanduser(str(value)))
    if "${" in out or "$FINMETA" in out:
        raise ConfigError(f"{value}: an environment variable in this path is not set (FINMETA_DATA_DIR?)")
    return out



def _ts_like(col: pd.Series, when) -> pd.Timestamp:
    """``when`` as a Timestamp comparable with ``col`` (tz-aware columns: ``when`` read as UTC)."""
    ts = pd.Timestamp(when)
    tz = getattr(col.dt, "tz", None)
    if tz is not None and ts.tz is None:
        return ts.tz_localize("UTC")
    if tz is None and ts.tz is not None:
        return ts.tz_convert("UTC").tz_localize(None)
    return ts


def cut_before(df: pd.DataFrame, when) -> pd.DataFrame:
    """Rows of a canonical frame strictly before ``when``."""
    return df[df["time"] < _ts_like(df["time"], when)].reset_index(drop=True)


def _read_files(data: dict) -> tuple[pd.DataFrame, str]:
    """``data.files``: a list of ``{file, format, options}`` (or bare paths read with
    ``data.format``), concatenated; a (time, tic) present in two files is an error naming both."""
    from data_processors.sources import get_source

    files = data["files"]
    if not isinstance(files, list) or not files:
        raise ConfigError("data.files must be a non-empty list of {file, format} mappings")
    parts, names, cal = [], [], None
    for i, f in enumerate(files):
        f = {"file": f} if isinstance(f, str) else dict(f)
        if "file" not in f:
            raise ConfigError(f"data.files[{i}]: no 'file' key in {f}")
        src = get_source(f.get("format", data.get("format", "canonical")))
        path = _expand(f["file"])
        parts.append(src.read_file(path, **dict(f.get("options") or {})).assign(_file=i))
        names.append(path)
        cal = cal or src.calendar
    df = pd.concat(parts, ignore_index=True)
    dup = df.duplicated(["time", "tic"], keep=False)
    if dup.any():
        rows = df[dup].sort_values(["time", "tic"]).head(2)
        a, b = (names[int(k)] for k in rows["_file"])
        raise ConfigError(f"data.files: {rows['tic'].iloc[0]} at {rows['time'].iloc[0]} is in both {a} and {b}")
    df = df.drop(columns="_file").sort_values(["time", "tic"]).reset_index(drop=True)
    return df, cal


def load_frame(data: dict) -> tuple[pd.DataFrame, str]:
    """The raw canonical frame a config's ``data`` section names, and the calendar to clean it on.

    Sources: ``dataset: NAME`` (the store), ``files: [...]`` / ``file: PATH`` + ``format`` (vendor
    files), else ``source: NAME`` (download; ``synthetic`` by default). Then ``tickers`` (a list),
    ``start`` and ``end`` (exclusive) filter the rows.
    """
    from data_processors.sources import get_source

    data = dict(data)
    # ISO dates only, checked before any file or network work
    start = parse_date(data["start"], "data.start") if "start" in data else None
    end = parse_date(data["end"], "data.end") if "end" in data else None
    if "dataset" in data:
        from data_processors.store import load_dataset

        df = load_dataset(data["dataset"])
        cal = dataset_calendar(data["dataset"], data.get("calendar"))
        where = f"dataset {data['dataset']}"
    elif "files" in data:
        df, cal = _read_files(data)
        cal = data.get("calendar", cal)
        where = "any of data.files"
    elif "file" in data:
        where = str(data["file"])
        fmt = data.get("format", "canonical")
        src = get_source(fmt)
        df = src.read_file(_expand(data["file"]), **dict(data.get("options") or {}))
        cal = data.get("calendar", src.calendar)
    else:
        name = data.get("source", "synthetic")
        src = get_source(name)
        kw = {k: v for k, v in data.items() if k not in ("source", "tickers", "start", "end", "freq", "calendar",
                                                         "clean")}
        df = src.download(data.get("tickers", 10), str(data["start"]), str(data["end"]), data.get("freq", "1d"), **kw)
        cal = data.get("calendar", src.calendar)
    tickers = data.get("tickers")
    if isinstance(tickers, (list, tuple)) and "source" not in data:
        missing = sorted(set(tickers) - set(df["tic"].unique()))
        if missing:
            raise ConfigError(f"data.tickers not in {where}: {missing}")
        df = df[df["tic"].isin(tickers)]
    if start is not None:
        df = df[df["time"] >= _ts_like(df["time"], start)]
    if end is not None:
        df = cut_before(df, end)
    return df.reset_index(drop=True), cal


def build_arrays(config: dict, *, before=None) -> tuple[MarketArrays, dict]:
    """Config -> cleaned, featured arrays, plus provenance (dataset hash, cleaning report).

    ``before``: keep only bars strictly before this time, cut from the *raw* frames (prices and
    VIX) before cleaning and features -- what the tuner uses so that nothing from the trading
    range can reach it.
    """
    from data_processors.clean import clean
    from data_processors.features.pipeline import add_features

    dcfg = dict(config.get("data") or {})
    raw, cal = load_frame(dcfg)
    if before is not None:
        raw = cut_before(raw, before)
        if raw.empty:
            raise ConfigError(f"no bars before {before}")
    # a dataset written by `finmeta data features`: its feature columns are set aside (cleaning is on
    # prices); the config's `features` section recomputes them, else the stored ones are used as they are
    stored = [c for c in raw.columns if c not in CANONICAL_COLUMNS] if "dataset" in dcfg else []
    kept = raw[["time", "tic", *stored]] if stored and "features" not in config else None
    df, report = clean(raw.drop(columns=stored), calendar=cal, **dict(dcfg.get("clean") or {}))
    fcfg = dict(config.get("features") or {})
    if kept is not None:
        feat = df.merge(kept, on=["time", "tic"], how="left", validate="one_to_one", indicator=True)
        missing = feat["_merge"] != "both"
        if missing.any():
            r = feat[missing].iloc[0]
            raise ConfigError(f"data.dataset {dcfg['dataset']}: cleaning added {int(missing.sum())} bar(s) its stored "
                              f"features do not cover (first: {r['tic']} {r['time']}); add a `features` section "
                              f"to recompute them")
        feat = feat.drop(columns="_merge")
        feature_columns = fcfg.get("columns")
    else:
        vix = None
        if fcfg.get("vix"):
            vix, _ = load_frame(dict(fcfg["vix"]))
            if before is not None:
                vix = cut_before(vix, before)
        kw = {k: fcfg[k] for k in ("indicators", "engine", "turbulence", "turbulence_window", "turbulence_mode")
              if k in fcfg}
        feat = add_features(df, vix=vix, **kw)
        feature_columns = fcfg.get("columns")
        if feature_columns is None and "indicators" in fcfg:
            feature_columns = list(fcfg["indicators"])
    h = frame_hash(feat)
    meta = {"dataset_hash": h, "calendar": cal}
    if getattr(report, "cut_start", None):  # the windows' error says why the data start late
        meta.update(cut_start=list(report.cut_start), late_start=dict(report.late_start))
    if before is not None:
        meta["cut_before"] = str(before)
    arrays = to_arrays(feat, feature_columns, meta=meta)
    prov = {"dataset_hash": h, "calendar": cal, "rows": int(len(feat)), "tickers": list(arrays.tickers),
            "start": str(pd.Timestamp(arrays.times[0]).date()), "end": str(pd.Timestamp(arrays.times[-1]).date()),
            "clean_report": to_jsonable(report)}
    if stored:
        prov["stored_features"] = {"columns": stored, "used": kept is not None}
    return arrays, prov




def index_rows(config: dict) -> list[tuple[str, dict]]:
    """The market-index rows a config asks for: ``index`` (a mapping or a list) and
    ``more_indices`` (a list). The first row's agent name is ``index``; later rows are
    ``index_<name>`` (``name`` from the row, e.g. ``index_CSI_300``)."""
    rows: list[dict] = []
    for key in ("index", "more_indices"):
        v = config.get(key)
        if not v:
            continue
        rows.extend(v if isinstance(v, list) else [v])
    out = []
    for k, r in enumerate(rows):
        if not isinstance(r, dict):
            raise ConfigError(f"index rows must be mappings ({{file, format, tic, name}}), got {r!r}")
        label = "index" if k == 0 else "index_" + str(r.get("name", r.get("tic", k))).replace(" ", "_")
        out.append((label, r))
    return out


def gated_index_values(index: pd.Series, stop: np.ndarray, buy_cost: float = 0.0,
                       sell_cost: float = 0.0) -> pd.Series:
    """The index row traded under the turbulence stop (row ``index_gated``).

    Args:
        index: the index row's account values ``(L,)`` (buy-and-hold of the index level).
        stop: ``(L,)`` bool, True where the stop is active on that bar (turbulence >= the window's
            threshold; :meth:`WalkForward.stop_mask`).
        buy_cost, sell_cost: fractions paid on the value moved into / out of the index.

    On a stop bar the position is sold at that bar's close (paying ``sell_cost``) and held in cash
    (no interest) until the first bar without the stop, where it is bought back at the close
    (paying ``buy_cost``); the value then follows the index again. Starts invested, like ``index``.
    """
    v = index.to_numpy(dtype=np.float64)
    stop = np.asarray(stop, dtype=bool)
    if stop.shape != v.shape:
        raise ConfigError(f"index_gated: stop mask of shape {stop.shape} for {v.shape[0]} index values")
    out = np.empty_like(v)
    out[0] = v[0] * ((1.0 - sell_cost) if stop[0] else 1.0)
    invested = not stop[0]
    for t in range(1, len(v)):
        value = out[t - 1] * (v[t] / v[t - 1]) if invested else out[t - 1]
        if invested and stop[t]:
            value *= 1.0 - sell_cost
            invested = False
        elif not invested and not stop[t]:
            value *= 1.0 - buy_cost
            invested = True
        out[t] = value
    return pd.Series(out, index=index.index, name="index_gated")


def index_values(icfg: dict, arrays: MarketArrays, times: np.ndarray, initial: float) -> pd.Series:
    """An index row's account-value path over ``times`` (buy-and-hold of the index level).

    ``icfg``: ``{file|dataset, format, tic}`` (the level is forward-filled onto ``times``, never
    back-filled) or ``{price_weighted: true}`` (a DJIA-style price-weighted index of the universe).
    """
    t = pd.DatetimeIndex(times)
    if icfg.get("price_weighted"):
        pos = pd.DatetimeIndex(arrays.times).get_indexer(t)
        level = arrays.close[pos].astype(np.float64).sum(axis=1)
    else:
        df, _ = load_frame({k: v for k, v in icfg.items() if k not in ("tic", "name")})
        if "tic" in icfg:
            df = df[df["tic"] == icfg["tic"]]
            if df.empty:
                raise ConfigError(f"index {icfg.get('name', '')}: no rows for tic {icfg['tic']!r}")
        s = df.set_index("time")["close"].sort_index()
        if s.index.tz is not None:
            s.index = s.index.tz_convert("UTC").tz_localize(None)
        s = s[~s.index.duplicated()]
        level = s.reindex(t, method="ffill").to_numpy(dtype=np.float64)
        if np.isnan(level).any():
            raise ConfigError(f"index {icfg.get('name', icfg.get('tic', ''))}: no level on or before "
                              f"{t[np.isnan(level)][0]}")
    return pd.Series(initial * level / level[0], index=t, name="index")


def index_row_values(config: dict, arrays: MarketArrays, times: np.ndarray, initial: float, *,
                     gated_stop: np.ndarray | None = None,
                     gated_costs: tuple[float, float] = (0.0, 0.0)) -> dict[str, pd.Series]:
    """The account values of the config's index rows over ``times`` (label -> series, in the rows'
    order, :func:`index_rows`), each starting at ``initial``.

    With ``gated_stop`` (``(L,)`` bool over ``times``: the turbulence stop is active) the first index
    is also traded under the stop, as row ``index_gated`` right after it (:func:`gated_index_values`
    with ``gated_costs`` = (buy, sell)).
    """
    out: dict[str, pd.Series] = {}
    for k, (label, icfg) in enumerate(index_rows(config)):
        idx = index_values(icfg, arrays, times, initial)
        out[label] = idx
        if k == 0 and gated_stop is not None:
            out["index_gated"] = gated_index_values(idx, gated_stop, *gated_costs)
    return out

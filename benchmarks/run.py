"""Run a benchmark config end to end: data -> features -> walk-forward per agent and seed -> report.

A config is a plain YAML (or JSON) file; the names in ``benchmarks/configs/`` (``quickstart``,
``icaif2020_dow30``, ...) are resolved there. Sections:

``data``      where the bars come from: ``source: synthetic`` (+ ``tickers``, ``start``, ``end``,
              ``seed``), ``dataset: NAME`` (the store), or ``file: PATH`` + ``format`` (a vendor
              file; ``${FINMETA_DATA_DIR}`` is expanded); optional ``tickers`` list, ``start``,
              ``end``, ``calendar``.
``features``  ``engine``, ``indicators``, ``turbulence``, ``turbulence_mode`` (``returns`` |
              ``icaif2020``), ``turbulence_window``, ``vix`` (a file+format, or null).
``env``       the env family and its config; the turbulence stop's threshold per window comes from
              ``turbulence_rule`` (``quantile``: ``turbulence_quantile`` of the training range;
              ``icaif2020_switch``: the ICAIF 2020 code's rule, see
              :func:`benchmarks.loop.turbulence_threshold`); ``turbulence_in_training: false``
              trains without the stop. Every run writes ``windows.csv`` (per window: dates,
              threshold, rule choice, stop bars in trade).
``windows``   see :func:`benchmarks.windows.make_windows`.
``agents``    agent name -> overrides (``total_timesteps`` is the training budget per window).
``index``     the market-index row(s): ``file`` + ``format`` + ``tic`` (+ ``name``), or
              ``price_weighted: true`` (a DJIA-style price-weighted index of the universe, for
              synthetic markets); a list, or ``more_indices``, adds rows ``index_<name>``;
              ``index_gated`` among the agents adds the first index traded under the stop.
``use_tuned`` merge the tuner's best parameters (``finmeta tune``) into the agents.
``seeds``     the seeds; ``periods_per_year``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from data_processors.arrays import MarketArrays, to_arrays
from data_processors.schema import CANONICAL_COLUMNS
from finmeta.errors import ConfigError, FinMetaError
from finmeta.timeparse import parse_date

from .loop import ChainResult, WalkForward, has_artefacts

CONFIG_DIR = Path(__file__).parent / "configs"


# --------------------------------------------------------------------------------------------
# config
# --------------------------------------------------------------------------------------------
def resolve_config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    for ext in (".yaml", ".yml", ".json"):
        q = CONFIG_DIR / f"{name_or_path}{ext}"
        if q.is_file():
            return q
    known = sorted(x.stem for x in CONFIG_DIR.glob("*.y*ml"))
    raise ConfigError(f"config {name_or_path!r} is neither a file nor one of {known}")


def load_config(name_or_path: str | Path) -> dict:
    path = resolve_config_path(name_or_path)
    text = path.read_text(encoding="utf-8")
    cfg = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    cfg.setdefault("name", path.stem)
    from .spec import validate_config

    validate_config(cfg, str(path))  # every section and key, before any data is read
    cfg["_path"] = str(path)
    return cfg


def _expand(value: str) -> str:
    out = os.path.expandvars(os.path.expanduser(str(value)))
    if "${" in out or "$FINMETA" in out:
        raise ConfigError(f"{value}: an environment variable in this path is not set (FINMETA_DATA_DIR?)")
    return out


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
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


def dataset_calendar(name: str, stated: str | None = None) -> str:
    """The calendar a stored dataset is cleaned on: the one its manifest recorded (``params.calendar``,
    as ``finmeta data import``/``features`` write it), else its source's (``baostock`` -> XSHG ...),
    else XNYS. A config's explicit ``data.calendar`` must agree with a recorded one (ConfigError)."""
    from data_processors.sources import REGISTRY
    from data_processors.store import dataset_info

    info = dataset_info(name, verify=False)
    recorded = (info.get("params") or {}).get("calendar")
    source_cls = REGISTRY.get(str(info.get("source")))
    default = recorded or getattr(source_cls, "calendar", None) or "XNYS"
    if stated is None:
        return str(default)
    if recorded and str(stated).upper() != str(recorded).upper():
        raise ConfigError(f"data.calendar: {stated}, but dataset {name} was stored on the {recorded} calendar "
                          f"(cleaning it on {stated} would drop its real bars and invent others); remove "
                          f"data.calendar to use {recorded}")
    return str(stated)


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
    h = hashlib.sha256(pd.util.hash_pandas_object(feat, index=False).values.tobytes()).hexdigest()
    meta = {"dataset_hash": h, "calendar": cal}
    if getattr(report, "cut_start", None):  # the windows' error says why the data start late
        meta.update(cut_start=list(report.cut_start), late_start=dict(report.late_start))
    if before is not None:
        meta["cut_before"] = str(before)
    arrays = to_arrays(feat, feature_columns, meta=meta)
    prov = {"dataset_hash": h, "calendar": cal, "rows": int(len(feat)), "tickers": list(arrays.tickers),
            "start": str(pd.Timestamp(arrays.times[0]).date()), "end": str(pd.Timestamp(arrays.times[-1]).date()),
            "clean_report": _jsonable(report)}
    if stored:
        prov["stored_features"] = {"columns": stored, "used": kept is not None}
    return arrays, prov


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    elif hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        obj = asdict(obj)
    try:
        return json.loads(json.dumps(obj, default=str))
    except TypeError:
        return str(obj)


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


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def _machine() -> dict:
    """CPU count and memory of this machine, for the manifest (timings depend on them)."""
    info: dict[str, Any] = {"cpus": os.cpu_count()}
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        pass
    return info


def run_benchmark(
    config: dict,
    *,
    agents: list[str] | None = None,
    seeds: list[int] | None = None,
    out: str | Path | None = None,
    executor: str = "local",
    progress: bool = True,
    tearsheets: bool = True,
    command: str | None = None,
    models: dict[str, str | Path] | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Run ``config`` for every agent and seed; write the run directory; return (table, run_dir).

    ``tearsheets=False`` skips the quantstats HTML tearsheets (a few seconds each). ``command``
    (the command line that started the run) is recorded in the manifest. ``models`` (``{agent:
    saved model}``, ``finmeta backtest``) trades those files in every window instead of training.
    """
    from .report import git_commit

    t0 = time.time()
    commit = git_commit()  # the code this run executes (taken before it starts)
    config = copy.deepcopy(config)
    if config.get("use_tuned"):
        from .tune import apply_tuned

        config = apply_tuned(config)
    agents = list(agents or config.get("agents", {}).keys())
    seeds = [int(s) for s in (seeds or config.get("seeds") or [0])]
    if not agents:
        raise ConfigError("no agents to run (config.agents is empty and --agents not given)")
    from .spec import validate_config

    validate_config(config, config.get("_path") or config.get("name"))  # dict configs (API, tests) too
    check_agent_names(agents, config)  # a typo fails now, not after the first agent trained
    run_dir = Path(out) if out else default_run_dir(config)
    check_run_dir(run_dir)
    created = not run_dir.exists()
    if not created and (run_dir / "fingerprint.json").exists() and progress:
        print(f"resuming {run_dir}: finished windows load from their checkpoints, the rest runs; "
              f"the manifest keeps every invocation's wall time", file=sys.stderr)
    try:
        return _run(config, agents, seeds, run_dir, executor, progress, tearsheets, command, t0, commit, models)
    except BaseException:
        if created and not has_artefacts(run_dir):  # failed before anything reusable was written
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def default_run_dir(config: dict) -> Path:
    """Where a run goes without ``--out``: ``./runs/<config name>`` in the current folder (datasets,
    by contrast, live in the store under ``FINMETA_HOME``)."""
    return Path("runs") / str(config.get("name", "run"))


def check_agent_names(agents: list[str], config: dict) -> None:
    """Refuse unknown agent names (with the closest known ones) before any data or training work."""
    import difflib

    from .spec import known_agent_names

    known = sorted({*known_agent_names(), *(label for label, _ in index_rows(config))})
    bad = [a for a in agents if a not in known]
    if bad:
        hints = "; ".join(f"{a!r}: did you mean {difflib.get_close_matches(a, known, n=2, cutoff=0.6) or 'none'}?"
                          for a in bad)
        raise ConfigError(f"unknown agent(s) {bad} ({hints}); known: {', '.join(known)}")
    members = (config.get("agents") or {}).get("ensemble", {}) or {}
    if "ensemble" in agents:
        unknown = [m for m in members.get("members", []) if m not in known]
        if unknown:
            raise ConfigError(f"agents.ensemble.members: unknown agent(s) {unknown}")


def check_run_dir(run_dir: Path) -> None:
    """Refuse ``--out`` on a non-empty folder that is not a FinMeta run directory (its files,
    e.g. a ``table.csv`` of the user's, would be overwritten)."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: exists and is not a folder")
    if any(run_dir.iterdir()) and not ((run_dir / "fingerprint.json").exists() or (run_dir / "manifest.json").exists()):
        raise ConfigError(f"--out {run_dir}: a non-empty folder that is not a FinMeta run directory (no "
                          f"fingerprint.json or manifest.json); its files would be overwritten: choose a new folder")


def _run(config, agents, seeds, run_dir: Path, executor, progress, tearsheets, command, t0, commit, models=None):
    from .metrics import compute_metrics
    from .report import aggregate_seeds, build_manifest, write_report

    arrays, prov = build_arrays(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    wf = WalkForward(arrays, config, run_dir, models=models)
    if models and executor != "local":
        raise ConfigError("a backtest of saved models runs with --executor local")
    ppy = wf.periods_per_year

    chains: list[ChainResult] = []
    jobs = [(a, s) for a in agents if not a.startswith("index") for s in seeds]
    if executor == "ray":
        from .distributed import run_chains_ray

        chains = run_chains_ray(arrays, config, run_dir, jobs)
    elif executor == "local":
        chains = _run_local(wf, jobs, progress)
    else:
        raise ConfigError(f"--executor must be 'local' or 'ray', not {executor!r}")

    values: dict[str, pd.Series | pd.DataFrame] = {}
    rows = []
    diag: dict[str, dict] = {}
    for ch in chains:
        key = f"{ch.agent}_seed{ch.seed}"
        values[key] = pd.DataFrame({"account_value": ch.values, "turnover": ch.turnover, "cost": ch.costs},
                                   index=pd.DatetimeIndex(ch.times))
        m = compute_metrics(ch.values, periods_per_year=ppy, turnover=ch.turnover, costs=ch.costs)
        div = [r["diversity"] for r in ch.windows if "diversity" in r]  # the agents' window_diagnostics
        for k in dict.fromkeys(k for d in div for k in d):  # moe: diversity, router entropy; window mean
            m[k] = float(np.mean([d.get(k, np.nan) for d in div]))
        diag[key] = chain_diagnostics(wf, ch)
        m.update(diag[key])
        rows.append({"agent": ch.agent, "seed": ch.seed, **m})
    initial = float(wf.env_cfg.get("initial_cash", 1_000_000))
    if chains:
        for k, (label, icfg) in enumerate(index_rows(config)):
            idx = index_values(icfg, arrays, chains[0].times, initial)
            values[label] = idx
            rows.append({"agent": label, "seed": 0, **compute_metrics(idx.to_numpy(), periods_per_year=ppy)})
            if k == 0 and "index_gated" in agents:
                pos = pd.DatetimeIndex(arrays.times).get_indexer(pd.DatetimeIndex(chains[0].times))
                gated = gated_index_values(idx, wf.stop_mask()[pos], float(wf.env_cfg.get("buy_cost_pct", 0.0)),
                                           float(wf.env_cfg.get("sell_cost_pct", 0.0)))
                values["index_gated"] = gated
                rows.append({"agent": "index_gated", "seed": 0,
                             **compute_metrics(gated.to_numpy(), periods_per_year=ppy)})
    windows_table = pd.DataFrame(wf.window_table())
    stop = None  # the turbulence stop's days on the traded bars: shaded in the plots, kept in windows.csv
    if chains:
        times = pd.DatetimeIndex(chains[0].times)
        stop = pd.Series(wf.stop_mask()[pd.DatetimeIndex(arrays.times).get_indexer(times)], index=times)
        windows_table["stop_spans"] = stop_span_cells(windows_table, stop)
    windows_table.to_csv(run_dir / "windows.csv", index=False)
    per_seed = pd.DataFrame(rows)
    table = aggregate_seeds(per_seed)
    manifest = build_manifest(
        config={k: v for k, v in config.items() if not k.startswith("_")},
        dataset_hash=prov["dataset_hash"],
        seeds=seeds,
        wall_time_s=round(time.time() - t0, 2),
        periods_per_year=ppy,
        git_commit=commit,
        config_path=config.get("_path"),
        agents=agents,
        executor=executor,
        fill=wf.env_cfg.get("fill", "open"),
        dataset=prov,
        machine=_machine(),
        command=command,
        windows={f"{c.agent}_seed{c.seed}": c.windows for c in chains},
        action_diagnostics={k: {f: (None if np.isnan(v) else v) for f, v in d.items()} for k, d in diag.items()},
    )
    if models:
        from data_processors.store import file_sha256

        manifest["models"] = {k: {"path": str(v), "sha256": file_sha256(v)} for k, v in models.items()}
    manifest["invocations"] = invocations(run_dir, manifest)
    actions = {f"{c.agent}_seed{c.seed}": pd.DataFrame(c.actions, index=pd.DatetimeIndex(c.times),
                                                       columns=list(arrays.tickers)[: c.actions.shape[1]])
               for c in chains}
    written = write_report(run_dir, values, table, manifest, per_seed=per_seed, actions=actions,
                           periods_per_year=ppy, tearsheets=tearsheets, windows=windows_table, stop=stop)
    return written.get("table", table), run_dir  # with the statistics columns


def stop_span_cells(windows: pd.DataFrame, stop: pd.Series) -> list[str | None]:
    """Per window (row of ``windows.csv``): its runs of turbulence-stop days as ``first/last`` dates,
    space-separated (what ``finmeta report`` shades when it rebuilds the plots); None without any."""
    days = stop.index.normalize()
    intraday = bool((stop.index != days).any())  # hourly bars: spans keep their times

    def stamp(t: pd.Timestamp) -> str:
        return t.isoformat() if intraday else str(t.date())

    out: list[str | None] = []
    for _, w in windows.iterrows():
        inside = stop[(days >= pd.Timestamp(w["trade_start"])) & (days <= pd.Timestamp(w["trade_end"]))]
        flags = inside.to_numpy(dtype=bool)
        edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
        runs = zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1)
        cell = " ".join(f"{stamp(inside.index[i])}/{stamp(inside.index[j])}" for i, j in runs)
        out.append(cell or None)
    return out


def invocations(run_dir: Path, manifest: dict) -> list[dict]:
    """Every ``finmeta bench`` that wrote this run directory, oldest first: ``{created_utc, command,
    wall_time_s, git_commit, agents, seeds}``. A resumed run's ``wall_time_s`` is only its own
    (seconds, not the first run's minutes): the earlier ones stay here."""
    from .report import read_manifest

    try:
        previous = read_manifest(run_dir) or {}
    except FinMetaError:
        previous = {}
    keys = ("created_utc", "command", "wall_time_s", "git_commit", "agents", "seeds")
    history = list(previous.get("invocations") or ([{k: previous.get(k) for k in keys}] if previous else []))
    return history + [{k: manifest.get(k) for k in keys}]


def chain_diagnostics(wf: WalkForward, ch: ChainResult) -> dict[str, float]:
    """:func:`benchmarks.diagnostics.action_diagnostics` of one chain (bounds of the trade env's
    action space; saturation for learned agents only)."""
    from .diagnostics import action_diagnostics
    from .loop import learns

    lengths = [int(r["trade"][1]) - int(r["trade"][0]) for r in ch.windows]
    space = wf._trade_env(wf.windows[0], None)[0].action_space
    return action_diagnostics(ch.actions, lengths, low=getattr(space, "low", None),
                              high=getattr(space, "high", None), learned=learns(ch.agent))


def _run_local(wf: WalkForward, jobs: list[tuple[str, int]], progress: bool) -> list[ChainResult]:
    if not progress:
        return [wf.run_chain(a, s) for a, s in jobs]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    n_win = len(wf.windows)
    out = []
    # progress goes to stderr: stdout carries the table (``--json`` output must parse)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False, console=Console(stderr=True)) as bar:
        total = bar.add_task("all windows", total=len(jobs) * n_win)
        steps = bar.add_task("training steps", total=1, visible=False)
        for a, s in jobs:
            task = bar.add_task(f"{a} seed {s}", total=n_win)

            def tick(_a, _s, _w, _n, task=task):
                bar.advance(task)
                bar.advance(total)

            def train_tick(label, done, n):
                bar.update(steps, description=f"  training {label}", completed=done, total=n, visible=True)

            wf.on_window = tick
            wf.on_train = train_tick
            out.append(wf.run_chain(a, s))
        bar.update(steps, visible=False)
    wf.on_window = None
    wf.on_train = None
    return out

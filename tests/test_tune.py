"""``finmeta tune``: validation-Sharpe search that never reads a bar at or after trade_start."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from benchmarks.tune import (
    TuneError,
    apply_tuned,
    build_pretrade_arrays,
    load_tuned,
    pretrade_window,
    tune_agent,
    tuned_path,
    write_tuned,
)
from finmeta.errors import ConfigError, FinMetaError

TRADE_START = "2019-07-01"


@pytest.fixture
def optuna():
    """The tuner's extra (``finmeta[tune]``); the config and file tests below do not need it."""
    return pytest.importorskip("optuna")


def _config(path) -> dict:
    return {
        "name": "tiny_tune",
        "data": {"file": str(path), "format": "canonical"},
        "features": {"engine": "stockstats", "indicators": ["macd", "rsi_30"], "turbulence": True},
        "env": {"family": "stock_trading", "initial_cash": 1_000_000, "hmax": 100, "buy_cost_pct": 0.001,
                "sell_cost_pct": 0.001, "reward_scaling": 1e-4, "turbulence_quantile": 0.99, "fill": "open"},
        "windows": {"train_start": "2018-01-01", "trade_start": TRADE_START, "rebalance": 32, "validation": 40},
        "agents": {"a2c": {"total_timesteps": 150}, "buy_and_hold": {}},
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small canonical file, and a copy whose every bar from trade_start on is garbage."""
    from data_processors.sources import get_source

    d = tmp_path_factory.mktemp("tune_data")
    df = get_source("synthetic").download(3, "2018-01-01", "2019-10-01", seed=11)
    clean_path = d / "bars.csv"
    df.to_csv(clean_path, index=False)
    bad = df.copy()
    after = bad["time"] >= pd.Timestamp(TRADE_START)
    assert after.sum() > 100
    rng = np.random.default_rng(0)
    cols = ["open", "high", "low", "close", "volume"]
    bad.loc[after, cols] = rng.uniform(-1e6, 1e6, size=(int(after.sum()), len(cols)))
    bad.loc[after & (rng.random(len(bad)) < 0.3), ["close", "open"]] = np.nan
    bad_path = d / "bars_perturbed.csv"
    bad.to_csv(bad_path, index=False)
    return clean_path, bad_path


def _strip(result) -> dict:
    d = result.to_dict()
    d.pop("seconds")
    return d


def test_tuning_never_reads_trade_bars(optuna, files, monkeypatch):
    """Garbage from trade_start on changes nothing; every env built ends before trade_start."""
    import meta

    clean_path, bad_path = files
    built: list[tuple[pd.Timestamp, int]] = []
    real = meta.make_env

    def spy(arrays, *args, **kw):
        built.append((pd.Timestamp(arrays.times[-1]), len(arrays.times)))
        return real(arrays, *args, **kw)

    monkeypatch.setattr(meta, "make_env", spy)
    a = tune_agent(_config(clean_path), "a2c", trials=3, seed=0)
    n_clean = len(built)
    b = tune_agent(_config(bad_path), "a2c", trials=3, seed=0)

    # bitwise identical: trials, sampled params, validation Sharpes, best, ranges, data hash
    assert _strip(a) == _strip(b)
    assert [t["value"] for t in a.trials] == [t["value"] for t in b.trials]
    assert all(t["state"] == "complete" for t in a.trials)
    assert len({json.dumps(t["params"], sort_keys=True) for t in a.trials}) == 3  # really searched
    assert a.best_value == max(t["value"] for t in a.trials)

    # the spy: a train and a validation env per trial, none reaching trade_start ...
    assert n_clean >= 6 and len(built) == 2 * n_clean
    assert all(last < pd.Timestamp(TRADE_START) for last, _ in built)
    # ... and the validation env does reach the last bar before it (the spy saw the real ranges)
    assert max(last for last, _ in built) == pd.Timestamp(a.validation["end"])
    assert pd.Timestamp(a.validation["end"]) == pd.Timestamp("2019-06-28")

    # the perturbation is real: the full pipeline sees it (or rejects the garbage outright)
    from benchmarks.run import build_arrays

    full, _ = build_arrays(_config(clean_path))
    try:
        full_bad, _ = build_arrays(_config(bad_path))
    except FinMetaError:
        pass
    else:
        k = int(pd.DatetimeIndex(full.times).searchsorted(pd.Timestamp(TRADE_START)))
        assert not np.array_equal(full.close[k:], full_bad.close[k:], equal_nan=True)


def test_pretrade_window_is_the_loops_first_window(optuna, files):
    from benchmarks.run import build_arrays
    from benchmarks.windows import make_windows

    cfg = _config(files[0])
    full, _ = build_arrays(cfg)
    pre, _ = build_pretrade_arrays(cfg)
    w_full = make_windows(full.times, **cfg["windows"])[0]
    w_pre = pretrade_window(pre.times, cfg["windows"])
    assert (w_pre.train, w_pre.validation) == (w_full.train, w_full.validation)
    assert len(pre.times) == w_full.trade[0]
    # same bars, same values up to trade_start (indicators are causal)
    np.testing.assert_array_equal(pre.close, full.close[: len(pre.times)])
    # bad input: one clear error each
    with pytest.raises(ConfigError, match="at or after trade_start"):
        pretrade_window(full.times, cfg["windows"])
    with pytest.raises(TuneError, match="validation"):
        pretrade_window(pre.times, {**cfg["windows"], "validation": 0})
    with pytest.raises(ConfigError, match="agent must be one of"):
        tune_agent(cfg, "buy_and_hold", trials=1, arrays=pre)
    with pytest.raises(ConfigError, match="search space 'learning_rate'"):
        tune_agent(cfg, "a2c", trials=1, arrays=pre, search_space={"learning_rate": {"type": "float"}})


def test_tuned_file_roundtrip_and_apply(optuna, files, tmp_path):
    cfg_path = tmp_path / "mycfg.yaml"
    cfg = _config(files[0])
    cfg_path.write_text(yaml.safe_dump(cfg))
    from benchmarks.run import load_config

    loaded = load_config(cfg_path)
    res = tune_agent(loaded, "a2c", trials=2, seed=3, timesteps=100,
                     search_space={"learning_rate": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
                                   "n_steps": {"type": "categorical", "choices": [5, 10]}})
    assert set(res.best_params) == {"learning_rate", "n_steps"} and res.timesteps == 100
    p = write_tuned(res, tuned_path(loaded, "a2c"))
    assert p == tmp_path / "mycfg.best_a2c.yaml"
    assert load_tuned(loaded, "a2c") == res.best_params  # floats round-trip exactly
    assert load_tuned(loaded, "ppo") is None

    applied = apply_tuned({**loaded, "use_tuned": True})
    assert applied["agents"]["a2c"] == {"total_timesteps": 150, **res.best_params}
    assert applied["agents"]["buy_and_hold"] == {}
    assert "ppo" not in applied["agents"]  # never adds an agent to the run
    assert applied["tuned"]["a2c"]["file"] == str(p)
    assert loaded["agents"]["a2c"] == {"total_timesteps": 150}  # the input is not modified
    # an explicit mapping, relative to the config's folder
    (tmp_path / "other.yaml").write_text(p.read_text())
    assert apply_tuned({**loaded, "use_tuned": {"a2c": "other.yaml"}})["agents"]["a2c"]["n_steps"] == \
        res.best_params["n_steps"]
    with pytest.raises(ConfigError, match="no tuned parameters for 'a2c'"):
        apply_tuned({**loaded, "agents": {"a2c": {}}, "_path": str(tmp_path / "x.yaml")}, required=True)
    with pytest.raises(ConfigError, match="holds parameters for 'a2c'"):
        load_tuned(loaded, "ppo", path=p)


def test_cli_tune_writes_next_to_the_config(optuna, files, tmp_path):
    import typer
    from typer.testing import CliRunner

    from benchmarks.cli_tune import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        pass

    register(app)
    cfg_path = tmp_path / "clicfg.yaml"
    cfg_path.write_text(yaml.safe_dump(_config(files[0])))
    r = CliRunner().invoke(app, ["tune", str(cfg_path), "--agent", "a2c", "--trials", "2", "--timesteps", "100",
                                 "--seed", "1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    written = tmp_path / "clicfg.best_a2c.yaml"
    assert out["written"] == str(written) and written.is_file()
    doc = yaml.safe_load(written.read_text())
    assert doc["params"] == out["best_params"] and len(doc["trials"]) == 2
    assert doc["validation"]["end"].startswith("2019-06-28")


def test_ray_backend_matches_optuna_backend(optuna, files, tmp_path, monkeypatch):
    """The first trials of TPE are seeded random draws: batched on Ray they are the same trials."""
    pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    cfg = {**_config(files[0]), "ray": {"node_ip_address": "127.0.0.2"}}
    pre, _ = build_pretrade_arrays(cfg)
    a = tune_agent(cfg, "a2c", trials=2, seed=5, timesteps=100, arrays=pre)
    b = tune_agent(cfg, "a2c", trials=2, seed=5, timesteps=100, arrays=pre, backend="ray", parallel=2)
    assert b.backend == "ray" and b.extra == {"parallel": 2}
    assert a.trials == b.trials
    assert (a.best_params, a.best_value) == (b.best_params, b.best_value)


# --------------------------------------------------------------------------------------------
# the benchmark configs (benchmarks/configs/*.yaml)
# --------------------------------------------------------------------------------------------
def _data_files(cfg: dict) -> list[dict]:
    """Every {file, format, tickers/tic} a config reads (data, index rows, VIX)."""
    data = cfg.get("data") or {}
    out = []
    if "file" in data:
        out.append({"file": data["file"], "format": data.get("format", "canonical"), "tickers": data.get("tickers")})
    for f in data.get("files") or []:
        out.append({"file": f["file"], "format": f.get("format", data.get("format", "canonical")), "union": True})
    for row in [cfg.get("index")] + list(cfg.get("more_indices") or []):
        if isinstance(row, dict) and "file" in row:
            out.append({"file": row["file"], "format": row.get("format", "canonical"), "tickers": [row["tic"]]})
    vix = (cfg.get("features") or {}).get("vix")
    if isinstance(vix, dict) and "file" in vix:
        out.append({"file": vix["file"], "format": vix.get("format", "canonical"), "tickers": vix.get("tickers")})
    return out


def test_benchmark_configs_parse_and_reference_existing_files(shared_data, monkeypatch):
    import os
    from pathlib import Path

    from agents import agent_names
    from benchmarks.run import CONFIG_DIR, load_config
    from benchmarks.windows import make_windows
    from data_processors.sources import get_source
    from meta.config import EnvConfig

    monkeypatch.setenv("FINMETA_DATA_DIR", str(shared_data))
    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"quickstart", "icaif2020_dow30", "finrl2023_dow30", "sse50_ashare", "crypto_btc_eth"} <= set(names)
    from benchmarks.loop import TURBULENCE_RULE_KEYS

    known_agents = set(agent_names()) | {"ensemble", "index_gated"}  # index_gated: an index row, not an agent
    frames: dict[tuple[str, str], pd.DataFrame] = {}
    for name in names:
        cfg = load_config(name)
        for key in ("data", "env", "windows", "agents"):
            assert isinstance(cfg.get(key), dict), f"{name}: no {key} section"
        assert set(cfg["agents"]) <= known_agents, f"{name}: unknown agents {set(cfg['agents']) - known_agents}"
        env = {k: v for k, v in cfg["env"].items() if k not in ("family", *TURBULENCE_RULE_KEYS)}
        EnvConfig.for_family(cfg["env"].get("family", "stock_trading"), **env)  # unknown/bad keys raise
        assert set(cfg.get("tune") or {}) <= {"trials", "timesteps", "parallel", "validation", "search_space"}
        members = (cfg["agents"].get("ensemble") or {}).get("members", [])
        assert set(members) <= set(cfg["agents"]), f"{name}: ensemble members must be listed agents"
        universe: set[str] = set()
        for k, ref in enumerate(_data_files(cfg)):
            path = Path(os.path.expandvars(ref["file"]))
            assert path.is_file(), f"{name}: {ref['file']} -> {path} does not exist"
            key = (str(path), ref["format"])
            if key not in frames:
                frames[key] = get_source(ref["format"]).read_file(str(path))
            df = frames[key]
            if ref.get("union"):
                universe |= set(df["tic"].unique())
            elif ref.get("tickers"):
                missing = set(ref["tickers"]) - set(df["tic"].unique())
                assert not missing, f"{name}: {sorted(missing)} not in {path.name}"
            if k == 0 or ref.get("union"):  # the market data itself (not an index row)
                times = pd.DatetimeIndex(df["time"])
                if times.tz is not None:
                    times = times.tz_convert("UTC").tz_localize(None)
                last = times.max()
                assert pd.Timestamp(cfg["windows"]["trade_start"]) < last, f"{name}: trade_start after the data"
        if universe:  # several files: the tickers must be in their union
            missing = set(cfg["data"]["tickers"]) - universe
            assert not missing, f"{name}: {sorted(missing)} in none of data.files"

    # the ICAIF config reproduces the paper's 18 quarterly windows on the real calendar
    icaif = load_config("icaif2020_dow30")
    dji = frames[(str(shared_data / "us_equities/indices_dji_vix_daily.csv.gz"), "yahoo")]
    t = pd.DatetimeIndex(sorted(dji.loc[(dji["tic"] == "^DJI") & (dji["time"] >= "2009-01-01")
                                        & (dji["time"] < icaif["data"]["end"]), "time"].unique()))
    ws = make_windows(t.values, **icaif["windows"])
    assert len(ws) == 18
    assert t[ws[0].trade[0]] == pd.Timestamp("2016-01-04") and t[ws[-1].trade[1] - 1] == pd.Timestamp("2020-05-08")
    assert len(icaif["data"]["tickers"]) == 28 and not {"DD", "GE"} & set(icaif["data"]["tickers"])
    assert load_config("crypto_btc_eth")["periods_per_year"] == 8760


@pytest.mark.parametrize("name", ["icaif2020_dow30", "finrl2023_dow30", "sse50_ashare", "crypto_btc_eth"])
def test_benchmark_config_pretrade_data_is_the_files_and_usable(name, shared_data, monkeypatch):
    """The tuner's data for each real config: the vendor file's prices, finite features from train_start."""
    import os

    from benchmarks.run import load_config
    from data_processors.sources import get_source

    monkeypatch.setenv("FINMETA_DATA_DIR", str(shared_data))
    cfg = load_config(name)
    pre, _ = build_pretrade_arrays(cfg)
    wcfg = dict(cfg["windows"])
    if "validation" in (cfg.get("tune") or {}):
        wcfg["validation"] = cfg["tune"]["validation"]
    w = pretrade_window(pre.times, wcfg)
    lo = w.train[0]
    assert np.isfinite(pre.features[lo:]).all(), f"{name}: non-finite features after train_start"
    assert pd.Timestamp(pre.times[-1]) < pd.Timestamp(cfg["windows"]["trade_start"])
    if cfg["data"].get("tickers"):
        assert set(pre.tickers) == set(cfg["data"]["tickers"]), f"{name}: universe differs from data.tickers"
    # the prices are the file's (not, e.g., a synthetic market under the same ticker names)
    refs = cfg["data"].get("files") or [{"file": cfg["data"]["file"], "format": cfg["data"]["format"]}]
    raw = pd.concat([get_source(r["format"]).read_file(os.path.expandvars(r["file"])) for r in refs])
    t = pd.Timestamp(pre.times[lo])
    times = raw["time"].dt.tz_convert("UTC").dt.tz_localize(None) if raw["time"].dt.tz is not None else raw["time"]
    tic = pre.tickers[0]
    want = raw.loc[(raw["tic"] == tic) & (times == t), "close"]
    assert len(want) == 1, f"{name}: {tic} has no bar at {t} in the file"
    assert float(pre.close[lo, 0]) == pytest.approx(float(want.iloc[0]), rel=1e-6), \
        f"{name}: {tic} close at {t} is not the file's"


def test_load_frame_files_concatenates_and_rejects_overlaps(files, tmp_path):
    from benchmarks.tune import load_frame_files

    df = pd.read_csv(files[0])
    a, b = df[df["tic"] != df["tic"].iloc[0]], df[df["tic"] == df["tic"].iloc[0]]
    pa, pb = tmp_path / "a.csv", tmp_path / "b.csv"
    a.to_csv(pa, index=False)
    b.to_csv(pb, index=False)
    out, cal = load_frame_files({"files": [{"file": str(pa), "format": "canonical"}, str(pb)],
                                 "format": "canonical", "end": TRADE_START})
    assert cal == "XNYS" and set(out["tic"]) == set(df["tic"])
    assert len(out) == int((pd.to_datetime(df["time"]) < TRADE_START).sum())
    with pytest.raises(ConfigError, match="is in both .*a.csv and .*a.csv"):
        load_frame_files({"files": [str(pa), str(pa)], "format": "canonical"})
    with pytest.raises(ConfigError, match="not in any of data.files: \\['NOPE'\\]"):
        load_frame_files({"files": [str(pa)], "tickers": ["NOPE"]})


def test_torch_backend_agents_tune_in_their_own_units(optuna, files, tmp_path):
    """An agent with ``backend: torch`` is tuned through the same loop code, on the torch backend's
    default space (n_steps per sub-env, large minibatches), and its tuned file applies."""
    from benchmarks.run import load_config
    from benchmarks.spec import validate_config
    from benchmarks.tune import DEFAULT_SEARCH_SPACES, DEFAULT_SEARCH_SPACES_TORCH, default_search_space

    cfg = _config(files[0])
    cfg["agents"] = {"ppo": {"backend": "torch", "num_envs": 4, "total_timesteps": 256}, "a2c": {}}
    spec = validate_config(cfg, "tiny")
    assert default_search_space(spec, "ppo") == DEFAULT_SEARCH_SPACES_TORCH["ppo"]
    assert default_search_space(spec, "a2c") == DEFAULT_SEARCH_SPACES["a2c"]
    path = tmp_path / "torchcfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    loaded = load_config(path)
    res = tune_agent(loaded, "ppo", trials=2, seed=1, timesteps=256)  # the torch default space
    assert res.search_space == DEFAULT_SEARCH_SPACES_TORCH["ppo"]
    assert all(t["state"] == "complete" and t["value"] is not None for t in res.trials), res.trials
    assert set(res.best_params) == set(DEFAULT_SEARCH_SPACES_TORCH["ppo"])
    write_tuned(res, tuned_path(loaded, "ppo"))
    applied = apply_tuned({**loaded, "use_tuned": True})
    assert applied["agents"]["ppo"] == {"backend": "torch", "num_envs": 4, "total_timesteps": 256, **res.best_params}
    validate_config(applied, "tiny")  # the tuned keys are the torch agent's own

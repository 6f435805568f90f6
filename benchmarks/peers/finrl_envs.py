"""FinRL's stock-trading envs as peers of the FinMeta env layer (parity tests and throughput).

FinRL 0.3.7 is installed with ``pip install --no-deps finrl==0.3.7`` (see ``install_peers.sh``):
importing the ``finrl`` *package* fails (its ``__init__`` pulls in alpaca, wrds, ... at old pins), so the
two env modules are loaded **by file path** without executing ``finrl/__init__.py``:

* ``finrl/meta/env_stock_trading/env_stocktrading.py`` -- the pandas ``StockTradingEnv`` (FinRL's
  tutorials; the parity reference of ``fill="close"``);
* ``finrl/meta/env_stock_trading/env_stocktrading_np.py`` -- the numpy ``StockTradingEnv`` (FinRL's
  ElegantRL / RLlib path).

Their only imports besides numpy/pandas/gymnasium/matplotlib are ``stable_baselines3``'s
``DummyVecEnv`` (used by ``get_sb_env`` only). When stable-baselines3 is not already imported it is
replaced by a stub *while the module executes* (``sys.modules`` is restored afterwards), which keeps
torch out of the import and leaves the real package untouched for everyone else.

The module also builds the shared fixture both sides run on: a Dow 30 panel with 8 indicators and a
turbulence index (:func:`dow30_arrays`), and converts it to FinRL's data layouts
(:func:`finrl_frame`, :func:`finrl_np_config`).
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from data_processors.arrays import MarketArrays, to_arrays
from data_processors.schema import DEFAULT_INDICATORS
from finmeta.errors import ConfigError, DataValidationError

from . import FinRLNotInstalled, exec_finrl_file, finrl_root

__all__ = [
    "FinRLNotInstalled",
    "finrl_root",
    "load_finrl_module",
    "finrl_pandas_env_class",
    "finrl_numpy_env_class",
    "dow30_frame",
    "dow30_arrays",
    "add_indicators",
    "turbulence_index",
    "finrl_frame",
    "make_finrl_pandas_env",
    "make_finrl_numpy_env",
    "finrl_np_config",
    "run_finrl_pandas",
    "run_finrl_numpy",
    "seeded_actions",
]

DOW30_FILE = "us_equities/dow30_daily.csv.gz"
ENV_DIR = ("meta", "env_stock_trading")
PANDAS_ENV_FILE = "env_stocktrading.py"
NUMPY_ENV_FILE = "env_stocktrading_np.py"


def _sb3_stub() -> dict[str, types.ModuleType]:
    """Minimal ``stable_baselines3.common.vec_env`` exposing ``DummyVecEnv`` (never called here)."""

    class DummyVecEnv:  # pragma: no cover - only FinRL's get_sb_env() would call it
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("stable-baselines3 stub: DummyVecEnv is not available in peer mode")

    root = types.ModuleType("stable_baselines3")
    common = types.ModuleType("stable_baselines3.common")
    vec_env = types.ModuleType("stable_baselines3.common.vec_env")
    vec_env.DummyVecEnv = DummyVecEnv
    root.common = common
    common.vec_env = vec_env
    return {"stable_baselines3": root, "stable_baselines3.common": common,
            "stable_baselines3.common.vec_env": vec_env}


_MODULES: dict[str, types.ModuleType] = {}


def load_finrl_module(filename: str) -> types.ModuleType:
    """Execute ``finrl/meta/env_stock_trading/<filename>`` as a private module (cached).

    The ``finrl`` package itself is never imported. ``stable_baselines3`` is stubbed only while
    the file executes and only when it is not imported already.
    """
    if filename in _MODULES:
        return _MODULES[filename]
    path = finrl_root().joinpath(*ENV_DIR, filename)
    stubs = {} if "stable_baselines3.common.vec_env" in sys.modules else _sb3_stub()
    module = exec_finrl_file("finmeta_peer_finrl_" + path.stem, path, stubs)
    _MODULES[filename] = module
    return module


def finrl_pandas_env_class() -> type:
    """FinRL's pandas ``StockTradingEnv`` class (``env_stocktrading.py``)."""
    return load_finrl_module(PANDAS_ENV_FILE).StockTradingEnv


def finrl_numpy_env_class() -> type:
    """FinRL's numpy ``StockTradingEnv`` class (``env_stocktrading_np.py``)."""
    return load_finrl_module(NUMPY_ENV_FILE).StockTradingEnv


# --------------------------------------------------------------------------------------------------
# the shared data fixture: Dow 30 panel + 8 indicators + turbulence
# --------------------------------------------------------------------------------------------------

def dow30_frame(data_dir: str | Path) -> pd.DataFrame:
    """The raw Dow 30 daily long frame (``time, tic, open, high, low, close, volume``)."""
    path = Path(data_dir) / DOW30_FILE
    if not path.is_file():
        raise DataValidationError(f"{path}: Dow 30 file not found (is FINMETA_DATA_DIR right?)")
    df = pd.read_csv(path, parse_dates=["date"])
    missing = {"date", "tic", "open", "high", "low", "close", "volume"} - set(df.columns)
    if missing:
        raise DataValidationError(f"{path}: missing columns {sorted(missing)}")
    df = df.rename(columns={"date": "time"})[["time", "tic", "open", "high", "low", "close", "volume"]]
    df["tic"] = df["tic"].astype(str)
    return df.sort_values(["time", "tic"], kind="stable").reset_index(drop=True)


def _wilder(x: pd.DataFrame, n: int) -> pd.DataFrame:
    return x.ewm(alpha=1.0 / n, adjust=False).mean()


def add_indicators(close: pd.DataFrame, high: pd.DataFrame, low: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """FinRL's default indicator set, computed on wide (T, N) frames with pandas.

    Returns a dict ``name -> (T, N) frame`` for the names in ``DEFAULT_INDICATORS`` (``macd``,
    ``boll_ub``, ``boll_lb``, ``rsi_30``, ``cci_30``, ``dx_30``, ``close_30_sma``, ``close_60_sma``)
    with the usual definitions (EMA 12/26 MACD, 20-day 2-sigma Bollinger bands, Wilder RSI/DX over
    30 days, CCI over 30 days). Each value at row t uses rows <= t only. Leading rows are NaN.
    """
    out: dict[str, pd.DataFrame] = {}
    out["macd"] = close.ewm(span=12, adjust=False).mean() - close.ewm(span=26, adjust=False).mean()
    mid, sd = close.rolling(20).mean(), close.rolling(20).std()
    out["boll_ub"], out["boll_lb"] = mid + 2 * sd, mid - 2 * sd
    diff = close.diff()
    up, down = _wilder(diff.clip(lower=0), 30), _wilder((-diff).clip(lower=0), 30)
    out["rsi_30"] = 100 - 100 / (1 + up / down.replace(0, np.nan))
    tp = (high + low + close) / 3
    tp_sma = tp.rolling(30).mean()
    mad = tp.rolling(30).apply(lambda a: np.abs(a - a.mean()).mean(), raw=True)
    out["cci_30"] = (tp - tp_sma) / (0.015 * mad)
    up_move, down_move = high.diff(), -low.diff()
    pdm = up_move.where((up_move > down_move) & (up_move > 0), 0.0)
    mdm = down_move.where((down_move > up_move) & (down_move > 0), 0.0)
    prev_close = close.shift(1)
    tr = pd.concat([high - low, (high - prev_close).abs(), (low - prev_close).abs()]).groupby(level=0).max()
    atr = _wilder(tr, 30)
    pdi, mdi = 100 * _wilder(pdm, 30) / atr, 100 * _wilder(mdm, 30) / atr
    out["dx_30"] = 100 * (pdi - mdi).abs() / (pdi + mdi)
    out["close_30_sma"] = close.rolling(30).mean()
    out["close_60_sma"] = close.rolling(60).mean()
    return {k: out[k] for k in DEFAULT_INDICATORS}


def turbulence_index(close: pd.DataFrame, lookback: int = 252) -> pd.Series:
    """FinRL's turbulence: Mahalanobis distance of day t's returns from the previous ``lookback`` days.

    ``turb_t = (r_t - mu) pinv(Sigma) (r_t - mu)'`` with ``mu, Sigma`` the mean and covariance of the
    (N,) daily returns over rows ``t - lookback .. t - 1``; 0 for the first ``lookback + 1`` rows.
    Args: close (T, N). Returns: (T,) series on close's index.
    """
    r = close.pct_change().to_numpy()
    out = np.zeros(len(r))
    for t in range(lookback + 1, len(r)):
        hist = r[t - lookback:t]
        mu = hist.mean(axis=0)
        cov = np.cov(hist, rowvar=False)
        d = r[t] - mu
        out[t] = float(d @ np.linalg.pinv(cov) @ d)
    return pd.Series(out, index=close.index, name="turbulence")


def dow30_arrays(data_dir: str | Path, start: str, end: str, *, warmup_days: int = 400) -> MarketArrays:
    """Dow 30 ``MarketArrays`` for ``start <= time < end`` with the 8 default indicators + turbulence.

    Indicators and turbulence are computed on ``warmup_days`` calendar-extra history before
    ``start`` (so the window has no NaN); only tickers with a bar on every day of that whole span
    are kept (e.g. 29 for 2019-2020: DOW starts 2019-03-20).
    Returns arrays with close/open/... (T, N), features (T, N, 8), turbulence (T,).
    """
    df = dow30_frame(data_dir)
    t0 = pd.Timestamp(start) - pd.Timedelta(days=warmup_days)
    df = df[(df["time"] >= t0) & (df["time"] < pd.Timestamp(end))]
    if df.empty:
        raise DataValidationError(f"{DOW30_FILE}: no rows in {t0.date()}..{end}")
    wide = {c: df.pivot(index="time", columns="tic", values=c) for c in ("open", "high", "low", "close", "volume")}
    full = wide["close"].columns[wide["close"].notna().all()]
    if len(full) == 0:
        raise DataValidationError(f"{DOW30_FILE}: no ticker has a bar on every day of {t0.date()}..{end}")
    wide = {c: w[full] for c, w in wide.items()}
    ind = add_indicators(wide["close"], wide["high"], wide["low"])
    turb = turbulence_index(wide["close"])
    keep = wide["close"].index >= pd.Timestamp(start)
    long = {c: w[keep].stack() for c, w in wide.items()}
    long.update({k: v[keep].stack() for k, v in ind.items()})
    frame = pd.DataFrame(long)
    frame.index.names = ["time", "tic"]
    frame = frame.reset_index()
    frame["turbulence"] = frame["time"].map(turb)
    bad = frame[list(DEFAULT_INDICATORS)].isna().any(axis=1)
    if bad.any():
        row = frame[bad].iloc[0]
        raise DataValidationError(
            f"{DOW30_FILE}: indicator NaN at {row['time'].date()} {row['tic']}: warm-up too short")
    return to_arrays(frame, list(DEFAULT_INDICATORS),
                     meta={"source": DOW30_FILE, "start": start, "end": end, "peer": "finrl_envs"})


# --------------------------------------------------------------------------------------------------
# FinRL's data layouts
# --------------------------------------------------------------------------------------------------

def finrl_frame(arrays: MarketArrays) -> pd.DataFrame:
    """FinRL's pandas-env frame: index = day number (repeated N times), columns
    ``date, tic, open, high, low, close, volume, <features>, turbulence``, sorted by (date, tic).

    Values are the float32 arrays widened to float64, so both envs see bit-identical prices.
    """
    T, N = arrays.close.shape
    cols: dict[str, Any] = {
        "date": np.repeat(pd.DatetimeIndex(arrays.times).strftime("%Y-%m-%d").to_numpy(), N),
        "tic": np.tile(np.asarray(arrays.tickers, dtype=object), T),
    }
    for c in ("open", "high", "low", "close", "volume"):
        cols[c] = getattr(arrays, c).astype(np.float64).reshape(-1)
    for k, name in enumerate(arrays.feature_names):
        cols[name] = arrays.features[:, :, k].astype(np.float64).reshape(-1)
    turb = arrays.turbulence if arrays.turbulence is not None else np.zeros(T, np.float32)
    cols["turbulence"] = np.repeat(turb.astype(np.float64), N)
    return pd.DataFrame(cols, index=np.repeat(np.arange(T), N))


def make_finrl_pandas_env(
    arrays: MarketArrays,
    *,
    hmax: int = 100,
    initial_amount: float = 1_000_000,
    buy_cost_pct: float = 0.001,
    sell_cost_pct: float = 0.001,
    reward_scaling: float = 1e-4,
    turbulence_threshold: float | None = None,
    frame: pd.DataFrame | None = None,
):
    """FinRL's pandas ``StockTradingEnv`` on ``arrays`` (state = [cash, close N, shares N, tech K*N])."""
    N, K = arrays.num_assets, len(arrays.feature_names)
    env_cls = finrl_pandas_env_class()
    return env_cls(
        df=finrl_frame(arrays) if frame is None else frame,
        stock_dim=N,
        hmax=hmax,
        initial_amount=initial_amount,
        num_stock_shares=[0] * N,
        buy_cost_pct=[buy_cost_pct] * N,
        sell_cost_pct=[sell_cost_pct] * N,
        reward_scaling=reward_scaling,
        state_space=1 + 2 * N + K * N,
        action_space=N,
        tech_indicator_list=list(arrays.feature_names),
        turbulence_threshold=turbulence_threshold,
        print_verbosity=10**9,
    )


def finrl_np_config(arrays: MarketArrays, *, shift: bool = False, if_train: bool = False) -> dict:
    """FinRL-numpy-env config: ``price_array (T, N)``, ``tech_array (T, N*K)``, ``turbulence_array (T,)``.

    FinRL's numpy env fills the action taken at day ``d`` at ``price_array[d + 1]``. With
    ``shift=True`` the arrays get a copy of row 0 prepended, so that action k fills at ``close[k]``
    -- the same-bar close of FinMeta's ``fill="close"`` (used by the parity test).
    """
    price = arrays.close
    tech = arrays.features.reshape(arrays.num_times, -1)
    turb = arrays.turbulence if arrays.turbulence is not None else np.zeros(arrays.num_times, np.float32)
    if shift:
        price = np.concatenate([price[:1], price])
        tech = np.concatenate([tech[:1], tech])
        turb = np.concatenate([turb[:1], turb])
    return {"price_array": np.ascontiguousarray(price), "tech_array": np.ascontiguousarray(tech),
            "turbulence_array": np.asarray(turb, dtype=np.float64), "if_train": if_train}


def make_finrl_numpy_env(
    arrays: MarketArrays,
    *,
    shift: bool = False,
    hmax: int = 100,
    initial_capital: float = 1_000_000,
    buy_cost_pct: float = 0.001,
    sell_cost_pct: float = 0.001,
    reward_scaling: float = 1e-4,
    turbulence_threshold: float | None = None,
    min_stock_rate: float = 0.0,
):
    """FinRL's numpy ``StockTradingEnv`` on ``arrays`` (``min_stock_rate=0``: every nonzero order trades)."""
    if turbulence_threshold is not None and turbulence_threshold <= 0:
        raise ConfigError(f"turbulence_threshold must be > 0 for FinRL's numpy env, got {turbulence_threshold}")
    env_cls = finrl_numpy_env_class()
    return env_cls(
        finrl_np_config(arrays, shift=shift),
        max_stock=hmax,
        initial_capital=initial_capital,
        buy_cost_pct=buy_cost_pct,
        sell_cost_pct=sell_cost_pct,
        reward_scaling=reward_scaling,
        turbulence_thresh=1e30 if turbulence_threshold is None else turbulence_threshold,
        min_stock_rate=min_stock_rate,
    )


def run_finrl_pandas(env, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Run FinRL's pandas env from reset over ``actions`` ((S, N) in [-1, 1]).

    Returns ``account_value (S+1,)`` (FinRL's ``asset_memory``: initial, then after each step),
    ``reward (S,)`` (scaled), ``cash (S,)``, ``holdings (S, N)`` after each step, ``trades (S, N)``
    (FinRL's executed, signed share counts), ``cost_total`` (final), ``states (S, 1 + 2N + KN)`` (the
    observation after each step). Stops at FinRL's terminal step
    (which trades nothing).
    """
    env.reset()
    N = env.stock_dim
    rewards, cash, hold, states = [], [], [], []
    last_day = len(env.df.index.unique()) - 1
    for a in actions:
        if env.day >= last_day:
            break
        state, r, term, _, _ = env.step(np.asarray(a))
        # copy now: FinRL mutates the returned list in place on the next step (state_memory aliases it)
        states.append(np.array(state, dtype=np.float64))
        rewards.append(r)
        cash.append(env.state[0])
        hold.append(np.asarray(env.state[N + 1:2 * N + 1], dtype=np.float64))
    return {
        "account_value": np.asarray(env.asset_memory, dtype=np.float64),
        "reward": np.asarray(rewards, dtype=np.float64),
        "cash": np.asarray(cash, dtype=np.float64),
        "holdings": np.asarray(hold),
        "trades": np.asarray(env.actions_memory, dtype=np.float64),
        "cost_total": np.float64(env.cost),
        "states": np.asarray(states, dtype=np.float64),
    }


def run_finrl_numpy(env, actions: np.ndarray) -> dict[str, np.ndarray]:
    """Run FinRL's numpy env from reset over ``actions`` ((S, N)); cash/holdings/total after each step."""
    env.reset()
    cash, hold, total, rewards = [], [], [], []
    for a in actions:
        _, r, done, _, _ = env.step(np.asarray(a, dtype=np.float32))
        cash.append(float(env.amount))
        hold.append(env.stocks.astype(np.float64).copy())
        total.append(float(env.total_asset))
        rewards.append(float(r))
        if done:
            break
    return {"cash": np.asarray(cash), "holdings": np.asarray(hold), "total_asset": np.asarray(total),
            "reward": np.asarray(rewards)}


def seeded_actions(num_steps: int, num_assets: int, seed: int = 0, strong: float = 0.25,
                   hmax: int = 100) -> np.ndarray:
    """(S, N) float32 actions in [-1, 1] for parity runs, deterministic in ``seed``.

    Each row's order sizes ``int(a * hmax)`` are *distinct* integers in [-hmax, hmax] (FinRL buys
    the largest order first and breaks ties with numpy's unstable argsort, which is not reproducible
    across machines -- see docs/parity.md), and every ``a * hmax`` lies 0.05..0.95 away from an
    integer, so float32 and float64 truncation agree. A share ``strong`` of the rows are all-in
    buys or sells (|order| in 0.7..1 x hmax for every asset) that hit the cash / holdings limits.
    Needs ``num_assets <= hmax // 3``.
    """
    if num_assets > hmax // 3:
        raise ConfigError(f"seeded_actions: num_assets={num_assets} needs hmax >= {3 * num_assets}")
    rng = np.random.default_rng(seed)
    a = np.empty((num_steps, num_assets))
    lo = int(0.7 * hmax)
    for s in range(num_steps):
        if rng.random() < strong:
            k = rng.choice(np.arange(lo, hmax + 1), size=num_assets, replace=False)
            k = k * (1 if rng.random() < 0.5 else -1)
        else:
            k = rng.choice(np.arange(-hmax, hmax + 1), size=num_assets, replace=False)
        u = rng.uniform(0.05, 0.95, size=num_assets)
        a[s] = (k + np.where(k < 0, -u, u)) / hmax
    return np.clip(a, -1.0, 1.0).astype(np.float32)

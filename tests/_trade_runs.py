"""Small run directories for the trade tests (one per family, built once per test session)."""

from __future__ import annotations

import copy
from pathlib import Path

BASE = {
    "data": {"source": "synthetic", "tickers": 4, "start": "2016-01-01", "end": "2019-03-01", "seed": 3},
    "features": {"engine": "stockstats", "indicators": ["macd", "rsi_30"], "turbulence": True},
    "windows": {"train_start": "2016-01-01", "trade_start": "2018-07-02", "trade_end": "2019-01-01",
                "rebalance": 63, "validation": 42},
    "seeds": [0],
    "periods_per_year": 252,
}


def config(family: str) -> dict:
    cfg = copy.deepcopy(BASE)
    cfg["name"] = f"trade_{family}"
    if family == "stock_trading":
        cfg["env"] = {"family": "stock_trading", "initial_cash": 100_000, "hmax": 50, "turbulence_quantile": 0.99,
                      "normalize_obs": True}
        cfg["agents"] = {"a2c": {"total_timesteps": 200, "n_steps": 5}}  # deterministic actions
    else:
        # lots of 100, T+1, minimum fee, stamp duty; +-1% price limits so that they bind on many bars;
        # 5 bps fixed slippage; sampled actions (the ICAIF code's way), seeded per window as in the backtest
        cfg["env"] = {"family": "ashare", "initial_cash": 100_000, "hmax": 1000, "limit_pct": 0.01,
                      "slippage": "fixed", "slippage_bps": 5, "turbulence_quantile": 0.99, "normalize_obs": True}
        # and the ICAIF ensemble over a2c and ppo: a member per window, by validation Sharpe
        cfg["agents"] = {"a2c": {"total_timesteps": 200, "n_steps": 5, "deterministic": False},
                         "ppo": {"total_timesteps": 128, "n_steps": 64, "batch_size": 64, "deterministic": False},
                         "ensemble": {"members": ["a2c", "ppo"]}}
    return cfg


_RUNS: dict[str, tuple[Path, dict, object]] = {}


def trade_run(family: str, root: Path):
    """(run directory, config, arrays) of a finished bench run of ``family`` (cached per session)."""
    if family not in _RUNS:
        from benchmarks.dataset import build_arrays
        from benchmarks.run import run_benchmark

        cfg = config(family)
        run_dir = root / f"run_{family}"
        run_benchmark(copy.deepcopy(cfg), out=run_dir, tearsheets=False, progress=False)
        arrays, _ = build_arrays(copy.deepcopy(cfg))
        _RUNS[family] = (run_dir, cfg, arrays)
    return _RUNS[family]

"""Performance figures of account-value paths (pyfolio / empyrical conventions).

The contract other layers build on (all figures are plain ``float``; fractions, not percent):

==================== ============================================================================
name                 definition on a value path ``v`` of T values (``r``: the T-1 simple returns)
==================== ============================================================================
cumulative_return    ``v[-1] / v[0] - 1``
annual_return        CAGR over the number of returns: ``(v[-1] / v[0]) ** (P / (T-1)) - 1``
annual_volatility    ``std(r, ddof=1) * sqrt(P)``
sharpe               ``mean(r) / std(r, ddof=1) * sqrt(P)`` (risk-free rate 0)
sortino              ``mean(r) * P / (sqrt(mean(min(r, 0) ** 2)) * sqrt(P))``
calmar               ``annual_return / |max_drawdown|`` (nan when there is no drawdown)
max_drawdown         ``min(v / cummax(v) - 1)``, negative (drawdown on the value path)
turnover             (only when per-period turnover is given) mean per-period turnover, i.e.
                     traded value / account value at the start of the period, averaged
costs_paid           (only when costs are given) total transaction costs, in account currency
==================== ============================================================================

``P`` is the number of periods a year: 252 for daily stocks, 365 for daily crypto, the number of
bars a year for intraday data (:func:`bars_per_year`).

Edge cases follow ``empyrical`` (``empyrical-reloaded``) exactly, so that the figures can be checked
against it:

* returns with zero dispersion (e.g. a constant path): ``sharpe`` is ``nan`` when the mean return is
  0 and ``+/-inf`` otherwise; ``sortino`` is ``nan``/``inf`` likewise when no return is negative;
  ``calmar`` is ``nan`` when the path never draws down.
* a single return (2 values): ``annual_volatility``, ``sharpe`` and ``sortino`` are ``nan``.
* a path that hits zero (ruin) must stay at zero; the returns after ruin are 0, so
  ``cumulative_return = annual_return = max_drawdown = -1``.

Invalid input raises :class:`InvalidValuesError` (a :class:`finmeta.errors.FinMetaError`) naming the
row: fewer than 2 values, NaN/inf, negative values, a first value <= 0, or a revival after ruin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from data_processors.calendars import ENV_CALENDARS, TRADING_DAYS
from data_processors.calendars import bars_per_year as _calendar_bars_per_year
from finmeta.errors import FinMetaError

FIGURES: tuple[str, ...] = (
    "cumulative_return",
    "annual_return",
    "annual_volatility",
    "sharpe",
    "sortino",
    "calmar",
    "max_drawdown",
)
"""The core figures, in table order."""

COST_FIGURES: tuple[str, ...] = ("turnover", "costs_paid")
"""Figures present only when turnover / costs are given."""

AGENT_FIGURES: tuple[str, ...] = ("diversity", "router_entropy", "action_repeat", "action_change", "saturation",
                                  "static_windows")
"""Figures only some agents or runs report (the moe agent's expert diversity and router usage
entropy; the walk-forward run's action diagnostics, :mod:`benchmarks.diagnostics`)."""

ALL_FIGURES: tuple[str, ...] = FIGURES + COST_FIGURES + AGENT_FIGURES

# the trading days of data_processors.calendars.TRADING_DAYS (the one annualisation table)
TRADING_DAYS_STOCK = int(TRADING_DAYS["equity"])  # 252
DAYS_CRYPTO = int(TRADING_DAYS["crypto"])  # 365
TRADING_DAYS_FOREX = int(TRADING_DAYS["forex"])  # 260: 5 days x 52 weeks
#: the ``market`` names of :func:`bars_per_year` -> env calendar (``stock`` = ``equity``); env
#: calendar names and data calendars (``XNYS``, ``XSHG``, ``24/7``, ``FX``) are accepted as well
_MARKETS = {"stock": "equity", "crypto": "crypto", "forex": "forex", **{c: c for c in TRADING_DAYS}, **ENV_CALENDARS}


class MetricsError(FinMetaError):
    """Base class of the errors of the metrics/report layer."""


class InvalidValuesError(MetricsError):
    """An account-value series cannot be measured (too short, NaN, negative, ...); names the row."""


class ValueFileError(MetricsError):
    """An account-value file is missing, unreadable, or has no / several candidate value columns."""


class RunDirError(MetricsError):
    """A run directory has no account values or a malformed layout."""


# ----------------------------------------------------------------------------------------------
# periods a year
# ----------------------------------------------------------------------------------------------


def bars_per_year(freq: str = "1d", market: str = "stock") -> float:
    """Number of bars a year for a bar frequency and market calendar.

    ``market``: ``stock`` (252 sessions of 390 minutes), ``crypto`` (365 days of 24 h) or
    ``forex`` (260 days of 24 h); also an env calendar (``equity``, ``ashare``: 242 sessions of 4 h)
    or a data calendar (``XNYS``, ``XSHG``, ``24/7``, ``FX``). ``freq``: a pandas offset alias such
    as ``1d``, ``1h``, ``5min``, ``1min``. Daily stock bars give 252, daily crypto 365, hourly
    crypto 8,760, 1-minute stock 98,280. The rule is the env's,
    :func:`data_processors.calendars.bars_per_year` (weekly bars: calendar time, ~52.2).
    """
    if market not in _MARKETS:
        raise MetricsError(f"market {market!r} unknown: use one of {sorted(_MARKETS)}")
    try:
        delta = pd.Timedelta(pd.tseries.frequencies.to_offset(freq.upper() if freq.lower().endswith("d") else freq))
    except (ValueError, TypeError) as exc:
        raise MetricsError(f"bar frequency {freq!r} is not a fixed frequency like '1d', '1h', '5min'") from exc
    minutes = delta.total_seconds() / 60.0
    if minutes <= 0:
        raise MetricsError(f"bar frequency {freq!r} must be positive")
    return _calendar_bars_per_year(_MARKETS[market], delta.total_seconds())


# ----------------------------------------------------------------------------------------------
# validation and returns
# ----------------------------------------------------------------------------------------------


def _row_label(index: Any, row: int) -> str:
    if index is None:
        return f"row {row}"
    label = index[row]
    if isinstance(label, (int, np.integer)) and int(label) == row:
        return f"row {row}"
    return f"row {row} ({label})"


def as_values(values: Any, name: str = "values") -> np.ndarray:
    """Validate an account-value path and return it as float64 of shape (T,) or (T, P).

    Accepts a pandas Series, a one-column DataFrame, a numpy array or a sequence. Axis 0 is time.
    A 2-D array holds P paths as columns. Raises :class:`InvalidValuesError` naming the row.
    """
    index = None
    if isinstance(values, pd.DataFrame):
        if values.shape[1] != 1:
            raise InvalidValuesError(
                f"{name}: expected one value column, got {values.shape[1]}: {list(values.columns)}"
            )
        values = values.iloc[:, 0]
    if isinstance(values, pd.Series):
        index = values.index
        try:
            arr = values.to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as exc:
            raise InvalidValuesError(f"{name}: values are not numeric ({values.dtype})") from exc
    else:
        try:
            arr = np.asarray(values, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InvalidValuesError(f"{name}: values are not numeric") from exc
    if arr.ndim not in (1, 2):
        raise InvalidValuesError(f"{name}: expected a 1-D path or a 2-D (time, path) array, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise InvalidValuesError(
            f"{name}: need at least 2 account values (1 return) to compute figures, got {arr.shape[0]}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        kind = "NaN" if np.isnan(arr.reshape(arr.shape[0], -1)[row]).any() else "inf"
        raise InvalidValuesError(f"{name}: {kind} account value at {_row_label(index, row)}")
    neg = arr < 0
    if neg.any():
        row = int(np.argwhere(neg)[0][0])
        raise InvalidValuesError(f"{name}: negative account value at {_row_label(index, row)}")
    if (arr[0] <= 0).any():
        raise InvalidValuesError(f"{name}: the first account value must be > 0 ({_row_label(index, 0)})")
    # once ruined (value 0), a path must stay at 0
    ruined = np.maximum.accumulate(arr == 0, axis=0)
    revived = ruined & (arr > 0)
    if revived.any():
        row = int(np.argwhere(revived)[0][0])
        raise InvalidValuesError(
            f"{name}: account value rises again after reaching 0 at {_row_label(index, row)}"
        )
    return arr


def simple_returns(values: Any) -> np.ndarray:
    """Simple returns ``v[t+1] / v[t] - 1`` of a validated path: shape (T-1,) or (T-1, P).

    After ruin (value 0) the returns are 0.
    """
    v = as_values(values)
    prev = v[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, v[1:] / np.where(prev > 0, prev, 1.0) - 1.0, 0.0)
    return r


def values_from_returns(returns: Any, start: float = 1.0) -> np.ndarray:
    """Account values (T+1,) starting at ``start`` from simple returns (T,) (or (T+1, P) from (T, P))."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim not in (1, 2):
        raise InvalidValuesError(f"returns: expected 1-D or 2-D, got shape {r.shape}")
    if not np.isfinite(r).all():
        row = int(np.argwhere(~np.isfinite(r))[0][0])
        raise InvalidValuesError(f"returns: NaN/inf return at row {row}")
    head = np.full((1,) + r.shape[1:], float(start))
    return np.concatenate([head, start * np.cumprod(1.0 + r, axis=0)], axis=0)


def chain_windows(parts: Sequence[Any], rtol: float = 1e-9) -> np.ndarray:
    """Chain consecutive windows' account values into one path (walk-forward trading windows).

    ``parts``: K paths (T_k,) where each later window starts at the previous window's last value;
    that duplicated first value is dropped, giving sum(T_k) - (K-1) values. Raises
    :class:`InvalidValuesError` naming the window whose first value differs (relative ``rtol``).
    """
    if len(parts) == 0:
        raise InvalidValuesError("chain_windows: no windows given")
    arrays = [as_values(p, name=f"window {k}") for k, p in enumerate(parts)]
    out = [arrays[0]]
    for k in range(1, len(arrays)):
        last, first = arrays[k - 1][-1], arrays[k][0]
        if abs(first - last) > rtol * max(abs(last), 1e-300):
            raise InvalidValuesError(
                f"chain_windows: window {k} starts at {float(first)!r}, but window {k - 1} ended at {float(last)!r}"
            )
        out.append(arrays[k][1:])
    return np.concatenate(out)


def drawdown_series(values: Any) -> np.ndarray:
    """Drawdown ``v / cummax(v) - 1`` (<= 0) on the value path, same shape as ``values``."""
    v = as_values(values)
    peak = np.maximum.accumulate(v, axis=0)
    return v / peak - 1.0


# ----------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------


def _figures(v: np.ndarray, periods_per_year: float) -> dict[str, np.ndarray]:
    """Core figures of validated paths ``v`` of shape (T, P); each figure has shape (P,)."""
    ppy = float(periods_per_year)
    n = v.shape[0] - 1
    prev = v[:-1]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        r = np.where(prev > 0, v[1:] / np.where(prev > 0, prev, 1.0) - 1.0, 0.0)
        growth = v[-1] / v[0]
        cumulative = growth - 1.0
        annual = growth ** (ppy / n) - 1.0
        if n >= 2:
            mean = r.mean(axis=0)
            std = r.std(axis=0, ddof=1)
            vol = std * math.sqrt(ppy)
            # empyrical: returns without dispersion have std 0 for the Sharpe ratio
            std_sr = np.where((r.max(axis=0) == r.min(axis=0)) & np.isfinite(std), 0.0, std)
            sharpe = mean / std_sr * math.sqrt(ppy)
            downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=0)) * math.sqrt(ppy)
            sortino = mean * ppy / downside
        else:
            nan = np.full(v.shape[1], np.nan)
            vol, sharpe, sortino = nan, nan.copy(), nan.copy()
        mdd = (v / np.maximum.accumulate(v, axis=0) - 1.0).min(axis=0)
        calmar = np.where(mdd < 0, annual / np.abs(mdd), np.nan)
        calmar = np.where(np.isinf(calmar), np.nan, calmar)
    return {
        "cumulative_return": cumulative,
        "annual_return": annual,
        "annual_volatility": vol,
        "sharpe": sharpe,
        "sortino": sortino,
        "calmar": calmar,
        "max_drawdown": mdd,
    }


def _per_period(x: Any, n_values: int, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1 or a.shape[0] not in (n_values, n_values - 1):
        raise InvalidValuesError(
            f"{name}: expected one entry per value ({n_values}) or per return ({n_values - 1}), "
            f"got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        row = int(np.argwhere(~np.isfinite(a))[0][0])
        raise InvalidValuesError(f"{name}: NaN/inf at row {row}")
    return a


def turnover_from_traded(values: Any, traded: Any) -> np.ndarray:
    """Per-period turnover ratios from traded notional: traded / account value at the period's start.

    ``traded``: per-period traded notional (sum over assets of |shares traded| x fill price), one
    entry per return (T-1,) -- entry i traded during period i -> i+1 -- or one per value (T,) --
    entry t traded during the period ending at value t (entry 0 is divided by ``v[0]``). Returns
    ratios of the same shape (0 where the start value is 0), ready for ``compute_metrics(turnover=)``.
    """
    v = as_values(values)
    if v.ndim != 1:
        raise InvalidValuesError("turnover: one path at a time")
    t = _per_period(traded, v.shape[0], "traded")
    if (t < 0).any():
        raise InvalidValuesError(f"traded: negative traded notional at row {int(np.argmax(t < 0))}")
    base = v[:-1] if t.shape[0] == v.shape[0] - 1 else np.concatenate([v[:1], v[:-1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(base > 0, t / np.where(base > 0, base, 1.0), 0.0)


def mean_turnover(values: Any, turnover: Any) -> float:
    """Mean per-period turnover: ``sum(turnover) / (T-1)``.

    ``turnover``: per-period turnover ratios (traded value / account value at the period's start,
    as the env kernel reports them), one per return (T-1,) or one per value (T,; entry 0 is the
    trading before the first value, usually 0), or a scalar total over the path.
    """
    v = as_values(values)
    n = v.shape[0] - 1
    if np.ndim(turnover) == 0:
        total = float(turnover)
        if not math.isfinite(total) or total < 0:
            raise InvalidValuesError(f"turnover: the total must be finite and >= 0, got {turnover!r}")
        return total / n
    t = _per_period(turnover, v.shape[0], "turnover")
    if (t < 0).any():
        raise InvalidValuesError(f"turnover: negative turnover at row {int(np.argmax(t < 0))}")
    return float(t.sum() / n)


def compute_metrics(
    values: Any,
    periods_per_year: float = TRADING_DAYS_STOCK,
    turnover: Any = None,
    costs: Any = None,
) -> dict[str, float]:
    """All figures of one account-value path.

    ``values``: account values, shape (T,), T >= 2 (Series, array, list or one-column frame).
    ``periods_per_year``: 252 daily stocks, 365 daily crypto, :func:`bars_per_year` intraday.
    ``turnover``: optional per-period turnover ratios (traded value / account value at the
    period's start), (T,) / (T-1,) or a scalar total (see :func:`mean_turnover`;
    :func:`turnover_from_traded` converts traded notional); adds ``turnover``.
    ``costs``: optional transaction costs paid, per
    period (T,) / (T-1,) or a scalar total; adds ``costs_paid`` (their sum, account currency).

    Returns ``{figure: float}`` with the keys of :data:`FIGURES` (+ ``turnover``/``costs_paid``).
    """
    if not (isinstance(periods_per_year, (int, float, np.integer, np.floating)) and periods_per_year > 0):
        raise MetricsError(f"periods_per_year must be a positive number, got {periods_per_year!r}")
    v = as_values(values)
    if v.ndim != 1:
        raise InvalidValuesError(f"compute_metrics takes one path (T,), got shape {v.shape}; use compute_metrics_many")
    figs = _figures(v[:, None], periods_per_year)
    out = {k: float(a[0]) for k, a in figs.items()}
    if turnover is not None:
        out["turnover"] = mean_turnover(v, turnover)
    if costs is not None:
        if np.ndim(costs) == 0:
            total = float(costs)
            if not math.isfinite(total):
                raise InvalidValuesError(f"costs: total must be finite, got {costs!r}")
        else:
            total = float(_per_period(costs, v.shape[0], "costs").sum())
        out["costs_paid"] = total
    return out


def compute_metrics_many(values: Any, periods_per_year: float = TRADING_DAYS_STOCK) -> pd.DataFrame:
    """Core figures of P paths at once: ``values`` (T, P) array or DataFrame (columns = paths).

    Returns a DataFrame with one row per path (index = column names or 0..P-1) and the
    :data:`FIGURES` columns. Vectorized: no Python loop over paths.
    """
    names = list(values.columns) if isinstance(values, pd.DataFrame) else None
    arr = values.to_numpy(dtype=np.float64) if isinstance(values, pd.DataFrame) else values
    v = as_values(np.asarray(arr, dtype=np.float64))
    if v.ndim == 1:
        v = v[:, None]
    figs = _figures(v, periods_per_year)
    return pd.DataFrame(figs, index=names if names is not None else range(v.shape[1]))


# ----------------------------------------------------------------------------------------------
# multi-seed aggregation
# ----------------------------------------------------------------------------------------------


def aggregate_seeds(
    tables: pd.DataFrame | Sequence[pd.DataFrame] | Mapping[Any, pd.DataFrame],
    figures: Sequence[str] | None = None,
    by: str = "agent",
) -> pd.DataFrame:
    """One row per agent from per-seed tables.

    ``tables``: one long DataFrame (columns ``agent``, optional ``seed``, figures), or a list /
    ``{seed: table}`` mapping of per-seed tables, each one row per agent. Output columns: ``agent``,
    the figure means, then -- when any agent ran several seeds -- ``<figure>_std`` (ddof 1) and
    ``<figure>_ci95`` (half-width of the 95 % Student-t interval, ``t(0.975, n-1) * std / sqrt(n)``)
    for every figure (nan for agents with one seed), and ``n_seeds``. Agents keep their first-seen
    order. Figures default to the :data:`ALL_FIGURES` present in the input.
    """
    from scipy import stats

    if isinstance(tables, pd.DataFrame):
        long = tables.copy()
    elif isinstance(tables, Mapping):
        parts = []
        for seed, t in tables.items():
            t = t.copy()
            t["seed"] = seed
            parts.append(t)
        if not parts:
            raise MetricsError("aggregate_seeds: no tables given")
        long = pd.concat(parts, ignore_index=True)
    else:
        parts = list(tables)
        if not parts:
            raise MetricsError("aggregate_seeds: no tables given")
        long = pd.concat(parts, ignore_index=True)
    if by not in long.columns:
        raise MetricsError(f"aggregate_seeds: the tables have no {by!r} column (columns: {list(long.columns)})")
    if figures is None:
        figures = [f for f in ALL_FIGURES if f in long.columns]
    else:
        missing = [f for f in figures if f not in long.columns]
        if missing:
            raise MetricsError(f"aggregate_seeds: figure columns {missing} not in the tables")
    figures = list(figures)
    grouped = long.groupby(by, sort=False)[figures]
    with np.errstate(invalid="ignore"):
        mean = grouped.mean()
        std = grouped.std(ddof=1)
    count = long.groupby(by, sort=False).size().reindex(mean.index)
    out = mean.reset_index()
    if int(count.max()) > 1:
        n = count.to_numpy(dtype=np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            tcrit = np.where(n > 1, stats.t.ppf(0.975, np.maximum(n - 1, 1)), np.nan)
            half = std.to_numpy() * (tcrit / np.sqrt(n))[:, None]
        for f in figures:
            out[f"{f}_std"] = std[f].to_numpy()
        for j, f in enumerate(figures):
            out[f"{f}_ci95"] = half[:, j]
    out["n_seeds"] = count.to_numpy()
    return out

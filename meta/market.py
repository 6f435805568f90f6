"""Everything the kernel needs that does not change during an episode, computed once per env.

:func:`prepare` turns :class:`~data_processors.arrays.MarketArrays` plus an :class:`EnvConfig` into
a :class:`MarketData`: the fill-price table, the tradability masks (suspensions, A-share limit
up/down, FinRL's feature-lock quirk), the turbulence flags, the per-bar stamp-duty rate, trading-day
ids for T+1, and the annualisation constant. All of them are (T,) or (T, N) tables indexed by bar;
the kernel only gathers rows. Every table entry for bar t is computed from bars <= t only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from data_processors.arrays import MarketArrays
from data_processors.calendars import COARSE_SECONDS, bars_per_year
from finmeta.errors import ConfigError, DataValidationError

from .config import EnvConfig

#: Stamp duty on A-share sells: 0.1%, halved to 0.05% for trades from 2023-08-28.
CN_STAMP_DUTY_CUT = np.datetime64("2023-08-28")
#: ChiNext (300xxx/301xxx) moved from +-10% to +-20% limits on 2020-08-24.
CHINEXT_REFORM = np.datetime64("2020-08-24")


@dataclass
class MarketData:
    """Precomputed per-bar tables (numpy; the kernel moves them to its backend).

    Shapes: T bars, N assets.
    """

    T: int
    N: int
    close: np.ndarray            # (T, N) valuation prices
    fill_px: np.ndarray          # (T, N) execution price of an order filled at bar t
    volume: np.ndarray | None    # (T, N) for volume impact / participation caps
    buy_ok: np.ndarray | None    # (T, N) bool, a buy can fill at bar t
    sell_ok: np.ndarray | None   # (T, N) bool, a sell can fill at bar t
    quirk_lock: np.ndarray | None  # (T, N) bool, FinRL's "feature_1 == 1" lock (parity mode)
    turb_hit: np.ndarray | None  # (T,) bool, turbulence[t] >= threshold
    stamp: np.ndarray | None     # (T,) sell-side stamp duty rate for a fill at bar t
    day_id: np.ndarray | None    # (T,) int, trading day of bar t (T+1 locks)
    limit_up: np.ndarray | None  # (T, N) limit-up price (A-share), for info/tests
    limit_down: np.ndarray | None
    bars_per_year: float
    bar_seconds: float


def _name(arrays: MarketArrays) -> str:
    return str(arrays.meta.get("name") or arrays.meta.get("dataset") or "MarketArrays")


def _check_finite_positive(arrays: MarketArrays, field: str, positive: bool) -> None:
    a = getattr(arrays, field)
    bad = ~np.isfinite(a)
    if positive:
        bad |= ~(a > 0)
    if bad.any():
        t, i = np.argwhere(bad)[0]
        raise DataValidationError(
            f"{_name(arrays)}: {field} of {arrays.tickers[i]} at row {t} ({arrays.times[t]}) is "
            f"{a[t, i]!r}; the env needs finite{' positive' if positive else ''} values -- clean the data first")


def validate_arrays(arrays: MarketArrays) -> None:
    """One clear :class:`DataValidationError` for data the env cannot run on."""
    if not isinstance(arrays, MarketArrays):
        raise DataValidationError(f"the env needs a data_processors.MarketArrays, got {type(arrays).__name__}")
    T, N = arrays.close.shape
    if T < 2:
        raise DataValidationError(f"{_name(arrays)}: the env needs at least 2 bars, got {T}")
    if N < 1:
        raise DataValidationError(f"{_name(arrays)}: no assets")
    for f in ("open", "high", "low", "volume"):
        if getattr(arrays, f).shape != (T, N):
            raise DataValidationError(f"{_name(arrays)}: {f} has shape {getattr(arrays, f).shape}, expected {(T, N)}")
    if arrays.features.shape[:2] != (T, N):
        raise DataValidationError(f"{_name(arrays)}: features has shape {arrays.features.shape}, expected ({T}, {N}, K)")
    _check_finite_positive(arrays, "close", True)
    _check_finite_positive(arrays, "open", True)
    if arrays.features.size and not np.isfinite(arrays.features).all():
        t, i, k = np.argwhere(~np.isfinite(arrays.features))[0]
        raise DataValidationError(
            f"{_name(arrays)}: feature {arrays.feature_names[k]!r} of {arrays.tickers[i]} at row {t} "
            f"({arrays.times[t]}) is not finite -- drop the warm-up rows or fill the feature")


def bar_seconds(times: np.ndarray) -> float:
    """Median spacing of the bar times in seconds (86400 for daily data)."""
    if len(times) < 2:
        return 86400.0
    d = np.diff(times.astype("datetime64[s]").astype(np.int64))
    return float(np.median(d))


def infer_bars_per_year(times: np.ndarray, calendar: str) -> float:
    """Bars per year for annualisation, by :func:`data_processors.calendars.bars_per_year` (the one
    rule of every layer) from the median bar spacing of ``times``.

    Daily bars: equity 252, ashare 242, crypto 365, forex 260 per year (a median spacing of 20 h to
    4 days is a daily bar whose spacing weekends and holidays stretch); weekly/monthly spacing:
    calendar time; intraday bars: days x session hours x 3600 / bar seconds.
    """
    s = bar_seconds(times)
    daily = 20 * 3600 <= s < COARSE_SECONDS
    return bars_per_year(calendar, 86400.0 if daily else s)


def resolve_calendar(cfg: EnvConfig, arrays: MarketArrays) -> EnvConfig:
    """``cfg`` with calendar ``"auto"`` replaced by the data's (``arrays.meta["calendar"]`` by
    :func:`data_processors.calendars.env_calendar`: XSHG -> ashare, 24/7 -> crypto, ...); any other
    ``cfg`` unchanged."""
    if cfg.calendar != "auto":
        return cfg
    from dataclasses import replace

    from data_processors.calendars import env_calendar

    return replace(cfg, calendar=env_calendar((arrays.meta or {}).get("calendar")))


def env_bars_per_year(cfg: EnvConfig, arrays: MarketArrays) -> float:
    """The bars a year an env with ``cfg`` (an :class:`~meta.config.EnvConfig`) reports on ``arrays``:
    ``cfg.bars_per_year`` when set, else :func:`infer_bars_per_year` on the env's calendar
    (:func:`resolve_calendar`)."""
    if cfg.bars_per_year:
        return float(cfg.bars_per_year)
    return float(infer_bars_per_year(arrays.times, resolve_calendar(cfg, arrays).calendar))


def _code(ticker: str) -> str:
    m = re.search(r"(\d{6})", ticker)
    return m.group(1) if m else ""


def cn_limit_pct(tickers: tuple[str, ...], times: np.ndarray, is_st: np.ndarray | None) -> np.ndarray:
    """(T, N) daily price-limit fraction by board and date.

    Main board 10%, ST/*ST 5% (main board); STAR (688xxx) 20%; ChiNext (300xxx/301xxx) 20% from
    2020-08-24, 10% (5% if ST) before; Beijing (8xxxxx/4xxxxx/920xxx) 30%.
    """
    T, N = len(times), len(tickers)
    days = times.astype("datetime64[D]")
    after = (days >= CHINEXT_REFORM)[:, None]  # (T, 1)
    st = np.zeros((T, N), bool) if is_st is None else is_st.astype(bool)
    pct = np.where(st, 0.05, 0.10)
    for i, tic in enumerate(tickers):
        c = _code(tic)
        if c.startswith("688"):
            pct[:, i] = 0.20
        elif c.startswith(("300", "301")):
            pct[:, i] = np.where(after[:, 0], 0.20, pct[:, i])
        elif c.startswith(("8", "4", "920")):
            pct[:, i] = 0.30
    return pct


def _round_cents(x: np.ndarray) -> np.ndarray:
    return np.floor(x * 100.0 + 0.5) / 100.0


def prepare(arrays: MarketArrays, cfg: EnvConfig) -> MarketData:
    """Precompute the per-bar tables for ``cfg`` (see the module docstring)."""
    validate_arrays(arrays)
    T, N = arrays.close.shape
    close = np.ascontiguousarray(arrays.close, dtype=np.float64)
    fill_px = close if cfg.fill == "close" else np.ascontiguousarray(arrays.open, dtype=np.float64)

    need_volume = cfg.slippage == "volume" or cfg.max_participation is not None
    volume = None
    if need_volume:
        _check_finite_positive(arrays, "volume", False)
        volume = np.ascontiguousarray(arrays.volume, dtype=np.float64)

    buy_ok = None
    sell_ok = None
    if arrays.tradable is not None:
        tr = np.asarray(arrays.tradable, bool)
        if tr.shape != (T, N):
            raise DataValidationError(f"{_name(arrays)}: tradable has shape {tr.shape}, expected {(T, N)}")
        buy_ok = tr.copy()
        sell_ok = tr.copy()

    limit_up = limit_down = None
    if cfg.price_limits:
        if arrays.preclose is not None:
            pre = np.asarray(arrays.preclose, dtype=np.float64)
        else:  # previous close of the same series (first bar: unknown, no limit)
            pre = np.vstack([np.full((1, N), np.nan), close[:-1]])
        pct = (np.full((T, N), float(cfg.limit_pct)) if cfg.limit_pct is not None
               else cn_limit_pct(arrays.tickers, arrays.times, arrays.is_st))
        limit_up = _round_cents(pre * (1.0 + pct))
        limit_down = _round_cents(pre * (1.0 - pct))
        with np.errstate(invalid="ignore"):
            at_up = fill_px >= limit_up - 0.005      # sealed at limit up: no buying
            at_down = fill_px <= limit_down + 0.005  # sealed at limit down: no selling
        buy_ok = ~at_up if buy_ok is None else (buy_ok & ~at_up)
        sell_ok = ~at_down if sell_ok is None else (sell_ok & ~at_down)

    quirk = None
    if cfg.quirks and arrays.features.shape[2] > 0:
        q = arrays.features[:, :, 0] == 1.0
        quirk = q if q.any() else None

    turb_hit = None
    if cfg.turbulence_threshold is not None:
        if arrays.turbulence is None:
            raise ConfigError(
                f"EnvConfig.turbulence_threshold is set but {_name(arrays)} has no turbulence column "
                "(add it with data_processors.features.turbulence)")
        turb_hit = np.asarray(arrays.turbulence, dtype=np.float64) >= float(cfg.turbulence_threshold)

    stamp = None
    if cfg.stamp_duty is not None:
        if cfg.stamp_duty == "cn":
            d = arrays.times.astype("datetime64[D]")
            stamp = np.where(d >= CN_STAMP_DUTY_CUT, 0.0005, 0.001)
        else:
            stamp = np.full(T, float(cfg.stamp_duty))

    day_id = None
    if cfg.t_plus_1:
        t = arrays.times.astype("datetime64[s]")
        if cfg.calendar == "ashare" and bar_seconds(arrays.times) < 20 * 3600:
            t = t + np.timedelta64(8 * 3600, "s")  # intraday UTC stamps -> Beijing trading date
        day_id = t.astype("datetime64[D]").astype(np.int64)

    bpy = env_bars_per_year(cfg, arrays)
    return MarketData(T=T, N=N, close=close, fill_px=fill_px, volume=volume, buy_ok=buy_ok,
                      sell_ok=sell_ok, quirk_lock=quirk, turb_hit=turb_hit, stamp=stamp, day_id=day_id,
                      limit_up=limit_up, limit_down=limit_down, bars_per_year=bpy,
                      bar_seconds=bar_seconds(arrays.times))


def per_asset(value: Any, N: int, key: str) -> np.ndarray | float:
    """A cost rate given as a scalar or an (N,) sequence -> float or (N,) float64 array."""
    if np.isscalar(value):
        v = float(value)
        if not 0 <= v < 1:
            raise ConfigError(f"EnvConfig.{key}: must be in [0, 1), got {value!r}")
        return v
    a = np.asarray(value, dtype=np.float64)
    if a.shape != (N,):
        raise ConfigError(f"EnvConfig.{key}: expected a scalar or {N} values, got shape {a.shape}")
    if not ((a >= 0) & (a < 1)).all():
        raise ConfigError(f"EnvConfig.{key}: every rate must be in [0, 1)")
    return a

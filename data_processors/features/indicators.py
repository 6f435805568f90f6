"""Technical indicators through two engines, ``stockstats`` and ``talib`` (TA-Lib), same names.

Names are parsed generically, so any period works in both engines:

=====================  ======================================================================
name                   meaning
=====================  ======================================================================
``macd``               EMA(12) - EMA(26) of close; ``macds`` its EMA(9) signal, ``macdh`` hist.
``boll_ub``/``boll_lb`` Bollinger upper/lower band, SMA(20) +- 2 sample std; ``boll`` the SMA;
                       ``boll_ub_<n>`` etc. for another period ``n``.
``rsi_<n>``            Wilder RSI over ``n`` bars.
``cci_<n>``            Commodity Channel Index (typical price, mean absolute deviation).
``dx_<n>``             Directional movement index (Wilder smoothing over ``n``).
``atr_<n>``            Average true range (Wilder smoothing).
``pdi_<n>``/``ndi_<n>`` +DI / -DI.
``<col>_<n>_sma``      simple moving average of ``col`` (open/high/low/close/volume).
``<col>_<n>_ema``      exponential moving average (span ``n``) of ``col``.
=====================  ======================================================================

``rsi_30`` is a 30-bar RSI in *both* engines (FinRL-Meta's TA-Lib path silently used 14).

How the engines differ, and why (measured on Dow 30 data in ``tests/test_features.py``):

* **Warm-up.** stockstats returns a value from the first bar (partial windows, EMAs with
  ``adjust=True``); TA-Lib returns NaN for its look-back (:func:`talib_lookback`) and then
  seeds its recursions with a simple average. Windowed indicators (SMA, Bollinger, CCI) agree to
  rounding from bar ``n - 1`` on.
* **Recursive smoothing seeds.** stockstats' Wilder smoothing (RSI, DX, ATR) is
  ``ewm(alpha=1/n, adjust=True)`` starting at bar 0 (with a zero first change and a zero first
  true range); TA-Lib seeds Wilder's recursion with the plain mean of the first ``n`` values.
  The two recursions are identical afterwards, so the gap decays like ``(1 - 1/n)**t``
  (for ``n = 30``: 2e-4 of the initial gap after 252 bars, 5e-8 after 500). MACD's EMAs
  decay like ``(1 - 2/(26 + 1))**t`` (faster).
* **Bollinger std ddof.** stockstats (and FinRL) use the sample std (ddof=1); TA-Lib's BBANDS
  the population std (ddof=0). That would be a *permanent* gap of ``2*std*(sqrt(n/(n-1)) - 1)``
  (2.6 % of the band width for ``n = 20``), so the ``talib`` engine calls BBANDS with
  ``nbdev = 2*sqrt(n/(n-1))``: both engines then compute the same (sample-std) band.
* **CCI** uses the mean absolute deviation in both (not the std): identical after ``n - 1`` bars.
  The typical price is ``(high + low + close) / 3`` in both: stockstats would switch to
  ``amount / volume`` when an ``amount`` column is present, so only OHLCV is handed to it.

Every indicator is computed per ticker on that ticker's own rows in time order, so nothing leaks
across tickers; each value at bar t depends on bars ``<= t`` only.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from data_processors.schema import DEFAULT_INDICATORS
from finmeta.errors import ConfigError, DataValidationError

ENGINES: tuple[str, ...] = ("stockstats", "talib")

_PRICE_COLS = ("open", "high", "low", "close", "volume")
_PERIOD_KINDS = ("rsi", "cci", "dx", "atr", "pdi", "ndi")
_RE_MACD = re.compile(r"^(macd|macds|macdh)$")
_RE_BOLL = re.compile(r"^boll(_ub|_lb)?(?:_(\d+))?$")
_RE_PERIOD = re.compile(r"^(" + "|".join(_PERIOD_KINDS) + r")_(\d+)$")
_RE_MA = re.compile(r"^(" + "|".join(_PRICE_COLS) + r")_(\d+)_(sma|ema)$")

MACD_WINDOWS: tuple[int, int, int] = (12, 26, 9)
BOLL_PERIOD: int = 20
BOLL_K: float = 2.0


@dataclass(frozen=True)
class IndicatorSpec:
    """A parsed indicator name.

    Attributes:
        name: the name as requested (the output column).
        kind: ``macd macds macdh boll boll_ub boll_lb rsi cci dx atr pdi ndi sma ema``.
        period: the window (MACD: the slow window; see ``windows``).
        column: input column for ``sma``/``ema``/``boll``/``macd`` (``close`` by default).
        windows: all windows (MACD: fast, slow, signal).
    """

    name: str
    kind: str
    period: int
    column: str = "close"
    windows: tuple[int, ...] = ()


def parse_indicator(name: str) -> IndicatorSpec:
    """Parse an indicator name (see the module docstring); raise :class:`ConfigError` if unknown."""
    if not isinstance(name, str):
        raise ConfigError(f"indicator name must be a string, got {name!r}")
    if m := _RE_MACD.match(name):
        return IndicatorSpec(name, m.group(1), MACD_WINDOWS[1], "close", MACD_WINDOWS)
    if m := _RE_BOLL.match(name):
        period = int(m.group(2)) if m.group(2) else BOLL_PERIOD
        kind = "boll" + (m.group(1) or "")
        spec = IndicatorSpec(name, kind, period, "close", (period,))
    elif m := _RE_PERIOD.match(name):
        spec = IndicatorSpec(name, m.group(1), int(m.group(2)), "close", (int(m.group(2)),))
    elif m := _RE_MA.match(name):
        spec = IndicatorSpec(name, m.group(3), int(m.group(2)), m.group(1), (int(m.group(2)),))
    else:
        raise ConfigError(
            f"indicators: unknown indicator {name!r}; use macd/macds/macdh, boll[_ub|_lb][_<n>], "
            f"<{'|'.join(_PERIOD_KINDS)}>_<n> or <{'|'.join(_PRICE_COLS)}>_<n>_<sma|ema>"
        )
    min_period = 2 if spec.kind.startswith("boll") or spec.kind in _PERIOD_KINDS else 1
    if spec.period < min_period:
        raise ConfigError(f"indicators: {name!r} needs a period >= {min_period}")
    return spec


def talib_lookback(name: str) -> int:
    """Number of leading bars for which the ``talib`` engine returns NaN for ``name``."""
    s = parse_indicator(name)
    n = s.period
    if s.kind.startswith("macd"):
        _, slow, sig = s.windows
        return (slow - 1) + (sig - 1)
    if s.kind in ("sma", "ema", "cci") or s.kind.startswith("boll"):
        return n - 1
    if s.kind in ("rsi", "atr", "dx", "pdi", "ndi"):
        return n
    raise AssertionError(s.kind)  # pragma: no cover


# --------------------------------------------------------------------------------------------
# one ticker, one engine
# --------------------------------------------------------------------------------------------
def _stockstats_one(ohlcv: dict[str, np.ndarray], specs: list[IndicatorSpec]) -> list[np.ndarray]:
    """Indicators of one ticker via stockstats. ``ohlcv`` arrays have shape (L,); returns (L,) each."""
    from stockstats import StockDataFrame

    sdf = StockDataFrame(pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in ohlcv.items()}))
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in specs:
            if s.kind.startswith("macd"):
                key = s.kind
            elif s.kind.startswith("boll"):
                # request boll_<n>; stockstats then names the bands boll_ub_<n> / boll_lb_<n>
                sdf[f"boll_{s.period}"]
                suffix = s.kind[4:]
                key = f"boll{suffix}_{s.period}"
            elif s.kind in ("sma", "ema"):
                key = f"{s.column}_{s.period}_{s.kind}"
            else:
                key = f"{s.kind}_{s.period}"
            out.append(np.asarray(sdf[key], dtype=np.float64))
    return out


def _talib_one(ohlcv: dict[str, np.ndarray], specs: list[IndicatorSpec]) -> list[np.ndarray]:
    """Indicators of one ticker via TA-Lib. ``ohlcv`` arrays have shape (L,); returns (L,) each."""
    import talib

    h, lo, c = ohlcv.get("high"), ohlcv.get("low"), ohlcv["close"]
    cache: dict[tuple, tuple[np.ndarray, ...]] = {}
    out = []
    for s in specs:
        n = s.period
        if s.kind.startswith("macd"):
            key = ("macd",) + s.windows
            if key not in cache:
                cache[key] = talib.MACD(c, fastperiod=s.windows[0], slowperiod=s.windows[1],
                                        signalperiod=s.windows[2])
            out.append(cache[key][("macd", "macds", "macdh").index(s.kind)])
        elif s.kind.startswith("boll"):
            key = ("boll", n)
            if key not in cache:
                # sample std (ddof=1) like stockstats: BBANDS uses the population std
                k = BOLL_K * math.sqrt(n / (n - 1))
                cache[key] = talib.BBANDS(c, timeperiod=n, nbdevup=k, nbdevdn=k, matype=0)
            ub, mid, lb = cache[key]
            out.append({"boll": mid, "boll_ub": ub, "boll_lb": lb}[s.kind])
        elif s.kind == "rsi":
            out.append(talib.RSI(c, timeperiod=n))
        elif s.kind == "cci":
            out.append(talib.CCI(h, lo, c, timeperiod=n))
        elif s.kind == "dx":
            out.append(talib.DX(h, lo, c, timeperiod=n))
        elif s.kind == "atr":
            out.append(talib.ATR(h, lo, c, timeperiod=n))
        elif s.kind == "pdi":
            out.append(talib.PLUS_DI(h, lo, c, timeperiod=n))
        elif s.kind == "ndi":
            out.append(talib.MINUS_DI(h, lo, c, timeperiod=n))
        elif s.kind == "sma":
            out.append(talib.SMA(ohlcv[s.column], timeperiod=n))
        elif s.kind == "ema":
            out.append(talib.EMA(ohlcv[s.column], timeperiod=n))
        else:  # pragma: no cover
            raise AssertionError(s.kind)
    return out


_ENGINE_FN = {"stockstats": _stockstats_one, "talib": _talib_one}


def _check_engine(engine: str) -> str:
    e = {"ta-lib": "talib", "ta_lib": "talib", "TA-Lib": "talib"}.get(engine, engine)
    if e not in ENGINES:
        raise ConfigError(f"indicators: unknown engine {engine!r}; choose one of {ENGINES}")
    return e


# --------------------------------------------------------------------------------------------
# the panel
# --------------------------------------------------------------------------------------------
def compute_indicators(
    df: pd.DataFrame,
    indicators: tuple[str, ...] | list[str] = DEFAULT_INDICATORS,
    *,
    engine: str = "stockstats",
) -> pd.DataFrame:
    """Technical indicators of a long frame, per ticker.

    Args:
        df: long frame with ``time``, ``tic`` and the OHLCV columns the indicators need; any row
            order (each ticker is processed in time order). Leading rows of a ticker whose close
            is NaN (before its listing) stay NaN; a NaN close after the first valid one is an error.
        indicators: names (see the module docstring).
        engine: ``"stockstats"`` or ``"talib"``.

    Returns:
        A frame with the index of ``df`` and one float64 column per indicator name, shape
        ``(len(df), len(indicators))``.
    """
    engine = _check_engine(engine)
    specs = [parse_indicator(n) for n in indicators]
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"indicators: duplicate names in {names}")
    needed = {"close"}
    for s in specs:
        if s.kind in ("cci", "dx", "atr", "pdi", "ndi"):
            needed |= {"high", "low", "close"}
        needed.add(s.column)
    if engine == "stockstats":
        needed |= {"high", "low", "close"}
    missing = [c for c in ("time", "tic", *sorted(needed)) if c not in df.columns]
    if missing:
        raise DataValidationError(f"indicators: the frame lacks column(s) {missing}")
    out = np.full((len(df), len(specs)), np.nan)
    if len(df) == 0 or not specs:
        return pd.DataFrame(out, index=df.index, columns=names)

    tic_codes, tic_names = pd.factorize(df["tic"], sort=True)
    times = df["time"].to_numpy()
    # rows grouped by ticker, in time order within a ticker
    order = np.lexsort((times, tic_codes))
    bounds = np.searchsorted(tic_codes[order], np.arange(len(tic_names) + 1))
    cols = {c: df[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in needed}
    fn = _ENGINE_FN[engine]
    for i, tic in enumerate(tic_names):
        rows = order[bounds[i]:bounds[i + 1]]
        close = cols["close"][rows]
        finite = np.isfinite(close)
        if not finite.any():
            continue
        first = int(np.argmax(finite))
        if not finite[first:].all():
            bad = rows[first + int(np.argmin(finite[first:]))]
            raise DataValidationError(
                f"indicators: ticker {tic!r} has a NaN close at {df['time'].iloc[bad]} after its first "
                f"valid bar (row {bad}); clean the frame first (forward fill)"
            )
        rows = rows[first:]
        ohlcv = {c: np.ascontiguousarray(v[rows]) for c, v in cols.items()}
        for j, values in enumerate(fn(ohlcv, specs)):
            out[rows, j] = values
    return pd.DataFrame(out, index=df.index, columns=names)

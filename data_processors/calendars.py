"""Trading calendars: which bar times *should* exist for a market, frequency and span.

The cleaner (:mod:`data_processors.clean`) reindexes every ticker onto these times.

Calendar names:

* any `exchange-calendars <https://github.com/gerrymanoim/exchange_calendars>`_ code (``"XNYS"``,
  ``"XSHG"``, ``"XHKG"``, ...): daily bars are the exchange's sessions (tz-naive local dates);
  intraday bars are the bar *open* times (UTC) of every session, lunch breaks excluded
  (``ExchangeCalendar.trading_index``);
* ``"24/7"`` (crypto): every calendar day / every ``freq`` step, UTC;
* ``"FX"`` (spot forex): the week runs from Sunday 17:00 to Friday 17:00 America/New_York; an
  intraday bar exists when its open time lies in that window; daily bars are Monday..Friday
  (the session that closes at 17:00 New York on that date). Holidays are not removed.

Frequencies (:data:`data_processors.sources.base.FREQUENCIES`): ``1m 5m 15m 30m 60m 1h`` (intraday),
``1d`` (daily). Weekly and monthly bars (``1w``, ``1mo``) have no calendar here: the cleaner aligns
them on the union of the tickers' own bar times.
"""

from __future__ import annotations

import functools
import warnings

import numpy as np
import pandas as pd

from finmeta.errors import ConfigError
from finmeta.timeparse import as_utc, naive_day, utc_wall

#: Special calendars handled here (not by exchange-calendars).
SPECIAL_CALENDARS: tuple[str, ...] = ("24/7", "FX")

_INTRADAY = {"1m": "1min", "5m": "5min", "15m": "15min", "30m": "30min", "60m": "60min", "1h": "60min"}
_COARSE = ("1w", "1mo")


def is_intraday(freq: str) -> bool:
    """True for minute/hour bar frequencies (``"1m"`` .. ``"1h"``, or any ``"<n>m"``/``"<n>h"``)."""
    return freq_to_timedelta(freq) < pd.Timedelta(days=1)


def freq_to_timedelta(freq: str) -> pd.Timedelta:
    """``"5m"`` -> 5 minutes, ``"1h"`` -> 1 hour, ``"1d"`` -> 1 day, ``"1w"`` -> 7 days, ``"1mo"`` -> 30 days."""
    f = str(freq).strip().lower()
    try:
        if f.endswith("mo"):
            return pd.Timedelta(days=30 * int(f[:-2] or 1))
        n, unit = int(f[:-1] or 1), f[-1]
    except ValueError:
        raise ConfigError(f"freq={freq!r}: not a frequency; use one of 1m 5m 15m 30m 60m 1h 1d 1w 1mo") from None
    units = {"m": "min", "h": "h", "d": "D", "w": "W"}
    if unit not in units or n <= 0:
        raise ConfigError(f"freq={freq!r}: not a frequency; use one of 1m 5m 15m 30m 60m 1h 1d 1w 1mo")
    return pd.Timedelta(n, unit=units[unit]) if unit != "w" else pd.Timedelta(days=7 * n)


def _pandas_period(freq: str) -> str:
    f = str(freq).strip().lower()
    if f in _INTRADAY:
        return _INTRADAY[f]
    td = freq_to_timedelta(f)
    return f"{int(td.total_seconds() // 60)}min"


@functools.lru_cache(maxsize=32)
def _exchange_calendar(name: str, start_year: int, end_year: int):
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():  # exchange-calendars 4.13 trips a pandas 3.1 deprecation internally
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            return xcals.get_calendar(name, start=f"{start_year}-01-01", end=f"{end_year}-12-31")
    except xcals.errors.InvalidCalendarName:
        raise ConfigError(
            f"calendar={name!r}: unknown; use an exchange-calendars code such as XNYS or XSHG, "
            f"'24/7' (crypto) or 'FX' (forex)"
        ) from None
    except ValueError as exc:  # span outside what the calendar supports
        raise ConfigError(f"calendar={name!r}: cannot cover {start_year}..{end_year}: {exc}") from None


def calendar_times(calendar: str, start, end, freq: str = "1d") -> pd.DatetimeIndex:
    """Every bar time of ``calendar`` at ``freq`` with ``start <= time <= end``.

    Args:
        calendar: an exchange-calendars code, ``"24/7"`` or ``"FX"`` (see module doc).
        start, end: inclusive bounds (dates or timestamps; intraday bounds are read as UTC when tz-naive).
        freq: bar frequency (``"1d"`` or intraday ``"1m" .. "1h"``).

    Returns:
        (T,) ``DatetimeIndex``: tz-naive midnight dates for daily bars, tz-aware UTC bar *open*
        times for intraday bars. Sorted, unique.
    """
    if freq in _COARSE or freq_to_timedelta(freq) > pd.Timedelta(days=1):
        raise ConfigError(f"freq={freq!r}: weekly/monthly bars have no calendar; align them on their own times")
    intraday = is_intraday(freq)
    name = str(calendar)
    if intraday:
        lo, hi = as_utc(start), as_utc(end)
    else:
        lo, hi = naive_day(start), naive_day(end)
    if hi < lo:
        return pd.DatetimeIndex([], tz="UTC" if intraday else None)

    if name == "24/7":
        if intraday:
            return pd.date_range(lo.ceil(_pandas_period(freq)), hi, freq=_pandas_period(freq), name="time")
        return pd.date_range(lo, hi, freq="D", name="time")

    if name.upper() == "FX":
        if not intraday:
            days = pd.date_range(lo, hi, freq="D", name="time")
            return days[days.day_of_week < 5]
        grid = pd.date_range(lo.ceil(_pandas_period(freq)), hi, freq=_pandas_period(freq), name="time")
        ny = grid.tz_convert("America/New_York")
        dow = np.asarray(ny.day_of_week)
        minutes = np.asarray(ny.hour) * 60 + np.asarray(ny.minute)
        open_ = ((dow >= 0) & (dow <= 3)) | ((dow == 6) & (minutes >= 17 * 60)) | ((dow == 4) & (minutes < 17 * 60))
        return grid[open_]

    d0, d1 = naive_day(lo), naive_day(hi)
    cal = _exchange_calendar(name, d0.year - 1 if d0.year > 1990 else d0.year, d1.year + 1)
    if d0 < cal.first_session or d1 > cal.last_session:
        raise ConfigError(f"calendar={name!r} covers {cal.first_session.date()}..{cal.last_session.date()}, "
                          f"not {d0.date()}..{d1.date()}")
    if not intraday:
        s = cal.sessions_in_range(d0, d1)
        return pd.DatetimeIndex(utc_wall(s), name="time")
    sessions = cal.sessions_in_range(d0, d1)
    if len(sessions) == 0:
        return pd.DatetimeIndex([], tz="UTC", name="time")
    idx = cal.trading_index(sessions[0], sessions[-1], period=_pandas_period(freq), intervals=False,
                            closed="left", force=True)
    idx = pd.DatetimeIndex(idx, name="time")
    idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
    return idx[(idx >= lo) & (idx <= hi)]


# ----------------------------------------------------------------------------------------------
# annualisation: the one rule for bars a year (env info, the loop's default, metrics.bars_per_year)
# ----------------------------------------------------------------------------------------------

#: env calendars (``EnvConfig.calendar``, ``meta``): trading days a year
TRADING_DAYS: dict[str, float] = {"equity": 252.0, "ashare": 242.0, "crypto": 365.0, "forex": 260.0}
#: env calendars: trading hours of one session (intraday bars a day = hours x 3600 / bar seconds)
SESSION_HOURS: dict[str, float] = {"equity": 6.5, "ashare": 4.0, "crypto": 24.0, "forex": 24.0}
#: data calendars (a source's ``calendar``, a dataset's manifest, ``MarketArrays.meta["calendar"]``)
#: -> env calendar; any other exchange-calendars code is an ``"equity"`` market
ENV_CALENDARS: dict[str, str] = {"XNYS": "equity", "XNAS": "equity", "XSHG": "ashare", "XSHE": "ashare",
                                 "24/7": "crypto", "FX": "forex"}
#: bar spacing from which bars are "coarse" (weekly, monthly): annualised by calendar time
COARSE_SECONDS = 4 * 86400.0


def env_calendar(calendar: str | None) -> str:
    """The env calendar of a data calendar: ``XNYS`` -> ``equity``, ``XSHG``/``XSHE`` -> ``ashare``,
    ``24/7`` -> ``crypto``, ``FX`` -> ``forex``, any other code (or None) -> ``equity``. An env
    calendar name is returned as it is."""
    if calendar is None:
        return "equity"
    name = str(calendar)
    if name in TRADING_DAYS:
        return name
    return ENV_CALENDARS.get(name.upper(), ENV_CALENDARS.get(name, "equity"))


def bars_per_year(calendar: str = "equity", bar_seconds: float = 86400.0) -> float:
    """Bars a year of length ``bar_seconds`` on ``calendar`` (an env or a data calendar, see
    :func:`env_calendar`): the annualisation constant of every layer.

    * intraday (``bar_seconds < 1 day``): trading days x session hours x 3600 / bar seconds
      (equity 1-minute: 252 x 390 = 98,280; crypto hourly: 8,760; forex 5-minute: 74,880);
    * daily to 4 days: trading days x 1 day / bar length (daily: equity 252, ashare 242, crypto
      365, forex 260);
    * coarser (weekly, monthly): calendar time, ``365.25 / (bar_seconds / 1 day)`` (weekly ~52.2).

    The env (:func:`meta.market.infer_bars_per_year`) passes the median spacing of its bars, a
    daily spacing stretched by weekends and holidays (20 h .. 4 days) counting as one day.
    """
    cal = env_calendar(calendar)
    s = float(bar_seconds)
    if not s > 0:
        raise ConfigError(f"bar length {bar_seconds!r} seconds: must be positive")
    days = TRADING_DAYS[cal]
    if s >= COARSE_SECONDS:
        return 365.25 / (s / 86400.0)
    if s >= 86400.0:
        return days * 86400.0 / s
    return days * SESSION_HOURS[cal] * 3600.0 / s

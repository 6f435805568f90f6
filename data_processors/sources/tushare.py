"""``tushare``: China A-shares and indices through the Tushare Pro API.

Credentials: the token is read from the environment variable ``TUSHARE_TOKEN`` at download time
and passed to ``tushare.pro_api(token, timeout=...)``; it is never written anywhere (no
``ts.set_token``, which would store it in a file) and never appears in error messages. A missing
token is a clear :class:`DataSourceError`; a token the server rejects is not retried.

Download: per ticker ``pro.daily`` / ``pro.weekly`` / ``pro.monthly`` (``asset="index"``:
``pro.index_daily`` / ``index_weekly`` / ``index_monthly``) with ``ts_code="600519.SH",
start_date, end_date`` (YYYYMMDD, inclusive), plus ``pro.adj_factor`` for stocks (daily).

Raw format: ``ts_code, trade_date (YYYYMMDD), open, high, low, close, pre_close, change, pct_chg,
vol (lots of 100 shares), amount (thousand CNY)``, newest first; ``adj_factor`` (cumulative
back-adjustment factor). Canonical: volume = vol x 100, amount = amount x 1000, preclose =
pre_close, adj_factor kept when prices are raw.

Adjustment (``adjust``): ``none`` raw prices (+ ``adj_factor``: raw x adj_factor = hfq price);
``hfq`` prices x adj_factor; ``qfq`` prices x adj_factor / adj_factor on the last date of the
download (Tushare's ``pro_bar`` definition, so qfq history changes with the end date).

Files: raw ``pro.daily`` CSV exports (columns above), and the FinRL-Meta Tushare processor output
(``tic, time, open, high, low, close, volume, day``; volume in lots; ``day`` kept with
``keep_extra``).

Minute bars (``pro.stk_mins`` / ``ts.pro_bar(freq="1min"|"5min"|...)`` exports): ``ts_code,
trade_time ('2023-01-03 09:35:00', Beijing time, the bar's END: Tushare counts (09:30, 09:35] as
09:35), close, open, high, low, vol (shares), amount (CNY)`` (+ pro_bar's ``trade_date`` and
``pre_close`` = previous bar's close, both dropped). Canonical: UTC bar open (Beijing end - bar
length, ``freq`` or inferred), volume and amount unscaled. Downloads stay daily/weekly/monthly.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from finmeta.errors import DataSourceError, DataValidationError

from ._common import DAILY_FREQS, ashare_codes, finalize, parse_times, rename, require_columns, to_canonical_times, \
    to_numeric_checked, where
from .base import DataSource

TOKEN_ENV = "TUSHARE_TOKEN"
_API = {("stock", "1d"): "daily", ("stock", "1w"): "weekly", ("stock", "1mo"): "monthly",
        ("index", "1d"): "index_daily", ("index", "1w"): "index_weekly", ("index", "1mo"): "index_monthly"}
_COLUMNS = {"ts_code": "tic", "trade_date": "time", "pre_close": "preclose", "vol": "volume"}
_PRICES = ("open", "high", "low", "close", "preclose")
TZ = "Asia/Shanghai"  # Tushare's minute stamps are Beijing time


def _bar_freq(freq: str | None) -> str | None:
    """Tushare's ``1min``/``5min``/``60min`` spelling -> FinMeta's ``1m``/``5m``/``60m`` (None: inferred)."""
    if freq is None:
        return None
    f = str(freq).strip().lower()
    return f[:-2] if f.endswith("min") and f[:-3].isdigit() else f


class TushareSource(DataSource):
    """Tushare Pro: A-shares and indices, daily/weekly/monthly; token from TUSHARE_TOKEN."""

    name = "tushare"
    calendar = "XSHG"
    secret_env = (TOKEN_ENV,)  # the token is masked in every error text (base.scrub_exception)

    def is_permanent(self, exc: BaseException) -> bool:
        if isinstance(exc, OSError):  # transport (requests' errors are OSErrors), even with token= in a URL
            return False
        msg = str(exc)
        return any(k in msg for k in ("token", "Token", "权限", "积分", "api init error"))

    def _fetch(
        self, tickers: list[str], start: str, end: str, freq: str, *, adjust: str = "none", asset: str = "stock", **_
    ) -> pd.DataFrame:
        token = os.environ.get(TOKEN_ENV, "").strip()
        if not token:
            raise DataSourceError(self.name, tickers, f"no Tushare token: set the environment variable {TOKEN_ENV}")
        if (asset, freq) not in _API:
            raise DataSourceError(self.name, tickers,
                                  f"unsupported asset/freq {asset}/{freq}; freq must be 1d, 1w or 1mo")
        if adjust not in ("none", "qfq", "hfq"):
            raise DataSourceError(self.name, tickers, f"adjust must be none, qfq or hfq, not {adjust!r}")
        import tushare as ts

        pro = self.call(ts.pro_api, token, timeout=self.timeout, tickers=tickers)
        start_s = pd.Timestamp(start).strftime("%Y%m%d")
        end_s = (pd.Timestamp(end) - pd.Timedelta(days=1)).strftime("%Y%m%d")
        codes = ashare_codes(pd.Series(tickers), index=asset == "index", what=self.name)
        frames = []
        for tic, code in zip(tickers, codes):
            api = getattr(pro, _API[(asset, freq)])
            df = self.call(api, ts_code=code, start_date=start_s, end_date=end_s, tickers=[tic])
            if df is None or df.empty:
                raise DataSourceError(self.name, [tic], f"tushare returned no rows for {code} {start}..{end}")
            if asset == "stock" and freq == "1d":
                fac = self.call(pro.adj_factor, ts_code=code, start_date=start_s, end_date=end_s, tickers=[tic])
                if fac is not None and not fac.empty:
                    keys = ["ts_code", "trade_date"]
                    df = df.merge(fac[keys + ["adj_factor"]], on=keys, how="left")
                elif adjust != "none":
                    raise DataSourceError(self.name, [tic], f"no adj_factor rows for {code}; cannot apply {adjust}")
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        adjust: str = "none",
        asset: str = "stock",
        keep_extra: bool = False,
        freq: str | None = None,
        **_: object,
    ) -> pd.DataFrame:
        """Tushare ``pro.daily`` frame or FinRL-Meta Tushare file -> canonical frame (shares, CNY).

        Args:
            raw: (n, 11[+1]) ``pro.daily`` (+ ``adj_factor``) frame, (n, 8) FinRL-Meta frame, or an
                (n, 8+) ``stk_mins`` / minute ``pro_bar`` frame (``trade_time`` column).
            adjust: ``none`` | ``qfq`` | ``hfq`` (needs ``adj_factor``).
            freq: minute bar length (``5min`` or ``5m``; inferred from the stamps when None).
        """
        what = where(path, self.name)
        intraday = "trade_time" in raw.columns  # stk_mins / pro_bar(freq="5min"): Beijing bar END stamps
        if intraday:
            if freq in DAILY_FREQS:
                raise DataValidationError(f"{what}: intraday trade_time stamps but freq={freq!r}")
            # pro_bar adds trade_date (the stamp's date) and pre_close (the previous BAR's close, not
            # a session preclose: the A-share limit rules would misread it)
            raw = raw.drop(columns=[c for c in ("trade_date", "pre_close") if c in raw.columns])
            raw = raw.rename(columns={"trade_time": "time"})
        df = rename(raw, _COLUMNS)
        require_columns(df, ["time", "tic", "open", "high", "low", "close", "volume"], what, self.name)
        # daily exports: vol in lots, amount in thousand CNY; minute bars: shares and CNY already
        vol_unit, amount_unit = (1.0, 1.0) if intraday else (100.0, 1000.0)
        df = df.assign(
            tic=ashare_codes(df["tic"], index=asset == "index", what=what),
            volume=to_numeric_checked(df["volume"], "vol", what) * vol_unit,
        )
        if "amount" in df.columns:  # Tushare's unit in every export (FinRL-Meta keeps it too)
            df["amount"] = to_numeric_checked(df["amount"], "amount", what) * amount_unit
        for c in ("change", "pct_chg"):
            if c in df.columns and not keep_extra:
                df = df.drop(columns=c)
        if adjust != "none":
            if "adj_factor" not in df.columns:
                raise DataValidationError(f"{what}: adjust={adjust!r} needs an adj_factor column")
            fac = to_numeric_checked(df["adj_factor"], "adj_factor", what)
            if adjust == "qfq":
                order = pd.to_datetime(df["time"].astype(str), format="mixed")
                last = fac.groupby(df["tic"]).transform(lambda f: f.loc[order.loc[f.index].idxmax()])
                fac = fac / last
            for c in _PRICES:
                if c in df.columns:
                    df[c] = to_numeric_checked(df[c], c, what) * fac
            df = df.drop(columns="adj_factor")
        if intraday:  # Beijing bar ends -> UTC bar opens, like every other intraday source
            times = parse_times(df["time"].astype(str), what)
            df = df.assign(time=to_canonical_times(times, df["tic"], what, freq=_bar_freq(freq),
                                                   tz=TZ, label="end"))
        else:
            fmt = "%Y%m%d" if pd.Series(df["time"]).astype(str).str.fullmatch(r"\d{8}").all() else None
            times = parse_times(df["time"].astype(str), what, fmt=fmt)
            df = df.assign(time=to_canonical_times(times, df["tic"], what, freq=freq if freq else "1d"))
        return finalize(df, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)

"""``netease``: the NetEase (163.com) historical-quote CSV export (file-only; the service is gone).

Format: Chinese headers 日期 (date), 股票代码 (code written ``'000300``), 名称 (name), 收盘价
(close), 最高价 (high), 最低价 (low), 开盘价 (open), 前收盘 (previous close), 涨跌额, 涨跌幅 (%),
换手率 (%), 成交量 (volume), 成交金额 (amount, CNY), 总市值, 流通市值; **newest first**;
encoded GBK (the original export) or UTF-8 (both are read); ``None`` in empty cells.

Canonical: ``'000300`` -> ``000300.SH`` (indices: a bare 000xxx code whose 名称 names an index --
沪深300, 上证..., 中证..., ...指数 -- is an SSE/CSI index; 399xxx is SZSE; stocks by first digit;
override with ``index=True/False``). preclose = 前收盘. Volume: NetEase writes **lots** (手) for
indices (checked: CSI 300 x 100 = baostock volume) and shares for stocks; ``volume_unit="auto"``
(default) uses lots for indices, and for stocks picks lots when 成交金额 / (成交量 x 收盘价) is near
100 rather than 1; ``"lots"``/``"shares"`` force it. Prices are unadjusted (stocks) / index points.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from finmeta.errors import DataValidationError

from ._common import ashare_codes, finalize, parse_times, rename, require_columns, to_canonical_times, \
    to_numeric_checked, where
from .base import DataSource

_COLUMNS = {"日期": "time", "股票代码": "tic", "收盘价": "close", "最高价": "high", "最低价": "low", "开盘价": "open",
            "前收盘": "preclose", "成交量": "volume", "成交金额": "amount"}
_INDEX_WORDS = ("指", "沪深", "上证", "中证", "深证")


class NeteaseSource(DataSource):
    """NetEase 163 CSV export (Chinese headers, newest first, 'code, GBK or UTF-8); file import only."""

    name = "netease"
    calendar = "XSHG"

    def _read_raw(self, path: Path, **options) -> pd.DataFrame:
        last: Exception | None = None
        for enc in ("utf-8-sig", "gb18030"):
            try:
                return pd.read_csv(path, encoding=enc, dtype={"股票代码": str})
            except UnicodeDecodeError as exc:
                last = exc
        raise DataValidationError(f"{path}: neither UTF-8 nor GBK text: {last}")

    def normalize(
        self,
        raw: pd.DataFrame,
        *,
        path: str | Path | None = None,
        index: bool | None = None,
        volume_unit: str = "auto",
        keep_extra: bool = False,
        freq: str | None = None,
        **_: object,
    ) -> pd.DataFrame:
        """NetEase frame (n, 15) -> canonical frame (shares, CNY), oldest first.

        Args:
            index: treat bare codes as index codes (None = from 名称).
            volume_unit: ``auto`` | ``lots`` | ``shares``.
        """
        what = where(path, self.name)
        if volume_unit not in ("auto", "lots", "shares"):
            raise DataValidationError(f"{what}: volume_unit must be auto, lots or shares, not {volume_unit!r}")
        require_columns(raw, ["日期", "股票代码", "开盘价", "最高价", "最低价", "收盘价", "成交量"], what, self.name)
        df = rename(raw, _COLUMNS)
        code = df["tic"].astype(str).str.strip().str.lstrip("'").str.zfill(6)
        if index is None:
            names = df["名称"].astype(str) if "名称" in df.columns else pd.Series("", index=df.index)
            is_index = names.map(lambda n: any(w in n for w in _INDEX_WORDS)) & code.str.match(r"^(000|399)")
        else:
            is_index = pd.Series(bool(index), index=df.index)
        tic = pd.Series(index=df.index, dtype=object)
        if is_index.any():
            tic[is_index] = ashare_codes(code[is_index], index=True, what=what)
        if (~is_index).any():
            tic[~is_index] = ashare_codes(code[~is_index], index=False, what=what)
        volume = to_numeric_checked(df["volume"], "成交量", what)
        lots = is_index.to_numpy().copy()
        if volume_unit == "lots":
            lots[:] = True
        elif volume_unit == "shares":
            lots[:] = False
        elif "amount" in df.columns and (~is_index).any():
            amount = to_numeric_checked(df["amount"], "成交金额", what)
            close = to_numeric_checked(df["close"], "收盘价", what)
            ratio = (amount / (volume * close)).where(volume > 0)
            for t in tic[~is_index].unique():
                m = (tic == t).to_numpy()
                med = float(np.nanmedian(ratio[m])) if np.isfinite(ratio[m]).any() else 1.0
                lots[m] = med > 10.0
        df = df.assign(tic=tic.astype(str), volume=np.where(lots, volume * 100.0, volume))
        times = parse_times(df["time"].astype(str), what)
        if freq not in (None, "1d"):
            raise DataValidationError(f"{what}: NetEase exports are daily; freq={freq!r} does not apply")
        df = df.assign(time=to_canonical_times(times, df["tic"], what, freq="1d"))
        extras = ["名称", "涨跌额", "涨跌幅", "换手率", "总市值", "流通市值"]
        if not keep_extra:
            df = df.drop(columns=[c for c in extras if c in df.columns])
        return finalize(df, what, source=self.name, calendar=self.calendar, keep_extra=keep_extra)

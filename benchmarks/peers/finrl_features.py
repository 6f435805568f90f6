"""FinRL 0.3.7's own feature engineering (``FeatureEngineer``), loaded by file path.

finrl is installed with ``--no-deps`` and importing the ``finrl`` package fails (its
``__init__`` pulls in alpaca, wrds, ...), so this loads
``finrl/meta/preprocessor/preprocessors.py`` by path. Its imports need ``finrl.config`` (loaded by
path too: plain constants) and ``finrl.meta.preprocessor.yahoodownloader.YahooDownloader`` (it
imports yfinance and downloads); both are put into ``sys.modules`` only while the file executes,
then the previous entries are restored, so nothing else sees them.

VIX: FinRL's ``add_vix`` downloads ``^VIX`` with ``YahooDownloader(start_date=df.date.min(),
end_date=df.date.max())``. The loaded module's ``YahooDownloader`` is replaced by
:class:`FileVixDownloader`, which returns the same columns from a VIX file with yfinance's
``[start, end)`` semantics (end exclusive) -- as FinRL would get online, so FinRL's inner merge
drops the panel's last date, exactly as it does with a live download.
"""

from __future__ import annotations

import contextlib
import io
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import FinRLNotInstalled, exec_finrl_file, finrl_root

__all__ = ["FinRLNotInstalled", "FileVixDownloader", "finrl_root", "load_preprocessors", "run_feature_engineer",
           "to_finrl_frame"]


class FileVixDownloader:
    """Stand-in for FinRL's ``YahooDownloader`` that reads ``^VIX`` from a file.

    Same constructor and ``fetch_data()`` output as FinRL's: columns ``date`` (``%Y-%m-%d``
    strings), ``open, high, low, close, volume, tic, day``, rows ``start_date <= date < end_date``.
    """

    vix_frame: pd.DataFrame | None = None  # set by load_preprocessors

    def __init__(self, start_date: str, end_date: str, ticker_list: list[str], **_: Any) -> None:
        self.start_date, self.end_date, self.ticker_list = str(start_date), str(end_date), list(ticker_list)

    def fetch_data(self, proxy: Any = None) -> pd.DataFrame:
        if self.vix_frame is None:
            raise FinRLNotInstalled("FileVixDownloader: no VIX file was given")
        d = self.vix_frame
        d = d[d["tic"].isin(self.ticker_list)]
        d = d[(d["date"] >= self.start_date) & (d["date"] < self.end_date)]
        if d.empty:
            raise ValueError("no data is fetched.")
        return d.sort_values(["date", "tic"]).reset_index(drop=True)


def read_vix_for_finrl(path: str | Path) -> pd.DataFrame:
    """The shared ``indices_dji_vix_daily.csv.gz`` in the shape FinRL's downloader returns."""
    d = pd.read_csv(path)
    d = d[d["tic"] == "^VIX"].copy()
    dates = pd.to_datetime(d["date"])
    d["day"] = dates.dt.day_of_week
    d["date"] = dates.dt.strftime("%Y-%m-%d")
    return d[["date", "open", "high", "low", "close", "volume", "tic", "day"]].reset_index(drop=True)


def load_preprocessors(vix_path: str | Path | None = None) -> types.ModuleType:
    """FinRL's ``preprocessors`` module, loaded by path, its downloader reading ``vix_path``."""
    root = finrl_root()
    path = root / "meta" / "preprocessor" / "preprocessors.py"
    config = exec_finrl_file("_finrl_peer_config", root / "config.py")
    ydl = types.ModuleType("finrl.meta.preprocessor.yahoodownloader")
    ydl.YahooDownloader = FileVixDownloader
    pkg = types.ModuleType("finrl")
    pkg.__path__ = []  # a package, so "from finrl import config" resolves the attribute
    pkg.config = config
    stubs = {
        "finrl": pkg,
        "finrl.config": config,
        "finrl.meta": types.ModuleType("finrl.meta"),
        "finrl.meta.preprocessor": types.ModuleType("finrl.meta.preprocessor"),
        "finrl.meta.preprocessor.yahoodownloader": ydl,
    }
    module = exec_finrl_file("_finrl_peer_preprocessors", path, stubs)
    downloader = type("FileVixDownloader", (FileVixDownloader,), {})
    downloader.vix_frame = read_vix_for_finrl(vix_path) if vix_path is not None else None
    module.YahooDownloader = downloader
    return module


def to_finrl_frame(df: pd.DataFrame) -> pd.DataFrame:
    """Canonical frame -> FinRL's input (``date`` as ``%Y-%m-%d`` strings, ``tic``, OHLCV)."""
    out = df[["time", "tic", "open", "high", "low", "close", "volume"]].copy()
    out.insert(0, "date", pd.to_datetime(out.pop("time")).dt.strftime("%Y-%m-%d"))
    out["tic"] = out["tic"].astype(str)
    return out.reset_index(drop=True)


def run_feature_engineer(
    df: pd.DataFrame,
    indicators: list[str],
    vix_path: str | Path,
    *,
    use_vix: bool = True,
    use_turbulence: bool = True,
    module: types.ModuleType | None = None,
    quiet: bool = True,
) -> tuple[pd.DataFrame, dict[str, float]]:
    """Run FinRL's ``FeatureEngineer.preprocess_data`` on a FinRL-format frame, timing each stage.

    Returns:
        ``(frame, seconds)`` with seconds for ``clean``, ``indicators``, ``vix``, ``turbulence``,
        ``fill`` (its final ``ffill().bfill()``) and ``total``.
    """
    mod = module or load_preprocessors(vix_path)
    fe = mod.FeatureEngineer(use_technical_indicator=True, tech_indicator_list=list(indicators),
                             use_vix=use_vix, use_turbulence=use_turbulence, user_defined_feature=False)
    seconds: dict[str, float] = {}

    def timed(stage: str, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - t0
        return wrapper

    fe.clean_data = timed("clean", fe.clean_data)
    fe.add_technical_indicator = timed("indicators", fe.add_technical_indicator)
    fe.add_vix = timed("vix", fe.add_vix)
    fe.add_turbulence = timed("turbulence", fe.add_turbulence)
    sink = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        out = fe.preprocess_data(df)
    seconds["total"] = time.perf_counter() - t0
    seconds["fill"] = seconds["total"] - sum(v for k, v in seconds.items() if k != "total")
    return out, seconds


def finrl_turbulence(df: pd.DataFrame, module: types.ModuleType | None = None) -> pd.Series:
    """FinRL's ``calculate_turbulence`` (close prices, 252-day lookback) as a Series by date."""
    mod = module or load_preprocessors(None)
    fe = mod.FeatureEngineer()
    t = fe.calculate_turbulence(df)
    return pd.Series(np.asarray(t["turbulence"], dtype=np.float64), index=pd.to_datetime(t["date"]),
                     name="turbulence")

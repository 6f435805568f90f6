"""News sentiment: NLTK's VADER analyser, offline, aggregated to one score per trading session.

Lexicon (no download): the ``vaderSentiment`` package ships ``vader_lexicon.txt``. NLTK's
``SentimentIntensityAnalyzer`` looks for ``sentiment/vader_lexicon.zip`` on ``nltk.data.path``,
so :func:`ensure_vader_lexicon` zips that file as
``$FINMETA_HOME/nltk_data/sentiment/vader_lexicon.zip`` (member ``vader_lexicon/vader_lexicon.txt``)
once and puts ``$FINMETA_HOME/nltk_data`` on ``nltk.data.path`` (``lexicon_file="file:..."`` is
refused by nltk 3.10's path check).

Normalised news frame (:func:`read_news` and friends produce it; shape (n, 3+)):

=============  ==========================================================================
``published``  tz-aware UTC timestamp (timestamped news), or tz-naive midnight (dated only)
``tic``        ticker, or empty string for market-wide (untickered) news
``text``       headline (+ description), HTML entities unescaped, whitespace collapsed
=============  ==========================================================================

Which session a headline belongs to (never the past of its publication):

* dated only (no time of day, e.g. the Corizzo file): the **next** session strictly after the date;
  the headline may have appeared after that day's close;
* timestamped (e.g. BBC RSS, GMT): the first session whose close (exchange-calendars, early
  closes included) is *after* the timestamp, i.e. the same session when published before the
  close, else the next one (nights, weekends and holidays roll forward).

Daily score: the mean VADER ``compound`` (in [-1, 1]) of the session's headlines, per ticker, or
market-wide for untickered news. Exact duplicates (same ``published``, ``tic``, ``text``) count once.
"""

from __future__ import annotations

import functools
import html
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from finmeta.errors import ConfigError, DataValidationError
from finmeta.paths import finmeta_home
from finmeta.timeparse import utc_wall

LEXICON_MEMBER = "vader_lexicon/vader_lexicon.txt"
_WS = re.compile(r"\s+")


# --------------------------------------------------------------------------------------------
# VADER, offline
# --------------------------------------------------------------------------------------------
def ensure_vader_lexicon(home: Path | None = None) -> Path:
    """Create ``<home>/nltk_data/sentiment/vader_lexicon.zip`` if needed; put it on nltk's path.

    Returns:
        The nltk data directory added to ``nltk.data.path``.
    """
    import nltk
    import vaderSentiment

    data_dir = Path(home or finmeta_home()) / "nltk_data"
    target = data_dir / "sentiment" / "vader_lexicon.zip"
    source = Path(vaderSentiment.__file__).with_name("vader_lexicon.txt")
    if not source.is_file():
        raise ConfigError(f"vaderSentiment's lexicon is missing at {source}; reinstall vaderSentiment")
    if not target.is_file():
        import io

        from finmeta.fs import write_atomic

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.write(source, LEXICON_MEMBER)
        write_atomic(target, buf.getvalue())  # fsync + rename: a crash never leaves half a zip
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    return data_dir


@functools.lru_cache(maxsize=4)
def _analyzer(data_dir: str):
    from nltk.sentiment.vader import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


def vader_analyzer():
    """An NLTK ``SentimentIntensityAnalyzer`` reading the vaderSentiment lexicon offline."""
    return _analyzer(str(ensure_vader_lexicon()))


def score_texts(texts) -> np.ndarray:
    """VADER compound score of each text.

    Args:
        texts: (n,) strings.

    Returns:
        (n,) float64 in [-1, 1]; each distinct text is scored once.
    """
    texts = pd.Series(list(texts), dtype=object)
    if texts.empty:
        return np.zeros(0)
    codes, uniques = pd.factorize(texts)
    sia = vader_analyzer()
    scores = np.array([sia.polarity_scores(str(u))["compound"] for u in uniques], dtype=np.float64)
    return scores[codes]


# --------------------------------------------------------------------------------------------
# reading news files
# --------------------------------------------------------------------------------------------
def clean_text(s: pd.Series) -> pd.Series:
    """Unescape HTML entities (``&amp;`` -> ``&``) and collapse whitespace."""
    return s.fillna("").astype(str).map(lambda x: _WS.sub(" ", html.unescape(x)).strip())


def normalize_news(
    df: pd.DataFrame,
    *,
    time_col: str,
    text_cols: tuple[str, ...],
    tic_col: str | None = None,
    where: str = "news",
) -> pd.DataFrame:
    """Any headline table -> the normalised news frame (module docstring); drops exact duplicates.

    A time column holding only dates (no time of day) is read as *dated only* (tz-naive);
    timestamps with a zone are converted to UTC; timestamps without a zone are an error (ambiguous).
    """
    missing = [c for c in (time_col, *text_cols, *([tic_col] if tic_col else [])) if c not in df.columns]
    if missing:
        raise DataValidationError(f"{where}: missing column(s) {missing}; found {list(df.columns)}")
    raw = df[time_col].astype(str).str.strip()
    try:
        if raw.str.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{8}").all():
            published = pd.to_datetime(raw, format="mixed").dt.normalize()
        else:
            published = pd.to_datetime(raw, utc=False, format="mixed")
            if getattr(published.dt, "tz", None) is None:
                raise DataValidationError(
                    f"{where}: column {time_col!r} has times of day without a time zone; give UTC offsets")
            published = published.dt.tz_convert("UTC")
    except (ValueError, TypeError) as exc:
        bad = next((i for i, v in enumerate(raw) if pd.isna(pd.to_datetime(v, errors="coerce"))), 0)
        raise DataValidationError(f"{where}: row {bad}: unparsable {time_col} {raw.iloc[bad]!r} ({exc})") from None
    text = clean_text(df[text_cols[0]])
    for c in text_cols[1:]:
        extra = clean_text(df[c])
        text = (text + ". " + extra).where(extra != "", text)
    tic = (df[tic_col].fillna("").astype(str).str.strip() if tic_col else pd.Series("", index=df.index))
    out = pd.DataFrame({"published": published.to_numpy(), "tic": tic.to_numpy(), "text": text.to_numpy()})
    out = out[out["text"] != ""]
    out = out.drop_duplicates(["published", "tic", "text"]).sort_values(["published", "tic"], kind="stable")
    return out.reset_index(drop=True)


def read_news(path: str | Path) -> pd.DataFrame:
    """Read a news CSV: the Corizzo per-ticker file (date, ticker, headline), an RSS dump
    (title, pubDate, description) or a generic (time|date, [tic|ticker], headline|text|title) file."""
    p = Path(path)
    if not p.exists():
        raise DataValidationError(f"{p}: news file not found")
    df = pd.read_csv(p)
    cols = set(df.columns)
    if {"title", "pubDate"} <= cols:
        text_cols = ("title", "description") if "description" in cols else ("title",)
        return normalize_news(df, time_col="pubDate", text_cols=text_cols, where=str(p))
    time_col = next((c for c in ("published", "time", "date", "datetime") if c in cols), None)
    text_col = next((c for c in ("text", "headline", "title") if c in cols), None)
    tic_col = next((c for c in ("tic", "ticker", "symbol") if c in cols), None)
    if time_col is None or text_col is None:
        raise DataValidationError(f"{p}: cannot tell the time and text columns in {sorted(cols)}")
    return normalize_news(df, time_col=time_col, text_cols=(text_col,), tic_col=tic_col, where=str(p))


# --------------------------------------------------------------------------------------------
# sessions
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def _sessions(calendar: str, start_year: int, end_year: int) -> tuple[pd.DatetimeIndex, pd.DatetimeIndex]:
    import exchange_calendars as xcals

    try:
        with warnings.catch_warnings():  # exchange-calendars' own pandas deprecation warnings
            warnings.simplefilter("ignore")
            cal = xcals.get_calendar(calendar, start=f"{start_year}-01-01", end=f"{end_year}-12-31")
    except xcals.errors.InvalidCalendarName:
        raise ConfigError(f"sentiment: unknown calendar {calendar!r} (use an exchange-calendars code)") from None
    sessions = utc_wall(cal.sessions)
    closes = pd.DatetimeIndex(cal.closes.to_numpy())
    closes = closes.tz_localize("UTC") if closes.tz is None else closes.tz_convert("UTC")
    return pd.DatetimeIndex(sessions), closes


def assign_sessions(published: pd.Series, calendar: str = "XNYS") -> pd.Series:
    """The trading session each headline counts for (see the module docstring).

    Args:
        published: (n,) tz-naive dates (dated only), tz-aware timestamps, or a mix of both
            (object dtype, e.g. two sources concatenated).

    Returns:
        (n,) tz-naive session dates (NaT past the calendar's end).
    """
    p = pd.Series(published)
    vals = np.full(len(p), np.datetime64("NaT"), dtype="datetime64[ns]")
    if p.empty:
        return pd.Series(vals, index=p.index)
    if isinstance(p.dtype, pd.DatetimeTZDtype):
        aware = np.ones(len(p), dtype=bool)
    elif pd.api.types.is_datetime64_dtype(p.dtype):
        aware = np.zeros(len(p), dtype=bool)
    else:
        aware = p.map(lambda x: getattr(x, "tzinfo", None) is not None).to_numpy(dtype=bool)
    naive_t = pd.DatetimeIndex(pd.to_datetime(p[~aware].tolist())) if (~aware).any() else None
    aware_t = pd.DatetimeIndex(pd.to_datetime(p[aware].tolist(), utc=True)) if aware.any() else None
    years = [t for t in (naive_t, aware_t) if t is not None and len(t)]
    lo = min(int(t.min().year) for t in years)
    hi = max(int(t.max().year) for t in years)
    sessions, closes = _sessions(calendar, lo, hi + 1)
    for mask, t in ((~aware, naive_t), (aware, aware_t)):
        if t is None:
            continue
        if mask is aware:  # timestamped: first session whose close is after the timestamp
            idx = closes.searchsorted(t, side="right")
        else:              # dated only: next session strictly after the date
            idx = sessions.searchsorted(t.normalize(), side="right")
        ok = idx < len(sessions)
        sub = np.full(len(t), np.datetime64("NaT"), dtype="datetime64[ns]")
        sub[ok] = sessions.to_numpy()[idx[ok]]
        vals[np.flatnonzero(mask)] = sub
    return pd.Series(vals, index=p.index)


def daily_sentiment(news: pd.DataFrame, *, calendar: str = "XNYS") -> pd.DataFrame:
    """Mean VADER compound per (session, ticker); untickered news gives market-wide rows.

    Args:
        news: normalised news frame (module docstring).
        calendar: exchange-calendars code of the market the sessions belong to.

    Returns:
        Frame ``time, tic, sentiment, n_news`` sorted by (time, tic); ``tic == ""`` marks the
        market-wide score of untickered headlines. Sessions without news have no row.
    """
    for c in ("published", "tic", "text"):
        if c not in news.columns:
            raise DataValidationError(f"sentiment: the news frame lacks column {c!r}; use read_news()")
    d = news.drop_duplicates(["published", "tic", "text"])
    session = assign_sessions(d["published"], calendar)
    d = pd.DataFrame({"time": session.to_numpy(), "tic": d["tic"].astype(str).to_numpy(),
                      "score": score_texts(d["text"])}).dropna(subset=["time"])
    g = d.groupby(["time", "tic"], sort=True)["score"]
    out = pd.DataFrame({"sentiment": g.mean(), "n_news": g.size()}).reset_index()
    return out


MARKET = ""


def sentiment_columns(
    times: np.ndarray, tics: np.ndarray, daily: pd.DataFrame
) -> dict[str, np.ndarray]:
    """Per-row sentiment features for a long frame's rows.

    Args:
        times: (R,) row times (tz-naive dates).
        tics: (R,) row tickers.
        daily: output of :func:`daily_sentiment` (with ``tic``; ``""`` = market-wide) or a frame
            ``time, sentiment`` without ``tic`` (market-wide).

    Returns:
        ``{"sentiment": (R,)}`` -- the row's ticker score, or the market-wide score when ``daily``
        holds market-wide rows only -- plus ``{"market_sentiment": (R,)}`` when it holds both.
        0.0 on sessions without news (neutral).
    """
    if "time" not in daily.columns or "sentiment" not in daily.columns:
        raise DataValidationError(
            f"sentiment: the daily frame needs columns time, sentiment[, tic]; got {list(daily.columns)}")
    d = daily
    if "tic" not in d.columns:
        d = d.assign(tic=MARKET)
    d = d.assign(time=pd.to_datetime(d["time"]).dt.normalize(), tic=d["tic"].fillna(MARKET).astype(str))
    key_t = pd.DatetimeIndex(times).normalize()
    market = d[d["tic"] == MARKET].groupby("time")["sentiment"].mean()
    per_tic = d[d["tic"] != MARKET].set_index(["time", "tic"])["sentiment"]
    if per_tic.index.has_duplicates:
        raise DataValidationError("sentiment: duplicate (time, tic) rows in the daily sentiment frame")
    out: dict[str, np.ndarray] = {}
    mkt = market.reindex(key_t).fillna(0.0).to_numpy() if len(market) else None
    if len(per_tic):
        idx = pd.MultiIndex.from_arrays([key_t, pd.Index(np.asarray(tics).astype(str))])
        out["sentiment"] = per_tic.reindex(idx).fillna(0.0).to_numpy()
        if mkt is not None:
            out["market_sentiment"] = mkt
    elif mkt is not None:
        out["sentiment"] = mkt
    else:
        out["sentiment"] = np.zeros(len(key_t))
    return out

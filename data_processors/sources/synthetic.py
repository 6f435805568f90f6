"""The ``synthetic`` source: a seeded, offline multi-asset daily market calibrated on the Dow 30.

It lets the quickstart (and every test that needs "a market") run anywhere without data files or
network. ``download(tickers, start, end, seed=0)`` returns the canonical long frame
(:mod:`data_processors.schema`) on XNYS sessions in ``[start, end)``.

Model (all in daily log returns; T sessions, N assets, K factors, S regimes)::

    r[t, i] = mu[i] + sigma[i] * ( sum_k L[i, k] * f[t, k] + sqrt(1 - |L[i]|^2) * e[t, i] )

    f[t, k] = m[s_t, k] + c[s_t, k] * sqrt(h[t, k]) * z[t, k]     (K common factors)
    e[t, i] =              d[s_t]   * sqrt(g[t, i]) * eps[t, i]    (idiosyncratic parts)

* ``s_t``: a Markov chain over S regimes (fitted on the Dow 30: bull / bear / crisis) changing the market
  factor's drift ``m``, the factor and idiosyncratic vol scales ``c``/``d`` and, through their
  ratio, the cross-asset correlation (correlations rise in the crisis regime).
* ``h``, ``g``: GARCH(1,1) variances with unit unconditional mean (variance targeting):
  ``h[t+1] = (1 - a - b) + a * h[t] * z[t]^2 + b * h[t]`` -> volatility clustering.
* ``z``, ``eps``: unit-variance Student-t innovations -> fat tails beyond what GARCH gives.
* ``L`` (N, K): factor loadings from the Dow 30 correlation matrix (principal components), so
  ``L @ L.T`` reproduces the calibrated correlation structure.
* The regime and GARCH scales are normalised so that ``Var(f) = Var(e) = 1`` under the stationary
  regime distribution; hence ``std(r[:, i]) = sigma[i]`` and ``mean(r[:, i]) = mu[i]``.

fBm option (``hurst=H``): ``z`` and ``eps`` are fractional Gaussian noise with Hurst exponent H
(exact Davies-Harte circulant embedding), so each log-price is a (correlated) geometric
fractional Brownian motion. By default GARCH and regimes are switched off in this mode so the
increments are exactly fGn; pass ``garch=True`` / ``regimes=True`` to combine them.

OHLC from the close path: the overnight gap is drawn conditionally on the day's return
(Gaussian bridge split with overnight variance share ``q``), the high and low are the exact
maximum / minimum of a Brownian bridge from open to close with the day's conditional intraday
vol (times a calibrated range scale), so ``low <= min(open, close) <= max(open, close) <= high``
holds by construction. Log volume = per-asset level + AR(1) deviation + a response to |return|.

Asset ``i`` takes calibrated profile ``i mod 29`` (vol, drift, loadings); names do not matter,
only the position in ``tickers``. Same seed -> bitwise identical frame.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import pandas as pd
from scipy.signal import lfilter

from finmeta.errors import ConfigError, DataSourceError, DataValidationError
from finmeta.timeparse import utc_wall

from ..schema import REQUIRED_COLUMNS
from .base import DataSource

#: The committed calibration (fitted by ``data_processors/sources/calibrate_synthetic.py``).
DEFAULT_PARAMS_PATH: Path = Path(__file__).resolve().parent.parent / "params" / "synthetic_dow30.json"

_KNOWN_OPTIONS = ("hurst", "garch", "regimes", "params", "start_price")


# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _load_json(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"synthetic params file {path}: cannot read ({exc})") from None


def load_params(params: str | Path | Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The calibrated parameters: the committed Dow 30 fit, a JSON path, or a dict (returned as is)."""
    if params is None:
        return copy.deepcopy(_load_json(str(DEFAULT_PARAMS_PATH)))
    if isinstance(params, Mapping):
        return dict(params)
    return copy.deepcopy(_load_json(str(Path(params).expanduser().resolve())))


@dataclass(frozen=True)
class _Model:
    """The arrays of a parameter set, cut to N assets (profile ``i mod N_cal``)."""

    mu: np.ndarray  # (N,)
    sigma: np.ndarray  # (N,)
    loadings: np.ndarray  # (N, K)
    idio_w: np.ndarray  # (N,) sqrt(1 - |L_i|^2)
    transition: np.ndarray  # (S, S)
    stationary: np.ndarray  # (S,)
    factor_mean: np.ndarray  # (S, K)
    factor_scale: np.ndarray  # (S, K)
    idio_scale: np.ndarray  # (S,)
    garch_factor: tuple[float, float, float]  # alpha, beta, nu
    garch_idio: tuple[float, float, float]
    overnight_share: float
    range_scale: float
    volume: dict[str, float]
    price: dict[str, float]

    @classmethod
    def from_params(cls, p: Mapping[str, Any], n: int) -> "_Model":
        try:
            a = p["assets"]
            idx = np.arange(n) % len(a["sigma"])
            L = np.asarray(a["loadings"], dtype=np.float64)[idx]
            reg = p["regimes"]
            g = p["garch"]
            k = L.shape[1]
            s_ = np.asarray(reg["transition"]).shape[0]
            shapes = {"assets.mu": (np.shape(a["mu"]), (len(a["sigma"]),)),
                      "assets.loadings": (np.shape(a["loadings"]), (len(a["sigma"]), k)),
                      "regimes.transition": (np.shape(reg["transition"]), (s_, s_)),
                      "regimes.stationary": (np.shape(reg["stationary"]), (s_,)),
                      "regimes.factor_mean": (np.shape(reg["factor_mean"]), (s_, k)),
                      "regimes.factor_scale": (np.shape(reg["factor_scale"]), (s_, k)),
                      "regimes.idio_scale": (np.shape(reg["idio_scale"]), (s_,))}
            for key, (got, want) in shapes.items():
                if tuple(got) != want:
                    raise ValueError(f"{key} has shape {tuple(got)}, expected {want}")
            for part in ("factor", "idio"):
                ga, gb, gnu = (float(g[part][x]) for x in ("alpha", "beta", "nu"))
                if not (ga >= 0 and gb >= 0 and ga + gb < 1 and gnu > 2):
                    raise ValueError(f"garch.{part} needs alpha, beta >= 0, alpha + beta < 1, nu > 2")
            return cls(
                mu=np.asarray(a["mu"], dtype=np.float64)[idx],
                sigma=np.asarray(a["sigma"], dtype=np.float64)[idx],
                loadings=L,
                idio_w=np.sqrt(np.clip(1.0 - (L**2).sum(1), 1e-6, None)),
                transition=np.asarray(reg["transition"], dtype=np.float64),
                stationary=np.asarray(reg["stationary"], dtype=np.float64),
                factor_mean=np.asarray(reg["factor_mean"], dtype=np.float64),
                factor_scale=np.asarray(reg["factor_scale"], dtype=np.float64),
                idio_scale=np.asarray(reg["idio_scale"], dtype=np.float64),
                garch_factor=(float(g["factor"]["alpha"]), float(g["factor"]["beta"]), float(g["factor"]["nu"])),
                garch_idio=(float(g["idio"]["alpha"]), float(g["idio"]["beta"]), float(g["idio"]["nu"])),
                overnight_share=float(p["ohlc"]["overnight_share"]),
                range_scale=float(p["ohlc"]["range_scale"]),
                volume={k: float(v) for k, v in p["volume"].items()},
                price={k: float(v) for k, v in p["price"].items()},
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"synthetic params: missing or malformed entry ({type(exc).__name__}: {exc})") from None


# ------------------------------------------------------------------------------------------------
# building blocks (pure numpy, seeded generators passed in)
# ------------------------------------------------------------------------------------------------
def fgn_autocovariance(hurst: float, n: int) -> np.ndarray:
    """Autocovariance of unit-variance fractional Gaussian noise at lags ``0..n-1``: shape (n,).

    ``gamma(k) = (|k+1|^{2H} - 2|k|^{2H} + |k-1|^{2H}) / 2``.
    """
    k = np.arange(n, dtype=np.float64)
    h2 = 2.0 * hurst
    return 0.5 * (np.abs(k + 1) ** h2 - 2.0 * k**h2 + np.abs(k - 1) ** h2)


def fractional_gaussian_noise(hurst: float, n: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``m`` independent unit-variance fGn series of length ``n``: shape (n, m).

    Exact Davies-Harte (Wood-Chan) circulant embedding: the covariance row
    ``[g0, ..., g_{n-1}, g_{n-2}, ..., g1]`` (length 2n-2) has a non-negative FFT for fGn with any
    H in (0, 1); one complex FFT of ``sqrt(lambda / M) * (W1 + i W2)`` gives two independent
    series (real and imaginary parts). Increments of fBm with Hurst H; H = 0.5 is white noise.
    """
    if not 0.0 < hurst < 1.0:
        raise ConfigError(f"synthetic: hurst must lie in (0, 1), got {hurst!r}")
    if n == 1:
        return rng.standard_normal((1, m))
    gamma = fgn_autocovariance(hurst, n)
    row = np.concatenate([gamma, gamma[-2:0:-1]])  # (M,) M = 2n - 2
    big_m = row.size
    lam = np.fft.fft(row).real
    lam = np.clip(lam, 0.0, None)  # tiny negative round-off only; exact theory gives lam >= 0
    n_pairs = (m + 1) // 2
    w = rng.standard_normal((2, big_m, n_pairs))
    y = np.fft.fft(np.sqrt(lam / big_m)[:, None] * (w[0] + 1j * w[1]), axis=0)[:n]
    return np.concatenate([y.real, y.imag], axis=1)[:, :m]


def standardized_t(rng: np.random.Generator, nu: float, shape: tuple[int, ...]) -> np.ndarray:
    """Student-t draws scaled to unit variance (``nu > 2``); Gaussian for ``nu >= 200``."""
    if nu >= 200.0:
        return rng.standard_normal(shape)
    return rng.standard_t(nu, size=shape) * np.sqrt((nu - 2.0) / nu)


def markov_chain(transition: np.ndarray, stationary: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A regime path of length ``n`` (int64), started from the stationary distribution."""
    cum = np.cumsum(transition, axis=1)
    cum[:, -1] = 1.0
    u = rng.random(n)
    s = np.empty(n, dtype=np.int64)
    state = int(np.searchsorted(np.cumsum(stationary) / stationary.sum(), u[0], side="right"))
    state = min(state, len(stationary) - 1)
    s[0] = state
    rows = cum.tolist()
    for t in range(1, n):
        r = rows[state]
        state = 0
        while u[t] >= r[state]:
            state += 1
        s[t] = state
    return s


def garch_scale(innov: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Conditional std ``sqrt(h)`` of unit-variance GARCH(1,1) driven by ``innov``: (T, M) -> (T, M).

    ``h[0] = 1``, ``h[t+1] = (1 - alpha - beta) + (alpha * innov[t]^2 + beta) * h[t]`` per column.
    """
    t_len, m = innov.shape
    omega = 1.0 - alpha - beta
    coef = alpha * innov**2 + beta  # (T, M)
    h = np.empty((t_len, m))
    cur = np.ones(m)
    for t in range(t_len):
        h[t] = cur
        cur = omega + coef[t] * cur
    return np.sqrt(h)


def bridge_extremes(
    d: np.ndarray, s: np.ndarray, u_high: np.ndarray, u_low: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Max and min of a Brownian bridge from 0 to ``d`` with total variance ``s^2``: all (T, N).

    Exact inversion of ``P(max >= m) = exp(-2 m (m - d) / s^2)`` (m >= max(0, d)), likewise for
    the minimum; ``u_*`` are uniforms in (0, 1]. Returns ``(mx >= max(0, d), mn <= min(0, d))``.
    """
    s2 = s * s
    mx = 0.5 * (d + np.sqrt(d * d - 2.0 * s2 * np.log(u_high)))
    mn = 0.5 * (d - np.sqrt(d * d - 2.0 * s2 * np.log(u_low)))
    return np.maximum(mx, np.maximum(d, 0.0)), np.minimum(mn, np.minimum(d, 0.0))


def ohlc_from_returns(
    log_ret: np.ndarray,
    cond_vol: np.ndarray,
    start_price: np.ndarray,
    overnight_share: float,
    range_scale: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Open, high, low, close (each (T, N)) from close-to-close log returns (T, N).

    ``cond_vol`` (T, N) is the day's conditional return std; ``start_price`` (N,) the close before
    day 0. Overnight gap ``g | r ~ N(q r, q (1 - q) vol^2)``; intraday part ``r - g`` with bridge
    extremes of std ``range_scale * sqrt(1 - q) * vol``.
    """
    q = overnight_share
    t_len, n = log_ret.shape
    gap = q * log_ret + np.sqrt(q * (1.0 - q)) * cond_vol * rng.standard_normal((t_len, n))
    intraday = log_ret - gap
    log_close = np.log(start_price)[None, :] + np.cumsum(log_ret, axis=0)
    log_prev = np.vstack([np.log(start_price)[None, :], log_close[:-1]])
    log_open = log_prev + gap
    u = 1.0 - rng.random((2, t_len, n))  # (0, 1]
    mx, mn = bridge_extremes(intraday, range_scale * np.sqrt(1.0 - q) * cond_vol, u[0], u[1])
    close = np.exp(log_close)
    open_ = np.exp(log_open)
    high = np.maximum(np.exp(log_open + mx), np.maximum(open_, close))  # guard fp rounding
    low = np.minimum(np.exp(log_open + mn), np.minimum(open_, close))
    return open_, high, low, close


def simulate_returns(
    model: _Model,
    n_days: int,
    rng: np.random.Generator,
    *,
    hurst: float | None = None,
    garch: bool = True,
    regimes: bool = True,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log returns (T, N), their conditional std (T, N) and the regime path (T,)."""
    n = model.sigma.size
    k = model.loadings.shape[1]
    t_len = n_days
    # Innovations (unit variance): fGn or Student-t.
    if hurst is not None:
        innov = fractional_gaussian_noise(hurst, t_len, k + n, rng)
        z, eps = innov[:, :k], innov[:, k:]
    else:
        z = standardized_t(rng, model.garch_factor[2], (t_len, k))
        eps = standardized_t(rng, model.garch_idio[2], (t_len, n))
    # Regimes.
    if regimes:
        s = markov_chain(model.transition, model.stationary, t_len, rng)
        fmean, fscale, iscale = model.factor_mean[s], model.factor_scale[s], model.idio_scale[s][:, None]
    else:
        s = np.zeros(t_len, dtype=np.int64)
        fmean, fscale, iscale = np.zeros((t_len, k)), np.ones((t_len, k)), np.ones((t_len, 1))
    # GARCH scales.
    if garch:
        af, bf, _ = model.garch_factor
        ai, bi, _ = model.garch_idio
        alpha = np.concatenate([np.full(k, af), np.full(n, ai)])
        beta = np.concatenate([np.full(k, bf), np.full(n, bi)])
        sc = garch_scale(np.hstack([z, eps]), alpha, beta)
        hf, hi = sc[:, :k], sc[:, k:]
    else:
        hf, hi = np.ones((t_len, k)), np.ones((t_len, n))
    f = fmean + fscale * hf * z  # (T, K)
    e = iscale * hi * eps  # (T, N)
    # Explicit sums over the K factors instead of BLAS matmuls: elementwise ops give bitwise
    # identical results whatever the BLAS build or thread count.
    common = np.zeros((t_len, n))
    var = (model.idio_w * iscale * hi) ** 2  # conditional variance (factor means excluded)
    for j in range(k):
        common += f[:, j, None] * model.loadings[None, :, j]
        var = var + (fscale[:, j, None] * hf[:, j, None]) ** 2 * model.loadings[None, :, j] ** 2
    ret = model.mu + model.sigma * (common + model.idio_w * e)
    cond_vol = model.sigma * np.sqrt(var)
    return ret, cond_vol, s


def simulate_volume(
    model: _Model, log_ret: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Share volume (T, N): ``exp(level_i + x_t)``, ``x`` AR(1) driven by |standardized return|."""
    v = model.volume
    t_len, n = log_ret.shape
    level = v["log_level_mean"] + v["log_level_sd"] * rng.standard_normal(n)
    absz = np.abs((log_ret - model.mu) / model.sigma)
    shock = v["abs_return_beta"] * (absz - absz.mean(0)) + v["noise_sd"] * rng.standard_normal((t_len, n))
    x = lfilter([1.0], [1.0, -v["ar1"]], shock, axis=0)
    return np.round(np.exp(level + x))


# ------------------------------------------------------------------------------------------------
# calendar
# ------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def _xnys_calendar(first: str, last: str):
    import exchange_calendars as xcals

    with warnings.catch_warnings():  # exchange-calendars internals under pandas 3
        warnings.filterwarnings("ignore", message=".*Series.values returning an ndarray.*")
        return xcals.get_calendar("XNYS", start=first, end=last)


@functools.lru_cache(maxsize=32)
def _xnys_sessions(start: str, end: str) -> pd.DatetimeIndex:
    s, e = pd.Timestamp(start).normalize(), pd.Timestamp(end).normalize() - pd.Timedelta(days=1)
    if e < s:
        return pd.DatetimeIndex([], dtype="datetime64[ns]")
    # One calendar object serves every request inside 1990..2030 (building one takes ~0.1 s).
    first = min(s, pd.Timestamp("1990-01-01")).strftime("%Y-%m-%d")
    last = max(e, pd.Timestamp("2030-12-31")).strftime("%Y-%m-%d")
    sessions = _xnys_calendar(first, last).sessions_in_range(s, e)
    return utc_wall(sessions).as_unit("ns")


def xnys_sessions(start: str, end: str) -> pd.DatetimeIndex:
    """XNYS sessions in ``[start, end)`` as tz-naive midnight dates (offline, exchange-calendars)."""
    try:
        return _xnys_sessions(str(pd.Timestamp(start).date()), str(pd.Timestamp(end).date()))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"synthetic: bad start/end {start!r}..{end!r} ({exc})") from None


def default_tickers(n: int) -> list[str]:
    """``SYN00 .. SYN{n-1}`` (zero-padded to at least 2 digits)."""
    width = max(2, len(str(n - 1)))
    return [f"SYN{i:0{width}d}" for i in range(n)]


# ------------------------------------------------------------------------------------------------
# the source
# ------------------------------------------------------------------------------------------------
class SyntheticSource(DataSource):
    """Seeded synthetic daily market on XNYS sessions (no network, no files)."""

    name: ClassVar[str] = "synthetic"
    calendar: ClassVar[str] = "XNYS"

    def download(  # type: ignore[override]
        self,
        tickers: list[str] | int = 30,
        start: str = "2009-01-01",
        end: str = "2023-01-01",
        freq: str = "1d",
        seed: int = 0,
        **params: Any,
    ) -> pd.DataFrame:
        """Generate the canonical frame for ``tickers`` over XNYS sessions in ``[start, end)``.

        Args:
            tickers: names (position i takes calibrated profile ``i mod 29``) or a count ``n``
                (names ``SYN00..``).
            start, end: date range, end exclusive.
            freq: only ``"1d"``.
            seed: RNG seed; same seed and arguments -> bitwise identical frame.
            **params: ``hurst`` (float in (0, 1): fBm mode), ``garch`` / ``regimes`` (bool;
                default True, False in fBm mode), ``params`` (dict or JSON path replacing the
                committed calibration), ``start_price`` (float or (N,) array; default drawn from
                the calibrated price-level distribution).

        Returns:
            Canonical long frame, T*N rows sorted by (time, tic): time, tic, open, high, low,
            close, volume.
        """
        from finmeta.timeparse import parse_date

        if parse_date(end, "end") <= parse_date(start, "start"):
            raise DataSourceError(self.name, [], f"end {end} is not after start {start} (end is exclusive)")
        unknown = sorted(set(params) - set(_KNOWN_OPTIONS))
        if unknown:
            raise ConfigError(f"synthetic: unknown option(s) {unknown}; known: {list(_KNOWN_OPTIONS)}")
        if freq != "1d":
            raise ConfigError(f"synthetic: freq={freq!r} not supported; only '1d'")
        if isinstance(tickers, (int, np.integer)) and not isinstance(tickers, bool):
            if tickers < 1:
                raise ConfigError(f"synthetic: tickers count must be >= 1, got {tickers}")
            names = default_tickers(int(tickers))
        else:
            names = [str(t) for t in tickers]
            if not names:
                raise DataSourceError(self.name, names, "no tickers requested")
            if len(set(names)) != len(names):
                raise ConfigError(f"synthetic: duplicate ticker names in {names}")
        sessions = xnys_sessions(start, end)
        if len(sessions) == 0:
            raise DataSourceError(self.name, names, f"no XNYS sessions in [{start}, {end})")
        arrays = self.generate_arrays(len(names), len(sessions), seed=seed, **params)
        return self._to_frame(sessions, names, arrays)

    @staticmethod
    def generate_arrays(n_assets: int, n_days: int, seed: int = 0, **params: Any) -> dict[str, np.ndarray]:
        """The simulation as wide arrays: ``open/high/low/close/volume/log_return/cond_vol`` (T, N)
        and ``regime`` (T,). Options as in :meth:`download`."""
        hurst = params.get("hurst")
        if hurst is not None:
            hurst = float(hurst)
        garch = bool(params.get("garch", hurst is None))
        regimes = bool(params.get("regimes", hurst is None))
        model = _Model.from_params(load_params(params.get("params")), n_assets)
        try:
            seed_seq = np.random.SeedSequence(int(seed))
        except (TypeError, ValueError):
            raise ConfigError(f"synthetic: seed must be a non-negative integer, got {seed!r}") from None
        r_ret, r_ohlc, r_vol, r_price = (np.random.default_rng(s) for s in seed_seq.spawn(4))
        ret, cond_vol, regime = simulate_returns(model, n_days, r_ret, hurst=hurst, garch=garch, regimes=regimes)
        sp = params.get("start_price")
        if sp is None:
            p = model.price
            start_price = np.exp(p["log_level_mean"] + p["log_level_sd"] * r_price.standard_normal(n_assets))
        else:
            start_price = np.broadcast_to(np.asarray(sp, dtype=np.float64), (n_assets,)).copy()
            if not np.all(np.isfinite(start_price) & (start_price > 0)):
                raise ConfigError(f"synthetic: start_price must be positive, got {sp!r}")
        o, h, lo, c = ohlc_from_returns(ret, cond_vol, start_price, model.overnight_share, model.range_scale, r_ohlc)
        vol = simulate_volume(model, ret, r_vol)
        return {"open": o, "high": h, "low": lo, "close": c, "volume": vol,
                "log_return": ret, "cond_vol": cond_vol, "regime": regime}

    def _to_frame(self, sessions: pd.DatetimeIndex, names: list[str], a: Mapping[str, np.ndarray]) -> pd.DataFrame:
        order = np.argsort(np.asarray(names, dtype=object), kind="stable")
        t_len, n = len(sessions), len(names)
        cols: dict[str, Any] = {
            "time": np.repeat(sessions.values, n),
            "tic": pd.array(np.tile(np.asarray(names, dtype=object)[order], t_len), dtype="str"),
        }
        for key in ("open", "high", "low", "close", "volume"):
            cols[key] = np.ascontiguousarray(a[key][:, order]).reshape(-1)
        return self.normalize(pd.DataFrame(cols))

    def normalize(self, raw: pd.DataFrame, *, path: str | Path | None = None) -> pd.DataFrame:
        """Identity on an already canonical frame (or a CSV of one), plus validation.

        Bad input raises one :class:`DataValidationError` naming the file (``path``) and row.
        """
        where = f"{path}" if path is not None else "synthetic frame"
        missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
        if missing:
            raise DataValidationError(f"{where}: missing columns {missing}")
        df = raw.loc[:, list(REQUIRED_COLUMNS)]
        if not pd.api.types.is_datetime64_any_dtype(df["time"]):
            try:
                df = df.assign(time=pd.to_datetime(df["time"]))
            except (ValueError, TypeError) as exc:
                raise DataValidationError(f"{where}: column 'time' is not a date ({exc})") from None
        if getattr(df["time"].dt, "tz", None) is None and df["time"].dtype != "datetime64[ns]":
            df = df.assign(time=df["time"].astype("datetime64[ns]"))
        num = df[["open", "high", "low", "close", "volume"]].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(num).all(1) | (num[:, :4] <= 0).any(1) | (num[:, 4] < 0)
        o, h, lo, c = num[:, 0], num[:, 1], num[:, 2], num[:, 3]
        bad |= (lo > np.minimum(o, c)) | (h < np.maximum(o, c))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataValidationError(
                f"{where}: row {i} (time={df['time'].iloc[i]}, tic={df['tic'].iloc[i]}) has "
                f"non-finite, non-positive or inconsistent OHLCV {num[i].tolist()}")
        keys = df[["time", "tic"]]
        if keys.duplicated().any():
            i = int(np.flatnonzero(keys.duplicated().to_numpy())[0])
            raise DataValidationError(f"{where}: duplicate key at row {i} ({keys.iloc[i].tolist()})")
        return df.sort_values(["time", "tic"], kind="stable").reset_index(drop=True)

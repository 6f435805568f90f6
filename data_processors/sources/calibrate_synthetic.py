"""Fit the ``synthetic`` source's parameters on the Dow 30 daily file and write them as JSON.

Usage::

    FINMETA_DATA_DIR=/path/to/shared/data python -m data_processors.sources.calibrate_synthetic [--out PATH] [--check]

Reads ``$FINMETA_DATA_DIR/us_equities/dow30_daily.csv.gz`` (columns date, tic, open, high, low,
close, adjcp, volume), keeps the tickers with a complete ``adjcp`` history over 2009-2022
(29: DOW lists only from 2019) and fits, in order:

1. per-asset daily log-return drift ``mu`` and vol ``sigma`` (from ``adjcp``);
2. correlation structure: K=3 factor loadings ``L`` (N, K) by principal-axis factoring of the
   correlation matrix of the standardised returns (fits the off-diagonal correlations);
3. regimes: a 3-state Gaussian hidden Markov model (Baum-Welch) on the market factor
   (first Bartlett factor score, unit variance); per-regime factor means / vol scales and idiosyncratic vol scale from
   the smoothed state probabilities, normalised to unit variance under the stationary law;
4. GARCH(1,1) with Student-t innovations and variance targeting, pooled over the K regime-
   standardised factor series and, separately, pooled over the N idiosyncratic series (MLE);
5. OHLC: overnight-gap variance share ``q`` and the intraday range scale that reproduces the
   median ``mean(log(high/low)) / sigma`` of the data through the source's own OHLC generator;
6. volume: the distribution of per-asset mean log volume, and a pooled AR(1) of log-volume
   deviations with a response to |standardised return|; price level distribution at the start.

It also records stylized-fact *targets* (average pairwise correlation, kurtosis, ACF of r and
|r|) that the tests compare generated data with, and how the fit was made (script, data file,
sha256, date range). Only fitted parameters are written; never the data.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.signal import lfilter
from scipy.special import gammaln
from scipy.stats import kurtosis

from data_processors.store import file_sha256 as sha256_file
from finmeta.errors import ConfigError, DataValidationError, FinMetaError

DATA_FILE = "us_equities/dow30_daily.csv.gz"
START, END = "2009-01-01", "2022-12-31"
N_FACTORS, N_REGIMES = 3, 3
SCRIPT = "data_processors/sources/calibrate_synthetic.py"
REGIME_NAMES = ("bull", "bear", "crisis")  # ordered by market-factor vol, ascending


# ------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------
def default_data_path() -> Path:
    from finmeta.paths import data_dir

    d = data_dir()
    if d is None:
        raise ConfigError("FINMETA_DATA_DIR is not set (or not a folder): it must hold " + DATA_FILE)
    return d / DATA_FILE


def load_panel(path: Path, start: str = START, end: str = END) -> dict[str, Any]:
    """Wide (T, N) arrays of the complete-history tickers: adjcp, open, high, low, close, volume."""
    df = pd.read_csv(path)
    need = {"date", "tic", "open", "high", "low", "close", "adjcp", "volume"}
    if not need <= set(df.columns):
        raise DataValidationError(f"{path}: missing columns {sorted(need - set(df.columns))}")
    df["date"] = pd.to_datetime(df["date"])
    df = df[(df["date"] >= start) & (df["date"] <= end)]
    wide = {c: df.pivot(index="date", columns="tic", values=c) for c in ("adjcp", "open", "high", "low", "close", "volume")}
    complete = wide["adjcp"].columns[wide["adjcp"].notna().all()]
    for c in wide:
        wide[c] = wide[c][complete]
    if any(wide[c].isna().any().any() for c in wide):
        raise DataValidationError(f"{path}: NaN in OHLCV of the complete-history tickers")
    out = {c: wide[c].to_numpy(dtype=np.float64) for c in wide}
    out["dates"] = wide["adjcp"].index
    out["tickers"] = [str(t) for t in complete]
    return out


# ------------------------------------------------------------------------------------------------
# fitting pieces
# ------------------------------------------------------------------------------------------------
def acf(x: np.ndarray, lag: int) -> np.ndarray:
    """Sample autocorrelation at ``lag`` of each column of ``x`` (T, N) -> (N,)."""
    x = x - x.mean(0)
    return (x[lag:] * x[:-lag]).sum(0) / (x * x).sum(0)


def avg_pairwise_corr(r: np.ndarray) -> float:
    c = np.corrcoef(r, rowvar=False)
    n = c.shape[0]
    return float((c.sum() - n) / (n * n - n))


def stylized_facts(r: np.ndarray) -> dict[str, Any]:
    """Targets measured on log returns (T, N)."""
    return {
        "avg_pairwise_corr": avg_pairwise_corr(r),
        "median_kurtosis": float(np.median(kurtosis(r, axis=0, fisher=False))),
        "median_acf_abs_r": [float(np.median(acf(np.abs(r), k))) for k in range(1, 6)],
        "median_acf_r": [float(np.median(acf(r, k))) for k in range(1, 6)],
        "median_sigma": float(np.median(r.std(0))),
        "median_mu": float(np.median(r.mean(0))),
    }


def fit_marginals(logret: np.ndarray, n_factors: int = N_FACTORS) -> dict[str, np.ndarray]:
    """Per-asset ``mu``, ``sigma`` (N,), loadings (N, K), factor scores (T, K), idio residuals (T, N).

    Fast (linear algebra only): the tests rerun it against the committed JSON.
    """
    mu = logret.mean(0)
    sigma = logret.std(0)
    z = (logret - mu) / sigma
    corr = np.corrcoef(z, rowvar=False)
    n = corr.shape[0]
    # Principal-axis factoring: PCA of the correlation matrix with communalities on the diagonal,
    # iterated to a fixed point, so that L @ L.T fits the off-diagonal correlations.
    comm = np.full(n, 0.5)
    for _ in range(500):
        reduced = corr.copy()
        np.fill_diagonal(reduced, comm)
        lam, vec = np.linalg.eigh(reduced)
        lam, vec = np.clip(lam[::-1][:n_factors], 1e-9, None), vec[:, ::-1][:, :n_factors]
        loadings = vec * np.sqrt(lam)
        new = np.minimum((loadings**2).sum(1), 0.95)
        if np.abs(new - comm).max() < 1e-10:
            break
        comm = new
    loadings = loadings * np.where(loadings.sum(0) < 0, -1.0, 1.0)  # market factor loads positively
    norm = np.sqrt((loadings**2).sum(1, keepdims=True))
    loadings = loadings * np.minimum(1.0, np.sqrt(0.95) / norm)
    psi = 1.0 - (loadings**2).sum(1)  # (N,) idiosyncratic variance share
    # Bartlett factor scores, rescaled to unit variance; residuals standardised per asset.
    lw = loadings / psi[:, None]
    scores = z @ lw @ np.linalg.inv(loadings.T @ lw)
    scores /= scores.std(0)
    resid = (z - scores @ loadings.T) / np.sqrt(psi)
    resid /= resid.std(0)
    return {"mu": mu, "sigma": sigma, "loadings": loadings, "scores": scores, "resid": resid,
            "eigenvalues": lam, "communalities": 1.0 - psi}


def fit_hmm(x: np.ndarray, n_states: int = N_REGIMES, n_iter: int = 300, tol: float = 1e-7) -> dict[str, np.ndarray]:
    """Gaussian HMM on a 1-D series ``x`` (T,) by Baum-Welch with scaled forward-backward.

    Returns ``transition`` (S, S), ``means``/``stds`` (S,), ``posterior`` (T, S), ``loglik``;
    states sorted by std ascending. Deterministic initialisation (quantile-spread stds).
    """
    t_len = x.size
    sd0 = x.std()
    means = np.zeros(n_states)
    stds = sd0 * np.geomspace(0.6, 2.5, n_states)
    trans = np.full((n_states, n_states), 0.02 / (n_states - 1))
    np.fill_diagonal(trans, 0.98)
    pi0 = np.full(n_states, 1.0 / n_states)
    prev = -np.inf
    for _ in range(n_iter):
        b = np.exp(-0.5 * ((x[:, None] - means) / stds) ** 2) / (stds * np.sqrt(2 * np.pi))  # (T, S)
        alpha = np.empty((t_len, n_states))
        c = np.empty(t_len)
        a = pi0 * b[0]
        c[0] = a.sum()
        alpha[0] = a / c[0]
        for t in range(1, t_len):
            a = (alpha[t - 1] @ trans) * b[t]
            c[t] = a.sum()
            alpha[t] = a / c[t]
        beta = np.empty((t_len, n_states))
        beta[-1] = 1.0
        for t in range(t_len - 2, -1, -1):
            beta[t] = (trans @ (b[t + 1] * beta[t + 1])) / c[t + 1]
        gamma = alpha * beta
        gamma /= gamma.sum(1, keepdims=True)
        xi = (alpha[:-1, :, None] * trans[None] * (b[1:] * beta[1:])[:, None, :]) / c[1:, None, None]
        loglik = float(np.log(c).sum())
        trans = xi.sum(0) / xi.sum(0).sum(1, keepdims=True)
        w = gamma.sum(0)
        means = (gamma * x[:, None]).sum(0) / w
        stds = np.sqrt((gamma * (x[:, None] - means) ** 2).sum(0) / w)
        pi0 = gamma[0]
        if loglik - prev < tol * abs(loglik):
            break
        prev = loglik
    order = np.argsort(stds)
    return {"transition": trans[np.ix_(order, order)], "means": means[order], "stds": stds[order],
            "posterior": gamma[:, order], "loglik": loglik}


def stationary_distribution(trans: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eig(trans.T)
    p = np.real(v[:, np.argmin(np.abs(w - 1.0))])
    return p / p.sum()


def _garch_negloglik(theta: np.ndarray, u: np.ndarray) -> float:
    """Pooled GARCH(1,1)-t negative log-likelihood, variance targeting (unit variance), u (T, M)."""
    a, b, nu = theta
    if a < 0 or b < 0 or a + b >= 0.9995 or nu <= 2.05:
        return 1e12
    x = (1.0 - a - b) + a * u[:-1] ** 2  # drives h[1:]
    h = np.empty_like(u)
    h[0] = 1.0
    zi = (b * 1.0)[None] * np.ones((1, u.shape[1]))  # initial state so that h[1] = x[0] + b*h[0]
    h[1:] = lfilter([1.0], [1.0, -b], x, axis=0, zi=zi)[0]
    const = gammaln((nu + 1) / 2) - gammaln(nu / 2) - 0.5 * np.log(np.pi * (nu - 2))
    ll = const - 0.5 * np.log(h) - 0.5 * (nu + 1) * np.log1p(u**2 / (h * (nu - 2)))
    return float(-ll.sum())


def fit_garch_t(u: np.ndarray) -> dict[str, float]:
    """Pooled GARCH(1,1)-t (alpha, beta, nu) on unit-variance series ``u`` (T, M)."""
    u = u / u.std(0)
    best = None
    for x0 in ([0.05, 0.90, 6.0], [0.10, 0.80, 8.0], [0.03, 0.95, 5.0]):
        res = minimize(_garch_negloglik, np.array(x0), args=(u,), method="Nelder-Mead",
                       options={"xatol": 1e-6, "fatol": 1e-4, "maxiter": 3000})
        if best is None or res.fun < best.fun:
            best = res
    a, b, nu = best.x
    return {"alpha": float(a), "beta": float(b), "nu": float(nu), "negloglik": float(best.fun)}


def fit_regimes(scores: np.ndarray, resid: np.ndarray) -> dict[str, Any]:
    """HMM on the market factor, per-regime scales for all factors and the idiosyncratic part."""
    hmm = fit_hmm(scores[:, 0])
    g = hmm["posterior"]  # (T, S)
    w = g.sum(0)
    pi = stationary_distribution(hmm["transition"])
    k = scores.shape[1]
    fmean = np.zeros((N_REGIMES, k))
    fmean[:, 0] = hmm["means"]
    fmean[:, 0] -= pi @ fmean[:, 0]  # stationary mean zero: total drift stays mu_i
    fvar = (g.T @ (scores - 0.0) ** 2) / w[:, None] - fmean**2  # (S, K) within-regime variance
    fvar[:, 0] = hmm["stds"] ** 2
    fvar = np.clip(fvar, 1e-6, None)
    # Normalise: sum_s pi_s (m_s^2 + c_s^2) = 1 per factor.
    tot = pi @ (fmean**2 + fvar)
    fmean /= np.sqrt(tot)
    fvar /= tot
    ivar = (g.T @ (resid**2).mean(1)) / w  # (S,)
    ivar /= pi @ ivar
    # Regime-standardised series for GARCH (hard assignment by max posterior).
    s = g.argmax(1)
    uf = (scores - fmean[s] * np.sqrt(tot)) / (np.sqrt(fvar[s] * tot))
    ui = resid / np.sqrt(ivar[s])[:, None]
    dur = 1.0 / (1.0 - np.diag(hmm["transition"]))
    return {"transition": hmm["transition"], "stationary": pi, "factor_mean": fmean,
            "factor_scale": np.sqrt(fvar), "idio_scale": np.sqrt(ivar), "loglik": hmm["loglik"],
            "expected_duration_days": dur, "uf": uf, "ui": ui, "time_share": w / w.sum()}


def fit_volume(volume: np.ndarray, logret: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Log-volume level distribution and pooled AR(1) + |z| response (OLS)."""
    lv = np.log(np.maximum(volume, 1.0))
    level = lv.mean(0)
    x = lv - level
    absz = np.abs((logret - mu) / sigma)
    absz = absz - absz.mean(0)
    y, x1, z1 = x[1:].ravel(), x[:-1].ravel(), absz[1:].ravel()
    design = np.column_stack([x1, z1])
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    noise = y - design @ coef
    return {"log_level_mean": float(level.mean()), "log_level_sd": float(level.std()),
            "ar1": float(coef[0]), "abs_return_beta": float(coef[1]), "noise_sd": float(noise.std())}


def fit_ohlc(panel: dict[str, Any], params: dict[str, Any]) -> dict[str, float]:
    """Overnight variance share and the range scale matching the data's log(H/L) / sigma."""
    from data_processors.sources.synthetic import SyntheticSource

    o, h, lo, c = panel["open"], panel["high"], panel["low"], panel["close"]
    cc = np.diff(np.log(c), axis=0)
    on = np.log(o[1:] / c[:-1])
    q = float(np.median(on.var(0) / cc.var(0)))
    target = float(np.median(np.log(h / lo).mean(0) / cc.std(0)))
    n = c.shape[1]
    scale = 1.0
    for _ in range(6):  # fixed point through the source's own generator
        p = dict(params, ohlc={"overnight_share": q, "range_scale": scale})
        a = SyntheticSource.generate_arrays(n, 3500, seed=12345, params=p)
        sim = float(np.median(np.log(a["high"] / a["low"]).mean(0) / a["log_return"].std(0)))
        scale *= target / sim
    return {"overnight_share": q, "range_scale": float(scale), "range_ratio_target": target,
            "range_ratio_generated": sim}


# ------------------------------------------------------------------------------------------------
# the whole fit
# ------------------------------------------------------------------------------------------------
def fit(path: Path, start: str = START, end: str = END) -> dict[str, Any]:
    """Fit every parameter; returns the JSON-ready dict."""
    panel = load_panel(path, start, end)
    logret = np.diff(np.log(panel["adjcp"]), axis=0)
    marg = fit_marginals(logret)
    reg = fit_regimes(marg["scores"], marg["resid"])
    g_f = fit_garch_t(reg["uf"])
    g_i = fit_garch_t(reg["ui"])
    vol = fit_volume(panel["volume"][1:], logret, marg["mu"], marg["sigma"])
    lc0 = np.log(panel["close"][0])
    L = marg["loadings"]
    model_corr = L @ L.T
    n = L.shape[0]
    params: dict[str, Any] = {
        "schema": "finmeta.synthetic/1",
        "fitted_by": {
            "script": SCRIPT,
            "data_file": Path(path).name,
            "data_sha256": sha256_file(Path(path)),
            "start": str(panel["dates"][0].date()),
            "end": str(panel["dates"][-1].date()),
            "price_column": "adjcp (log returns)",
            "n_days": int(logret.shape[0]),
            "n_assets": int(n),
            "source_tickers": panel["tickers"],
            "notes": "asset i of a synthetic market takes profile i mod n_assets",
        },
        "assets": {
            "mu": marg["mu"].tolist(),
            "sigma": marg["sigma"].tolist(),
            "loadings": L.tolist(),
        },
        "factors": {
            "n": int(L.shape[1]),
            "eigenvalues": marg["eigenvalues"].tolist(),
            "model_avg_pairwise_corr": float((model_corr.sum() - np.trace(model_corr)) / (n * n - n)),
        },
        "regimes": {
            "names": list(REGIME_NAMES),
            "transition": reg["transition"].tolist(),
            "stationary": reg["stationary"].tolist(),
            "expected_duration_days": reg["expected_duration_days"].tolist(),
            "factor_mean": reg["factor_mean"].tolist(),
            "factor_scale": reg["factor_scale"].tolist(),
            "idio_scale": reg["idio_scale"].tolist(),
        },
        "garch": {
            "factor": {k: g_f[k] for k in ("alpha", "beta", "nu")},
            "idio": {k: g_i[k] for k in ("alpha", "beta", "nu")},
        },
        "volume": vol,
        "price": {"log_level_mean": float(lc0.mean()), "log_level_sd": float(lc0.std())},
        "ohlc": {"overnight_share": 0.2, "range_scale": 1.0},
        "targets": stylized_facts(logret),
    }
    params["ohlc"] = fit_ohlc(panel, params)
    return _round(params)


def _round(obj: Any) -> Any:
    """Round floats to 10 significant digits (stable, readable JSON)."""
    if isinstance(obj, float):
        return float(f"{obj:.10g}")
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_round(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int = 0) -> str:
    """JSON with one line per scalar list (compact, diff-friendly); dicts and nested lists indented."""
    pad, inner = " " * indent, " " * (indent + 1)
    if isinstance(obj, dict):
        items = [f"{inner}{json.dumps(k)}: {to_json(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list) and any(isinstance(v, (list, dict)) for v in obj):
        return "[\n" + ",\n".join(inner + to_json(v, indent + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def summary(p: dict[str, Any]) -> str:
    """Human-readable report of a parameter set."""
    a, r, g, t = p["assets"], p["regimes"], p["garch"], p["targets"]
    sig, mu = np.array(a["sigma"]), np.array(a["mu"])
    lines = [
        f"data: {p['fitted_by']['data_file']} sha256={p['fitted_by']['data_sha256'][:16]}... "
        f"{p['fitted_by']['start']}..{p['fitted_by']['end']}, {p['fitted_by']['n_assets']} assets x "
        f"{p['fitted_by']['n_days']} returns",
        f"daily vol  : median {np.median(sig):.4f} (ann. {np.median(sig) * np.sqrt(252):.1%}), range {sig.min():.4f}..{sig.max():.4f}",
        f"daily drift: median {np.median(mu):.5f} (ann. {np.median(mu) * 252:.1%})",
        f"factors    : K={p['factors']['n']} eigenvalues {np.round(p['factors']['eigenvalues'], 2).tolist()}; "
        f"avg pairwise corr data {t['avg_pairwise_corr']:.3f} / model {p['factors']['model_avg_pairwise_corr']:.3f}",
        "regimes    : " + ", ".join(
            f"{n} (pi={pi:.2f}, {d:.0f}d, mkt mean {m[0]:+.3f}, mkt scale {c[0]:.2f}, idio {i:.2f})"
            for n, pi, d, m, c, i in zip(r["names"], r["stationary"], r["expected_duration_days"],
                                         r["factor_mean"], r["factor_scale"], r["idio_scale"])),
        "transition : " + np.array2string(np.array(r["transition"]), precision=4).replace("\n", ""),
        f"GARCH-t    : factor a={g['factor']['alpha']:.3f} b={g['factor']['beta']:.3f} nu={g['factor']['nu']:.1f}; "
        f"idio a={g['idio']['alpha']:.3f} b={g['idio']['beta']:.3f} nu={g['idio']['nu']:.1f}",
        f"OHLC       : overnight share {p['ohlc']['overnight_share']:.3f}, range scale {p['ohlc']['range_scale']:.3f} "
        f"(log(H/L)/sigma target {p['ohlc']['range_ratio_target']:.3f}, generated {p['ohlc']['range_ratio_generated']:.3f})",
        f"volume     : log level {p['volume']['log_level_mean']:.2f}+-{p['volume']['log_level_sd']:.2f}, "
        f"AR1 {p['volume']['ar1']:.3f}, |z| beta {p['volume']['abs_return_beta']:.3f}, noise sd {p['volume']['noise_sd']:.3f}",
        f"targets    : kurtosis {t['median_kurtosis']:.1f}, acf|r| lag1-5 {np.round(t['median_acf_abs_r'], 3).tolist()}, "
        f"acf r {np.round(t['median_acf_r'], 3).tolist()}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from data_processors.sources.synthetic import DEFAULT_PARAMS_PATH

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=None, help=f"the Dow 30 file (default $FINMETA_DATA_DIR/{DATA_FILE})")
    ap.add_argument("--out", type=Path, default=DEFAULT_PARAMS_PATH)
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args(argv)
    try:
        path = args.data or default_data_path()
        if not path.is_file():
            raise ConfigError(f"{path}: no such file (the Dow 30 daily file, {DATA_FILE})")
        params = fit(path)
    except FinMetaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(summary(params))
    text = to_json(params) + "\n"
    if args.check:
        same = json.loads(args.out.read_text(encoding="utf-8")) == params
        print(f"{args.out}: {'identical to' if same else 'DIFFERS from'} the fit")
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Statistics that tell an edge from noise: Sharpe intervals, tests against the index and the best
rule baseline, probabilistic and deflated Sharpe ratios, the probability of backtest overfitting
and Hansen's SPA test.

Every kernel is numpy-first and takes simple returns laid out as ``(T, K)``: T periods (rows, the
same dates in every column) and K paths (an agent's seeds, or several agents). Sharpe ratios are
*per period* inside the kernels (``mean / std(ddof=1)``) and annualised (``* sqrt(P)``) only where a
function says so, as in :mod:`benchmarks.metrics`.

Sources (formulas in each docstring and in ``docs/metrics.md``):

* PSR: Bailey & López de Prado (2012), "The Sharpe Ratio Efficient Frontier", J. of Risk 15(2).
* DSR: Bailey & López de Prado (2014), "The Deflated Sharpe Ratio: Correcting for Selection Bias,
  Backtest Overfitting and Non-Normality", J. of Portfolio Management 40(5).
* Stationary bootstrap: Politis & Romano (1994), JASA 89; block length by Politis & White (2004)
  with Patton, Politis & White (2009) (``arch.bootstrap.optimal_block_length``).
* Sharpe-difference test: Ledoit & Wolf (2008), "Robust performance hypothesis testing with the
  Sharpe ratio", J. of Empirical Finance 15 (the HAC delta-method test of their Section 3.1).
* IQM, stratified bootstrap, probability of improvement: Agarwal et al. (2021), "Deep RL at the
  Edge of the Statistical Precipice", NeurIPS (the definitions of the ``rliable`` library).
* PBO by CSCV: Bailey, Borwein, López de Prado & Zhu (2017), "The Probability of Backtest
  Overfitting", J. of Computational Finance 20(4).
* SPA: Hansen (2005), "A Test for Superior Predictive Ability", JBES 23 (``arch.bootstrap.SPA``).

``rliable`` itself is not a dependency: its release 1.2.0 pins ``arch < 8`` and its
``get_interval_estimates`` fails on arch 8 (``random_state`` is no longer accepted), so its three
definitions used here are written out below (a few lines each) and tested on known answers.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as _st

#: bootstrap resamples (percentile intervals, SPA) and the seed every bootstrap starts from
DEFAULT_REPS = 1000
DEFAULT_SEED = 0
#: CSCV: number of blocks S the trade period is cut into (even)
DEFAULT_BLOCKS = 16
#: fewest returns on the common dates for any statistic to be computed
MIN_RETURNS = 20
EULER_GAMMA = 0.5772156649015329

#: rule baselines (the agents of ``agents/baselines.py`` and the loop's ``index_gated`` row)
RULE_BASELINES = ("buy_and_hold", "equal_weight", "equal_weight_gated", "min_variance", "index_gated")


# ----------------------------------------------------------------------------------------------
# rows: index / rule baseline / learned
# ----------------------------------------------------------------------------------------------


def row_kind(agent: str) -> str:
    """``"index"`` for market-index rows (``index``, ``index_<name>``; not ``index_gated``, which
    trades), ``"rule"`` for the rule baselines (:data:`RULE_BASELINES`), ``"learned"`` otherwise
    (RL agents, ``ensemble``, ``moe`` and its ablations, any other trained agent)."""
    a = str(agent)
    if a in RULE_BASELINES:
        return "rule"
    if a == "index" or a.startswith("index_"):
        return "index"
    return "learned"


# ----------------------------------------------------------------------------------------------
# Sharpe ratio, PSR, DSR
# ----------------------------------------------------------------------------------------------


def sharpe_per_period(returns: np.ndarray, axis: int = 0) -> np.ndarray:
    """``mean(r) / std(r, ddof=1)`` along ``axis`` (nan where the std is 0)."""
    r = np.asarray(returns, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sd = r.std(axis=axis, ddof=1)
        return np.where(sd > 0, r.mean(axis=axis) / np.where(sd > 0, sd, 1.0), np.nan)


def skew_kurt(returns: np.ndarray) -> tuple[float, float]:
    """Sample skewness ``g3`` and (non-excess) kurtosis ``g4`` of a return series (T,), the moment
    estimators the PSR paper uses (normal returns: 0 and 3)."""
    r = np.asarray(returns, dtype=np.float64)
    if r.size < 3 or not np.ptp(r) > 0:
        return 0.0, 3.0
    return float(_st.skew(r, bias=True)), float(_st.kurtosis(r, fisher=False, bias=True))


def psr(sr: float, n: int, skew: float = 0.0, kurt: float = 3.0, sr_star: float = 0.0) -> float:
    """Probabilistic Sharpe ratio (Bailey & López de Prado 2012, eq. 9 of "The Sharpe Ratio
    Efficient Frontier")::

        PSR(SR*) = Z[ (SR^ - SR*) sqrt(n - 1) / sqrt(1 - g3 SR^ + (g4 - 1)/4 SR^^2) ]

    ``sr``: the observed Sharpe ratio *per period* (not annualised); ``n``: number of returns;
    ``skew`` ``g3`` and ``kurt`` ``g4`` (non-excess, 3 for normal returns) of the returns;
    ``sr_star``: the benchmark Sharpe per period. The probability that the true Sharpe exceeds
    ``sr_star``. nan when ``sr`` is nan or the variance term is not positive.
    """
    if not np.isfinite(sr) or n < 2:
        return float("nan")
    var = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not var > 0:
        return float("nan")
    return float(_st.norm.cdf((sr - sr_star) * math.sqrt(n - 1) / math.sqrt(var)))


def expected_max_sharpe(n_trials: int, var_sr: float, mean_sr: float = 0.0) -> float:
    """Expected maximum Sharpe of ``n_trials`` independent trials whose Sharpes have variance
    ``var_sr`` (Bailey & López de Prado 2014, eq. 1 / the DSR's ``SR_0``)::

        SR_0 = E[SR] + sqrt(V[SR]) ((1 - gamma) Z^-1[1 - 1/N] + gamma Z^-1[1 - 1/(N e)])

    with gamma the Euler-Mascheroni constant. Per period when ``var_sr`` is. 0 for N <= 1.
    """
    if n_trials <= 1 or not np.isfinite(var_sr) or var_sr <= 0:
        return float(mean_sr)
    z = (1.0 - EULER_GAMMA) * _st.norm.ppf(1.0 - 1.0 / n_trials) + EULER_GAMMA * _st.norm.ppf(
        1.0 - 1.0 / (n_trials * math.e))
    return float(mean_sr + math.sqrt(var_sr) * z)


def dsr(sr: float, n: int, n_trials: int, var_sr: float, skew: float = 0.0, kurt: float = 3.0) -> float:
    """Deflated Sharpe ratio (Bailey & López de Prado 2014, eq. 2)::

        DSR = PSR(SR_0),  SR_0 = expected_max_sharpe(N, V[SR])

    ``sr`` per period, ``n`` returns, ``n_trials`` N = every configuration evaluated,
    ``var_sr`` the variance of their (per-period) Sharpes. With N = 1 the DSR is PSR(0).
    """
    return psr(sr, n, skew, kurt, sr_star=expected_max_sharpe(n_trials, var_sr))


# ----------------------------------------------------------------------------------------------
# stationary bootstrap
# ----------------------------------------------------------------------------------------------


def stationary_indices(n: int, reps: int, mean_block: float, rng: np.random.Generator) -> np.ndarray:
    """Index arrays (reps, n) of the stationary bootstrap (Politis & Romano 1994): blocks start at a
    uniform position and run on (wrapping around) for a geometric number of periods with mean
    ``mean_block``; each period starts a new block with probability ``p = 1 / mean_block``.
    Vectorised (no Python loop over periods), unlike ``arch``'s generator, which loops in Python."""
    p = 1.0 / max(float(mean_block), 1.0)
    restart = rng.random((reps, n)) < p
    restart[:, 0] = True
    starts = rng.integers(0, n, size=(reps, n))
    pos = np.arange(n)
    last = np.maximum.accumulate(np.where(restart, pos, 0), axis=1)  # start of the current block
    first = np.take_along_axis(starts, last, axis=1)
    return (first + (pos - last)) % n


def block_length(returns: np.ndarray) -> float:
    """Mean block length of the stationary bootstrap for returns (T,) or (T, K): the median over
    columns of the Politis-White optimal length (``arch.bootstrap.optimal_block_length``),
    clipped to [1, T/10]; 1 when no column has dispersion."""
    r = np.asarray(returns, dtype=np.float64)
    r = r[:, None] if r.ndim == 1 else r
    cols = [j for j in range(r.shape[1]) if np.ptp(r[:, j]) > 0]
    if not cols:
        return 1.0
    from arch.bootstrap import optimal_block_length

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = optimal_block_length(r[:, cols])["stationary"].to_numpy(dtype=np.float64)
    b = b[np.isfinite(b)]
    if b.size == 0:
        return 1.0
    return float(np.clip(np.median(b), 1.0, max(1.0, r.shape[0] / 10.0)))


def bootstrap_sharpes(returns: np.ndarray, groups: Sequence[Sequence[int]], periods_per_year: float,
                      reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED, mean_block: float | None = None,
                      max_floats: int = 5_000_000) -> tuple[np.ndarray, float]:
    """Joint bootstrap distribution of every group's annualised Sharpe (the mean over its seeds).

    ``returns`` (T, K): all paths on the same dates; ``groups``: for each of G rows the column
    indices of its seeds. Each resample draws one set of stationary-bootstrap dates shared by all
    columns (keeping the cross-sectional dependence: the resamples are paired) and, per row, its
    seeds with replacement (the stratified bootstrap over seeds of Agarwal et al. 2021); the row's
    statistic is the mean annualised Sharpe of the drawn seeds on the drawn dates.
    Returns ``(draws (reps, G), mean_block)``. Seeded: same inputs and seed, same draws.
    Resamples are drawn in chunks of 100, fewer when 100 would hold more than ``max_floats``
    resampled returns (memory stays bounded for long intraday paths); the chunk size depends only
    on T and K, so the same inputs still give the same draws.
    """
    r = np.asarray(returns, dtype=np.float64)
    n, k = r.shape
    rng = np.random.default_rng(seed)
    b = block_length(r) if mean_block is None else float(mean_block)
    out = np.empty((reps, len(groups)))
    seed_draws = [rng.integers(0, len(g), size=(reps, len(g))) for g in groups]
    ann = math.sqrt(periods_per_year)
    chunk = max(1, min(100, int(max_floats // max(1, n * k))))
    for lo in range(0, reps, chunk):
        hi = min(reps, lo + chunk)
        idx = stationary_indices(n, hi - lo, b, rng)
        sr = sharpe_per_period(r[idx], axis=1) * ann  # (chunk, K)
        for g, cols in enumerate(groups):
            picked = np.asarray(cols)[seed_draws[g][lo:hi]]  # (chunk, S_g)
            out[lo:hi, g] = np.take_along_axis(sr, picked, axis=1).mean(axis=1)
    return out, b


def percentile_interval(draws: np.ndarray, alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval ``[q(alpha/2), q(1 - alpha/2)]`` along axis 0 (nan-aware)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanquantile(draws, alpha / 2, axis=0), np.nanquantile(draws, 1 - alpha / 2, axis=0)


# ----------------------------------------------------------------------------------------------
# Sharpe difference: Ledoit & Wolf (2008) HAC test
# ----------------------------------------------------------------------------------------------


def _hac(y: np.ndarray, lags: int) -> np.ndarray:
    """Newey-West (Bartlett kernel) long-run covariance of the centred rows of ``y`` (T, d)."""
    t = y.shape[0]
    y = y - y.mean(axis=0)
    s = y.T @ y / t
    for lag in range(1, lags + 1):
        g = y[lag:].T @ y[:-lag] / t
        s += (1.0 - lag / (lags + 1.0)) * (g + g.T)
    return s


def sharpe_difference_test(a: np.ndarray, b: np.ndarray, periods_per_year: float) -> tuple[float, float, float]:
    """Paired test of ``SR(a) - SR(b)`` on the same dates (Ledoit & Wolf 2008, Section 3.1).

    ``a`` (T, Sa) and ``b`` (T, Sb): the seeds of two rows on the same T dates (1-D = one seed).
    The difference is ``Delta = mean_s SR(a_s) - mean_s SR(b_s)`` (annualised; per-seed Sharpes with
    ddof 1, as in the table). With ``v`` the vector of the first and second moments
    ``(mu_k, gamma_k = E[r_k^2])`` of every column and ``f(v) = sum_k w_k mu_k / sqrt(gamma_k - mu_k^2)``
    (``w = 1/Sa`` for a's seeds, ``-1/Sb`` for b's), the delta method gives
    ``se(Delta) = sqrt(P * grad_f' Psi grad_f / T)`` with ``d f/d mu_k = w_k gamma_k / sigma_k^3``,
    ``d f/d gamma_k = -w_k mu_k / (2 sigma_k^3)`` and ``Psi`` the HAC (Newey-West, Bartlett kernel,
    ``floor(4 (T/100)^(2/9))`` lags, times ``T / (T - 4)`` as in Ledoit-Wolf) covariance of
    ``(r_k - mu_k, r_k^2 - gamma_k)``. Two-sided p-value ``2 (1 - Z(|Delta| / se))``.
    Returns ``(Delta, se, p)``; nan when a column has no dispersion or T < :data:`MIN_RETURNS`.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = a[:, None] if a.ndim == 1 else a
    b = b[:, None] if b.ndim == 1 else b
    r = np.concatenate([a, b], axis=1)
    t, k = r.shape
    nan3 = (float("nan"),) * 3
    if t < MIN_RETURNS or (np.ptp(r, axis=0) <= 0).any():
        return nan3
    w = np.concatenate([np.full(a.shape[1], 1.0 / a.shape[1]), np.full(b.shape[1], -1.0 / b.shape[1])])
    delta = float((w * sharpe_per_period(r)).sum() * math.sqrt(periods_per_year))
    mu = r.mean(axis=0)
    gam = (r * r).mean(axis=0)
    sig3 = (gam - mu * mu) ** 1.5
    grad = np.concatenate([w * gam / sig3, -w * mu / (2.0 * sig3)])
    y = np.concatenate([r, r * r], axis=1)
    lags = int(math.floor(4.0 * (t / 100.0) ** (2.0 / 9.0)))
    psi = _hac(y, lags) * t / (t - 4.0)
    var = float(grad @ psi @ grad) / t * periods_per_year
    if not var > 0:
        return delta, float("nan"), float("nan")
    se = math.sqrt(var)
    return delta, se, float(2.0 * _st.norm.sf(abs(delta) / se))


# ----------------------------------------------------------------------------------------------
# across seeds: IQM, stratified bootstrap, probability of improvement (rliable's definitions)
# ----------------------------------------------------------------------------------------------


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % of the scores (``scipy.stats.trim_mean``
    with 25 % cut at each end, as ``rliable.metrics.aggregate_iqm``)."""
    return float(_st.trim_mean(np.asarray(scores, dtype=np.float64).ravel(), 0.25))


def iqm_interval(scores: np.ndarray, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED,
                 alpha: float = 0.05) -> tuple[float, float]:
    """95 % percentile interval of the IQM of one row's seed scores by the stratified bootstrap
    (one task: the runs resampled with replacement, as ``rliable.library.get_interval_estimates``)."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    rng = np.random.default_rng(seed)
    draws = x[rng.integers(0, x.size, size=(reps, x.size))]
    vals = _st.trim_mean(draws, 0.25, axis=1)
    lo, hi = percentile_interval(vals, alpha)
    return float(lo), float(hi)


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """``P(X > Y) + P(X = Y) / 2`` over all pairs of X's and Y's seed scores (the Mann-Whitney U
    statistic divided by ``m n``; ``rliable.metrics.probability_of_improvement`` for one task)."""
    x = np.asarray(x, dtype=np.float64).ravel()[:, None]
    y = np.asarray(y, dtype=np.float64).ravel()[None, :]
    return float(((x > y) + 0.5 * (x == y)).mean())


# ----------------------------------------------------------------------------------------------
# probability of backtest overfitting (CSCV)
# ----------------------------------------------------------------------------------------------


def pbo_cscv(returns: np.ndarray, n_blocks: int = DEFAULT_BLOCKS) -> dict[str, Any]:
    """Probability of backtest overfitting by combinatorially symmetric cross-validation
    (Bailey, Borwein, López de Prado & Zhu 2017, Section 2).

    ``returns`` (T, N): N strategies on the same T periods. The rows are cut into S = ``n_blocks``
    consecutive blocks (``np.array_split``: sizes differ by at most one). For each of the
    ``C(S, S/2)`` ways to pick S/2 blocks as the in-sample set J (the rest, J-bar, out of sample):
    ``n* = argmax_n SR_J(n)``, ``w = rank of SR_Jbar(n*) among SR_Jbar / (N + 1)`` (rank 1 = worst),
    ``lambda = ln(w / (1 - w))``. ``PBO = #{lambda <= 0} / C(S, S/2)``: how often the in-sample best
    lands at or below the out-of-sample median. Vectorised over the combinations via per-block
    sums. Returns ``{"pbo", "logits" (C,), "n_blocks", "n_strategies", "n_combinations"}``;
    pbo is nan for N < 2 or fewer than 2 periods per block.
    """
    r = np.asarray(returns, dtype=np.float64)
    t, n = r.shape
    s = int(n_blocks)
    if s < 2 or s % 2:
        raise ValueError(f"pbo_cscv: n_blocks must be even and >= 2, got {n_blocks}")
    out: dict[str, Any] = {"pbo": float("nan"), "logits": np.empty(0), "n_blocks": s, "n_strategies": n,
                           "n_combinations": 0}
    if n < 2 or t < 2 * s:
        return out
    parts = np.array_split(np.arange(t), s)
    cnt = np.array([len(p) for p in parts], dtype=np.float64)
    s1 = np.stack([r[p].sum(axis=0) for p in parts])  # (S, N)
    s2 = np.stack([(r[p] ** 2).sum(axis=0) for p in parts])
    combos = np.array(list(itertools.combinations(range(s), s // 2)))
    mask = np.zeros((len(combos), s))
    mask[np.arange(len(combos))[:, None], combos] = 1.0

    def sharpe(m: np.ndarray) -> np.ndarray:
        c = (m @ cnt)[:, None]
        mean = (m @ s1) / c
        var = ((m @ s2) - c * mean ** 2) / (c - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            sr = mean / np.sqrt(np.maximum(var, 0.0))
        return np.where(var > 0, sr, np.where(mean > 0, np.inf, np.where(mean < 0, -np.inf, 0.0)))

    sr_is, sr_oos = sharpe(mask), sharpe(1.0 - mask)
    best = np.argmax(sr_is, axis=1)
    oos_best = sr_oos[np.arange(len(combos)), best]
    # rank of the in-sample best out of sample, 1 = worst ... N = best (ties: average rank)
    rank = (sr_oos < oos_best[:, None]).sum(axis=1) + 0.5 * ((sr_oos == oos_best[:, None]).sum(axis=1) - 1) + 1
    w = rank / (n + 1.0)
    logits = np.log(w / (1.0 - w))
    out.update(pbo=float((logits <= 0).mean()), logits=logits, n_combinations=int(len(combos)))
    return out


# ----------------------------------------------------------------------------------------------
# Hansen's SPA
# ----------------------------------------------------------------------------------------------


def spa_pvalue(benchmark: np.ndarray, models: np.ndarray, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED,
               mean_block: float | None = None) -> float:
    """Hansen's (2005) SPA p-value (``arch.bootstrap.SPA``, stationary bootstrap, studentised,
    the "consistent" p-value) of H0 "no model beats the benchmark" with the losses ``-r``: the
    benchmark's daily returns (T,) against the models' (T, M). Small p: some model's mean daily
    return is above the benchmark's by more than chance."""
    from arch.bootstrap import SPA

    bm = np.asarray(benchmark, dtype=np.float64)
    md = np.asarray(models, dtype=np.float64)
    md = md[:, None] if md.ndim == 1 else md
    block = max(1, int(round(block_length(np.column_stack([bm, md])) if mean_block is None else mean_block)))
    spa = SPA(-bm, -md, block_size=block, reps=reps, bootstrap="stationary", seed=seed)
    spa.compute()
    return float(spa.pvalues["consistent"])


# ----------------------------------------------------------------------------------------------
# a whole run
# ----------------------------------------------------------------------------------------------

#: per-row columns added to table.csv, in order (the multi-seed ones only when a row has >= 2 seeds)
ROW_COLUMNS = ("sharpe_lo", "sharpe_hi", "psr", "dsr", "sr_diff_index", "p_index", "sr_diff_rule", "p_rule")
SEED_COLUMNS = ("sharpe_iqm", "sharpe_iqm_lo", "sharpe_iqm_hi", "p_improve_index", "p_improve_rule")
STAT_COLUMNS = ROW_COLUMNS + SEED_COLUMNS


def align_returns(paths: Mapping[str, Sequence[pd.Series]]) -> tuple[np.ndarray, list[list[int]], Any]:
    """Simple returns of every (agent, seed) path on their common dates.

    ``paths``: ``{agent: [Series of account values per seed]}``. Dated paths are joined on their
    common dates; when any path is undated they are cut to the shortest length. Returns
    ``(returns (T-1, K), groups [column indices per agent], index of the common values)``.
    """
    series = [s for seeds in paths.values() for s in seeds]
    if all(isinstance(s.index, pd.DatetimeIndex) for s in series):
        joined = pd.concat([s.rename(i) for i, s in enumerate(series)], axis=1, join="inner").sort_index()
        v = joined.to_numpy(dtype=np.float64)
        index = joined.index
    else:
        n = min(len(s) for s in series)
        v = np.column_stack([s.to_numpy(dtype=np.float64)[:n] for s in series])
        index = pd.RangeIndex(n)
    prev = v[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, v[1:] / np.where(prev > 0, prev, 1.0) - 1.0, 0.0)
    groups, k = [], 0
    for seeds in paths.values():
        groups.append(list(range(k, k + len(seeds))))
        k += len(seeds)
    return r, groups, index


def count_tuning_trials(manifest: Mapping[str, Any] | None) -> dict[str, int]:
    """Tuning trials behind the run: ``{agent: trials}`` from the tuned-parameter files the
    manifest's ``config.tuned`` names (``finmeta tune`` writes every trial into them); {} when the
    run used none or a file can no longer be read."""
    tuned = ((manifest or {}).get("config") or {}).get("tuned") or {}
    out: dict[str, int] = {}
    for agent, info in tuned.items():
        n = info.get("n_trials") if isinstance(info, Mapping) else None
        if n is None and isinstance(info, Mapping) and info.get("file"):
            try:
                import yaml

                with open(info["file"], encoding="utf-8") as fh:
                    doc = yaml.safe_load(fh)
                n = len(doc.get("trials") or [])
            except (OSError, ValueError, AttributeError, TypeError):
                n = None
        if n:
            out[str(agent)] = int(n)
    return out


def run_statistics(paths: Mapping[str, Sequence[pd.Series]], table: pd.DataFrame, periods_per_year: float,
                   *, manifest: Mapping[str, Any] | None = None, reps: int = DEFAULT_REPS,
                   seed: int = DEFAULT_SEED, n_blocks: int = DEFAULT_BLOCKS) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every statistic of a run: per-row columns (:data:`STAT_COLUMNS`) and run-level figures.

    ``paths``: ``{agent: [account values per seed (Series), in seed order]}`` (rows are taken in
    name order, so the bootstrap draws do not depend on the order of the mapping); ``table``: the run's table (its
    ``sharpe`` column picks the best rule baseline). Returns ``(rows, run)``: ``rows`` one row per
    agent (column ``agent`` + statistics), ``run`` a JSON-ready dict (``n_trials``,
    ``sharpe_variance``, ``expected_max_sharpe``, ``pbo``, ``spa_pvalue``, ... see docs/metrics.md).
    """
    paths = {a: paths[a] for a in sorted(paths)}  # the draws do not depend on the callers' order
    agents = list(paths)
    r, groups, index = align_returns(paths)
    t = r.shape[0]
    ppy = float(periods_per_year)
    ann = math.sqrt(ppy)
    kinds = {a: row_kind(a) for a in agents}
    run: dict[str, Any] = {"n_returns": int(t), "bootstrap_reps": int(reps), "seed": int(seed),
                           "kinds": kinds}
    if isinstance(index, pd.DatetimeIndex) and len(index):
        run.update(start=str(index[0].date()), end=str(index[-1].date()))
    rows = pd.DataFrame({"agent": agents})
    if t < MIN_RETURNS:
        run["note"] = f"fewer than {MIN_RETURNS} returns on the common dates: no statistics"
        return rows, run
    sr_pp = sharpe_per_period(r)  # (K,) per (agent, seed)

    # trials: every (agent, seed) that is not an index row, plus every tuning trial
    trial_cols = [c for a, g in zip(agents, groups) if kinds[a] != "index" for c in g]
    tuning = count_tuning_trials(manifest)
    n_trials = len(trial_cols) + sum(tuning.values())
    trial_sr = sr_pp[trial_cols]
    trial_sr = trial_sr[np.isfinite(trial_sr)]
    var_sr = float(np.var(trial_sr, ddof=1)) if trial_sr.size >= 2 else float("nan")
    sr0 = expected_max_sharpe(n_trials, var_sr)
    run.update(n_trials=int(n_trials), n_trials_runs=len(trial_cols), n_trials_tuning=tuning,
               sharpe_variance=var_sr, sharpe_variance_annual=var_sr * ppy if np.isfinite(var_sr) else var_sr,
               expected_max_sharpe=sr0, expected_max_sharpe_annual=sr0 * ann)

    # intervals: joint stationary (+ stratified over seeds) bootstrap
    draws, block = bootstrap_sharpes(r, groups, ppy, reps=reps, seed=seed)
    lo, hi = percentile_interval(draws)
    run["block_length"] = block
    rows["sharpe_lo"], rows["sharpe_hi"] = lo, hi

    psr_v, dsr_v = [], []
    for a, g in zip(agents, groups):
        p, d = [], []
        for c in g:
            sk, ku = skew_kurt(r[:, c])
            p.append(psr(sr_pp[c], t, sk, ku))
            d.append(dsr(sr_pp[c], t, n_trials, var_sr, sk, ku) if kinds[a] != "index" else float("nan"))
        psr_v.append(float(np.mean(p)))
        dsr_v.append(float(np.mean(d)))
    rows["psr"], rows["dsr"] = psr_v, dsr_v

    # references: the index row and the best rule baseline (highest table Sharpe)
    sharpe_of = dict(zip(table["agent"].astype(str), table["sharpe"])) if "sharpe" in table else {}
    index_row = "index" if "index" in agents else next((a for a in agents if kinds[a] == "index"), None)
    rules = [a for a in agents if kinds[a] == "rule" and np.isfinite(sharpe_of.get(a, np.nan))]
    best_rule = max(rules, key=lambda a: sharpe_of[a]) if rules else None
    run.update(index_row=index_row, best_rule=best_rule)
    several = any(len(g) > 1 for g in groups)
    for ref, dcol, pcol, icol in ((index_row, "sr_diff_index", "p_index", "p_improve_index"),
                                  (best_rule, "sr_diff_rule", "p_rule", "p_improve_rule")):
        diffs, ps, imp = [], [], []
        for a, g in zip(agents, groups):
            if ref is None or a == ref:
                diffs.append(np.nan), ps.append(np.nan), imp.append(np.nan)
                continue
            gr = groups[agents.index(ref)]
            dlt, _, p = sharpe_difference_test(r[:, g], r[:, gr], ppy)
            diffs.append(dlt), ps.append(p)
            imp.append(probability_of_improvement(sr_pp[g], sr_pp[gr]))
        rows[dcol], rows[pcol] = diffs, ps
        if several:
            rows[icol] = imp
    if several:
        seed_sr = [sr_pp[g] * ann for g in groups]
        rows["sharpe_iqm"] = [iqm(x) for x in seed_sr]
        ci = [iqm_interval(x, reps=reps, seed=seed) for x in seed_sr]
        rows["sharpe_iqm_lo"] = [c[0] for c in ci]
        rows["sharpe_iqm_hi"] = [c[1] for c in ci]

    # probability that row i's Sharpe beats row j's under the joint bootstrap (the matrix plot)
    with np.errstate(invalid="ignore"):
        better = (draws[:, :, None] > draws[:, None, :]).mean(axis=0) + 0.5 * (
            draws[:, :, None] == draws[:, None, :]).mean(axis=0)
    np.fill_diagonal(better, np.nan)
    run["improvement_matrix"] = {"agents": agents, "p": better.tolist()}

    # run level: PBO over the candidate rows (seed-mean returns), SPA of the learned rows vs the index
    cand = [(a, g) for a, g in zip(agents, groups) if kinds[a] != "index"]
    if len(cand) >= 2:
        m = np.column_stack([r[:, g].mean(axis=1) for _, g in cand])
        res = pbo_cscv(m, n_blocks)
        run.update(pbo=res["pbo"], pbo_blocks=res["n_blocks"], pbo_strategies=[a for a, _ in cand],
                   pbo_combinations=res["n_combinations"])
    else:
        run.update(pbo=float("nan"), pbo_strategies=[a for a, _ in cand])
    learned = [(a, g) for a, g in zip(agents, groups) if kinds[a] == "learned"]
    spa_set = learned or [(a, g) for a, g in zip(agents, groups) if kinds[a] == "rule"]
    if index_row is not None and spa_set:
        bm = r[:, groups[agents.index(index_row)]].mean(axis=1)
        md = np.column_stack([r[:, g].mean(axis=1) for _, g in spa_set])
        run.update(spa_pvalue=spa_pvalue(bm, md, reps=reps, seed=seed, mean_block=block),
                   spa_models=[a for a, _ in spa_set], spa_models_kind="learned" if learned else "rule")
    else:
        run.update(spa_pvalue=float("nan"), spa_models=[])
    return rows, run


def json_ready(obj: Any) -> Any:
    """``obj`` with nan/inf floats as None and numpy scalars as Python numbers (for JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [json_ready(v) for v in (obj.tolist() if isinstance(obj, np.ndarray) else obj)]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


__all__ = [
    "RULE_BASELINES", "STAT_COLUMNS", "row_kind", "sharpe_per_period", "skew_kurt", "psr", "dsr",
    "expected_max_sharpe", "stationary_indices", "block_length", "bootstrap_sharpes", "percentile_interval",
    "sharpe_difference_test", "iqm", "iqm_interval", "probability_of_improvement", "pbo_cscv", "spa_pvalue",
    "align_returns", "count_tuning_trials", "run_statistics", "json_ready",
]

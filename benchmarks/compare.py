"""Two run directories, row by row: is B's Sharpe different from A's beyond noise?

The question behind "SB3 against the torch backend at equal quality" (issue 14) and "scaled against
raw observations" (issue 17): the same config but one change, two run directories on the same
dates. For every learned agent both runs have (rule rows and the index only when named; its seeds
in each, on the dates both have):

* the mean trade Sharpe of each run over its seeds (annualised, ddof 1, as the tables);
* ``diff`` = mean_B - mean_A with a 95 % percentile interval from a **stratified bootstrap of the
  seeds** (each run's seeds resampled with replacement, independently: seed k of one run shares
  nothing with seed k of the other but its number, so the seeds are not paired); no interval when a
  side has one seed, and no interval or probability of improvement when a seed's path is flat
  (all cash: its Sharpe is undefined, nan, as in the tables);
* the **paired test on the same dates** (:func:`benchmarks.stats.sharpe_difference_test`,
  Ledoit & Wolf 2008 HAC, the seeds of each run pooled): its difference, standard error and
  two-sided p-value;
* rliable's probability of improvement ``P(a seed of B beats a seed of A)``;
* the mean action repeat of each run, from its stored actions (``actions/``; ``table_seeds.csv``
  for a seed without one): a static policy explains a Sharpe equal to a rule's.

:func:`compare_rows` (``finmeta compare RUN --row ROW``) asks the same of one row against the
other rows of one run (the MoE against its ablations, the ensemble against its members), adding on
how many seed numbers the row is below the other.

Both runs must come from the same data (their manifests' ``dataset_hash``, which both must have) and
the same periods a year, unless the caller says otherwise. A row's account values are lined up on
the dates every seed of both runs has, and returns are taken from one of those dates to the next,
so that each return spans the same days in A and B.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks import rundir
from benchmarks.metrics import RunDirError
from benchmarks.stats import (DEFAULT_REPS, DEFAULT_SEED, MIN_RETURNS, percentile_interval, probability_of_improvement,
                              row_kind, sharpe_difference_test, sharpe_per_period)

#: the columns of :func:`compare_runs`' table, in order
COLUMNS = ("agent", "seeds_a", "seeds_b", "n_returns", "sharpe_a", "sharpe_b", "diff", "diff_lo", "diff_hi",
           "paired_diff", "paired_se", "paired_p", "p_improvement", "action_repeat_a", "action_repeat_b")


def seed_bootstrap_diff(a: Sequence[float], b: Sequence[float], reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED,
                        alpha: float = 0.05) -> tuple[float, float, float]:
    """``mean(b) - mean(a)`` and its ``1 - alpha`` percentile interval by the stratified bootstrap:
    each sample's scores resampled with replacement, independently, ``reps`` times from one
    ``numpy.random.default_rng(seed)`` (a's draws first). One score on a side gives a degenerate
    side (it is always itself)."""
    x = np.asarray(a, dtype=np.float64).ravel()
    y = np.asarray(b, dtype=np.float64).ravel()
    if x.size == 0 or y.size == 0:
        raise ValueError("seed_bootstrap_diff: both samples need at least one score")
    rng = np.random.default_rng(seed)
    xa = x[rng.integers(0, x.size, size=(reps, x.size))].mean(axis=1)
    yb = y[rng.integers(0, y.size, size=(reps, y.size))].mean(axis=1)
    lo, hi = percentile_interval(yb - xa, alpha)
    return float(y.mean() - x.mean()), float(lo), float(hi)


def _values(frames: Mapping[int | None, pd.DataFrame]) -> pd.DataFrame:
    """Each seed's account value, one column per seed (``-1`` for an unseeded file), on the dates
    every seed has (inner join), so that returns are computed on one calendar."""
    cols = {(-1 if s is None else s): f["account_value"].astype(np.float64) for s, f in frames.items()}
    return pd.concat(cols, axis=1, join="inner").sort_index(axis=1)


def _action_repeat(run_dir: Path, agent: str, seeds: Sequence[int]) -> float:
    """Mean action repeat over ``seeds``, each seed's from its stored chain
    (``actions/<agent>_seed<s>.csv``, :func:`benchmarks.diagnostics.action_diagnostics`), the
    artefact ``table_seeds.csv`` is computed from. A seed whose actions file is missing falls back
    to its ``table_seeds.csv`` row (which holds only the last invocation's agents); nan when
    neither has it."""
    from benchmarks.diagnostics import action_diagnostics

    table: pd.DataFrame | None = None  # the agent's table_seeds.csv rows, read only when a seed needs them
    found = []
    # an unseeded row (values/<agent>.csv) takes actions/<agent>.csv, or every table row of the agent
    keys = [(s, rundir.chain_folder(agent, s)) for s in seeds] if seeds else [(None, agent)]
    for s, stem in keys:
        f = Path(run_dir) / rundir.ACTIONS / f"{stem}.csv"
        if f.is_file():
            acts = pd.read_csv(f, index_col=0).to_numpy(dtype=np.float64)
            found.append(action_diagnostics(acts, learned=False)["action_repeat"])
        else:
            if table is None:
                table = _seed_table_rows(run_dir, agent)
            rows = table if s is None else table[table["seed"] == s]
            found.extend(float(v) for v in rows["action_repeat"])
    vals = [v for v in found if np.isfinite(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _seed_table_rows(run_dir: Path, agent: str) -> pd.DataFrame:
    """``agent``'s rows of ``<run>/table_seeds.csv`` (columns ``seed``, ``action_repeat``, ...); no
    rows when the file or those columns are absent."""
    path = Path(run_dir) / rundir.TABLE_SEEDS
    t = pd.read_csv(path) if path.is_file() else pd.DataFrame()
    if not {"action_repeat", "agent", "seed"} <= set(t.columns):
        return pd.DataFrame(columns=["agent", "seed", "action_repeat"])
    return t[t["agent"] == agent]


def _periods(manifest: Mapping[str, Any] | None) -> float | None:
    p = (manifest or {}).get("periods_per_year")
    return float(p) if p is not None else None


def _pair(xa: pd.DataFrame, xb: pd.DataFrame, periods_per_year: float, reps: int, seed: int,
          who: str, between: str) -> dict[str, Any]:
    """The statistics of B against A for two rows' account values (one column per seed, from
    :func:`_values`), on the dates both have: the columns of :data:`COLUMNS` from ``seeds_a`` to
    ``p_improvement``, and each side's Sharpe by seed number (``_by_seed_a``, ``_by_seed_b``; an
    unseeded file has no seed number)."""
    dates = xa.index.intersection(xb.index)  # the dates every seed of both sides has
    if len(dates) - 1 < MIN_RETURNS:
        raise RunDirError(f"{who}: {max(len(dates) - 1, 0)} returns on the dates common to {between} "
                          f"(at least {MIN_RETURNS} are needed)")
    # returns from one value to the next on the common calendar (a date one side lacks is skipped
    # by both, so each return spans the same days in A and B)
    a = xa.loc[dates].pct_change().iloc[1:].to_numpy()
    b = xb.loc[dates].pct_change().iloc[1:].to_numpy()
    sa = sharpe_per_period(a) * math.sqrt(periods_per_year)
    sb = sharpe_per_period(b) * math.sqrt(periods_per_year)
    nan = float("nan")
    diff = float(np.mean(sb) - np.mean(sa))
    lo = hi = pim = nan
    if np.isfinite(sa).all() and np.isfinite(sb).all():  # a flat path (all cash) has no Sharpe
        pim = probability_of_improvement(sb, sa)
        if sa.size >= 2 and sb.size >= 2:  # one seed a side has no spread to resample
            diff, lo, hi = seed_bootstrap_diff(sa, sb, reps=reps, seed=seed)
    pdiff, pse, pp = sharpe_difference_test(b, a, periods_per_year)
    return {"seeds_a": a.shape[1], "seeds_b": b.shape[1], "n_returns": len(dates) - 1,
            "sharpe_a": float(np.mean(sa)), "sharpe_b": float(np.mean(sb)),
            "diff": diff, "diff_lo": lo, "diff_hi": hi,
            "paired_diff": pdiff, "paired_se": pse, "paired_p": pp, "p_improvement": pim,
            "_by_seed_a": {int(c): float(v) for c, v in zip(xa.columns, sa) if c >= 0},
            "_by_seed_b": {int(c): float(v) for c, v in zip(xb.columns, sb) if c >= 0}}


def _by_agent(values: Mapping[tuple[str, int | None], pd.DataFrame]) -> dict[str, dict[int | None, pd.DataFrame]]:
    """:func:`benchmarks.report.load_run_values`' ``{(agent, seed): frame}`` as ``{agent: {seed: frame}}``."""
    out: dict[str, dict[int | None, pd.DataFrame]] = {}
    for (agent, s), frame in values.items():
        out.setdefault(agent, {})[s] = frame
    return out


def compare_runs(run_a: str | Path, run_b: str | Path, agents: Sequence[str] | None = None,
                 periods_per_year: float | None = None, reps: int = DEFAULT_REPS, seed: int = DEFAULT_SEED,
                 any_data: bool = False) -> dict[str, Any]:
    """Compare the rows two run directories share (see the module docstring).

    Returns ``{"table": DataFrame (COLUMNS, one row per agent), "periods_per_year": float,
    "dataset_hash": (a's, b's), "run_a": str, "run_b": str}``. :class:`RunDirError` (naming the run
    and the agent) when a run has no values, the runs' datasets or periods a year differ (unless
    ``any_data`` / ``periods_per_year`` is given), an asked agent is missing from a run, no agent is
    shared (by default only learned rows count), or a row has fewer than :data:`~benchmarks.stats.MIN_RETURNS` common dates.
    """
    from benchmarks.report import load_run_values

    run_a, run_b = Path(run_a), Path(run_b)
    for run in (run_a, run_b):
        if not run.is_dir():
            raise RunDirError(f"{run}: run directory not found")
    ma, mb = rundir.read_manifest(run_a), rundir.read_manifest(run_b)
    ha, hb = (ma or {}).get("dataset_hash"), (mb or {}).get("dataset_hash")
    if not any_data:
        for run, h in ((run_a, ha), (run_b, hb)):
            if not h:
                raise RunDirError(f"{run}: no dataset_hash in its manifest.json, so the runs cannot be shown to share "
                                  "their data (pass any_data / --any-data to compare anyway)")
        if ha != hb:
            raise RunDirError(f"{run_a} and {run_b}: different datasets (dataset_hash {ha[:16]}... against {hb[:16]}...); "
                              "a Sharpe difference between them mixes data with method (pass any_data / --any-data to compare anyway)")
    if periods_per_year is None:
        pa, pb = _periods(ma), _periods(mb)
        if pa is not None and pb is not None and pa != pb:
            raise RunDirError(f"{run_a} and {run_b}: periods_per_year {pa:g} against {pb:g} in their manifests; "
                              "give periods_per_year / --periods-per-year")
        periods_per_year = pa or pb or 252.0
    if not periods_per_year > 0:
        raise RunDirError(f"{run_a} and {run_b}: periods_per_year must be > 0, got {periods_per_year}")
    ga, gb = _by_agent(load_run_values(run_a)), _by_agent(load_run_values(run_b))
    if agents:
        for name in agents:
            for run, g in ((run_a, ga), (run_b, gb)):
                if name not in g:
                    raise RunDirError(f"{run}: no values for agent {name!r} (it has: {', '.join(sorted(g))})")
        names = list(agents)
    else:
        names = [n for n in sorted(ga) if n in gb and row_kind(n) == "learned"]
        if not names:
            raise RunDirError(f"{run_a} and {run_b}: no learned agent in both (a: {', '.join(sorted(ga))}; "
                              f"b: {', '.join(sorted(gb))}; name rule rows with agents / --agents)")
    rows = []
    for name in names:
        xa, xb = _values(ga[name]), _values(gb[name])
        row = {"agent": name, **_pair(xa, xb, periods_per_year, reps, seed, f"agent {name!r}", f"{run_a} and {run_b}")}
        row["action_repeat_a"] = _action_repeat(run_a, name, list(row["_by_seed_a"]))
        row["action_repeat_b"] = _action_repeat(run_b, name, list(row["_by_seed_b"]))
        rows.append(row)  # the DataFrame keeps COLUMNS only
    return {"table": pd.DataFrame(rows, columns=list(COLUMNS)), "periods_per_year": float(periods_per_year),
            "dataset_hash": (ha, hb), "run_a": str(run_a), "run_b": str(run_b)}


#: the columns of :func:`compare_rows`' table, in order
ROW_COLUMNS = ("against", "seeds_row", "seeds_against", "n_returns", "sharpe_row", "sharpe_against", "diff", "diff_lo",
               "diff_hi", "paired_diff", "paired_se", "paired_p", "seeds_below", "seeds_common", "p_improvement")
#: _pair's names (B = the row, A = the other row) as compare_rows' columns; the rest keep theirs
_ROW_NAMES = {"seeds_b": "seeds_row", "seeds_a": "seeds_against", "sharpe_b": "sharpe_row", "sharpe_a": "sharpe_against"}


def compare_rows(run_dir: str | Path, row: str, against: Sequence[str] | None = None,
                 periods_per_year: float | None = None, reps: int = DEFAULT_REPS,
                 seed: int = DEFAULT_SEED) -> dict[str, Any]:
    """One row of a run against other rows of the same run ("does the MoE beat its ablations?",
    "does the ensemble beat its best member?"), with the statistics of :func:`compare_runs`:
    ``diff`` = Sharpe(row) - Sharpe(other) with the seed-bootstrap interval, the paired HAC test on
    the dates both have (seeds pooled), rliable's ``P(row > other)``, and on how many of the seed
    numbers both have the row's Sharpe is below the other's (``seeds_below`` of ``seeds_common``;
    0 of 0 against an unseeded row such as the index).

    ``against``: the other rows (default: every other row of the run, the index rows last). Returns
    ``{"table": DataFrame (ROW_COLUMNS), "row": row, "periods_per_year": float, "run": str}``;
    :class:`RunDirError` naming the run and the row when a row has no values or too few dates.
    """
    from benchmarks.report import load_run_values

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    if periods_per_year is None:
        periods_per_year = _periods(rundir.read_manifest(run_dir)) or 252.0
    if not periods_per_year > 0:
        raise RunDirError(f"{run_dir}: periods_per_year must be > 0, got {periods_per_year}")
    groups = _by_agent(load_run_values(run_dir))
    for name in [row, *(against or [])]:
        if name not in groups:
            raise RunDirError(f"{run_dir}: no values for row {name!r} (it has: {', '.join(sorted(groups))})")
    others = list(against) if against else sorted((n for n in groups if n != row), key=lambda n: (n.startswith("index"), n))
    if row in others:
        raise RunDirError(f"{run_dir}: row {row!r} cannot be compared with itself")
    if not others:
        raise RunDirError(f"{run_dir}: no row besides {row!r} to compare it with")
    x_row = _values(groups[row])
    rows = []
    for name in others:
        # A = the other row (the reference), B = the row: diff = Sharpe(row) - Sharpe(other)
        st = _pair(_values(groups[name]), x_row, periods_per_year, reps, seed, f"row {row!r} against {name!r}", str(run_dir))
        mine, theirs = st["_by_seed_b"], st["_by_seed_a"]
        common = set(mine) & set(theirs)
        rows.append({"against": name, **{_ROW_NAMES.get(k, k): v for k, v in st.items()},
                     "seeds_below": sum(int(mine[s] < theirs[s]) for s in common), "seeds_common": len(common)})
    return {"table": pd.DataFrame(rows, columns=list(ROW_COLUMNS)), "row": row,
            "periods_per_year": float(periods_per_year), "run": str(run_dir)}


def _f(x: Any, digits: int = 3, sign: bool = False) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _interval(lo: float, hi: float) -> str:
    return "–" if not (math.isfinite(lo) and math.isfinite(hi)) else f"[{lo:+.3f}, {hi:+.3f}]"


def compare_markdown(result: Mapping[str, Any], label_a: str = "A", label_b: str = "B") -> str:
    """The comparison as a Markdown table (one row per agent) with a line saying what each column is."""
    t: pd.DataFrame = result["table"]
    head = (f"| agent | seeds {label_a} / {label_b} | returns | Sharpe {label_a} | Sharpe {label_b} | "
            f"{label_b} − {label_a} | 95 % interval (seeds bootstrapped) | paired test on the dates: Δ (p) | "
            f"P({label_b} > {label_a}) | action repeat {label_a} / {label_b} |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in t.itertuples(index=False):
        lines.append(
            f"| {r.agent} | {r.seeds_a} / {r.seeds_b} | {r.n_returns} | {_f(r.sharpe_a)} | {_f(r.sharpe_b)} | "
            f"{_f(r.diff, sign=True)} | {_interval(r.diff_lo, r.diff_hi)} | "
            f"{_f(r.paired_diff, sign=True)} ({_f(r.paired_p)}) | {_f(r.p_improvement, 2)} | "
            f"{_f(r.action_repeat_a, 2)} / {_f(r.action_repeat_b, 2)} |")
    lines.append("")
    lines.append(f"({label_a} = {result['run_a']}; {label_b} = {result['run_b']}; Sharpe annualised with "
                 f"{result['periods_per_year']:g} periods a year on the dates both runs traded; interval: seeds of each run "
                 "resampled independently; paired test: Ledoit-Wolf HAC, seeds pooled, same dates.)")
    return "\n".join(lines) + "\n"


def compare_rows_markdown(result: Mapping[str, Any]) -> str:
    """:func:`compare_rows` as a Markdown table (one line per other row) with a line saying what
    each column is."""
    t: pd.DataFrame = result["table"]
    r0 = result["row"]
    lines = [f"| {r0} minus | seeds | returns | Sharpe {r0} | Sharpe of the row | Δ | 95 % interval (seeds bootstrapped) | "
             f"paired test on the dates: Δ (p) | seeds where {r0} is below | P({r0} > row) |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in t.itertuples(index=False):
        below = f"{r.seeds_below} of {r.seeds_common}" if r.seeds_common else "–"
        lines.append(
            f"| {r.against} | {r.seeds_row} / {r.seeds_against} | {r.n_returns} | {_f(r.sharpe_row)} | {_f(r.sharpe_against)} | "
            f"{_f(r.diff, sign=True)} | {_interval(r.diff_lo, r.diff_hi)} | {_f(r.paired_diff, sign=True)} ({_f(r.paired_p)}) | "
            f"{below} | {_f(r.p_improvement, 2)} |")
    lines.append("")
    lines.append(f"(run {result['run']}; Sharpe annualised with {result['periods_per_year']:g} periods a year on the dates "
                 "both rows traded; interval: each row's seeds resampled independently; paired test: Ledoit-Wolf HAC, "
                 "seeds pooled, same dates.)")
    return "\n".join(lines) + "\n"

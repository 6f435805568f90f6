"""Result tables, plots and tearsheets of a run directory (the manifest: :mod:`benchmarks.rundir`).

Run-directory layout (see ``docs/metrics.md``)::

    <run>/
      values/<agent>.csv | <agent>_seed<k>.csv   (or .parquet)  account values per agent (and seed)
             columns: date (optional), account_value, turnover (optional), cost (optional)
      manifest.json        config, dataset hash, seeds, periods_per_year, versions, git commit, wall time
      table.csv            one row per agent: agent, figures[, <figure>_std, <figure>_ci95], n_seeds
      table_seeds.csv      one row per (agent, seed) -- the per-seed figures behind table.csv
      table.md             mean +/- std (Markdown)
      table.tex            the same as a LaTeX tabular (booktabs)
      equity.png           account value of every agent (matplotlib, Agg; styles: line_styles)
      drawdown.png         drawdown of every agent; both shade the turbulence-stop days
      tearsheets/index.html     landing page: the table, each agent linked to its tearsheet, the plots
      tearsheets/<agent>.html   quantstats HTML tearsheet (offline; benchmark passed as a series);
                                the ``index`` row's is ``index_benchmark.html``

``write_report`` writes the tables/plots/tearsheets from in-memory values; ``build_report`` rebuilds
them from ``<run>/values``. ``save_account_values`` writes the values in that layout.
"""

from __future__ import annotations

import logging
import math
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.stats import STAT_COLUMNS

from . import rundir

# the manifest belongs to the run directory's owner (benchmarks.rundir); re-exported for existing imports
from .rundir import (  # noqa: F401
    MANIFEST_LIBRARIES,
    build_manifest,
    git_commit,
    library_versions,
    read_manifest,
    write_manifest,
)
from benchmarks.metrics import (
    ALL_FIGURES,
    FIGURES,
    InvalidValuesError,
    RunDirError,
    TRADING_DAYS_STOCK,
    ValueFileError,
    aggregate_seeds,
    as_values,
    compute_metrics,
    drawdown_series,
)

VALUE_COLUMN = "account_value"
TURNOVER_COLUMNS = ("turnover", "traded")
COST_COLUMNS = ("cost", "costs", "cost_paid", "costs_paid")
DATE_COLUMNS = ("date", "time", "datetime", "timestamp", "datadate")
VALUE_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq")
_SEED_RE = re.compile(r"^(?P<agent>.+?)(?:_seed(?P<seed>\d+))?$")

FIGURE_LABELS: dict[str, str] = {
    "cumulative_return": "Cumulative return",
    "annual_return": "Annual return",
    "annual_volatility": "Annual volatility",
    "sharpe": "Sharpe",
    "sortino": "Sortino",
    "calmar": "Calmar",
    "max_drawdown": "Max drawdown",
    "turnover": "Turnover",
    "costs_paid": "Costs paid",
    "action_repeat": "Action repeat",
    "action_change": "Action change",
    "saturation": "Saturation",
    "static_windows": "Static windows",
}


# ----------------------------------------------------------------------------------------------
# reading account-value files
# ----------------------------------------------------------------------------------------------


def _has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in suffixes)


def _stem(path: Path) -> str:
    name = path.name
    for s in sorted(VALUE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(s):
            return name[: -len(s)]
    return path.stem


def read_account_values(path: str | Path, column: str | None = None) -> pd.DataFrame:
    """Read an account-value file (CSV, CSV.gz or Parquet) into a frame.

    Returns a DataFrame with column ``account_value`` and, when present in the file, ``turnover``
    and ``cost``; its index is a DatetimeIndex when the file has a date column (``date``, ``time``,
    ``datetime``, ``timestamp``, ``datadate``), else a RangeIndex. Unnamed index columns
    (``Unnamed: 0``, ``index``) are ignored. The value column is ``column`` if given, else
    ``account_value`` if present, else the only numeric column. Raises :class:`ValueFileError`
    for a missing/unreadable file or no / several candidate columns.
    """
    p = Path(path)
    if not p.exists():
        raise ValueFileError(f"{p}: file not found")
    if p.is_dir():
        raise ValueFileError(f"{p}: is a directory, expected a CSV or Parquet file of account values")
    try:
        if _has_suffix(p, (".parquet", ".pq")):
            df = pd.read_parquet(p)
            if isinstance(df.index, pd.DatetimeIndex):
                df = df.rename_axis("date").reset_index()
            elif not isinstance(df.index, pd.RangeIndex):
                df = df.reset_index()
        else:
            df = pd.read_csv(p)
    except (ValueError, OSError, ImportError, pd.errors.ParserError) as exc:
        raise ValueFileError(f"{p}: cannot read as {'Parquet' if _has_suffix(p, ('.parquet', '.pq')) else 'CSV'}: {exc}") from exc
    if df.empty:
        raise ValueFileError(f"{p}: the file has no rows")
    df.columns = [str(c) for c in df.columns]
    drop = [c for c in df.columns if c.startswith("Unnamed:") or c.strip() == "" or c.lower() in ("index", "level_0")]
    date_col = next((c for c in df.columns if c.lower() in DATE_COLUMNS), None)
    if date_col is None:  # an unnamed index column of dates (a dated Series saved with to_csv)
        for c in drop:
            if not pd.api.types.is_numeric_dtype(df[c]):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        pd.to_datetime(df[c].iloc[:5])
                except (ValueError, TypeError):
                    continue
                date_col = c
                drop.remove(c)
                break
    df = df.drop(columns=drop)

    index: pd.Index = pd.RangeIndex(len(df))
    if date_col is not None and date_col != column:
        try:
            index = pd.DatetimeIndex(pd.to_datetime(df[date_col]), name="date")
        except (ValueError, TypeError) as exc:
            raise ValueFileError(f"{p}: date column {date_col!r} cannot be parsed as dates: {exc}") from exc
        df = df.drop(columns=[date_col])

    lower = {c.lower(): c for c in df.columns}
    if column is not None:
        if column not in df.columns:
            raise ValueFileError(f"{p}: no column {column!r} (columns: {list(df.columns)})")
        value_col = column
    elif VALUE_COLUMN in lower:
        value_col = lower[VALUE_COLUMN]
    else:
        numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and not pd.api.types.is_bool_dtype(df[c])]
        if not numeric:
            raise ValueFileError(f"{p}: no numeric column of account values (columns: {list(df.columns)})")
        if len(numeric) > 1:  # turnover / cost columns are never the values when others exist
            rest = [c for c in numeric if c.lower() not in TURNOVER_COLUMNS + COST_COLUMNS]
            numeric = rest if len(rest) == 1 else numeric
        if len(numeric) > 1:
            raise ValueFileError(
                f"{p}: several numeric columns {numeric}; choose the account values with --column NAME"
            )
        value_col = numeric[0]
    if not pd.api.types.is_numeric_dtype(df[value_col]):
        raise ValueFileError(f"{p}: column {value_col!r} is not numeric ({df[value_col].dtype})")
    out = pd.DataFrame({VALUE_COLUMN: df[value_col].to_numpy(dtype=np.float64, na_value=np.nan)}, index=index)
    for name, candidates in (("turnover", TURNOVER_COLUMNS), ("cost", COST_COLUMNS)):
        found = next((lower[c] for c in candidates if c in lower and lower[c] != value_col), None)
        if found is not None:
            out[name] = df[found].to_numpy(dtype=np.float64, na_value=np.nan)
    return out


def metrics_of_frame(frame: pd.DataFrame, periods_per_year: float, name: str = "values") -> dict[str, float]:
    """:func:`compute_metrics` of a frame from :func:`read_account_values` (uses turnover/cost columns)."""
    values = frame[VALUE_COLUMN]
    as_values(values, name=name)  # names the file and row on bad values
    try:
        return compute_metrics(
            values,
            periods_per_year=periods_per_year,
            turnover=frame["turnover"].to_numpy() if "turnover" in frame else None,
            costs=frame["cost"].to_numpy() if "cost" in frame else None,
        )
    except InvalidValuesError as exc:
        raise InvalidValuesError(f"{name}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# run directory: saving and loading values
# ----------------------------------------------------------------------------------------------


def save_account_values(
    run_dir: str | Path,
    agent: str,
    values: pd.Series | np.ndarray | Sequence[float],
    seed: int | None = None,
    turnover: Any = None,
    costs: Any = None,
    fmt: str = "csv",
) -> Path:
    """Write one agent's (and seed's) account values as ``<run>/values/<agent>[_seed<k>].<fmt>``.

    ``values``: (T,) -- a dated Series writes a ``date`` column. ``turnover``/``costs``: optional
    per-value arrays (T,). ``fmt``: ``csv`` or ``parquet``.
    """
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", agent) or re.search(r"_seed\d+$", agent):
        raise RunDirError(f"agent name {agent!r} must be [A-Za-z0-9_.-] and not end in _seed<k>")
    if fmt not in ("csv", "parquet"):
        raise RunDirError(f"fmt must be 'csv' or 'parquet', got {fmt!r}")
    v = pd.Series(values) if not isinstance(values, pd.Series) else values
    frame = pd.DataFrame({VALUE_COLUMN: v.to_numpy(dtype=np.float64)})
    if isinstance(v.index, pd.DatetimeIndex):
        frame.insert(0, "date", v.index)
    for name, arr in (("turnover", turnover), ("cost", costs)):
        if arr is not None:
            a = np.asarray(arr, dtype=np.float64)
            if a.shape != (len(frame),):
                raise RunDirError(f"{name} for {agent!r}: expected shape ({len(frame)},), got {a.shape}")
            frame[name] = a
    folder = Path(run_dir) / rundir.VALUES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (f"{agent}_seed{int(seed)}" if seed is not None else agent)
    path = path.with_name(path.name + (".csv" if fmt == "csv" else ".parquet"))
    if fmt == "csv":
        rundir.write_csv(path, frame, index=False)
    else:
        rundir.write_parquet(path, frame, index=False)
    return path


def load_run_values(run_dir: str | Path) -> dict[tuple[str, int | None], pd.DataFrame]:
    """All account-value files of ``<run>/values``: ``{(agent, seed or None): frame}``, sorted."""
    folder = Path(run_dir) / rundir.VALUES
    if not Path(run_dir).is_dir():
        raise RunDirError(f"{run_dir}: run directory not found")
    if not folder.is_dir():
        raise RunDirError(f"{run_dir}: no values/ folder (expected values/<agent>[_seed<k>].csv or .parquet)")
    out: dict[tuple[str, int | None], pd.DataFrame] = {}
    files = sorted(f for f in folder.iterdir() if f.is_file() and _has_suffix(f, VALUE_SUFFIXES))
    if not files:
        raise RunDirError(f"{folder}: no account-value files (.csv, .csv.gz, .parquet)")
    for f in files:
        m = _SEED_RE.match(_stem(f))
        assert m is not None
        key = (m.group("agent"), int(m.group("seed")) if m.group("seed") is not None else None)
        if key in out:
            raise RunDirError(f"{f}: duplicate values for agent {key[0]!r} seed {key[1]} (two formats?)")
        out[key] = read_account_values(f)
    return out


# ----------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------


def _figure_columns(table: pd.DataFrame) -> list[str]:
    known = [f for f in ALL_FIGURES if f in table.columns]
    extra = [
        c for c in table.columns
        if c not in known and c not in ("agent", "n_seeds", "seed") and c not in STAT_COLUMNS
        and not c.endswith(("_std", "_ci95")) and pd.api.types.is_numeric_dtype(table[c])
    ]
    return known + extra


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if isinstance(x, (float, np.floating)) and math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{float(x):.{digits}f}"


def _digits(figure: str, digits: int) -> int:
    return 2 if figure == "costs_paid" else digits


#: how a missing figure (NaN: e.g. the index row's turnover and costs) is shown in Markdown / the console
MISSING_CELL = "–"


def table_cells(table: pd.DataFrame, digits: int = 4, pm: str = " ± ",
                missing: str = MISSING_CELL) -> tuple[list[str], list[list[str]]]:
    """Header and formatted rows of a table, as every rendering (Markdown, LaTeX, the console) shows them;
    a missing figure is ``missing``."""
    figs = _figure_columns(table)
    header = ["agent"] + [FIGURE_LABELS.get(f, f) for f in figs]
    rows = []
    for _, row in table.iterrows():
        cells = [str(row["agent"])]
        for f in figs:
            d = _digits(f, digits)
            if row[f] is None or (isinstance(row[f], (float, np.floating)) and math.isnan(row[f])):
                cells.append(missing)
                continue
            cell = _fmt(row[f], d)
            std = row.get(f"{f}_std")
            if std is not None and not (isinstance(std, float) and math.isnan(std)):
                cell += f"{pm}{_fmt(std, d)}"
            cells.append(cell)
        rows.append(cells)
    if "n_seeds" in table.columns and (table["n_seeds"] > 1).any():
        header.append("seeds")
        for cells, n in zip(rows, table["n_seeds"]):
            cells.append(str(int(n)))
    return header, rows


def table_markdown(table: pd.DataFrame, digits: int = 4) -> str:
    """The table as Markdown: one row per agent, ``mean ± std`` when several seeds ran."""
    header, rows = table_cells(table, digits, " ± ")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _tex_escape(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("~", r"\textasciitilde{}"), ("^", r"\^{}")):
        s = s.replace(a, b) if a != "\\" else s.replace(a, "\x00")
    return s.replace("\x00", r"\textbackslash{}")


def table_latex(table: pd.DataFrame, digits: int = 4, caption: str | None = None, label: str | None = None) -> str:
    """The table as a LaTeX ``table`` (booktabs ``tabular``), ``mean $\\pm$ std`` when several seeds ran.

    ``caption`` and ``\\label{label}`` go above the tabular; a missing figure is ``--``."""
    header, rows = table_cells(table, digits, "\x01", missing="--")
    col = "l" + "r" * (len(header) - 1)
    out = [r"\begin{table}[ht]", r"\centering"]
    if caption:  # ASCII "->" and "|" would typeset as "-¿" and "—" in LaTeX's default font encoding
        text = _tex_escape(caption).replace(" -> ", "--").replace(" | ", "; ")
        text = text.replace("<", r"\textless{}").replace(">", r"\textgreater{}")
        out.append(rf"\caption{{{text}}}")
    if label:
        out.append(rf"\label{{{re.sub(r'[^A-Za-z0-9_:.-]', '-', label)}}}")
    out += [rf"\begin{{tabular}}{{{col}}}", r"\toprule"]
    out.append(" & ".join(_tex_escape(h) for h in header) + r" \\")
    out.append(r"\midrule")
    for r in rows:
        out.append(" & ".join(_tex_escape(c).replace("\x01", r" $\pm$ ") for c in r) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_tables(run_dir: str | Path, table: pd.DataFrame, run_stats: Mapping[str, Any] | None = None,
                 caption: str | None = None, label: str | None = None) -> dict[str, Path]:
    """Write ``table.csv``, ``table.md`` and ``table.tex`` (with ``caption`` and ``\\label{label}``;
    default: a generic caption, ``tab:finmeta``); returns ``{kind: path}``.

    When ``table`` has the statistics columns (:data:`benchmarks.stats.STAT_COLUMNS`), ``table.md``
    and ``table.tex`` get a second table, the statistics section (:func:`stats_markdown`,
    :func:`stats_latex`), with the run-level figures of ``run_stats``."""
    if "agent" not in table.columns:
        raise RunDirError("the result table needs an 'agent' column")
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    paths = rundir.table_paths(run)
    rundir.write_csv(paths["csv"], table, index=False)
    md = table_markdown(table) + static_policy_note(table)
    tex = table_latex(table, caption=caption or "FinMeta results, one row per agent", label=label or "tab:finmeta")
    if any(c in table.columns for c in STAT_COLUMNS):
        md += "\n" + stats_markdown(table, run_stats)
        tex += "\n" + stats_latex(table, run_stats)
    rundir.write_text(paths["md"], md)
    rundir.write_text(paths["tex"], tex)
    return paths


def static_policies(table: pd.DataFrame) -> list[str]:
    """Agents flagged "static policy": in at least one trade window their action never changes
    (column ``static_windows`` > 0 of any seed; :mod:`benchmarks.diagnostics`)."""
    if "static_windows" not in table.columns or "agent" not in table.columns:
        return []
    col = pd.to_numeric(table["static_windows"], errors="coerce")
    return [str(a) for a, n in zip(table["agent"], col) if n == n and n > 0]


def static_policy_note(table: pd.DataFrame) -> str:
    """A Markdown note under the table naming the static policies (empty when there is none); it
    is also logged as a warning."""
    flagged = static_policies(table)
    if not flagged:
        return ""
    text = (f"static policy: {', '.join(flagged)} -- the action never changes within at least one trade "
            f"window (column Static windows; a rule such as buy_and_hold may do so by design)")
    logging.getLogger("finmeta.report").warning(text)
    return f"\n**{text}**\n"


# ----------------------------------------------------------------------------------------------
# statistics section (benchmarks/stats.py)
# ----------------------------------------------------------------------------------------------


def _p(x: Any) -> str:
    if x is None or not isinstance(x, (int, float, np.floating)) or not math.isfinite(x):
        return "–"
    return "< 0.001" if x < 0.001 else f"{float(x):.3f}"


def _num(x: Any, digits: int = 3) -> str:
    if x is None or not isinstance(x, (int, float, np.floating)) or not math.isfinite(x):
        return "–"
    return f"{float(x):.{digits}f}"


def _stats_cells(table: pd.DataFrame, run_stats: Mapping[str, Any] | None) -> tuple[list[str], list[list[str]]]:
    rs = run_stats or {}
    kinds = rs.get("kinds") or {}
    seeds = "sharpe_iqm" in table.columns
    idx, rule = rs.get("index_row") or "index", rs.get("best_rule") or "best rule"
    header = ["agent", "kind", "Sharpe", "95% CI", "PSR", "DSR", f"ΔSR vs {idx}", "p", f"ΔSR vs {rule}", "p"]
    if seeds:
        header += ["IQM", "IQM 95% CI", f"P(> {idx})", f"P(> {rule})"]
    rows = []
    for _, row in table.iterrows():
        g = row.get
        cells = [str(row["agent"]), str(kinds.get(str(row["agent"]), "")), _num(g("sharpe")),
                 f"[{_num(g('sharpe_lo'))}, {_num(g('sharpe_hi'))}]", _num(g("psr")), _num(g("dsr")),
                 _num(g("sr_diff_index")), _p(g("p_index")), _num(g("sr_diff_rule")), _p(g("p_rule"))]
        if seeds:
            cells += [_num(g("sharpe_iqm")), f"[{_num(g('sharpe_iqm_lo'))}, {_num(g('sharpe_iqm_hi'))}]",
                      _num(g("p_improve_index"), 2), _num(g("p_improve_rule"), 2)]
        rows.append(cells)
    return header, rows


def run_stats_lines(run_stats: Mapping[str, Any] | None) -> list[str]:
    """The run-level figures as short lines (trials, V[SR], SR_0, PBO, SPA, bootstrap)."""
    rs = run_stats or {}
    if not rs or "n_trials" not in rs:
        return [str(rs.get("note", "no statistics"))]
    tuning = rs.get("n_trials_tuning") or {}
    lines = [
        f"trials N = {rs['n_trials']} ({rs.get('n_trials_runs', '?')} (agent, seed) runs"
        + (", tuning trials " + ", ".join(f"{a} {n}" for a, n in tuning.items()) if tuning else "")
        + f"); variance of their Sharpes {_num(rs.get('sharpe_variance_annual'))} (annualised), "
        f"expected maximum Sharpe SR_0 {_num(rs.get('expected_max_sharpe_annual'))} (annualised)",
        f"PBO (CSCV, S = {rs.get('pbo_blocks', '–')} blocks, {len(rs.get('pbo_strategies') or [])} strategies): "
        f"{_num(rs.get('pbo'))}",
        f"SPA p-value ({rs.get('spa_models_kind', 'learned')} rows {', '.join(rs.get('spa_models') or []) or '–'} "
        f"vs {rs.get('index_row') or '–'}): {_p(rs.get('spa_pvalue'))}",
        f"bootstrap: stationary, mean block {_num(rs.get('block_length'), 1)} days, {rs.get('bootstrap_reps')} "
        f"resamples, seed {rs.get('seed')}; {rs.get('n_returns')} common returns"
        + (f" ({rs['start']} -> {rs['end']})" if rs.get("start") else ""),
    ]
    return lines


def stats_markdown(table: pd.DataFrame, run_stats: Mapping[str, Any] | None = None) -> str:
    """The statistics section: one row per agent (Sharpe and its 95 % interval, PSR, DSR, the
    Sharpe difference to the index row and to the best rule baseline with its p-value, and across
    seeds the IQM and the probability of improvement), then the run-level figures."""
    header, rows = _stats_cells(table, run_stats)
    lines = ["## Statistics (docs/metrics.md)", "",
             "| " + " | ".join(header) + " |", "|" + "|".join(["---", "---"] + ["---:"] * (len(header) - 2)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += [""] + [f"- {x}" for x in run_stats_lines(run_stats)]
    return "\n".join(lines) + "\n"


def _tex_cmp(s: str) -> str:
    return s.replace("<", "$<$").replace(">", "$>$")


def stats_latex(table: pd.DataFrame, run_stats: Mapping[str, Any] | None = None) -> str:
    """The statistics section as a LaTeX tabular (booktabs); run-level figures in the caption."""
    header, rows = _stats_cells(table, run_stats)
    out = [r"\begin{table}[ht]", r"\centering", rf"\begin{{tabular}}{{ll{'r' * (len(header) - 2)}}}", r"\toprule"]
    out.append(" & ".join(_tex_cmp(_tex_escape(h)).replace("Δ", r"$\Delta$") for h in header) + r" \\")
    out.append(r"\midrule")
    for r in rows:
        out.append(" & ".join(_tex_cmp(_tex_escape(c)).replace("–", "--") for c in r) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out.append(rf"\caption{{{_tex_cmp(_tex_escape('; '.join(run_stats_lines(run_stats)))).replace('–', '--')}}}")
    out.append(r"\end{table}")
    return "\n".join(out) + "\n"


def plot_sharpe_intervals(table: pd.DataFrame, path: str | Path) -> Path:
    """rliable-style interval plot: each agent's Sharpe (point) and its 95 % bootstrap interval
    (bar), and the IQM interval across seeds when there are several."""
    plt = _pyplot()
    t = table.iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(t) + 1.2))
    try:
        y = np.arange(len(t))
        lo, hi, sr = (t[c].to_numpy(dtype=np.float64) for c in ("sharpe_lo", "sharpe_hi", "sharpe"))
        ax.barh(y, hi - lo, left=lo, height=0.5, alpha=0.35, color="tab:blue", label="95% CI (stationary bootstrap)")
        ax.plot(sr, y, "k|", markersize=14, label="Sharpe")
        if "sharpe_iqm_lo" in t.columns:
            ilo, ihi = t["sharpe_iqm_lo"].to_numpy(dtype=np.float64), t["sharpe_iqm_hi"].to_numpy(dtype=np.float64)
            ax.barh(y - 0.32, ihi - ilo, left=ilo, height=0.12, color="tab:orange", label="IQM 95% CI (seeds)")
        ax.set_yticks(y, [str(a) for a in t["agent"]])
        ax.axvline(0.0, color="grey", linewidth=0.8)
        ax.set_xlabel("annualised Sharpe")
        ax.grid(alpha=0.3, axis="x")
        ax.margins(x=0.05)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, fontsize=7, frameon=False)
        fig.tight_layout()
        rundir.save_figure(fig, path, dpi=110, bbox_inches="tight")
    finally:
        plt.close(fig)
    return Path(path)


def plot_improvement_matrix(run_stats: Mapping[str, Any], path: str | Path) -> Path | None:
    """Heat map of P(row's Sharpe > column's Sharpe) under the joint bootstrap (None without it)."""
    mat = (run_stats or {}).get("improvement_matrix")
    if not mat or len(mat.get("agents", [])) < 2:
        return None
    plt = _pyplot()
    names = mat["agents"]
    p = np.array([[np.nan if v is None else v for v in row] for row in mat["p"]], dtype=np.float64)
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 * n + 2.5, 0.8 * n + 1.5))
    try:
        im = ax.imshow(p, vmin=0.0, vmax=1.0, cmap="RdBu")
        for i in range(n):
            for j in range(n):
                if np.isfinite(p[i, j]):
                    ax.text(j, i, f"{p[i, j]:.2f}", ha="center", va="center", fontsize=8)
        ax.set_xticks(range(n), names, rotation=45, ha="right")
        ax.set_yticks(range(n), names)
        ax.set_title("P(row Sharpe > column Sharpe), joint bootstrap")
        fig.colorbar(im, ax=ax, shrink=0.8)
        fig.tight_layout()
        rundir.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------------------------
# plots and tearsheets
# ----------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _plot_lines(lines: Mapping[str, tuple[Any, np.ndarray]], path: str | Path, *, title: str, ylabel: str,
                height: float, linewidth: float) -> Path:
    """One PNG with one line per name: ``lines[name] = (x, y)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, height))
    try:
        for name, (x, y) in lines.items():
            ax.plot(x, y, label=str(name), linewidth=linewidth)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        rundir.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


#: rule baselines (not trained): drawn dashed, index rows black/grey dashed, learned agents solid colours
RULE_BASELINES = ("buy_and_hold", "equal_weight", "equal_weight_gated", "min_variance")
_LEARNED_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#bcbd22", "#17becf",
                    "#393b79", "#637939", "#843c39", "#5254a3")  # tab10 less grey and pink, then dark tab20b
_ENSEMBLE_COLOUR = "#e377c2"  # tab10's pink, kept for the ensemble's band
_BASELINE_STYLES = (("#b8860b", "--"), ("#01665e", "-."), ("#762a83", ":"), ("#636363", (0, (5, 1, 1, 1))))
_INDEX_STYLES = (("black", "--"), ("black", ":"), ("#777777", "-."))


def agent_kind(name: str) -> str:
    """``"index"`` (market-index rows ``index``, ``index_<name>``, ``index_gated``), ``"baseline"``
    (:data:`RULE_BASELINES`) or ``"learned"`` (every other agent: RL, ensemble, moe)."""
    if name == "index" or name.startswith("index_"):
        return "index"
    return "baseline" if name in RULE_BASELINES else "learned"


def line_styles(names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Matplotlib line keywords per agent, distinguishable for a dozen agents: learned agents solid in
    a qualitative palette (a2c, ppo, ddpg, td3, sac, moe keep their colour in every run), rule
    baselines dashed / dash-dotted / dotted in muted colours, index rows black dashed and dotted.
    ``ensemble`` is a wide translucent pink band drawn under its members, so the member it picked
    stays visible on top of it."""
    out: dict[str, dict[str, Any]] = {}
    fixed = {a: _LEARNED_COLOURS[k] for k, a in enumerate(("a2c", "ppo", "ddpg", "td3", "sac", "moe"))}
    free = [c for c in _LEARNED_COLOURS if c not in {fixed[n] for n in names if n in fixed}]
    counts = {"learned": 0, "baseline": 0, "index": 0}
    for name in map(str, names):
        kind = agent_kind(name)
        if kind == "learned":
            style = {"linestyle": "-", "linewidth": 1.5, "zorder": 3}
            if name == "ensemble":
                style.update(color=_ENSEMBLE_COLOUR, linewidth=5.0, alpha=0.45, zorder=2)
            elif name in fixed:
                style["color"] = fixed[name]
            else:
                style["color"] = free[counts[kind] % len(free)]
                counts[kind] += 1
        else:
            table = _BASELINE_STYLES if kind == "baseline" else _INDEX_STYLES
            colour, dash = table[counts[kind] % len(table)]
            counts[kind] += 1
            style = {"color": colour, "linestyle": dash, "linewidth": 1.4, "zorder": 2}
        out[name] = style
    return out


def stop_spans(stop: pd.Series) -> list[tuple[Any, Any]]:
    """``(start, end)`` x positions of each run of stop bars in a bool Series: from the first stop bar
    to the first bar after the run (where the agents may buy again; the last bar if none)."""
    flags = np.asarray(stop, dtype=bool)
    if not flags.any():
        return []
    edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    idx = stop.index
    return [(idx[i], idx[min(j, len(idx) - 1)]) for i, j in zip(starts, ends)]


def stop_span_cells(windows: pd.DataFrame, stop: pd.Series) -> list[str | None]:
    """Per window (row of ``windows.csv``): its runs of turbulence-stop days as ``first/last`` dates,
    space-separated (what ``finmeta report`` shades when it rebuilds the plots); None without any."""
    days = stop.index.normalize()
    intraday = bool((stop.index != days).any())  # hourly bars: spans keep their times

    def stamp(t: pd.Timestamp) -> str:
        return t.isoformat() if intraday else str(t.date())

    out: list[str | None] = []
    for _, w in windows.iterrows():
        inside = stop[(days >= pd.Timestamp(w["trade_start"])) & (days <= pd.Timestamp(w["trade_end"]))]
        flags = inside.to_numpy(dtype=bool)
        edges = np.diff(np.r_[0, flags.astype(np.int8), 0])
        runs = zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1)
        cell = " ".join(f"{stamp(inside.index[i])}/{stamp(inside.index[j])}" for i, j in runs)
        out.append(cell or None)
    return out


def curves_figure(account_values: Mapping[str, pd.Series], *, drawdown: bool = False, title: str | None = None,
                  caption: str | None = None, stop: pd.Series | None = None):
    """The matplotlib Figure of :func:`plot_equity` (``drawdown=False``) or :func:`plot_drawdown`.

    ``account_values``: ``{agent: Series (T,)}`` (dated or step index). ``title``: first title line;
    ``caption``: a second, smaller line (config, data, fill, seeds; wrapped). ``stop``: bool Series
    (True on bars where the turbulence stop is active), shaded with the legend entry "turbulence
    stop". The y axis is plain currency with thousands separators (equity) or percent (drawdown),
    never an offset or ``1e6`` scale. The legend sits outside the axes, so it hides no curve.
    """
    import textwrap

    from matplotlib.ticker import FuncFormatter

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(11, 4.6 if drawdown else 5.6))
    styles = line_styles(list(account_values))
    rank = {"learned": 0, "baseline": 1, "index": 2}  # legend: learned agents, baselines, index rows
    for name, s in sorted(account_values.items(), key=lambda kv: rank[agent_kind(str(kv[0]))]):
        y = 100.0 * drawdown_series(s) if drawdown else s.to_numpy(dtype=np.float64)
        ax.plot(s.index, y, label=str(name), **styles[str(name)])
    if stop is not None:
        for k, (x0, x1) in enumerate(stop_spans(stop)):
            ax.axvspan(x0, x1, color="#a0a0a0", alpha=0.3, linewidth=0, zorder=1,
                       label="turbulence stop" if k == 0 else "_turbulence stop")  # "_": one legend entry
    ax.yaxis.set_major_formatter(FuncFormatter(
        (lambda v, _: f"{v:.0f}%") if drawdown else (lambda v, _: f"{v:,.0f}")))
    ax.set_ylabel("drawdown from the running peak (%)" if drawdown else "account value (currency units)")
    heading = title or ("Drawdown" if drawdown else "Account value")
    if caption:  # wrapped at its " | " separators where it can be
        lines = [""]
        for part in caption.split(" | "):
            lines[-1:] = [lines[-1], part] if lines[-1] and len(lines[-1]) + len(part) > 115 else \
                [f"{lines[-1]} | {part}" if lines[-1] else part]
        heading += "\n" + "\n".join(w for line in lines for w in textwrap.wrap(line, 130))
    ax.set_title(heading, fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    try:
        rundir.save_figure(fig, path, dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


def plot_equity(account_values: Mapping[str, pd.Series], path: str | Path, title: str = "Account value", *,
                caption: str | None = None, stop: pd.Series | None = None) -> Path:
    """PNG of every agent's account value (x: dates when dated, else step); see :func:`curves_figure`."""
    return _save(curves_figure(account_values, title=title, caption=caption, stop=stop), path)


def plot_drawdown(account_values: Mapping[str, pd.Series], path: str | Path, title: str = "Drawdown", *,
                  caption: str | None = None, stop: pd.Series | None = None) -> Path:
    """PNG of every agent's drawdown ``v / cummax(v) - 1`` in percent; see :func:`curves_figure`."""
    return _save(curves_figure(account_values, drawdown=True, title=title, caption=caption, stop=stop), path)


def _dated_returns(values: pd.Series, periods_per_year: float) -> tuple[pd.Series, bool]:
    """Simple returns with a DatetimeIndex; undated paths get a synthetic calendar (flag True)."""
    v = pd.Series(as_values(values, name=str(values.name or "values")), index=values.index)
    synthetic = not isinstance(v.index, pd.DatetimeIndex)
    if synthetic:
        freq = "D" if periods_per_year >= 365 else "B"
        v.index = pd.date_range("2000-01-03", periods=len(v), freq=freq)
    prev = v.shift(1)
    r = (v / prev - 1.0).where(prev > 0, 0.0).iloc[1:]
    if v.index.tz is not None:
        r.index = r.index.tz_convert(None)
    return r, synthetic


def write_tearsheet(
    values: pd.Series,
    path: str | Path,
    benchmark: pd.Series | None = None,
    periods_per_year: float = TRADING_DAYS_STOCK,
    title: str = "FinMeta tearsheet",
) -> dict[str, Any]:
    """quantstats HTML tearsheet of one account-value path, offline.

    ``benchmark``: optional account values of a benchmark path, passed to quantstats as a returns
    series (never a ticker, so quantstats downloads nothing). Undated paths get a synthetic
    business-day (or calendar-day when ``periods_per_year >= 365``) index, stated in the title.
    If quantstats fails, a plain HTML page with the figures is written instead and
    ``{"fallback": True, "error": ...}`` is returned.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    returns, synthetic = _dated_returns(values, periods_per_year)
    bench = None
    if benchmark is not None:
        bench, bench_synthetic = _dated_returns(benchmark, periods_per_year)
        if bench_synthetic != synthetic:  # one dated, one not: align by position
            n = min(len(bench), len(returns))
            bench = pd.Series(bench.to_numpy()[:n], index=returns.index[:n])
        bench = bench.reindex(returns.index).fillna(0.0)
        bench.name = str(benchmark.name or "benchmark")
    full_title = title + (" (undated series: synthetic calendar)" if synthetic else "")
    returns.name = str(values.name or "strategy")
    try:
        _pyplot()
        import quantstats as qs

        logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            qs.reports.html(
                returns,
                benchmark=bench,
                strategy_title=returns.name,  # quantstats labels it "Strategy" / "Benchmark" otherwise
                benchmark_title=None if bench is None else bench.name,
                output=str(path),
                title=full_title,
                periods_per_year=int(round(periods_per_year)),
                compounded=True,
                download_filename=path.name,
            )
        _pyplot().close("all")
        return {"path": path, "fallback": False, "synthetic_dates": synthetic}
    except Exception as exc:  # quantstats is third-party: never lose the report over it
        figs = compute_metrics(values, periods_per_year=periods_per_year)
        rows = "".join(f"<tr><td>{k}</td><td>{_fmt(v)}</td></tr>" for k, v in figs.items())
        rundir.write_text(
            path,
            f"<html><head><meta charset='utf-8'><title>{full_title}</title></head><body>"
            f"<h1>{full_title}</h1><p>quantstats failed ({type(exc).__name__}: {exc}); "
            f"figures computed by FinMeta:</p><table>{rows}</table></body></html>",
        )
        return {"path": path, "fallback": True, "error": f"{type(exc).__name__}: {exc}", "synthetic_dates": synthetic}


# ----------------------------------------------------------------------------------------------
# whole reports
# ----------------------------------------------------------------------------------------------


def run_caption(manifest: Mapping[str, Any] | None, windows: pd.DataFrame | None = None) -> str | None:
    """One line saying what a run measured: trade period (from ``windows``, the run's ``windows.csv``),
    data, fill and seeds (from its manifest); ``None`` without a manifest. The console table, the
    plots' titles, ``table.tex``'s caption and the tearsheet landing page all use it."""
    if not manifest:
        return None
    parts = []
    if windows is not None and len(windows) and {"trade_start", "trade_end", "trade_bars"} <= set(windows.columns):
        parts.append(f"trade {windows['trade_start'].iloc[0]} -> {windows['trade_end'].iloc[-1]} "
                     f"({int(windows['trade_bars'].sum())} bars, {len(windows)} window{'s' * (len(windows) != 1)})")
    data = (manifest.get("config") or {}).get("data") or {}
    files = [f.get("file") if isinstance(f, Mapping) else f for f in data.get("files") or [data.get("file")] if f]
    what = (f"dataset {data['dataset']}" if "dataset" in data else
            f"file{'s' * (len(files) > 1)} {', '.join(Path(str(f)).name for f in files)}" if files
            else f"source {data.get('source', 'synthetic')}")
    ds = manifest.get("dataset") or {}
    parts.append(f"data: {what}, {len(ds.get('tickers') or [])} tickers, hash {str(manifest.get('dataset_hash'))[:12]}")
    fill = manifest.get("fill")
    parts.append("fill: " + {"open": "next bar's open", "close": "this bar's close (FinRL parity)"}.get(fill, str(fill)))
    parts.append("seeds: " + ",".join(str(s) for s in manifest.get("seeds") or []))
    return " | ".join(parts)


def stop_from_windows(windows: pd.DataFrame | None, index: pd.Index) -> pd.Series | None:
    """The turbulence-stop mask on ``index`` from ``windows.csv``'s ``stop_spans`` column
    (``first/last`` stop day of each run, space-separated); None when the column is absent."""
    if windows is None or "stop_spans" not in windows.columns or not isinstance(index, pd.DatetimeIndex):
        return None
    mask = np.zeros(len(index), dtype=bool)
    at = index.tz_localize(None) if index.tz is not None else index
    for cell in windows["stop_spans"].dropna().astype(str):
        for span in cell.split():
            first, _, last = span.partition("/")
            last = last or first
            on = at.normalize() if len(last) == 10 else at  # date-only spans cover their whole days
            mask |= (on >= pd.Timestamp(first).tz_localize(None)) & (on <= pd.Timestamp(last).tz_localize(None))
    return pd.Series(mask, index=index)


def tearsheet_file(agent: str) -> str:
    """File name of an agent's tearsheet under ``tearsheets/``: ``<agent>.html``, except the ``index``
    row's, ``index_benchmark.html``, since ``index.html`` is the landing page linking them all."""
    return "index_benchmark.html" if agent == "index" else f"{agent}.html"


def write_tearsheet_index(folder: Path, table: pd.DataFrame, sheets: Mapping[str, Mapping[str, Any]], *,
                          title: str, caption: str | None = None, benchmark: str | None = None) -> Path:
    """``tearsheets/index.html``: the run's table with each agent linked to its tearsheet, the caption
    and the equity / drawdown plots of the run directory."""
    import html

    header, rows = table_cells(table) if "agent" in table.columns else (["agent"], [[a] for a in sheets])
    body = []
    for cells in rows:
        agent = cells[0]
        link = (f"<a href='{html.escape(Path(sheets[agent]['path']).name)}'>{html.escape(agent)}</a>"
                if agent in sheets else html.escape(agent))
        body.append("<tr><td>" + link + "</td>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells[1:]) + "</tr>")
    extra = [a for a in sheets if a not in {r[0] for r in rows}]
    lines = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{padding:3px 9px;border-bottom:1px solid #ddd}td+td{text-align:right}img{max-width:100%}</style>",
        f"</head><body><h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(caption)}</p>" if caption else "",
        "<p>One quantstats tearsheet per agent (seed-mean path when several seeds ran)"
        + (f"; benchmark: {html.escape(benchmark)}" if benchmark else "") + ".</p>",
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>",
        *body, "</table>",
        "<ul>" + "".join(f"<li><a href='{html.escape(Path(sheets[a]['path']).name)}'>{html.escape(a)}</a></li>"
                         for a in extra) + "</ul>" if extra else "",
        "<p><img src='../equity.png' alt='equity curves'></p><p><img src='../drawdown.png' alt='drawdowns'></p>",
        "</body></html>",
    ]
    path = folder / "index.html"
    rundir.write_text(path, "\n".join(x for x in lines if x) + "\n")
    return path


def split_key(key: str) -> tuple[str, int | None]:
    """``"ppo_seed3" -> ("ppo", 3)``, ``"index" -> ("index", None)``."""
    m = _SEED_RE.match(str(key))
    if m is None:  # pragma: no cover - the pattern matches every non-empty string
        raise RunDirError(f"bad agent key {key!r}")
    return m.group("agent"), (int(m.group("seed")) if m.group("seed") is not None else None)


def write_report(
    run_dir: str | Path,
    account_values: Mapping[str, pd.Series | np.ndarray],
    table: pd.DataFrame,
    manifest: Mapping[str, Any] | None = None,
    *,
    per_seed: pd.DataFrame | None = None,
    actions: Mapping[str, pd.DataFrame] | None = None,
    periods_per_year: float = TRADING_DAYS_STOCK,
    benchmark: str | pd.Series | None = None,
    tearsheets: bool = True,
    save_values: bool = True,
    statistics: bool = True,
    seed_values: Mapping[str, Sequence[pd.Series]] | None = None,
    windows: pd.DataFrame | None = None,
    stop: pd.Series | None = None,
) -> dict[str, Any]:
    """Write a run directory: values, tables, plots, tearsheets, manifest (layout: module doc).

    ``account_values``: ``{key: Series (T,)}`` with key ``<agent>`` or ``<agent>_seed<k>``; dated
    Series keep their dates. A DataFrame with columns ``account_value`` and optional ``turnover``
    (per-period ratio) / ``cost`` (T,) also saves those, so a rebuild recomputes the cost figures. With ``save_values`` each is written to ``values/<key>.csv`` (so that
    ``finmeta report`` can rebuild the run). Plots and tearsheets show one curve per agent: the
    seed-mean path when an agent has several seeds.
    ``table``: one row per agent (:func:`benchmarks.metrics.aggregate_seeds`).
    ``per_seed``: optional per-(agent, seed) figures -> ``table_seeds.csv``.
    ``actions``: optional ``{key: DataFrame (T, N)}`` -> ``actions/<key>.csv``.
    ``benchmark``: an agent of ``account_values`` or a Series of account values, the tearsheets'
    benchmark; None uses the agent ``index`` when present.
    ``statistics``: add the statistics of :func:`benchmarks.stats.run_statistics` (columns
    :data:`benchmarks.stats.STAT_COLUMNS` in the tables, a statistics section in table.md/.tex,
    ``stats.json``, ``sharpe_intervals.png``, ``improvement.png``, and the run-level figures under
    the manifest's ``statistics`` key); they are computed from ``seed_values``
    (``{agent: [values per seed]}``) when given, else from ``account_values``.
    ``windows``: the run's ``windows.csv`` frame (trade period for the captions); ``stop``: bool Series
    on the trade bars, True where the turbulence stop is active (shaded in the plots; None: from
    ``windows``' ``stop_spans`` when present). The plots' titles, ``table.tex``'s caption and
    ``\\label{tab:<config name>}`` and ``tearsheets/index.html`` name the config, data, fill and seeds
    (:func:`run_caption`; ``manifest`` None: read from ``<run>/manifest.json`` when there).
    Returns ``{"tables", "values", "equity", "drawdown", "tearsheets", "tearsheet_index", "manifest",
    "table", "statistics"}`` (paths/infos; ``table`` with the statistics columns).
    """
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    described = manifest if manifest is not None else read_manifest(run)
    caption = run_caption(described, windows)
    name = str(((described or {}).get("config") or {}).get("name") or "") or None
    result: dict[str, Any] = {"values": {}}
    if per_seed is not None:
        rundir.write_csv(run / rundir.TABLE_SEEDS, per_seed, index=False)

    groups: dict[str, list[pd.DataFrame]] = {}
    by_seed: dict[str, list[tuple[int, pd.Series]]] = {}
    for key, v in account_values.items():
        extra: dict[str, Any] = {}
        if isinstance(v, pd.DataFrame):
            if VALUE_COLUMN not in v.columns:
                raise RunDirError(f"account values of {key!r}: a frame needs an {VALUE_COLUMN!r} column")
            extra = {"turnover": v["turnover"].to_numpy() if "turnover" in v else None,
                     "costs": v["cost"].to_numpy() if "cost" in v else None}
            s = v[VALUE_COLUMN]
        else:
            s = v if isinstance(v, pd.Series) else pd.Series(np.asarray(v, dtype=np.float64))
        as_values(s, name=str(key))
        agent, seed = split_key(str(key))
        if save_values:
            result["values"][str(key)] = save_account_values(run, agent, s, seed=seed, **extra)
        groups.setdefault(agent, []).append(pd.DataFrame({VALUE_COLUMN: s.to_numpy(dtype=np.float64)}, index=s.index))
        by_seed.setdefault(agent, []).append((-1 if seed is None else seed, s))
    curves = {agent: _mean_curve(frames) for agent, frames in groups.items()}
    run_stats: dict[str, Any] | None = None
    if statistics:
        paths = seed_values if seed_values is not None else {
            a: [s for _, s in sorted(pairs, key=lambda x: x[0])] for a, pairs in by_seed.items()}
        table, run_stats = add_statistics(table, paths, periods_per_year, described)
    result["tables"] = write_tables(run, table, run_stats, caption=f"{name or 'FinMeta'}: {caption}" if caption else None,
                                    label=f"tab:{name}" if name else None)
    if per_seed is not None:
        result["tables"]["seeds"] = run / "table_seeds.csv"
    result["table"], result["statistics"] = table, run_stats
    if run_stats is not None and "n_trials" in run_stats:
        rundir.write_json(run / rundir.STATS, _stats_json(run_stats))
        result["sharpe_intervals"] = plot_sharpe_intervals(table, run / "sharpe_intervals.png")
        result["improvement"] = plot_improvement_matrix(run_stats, run / "improvement.png")
    if actions:
        folder = run / rundir.ACTIONS
        folder.mkdir(exist_ok=True)
        for key, frame in actions.items():
            rundir.write_csv(folder / f"{key}.csv", frame, index=isinstance(frame.index, pd.DatetimeIndex), index_label="date")
    if curves:
        if stop is None:
            first = next(iter(curves.values()))
            stop = stop_from_windows(windows, first.index)
        n_seeds = max(len(f) for f in groups.values())
        seeds = f" (seed mean of {n_seeds} seeds)" if n_seeds > 1 else ""
        result["equity"] = plot_equity(curves, run / "equity.png", title=f"{name or 'FinMeta'}: account value{seeds}",
                                       caption=caption, stop=stop)
        result["drawdown"] = plot_drawdown(curves, run / "drawdown.png", title=f"{name or 'FinMeta'}: drawdown{seeds}",
                                           caption=caption, stop=stop)
    bench_series: pd.Series | None = None
    bench_name: str | None = None
    if benchmark is None and "index" in curves:
        benchmark = "index"
    if isinstance(benchmark, str):
        if benchmark not in curves:
            raise RunDirError(f"benchmark agent {benchmark!r} not among the agents {sorted(curves)}")
        bench_series, bench_name = curves[benchmark].rename(benchmark), benchmark
    elif benchmark is not None:
        bench_series = benchmark
    result["tearsheets"] = {}
    if tearsheets:
        for agent, s in curves.items():
            result["tearsheets"][agent] = write_tearsheet(
                s.rename(agent), run / "tearsheets" / tearsheet_file(agent),
                benchmark=None if agent == bench_name else bench_series,
                periods_per_year=periods_per_year, title=f"FinMeta: {agent}" + (f", run {name}" if name else ""),
            )
        result["tearsheet_index"] = write_tearsheet_index(
            run / "tearsheets", table, result["tearsheets"], title=f"FinMeta run: {name or run.name}",
            caption=caption, benchmark=bench_name or (None if bench_series is None else str(bench_series.name)))
    if manifest is not None:
        if run_stats is not None:
            manifest = {**manifest, "statistics": _stats_json(run_stats, manifest=True)}
        result["manifest"] = write_manifest(run, manifest)
    else:
        result["manifest"] = None
        if run_stats is not None and described is not None:
            # a rebuild: only the statistics key of the loop's manifest (read above) changes
            write_manifest(run, {**described, "statistics": _stats_json(run_stats, manifest=True)})
    return result


def _stats_json(run_stats: Mapping[str, Any], manifest: bool = False) -> dict[str, Any]:
    """Run-level statistics for ``stats.json`` (everything) or the manifest (without the matrix)."""
    from benchmarks.stats import json_ready

    d = dict(run_stats)
    if manifest:
        d.pop("improvement_matrix", None)
    return json_ready(d)


def add_statistics(table: pd.DataFrame, paths: Mapping[str, Sequence[pd.Series]], periods_per_year: float,
                   manifest: Mapping[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``table`` with the per-row statistics columns merged in (replacing earlier ones) and the
    run-level figures (:func:`benchmarks.stats.run_statistics`). A failure of the statistics never
    loses the report: it is warned about and the table is returned unchanged."""
    from benchmarks.stats import run_statistics

    base = table.drop(columns=[c for c in STAT_COLUMNS if c in table.columns])
    try:
        rows, run_stats = run_statistics(paths, base, periods_per_year, manifest=manifest)
    except Exception as exc:  # noqa: BLE001 - third-party numerics: keep the report
        warnings.warn(f"statistics not computed: {type(exc).__name__}: {exc}", RuntimeWarning, stacklevel=2)
        return base, {"note": f"statistics not computed: {type(exc).__name__}: {exc}"}
    merged = base.merge(rows, on="agent", how="left", sort=False)
    merged.index = base.index
    return merged, run_stats


def _mean_curve(frames: Sequence[pd.DataFrame]) -> pd.Series:
    """Seed-mean account value: the seeds' values averaged on their common index (T,)."""
    if len(frames) == 1:
        return frames[0][VALUE_COLUMN]
    if all(isinstance(f.index, pd.DatetimeIndex) for f in frames):
        joined = pd.concat([f[VALUE_COLUMN] for f in frames], axis=1, join="inner")
        return joined.mean(axis=1)
    n = min(len(f) for f in frames)
    return pd.Series(np.mean([f[VALUE_COLUMN].to_numpy()[:n] for f in frames], axis=0))


#: figures a rebuild cannot recompute from the value files; carried over from ``table_seeds.csv``
KEPT_FIGURES = ("turnover", "costs_paid", "action_repeat", "action_change", "saturation", "static_windows")


def _keep_cost_figures(seed_table: pd.DataFrame, previous: Path) -> pd.DataFrame:
    """Carry ``turnover``/``costs_paid`` (for value files without turnover/cost columns) and the
    action diagnostics (:data:`KEPT_FIGURES`) over from a previous ``table_seeds.csv`` (matched on
    agent and seed; an agent's only row matches too)."""
    if not previous.is_file():
        return seed_table
    try:
        old = pd.read_csv(previous)
    except (ValueError, OSError):
        return seed_table
    figs = [f for f in KEPT_FIGURES if f in old.columns]
    if not figs or "agent" not in old.columns:
        return seed_table
    out = seed_table.copy()
    for f in figs:
        if f not in out.columns:
            out[f] = np.nan
    for i, row in out.iterrows():
        cand = old[old["agent"].astype(str) == str(row["agent"])]
        if "seed" in cand.columns and len(cand) > 1:
            cand = cand[cand["seed"] == (row["seed"] if not pd.isna(row["seed"]) else -1)]
        if len(cand) != 1:
            continue
        for f in figs:
            if pd.isna(out.at[i, f]) and not pd.isna(cand[f].iloc[0]):
                out.at[i, f] = float(cand[f].iloc[0])
    if all(out[f].isna().all() for f in figs):
        return seed_table
    return out


def build_report(
    run_dir: str | Path,
    periods_per_year: float | None = None,
    benchmark: str | None = None,
    tearsheets: bool = True,
) -> dict[str, Any]:
    """(Re)build tables, plots and tearsheets from ``<run>/values``.

    ``periods_per_year``: None reads ``periods_per_year`` from ``<run>/manifest.json`` and falls
    back to 252. Writes ``table_seeds.csv`` (per agent and seed) and ``table.csv`` (aggregated);
    the manifest is left as it is but for its ``statistics`` key (the run-level figures of
    :func:`benchmarks.stats.run_statistics`, rewritten from the values). Returns :func:`write_report`'s dict plus ``table``,
    ``seed_table`` and ``periods_per_year`` / ``periods_source``. Holds the run directory's report
    lock (:func:`benchmarks.rundir.report_lock`) while it reads and writes, so a ``finmeta bench``
    writing the same directory waits (and is waited for) instead of interleaving.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise RunDirError(f"{run}: run directory not found")
    with rundir.report_lock(run):
        return _build_report(run, periods_per_year, benchmark, tearsheets)


def _build_report(run: Path, periods_per_year: float | None, benchmark: str | None, tearsheets: bool) -> dict[str, Any]:
    frames = load_run_values(run)
    source = "--periods-per-year"
    if periods_per_year is None:
        manifest = read_manifest(run) or {}
        ppy = manifest.get("periods_per_year")
        if ppy:
            periods_per_year, source = float(ppy), "manifest.json"
        else:
            periods_per_year, source = float(TRADING_DAYS_STOCK), "default (daily stocks)"
    rows = []
    by_agent: dict[str, list[pd.DataFrame]] = {}
    for (agent, seed), frame in frames.items():
        label = f"{agent}" + (f"_seed{seed}" if seed is not None else "")
        figs = metrics_of_frame(frame, periods_per_year, name=f"values/{label}")
        rows.append({"agent": agent, "seed": seed, **figs})
        by_agent.setdefault(agent, []).append(frame)
    seed_table = pd.DataFrame(rows)
    seed_table["seed"] = seed_table["seed"].astype("Int64")
    seed_table = _keep_cost_figures(seed_table, run / "table_seeds.csv")
    table = aggregate_seeds(seed_table.drop(columns=["seed"]))
    curves = {a: _mean_curve(fs) for a, fs in by_agent.items()}
    seed_values = {a: [frames[(a, s)][VALUE_COLUMN] for s in sorted(
        (s for (b, s) in frames if b == a), key=lambda x: -1 if x is None else x)] for a in by_agent}
    windows = pd.read_csv(run / "windows.csv") if (run / "windows.csv").is_file() else None
    result = write_report(run, curves, table, manifest=None, per_seed=seed_table, periods_per_year=periods_per_year,
                          benchmark=benchmark, tearsheets=tearsheets, save_values=False, seed_values=seed_values,
                          windows=windows)
    result.update(seed_table=seed_table, periods_per_year=periods_per_year, periods_source=source)
    return result


__all__ = [
    "FIGURES", "aggregate_seeds", "split_key", "read_account_values", "metrics_of_frame", "save_account_values", "load_run_values",
    "table_markdown", "table_latex", "write_tables", "plot_equity", "plot_drawdown", "write_tearsheet",
    "curves_figure", "line_styles", "agent_kind", "stop_spans", "run_caption", "tearsheet_file",
    "build_manifest", "write_manifest", "read_manifest", "library_versions", "write_report", "build_report",
    "stats_markdown", "stats_latex", "run_stats_lines", "plot_sharpe_intervals", "plot_improvement_matrix",
    "add_statistics",
]

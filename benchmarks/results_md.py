"""Print a RESULTS.md entry (provenance + table) for a finished run directory.

    python -m benchmarks.results_md RUN_DIR [--columns sharpe,max_drawdown,...] [--wall-time-s S]

Everything comes from the run's own files (``manifest.json``, ``table.csv``), so a table in
``benchmarks/RESULTS.md`` is the run's table, not a transcription. Figures with more than one
seed are printed as ``mean ± std`` (sample std, ddof 1); one seed prints the value alone. The
``backend`` column says which learner trained each row (:func:`row_backend`: sb3, torch,
elegantrl, the members' for the ensemble, finmeta for the MoE, rule for baselines and the index).
``--wall-time-s`` overrides the manifest's wall time (a run resumed in several goes records only
its last go).

Published figures: a config may carry the paper's numbers to set beside ours::

    published:
      source: "Yang et al., ICAIF 2020, Table 2"
      rows:                       # keyed by our table's agent names ("index" = the index row)
        ensemble: {sharpe: 1.30, cumulative_return: 0.704, max_drawdown: -0.097}

They are taken from the run's manifest, or, for a run made before its config had them, from the
config of that name in ``benchmarks/configs/``; the entry then gets a "published" column with the
printed columns' published values in the same order (``–`` where the paper gives none).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pandas as pd

from finmeta.errors import ConfigError

from . import rundir

DEFAULT_COLUMNS = ["cumulative_return", "annual_return", "annual_volatility", "sharpe", "sortino",
                   "max_drawdown"]
LABELS = {"cumulative_return": "cumulative", "annual_return": "annual", "annual_volatility": "volatility",
          "sharpe": "Sharpe", "sortino": "Sortino", "calmar": "Calmar", "max_drawdown": "max DD",
          "turnover": "turnover", "diversity": "diversity", "router_entropy": "router entropy",
          # statistics (benchmarks/stats.py, docs/metrics.md)
          "sharpe_lo": "Sharpe 95% lo", "sharpe_hi": "Sharpe 95% hi", "psr": "PSR", "dsr": "DSR",
          "sr_diff_index": "ΔSR vs index", "p_index": "p (index)", "sr_diff_rule": "ΔSR vs best rule",
          "p_rule": "p (best rule)", "sharpe_iqm": "Sharpe IQM", "sharpe_iqm_lo": "IQM 95% lo",
          "sharpe_iqm_hi": "IQM 95% hi", "p_improve_index": "P(> index)", "p_improve_rule": "P(> best rule)",
          "action_repeat": "action repeat", "action_change": "action change", "saturation": "saturation",
          "static_windows": "static windows"}


def _fmt(mean: float, std: float | None, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if n > 1 and std is not None and not math.isnan(std) and std != 0.0:  # 0: deterministic rows
        return f"{mean:.3f} ± {std:.3f}"
    return f"{mean:.3f}"


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min {s:02d} s" if h else f"{m} min {s:02d} s"


def published_rows(cfg: dict, where: str = "config") -> tuple[str, dict[str, dict[str, float]]]:
    """``(source, {agent: {metric: value}})`` from a config's ``published`` section (empty if none).

    Raises :class:`ConfigError` naming ``where`` and the agent for a malformed section or a metric
    that is not a table column.
    """
    pub = cfg.get("published")
    if not pub:
        return "", {}
    if not isinstance(pub, dict) or not isinstance(pub.get("rows"), dict):
        raise ConfigError(f"{where}: published must be a mapping with a 'rows' mapping (agent -> metrics)")
    rows: dict[str, dict[str, float]] = {}
    for agent, metrics in pub["rows"].items():
        if not isinstance(metrics, dict):
            raise ConfigError(f"{where}: published.rows.{agent} must map metric names to numbers")
        unknown = sorted(set(metrics) - set(LABELS))
        if unknown:
            raise ConfigError(f"{where}: published.rows.{agent}: unknown metrics {unknown}; "
                              f"known: {', '.join(LABELS)}")
        try:
            rows[str(agent)] = {k: float(v) for k, v in metrics.items()}
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: published.rows.{agent}: every value must be a number ({exc})") from None
    return str(pub.get("source", "")), rows


def _published_of_run(cfg: dict) -> tuple[str, dict[str, dict[str, float]]]:
    if cfg.get("published"):
        return published_rows(cfg, "the run's manifest")
    from .spec import load_config, resolve_config_path

    if not cfg.get("name"):
        return "", {}
    try:
        path = resolve_config_path(str(cfg["name"]))
    except ConfigError:  # a config that is not (or no longer) shipped: nothing to set beside ours
        return "", {}
    return published_rows(load_config(path), str(path))


def row_backend(cfg: dict, agent: str) -> str:
    """Which learner backend trained a table row, from the run's config: ``sb3`` (the default for the
    five algorithms), ``torch`` / ``elegantrl`` (``backend:`` in the agent's entry, or a registry name
    such as ``torch_sac``), the members' backends for ``ensemble``, ``finmeta`` for the MoE agent and
    its ablations (agents/moe, torch), ``rule`` for rule baselines and the index."""
    from benchmarks.spec import ENSEMBLE_MEMBERS_DEFAULT, RL_AGENTS
    from benchmarks.stats import row_kind

    agents = cfg.get("agents") or {}
    name = str(agent)
    if row_kind(name) != "learned":
        return "rule"
    if name == "ensemble":
        members = (agents.get("ensemble") or {}).get("members") or ENSEMBLE_MEMBERS_DEFAULT
        return "+".join(dict.fromkeys(row_backend(cfg, m) for m in members))
    prefix = name.split("_", 1)[0]
    if prefix in ("torch", "elegantrl"):
        return prefix
    if name in RL_AGENTS:
        return str((agents.get(name) or {}).get("backend") or "sb3").replace("stable_baselines3", "sb3")
    if name == "moe" or name.startswith("moe_"):
        return "finmeta"
    return "–"


def results_entry(run_dir: str | Path, columns: list[str] | None = None, wall_time_s: float | None = None) -> str:
    """The markdown block for ``run_dir`` (see the module docstring)."""
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / rundir.MANIFEST).read_text())
    table = pd.read_csv(run_dir / "table.csv")
    columns = [c for c in (columns or DEFAULT_COLUMNS) if c in table.columns]
    if "diversity" in table.columns and "diversity" not in columns and table["diversity"].notna().any():
        columns += ["diversity", "router_entropy"]
    cfg = manifest.get("config", {})
    ds = manifest.get("dataset", {})
    wall = wall_time_s if wall_time_s is not None else manifest.get("wall_time_s")
    machine = manifest.get("machine", {})
    source, published = _published_of_run(cfg)
    lines = [
        f"- Command: `{manifest.get('command') or '(not recorded)'}`",
        f"- Code: commit `{(manifest.get('git_commit') or '?')[:7]}`; config `{cfg.get('name', '?')}`; "
        f"fill `{manifest.get('fill', '?')}`; executor `{manifest.get('executor', '?')}`",
        f"- Seeds: {', '.join(str(s) for s in manifest.get('seeds', []))}",
        f"- Data: {len(ds.get('tickers', []))} assets, {ds.get('start', '?')} → {ds.get('end', '?')}, "
        f"{ds.get('rows', '?')} rows; dataset hash `{(manifest.get('dataset_hash') or '?')[:16]}…`",
        f"- Machine: {machine.get('cpus', '?')} CPUs"
        + (f", {machine['memory_gib']} GiB" if "memory_gib" in machine else "")
        + (f"; wall time {_duration(float(wall))}" if wall is not None else ""),
        "",
        "| agent | backend | " + " | ".join(LABELS.get(c, c) for c in columns) + " | seeds |"
        + (f" published ({source or 'config'}): " + " / ".join(LABELS.get(c, c) for c in columns) + " |"
           if published else ""),
        "|---|---|" + "---:|" * (len(columns) + 1) + ("---|" if published else ""),
    ]
    for _, row in table.iterrows():
        n = int(row.get("n_seeds", 1))
        cells = [_fmt(row[c], row.get(f"{c}_std"), n) for c in columns]
        line = f"| {row['agent']} | {row_backend(cfg, row['agent'])} | " + " | ".join(cells) + f" | {n} |"
        if published:
            pub = published.get(str(row["agent"]), {})
            line += " " + (" / ".join(f"{pub[c]:.3f}" if c in pub else "–" for c in columns) if pub else "") + " |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--columns", default=None, help="comma-separated table.csv columns")
    p.add_argument("--wall-time-s", type=float, default=None)
    a = p.parse_args(argv)
    cols = a.columns.split(",") if a.columns else None
    print(results_entry(a.run_dir, cols, a.wall_time_s), end="")


if __name__ == "__main__":
    main()

"""From our ``icaif2020_dow30`` config to the paper code's ``icaif2020_original``, one change at a time.

Each step adds one difference between the two (cumulative), runs ``finmeta bench`` on it with the
same seeds (paired), and prints a Markdown table: per step and agent the Sharpe (mean ± std over
seeds), plus the trade bars under the turbulence stop (from ``windows.csv``). Steps:

==================  ===========================================================================
``today``           ``icaif2020_dow30``: returns-based turbulence, q99 of each training range
``turbulence``      + the paper code's series (``features.turbulence_mode: icaif2020``)
``threshold``       + its threshold switch (``env.turbulence_rule: icaif2020_switch``, q90 of
                    2009-01-01..2015-09-30 or its max) = ``icaif2020_rules`` without the last change
``training_stop``   + no stop in the training env (= ``icaif2020_rules``)
``presets``         + the paper's SB2 agent presets and fractional shares
``sampled``         + sampled A2C/PPO actions (= ``icaif2020_original``)
==================  ===========================================================================

Rule baselines (``equal_weight_gated``, ``index_gated``) only feel the first three steps; the RL
rows feel all. Each step's run directory is ``OUT/<step>`` (resumable: rerun the same command).

Usage::

    python -m benchmarks.icaif2020_decomposition --agents equal_weight_gated,index_gated --seeds 0 \\
        --out ~/runs/icaif_decomposition
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

STEPS = ("today", "turbulence", "threshold", "training_stop", "presets", "sampled")


def step_configs(base: dict | None = None) -> dict[str, dict]:
    """The cumulative config of every step (``base``: the ``icaif2020_dow30`` config)."""
    from .spec import load_config

    cfg = copy.deepcopy(base if base is not None else load_config("icaif2020_dow30"))
    out: dict[str, dict] = {}
    out["today"] = copy.deepcopy(cfg)
    cfg["features"]["turbulence_mode"] = "icaif2020"
    cfg["features"]["turbulence_window"] = 252
    out["turbulence"] = copy.deepcopy(cfg)
    env = cfg["env"]
    env.pop("turbulence_quantile", None)
    env.update({"turbulence_rule": "icaif2020_switch", "turbulence_quantile": 0.90,
                "turbulence_insample": ["2009-01-01", "2015-10-01"], "turbulence_lookback": 63})
    out["threshold"] = copy.deepcopy(cfg)
    env["turbulence_in_training"] = False
    out["training_stop"] = copy.deepcopy(cfg)
    env["lot_size"] = 0.0
    for name in ("a2c", "ppo", "ddpg"):
        cfg["agents"][name] = {**cfg["agents"][name], "preset": "icaif2020"}
    out["presets"] = copy.deepcopy(cfg)
    for name in ("a2c", "ppo"):
        cfg["agents"][name] = {**cfg["agents"][name], "deterministic": False}
    out["sampled"] = copy.deepcopy(cfg)
    for step, c in out.items():
        c["name"] = f"icaif2020_decomposition_{step}"
    return out


def _summary(run_dir: Path) -> dict:
    seeds = pd.read_csv(run_dir / "table_seeds.csv")
    windows = pd.read_csv(run_dir / "windows.csv")
    out = {"stop_bars": int(windows["stop_bars"].fillna(0).sum()) if "stop_bars" in windows else None, "rows": {}}
    for agent, g in seeds.groupby("agent", sort=False):
        s = g["sharpe"].to_numpy(dtype=float)
        out["rows"][agent] = {"mean": float(np.mean(s)), "std": float(np.std(s, ddof=1)) if s.size > 1 else None,
                              "n": int(s.size), "by_seed": dict(zip(g["seed"].astype(int), map(float, s)))}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", required=True, help="comma-separated agents, e.g. equal_weight_gated,index_gated")
    p.add_argument("--seeds", default="0")
    p.add_argument("--steps", default=",".join(STEPS), help=f"comma-separated steps of {STEPS}")
    p.add_argument("--out", required=True, type=Path, help="root folder; each step runs in OUT/<step>")
    p.add_argument("--executor", default="local")
    args = p.parse_args(argv)

    from .run import run_benchmark

    agents = [a for a in args.agents.split(",") if a]
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    steps = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(steps) - set(STEPS))
    if unknown:
        p.error(f"unknown step(s) {unknown}; choose from {STEPS}")
    configs = step_configs()
    results = {}
    for step in steps:
        t0 = time.time()
        run_benchmark(configs[step], agents=agents, seeds=seeds, out=args.out / step, executor=args.executor,
                      progress=False, tearsheets=False, command=" ".join(["python -m benchmarks.icaif2020_decomposition",
                                                                          *(argv if argv is not None else sys.argv[1:])]))
        results[step] = {**_summary(args.out / step), "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(results, indent=1, default=str), file=sys.stderr)
    head = "| step | stop bars | " + " | ".join(agents) + " | wall |"
    print(head)
    print("|" + "---|" * (len(agents) + 3))
    for step in steps:
        r = results[step]
        cells = []
        for a in agents:
            row = r["rows"].get(a)
            if row is None:
                cells.append("–")
            else:
                cells.append(f"{row['mean']:.3f}" + (f" ± {row['std']:.3f}" if row["std"] is not None else ""))
        print(f"| {step} | {r['stop_bars']} | " + " | ".join(cells) + f" | {r['wall_s']:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

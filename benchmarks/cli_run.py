"""``finmeta bench``, ``finmeta train`` and ``finmeta backtest``."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import typer

from finmeta.errors import ConfigError


def _command_line() -> str:
    """The ``finmeta ...`` command line being run (for the manifest)."""
    from finmeta import cli

    args = cli.INVOKED_ARGS if cli.INVOKED_ARGS is not None else sys.argv[1:]
    return shlex.join(["finmeta", *args])


def _csv_list(value: str | None, cast=str) -> list | None:
    if not value:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"cannot read the list {value!r}: {exc}") from None


def _print_table(table) -> None:
    from rich.console import Console
    from rich.table import Table

    cols = ["agent", "cumulative_return", "annual_return", "annual_volatility", "sharpe", "sortino",
            "calmar", "max_drawdown"]
    t = Table(show_header=True, header_style="bold")
    for c in cols:
        t.add_column(c)
    for _, row in table.iterrows():
        cells = [str(row["agent"])]
        for c in cols[1:]:
            v = row.get(c)
            s = "nan" if v is None else f"{v:.4f}"
            if f"{c}_std" in row and row[f"{c}_std"] == row[f"{c}_std"]:
                s += f" ± {row[f'{c}_std']:.4f}"
            cells.append(s)
        t.add_row(*cells)
    Console().print(t)


def bench(
    config: str = typer.Argument(..., help="A config name in benchmarks/configs (e.g. quickstart) or a file."),
    seeds: str = typer.Option(None, "--seeds", help="Comma-separated seeds (default: the config's)."),
    agents: str = typer.Option(None, "--agents", help="Comma-separated agents (default: the config's)."),
    executor: str = typer.Option("local", "--executor", help="local or ray."),
    out: Path = typer.Option(None, "--out", help="Run directory (default: runs/<config name>). Resumes if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON instead of a table."),
    tearsheets: bool = typer.Option(True, "--tearsheets/--no-tearsheets", help="Write quantstats HTML tearsheets."),
    tuned: bool = typer.Option(False, "--tuned", help="Use the parameters `finmeta tune` saved next to the config."),
    address: str = typer.Option(None, "--address", help="Ray cluster address for --executor ray (default: a local one)."),
) -> None:
    """Run a benchmark config end to end and print its table.

    Example: finmeta bench quickstart --seeds 0,1 --out runs/qs
    """
    from .run import load_config, run_benchmark

    cfg = load_config(config)
    if tuned:
        cfg["use_tuned"] = True
    if address:
        cfg.setdefault("ray", {})["address"] = address
    table, run_dir = run_benchmark(cfg, agents=_csv_list(agents), seeds=_csv_list(seeds, int), out=out,
                                   executor=executor, tearsheets=tearsheets,
                                   command=_command_line())
    if as_json:
        typer.echo(table.to_json(orient="records", double_precision=15))
    else:
        _print_table(table)
        typer.echo(f"run directory: {run_dir}")


def train(
    config: str = typer.Argument(..., help="A config name or file."),
    agent: str = typer.Option(..., "--agent", help="a2c, ppo, ddpg, td3 or sac."),
    seed: int = typer.Option(0, "--seed"),
    timesteps: int = typer.Option(None, "--timesteps", help="Training budget (default: the config's)."),
    out: Path = typer.Option(Path("model.zip"), "--out", help="Where to save the trained agent."),
) -> None:
    """Train one agent on the config's training range (up to the first validation window) and save it.

    Example: finmeta train quickstart --agent ppo --seed 0 --out ppo.zip
    """
    from agents import make_agent

    from .loop import build_env, split_agent_config, stage_env_config
    from .run import build_arrays, load_config
    from .windows import make_windows

    cfg = load_config(config)
    arrays, _ = build_arrays(cfg)
    w = make_windows(arrays.times, **cfg["windows"])[0]
    # loop options (total_timesteps, warm_start, ...) are not the agent's: one training run here
    acfg, opts = split_agent_config((cfg.get("agents") or {}).get(agent) or {})
    steps = int(timesteps or opts["total_timesteps"])
    env = build_env(arrays.slice(*w.train), stage_env_config(cfg.get("env") or {}, arrays, w.train))
    ag = make_agent(agent, **acfg)
    ag.learn(env, total_timesteps=steps, seed=seed)
    ag.save(out)
    typer.echo(json.dumps({"agent": agent, "seed": seed, "timesteps": steps, "saved": str(out),
                           "train_bars": list(w.train)}))


def backtest(
    config: str = typer.Argument(..., help="A config name or file."),
    agent: str = typer.Option(..., "--agent", help="Agent name (a baseline, or the kind of --model)."),
    model: Path = typer.Option(None, "--model", help="A saved agent (from finmeta train); none for baselines."),
    out: Path = typer.Option(Path("runs/backtest"), "--out", help="Run directory for values, table and report."),
) -> None:
    """Trade the config's whole trading range with one agent, without retraining, and report.

    Example: finmeta backtest quickstart --agent ppo --model ppo.zip --out runs/bt
    """
    import pandas as pd

    from agents import load_agent, make_agent

    from .loop import build_env, rollout, stage_env_config
    from .metrics import compute_metrics
    from .report import aggregate_seeds, write_report
    from .run import build_arrays, load_config
    from .windows import make_windows

    cfg = load_config(config)
    arrays, prov = build_arrays(cfg)
    ws = make_windows(arrays.times, **cfg["windows"])
    base, lo, hi = ws[0].train[0], ws[0].trade[0], ws[-1].trade[1]
    # bars before the trading range are the past (look-back, baselines' trailing estimates)
    env = build_env(arrays.slice(base, hi), stage_env_config(cfg.get("env") or {}, arrays, ws[0].train))
    if model:
        ag = load_agent(model, env)
    else:
        ag = make_agent(agent)
        ag.learn(env, total_timesteps=0, seed=0)  # baselines: binds spaces and past-only prices
    res = rollout(ag, env, seed=0, start=lo - base)
    times = pd.DatetimeIndex(arrays.times[lo:hi])
    ppy = float(cfg.get("periods_per_year", 252))
    m = compute_metrics(res["values"], periods_per_year=ppy, turnover=res["turnover"], costs=res["costs"])
    from .diagnostics import action_diagnostics

    m.update(action_diagnostics(res["actions"], low=env.action_space.low, high=env.action_space.high,
                                learned=model is not None))
    table = aggregate_seeds(pd.DataFrame([{"agent": agent, "seed": 0, **m}]))
    write_report(Path(out), {agent: pd.Series(res["values"], index=times, name=agent)}, table,
                 {"config": cfg, "agent": agent, "model": str(model) if model else None, "dataset": prov},
                 periods_per_year=ppy)
    _print_table(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("train")(train)
    app.command("backtest")(backtest)

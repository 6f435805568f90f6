"""``finmeta bench``, ``finmeta train`` and ``finmeta backtest``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from finmeta.errors import ConfigError


def _command_line() -> str:
    """The ``finmeta ...`` command line being run (for the manifest)."""
    from finmeta.cli import invoked_command

    return invoked_command()


def _csv_list(value: str | None, cast=str) -> list | None:
    if not value:
        return None
    try:
        return [cast(v.strip()) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise ConfigError(f"cannot read the list {value!r}: {exc}") from None


def _print_table(table, run_dir: Path) -> None:
    """Print what the run measured (:func:`run_caption`) and its ``table.md``: the figures (turnover
    and costs too, ``mean ± std``) and the sections below them (statistics, static-policy notes).

    Piped to a file or CI, ``table.md`` itself (rich would cut a table to 80 columns there:
    ``cumula…``); on a terminal the figures as a rich table whose cells fold instead of being cut,
    then the sections as text."""
    from .report import table_cells, table_markdown

    caption = run_caption(run_dir)
    if caption:
        typer.echo(caption)
    md_path = Path(run_dir) / "table.md"
    md = md_path.read_text(encoding="utf-8") if md_path.is_file() else table_markdown(table)
    if not sys.stdout.isatty():
        typer.echo(md, nl=False)
        return
    from rich.console import Console
    from rich.table import Table

    header, rows = table_cells(table)
    t = Table(show_header=True, header_style="bold")
    for c in header:
        t.add_column(c, overflow="fold", justify="left" if c == "agent" else "right")
    for cells in rows:
        t.add_row(*cells)
    Console().print(t)
    rest = md.split("\n\n", 1)  # the figures table, then its sections
    if len(rest) == 2 and rest[1].strip():
        typer.echo(rest[1], nl=False)


def run_caption(run_dir: Path) -> str | None:
    """One line saying what the table measured: trade period, data, fill, seeds (from the run's
    ``manifest.json`` and ``windows.csv``); ``None`` where the run directory lacks them."""
    import pandas as pd

    from .report import run_caption as caption_of
    from .rundir import read_manifest

    windows = Path(run_dir) / "windows.csv"
    return caption_of(read_manifest(run_dir), pd.read_csv(windows) if windows.is_file() else None)


def bench(
    config: str = typer.Argument(..., metavar="CONFIG", help="A config name in benchmarks/configs (e.g. quickstart) or a file."),
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
    from .run import run_benchmark
    from .spec import load_config

    cfg = load_config(config)  # the dict as written: --tuned / --address are set in it, run_benchmark validates
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
        _print_table(table, run_dir)
        typer.echo(f"run directory: {run_dir}")


def train(
    config: str = typer.Argument(..., metavar="CONFIG", help="A config name or file."),
    agent: str = typer.Option(..., "--agent", help="a2c, ppo, ddpg, td3 or sac."),
    seed: int = typer.Option(0, "--seed"),
    timesteps: int = typer.Option(None, "--timesteps", help="Training budget (default: the config's)."),
    out: Path = typer.Option(Path("model.zip"), "--out", help="Where to save the trained agent."),
) -> None:
    """Train one agent on the config's training range (up to the first validation window) and save it.

    Example: finmeta train quickstart --agent ppo --seed 0 --out ppo.zip
    """
    from agents import make_agent

    from .dataset import build_arrays
    from .loop import build_env, stage_env_config
    from .spec import load_spec
    from .windows import make_windows

    spec = load_spec(config)
    arrays, _ = build_arrays(spec.raw)
    w = make_windows(arrays.times, **spec.windows.model_dump())[0]
    # loop options (total_timesteps, warm_start, ...) are not the agent's: one training run here
    options = spec.agent_options(agent)
    steps = int(timesteps or options.loop.total_timesteps)
    env = build_env(arrays.slice(*w.train), stage_env_config(spec, arrays, w.train))
    ag = make_agent(agent, **options.kwargs)
    ag.learn(env, total_timesteps=steps, seed=seed)
    ag.save(out)
    typer.echo(json.dumps({"agent": agent, "seed": seed, "timesteps": steps, "saved": str(out),
                           "train_bars": list(w.train)}))


def backtest(
    config: str = typer.Argument(..., metavar="CONFIG", help="A config name or file."),
    agent: str = typer.Option(..., "--agent", help="Agent name (a baseline, or the kind of --model)."),
    model: Path = typer.Option(None, "--model", help="A saved agent (from finmeta train); none for baselines."),
    out: Path = typer.Option(Path("runs/backtest"), "--out", help="Run directory for values, table and report."),
    as_json: bool = typer.Option(False, "--json", help="Print the table as JSON instead of a table."),
    tearsheets: bool = typer.Option(True, "--tearsheets/--no-tearsheets", help="Write quantstats HTML tearsheets."),
) -> None:
    """Trade the config's trading windows with one agent, without retraining, and report.

    The bench's code path: the same windows, turbulence-stop rule (learned agents trade under it, rule
    baselines not), carried-over holdings, costs, and the same run directory (manifest, values with
    turnover and costs, actions/, tables); a saved model trades every window unchanged. A rule
    baseline's backtest equals its bench row.

    Example: finmeta backtest quickstart --agent ppo --model ppo.zip --out runs/bt
    """
    from .run import run_benchmark
    from .spec import load_spec

    spec = load_spec(config)
    check_backtest_agent(agent, model)
    table, run_dir = run_benchmark(spec, agents=[agent], seeds=[0], out=out, tearsheets=tearsheets,
                                   command=_command_line(), models={agent: model} if model else None)
    if as_json:
        typer.echo(table.to_json(orient="records", double_precision=15))
    else:
        _print_table(table, run_dir)
        typer.echo(f"run directory: {run_dir}")


def check_backtest_agent(agent: str, model: Path | None) -> None:
    """``--agent``/``--model`` agree before any data work: a learned agent needs its saved model, a rule
    baseline takes none, and the file must hold that agent (``--agent sac --model ppo.zip`` is refused)."""
    from agents import agent_names
    from agents.base import read_manifest

    from .loop import learns

    if agent == "ensemble":
        raise ConfigError("backtest --agent ensemble: the ensemble picks a member per window by validation; "
                          "run it with finmeta bench")
    if agent not in agent_names():
        raise ConfigError(f"backtest --agent {agent!r}: unknown agent; known: {', '.join(agent_names())}")
    if model is None:
        if learns(agent):
            raise ConfigError(f"backtest --agent {agent} needs --model, a file saved by `finmeta train CONFIG "
                              f"--agent {agent} --out {agent}.zip` (a backtest does not train)")
        return
    if not learns(agent):
        raise ConfigError(f"backtest --agent {agent}: a rule baseline takes no --model")
    if not Path(model).is_file():
        raise ConfigError(f"--model {model}: no such file")
    held = read_manifest(model).get("name")
    if held != agent:
        raise ConfigError(f"--model {model} holds a {held!r} agent, not {agent!r}: pass --agent {held}")


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
    app.command("train")(train)
    app.command("backtest")(backtest)

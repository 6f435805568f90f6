"""``finmeta tune``: hyper-parameter search on validation Sharpe (see :mod:`benchmarks.tune`)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def tune(
    config: str = typer.Argument(..., metavar="CONFIG", help="A config name in benchmarks/configs (e.g. quickstart) or a file."),
    agent: str = typer.Option(..., "--agent", help="a2c, ppo, ddpg, td3 or sac."),
    trials: int = typer.Option(None, "--trials", help="Number of trials (default: the config's tune.trials or 20)."),
    backend: str = typer.Option("optuna", "--backend", help="optuna (sequential) or ray (parallel batches)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the sampler and every trial's training."),
    timesteps: int = typer.Option(None, "--timesteps", help="Training budget per trial (default: the config's)."),
    parallel: int = typer.Option(None, "--parallel", help="ray backend: trials evaluated at a time."),
    address: str = typer.Option(None, "--address", help="ray backend: Ray cluster address (default: $RAY_ADDRESS "
                                                        "or a local Ray)."),
    out: Path = typer.Option(None, "--out", help="Where to write the best parameters "
                                                 "(default: <config>.best_<agent>.yaml next to the config)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
) -> None:
    """Search an agent's hyper-parameters on the validation Sharpe of the first window.

    Trains on the first window's training range and scores on its validation range; no bar at
    or after windows.trade_start is read. `finmeta bench --tuned` then uses the best parameters.

    Example: finmeta tune quickstart --agent ppo --trials 20 --backend optuna --seed 0
    """
    from .spec import load_spec, tuned_path
    from .tune import tune_agent, write_tuned

    spec = load_spec(config)
    path = out or tuned_path(spec, agent)

    def show(rec: dict) -> None:
        if not as_json:
            v = "failed: " + str(rec["error"]) if rec["value"] is None else f"{rec['value']:.4f}"
            typer.echo(f"trial {rec['number']}: validation Sharpe {v}  {json.dumps(rec['params'])}", err=True)

    result = tune_agent(spec, agent, trials=trials, backend=backend, seed=seed, timesteps=timesteps,
                        parallel=parallel, address=address, on_trial=show)
    write_tuned(result, path)
    if as_json:
        typer.echo(json.dumps({**result.to_dict(), "written": str(path)}))
    else:
        typer.echo(json.dumps({"agent": result.agent, "best_params": result.best_params,
                               "validation_sharpe": result.best_value, "trials": len(result.trials),
                               "written": str(path)}))


def register(app: typer.Typer) -> None:
    """Add ``finmeta tune`` to the CLI (called from :mod:`finmeta.cli`)."""
    app.command("tune")(tune)

"""Run a benchmark config end to end: data -> features -> walk-forward per agent and seed -> report.

A config is a plain YAML (or JSON) file; the names in ``benchmarks/configs/`` (``quickstart``,
``icaif2020_dow30``, ...) are resolved there. Sections:

``data``      where the bars come from: ``source: synthetic`` (+ ``tickers``, ``start``, ``end``,
              ``seed``), ``dataset: NAME`` (the store), or ``file: PATH`` + ``format`` (a vendor
              file; ``${FINMETA_DATA_DIR}`` is expanded); optional ``tickers`` list, ``start``,
              ``end``, ``calendar``.
``features``  ``engine``, ``indicators``, ``turbulence``, ``turbulence_mode`` (``returns`` |
              ``icaif2020``), ``turbulence_window``, ``vix`` (a file+format, or null).
``env``       the env family and its config; the turbulence stop's threshold per window comes from
              ``turbulence_rule`` (``quantile``: ``turbulence_quantile`` of the training range;
              ``icaif2020_switch``: the ICAIF 2020 code's rule, see
              :func:`benchmarks.loop.turbulence_threshold`); ``turbulence_in_training: false``
              trains without the stop. Every run writes ``windows.csv`` (per window: dates,
              threshold, rule choice, stop bars in trade).
``windows``   see :func:`benchmarks.windows.make_windows`.
``agents``    agent name -> overrides (``total_timesteps`` is the training budget per window).
``index``     the market-index row(s): ``file`` + ``format`` + ``tic`` (+ ``name``), or
              ``price_weighted: true`` (a DJIA-style price-weighted index of the universe, for
              synthetic markets); a list, or ``more_indices``, adds rows ``index_<name>``;
              ``index_gated`` among the agents adds the first index traded under the stop.
``use_tuned`` merge the tuner's best parameters (``finmeta tune``) into the agents.
``seeds``     the seeds; ``periods_per_year`` (default: the env's bars a year).

This module only orchestrates: the config is validated into a :class:`benchmarks.spec.RunSpec`
(read typed from here on), the data come from :mod:`benchmarks.dataset`, the chains from
:class:`benchmarks.loop.WalkForward` (or :mod:`benchmarks.distributed`), the files from
:mod:`benchmarks.rundir` (layout, manifest) and :mod:`benchmarks.report` (tables, plots, tearsheets).
"""

from __future__ import annotations

import copy
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finmeta.errors import ConfigError

from . import rundir
from .loop import ChainResult, WalkForward, has_artefacts

# config and data: benchmarks/spec.py (the typed spec, loading a config) and benchmarks/dataset.py
# (config -> frame -> cleaned, featured arrays, index rows); re-exported here for existing imports
from .dataset import (  # noqa: E402,F401
    build_arrays,
    cut_before,
    dataset_calendar,
    gated_index_values,
    index_row_values,
    index_rows,
    index_values,
    load_frame,
)
from .spec import CONFIG_DIR, load_config, resolve_config_path  # noqa: E402,F401

from .spec import RunSpec, validate_config


# --------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------
def run_benchmark(
    config: dict | RunSpec,
    *,
    agents: list[str] | None = None,
    seeds: list[int] | None = None,
    out: str | Path | None = None,
    executor: str = "local",
    progress: bool = True,
    tearsheets: bool = True,
    command: str | None = None,
    models: dict[str, str | Path] | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Run ``config`` for every agent and seed; write the run directory; return (table, run_dir).

    ``config``: a config dict (``load_config``; API and tests) or a :class:`RunSpec`; validated here
    before any data is read, tuned parameters merged first under ``use_tuned``.
    ``tearsheets=False`` skips the quantstats HTML tearsheets (a few seconds each). ``command``
    (the command line that started the run) is recorded in the manifest. ``models`` (``{agent:
    saved model}``, ``finmeta backtest``) trades those files in every window instead of training.
    """
    from .spec import apply_tuned

    t0 = time.time()
    commit = rundir.git_commit()  # the code this run executes (taken before it starts)
    if isinstance(config, RunSpec):
        config = {**config.raw, **({"_path": config.path} if config.path else {})}
    config = copy.deepcopy(config)
    where = config.get("_path") or config.get("name")
    spec = validate_config(config, where)  # dict configs (API, tests) too
    if spec.use_tuned:
        config = apply_tuned(config)
        spec = validate_config(config, where)  # the tuned parameters are agent options too
    agents = list(agents or spec.agents)
    seeds = [int(s) for s in (seeds or spec.seeds or [0])]
    if not agents:
        raise ConfigError("no agents to run (config.agents is empty and --agents not given)")
    check_agent_names(agents, spec)  # a typo fails now, not after the first agent trained
    run_dir = Path(out) if out else default_run_dir(spec)
    check_run_dir(run_dir)
    created = not run_dir.exists()
    if not created and (run_dir / rundir.FINGERPRINT).exists() and progress:
        print(f"resuming {run_dir}: finished windows load from their checkpoints, the rest runs; "
              f"the manifest keeps every invocation's wall time", file=sys.stderr)
    try:
        return _run(config, spec, agents, seeds, run_dir, executor, progress, tearsheets, command, t0, commit, models)
    except BaseException:
        if created and not has_artefacts(run_dir):  # failed before anything reusable was written
            shutil.rmtree(run_dir, ignore_errors=True)
        raise


def default_run_dir(config: RunSpec | dict) -> Path:
    """Where a run goes without ``--out``: ``./runs/<config name>`` in the current folder (datasets,
    by contrast, live in the store under ``FINMETA_HOME``)."""
    name = config.name if isinstance(config, RunSpec) else config.get("name", "run")
    return Path("runs") / str(name)


def check_agent_names(agents: list[str], config: RunSpec | dict) -> None:
    """Refuse unknown agent names (with the closest known ones) before any data or training work."""
    import difflib

    from .spec import as_spec, known_agent_names

    spec = as_spec(config)
    known = sorted({*known_agent_names(), *(label for label, _ in index_rows(spec.raw))})
    bad = [a for a in agents if a not in known]
    if bad:
        hints = "; ".join(f"{a!r}: did you mean {difflib.get_close_matches(a, known, n=2, cutoff=0.6) or 'none'}?"
                          for a in bad)
        raise ConfigError(f"unknown agent(s) {bad} ({hints}); known: {', '.join(known)}")
    if "ensemble" in agents:
        unknown = [m for m in spec.ensemble_members if m not in known]
        if unknown:
            raise ConfigError(f"agents.ensemble.members: unknown agent(s) {unknown}")


def check_run_dir(run_dir: Path) -> None:
    """Refuse ``--out`` on a non-empty folder that is not a FinMeta run directory (its files,
    e.g. a ``table.csv`` of the user's, would be overwritten)."""
    if not run_dir.exists():
        return
    if not run_dir.is_dir():
        raise ConfigError(f"--out {run_dir}: exists and is not a folder")
    if any(run_dir.iterdir()) and not ((run_dir / rundir.FINGERPRINT).exists() or (run_dir / rundir.MANIFEST).exists()):
        raise ConfigError(f"--out {run_dir}: a non-empty folder that is not a FinMeta run directory (no "
                          f"fingerprint.json or manifest.json); its files would be overwritten: choose a new folder")


def _run(config: dict, spec: RunSpec, agents, seeds, run_dir: Path, executor, progress, tearsheets, command, t0,
         commit, models=None):
    """The run itself: ``config`` is the validated dict as written (the dataset's input and the
    manifest's record), ``spec`` its typed form (everything else reads it)."""
    from .metrics import compute_metrics
    from .report import aggregate_seeds, stop_span_cells, write_report

    arrays, prov = build_arrays(spec.raw)
    run_dir.mkdir(parents=True, exist_ok=True)
    wf = WalkForward(arrays, spec, run_dir, models=models)
    if models and executor != "local":
        raise ConfigError("a backtest of saved models runs with --executor local")
    ppy = wf.periods_per_year

    chains: list[ChainResult] = []
    jobs = [(a, s) for a in agents if not a.startswith("index") for s in seeds]
    if executor == "ray":
        from .distributed import run_chains_ray

        chains = run_chains_ray(arrays, spec, run_dir, jobs)
    elif executor == "local":
        chains = _run_local(wf, jobs, progress)
    else:
        raise ConfigError(f"--executor must be 'local' or 'ray', not {executor!r}")

    values: dict[str, pd.Series | pd.DataFrame] = {}
    rows = []
    diag: dict[str, dict] = {}
    for ch in chains:
        key = f"{ch.agent}_seed{ch.seed}"
        values[key] = pd.DataFrame({"account_value": ch.values, "turnover": ch.turnover, "cost": ch.costs},
                                   index=pd.DatetimeIndex(ch.times))
        m = compute_metrics(ch.values, periods_per_year=ppy, turnover=ch.turnover, costs=ch.costs)
        div = [r["diversity"] for r in ch.windows if "diversity" in r]  # the agents' window_diagnostics
        for k in dict.fromkeys(k for d in div for k in d):  # moe: diversity, router entropy; window mean
            m[k] = float(np.mean([d.get(k, np.nan) for d in div]))
        diag[key] = chain_diagnostics(wf, ch)
        m.update(diag[key])
        rows.append({"agent": ch.agent, "seed": ch.seed, **m})
    stop = None  # the turbulence stop's days on the traded bars: shaded in the plots, kept in windows.csv
    if chains:
        times = pd.DatetimeIndex(chains[0].times)
        stop = pd.Series(wf.stop_mask()[pd.DatetimeIndex(arrays.times).get_indexer(times)], index=times)
        gated = stop.to_numpy() if "index_gated" in agents else None
        for label, series in index_row_values(spec.raw, arrays, chains[0].times, float(spec.env_config.initial_cash),
                                              gated_stop=gated, gated_costs=spec.gated_index_costs).items():
            values[label] = series
            rows.append({"agent": label, "seed": 0, **compute_metrics(series.to_numpy(), periods_per_year=ppy)})
    windows_table = pd.DataFrame(wf.window_table())
    if stop is not None:
        windows_table["stop_spans"] = stop_span_cells(windows_table, stop)
    rundir.write_csv(run_dir / rundir.WINDOWS, windows_table, index=False)
    per_seed = pd.DataFrame(rows)
    table = aggregate_seeds(per_seed)
    manifest = rundir.build_manifest(
        config={k: v for k, v in config.items() if not k.startswith("_")},
        dataset_hash=prov["dataset_hash"],
        seeds=seeds,
        wall_time_s=round(time.time() - t0, 2),
        periods_per_year=ppy,
        git_commit=commit,
        config_path=spec.path,
        agents=agents,
        executor=executor,
        fill=spec.env_config.fill,
        dataset=prov,
        machine=rundir.machine_info(),
        command=command,
        windows={f"{c.agent}_seed{c.seed}": c.windows for c in chains},
        action_diagnostics={k: {f: (None if np.isnan(v) else v) for f, v in d.items()} for k, d in diag.items()},
    )
    if models:
        from data_processors.store import file_sha256

        manifest["models"] = {k: {"path": str(v), "sha256": file_sha256(v)} for k, v in models.items()}
    actions = {f"{c.agent}_seed{c.seed}": pd.DataFrame(c.actions, index=pd.DatetimeIndex(c.times),
                                                       columns=list(arrays.tickers)[: c.actions.shape[1]])
               for c in chains}
    with rundir.report_lock(run_dir):  # another invocation may be writing this run directory
        manifest["invocations"] = rundir.invocations(run_dir, manifest)
        written = write_report(run_dir, values, table, manifest, per_seed=per_seed, actions=actions,
                               periods_per_year=ppy, tearsheets=tearsheets, windows=windows_table, stop=stop)
    return written.get("table", table), run_dir  # with the statistics columns


def chain_diagnostics(wf: WalkForward, ch: ChainResult) -> dict[str, float]:
    """:func:`benchmarks.diagnostics.action_diagnostics` of one chain (bounds of the trade env's
    action space; saturation for learned agents only)."""
    from .diagnostics import action_diagnostics
    from .loop import learns

    lengths = [int(r["trade"][1]) - int(r["trade"][0]) for r in ch.windows]
    space = wf._trade_env(wf.windows[0], None)[0].action_space
    return action_diagnostics(ch.actions, lengths, low=getattr(space, "low", None),
                              high=getattr(space, "high", None), learned=learns(ch.agent))


def _run_local(wf: WalkForward, jobs: list[tuple[str, int]], progress: bool) -> list[ChainResult]:
    if not progress:
        return [wf.run_chain(a, s) for a, s in jobs]
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    n_win = len(wf.windows)
    out = []
    # progress goes to stderr: stdout carries the table (``--json`` output must parse)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=False, console=Console(stderr=True)) as bar:
        total = bar.add_task("all windows", total=len(jobs) * n_win)
        steps = bar.add_task("training steps", total=1, visible=False)
        for a, s in jobs:
            task = bar.add_task(f"{a} seed {s}", total=n_win)

            def tick(_a, _s, _w, _n, task=task):
                bar.advance(task)
                bar.advance(total)

            def train_tick(label, done, n):
                bar.update(steps, description=f"  training {label}", completed=done, total=n, visible=True)

            wf.on_window = tick
            wf.on_train = train_tick
            out.append(wf.run_chain(a, s))
        bar.update(steps, visible=False)
    wf.on_window = None
    wf.on_train = None
    return out

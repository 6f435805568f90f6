"""Hyper-parameter search on the validation Sharpe ratio only (``finmeta tune``).

The search never sees a bar at or after the config's ``windows.trade_start``:

* the raw frame is cut at ``trade_start`` **before** cleaning and feature engineering
  (:func:`build_pretrade_arrays`), so not even a cleaning decision or a normalisation can depend
  on later bars;
* each trial trains a fresh agent on the first walk-forward window's training range and scores it
  by the Sharpe ratio of a deterministic rollout over that window's validation range (the
  ``validation`` bars just before ``trade_start``), with exactly the loop's stage code
  (:meth:`benchmarks.loop.WalkForward._train` / ``_validate``), the loop's seeds
  (``window_seed(seed, 0, agent)``) and the training range's turbulence threshold.

``tests/test_tune.py`` replaces every bar from ``trade_start`` on by random values and NaNs and
checks that the whole tuning result is bitwise identical, and spies on every env built.

Backends: ``optuna`` runs the trials one after another with Optuna's TPE sampler (seeded);
``ray`` asks the same sampler for ``parallel`` trials at a time and evaluates them as Ray tasks
(a batch is told back before the next is asked, so a run is reproducible for a given
``parallel``). Both need the ``tune`` extra (optuna); ``ray`` also the ``distributed`` extra.

The best parameters are written next to the config, ``<config stem>.best_<agent>.yaml``
(:func:`write_tuned` at :func:`benchmarks.spec.tuned_path`); :func:`benchmarks.spec.apply_tuned`
merges them into a config's ``agents`` section (``finmeta bench --tuned`` / ``use_tuned: true``).
The spec owns reading them (``tuned_path``, ``load_tuned``, ``apply_tuned``); they are re-exported
here for existing imports. This module reads the run spec (:mod:`benchmarks.spec`), the dataset
(:mod:`benchmarks.dataset`) and the loop, never :mod:`benchmarks.run`.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import yaml

from data_processors.arrays import MarketArrays
from finmeta.errors import ConfigError, FinMetaError

from .loop import RL_AGENTS, WalkForward
from .spec import (  # tuned_path / load_tuned / apply_tuned: the spec owns them; re-exported (__all__)
    RunSpec,
    TuneSection,
    WindowsSection,
    apply_tuned,
    as_spec,
    load_tuned,
    tuned_path,
    validate_config,
)
from .windows import Window

__all__ = ["DEFAULT_SEARCH_SPACES", "DEFAULT_SEARCH_SPACES_TORCH", "TuneError", "TuneResult", "build_pretrade_arrays", "load_frame_files",
           "tune_agent",
           "tuned_path", "write_tuned", "load_tuned", "apply_tuned", "pretrade_window"]


#: keys of a config's optional ``tune`` section (:class:`benchmarks.spec.TuneSection`)
TUNE_CONFIG_KEYS = tuple(TuneSection.model_fields)


class TuneError(FinMetaError):
    """The search cannot run (missing extra, no validation range) or every trial failed."""


# --------------------------------------------------------------------------------------------
# search spaces
# --------------------------------------------------------------------------------------------
def _f(low: float, high: float, log: bool = False) -> dict:
    return {"type": "float", "low": low, "high": high, "log": log}


def _c(*choices) -> dict:
    return {"type": "categorical", "choices": list(choices)}


#: Per agent: SB3 constructor argument -> distribution (``float``/``int`` with ``low``, ``high``,
#: optional ``log``/``step``; ``categorical`` with ``choices``). Ranges around FinRL's defaults.
DEFAULT_SEARCH_SPACES: dict[str, dict[str, dict]] = {
    "a2c": {"learning_rate": _f(1e-5, 1e-2, True), "n_steps": _c(5, 10, 20, 50),
            "ent_coef": _f(1e-6, 0.1, True), "gamma": _f(0.9, 0.9999)},
    "ppo": {"learning_rate": _f(1e-5, 1e-3, True), "n_steps": _c(128, 256, 512, 1024, 2048),
            "batch_size": _c(32, 64, 128), "ent_coef": _f(1e-6, 0.1, True), "gamma": _f(0.9, 0.9999),
            "clip_range": _c(0.1, 0.2, 0.3)},
    "ddpg": {"learning_rate": _f(1e-5, 1e-2, True), "batch_size": _c(64, 128, 256),
             "buffer_size": _c(10_000, 50_000, 100_000), "tau": _f(1e-3, 0.05, True), "gamma": _f(0.9, 0.9999)},
    "td3": {"learning_rate": _f(1e-5, 1e-2, True), "batch_size": _c(64, 100, 256),
            "buffer_size": _c(10_000, 100_000, 1_000_000), "tau": _f(1e-3, 0.05, True), "gamma": _f(0.9, 0.9999)},
    "sac": {"learning_rate": _f(1e-5, 1e-2, True), "batch_size": _c(64, 128, 256),
            "buffer_size": _c(10_000, 100_000), "learning_starts": _c(100, 1000),
            "tau": _f(1e-3, 0.05, True), "gamma": _f(0.9, 0.9999)},
}

#: the torch backend's default spaces (agents/torch_rl; an agent entry with ``backend: torch``):
#: the same quality knobs in the vectorized learners' units -- ``n_steps`` is per sub-env (E = 64:
#: PPO rollouts of 1,024-4,096 env steps, not SB3's 128-2,048 x E), minibatches of 128-1,024, PPO's
#: epoch count; ``utd`` and ``num_envs`` (cost knobs) are left as the config sets them
DEFAULT_SEARCH_SPACES_TORCH: dict[str, dict[str, dict]] = {
    "a2c": {"learning_rate": _f(1e-5, 1e-2, True), "n_steps": _c(5, 10, 20),
            "ent_coef": _f(1e-6, 0.1, True), "gamma": _f(0.9, 0.9999)},
    "ppo": {"learning_rate": _f(1e-5, 1e-3, True), "n_steps": _c(16, 32, 64),
            "batch_size": _c(256, 512, 1024), "n_epochs": _c(4, 10), "ent_coef": _f(1e-6, 0.1, True),
            "gamma": _f(0.9, 0.9999), "clip_range": _c(0.1, 0.2, 0.3)},
    # the off-policy knobs mean the same on both backends; only the minibatches are larger
    **{algo: {**DEFAULT_SEARCH_SPACES[algo], "batch_size": _c(128, 256, 512)} for algo in ("ddpg", "td3", "sac")},
}


def default_search_space(spec: RunSpec, agent: str) -> dict[str, dict]:
    """The default space for ``agent`` under ``spec``: the torch backend's when the agent's entry
    says ``backend: torch``, else SB3's (:data:`DEFAULT_SEARCH_SPACES`)."""
    backend = (spec.agents.get(agent) or {}).get("backend")
    return (DEFAULT_SEARCH_SPACES_TORCH if backend == "torch" else DEFAULT_SEARCH_SPACES)[agent]


def _distributions(space: dict[str, dict]):
    """Our YAML-friendly space -> Optuna distributions (one :class:`ConfigError` per bad entry)."""
    optuna = _import_optuna()
    D = optuna.distributions
    out = {}
    for name, spec in space.items():
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"search space {name!r}: needs a mapping with 'type' (float/int/categorical)")
        kind = spec["type"]
        try:
            if kind == "float":
                out[name] = D.FloatDistribution(float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")),
                                                step=spec.get("step"))
            elif kind == "int":
                out[name] = D.IntDistribution(int(spec["low"]), int(spec["high"]), log=bool(spec.get("log")),
                                              step=int(spec.get("step", 1)))
            elif kind == "categorical":
                out[name] = D.CategoricalDistribution(list(spec["choices"]))
            else:
                raise ConfigError(f"search space {name!r}: unknown type {kind!r} (float, int, categorical)")
        except (KeyError, ValueError, TypeError) as exc:
            raise ConfigError(f"search space {name!r}: bad spec {spec!r} ({type(exc).__name__}: {exc})") from None
    if not out:
        raise ConfigError("the search space is empty")
    return out


def _import_optuna():
    try:
        import optuna
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise TuneError("finmeta tune needs Optuna: pip install 'finmeta[tune]' (or pip install optuna)") from exc
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# --------------------------------------------------------------------------------------------
# data: nothing at or after trade_start
# --------------------------------------------------------------------------------------------
def load_frame_files(data: dict) -> tuple[pd.DataFrame, str]:
    """A config ``data`` section (``files:`` lists too) -> (raw canonical frame, calendar).

    Kept for callers of the tuner's API; it is :func:`benchmarks.dataset.load_frame`.
    """
    from .dataset import load_frame

    return load_frame(data)


def build_pretrade_arrays(config: RunSpec | dict) -> tuple[MarketArrays, dict]:
    """The config's arrays built from the bars **before** ``windows.trade_start`` only.

    :func:`benchmarks.dataset.build_arrays` with the raw frames (prices and VIX) cut at
    ``trade_start`` before cleaning and features.
    """
    from .dataset import build_arrays

    spec = as_spec(config)
    arrays, prov = build_arrays(spec.raw, before=spec.windows.trade_start)
    return arrays, {k: prov[k] for k in ("dataset_hash", "rows", "tickers")}


def pretrade_window(times: np.ndarray, windows_cfg: WindowsSection | dict) -> Window:
    """The first walk-forward window's training and validation ranges over pre-trade ``times``.

    ``times`` must end before ``trade_start``; the validation range is its last ``validation``
    bars, exactly as :func:`benchmarks.windows.make_windows` places it before the first trade bar.
    ``windows_cfg``: the spec's windows section (or its dict).
    """
    wcfg = windows_cfg.model_dump() if isinstance(windows_cfg, WindowsSection) else dict(windows_cfg)
    t = pd.DatetimeIndex(times)
    if "train_start" not in wcfg:
        raise ConfigError("config.windows needs train_start")
    ts = pd.Timestamp(wcfg["trade_start"])
    if ts.tz is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if len(t) and t[-1] >= ts:
        raise ConfigError(f"tuning data reach {t[-1]}, at or after trade_start={wcfg['trade_start']}")
    v = int(wcfg.get("validation", 63))
    if v < 2:
        raise TuneError("tuning scores the validation Sharpe: windows.validation must be >= 2 bars")
    start = pd.Timestamp(wcfg["train_start"])
    if start.tz is not None:
        start = start.tz_convert("UTC").tz_localize(None)
    lo = int(t.searchsorted(start, side="left"))
    end = len(t)
    v_lo = end - v
    t_lo = lo
    if wcfg.get("mode", "expanding") == "rolling":
        t_lo = max(lo, v_lo - int(wcfg.get("train_length") or 0))
    if v_lo - t_lo < 2:
        raise ConfigError(f"windows: only {v_lo - t_lo} training bars before the validation window")
    # the trade range is empty: there is nothing to trade before trade_start
    return Window(0, (t_lo, v_lo), (v_lo, end), (end, end))


def evaluate_params(arrays: MarketArrays, config: RunSpec | dict, agent: str, params: dict, timesteps: int,
                    seed: int, torch_threads: int | None = None) -> float:
    """Train ``agent`` with ``params`` on window 0's training range; its validation Sharpe."""
    from agents.base import torch_threads as _threads

    spec = as_spec(config)
    # the loop's own train/validate code over the pre-trade arrays and their one window, under the
    # spec with the trial's parameters; no saved models (each trial trains with other parameters)
    # and nothing written to disk
    entry = {**(spec.agents.get(agent) or {}), **params, "total_timesteps": int(timesteps)}
    trial = validate_config({**spec.raw, "cache_models": False, "agents": {**spec.agents, agent: entry}},
                            spec.path or spec.name)
    walk = WalkForward(arrays, trial, Path("."), windows=[pretrade_window(arrays.times, spec.windows)])
    w = walk.windows[0]
    with _threads(torch_threads):  # restored afterwards
        model = walk._train(agent, w, seed)
        return float(walk._validate(model, w, seed))


# --------------------------------------------------------------------------------------------
# the search
# --------------------------------------------------------------------------------------------
@dataclass
class TuneResult:
    """What a search found; ``trials`` in the order they were asked."""

    agent: str
    backend: str
    seed: int
    timesteps: int
    best_params: dict
    best_value: float  # validation Sharpe of the best trial
    trials: list[dict]  # {"number", "params", "value", "state", "error"}
    search_space: dict
    train: dict  # {"bars": [lo, hi], "start", "end"}
    validation: dict
    trade_start: str
    dataset_hash: str | None = None
    config_name: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _plain(asdict(self))


def _plain(obj: Any) -> Any:
    """Numpy scalars/arrays -> Python (for YAML/JSON); floats keep their exact value."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


def _span(times: np.ndarray, lo: int, hi: int) -> dict:
    return {"bars": [int(lo), int(hi)], "start": str(pd.Timestamp(times[lo])),
            "end": str(pd.Timestamp(times[hi - 1]))}


def tune_agent(
    config: dict,
    agent: str,
    *,
    trials: int | None = None,
    backend: str = "optuna",
    seed: int = 0,
    timesteps: int | None = None,
    search_space: dict | None = None,
    arrays: MarketArrays | None = None,
    parallel: int | None = None,
    address: str | None = None,
    on_trial: Callable[[dict], None] | None = None,
) -> TuneResult:
    """Search ``agent``'s hyper-parameters by the validation Sharpe of the first window.

    Args:
        config: a run config (``load_config``); its optional ``tune`` section may set
            ``trials``, ``timesteps``, ``parallel``, ``validation`` (bars; replaces
            ``windows.validation`` for tuning, e.g. for a run without validation windows) and
            ``search_space: {agent: {param: spec}}``.
        agent: one of ``a2c, ppo, ddpg, td3, sac``.
        trials: number of trials (default: ``tune.trials`` or 20).
        backend: ``"optuna"`` (sequential) or ``"ray"`` (batches of ``parallel`` trials as Ray tasks).
        seed: seeds the sampler and (as in the loop) the training of every trial.
        timesteps: training budget per trial (default: ``tune.timesteps``, else the agent's
            ``total_timesteps`` in the config, else 10,000).
        search_space: overrides the default space of ``agent``.
        arrays: pre-built arrays; they are cut at ``trade_start`` (build them with
            :func:`build_pretrade_arrays` so that no feature saw a later bar -- the default).
        parallel, address: for ``backend="ray"`` (cluster as in :mod:`benchmarks.distributed`).
        on_trial: callback with each finished trial's record.
    """
    optuna = _import_optuna()
    name = str(agent).lower()
    if name not in RL_AGENTS:
        raise ConfigError(f"finmeta tune: agent must be one of {', '.join(RL_AGENTS)}, not {agent!r}")
    if backend not in ("optuna", "ray"):
        raise ConfigError(f"--backend must be 'optuna' or 'ray', not {backend!r}")
    spec = as_spec(config)
    tuning = spec.tune or TuneSection()  # the config's tune section
    n_trials = int(trials or tuning.trials)
    if n_trials < 1:
        raise ConfigError("--trials must be >= 1")
    steps = int(timesteps or tuning.timesteps or spec.agent_options(name).loop.total_timesteps or 10_000)
    space = dict(search_space or (tuning.search_space or {}).get(name) or default_search_space(spec, name))
    dists = _distributions(space)
    t0 = time.perf_counter()

    cfg = copy.deepcopy(spec.raw)
    if tuning.validation is not None:  # a run without validation windows can still be tuned
        cfg["windows"] = {**cfg["windows"], "validation": int(tuning.validation)}
        spec = validate_config({**cfg, "_path": spec.path} if spec.path else cfg, spec.path or spec.name)
    if arrays is None:
        arrays, prov = build_pretrade_arrays(spec)
    else:
        ts = pd.Timestamp(spec.windows.trade_start)
        if ts.tz is not None:
            ts = ts.tz_convert("UTC").tz_localize(None)
        arrays = arrays.slice(0, int(pd.DatetimeIndex(arrays.times).searchsorted(ts, side="left")))
        prov = {"dataset_hash": (arrays.meta or {}).get("dataset_hash")}
    w = pretrade_window(arrays.times, spec.windows)

    sampler = optuna.samplers.TPESampler(seed=int(seed))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    records: list[dict] = []

    def tell(trial, params: dict, value: float | None, error: str | None) -> None:
        # -inf is a real (worst) score: the loop's Sharpe of a flat account path; NaN/None fail
        ok = value is not None and not math.isnan(value)
        if ok:
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        rec = {"number": int(trial.number), "params": _plain(params), "value": float(value) if ok else None,
               "state": "complete" if ok else "fail", "error": error}
        records.append(rec)
        if on_trial:
            on_trial(rec)

    if backend == "optuna":
        for _ in range(n_trials):
            trial = study.ask(dists)
            params = dict(trial.params)
            try:
                value, err = evaluate_params(arrays, spec, name, params, steps, seed, torch_threads=1), None
            except Exception as exc:  # a bad combination fails the trial, not the search
                value, err = None, f"{type(exc).__name__}: {exc}"
            tell(trial, params, value, err)
    else:
        from .distributed import ray_address, ray_session
        from .spec import RaySection

        rcfg = spec.ray or RaySection()
        addr = ray_address(spec, address)
        batch = int(parallel or tuning.parallel or rcfg.num_cpus or 2)
        with ray_session(addr, num_cpus=batch, runtime_env=rcfg.runtime_env,
                         node_ip_address=rcfg.node_ip_address) as ray:
            task = ray.remote(num_cpus=1, max_retries=0)(_evaluate_task)
            arrays_ref = ray.put(arrays)
            done = 0
            while done < n_trials:
                k = min(batch, n_trials - done)
                asked = [study.ask(dists) for _ in range(k)]
                refs = [task.remote(arrays_ref, cfg, name, dict(t.params), steps, seed) for t in asked]
                for t, (value, err) in zip(asked, ray.get(refs)):
                    tell(t, dict(t.params), value, err)
                done += k

    good = [r for r in records if r["state"] == "complete"]
    if not good:
        raise TuneError(f"every one of the {n_trials} trials failed; first error: {records[0]['error']}")
    best = max(good, key=lambda r: (r["value"], -r["number"]))  # ties: the earliest trial
    return TuneResult(
        agent=name, backend=backend, seed=int(seed), timesteps=steps, best_params=best["params"],
        best_value=best["value"], trials=records, search_space=_plain(space),
        train=_span(arrays.times, *w.train), validation=_span(arrays.times, *w.validation),
        trade_start=str(spec.windows.trade_start), dataset_hash=prov.get("dataset_hash"),
        config_name=spec.name if "name" in spec.model_fields_set else None, seconds=round(time.perf_counter() - t0, 2),
        extra={"parallel": batch} if backend == "ray" else {},
    )


def _evaluate_task(arrays, cfg, name, params, steps, seed) -> tuple[float | None, str | None]:
    """Ray task body: never raises (a failed trial is a result)."""
    try:
        return evaluate_params(arrays, cfg, name, params, steps, seed, torch_threads=1), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"


# --------------------------------------------------------------------------------------------
# the tuned-parameters file
# --------------------------------------------------------------------------------------------
def write_tuned(result: TuneResult, path: str | Path) -> Path:
    """Write the result (best parameters first) as YAML; returns the path."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    d = result.to_dict()
    doc = {"agent": d["agent"], "params": d["best_params"], "validation_sharpe": d["best_value"],
           "timesteps": d["timesteps"], "backend": d["backend"], "seed": d["seed"], "config": d["config_name"],
           "dataset_hash": d["dataset_hash"], "train": d["train"], "validation": d["validation"],
           "trade_start": d["trade_start"], "search_space": d["search_space"], "seconds": d["seconds"],
           "trials": d["trials"]}
    header = ("# Written by `finmeta tune`: hyper-parameters chosen by validation Sharpe only\n"
              "# (trained on the first window's training range, scored on its validation range;\n"
              "# no bar at or after trade_start was read). `finmeta bench --tuned` uses `params`.\n")
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    tmp.replace(p)
    return p

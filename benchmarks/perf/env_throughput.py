"""Env-layer throughput: FinMeta's stock-trading env vs FinRL's pandas and numpy envs, same data.

Data: Dow 30 daily (``$FINMETA_DATA_DIR/us_equities/dow30_daily.csv.gz``), window 2019-2020, the
tickers with a bar on every day (N = 29), the 8 default indicators (K = 8) and turbulence, built by
:func:`benchmarks.peers.finrl_envs.dow30_arrays`; FinRL gets the same values in its own layouts.

Measured (env-steps per second = num_envs x vector steps per second):

* ``finmeta`` single env (``make_env``, a gymnasium.Env, E = 1);
* ``finmeta`` vector env (``make_vec_env``, numpy backend) for E in 64, 1024, 4096;
* ``finmeta`` vector env, torch backend on CUDA (``device`` = GPU name) for E in 64, 1024, 4096,
  16384 when a GPU is present, and on CPU for E = 1024 (skip with ``--no-torch-cpu``);
* ``finmeta`` vector env without and with the step's action check (``numpy_nocheck`` /
  ``numpy_check``, E = 64 and 1024, back to back) and their ratio ``action_check_E*/no_check``, and
  ``check_actions_us_per_call`` (the check alone, microseconds per call, E = 1, 64, 1024);
* ``finrl_pandas`` (FinRL 0.3.7 ``env_stocktrading.StockTradingEnv``) and ``finrl_numpy``
  (``env_stocktrading_np.StockTradingEnv``), E = 1.

Random actions in [-1, 1] are generated before timing (a pool cycled through); each measurement warms
up first, then runs batches of 1, 2, 4, ... steps until at least ``--min-seconds`` (>= 1) have passed
(time.perf_counter); episodes are reset when they end (inside the timed loop, as in training).
Measurements past ``--budget`` seconds (default 120) are skipped and reported as such, so the whole
run stays under 3 minutes on 2 cores. The LAST line printed is a JSON list of records::

    {"impl": "finmeta"|"finrl_pandas"|"finrl_numpy", "backend": ..., "num_envs": E,
     "steps_per_s": x, "device": "cpu"|<GPU name>, "seconds": t, "steps": n}

followed by ratio records ``{"ratio": "finmeta_E1/finrl_pandas", "value": x}`` and one
``{"context": {...}}`` record (data shape, cpu count, 1-minute load average, GPU). Each record also
has ``steps_per_cpu_s`` (env-steps per process CPU-second): on a shared machine the wall-clock figure
drops with the load, the CPU-second one much less.

Usage: ``FINMETA_DATA_DIR=/path/to/shared/data python benchmarks/perf/env_throughput.py``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from benchmarks.peers import finrl_envs as F

START, END = "2019-01-01", "2021-01-01"
ENV_KW: dict[str, Any] = dict(initial_cash=1_000_000, hmax=100, buy_cost_pct=0.001, sell_cost_pct=0.001,
                              reward_scaling=1e-4)


def _measure(run: Callable[[int], int], min_seconds: float, warmup: int = 3,
             sync: Callable[[], None] | None = None) -> tuple[float, int, float]:
    """Time ``run(n)`` (takes n steps, returns env-steps done) until ``min_seconds`` of wall time pass.

    ``warmup`` untimed steps first; then batches of 1, 2, 4, ... steps (so a slow env is timed over
    a few steps and a fast one over many, without a per-step clock read). Returns (wall seconds,
    env-steps, process CPU seconds). The CPU seconds make figures taken on a shared, loaded machine
    comparable (steps per CPU-second); the headline is wall-clock.
    """
    if warmup:
        run(warmup)
    if sync:
        sync()
    steps, batch = 0, 1
    c0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        steps += run(batch)
        if sync:
            sync()
        dt = time.perf_counter() - t0
        if dt >= min_seconds:
            return dt, steps, time.process_time() - c0
        batch = min(batch * 2, 100_000)


def _record(impl: str, backend: str, num_envs: int, device: str, m: tuple[float, int, float], **extra) -> dict:
    dt, steps, cpu = m
    rec = {"impl": impl, "backend": backend, "num_envs": num_envs, "steps_per_s": round(steps / dt, 1),
           "device": device, "seconds": round(dt, 3), "steps": steps,
           "steps_per_cpu_s": round(steps / cpu, 1) if cpu > 0 else None}
    rec.update(extra)
    print(json.dumps(rec), file=sys.stderr, flush=True)
    return rec


def bench_single(make_env, arrays, actions: np.ndarray, min_seconds: float) -> tuple[float, int, float]:
    """FinMeta gymnasium.Env (E = 1), reset at episode end (inside the timed loop)."""
    env = make_env(arrays, family="stock_trading", **ENV_KW)
    env.reset(seed=0)
    state = {"i": 0}
    n = len(actions)

    def run(batch: int) -> int:
        i = state["i"]
        for _ in range(batch):
            _, _, term, trunc, _ = env.step(actions[i % n])
            i += 1
            if term or trunc:
                env.reset()
        state["i"] = i
        return batch

    return _measure(run, min_seconds, warmup=200)


def bench_vector(make_vec_env, arrays, num_envs: int, backend: str, device: str, min_seconds: float,
                 seed: int = 0, check_actions: bool = True) -> tuple[float, int, float]:
    """FinMeta vector env: E env-steps per ``step`` call; actions from a pre-generated pool.

    ``check_actions=False`` measures the step without the boundary check (shape, dtype, finiteness)."""
    venv = make_vec_env(arrays, family="stock_trading", num_envs=num_envs, backend=backend, device=device,
                        check_actions=check_actions, **ENV_KW)
    venv.reset(seed=seed)
    rng = np.random.default_rng(seed)
    pool_size = 16
    pool = rng.uniform(-1, 1, size=(pool_size, num_envs, arrays.num_assets)).astype(np.float32)
    sync = None
    if backend == "torch":
        import torch

        pool = torch.as_tensor(pool, device=device)
        if device.startswith("cuda"):
            sync = torch.cuda.synchronize
    state = {"i": 0}

    def run(batch: int) -> int:
        i = state["i"]
        for _ in range(batch):
            venv.step(pool[i % pool_size])
            i += 1
        state["i"] = i
        return batch * num_envs

    out = _measure(run, min_seconds, warmup=3, sync=sync)
    venv.close()
    return out


def bench_finrl(kind: str, arrays, actions: np.ndarray, min_seconds: float) -> tuple[float, int, float]:
    """FinRL's pandas or numpy env (E = 1), same window, reset at the end of each episode."""
    if kind == "pandas":
        frame = F.finrl_frame(arrays)
        env = F.make_finrl_pandas_env(arrays, frame=frame)
        last_day = arrays.num_times - 1
    else:
        env = F.make_finrl_numpy_env(arrays, min_stock_rate=0.1)  # FinRL's default min_stock_rate
        last_day = None
    env.reset()
    state = {"i": 0}
    n = len(actions)

    def run(batch: int) -> int:
        i = state["i"]
        for _ in range(batch):
            if last_day is not None and env.day >= last_day:  # FinRL's terminal no-op step: reset instead
                env.reset()
            _, _, done, _, _ = env.step(actions[i % n])
            i += 1
            if done:
                env.reset()
        state["i"] = i
        return batch

    return _measure(run, min_seconds, warmup=20)


def _gpu_name() -> str | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_name(0)


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--min-seconds", type=float, default=1.0, help="timed seconds per measurement (>= 1)")
    p.add_argument("--num-envs", type=int, nargs="+", default=[64, 1024, 4096])
    p.add_argument("--no-torch-cpu", action="store_true", help="skip the torch-backend CPU figure")
    p.add_argument("--no-finrl", action="store_true", help="skip the FinRL peers")
    p.add_argument("--budget", type=float, default=120.0,
                   help="seconds after which the remaining measurements are skipped (run stays < 3 min)")
    args = p.parse_args(argv)

    data_dir = os.environ.get("FINMETA_DATA_DIR")
    if not data_dir or not Path(data_dir).is_dir():
        raise SystemExit(f"env_throughput: set FINMETA_DATA_DIR to the real-data folder (got {data_dir!r}); "
                         f"it must contain {F.DOW30_FILE}")
    from meta import make_env, make_vec_env

    arrays = F.dow30_arrays(data_dir, START, END)
    T, N, K = arrays.features.shape
    print(f"data: Dow 30 {START}..{END}: T={T} N={N} K={K}; machine: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus", file=sys.stderr)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(4096, N)).astype(np.float32)
    ms = max(1.0, args.min_seconds)
    records: list[dict] = []
    meta_common = {"T": T, "N": N, "K": K}
    gpu = _gpu_name()
    t_start = time.perf_counter()

    # (impl, backend, E, device, thunk), most important first; later ones are skipped past the budget
    jobs: list[tuple[str, str, int, str, Callable[[], tuple[float, int, float]]]] = [
        ("finmeta", "gymnasium.Env", 1, "cpu", lambda: bench_single(make_env, arrays, actions, ms))]
    for E in args.num_envs:
        jobs.append(("finmeta", "numpy", E, "cpu",
                     lambda E=E: bench_vector(make_vec_env, arrays, E, "numpy", "cpu", ms)))
    # the action check's cost: the same vector env without it, and again with it, back to back
    for E in (64, 1024):
        jobs.append(("finmeta", "numpy_nocheck", E, "cpu",
                     lambda E=E: bench_vector(make_vec_env, arrays, E, "numpy", "cpu", ms, check_actions=False)))
        jobs.append(("finmeta", "numpy_check", E, "cpu",
                     lambda E=E: bench_vector(make_vec_env, arrays, E, "numpy", "cpu", ms)))
    if not args.no_finrl:
        for kind in ("pandas", "numpy"):
            jobs.append((f"finrl_{kind}", kind, 1, "cpu", lambda kind=kind: bench_finrl(kind, arrays, actions, ms)))
    if gpu:
        for E in sorted(set(args.num_envs) | {16384}):
            jobs.append(("finmeta", "torch", E, gpu,
                         lambda E=E: bench_vector(make_vec_env, arrays, E, "torch", "cuda", ms)))
    if not args.no_torch_cpu:
        jobs.append(("finmeta", "torch", 1024, "cpu",
                     lambda: bench_vector(make_vec_env, arrays, 1024, "torch", "cpu", ms)))
    for impl, backend, E, device, thunk in jobs:
        if time.perf_counter() - t_start > args.budget:
            records.append({"impl": impl, "backend": backend, "num_envs": E, "device": device,
                            "steps_per_s": None, "skipped": f"time budget {args.budget:.0f} s spent"})
            continue
        try:
            records.append(_record(impl, backend, E, device, thunk(), **meta_common))
        except Exception as exc:  # noqa: BLE001 - report it, keep the other figures
            records.append({"impl": impl, "backend": backend, "num_envs": E, "device": device,
                            "steps_per_s": None, "error": repr(exc)[:300]})
            print(f"{impl}/{backend}/E={E} failed: {exc!r}", file=sys.stderr)

    by = {(r["impl"], r["backend"], r["num_envs"], r["device"]): r["steps_per_s"] for r in records}
    ratios = []
    for peer in ("finrl_pandas", "finrl_numpy"):
        ref = by.get((peer, peer.split("_")[1], 1, "cpu"))
        if not ref:
            continue
        for (impl, backend, E, device), v in by.items():
            if impl == "finmeta" and v and backend not in ("numpy_nocheck", "numpy_check"):
                label = "E1" if backend == "gymnasium.Env" else f"{backend}_E{E}" + ("" if device == "cpu" else "_gpu")
                ratios.append({"ratio": f"finmeta_{label}/{peer}", "value": round(v / ref, 2)})
    for E in (64, 1024):
        off, on = by.get(("finmeta", "numpy_nocheck", E, "cpu")), by.get(("finmeta", "numpy_check", E, "cpu"))
        if off and on:
            ratios.append({"ratio": f"action_check_E{E}/no_check", "value": round(on / off, 3)})
    # the check alone, per call (stable under load, unlike the two throughput figures above)
    from meta.envs import check_actions
    for E in (1, 64, 1024):
        a = np.random.default_rng(E).uniform(-1, 1, (E, N)).astype(np.float32)
        n = 5000
        t0 = time.perf_counter()
        for _ in range(n):
            check_actions(a, E, N, arrays.tickers, vector=E > 1)
        ratios.append({"check_actions_us_per_call": round((time.perf_counter() - t0) / n * 1e6, 2), "num_envs": E})
    context = {"context": {"data": f"dow30 {START}..{END}", "T": T, "N": N, "K": K, "cpus": os.cpu_count(),
                           "loadavg_1m": round(os.getloadavg()[0], 2), "gpu": gpu}}
    out = records + ratios + [context]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

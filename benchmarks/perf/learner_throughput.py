"""Learner throughput: training env-steps per second, SB3 (E = 1) vs the torch backend (E = 1 ... 4096).

Data: Dow 30 daily (``$FINMETA_DATA_DIR/us_equities/dow30_daily.csv.gz``), 2010-2016 (an ICAIF 2020
training range), the tickers with a bar on every day, the 8 default indicators and turbulence
(:func:`benchmarks.peers.finrl_envs.dow30_arrays`); without ``FINMETA_DATA_DIR`` a synthetic market of
the same shape (``meta.testing.synthetic_arrays``, T = 1510, N = 29, K = 8). Env: ``stock_trading``
(initial cash 1M, hmax 100, costs 0.1 %, reward scaling 1e-4), given as ONE ``TradingEnv`` to every
learner, as the walk-forward loop does: SB3 wraps it in its ``DummyVecEnv`` (E = 1); the torch backend
builds ``VecTradingEnv(backend="torch")`` with E sub-envs over the same arrays and config.

Measured per algorithm (``--algos``, default a2c ppo sac td3 ddpg):

* ``sb3``, E = 1, FinRL's defaults (``agents.sb3``), SB3's schedule;
* ``torch``, E = 1 with SB3's schedule (same gradient steps per env step: the implementation alone);
* ``torch``, E in ``--num-envs`` (default 16 64 256) on the CPU with the backend's defaults (the
  vectorized schedule: PPO rollouts of 2048 env steps, minibatch 512; A2C n_steps 5 per sub-env;
  SAC / TD3 / DDPG ``utd`` 1/8 gradient steps per env step, batch 256), and PPO at E = 64 with SB3's minibatch
  64 (``schedule: "sb3_minibatch"``) and with 4 epochs (``"vectorized_4_epochs"``, the ICAIF 2020
  preset's count); SAC / TD3 / DDPG at E = 16 with UTD 1 (SB3's schedule, batch 64 / 100 / 128)
  and at E = 64 with UTD 1/64;
* ``torch`` on CUDA, E = 1024 and 4096, when a GPU is present;
* ``sb3_update_only`` (SAC / TD3 / DDPG): SB3's own gradient steps inside its training (the time
  spent in the SB3 class's ``train`` during a ``learn``, timed in the same process): ``steps_per_s``
  is the env steps/s a learner with SB3's networks, batch and optimizers would reach at UTD 1 if
  its env, its policy call and its buffer writes cost nothing; the ratio record
  ``torch_update_only``: the same for the torch backend at SB3's schedule (E = 1, UTD 1, SB3's
  batch), timing its update function. The ratio record ``ceiling_utd1_<algo>`` = SB3's seconds
  per env step in those ``learn`` calls / the fewer seconds per env step either implementation
  spends in its updates: the most a backend with these networks, batch and optimizers can gain
  over SB3 at UTD 1 on this device, even with a free env step (``learning_starts`` steps, no
  update, count as env steps in both).

Networks: SB3's defaults everywhere (64x64 tanh for A2C/PPO, 256x256 ReLU for SAC, 400x300 ReLU
for TD3/DDPG). Each
measurement calls ``agent.learn(env, n)`` with n doubling from one rollout until one call takes at
least ``--min-seconds`` (default 3); the last call's ``n / seconds`` is the figure (the model build is
inside it, as in the loop); each figure is the fastest of ``--repeats`` (default 2) such measurements,
and also given per process CPU-second (``steps_per_cpu_s``: on a shared machine the wall figure drops
with the load, the CPU one much less). Torch runs on one thread (``n_threads=1``, the default of
both backends). Measurements past ``--budget`` seconds (default 600) are skipped and reported as such.

The LAST line printed is a JSON list of records::

    {"impl": "sb3"|"torch", "algo": ..., "num_envs": E, "device": "cpu"|<GPU name>, "utd": grad steps
     per env step, "steps_per_s": x, "steps_per_cpu_s": y, "schedule": ..., "batch_size": b,
     "seconds": t, "steps": n}

then ratio records ``{"ratio": "torch_ppo_E64/sb3_ppo", "value": x, "value_per_cpu_s": y}`` (same run) and one
``{"context": {...}}`` record (data, cpus, 1-minute load average, GPU).

Usage: ``FINMETA_DATA_DIR=/path/to/shared/data python benchmarks/perf/learner_throughput.py --min-seconds 3``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

START, END = "2010-01-01", "2016-01-01"
ENV_KW: dict[str, Any] = dict(initial_cash=1_000_000, hmax=100, buy_cost_pct=0.001, sell_cost_pct=0.001,
                              reward_scaling=1e-4)


def load_arrays():
    data_dir = os.environ.get("FINMETA_DATA_DIR")
    if data_dir and (Path(data_dir) / "us_equities" / "dow30_daily.csv.gz").is_file():
        from benchmarks.peers import finrl_envs as F

        return F.dow30_arrays(data_dir, START, END), f"dow30 {START}..{END}"
    from meta.testing import synthetic_arrays

    return synthetic_arrays(T=1510, N=29, K=8, seed=0), "synthetic T=1510 N=29 K=8"


OFF_POLICY = ("sac", "td3", "ddpg")


def _sb3_utd(algo: str, cfg: dict) -> float:
    if algo == "ppo":
        return cfg.get("n_epochs", 10) * -(-cfg["n_steps"] // cfg["batch_size"]) / cfg["n_steps"]
    if algo == "a2c":
        return 1.0 / cfg["n_steps"]
    return 1.0  # off-policy: train_freq 1, gradient_steps 1


def measure(agent_fn, env, first: int, min_seconds: float) -> tuple[float, int, float]:
    """``learn`` with budgets first, 2 first, 4 first, ... until one call takes >= min_seconds.

    Returns the last call's (wall seconds, env steps, process CPU seconds). One untimed call with
    ``first`` steps goes before (imports, first-call allocations).
    """
    agent_fn().learn(env, first, seed=0)
    n = first
    while True:
        agent = agent_fn()
        c0 = time.process_time()
        t0 = time.perf_counter()
        agent.learn(env, n, seed=0)
        dt = time.perf_counter() - t0
        cpu = time.process_time() - c0
        done = int(getattr(agent, "trained_timesteps", n) or n)
        if dt >= min_seconds or n >= 50_000_000:
            return dt, done, cpu
        n *= 2 if dt > min_seconds / 8 else 8


def measure_updates(owner: Any, attr: str, build, env, min_seconds: float) -> tuple[float, int, float, float]:
    """Gradient steps inside training: ``build().learn`` of n env steps (n doubling from 1,000 until
    the call takes >= min_seconds) with ``owner.attr`` (the update: a class's method or a module's
    function) timed, wall and process CPU, at each call. Returns (seconds inside the update, env
    steps, CPU seconds inside the update, the ``learn`` call's wall seconds), so steps / seconds is
    the env steps/s a learner with that update would reach if everything else (env step, policy call,
    buffer writes, logging) cost nothing. Measured in the same process and interleaved with the rest
    of the step, so the machine's load shifts both alike."""
    from unittest import mock

    orig = getattr(owner, attr)
    acc = [0.0, 0.0]

    def timed(*args, **kwargs):  # as a class attribute it is a method: args[0] is self
        c0, t0 = time.process_time(), time.perf_counter()
        try:
            return orig(*args, **kwargs)
        finally:
            acc[0] += time.perf_counter() - t0
            acc[1] += time.process_time() - c0

    n = 1_000
    with mock.patch.object(owner, attr, timed):
        while True:
            acc[:] = [0.0, 0.0]
            t0 = time.perf_counter()
            build().learn(env, n, seed=0)
            total = time.perf_counter() - t0
            if total >= min_seconds or n >= 1_000_000:
                return acc[0], n, acc[1], total
            n *= 2


def measure_sb3_updates(algo: str, env, min_seconds: float) -> tuple[float, int, float, float]:
    """:func:`measure_updates` of SB3's ``train`` (the SB3 class's gradient steps) at SB3's schedule."""
    from agents import make_agent

    return measure_updates(make_agent(algo).sb3_class(), "train", lambda: make_agent(algo), env, min_seconds)


def measure_torch_updates(algo: str, env, min_seconds: float, kw: dict) -> tuple[float, int, float, float]:
    """:func:`measure_updates` of the torch backend's update function (``sac_update`` /
    ``td3_update``, also DDPG's) at SB3's schedule (``kw``: E = 1, UTD 1, SB3's batch)."""
    from agents import make_agent

    module = __import__("agents.torch_rl." + ("sac" if algo == "sac" else "td3"), fromlist=["_"])
    return measure_updates(module, "sac_update" if algo == "sac" else "td3_update",
                           lambda: make_agent(algo, backend="torch", **kw), env, min_seconds)


def jobs(algos: list[str], num_envs: list[int], gpu: str | None) -> list[dict]:
    """(impl, algo, E, device, overrides, schedule) descriptions, most important first."""
    out: list[dict] = []
    for algo in algos:
        out.append(dict(impl="sb3", algo=algo, E=1, device="cpu", kw={}, schedule="sb3"))
        sb3_like = {"ppo": dict(n_steps=2048, batch_size=64), "a2c": dict(n_steps=5),
                    "sac": dict(utd=1.0, batch_size=64), "td3": dict(utd=1.0, batch_size=100),
                    "ddpg": dict(utd=1.0, batch_size=128)}[algo]
        out.append(dict(impl="torch", algo=algo, E=1, device="cpu", kw=sb3_like, schedule="sb3"))
        for E in num_envs:
            kw: dict = {}
            if algo == "ppo":
                kw = dict(n_steps=max(2048 // E, 8))
            out.append(dict(impl="torch", algo=algo, E=E, device="cpu", kw=kw, schedule="vectorized"))
        if algo == "ppo" and 64 in num_envs:
            out.append(dict(impl="torch", algo=algo, E=64, device="cpu", kw=dict(n_steps=32, batch_size=64),
                            schedule="sb3_minibatch"))
            out.append(dict(impl="torch", algo=algo, E=64, device="cpu", kw=dict(n_steps=32, n_epochs=4),
                            schedule="vectorized_4_epochs"))
        if algo in OFF_POLICY and 64 in num_envs:
            out.append(dict(impl="torch", algo=algo, E=64, device="cpu", kw=dict(utd=1 / 64),
                            schedule="vectorized_utd_1/64"))
        if algo in OFF_POLICY:
            out.append(dict(impl="torch", algo=algo, E=16, device="cpu", kw=sb3_like, schedule="sb3_utd"))
        if algo in OFF_POLICY:
            out.append(dict(impl="sb3_update_only", algo=algo, E=1, device="cpu", kw={}, schedule="sb3"))
            out.append(dict(impl="torch_update_only", algo=algo, E=1, device="cpu", kw=sb3_like, schedule="sb3"))
        if gpu:
            for E in (1024, 4096):
                kw = dict(n_steps=8) if algo == "ppo" else {}
                out.append(dict(impl="torch", algo=algo, E=E, device="cuda", kw=kw, schedule="vectorized"))
    return out


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--algos", nargs="+", default=["a2c", "ppo", "sac", "td3", "ddpg"])
    p.add_argument("--num-envs", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--budget", type=float, default=600.0)
    p.add_argument("--repeats", type=int, default=2, help="measurements per figure; the fastest is kept")
    p.add_argument("--impls", nargs="+", default=None, choices=["sb3", "torch", "sb3_update_only", "torch_update_only"],
                   help="measure only these (default: all)")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from agents import make_agent
    from agents.base import AGENT_REGISTRY, agent_names
    from meta import make_env

    agent_names()
    arrays, what = load_arrays()
    T, N, K = arrays.features.shape
    env = make_env(arrays, family="stock_trading", **ENV_KW)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(f"data: {what}: T={T} N={N} K={K}; {os.cpu_count()} cpus; gpu: {gpu}", file=sys.stderr)
    t_start = time.perf_counter()
    records: list[dict] = []
    for j in jobs(args.algos, args.num_envs, gpu):
        algo, E, impl = j["algo"], j["E"], j["impl"]
        if args.impls and impl not in args.impls:
            continue
        device = j["device"] if j["device"] == "cpu" else gpu
        base = {"impl": impl, "algo": algo, "num_envs": E, "device": device, "schedule": j["schedule"]}
        if f"torch_{algo}" not in AGENT_REGISTRY:
            records.append({**base, "steps_per_s": None, "skipped": f"no torch_{algo} agent"})
            continue
        if time.perf_counter() - t_start > args.budget:
            records.append({**base, "steps_per_s": None, "skipped": f"time budget {args.budget:.0f} s spent"})
            continue
        if impl in ("sb3_update_only", "torch_update_only"):
            probe = make_agent(algo) if impl == "sb3_update_only" else make_agent(algo, backend="torch", **j["kw"])
            how = ((lambda: measure_sb3_updates(algo, env, args.min_seconds)) if impl == "sb3_update_only" else
                   (lambda: measure_torch_updates(algo, env, args.min_seconds, {"num_envs": 1, **j["kw"]})))
            try:
                dt, steps, cpu, total = max((how() for _ in range(args.repeats)), key=lambda m: m[1] / m[0])
            except Exception as exc:  # noqa: BLE001 - report it, keep the other figures
                records.append({**base, "steps_per_s": None, "error": repr(exc)[:300]})
                continue
            rec = {**base, "utd": 1.0, "steps_per_s": round(steps / dt, 1), "batch_size": probe.config.get("batch_size"),
                   "seconds_in_train": round(dt, 2), "seconds_learn": round(total, 2), "steps": steps,
                   "steps_per_cpu_s": round(steps / cpu, 1) if cpu > 0 else None}
            print(json.dumps(rec), file=sys.stderr, flush=True)
            records.append(rec)
            continue
        if impl == "sb3":
            fn = lambda algo=algo: make_agent(algo)  # noqa: E731
            probe = fn()
            utd, batch = _sb3_utd(algo, probe.config), probe.config.get("batch_size")
            first = max(probe.config.get("n_steps", 256), 256)
        else:
            kw = {"num_envs": E, "device": j["device"], **j["kw"]}
            fn = lambda algo=algo, kw=kw: make_agent(algo, backend="torch", **kw)  # noqa: E731
            probe = fn()
            utd, batch = float(probe.utd), probe.config.get("batch_size")
            first = probe.config.get("n_steps", 1) * E if algo in ("a2c", "ppo") else max(E * 16, 256)
        try:  # the best of --repeats measurements (other jobs on the machine only slow a run down)
            dt, steps, cpu = max((measure(fn, env, int(first), args.min_seconds) for _ in range(args.repeats)),
                                 key=lambda m: m[1] / m[0])
        except Exception as exc:  # noqa: BLE001 - report it, keep the other figures
            records.append({**base, "steps_per_s": None, "error": repr(exc)[:300]})
            print(f"{impl}/{algo}/E={E} failed: {exc!r}", file=sys.stderr)
            continue
        rec = {**base, "utd": round(utd, 6), "steps_per_s": round(steps / dt, 1), "batch_size": batch,
               "seconds": round(dt, 2), "steps": steps, "steps_per_cpu_s": round(steps / cpu, 1) if cpu > 0 else None}
        print(json.dumps(rec), file=sys.stderr, flush=True)
        records.append(rec)
    ratios = []
    for r in records:
        if r["impl"] == "sb3_update_only" and r.get("steps_per_s"):
            # the least update time per step either implementation needs, against SB3's whole step
            floor = min((x["seconds_in_train"] / x["steps"] for x in records if x["algo"] == r["algo"]
                         and x["impl"] in ("sb3_update_only", "torch_update_only") and x.get("steps_per_s")))
            ratios.append({"ratio": f"ceiling_utd1_{r['algo']}",
                           "value": round(r["seconds_learn"] / r["steps"] / floor, 2),
                           "sb3_share_in_train": round(r["seconds_in_train"] / r["seconds_learn"], 3)})
    for r in records:
        if r["impl"] != "torch" or not r.get("steps_per_s"):
            continue
        ref = next((x["steps_per_s"] for x in records if x["impl"] == "sb3" and x["algo"] == r["algo"]
                    and x.get("steps_per_s")), None)
        if ref:
            tag = f"torch_{r['algo']}_E{r['num_envs']}" + ("" if r["device"] == "cpu" else "_gpu") + \
                  ("" if r["schedule"] == "vectorized" else f"_{r['schedule']}")
            ratios.append({"ratio": f"{tag}/sb3_{r['algo']}", "value": round(r["steps_per_s"] / ref, 2)})
        ref_cpu = next((x.get("steps_per_cpu_s") for x in records if x["impl"] == "sb3" and x["algo"] == r["algo"]
                        and x.get("steps_per_cpu_s")), None)
        if ref_cpu and r.get("steps_per_cpu_s"):
            ratios[-1]["value_per_cpu_s"] = round(r["steps_per_cpu_s"] / ref_cpu, 2)
    context = {"context": {"data": what, "T": T, "N": N, "K": K, "cpus": os.cpu_count(),
                           "loadavg_1m": round(os.getloadavg()[0], 2), "gpu": gpu,
                           "torch": torch.__version__, "numpy": np.__version__}}
    out = records + ratios + [context]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

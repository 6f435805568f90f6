"""The measurement behind "hand-written learners, not skrl": skrl's PPO vs ``torch_ppo`` on our kernel.

Both train PPO on the same ``VecTradingEnv(backend="torch")`` (Dow 30 2010-2016 from
``FINMETA_DATA_DIR``, else the synthetic market of ``learner_throughput.py``; E sub-envs, random
starts, lengths in [63, T-1]), with the same schedule (rollouts of 32 steps x E sub-envs, 10 epochs,
minibatch 512, lr 2.5e-4), the same networks (64x64 tanh policy and value) on one torch thread. skrl is
driven through a minimal ``skrl.envs.wrappers.torch.Wrapper`` that passes our tensors straight through
(no numpy round trip; skrl's own gymnasium wrapper converts actions to numpy). The two alternate
``--repeats`` times; the figure is env-steps per second of ``train()`` / ``learn()``.

skrl is not a FinMeta dependency: ``pip install --no-deps skrl==2.1.1`` (its ``tensorboard`` / ``tqdm``
requirements are only needed for its logging); without it the script reports ``skrl: not installed``.
The LAST line printed is a JSON list of ``{"impl", "algo", "num_envs", "device", "steps_per_s", "repeat"}``
records and one ``{"context": ...}`` record.

Usage: ``FINMETA_DATA_DIR=... python benchmarks/perf/library_eval.py --num-envs 64 --steps 32768``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace

from benchmarks.perf.learner_throughput import ENV_KW, load_arrays


def skrl_ppo(venv, steps: int, E: int, n_steps: int, minibatch: int) -> float:
    """Seconds for skrl's PPO to train ``steps`` env steps on ``venv``."""
    import gymnasium
    import torch
    import torch.nn as nn
    from skrl.agents.torch.ppo import PPO, PPO_CFG
    from skrl.envs.wrappers.torch.base import Wrapper
    from skrl.memories.torch import RandomMemory
    from skrl.models.torch import DeterministicMixin, GaussianMixin, Model
    from skrl.trainers.torch import SequentialTrainer

    class Passthrough(Wrapper):
        def reset(self):
            obs, _ = self._env.reset(seed=0)
            return obs.float(), {}

        def step(self, actions):
            obs, rew, term, trunc, _ = self._env.step(actions)
            return obs.float(), rew.float().view(-1, 1), term.view(-1, 1), trunc.view(-1, 1), {}

        def state(self):
            return None

        def render(self, *args, **kwargs):
            return None

        def close(self):
            return None

        @property
        def observation_space(self) -> gymnasium.Space:
            return self._env.single_observation_space

        @property
        def action_space(self) -> gymnasium.Space:
            return self._env.single_action_space

        @property
        def num_envs(self) -> int:
            return self._env.num_envs

        @property
        def device(self):
            return torch.device("cpu")

    def net(n_in: int, n_out: int) -> nn.Module:
        return nn.Sequential(nn.Linear(n_in, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, n_out))

    class Policy(GaussianMixin, Model):
        def __init__(self, obs_space, act_space):
            Model.__init__(self, observation_space=obs_space, action_space=act_space, device="cpu")
            GaussianMixin.__init__(self, clip_actions=True)
            self.net = net(self.num_observations, self.num_actions)
            self.log_std = nn.Parameter(torch.zeros(self.num_actions))

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {"log_std": self.log_std}

    class Value(DeterministicMixin, Model):
        def __init__(self, obs_space, act_space):
            Model.__init__(self, observation_space=obs_space, action_space=act_space, device="cpu")
            DeterministicMixin.__init__(self)
            self.net = net(self.num_observations, 1)

        def compute(self, inputs, role=""):
            return self.net(inputs["observations"]), {}

    env = Passthrough(venv)
    cfg = PPO_CFG(rollouts=n_steps, learning_epochs=10, mini_batches=max(1, n_steps * E // minibatch),
                  learning_rate=2.5e-4, entropy_loss_scale=0.01)
    cfg.experiment.write_interval = 0
    cfg.experiment.checkpoint_interval = 0
    models = {"policy": Policy(env.observation_space, env.action_space),
              "value": Value(env.observation_space, env.action_space)}
    agent = PPO(models=models, memory=RandomMemory(memory_size=n_steps, num_envs=E, device="cpu"),
                observation_space=env.observation_space, action_space=env.action_space, device="cpu", cfg=cfg)
    trainer = SequentialTrainer(env=env, agents=agent,
                                cfg={"timesteps": steps // E, "disable_progressbar": True, "headless": True})
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--num-envs", type=int, nargs="+", default=[64])
    p.add_argument("--steps", type=int, default=32768)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args(argv)

    import torch

    from agents import make_agent
    from meta import make_env
    from meta.envs import VecTradingEnv

    torch.set_num_threads(1)
    arrays, what = load_arrays()
    env = make_env(arrays, family="stock_trading", **ENV_KW)
    T = arrays.num_times
    try:
        import skrl

        have_skrl = skrl.__version__
    except ImportError as exc:
        have_skrl = None
        print(f"skrl: not installed ({exc})", file=sys.stderr)
    records: list[dict] = []
    for E in args.num_envs:
        n_steps = 32 if E <= 64 else max(8, 2048 // E)
        for rep in range(args.repeats):
            if have_skrl:
                cfg = replace(env.config, episode_length=(63, T - 1), random_start=True)
                venv = VecTradingEnv(arrays, cfg, num_envs=E, backend="torch", device="cpu")
                dt = skrl_ppo(venv, args.steps, E, n_steps, 512)
                records.append({"impl": f"skrl {have_skrl}", "algo": "ppo", "num_envs": E, "device": "cpu",
                                "steps_per_s": round(args.steps / dt, 1), "repeat": rep})
                print(json.dumps(records[-1]), file=sys.stderr, flush=True)
            agent = make_agent("ppo", backend="torch", num_envs=E, n_steps=n_steps, batch_size=512)
            t0 = time.perf_counter()
            agent.learn(env, args.steps, seed=0)
            dt = time.perf_counter() - t0
            records.append({"impl": "finmeta torch_ppo", "algo": "ppo", "num_envs": E, "device": "cpu",
                            "steps_per_s": round(agent.trained_timesteps / dt, 1), "repeat": rep})
            print(json.dumps(records[-1]), file=sys.stderr, flush=True)
    out = records + [{"context": {"data": what, "cpus": os.cpu_count(), "loadavg_1m": round(os.getloadavg()[0], 2),
                                  "torch": torch.__version__, "skrl": have_skrl}}]
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

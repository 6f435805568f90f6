"""PPO, torch-native and vectorized (``make_agent("ppo", backend="torch")``, name ``torch_ppo``).

One file, top to bottom: the config, the update, the agent. The algorithm is SB3's PPO (clipped
surrogate, GAE, per-minibatch advantage normalization, one Adam over actor and critic with
eps 1e-5, gradient norm clipping, separate 64x64 tanh networks, orthogonal init, state-independent
log std); the rollout is :func:`agents.torch_rl.rollout.collect` over E sub-envs of the torch
market kernel, so nothing leaves the device between the env and the update.

Schedule: one iteration = ``n_steps`` steps of each of the ``num_envs`` sub-envs (``n_steps * E``
env steps), then ``n_epochs`` passes over them in minibatches of ``batch_size``. SB3's FinRL
default is E = 1, ``n_steps`` 2048, batch 64 (320 gradient steps per 2048 env steps);
the default here is E = 64, ``n_steps`` 32 (the same 2048 env steps), batch 512: 40 gradient steps
on 8x larger minibatches (the vectorized schedule). ``make_agent("ppo", backend="torch",
num_envs=1, n_steps=2048, batch_size=64)`` runs SB3's schedule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from agents.torch_rl.common import GaussianActor, TorchAgent, gaussian_entropy, gaussian_log_prob, mlp
from agents.torch_rl.rollout import collect
from finmeta.errors import ConfigError


@dataclass
class PPOConfig:
    num_envs: int = 64            # E sub-envs of the torch kernel
    n_steps: int = 32             # steps per sub-env per iteration (rollout = n_steps * num_envs)
    batch_size: int = 512         # minibatch size
    n_epochs: int = 10            # passes over each rollout
    learning_rate: float = 2.5e-4  # FinRL PPO_PARAMS
    ent_coef: float = 0.01        # FinRL PPO_PARAMS
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantage: bool = True
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    log_std_init: float = 0.0
    episode_length: Any = 63      # random starts, lengths uniform in [63, T-1]; None: the env's own
    device: str = "cpu"           # "cuda" trains (env, buffers, networks) on the GPU
    n_threads: int = 1            # torch threads while training (fixed: reproducible)


def ppo_update(actor, critic, opt, ro, cfg: PPOConfig, gen: torch.Generator) -> None:
    """``n_epochs`` passes of clipped-surrogate minibatch updates over the rollout ``ro``."""
    obs = ro.obs.reshape(-1, ro.obs.shape[-1])
    actions = ro.actions.reshape(-1, ro.actions.shape[-1])
    old_logp, adv, ret = ro.log_probs.reshape(-1), ro.advantages.reshape(-1), ro.returns.reshape(-1)
    n = obs.shape[0]
    params = [*actor.parameters(), *critic.parameters()]
    for _ in range(cfg.n_epochs):
        perm = torch.randperm(n, generator=gen, device=obs.device)
        for lo in range(0, n, cfg.batch_size):
            idx = perm[lo:lo + cfg.batch_size]
            mean, log_std = actor.dist(obs[idx])
            logp = gaussian_log_prob(actions[idx], mean, log_std)
            a = adv[idx]
            if cfg.normalize_advantage and len(idx) > 1:
                a = (a - a.mean()) / (a.std() + 1e-8)
            ratio = (logp - old_logp[idx]).exp()
            pg_loss = -torch.min(a * ratio, a * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)).mean()
            v_loss = ((critic(obs[idx]).squeeze(-1) - ret[idx]) ** 2).mean()
            ent_loss = -gaussian_entropy(log_std).mean()
            loss = pg_loss + cfg.ent_coef * ent_loss + cfg.vf_coef * v_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()


class TorchPPOAgent(TorchAgent):
    """PPO on E torch sub-envs (see the module doc); ``make_agent("ppo", backend="torch", ...)``."""

    name = "torch_ppo"
    Config = PPOConfig

    def _check_config(self) -> None:
        super()._check_config()
        c = self.cfg
        if c.n_steps < 1 or c.batch_size < 1 or c.n_epochs < 1:
            raise ConfigError(f"{self.name}: n_steps, batch_size and n_epochs must be >= 1")

    def _build(self, obs_dim: int, act_dim: int) -> None:
        c = self.cfg
        self.nets = {"actor": GaussianActor(obs_dim, act_dim, list(c.net_arch), c.log_std_init),
                     "critic": mlp([obs_dim, *c.net_arch, 1], "tanh", ortho=True, out_gain=1.0)}

    def _train(self, venv, obs: torch.Tensor, total_timesteps: int, gen: torch.Generator) -> int:
        c = self.cfg
        actor, critic = self.nets["actor"], self.nets["critic"]
        opt = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=c.learning_rate, eps=1e-5, foreach=True)
        per_iter = c.n_steps * venv.num_envs
        iters = -(-total_timesteps // per_iter)  # whole rollouts, like SB3
        for _ in range(iters):
            ro, obs = collect(venv, obs, actor, critic, c.n_steps, c.gamma, c.gae_lambda, self._clip, gen)
            ppo_update(actor, critic, opt, ro, c, gen)
        return iters * per_iter

    @property
    def utd(self) -> float:
        """Gradient steps per env step."""
        c = self.cfg
        rollout = c.n_steps * c.num_envs
        return c.n_epochs * -(-rollout // c.batch_size) / rollout

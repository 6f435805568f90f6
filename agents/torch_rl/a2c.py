"""A2C, torch-native and vectorized (``make_agent("a2c", backend="torch")``, name ``torch_a2c``).

One file, top to bottom: the config, the update, the agent. The algorithm is SB3's A2C: a
rollout of ``n_steps`` steps of each of the E sub-envs (:func:`agents.torch_rl.rollout.collect`),
then ONE gradient step on the whole rollout (policy gradient with the advantages, value MSE,
entropy bonus), RMSprop (alpha 0.99, eps 1e-5, SB3's default ``use_rms_prop``), gradient norm
clipping, no advantage normalization, GAE lambda 1 (plain n-step returns). Networks as in SB3
(separate 64x64 tanh actor and critic, orthogonal init, state-independent log std).

Schedule: FinRL's A2C is E = 1, ``n_steps`` 5 (one gradient step per 5 env steps); the default
here is E = 64, ``n_steps`` 5: one gradient step on 320 env steps (the vectorized schedule;
``num_envs=1`` gives SB3's).
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
class A2CConfig:
    num_envs: int = 64            # E sub-envs of the torch kernel
    n_steps: int = 5              # steps per sub-env per update (FinRL A2C_PARAMS)
    learning_rate: float = 7e-4   # FinRL A2C_PARAMS
    ent_coef: float = 0.01        # FinRL A2C_PARAMS
    gamma: float = 0.99
    gae_lambda: float = 1.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    normalize_advantage: bool = False
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    log_std_init: float = 0.0
    episode_length: Any = 63      # random starts, lengths uniform in [63, T-1]; None: the env's own
    device: str = "cpu"
    n_threads: int = 1


def a2c_update(actor, critic, opt, ro, cfg: A2CConfig) -> None:
    """One gradient step on the whole rollout ``ro``."""
    obs = ro.obs.reshape(-1, ro.obs.shape[-1])
    actions = ro.actions.reshape(-1, ro.actions.shape[-1])
    adv, ret = ro.advantages.reshape(-1), ro.returns.reshape(-1)
    if cfg.normalize_advantage and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    mean, log_std = actor.dist(obs)
    logp = gaussian_log_prob(actions, mean, log_std)
    pg_loss = -(adv * logp).mean()
    v_loss = ((critic(obs).squeeze(-1) - ret) ** 2).mean()
    ent_loss = -gaussian_entropy(log_std).mean()
    loss = pg_loss + cfg.ent_coef * ent_loss + cfg.vf_coef * v_loss
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_([*actor.parameters(), *critic.parameters()], cfg.max_grad_norm)
    opt.step()


class TorchA2CAgent(TorchAgent):
    """A2C on E torch sub-envs (see the module doc); ``make_agent("a2c", backend="torch", ...)``."""

    name = "torch_a2c"
    Config = A2CConfig

    def _check_config(self) -> None:
        super()._check_config()
        if self.cfg.n_steps < 1:
            raise ConfigError(f"{self.name}: n_steps must be >= 1")

    def _build(self, obs_dim: int, act_dim: int) -> None:
        c = self.cfg
        self.nets = {"actor": GaussianActor(obs_dim, act_dim, list(c.net_arch), c.log_std_init),
                     "critic": mlp([obs_dim, *c.net_arch, 1], "tanh", ortho=True, out_gain=1.0)}

    def _train(self, venv, obs: torch.Tensor, total_timesteps: int, gen: torch.Generator) -> int:
        c = self.cfg
        actor, critic = self.nets["actor"], self.nets["critic"]
        opt = torch.optim.RMSprop([*actor.parameters(), *critic.parameters()], lr=c.learning_rate,
                                  alpha=0.99, eps=1e-5, weight_decay=0, foreach=True)
        per_iter = c.n_steps * venv.num_envs
        iters = -(-total_timesteps // per_iter)
        for _ in range(iters):
            ro, obs = collect(venv, obs, actor, critic, c.n_steps, c.gamma, c.gae_lambda, self._clip, gen)
            a2c_update(actor, critic, opt, ro, c)
        return iters * per_iter

    @property
    def utd(self) -> float:
        """Gradient steps per env step."""
        return 1.0 / (self.cfg.n_steps * self.cfg.num_envs)

"""TD3, torch-native and vectorized (``make_agent("td3", backend="torch")``, name ``torch_td3``).

One file, top to bottom: the config, the networks, the update, the agent. The algorithm is SB3's
TD3: a deterministic tanh actor, ``n_critics`` Q networks (2) with Polyak-averaged targets (tau
0.005), target policy smoothing (noise 0.2 clipped to 0.5), the actor and the targets updated every
``policy_delay`` (2) critic steps, 400x300 ReLU networks, Adam. DDPG is the same update with one
critic, no smoothing and no delay (SB3 implements it that way too): :mod:`agents.torch_rl.ddpg`.

Exploration: the first ``learning_starts`` env steps take uniform random actions; after that the
actor's action plus Gaussian noise of std ``noise_sigma`` (in [-1, 1] units) when it is set. SB3's
TD3/DDPG, and so FinMeta's SB3 agents, add no noise unless ``action_noise`` is given: the default
``noise_sigma: null`` keeps that.

The env, the replay buffer (:class:`agents.torch_rl.sac.ReplayBuffer`) and the networks share one
device; ``utd`` = gradient (critic) steps per env step, as for SAC: ``utd: 1`` with E = 1 is SB3's
schedule (``train_freq`` 1, ``gradient_steps`` 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from agents.torch_rl.common import TorchAgent, mlp, step_env
from agents.torch_rl.sac import ReplayBuffer, buffer_capacity
from finmeta.errors import ConfigError


@dataclass
class TD3Config:
    num_envs: int = 64            # E sub-envs of the torch kernel
    utd: float = 0.125            # critic gradient steps per env step (1.0 = SB3's schedule)
    batch_size: int = 256         # FinRL TD3_PARAMS: 100 (with utd 1)
    buffer_size: int = 1_000_000  # transitions over all sub-envs (FinRL TD3_PARAMS)
    learning_starts: int = 100    # env steps of uniform random actions first (SB3)
    learning_rate: float = 1e-3   # FinRL TD3_PARAMS
    gamma: float = 0.99
    tau: float = 0.005
    policy_delay: int = 2
    target_policy_noise: float = 0.2
    target_noise_clip: float = 0.5
    n_critics: int = 2
    noise_sigma: float | None = None  # exploration noise std; None: none (SB3's default)
    net_arch: list[int] = field(default_factory=lambda: [400, 300])
    episode_length: Any = 63      # random starts, lengths uniform in [63, T-1]; None: the env's own
    device: str = "cpu"
    n_threads: int = 1


class DeterministicActor(nn.Module):
    """MLP -> tanh, mapped linearly from [-1, 1] to the action bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], low, high) -> None:
        super().__init__()
        self.net = mlp([obs_dim, *hidden, act_dim], "relu")
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("scale", (high - low) / 2)
        self.register_buffer("bias", (high + low) / 2)

    def squashed(self, obs: torch.Tensor) -> torch.Tensor:  # in [-1, 1]
        return torch.tanh(self.net(obs))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # in env units
        return self.bias + self.scale * self.squashed(obs)


class Critics(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], n: int) -> None:
        super().__init__()
        self.qs = nn.ModuleList(mlp([obs_dim + act_dim, *hidden, 1], "relu") for _ in range(n))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> list[torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return [q(x).squeeze(-1) for q in self.qs]

    def q1(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """The first critic only (the actor's loss, as SB3's ``q1_forward``)."""
        return self.qs[0](torch.cat([obs, act], dim=-1)).squeeze(-1)


def td3_update(actor, actor_t, critic, critic_t, opts, batch, cfg: TD3Config, update_actor: bool,
               gen: torch.Generator) -> None:
    """One critic step on ``batch``; with ``update_actor`` also one actor step and the target updates."""
    opt_actor, opt_critic = opts
    obs, act, rew, next_obs, done = batch
    with torch.no_grad():
        next_a = actor_t.squashed(next_obs)
        if cfg.target_policy_noise > 0:
            noise = torch.randn(next_a.shape, generator=gen, device=next_a.device) * cfg.target_policy_noise
            next_a = (next_a + noise.clamp(-cfg.target_noise_clip, cfg.target_noise_clip)).clamp(-1, 1)
        q_next = torch.stack(critic_t(next_obs, next_a)).min(dim=0).values
        y = rew + (1.0 - done) * cfg.gamma * q_next
    critic_loss = sum(F.mse_loss(q, y) for q in critic(obs, act))
    opt_critic.zero_grad(set_to_none=True)
    critic_loss.backward()
    opt_critic.step()
    if not update_actor:
        return
    actor_loss = -critic.q1(obs, actor.squashed(obs)).mean()
    opt_actor.zero_grad(set_to_none=True)
    actor_loss.backward()
    opt_actor.step()
    with torch.no_grad():
        torch._foreach_lerp_(list(critic_t.parameters()), list(critic.parameters()), cfg.tau)
        torch._foreach_lerp_(list(actor_t.parameters()), list(actor.parameters()), cfg.tau)


class TorchTD3Agent(TorchAgent):
    """TD3 on E torch sub-envs with a device replay buffer (see the module doc)."""

    name = "torch_td3"
    Config = TD3Config

    def _check_config(self) -> None:
        super()._check_config()
        c = self.cfg
        if not c.utd > 0:
            raise ConfigError(f"{self.name}: utd (gradient steps per env step) must be > 0, got {c.utd}")
        if c.batch_size < 1 or c.buffer_size < c.num_envs or c.policy_delay < 1 or c.n_critics < 1:
            raise ConfigError(f"{self.name}: need batch_size, policy_delay, n_critics >= 1 and buffer_size >= num_envs")

    def _build(self, obs_dim: int, act_dim: int) -> None:
        self.nets = {"actor": DeterministicActor(obs_dim, act_dim, list(self.cfg.net_arch),
                                                 self.action_space.low, self.action_space.high)}

    def _sample(self, obs: torch.Tensor) -> torch.Tensor:
        """A deterministic policy: sampling adds the exploration noise (none when noise_sigma is unset)."""
        actor, sigma = self.nets["actor"], self.cfg.noise_sigma
        a = actor.squashed(obs)
        if sigma:
            a = (a + sigma * torch.randn_like(a)).clamp(-1, 1)
        return actor.bias + actor.scale * a

    def _train(self, venv, obs: torch.Tensor, total_timesteps: int, gen: torch.Generator) -> int:
        c = self.cfg
        dev = obs.device
        E, D = obs.shape
        actor = self.nets["actor"]
        A = actor.scale.shape[0]
        actor_t = DeterministicActor(D, A, list(c.net_arch), self.action_space.low, self.action_space.high).to(dev)
        actor_t.load_state_dict(actor.state_dict())
        critic = Critics(D, A, list(c.net_arch), c.n_critics).to(dev)
        critic_t = Critics(D, A, list(c.net_arch), c.n_critics).to(dev)
        critic_t.load_state_dict(critic.state_dict())
        actor_t.requires_grad_(False)
        critic_t.requires_grad_(False)
        opts = (torch.optim.Adam(actor.parameters(), lr=c.learning_rate, foreach=True),
                torch.optim.Adam(critic.parameters(), lr=c.learning_rate, foreach=True))
        buf = ReplayBuffer(buffer_capacity(c.buffer_size, E, total_timesteps), D, A, dev)
        steps, owed, n_updates = 0, 0.0, 0
        while steps < total_timesteps:
            with torch.no_grad():
                if steps < c.learning_starts:
                    a = torch.rand((E, A), generator=gen, device=dev) * 2 - 1
                else:
                    a = actor.squashed(obs)
                    if c.noise_sigma:
                        a = (a + c.noise_sigma * torch.randn(a.shape, generator=gen, device=dev)).clamp(-1, 1)
            next_obs, rew, term, trunc, final_obs = step_env(venv, actor.bias + actor.scale * a)
            buf.add(obs, a, rew, final_obs, term.float())
            obs = next_obs
            steps += E
            if steps >= c.learning_starts:
                owed += c.utd * E
                n = int(owed)
                owed -= n
                for _ in range(n):
                    n_updates += 1
                    td3_update(actor, actor_t, critic, critic_t, opts, buf.sample(c.batch_size, gen), c,
                               n_updates % c.policy_delay == 0, gen)
        return steps

    @property
    def utd(self) -> float:
        """Gradient (critic) steps per env step."""
        return float(self.cfg.utd)

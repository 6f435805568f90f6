"""SAC, torch-native and vectorized (``make_agent("sac", backend="torch")``, name ``torch_sac``).

One file, top to bottom: the config, the replay buffer, the networks, the update, the agent.
The algorithm is SB3's SAC: a tanh-squashed Gaussian actor, two Q critics with Polyak-averaged
targets (tau 0.005), the entropy coefficient learned towards the target entropy -dim(A) from
``ent_coef_init`` (FinRL's ``"auto_0.1"``), 256x256 ReLU networks, Adam; per gradient step the
entropy coefficient, then the critics, then the actor, then the targets. Actions live in [-1, 1] in
the buffer and the networks and are mapped linearly to the env's action bounds.

The env, the replay buffer and the networks share one device; E sub-envs step together, E
transitions enter the buffer per vector step (truncated episodes store their final observation
and bootstrap; only market terminations cut the return).

Schedule: ``utd`` = gradient steps per env step (summed over sub-envs). ``utd=1`` with
``batch_size=64`` and E = 1 is SB3's (FinRL's) schedule; the default here is E = 64, ``utd`` 1/8
(8 gradient steps per vector step of 64 env steps), batch 256: 32 sampled transitions per env step
instead of SB3's 64, on 8x fewer, 4x larger minibatches (the vectorized schedule; on a GPU use
larger E and batches at the same or lower UTD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from agents.torch_rl.common import TorchAgent, mlp, step_env
from finmeta.errors import ConfigError


@dataclass
class SACConfig:
    num_envs: int = 64            # E sub-envs of the torch kernel
    utd: float = 0.125            # gradient steps per env step (1.0 = SB3's schedule)
    batch_size: int = 256         # FinRL SAC_PARAMS: 64 (with utd 1)
    buffer_size: int = 100_000    # transitions over all sub-envs (FinRL SAC_PARAMS)
    learning_starts: int = 100    # env steps of uniform random actions first (FinRL SAC_PARAMS)
    learning_rate: float = 1e-4   # FinRL SAC_PARAMS
    ent_coef_init: float = 0.1    # FinRL "auto_0.1": learned, starting at 0.1
    gamma: float = 0.99
    tau: float = 0.005
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    episode_length: Any = 63      # random starts, lengths uniform in [63, T-1]; None: the env's own
    device: str = "cpu"
    n_threads: int = 1


def buffer_capacity(buffer_size: int, num_envs: int, total_timesteps: int) -> int:
    """Rows to allocate: ``buffer_size`` rounded down to whole vector steps, but no more than the run
    will ever store (a 1M-transition buffer for a 10k-step run would cost 1M rows of memory; under
    ``torch.use_deterministic_algorithms`` torch also fills every allocated row). Sampling sees only
    the stored rows, so the result is the same as with the full allocation."""
    full = max(num_envs, buffer_size // num_envs * num_envs)
    needed = -(-total_timesteps // num_envs) * num_envs
    return min(full, needed)


class ReplayBuffer:
    """A ring of ``capacity`` transitions in preallocated tensors on one device."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device) -> None:
        self.capacity, self.size, self.pos = int(capacity), 0, 0
        # only written rows are ever read (sample draws below `size`): skip the NaN fill that
        # deterministic mode gives torch.empty (GBs for a large buffer)
        det = torch.utils.deterministic
        fill, det.fill_uninitialized_memory = det.fill_uninitialized_memory, False
        try:
            self.obs = torch.empty((self.capacity, obs_dim), device=device)
            self.next_obs = torch.empty((self.capacity, obs_dim), device=device)
            self.actions = torch.empty((self.capacity, act_dim), device=device)
            self.rewards = torch.empty(self.capacity, device=device)
            self.dones = torch.empty(self.capacity, device=device)
        finally:
            det.fill_uninitialized_memory = fill

    def add(self, obs, actions, rewards, next_obs, dones) -> None:
        """E transitions at once (wrapping around the ring)."""
        n = obs.shape[0]
        idx = (torch.arange(n, device=obs.device) + self.pos) % self.capacity
        self.obs[idx], self.actions[idx], self.rewards[idx] = obs, actions, rewards
        self.next_obs[idx], self.dones[idx] = next_obs, dones
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(self, n: int, gen: torch.Generator):
        i = torch.randint(0, self.size, (n,), generator=gen, device=self.obs.device)
        return self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i], self.dones[i]


class SquashedGaussianActor(nn.Module):
    """SB3's SAC actor: MLP trunk, mean and log-std heads, tanh squashing, bounds mapping."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], low, high) -> None:
        super().__init__()
        self.trunk = mlp([obs_dim, *hidden], "relu")
        self.trunk.append(nn.ReLU())
        self.mu = nn.Linear(hidden[-1], act_dim)
        self.log_std = nn.Linear(hidden[-1], act_dim)
        low, high = torch.as_tensor(low, dtype=torch.float32), torch.as_tensor(high, dtype=torch.float32)
        self.register_buffer("scale", (high - low) / 2)
        self.register_buffer("bias", (high + low) / 2)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:  # deterministic action in env units
        return self.bias + self.scale * torch.tanh(self.mu(self.trunk(obs)))

    def sample(self, obs: torch.Tensor, gen: torch.Generator | None = None):
        """(squashed action in [-1, 1], its log density)."""
        h = self.trunk(obs)
        mean, log_std = self.mu(h), self.log_std(h).clamp(-20, 2)
        std = log_std.exp()
        noise = torch.randn(mean.shape, generator=gen, device=mean.device) if gen is not None else torch.randn_like(mean)
        u = mean + std * noise
        a = torch.tanh(u)
        logp = (-0.5 * noise ** 2 - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
        logp = logp - torch.log(1 - a ** 2 + 1e-6).sum(-1)
        return a, logp


class TwinQ(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int]) -> None:
        super().__init__()
        self.q1 = mlp([obs_dim + act_dim, *hidden, 1], "relu")
        self.q2 = mlp([obs_dim + act_dim, *hidden, 1], "relu")

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([obs, act], dim=-1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def sac_update(actor, critic, target, log_alpha, opts, batch, cfg: SACConfig, target_entropy: float,
               gen: torch.Generator) -> None:
    """One SAC gradient step (entropy coefficient, critics, actor, targets) on ``batch``."""
    opt_actor, opt_critic, opt_alpha = opts
    obs, act, rew, next_obs, done = batch
    # entropy coefficient
    a_pi, logp_pi = actor.sample(obs, gen)
    alpha = log_alpha.detach().exp()  # taken before its own step, as SB3 does
    alpha_loss = -(log_alpha * (logp_pi.detach() + target_entropy)).mean()
    opt_alpha.zero_grad(set_to_none=True)
    alpha_loss.backward()
    opt_alpha.step()
    # critics
    with torch.no_grad():
        a_next, logp_next = actor.sample(next_obs, gen)
        q1_t, q2_t = target(next_obs, a_next)
        y = rew + (1.0 - done) * cfg.gamma * (torch.min(q1_t, q2_t) - alpha * logp_next)
    q1, q2 = critic(obs, act)
    critic_loss = 0.5 * (F.mse_loss(q1, y) + F.mse_loss(q2, y))
    opt_critic.zero_grad(set_to_none=True)
    critic_loss.backward()
    opt_critic.step()
    # actor (the critics' gradients from this loss are discarded)
    q1_pi, q2_pi = critic(obs, a_pi)
    actor_loss = (alpha * logp_pi - torch.min(q1_pi, q2_pi)).mean()
    opt_actor.zero_grad(set_to_none=True)
    actor_loss.backward()
    opt_actor.step()
    # targets
    with torch.no_grad():
        torch._foreach_lerp_(list(target.parameters()), list(critic.parameters()), cfg.tau)


class TorchSACAgent(TorchAgent):
    """SAC on E torch sub-envs with a device replay buffer (see the module doc)."""

    name = "torch_sac"
    Config = SACConfig

    def _check_config(self) -> None:
        super()._check_config()
        c = self.cfg
        if not c.utd > 0:
            raise ConfigError(f"{self.name}: utd (gradient steps per env step) must be > 0, got {c.utd}")
        if c.batch_size < 1 or c.buffer_size < c.num_envs:
            raise ConfigError(f"{self.name}: need batch_size >= 1 and buffer_size >= num_envs")

    def _build(self, obs_dim: int, act_dim: int) -> None:
        c = self.cfg
        self.nets = {"actor": SquashedGaussianActor(obs_dim, act_dim, list(c.net_arch),
                                                    self.action_space.low, self.action_space.high)}

    def _sample(self, obs: torch.Tensor) -> torch.Tensor:
        actor = self.nets["actor"]
        a, _ = actor.sample(obs)
        return actor.bias + actor.scale * a

    def _train(self, venv, obs: torch.Tensor, total_timesteps: int, gen: torch.Generator) -> int:
        c = self.cfg
        dev = obs.device
        E, D = obs.shape
        actor = self.nets["actor"]
        A = actor.mu.out_features
        critic = TwinQ(D, A, list(c.net_arch)).to(dev)
        target = TwinQ(D, A, list(c.net_arch)).to(dev)
        target.load_state_dict(critic.state_dict())
        target.requires_grad_(False)
        log_alpha = torch.tensor(math.log(c.ent_coef_init), device=dev, requires_grad=True)
        opts = (torch.optim.Adam(actor.parameters(), lr=c.learning_rate, foreach=True),
                torch.optim.Adam(critic.parameters(), lr=c.learning_rate, foreach=True),
                torch.optim.Adam([log_alpha], lr=c.learning_rate))
        buf = ReplayBuffer(buffer_capacity(c.buffer_size, E, total_timesteps), D, A, dev)
        target_entropy = -float(A)
        steps, owed = 0, 0.0
        while steps < total_timesteps:
            with torch.no_grad():
                if steps < c.learning_starts:
                    a = torch.rand((E, A), generator=gen, device=dev) * 2 - 1
                else:
                    a, _ = actor.sample(obs, gen)
            next_obs, rew, term, trunc, final_obs = step_env(venv, actor.bias + actor.scale * a)
            buf.add(obs, a, rew, final_obs, term.float())
            obs = next_obs
            steps += E
            if steps >= c.learning_starts:
                owed += c.utd * E
                n = int(owed)
                owed -= n
                for _ in range(n):
                    sac_update(actor, critic, target, log_alpha, opts, buf.sample(c.batch_size, gen), c,
                               target_entropy, gen)
        return steps

    @property
    def utd(self) -> float:
        """Gradient steps per env step."""
        return float(self.cfg.utd)

"""The on-policy rollout shared by A2C and PPO: E sub-envs x n_steps, all tensors on one device.

Follows SB3's ``OnPolicyAlgorithm.collect_rollouts`` and ``RolloutBuffer.compute_returns_and_advantage``:

* actions are sampled from the Gaussian policy (the torch ``Generator`` of the run), stored
  unclipped, and clipped to the action bounds for the env step;
* a truncated episode (time limit / the random episode length) bootstraps: its reward gets
  ``gamma * V(final_obs)`` added, as SB3 does with ``info["terminal_observation"]``;
* GAE(lambda) over the rollout, ``done`` cutting the recursion; returns = advantages + values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from agents.torch_rl.common import gaussian_log_prob, step_env


@dataclass
class Rollout:
    """One rollout, time-major: ``obs (S, E, D)``, ``actions (S, E, A)``, the rest ``(S, E)``."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


@torch.no_grad()
def collect(venv, obs: torch.Tensor, actor, critic, n_steps: int, gamma: float, gae_lambda: float,
            clip, gen: torch.Generator) -> tuple[Rollout, torch.Tensor]:
    """Step ``venv`` ``n_steps`` times from ``obs``; returns the rollout and the next observation."""
    E, D = obs.shape
    dev = obs.device
    A = actor.log_std.shape[0]
    obs_b = torch.empty((n_steps, E, D), device=dev)
    act_b = torch.empty((n_steps, E, A), device=dev)
    logp_b = torch.empty((n_steps, E), device=dev)
    val_b = torch.empty((n_steps, E), device=dev)
    rew_b = torch.empty((n_steps, E), device=dev)
    done_b = torch.empty((n_steps, E), device=dev)
    for s in range(n_steps):
        mean, log_std = actor.dist(obs)
        action = mean + log_std.exp() * torch.randn(mean.shape, generator=gen, device=dev)
        value = critic(obs).squeeze(-1)
        next_obs, reward, term, trunc, final_obs = step_env(venv, clip(action))
        if bool(trunc.any()):  # bootstrap the episodes cut by their length, not by the market
            reward = reward + gamma * critic(final_obs).squeeze(-1) * (trunc & ~term).float()
        obs_b[s], act_b[s], val_b[s], rew_b[s] = obs, action, value, reward
        logp_b[s] = gaussian_log_prob(action, mean, log_std)
        done_b[s] = (term | trunc).float()
        obs = next_obs
    last_value = critic(obs).squeeze(-1)
    adv = torch.empty_like(rew_b)
    running = torch.zeros(E, device=dev)
    for s in reversed(range(n_steps)):
        next_value = last_value if s == n_steps - 1 else val_b[s + 1]
        not_done = 1.0 - done_b[s]
        delta = rew_b[s] + gamma * next_value * not_done - val_b[s]
        running = delta + gamma * gae_lambda * not_done * running
        adv[s] = running
    return Rollout(obs_b, act_b, logp_b, val_b, adv, adv + val_b), obs

"""DDPG, torch-native and vectorized (``make_agent("ddpg", backend="torch")``, name ``torch_ddpg``).

DDPG is TD3's update (:mod:`agents.torch_rl.td3`) with one critic, no target policy smoothing and
the actor updated at every critic step -- the way SB3 implements it (``DDPG(TD3)`` with
``policy_delay=1, n_critics=1, target_policy_noise=0``). Defaults: FinRL's ``DDPG_PARAMS``
(learning rate 1e-3, buffer 50,000; batch 128 at SB3's schedule), SB3's 400x300 networks, tau 0.005,
no exploration noise unless ``noise_sigma`` is set (as SB3 without ``action_noise``). Schedule knobs
as TD3 (``num_envs``, ``utd``, ``batch_size``).
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.torch_rl.td3 import TD3Config, TorchTD3Agent


@dataclass
class DDPGConfig(TD3Config):
    buffer_size: int = 50_000     # FinRL DDPG_PARAMS
    batch_size: int = 256         # FinRL DDPG_PARAMS: 128 (with utd 1)
    policy_delay: int = 1
    target_policy_noise: float = 0.0
    n_critics: int = 1


class TorchDDPGAgent(TorchTD3Agent):
    """DDPG on E torch sub-envs: TD3's update with one critic, no smoothing, no delay."""

    name = "torch_ddpg"
    Config = DDPGConfig

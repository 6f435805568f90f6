"""Torch-native vectorized learners: rollouts, buffers and updates stay in torch tensors on one device.

``make_agent("ppo", backend="torch", num_envs=64)`` (registered as ``torch_ppo``); the same for
``a2c``, and for ``ddpg``, ``td3`` and ``sac`` (a replay buffer on the device, ``utd`` gradient
steps per env step). Each algorithm is one file read top to bottom (CleanRL's style) with a typed
config dataclass; :mod:`agents.torch_rl.common` holds the training env, the networks and the
:class:`~agents.base.Agent` shell, :mod:`agents.torch_rl.rollout` the on-policy rollout.
See ``docs/agents.md`` ("Torch backend").
"""

from agents.torch_rl.a2c import A2CConfig, TorchA2CAgent
from agents.torch_rl.ddpg import DDPGConfig, TorchDDPGAgent
from agents.torch_rl.ppo import PPOConfig, TorchPPOAgent
from agents.torch_rl.sac import SACConfig, TorchSACAgent
from agents.torch_rl.td3 import TD3Config, TorchTD3Agent

__all__ = ["A2CConfig", "DDPGConfig", "PPOConfig", "SACConfig", "TD3Config", "TorchA2CAgent", "TorchDDPGAgent",
           "TorchPPOAgent", "TorchSACAgent", "TorchTD3Agent"]

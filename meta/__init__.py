"""The env layer: one vectorised market kernel, five families as configurations of it.

    from meta import make_env, make_vec_env, EnvConfig
    env = make_env(arrays, family="stock_trading")              # gymnasium.Env
    venv = make_vec_env(arrays, family="ashare", num_envs=64)     # gymnasium.vector.VectorEnv

See docs/env.md.
"""

from .config import FAMILIES, EnvConfig
from .envs import TradingEnv, VecTradingEnv, draw_episode, make_env, make_vec_env
from .kernel import MarketKernel

__all__ = ["EnvConfig", "FAMILIES", "MarketKernel", "TradingEnv", "VecTradingEnv", "draw_episode",
           "make_env", "make_vec_env"]

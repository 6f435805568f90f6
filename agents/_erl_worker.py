"""The ElegantRL training subprocess: ``python -m agents._erl_worker PAYLOAD OUT``.

``PAYLOAD`` is a cloudpickle of ``{"config", "env", "seed", "total_timesteps", "algo"}``; the
actor's ``state_dict`` is written to ``OUT`` (torch.save), a traceback to ``OUT.err`` on failure.
Run only in a child process: ElegantRL switches torch's autograd off globally here.
"""

from __future__ import annotations

import math
import sys
import traceback

import numpy as np

#: algorithm -> (ElegantRL agent class, actor class in elegantrl.agents.net, off-policy)
ALGOS = {
    "a2c": ("AgentA2C", "ActorPPO", False),
    "ppo": ("AgentPPO", "ActorPPO", False),
    "ddpg": ("AgentDDPG", "Actor", True),
    "td3": ("AgentTD3", "Actor", True),
    "sac": ("AgentSAC", "ActorSAC", True),
}
_OWN = ("n_threads", "warmup_steps", "timeout_s", "gpu_id")


class _ERLEnv:
    """Our env as ElegantRL wants it, on top of an SB3 VecEnv (auto-reset) of E sub-envs.

    Actions in ElegantRL's [-1, 1] are mapped linearly to the env's action bounds.
    E == 1: ``reset() -> (state_dim,)`` numpy, ``step(a (act_dim,)) -> (state, reward, done, info)``
    (ElegantRL then calls ``reset()``, which returns the auto-reset state without resetting twice).
    E > 1: torch tensors ``(E, state_dim)``, ``(E,)``, ``(E,)``; done sub-envs come back reset.
    """

    def __init__(self, vec_env, state_dim: int, action_dim: int, device="cpu") -> None:
        self.vec = vec_env
        self.device = device
        # ElegantRL acts in [-1, 1]; map to the env's bounds (the parent's act() does the same)
        self.low = np.asarray(vec_env.action_space.low, dtype=np.float32).reshape(-1)
        self.high = np.asarray(vec_env.action_space.high, dtype=np.float32).reshape(-1)
        self.num_envs = vec_env.num_envs
        self.state_dim, self.action_dim = state_dim, action_dim
        self.if_discrete = False
        self.max_step = 12345
        self.env_name = "finmeta"
        self._after_done = None

    def reset(self):
        import torch

        if self._after_done is not None:
            obs, self._after_done = self._after_done, None
        else:
            obs = self.vec.reset()
        obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        return obs[0] if self.num_envs == 1 else torch.as_tensor(obs, device=self.device)

    def step(self, action):
        import torch

        a = action.detach().cpu().numpy() if hasattr(action, "detach") else np.asarray(action)
        a = a.reshape(self.num_envs, self.action_dim)
        a = self.low + (a + 1.0) * 0.5 * (self.high - self.low)
        obs, rew, done, infos = self.vec.step(a)
        obs = np.asarray(obs, dtype=np.float32).reshape(self.num_envs, -1)
        if self.num_envs == 1:
            d = bool(done[0])
            if d:
                self._after_done = obs
            return obs[0], float(rew[0]), d, infos[0]
        dev = self.device
        return (torch.as_tensor(obs, device=dev), torch.as_tensor(np.asarray(rew, dtype=np.float32), device=dev),
                torch.as_tensor(np.asarray(done, dtype=bool), device=dev), infos)

    def close(self) -> None:
        self.vec.close()


def _train_in_child(payload_file: str, out_file: str) -> None:
    """Entry point of the training subprocess (reads a cloudpickle payload, writes the actor)."""
    try:
        import cloudpickle
        import torch

        with open(payload_file, "rb") as fh:
            p = cloudpickle.load(fh)
        cfg, env, seed, total = p["config"], p["env"], int(p["seed"]), int(p["total_timesteps"])
        agent_cls_name, actor_cls_name, off_policy = ALGOS[p["algo"]]

        torch.set_num_threads(int(cfg.get("n_threads") or 1))
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        import random

        random.seed(seed)

        import elegantrl.agents as erl_agents
        from elegantrl.train.config import Config
        from elegantrl.train.replay_buffer import ReplayBuffer

        from agents.sb3 import wrap_env

        vec = wrap_env(env)
        vec.seed(seed)
        E = int(vec.num_envs)
        state_dim = int(np.prod(vec.observation_space.shape))
        action_dim = int(np.prod(vec.action_space.shape))
        gpu_id = int(cfg.get("gpu_id", -1))
        device = torch.device(f"cuda:{gpu_id}" if gpu_id >= 0 and torch.cuda.is_available() else "cpu")
        erl_env = _ERLEnv(vec, state_dim, action_dim, device)

        agent_class = getattr(erl_agents, agent_cls_name)
        args = Config(agent_class=agent_class, env_class=None,
                      env_args={"env_name": "finmeta", "num_envs": E, "max_step": 12345,
                                "state_dim": state_dim, "action_dim": action_dim, "if_discrete": False})
        for k, v in cfg.items():
            if k in _OWN:
                continue
            setattr(args, k, v)
        args.net_dims = tuple(int(d) for d in cfg["net_dims"])
        args.reward_scale = float(cfg.get("reward_scale", 1.0))
        args.batch_size = int(args.batch_size)
        args.horizon_len = int(args.horizon_len)
        args.random_seed = seed
        args.gpu_id = gpu_id
        torch.set_grad_enabled(False)

        agent = agent_class(args.net_dims, state_dim, action_dim, gpu_id=gpu_id, args=args)
        state = erl_env.reset()
        state = torch.as_tensor(state, dtype=torch.float32, device=device).reshape(E, state_dim)
        agent.last_state = state

        steps = 0
        h = args.horizon_len
        if off_policy:
            rows = max(2, int(math.ceil(int(cfg.get("buffer_size", 1_000_000)) / E)))
            buffer = ReplayBuffer(gpu_id=gpu_id, num_envs=E, max_size=rows, state_dim=state_dim,
                                  action_dim=action_dim, if_use_per=False, args=args)
            warm = int(cfg.get("warmup_steps") or h * E)
            warm_h = max(2, int(math.ceil(warm / E)))
            buffer.update(agent.explore_env(erl_env, warm_h, if_random=True))
            steps += warm_h * E
        else:
            buffer = []
        while steps < total:
            items = agent.explore_env(erl_env, h)
            steps += h * E
            if off_policy:
                buffer.update(items)
            else:
                buffer[:] = items
            torch.set_grad_enabled(True)
            agent.update_net(buffer)
            torch.set_grad_enabled(False)
        erl_env.close()
        state_dict = {k: v.detach().cpu().clone() for k, v in agent.act.state_dict().items()}
        torch.save({"state_dict": state_dict, "actor_class": actor_cls_name, "steps": steps,
                    "state_dim": state_dim, "action_dim": action_dim}, out_file)
    except BaseException:
        with open(out_file + ".err", "w") as fh:
            fh.write(traceback.format_exc())
        raise SystemExit(1)


if __name__ == "__main__":
    _train_in_child(sys.argv[1], sys.argv[2])

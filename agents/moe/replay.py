"""The shared replay buffer: every expert writes to it and every expert learns from all of it.

Per step it stores the flat observation and next observation ``(D,)``, the action and its
pre-squash value ``u (A,)``, the behaviour expert's id and its log-prob ``log mu(u|s)`` (pre-squash
Gaussian), the extrinsic reward, ``done``, the skill-relevant next-state features (portfolio
weights + cash, ``(S,)``) and the episode start. Windows of the last L observations are rebuilt
from the episode's steps on sampling (the first observation repeated before the episode start,
the same padding the agent uses when acting), so the buffer holds ``D`` floats per step, not
``L * D``. Indices are absolute step counters; position = counter mod capacity.
"""

from __future__ import annotations

import numpy as np

__all__ = ["SharedReplay"]


class SharedReplay:
    def __init__(self, capacity: int, obs_dim: int, act_dim: int, skill_dim: int, lookback: int) -> None:
        self.cap, self.L = int(capacity), int(lookback)
        f = np.float32
        self.obs = np.zeros((self.cap, obs_dim), f)
        self.next_obs = np.zeros((self.cap, obs_dim), f)
        self.action = np.zeros((self.cap, act_dim), f)
        self.u = np.zeros((self.cap, act_dim), f)
        self.logp_mu = np.zeros(self.cap, f)
        self.reward = np.zeros(self.cap, f)
        self.done = np.zeros(self.cap, f)
        self.expert = np.zeros(self.cap, np.int64)
        self.skill_next = np.zeros((self.cap, skill_dim), f)
        self.ep_start = np.zeros(self.cap, np.int64)
        self.n = 0  # steps ever added

    def __len__(self) -> int:
        return min(self.n, self.cap)

    def add(self, obs, next_obs, action, u, logp_mu, reward, done, expert, skill_next, ep_start) -> None:
        i = self.n % self.cap
        self.obs[i], self.next_obs[i], self.action[i], self.u[i] = obs, next_obs, action, u
        self.logp_mu[i], self.reward[i], self.done[i] = logp_mu, reward, float(done)
        self.expert[i], self.skill_next[i], self.ep_start[i] = expert, skill_next, ep_start
        self.n += 1

    @property
    def oldest(self) -> int:
        return max(0, self.n - self.cap)

    def windows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(window ``(B, L, D)``, next window ``(B, L, D)``) for absolute indices ``idx (B,)``."""
        lo = np.maximum(self.ep_start[idx % self.cap], self.oldest)[:, None]
        back = np.arange(self.L - 1, -1, -1)[None, :]                 # L-1 .. 0
        w_idx = np.maximum(idx[:, None] - back, lo)                    # steps i-L+1 .. i
        win = self.obs[w_idx % self.cap]
        # steps before the episode start were clipped to it: both windows repeat the first obs
        nxt = np.concatenate([win[:, 1:], self.next_obs[idx % self.cap][:, None]], 1)
        return win, nxt

    def sample(self, rng: np.random.Generator, batch: int) -> dict[str, np.ndarray]:
        idx = rng.integers(self.oldest, self.n, size=batch)
        return self.get(idx)

    def get(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        win, nxt = self.windows(idx)
        p = idx % self.cap
        return {"win": win, "next_win": nxt, "action": self.action[p], "u": self.u[p], "logp_mu": self.logp_mu[p],
                "reward": self.reward[p], "done": self.done[p], "expert": self.expert[p],
                "skill_next": self.skill_next[p], "idx": idx}

    def sample_sequences(self, rng: np.random.Generator, batch: int, n: int) -> dict[str, np.ndarray] | None:
        """``batch`` sequences of ``n`` consecutive steps: each value has a leading ``(B, n)``.

        A sequence may cross an episode end; ``done`` zeroes the discount there, so nothing after
        it enters a target. None when fewer than ``n`` steps are stored.
        """
        if self.n - self.oldest < n + 1:
            return None
        start = rng.integers(self.oldest, self.n - n + 1, size=batch)
        idx = (start[:, None] + np.arange(n)[None, :]).reshape(-1)
        d = self.get(idx)
        return {k: v.reshape(batch, n, *v.shape[1:]) for k, v in d.items()}

"""FinMeta's hierarchical mixture-of-experts agent (``make_agent("moe")``); see ``docs/moe.md``.

    agent = make_agent("moe", n_experts=4, segment=5)
    agent.learn(env, total_timesteps=20_000, seed=0)
    action = agent.act(obs, info=info)            # router -> expert -> action
    agent.diversity_report(eval_env)              # {"diversity", "router_entropy", ...}

:class:`MoECore` holds the trainable parts (observation normaliser, temporal encoder, K SAC
experts, DIAYN discriminator, shared replay) and their updates; :class:`MoEAgent` drives training
through the router env (:mod:`agents.moe.router`) and implements the Agent interface.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from agents.base import (
    Agent, AgentError, AgentLoadError, env_spaces, quiet_logger, seed_everything, torch_threads,
)
from agents.moe.encoder import TemporalEncoder
from agents.moe.objectives import (
    Discriminator,
    gaussian_kl_to_mean,
    half_l1_diversity,
    intrinsic_reward,
    usage_entropy,
    vtrace,
)
from agents.moe.pbt import exploit_explore
from agents.moe.replay import SharedReplay
from agents.moe.router import RouterEnv, RouterState, skill_features
from agents.moe.sac import SACExpert, gaussian_logp
from finmeta.errors import ConfigError

__all__ = ["MoEAgent", "MoECore", "MOE_DEFAULTS", "ROUTERS", "ABLATIONS"]

ROUTERS = ("ppo", "random", "sharpe")
FREEZE = ("none", "alternate")

MOE_DEFAULTS: dict[str, Any] = {
    # hierarchy ---------------------------------------------------------------------------
    "n_experts": 4,            # K (ablation: 1)
    "segment": 5,              # M: steps an expert acts before the router picks again
    "router": "ppo",           # "ppo" (MaskablePPO) | "random" | "sharpe" (best trailing Sharpe)
    "router_warmup": 0.2,      # fraction of iterations with uniform skill sampling before PPO routes
    # encoder -----------------------------------------------------------------------------
    "encoder": "transformer",  # "transformer" | "timesnet"
    "lookback": 10,            # L: the agent's own rolling window of flat observations
    "d_model": 32, "feat_dim": 32, "n_layers": 1, "n_heads": 2, "top_k": 2,
    "lora_rank": 4, "lora_alpha": 8.0,
    "retrain_mode": "lora",    # for re-fits (2nd learn() or init_from): "lora" | "full"
    "init_from": None,         # path of a saved moe agent to warm-start from
    "encoder_lr": 3e-4,
    # experts (SAC) -----------------------------------------------------------------------
    "hidden": 64, "gamma": 0.99, "tau": 0.005, "batch_size": 64,
    "buffer_size": 200_000, "learning_starts": 200, "utd": 0.5,  # gradient steps per env step
    "lr": 3e-4, "beta": 0.5, "ent_coef": 0.01,                     # PBT-tuned, per expert
    "reward_scale": 1.0,       # multiplies the env reward before SAC sees it
    "disc_lr": 1e-3, "vtrace_n": 5,
    # router ------------------------------------------------------------------------------
    "router_lr": 3e-4, "router_n_epochs": 4, "router_reward_scale": 100.0, "kl_coef": 0.01,
    "max_consecutive": 4, "cooldown": 1, "fail_sharpe": -2.0, "fail_min_steps": 20, "sharpe_window": 60,
    # schedules (in iterations = router decisions) ------------------------------------------
    "router_every": 10, "expert_every": 5, "pbt_every": 20, "pbt_frac": 0.25,
    "freeze": "none",          # "alternate": router and experts take turns, freeze_period each
    "freeze_period": 20,
    # runtime -------------------------------------------------------------------------------
    "n_threads": 1, "device": "cpu", "verbose": 0,
}


class RunningNorm:
    """Running mean/variance of observations (Chan et al. parallel update). ``(D,)``."""

    def __init__(self, dim: int) -> None:
        self.mean, self.var, self.count = np.zeros(dim), np.ones(dim), 1e-4

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1, self.mean.size)
        bm, bv, n = x.mean(0), x.var(0), x.shape[0]
        delta, tot = bm - self.mean, self.count + n
        self.mean = self.mean + delta * n / tot
        self.var = (self.var * self.count + bv * n + delta ** 2 * self.count * n / tot) / tot
        self.count = tot

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.clip((x - self.mean) / np.sqrt(self.var + 1e-8), -10, 10).astype(np.float32)


class MoECore:
    """Encoder + experts + discriminator + replay, and their gradient updates."""

    def __init__(self, obs_dim: int, act_dim: int, n_assets: int, cfg: dict, seed: int) -> None:
        self.cfg = cfg
        self.obs_dim, self.act_dim, self.n_assets = int(obs_dim), int(act_dim), int(n_assets)
        self.K, self.lookback, self.feat_dim = int(cfg["n_experts"]), int(cfg["lookback"]), int(cfg["feat_dim"])
        if self.K < 1 or self.lookback < 1 or int(cfg["segment"]) < 1:
            raise ConfigError("moe: n_experts, lookback and segment must be >= 1")
        self.rng = np.random.default_rng(seed)
        self.norm = RunningNorm(obs_dim)
        self.encoder = TemporalEncoder(obs_dim, self.lookback, int(cfg["d_model"]), self.feat_dim,
                                       int(cfg["n_layers"]), cfg["encoder"], int(cfg["n_heads"]), int(cfg["top_k"]),
                                       int(cfg["lora_rank"]), float(cfg["lora_alpha"]))
        hyper = {"lr": float(cfg["lr"]), "beta": float(cfg["beta"]), "ent_coef": float(cfg["ent_coef"])}
        self.experts = [SACExpert(k, self.K, self.feat_dim, act_dim, int(cfg["hidden"]), hyper) for k in range(self.K)]
        self.skill_dim = n_assets + 1
        self.disc = Discriminator(self.skill_dim, self.K, int(cfg["hidden"]))
        self.make_optimizers()
        self.replay: SharedReplay | None = None
        self.ep_start = 0
        self.pbt_log: list[dict] = []
        self.losses: dict[str, float] = {}

    def make_optimizers(self) -> None:
        params = self.encoder.trainable_parameters()
        self.opt_enc = torch.optim.Adam(params, lr=float(self.cfg["encoder_lr"])) if params else None
        self.opt_disc = torch.optim.Adam(self.disc.parameters(), lr=float(self.cfg["disc_lr"]))

    # -- acting ------------------------------------------------------------------------------
    def observe(self, obs: np.ndarray) -> None:
        self.norm.update(obs)

    def encode(self, windows: np.ndarray) -> torch.Tensor:
        """Raw windows ``(B, L, D)`` (or ``(L, D)``) -> features ``(B, H)``."""
        w = np.asarray(windows, np.float32)
        if w.ndim == 2:
            w = w[None]
        return self.encoder(torch.as_tensor(self.norm(w)))

    @torch.no_grad()
    def expert_step(self, window: np.ndarray, k: int, deterministic: bool):
        """(action ``(A,)``, u ``(A,)``, behaviour log-prob, KL of expert k to the experts' mean)."""
        feat = self.encode(window)
        a, u, logp = self.experts[k].act(feat, deterministic)
        kl = 0.0
        if self.K > 1 and float(self.cfg["kl_coef"]) != 0.0:
            mus, lss = zip(*(e.dist(feat) for e in self.experts))
            kl = float(gaussian_kl_to_mean(torch.stack(mus), torch.stack(lss), k)[0])
        return a[0].numpy(), u[0].numpy(), float(logp[0]), kl

    @torch.no_grad()
    def router_obs(self, state: RouterState) -> np.ndarray:
        """``(H + 4K,)``: encoded state, then V_k(s), trailing Sharpe, recency, mask per expert."""
        feat = self.encode(state.window)
        values = np.array([float(e.v(feat)[0]) for e in self.experts], np.float32)
        return np.concatenate([feat[0].numpy(), state.stats(values)]).astype(np.float32)

    # -- data --------------------------------------------------------------------------------
    def ensure_replay(self, capacity: int) -> None:
        if self.replay is None:
            self.replay = SharedReplay(capacity, self.obs_dim, self.act_dim, self.skill_dim, self.lookback)

    def new_episode(self) -> None:
        self.ep_start = self.replay.n if self.replay is not None else 0

    def store(self, obs, obs2, a, u, logp, r, done, k, skill_next) -> None:
        """One market transition by expert k (behaviour log-prob ``logp``) into the shared replay."""
        self.replay.add(obs, obs2, a, u, logp, r, done, k, skill_next, self.ep_start)

    # -- updates -----------------------------------------------------------------------------
    def update_experts(self, n_steps: int) -> None:
        """``n_steps`` SAC gradient steps of every expert on shared-replay batches (+ encoder, disc)."""
        cfg = self.cfg
        gamma, tau, bs = float(cfg["gamma"]), float(cfg["tau"]), int(cfg["batch_size"])
        for _ in range(int(n_steps)):
            b = self.replay.sample(self.rng, bs)
            feat = self.encode(b["win"])
            with torch.no_grad():
                nfeat = self.encode(b["next_win"])
                logits = self.disc(torch.as_tensor(b["skill_next"]))
            act = torch.as_tensor(b["action"])
            r_ext = torch.as_tensor(b["reward"]) * float(cfg["reward_scale"])
            notdone = 1.0 - torch.as_tensor(b["done"])
            q_loss = 0.0
            for e in self.experts:
                r = r_ext
                if self.K > 1 and e.hyper["beta"] != 0.0:
                    r = r + e.hyper["beta"] * intrinsic_reward(logits, e.skill)  # relabelled with z_e
                alpha = e.hyper["ent_coef"]
                with torch.no_grad():
                    xn = e.with_skill(nfeat)
                    a2, logp2, _ = e.actor.sample(xn)
                    qt = torch.min(e.q1_t(xn, a2), e.q2_t(xn, a2)) - alpha * logp2
                    y = r + gamma * notdone * qt
                x = e.with_skill(feat)
                q_loss = q_loss + F.mse_loss(e.q1(x, act), y) + F.mse_loss(e.q2(x, act), y)
            for e in self.experts:
                e.opt_q.zero_grad()
            if self.opt_enc is not None:
                self.opt_enc.zero_grad()
            q_loss.backward()
            for e in self.experts:
                e.opt_q.step()
            if self.opt_enc is not None:
                self.opt_enc.step()
            fd = feat.detach()
            pi_loss = 0.0
            for e in self.experts:
                x = e.with_skill(fd)
                a, logp, _ = e.actor.sample(x)
                loss = (e.hyper["ent_coef"] * logp - torch.min(e.q1(x, a), e.q2(x, a))).mean()
                e.opt_actor.zero_grad()
                loss.backward()
                e.opt_actor.step()
                e.soft_update(tau)
                pi_loss += float(loss.detach())
            if self.K > 1:
                d_loss = F.cross_entropy(self.disc(torch.as_tensor(b["skill_next"])), torch.as_tensor(b["expert"]))
                self.opt_disc.zero_grad()
                d_loss.backward()
                self.opt_disc.step()
                self.losses["disc"] = float(d_loss.detach())
            self.losses.update(q=float(q_loss.detach()) / self.K, pi=pi_loss / self.K)

    def update_values(self, n_steps: int) -> None:
        """Per-expert value heads V_k from shared-replay sequences with V-trace targets.

        The data come from whichever expert acted (behaviour mu = the stored log-prob); V_k is
        the value of expert k's policy, so the n-step target is corrected with
        ``rho_t = min(1, pi_k(u_t|s_t) / mu(u_t|s_t))`` (pre-squash densities; the tanh Jacobian
        cancels). Extrinsic reward only: V_k is what the router and PBT compare.
        """
        n, bs, gamma = int(self.cfg["vtrace_n"]), int(self.cfg["batch_size"]), float(self.cfg["gamma"])
        for _ in range(int(n_steps)):
            seq = self.replay.sample_sequences(self.rng, bs, n)
            if seq is None:
                return
            B = bs
            with torch.no_grad():
                feat = self.encode(seq["win"].reshape(B * n, self.lookback, self.obs_dim))
                boot_feat = self.encode(seq["next_win"][:, -1])
            u = torch.as_tensor(seq["u"].reshape(B * n, -1))
            logp_mu = torch.as_tensor(seq["logp_mu"])
            r = torch.as_tensor(seq["reward"]) * float(self.cfg["reward_scale"])
            disc = gamma * (1.0 - torch.as_tensor(seq["done"]))
            for e in self.experts:
                with torch.no_grad():
                    mu, ls = e.dist(feat)
                    log_rho = gaussian_logp(u, mu, ls).view(B, n) - logp_mu
                    target = vtrace(e.v(feat).view(B, n), e.v(boot_feat), r, disc, log_rho)
                loss = F.mse_loss(e.v(feat).view(B, n), target)
                e.opt_v.zero_grad()
                loss.backward()
                e.opt_v.step()
                self.losses["v"] = float(loss.detach())

    @torch.no_grad()
    def fitness(self, n: int = 256) -> np.ndarray:
        """PBT fitness ``(K,)``: mean V-trace value V_k(s) over recent replay states."""
        lo = max(self.replay.oldest, self.replay.n - 5000)
        idx = self.rng.integers(lo, self.replay.n, size=n)
        feat = self.encode(self.replay.windows(idx)[0])
        return np.array([float(e.v(feat).mean()) for e in self.experts])

    def pbt(self) -> list[dict]:
        log = exploit_explore(self.experts, self.fitness(), self.rng, float(self.cfg["pbt_frac"]))
        self.pbt_log.extend(log)
        return log

    # -- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "dims": (self.obs_dim, self.act_dim, self.n_assets),
            "norm": (self.norm.mean, self.norm.var, self.norm.count),
            "encoder": self.encoder.state_dict(),
            "encoder_mode": self.encoder.mode,
            "experts": [{"state": e.state_dict(), "hyper": e.hyper, "skill": e.skill} for e in self.experts],
            "disc": self.disc.state_dict(),
            "pbt_log": self.pbt_log,
        }

    def load_state_dict(self, sd: dict) -> None:
        self.norm.mean, self.norm.var, self.norm.count = sd["norm"]
        self.encoder.load_state_dict(sd["encoder"])
        for e, d in zip(self.experts, sd["experts"]):
            e.load_state_dict(d["state"])
            e.hyper, e.skill = dict(d["hyper"]), int(d["skill"])
            e.make_optimizers()
        self.disc.load_state_dict(sd["disc"])
        self.pbt_log = list(sd.get("pbt_log", []))


def _n_assets(env: Any, act_dim: int) -> int:
    arrays = getattr(getattr(env, "unwrapped", env), "arrays", None)
    return int(arrays.num_assets) if arrays is not None else int(act_dim)


class MoEAgent(Agent):
    """Hierarchical mixture of SAC experts with a MaskablePPO router (see ``docs/moe.md``)."""

    name: ClassVar[str] = "moe"
    defaults: ClassVar[dict[str, Any]] = MOE_DEFAULTS
    supports_warm_start: ClassVar[bool] = True  # a 2nd learn() fine-tunes (encoder: retrain_mode)

    def __init__(self, **overrides: Any) -> None:
        unknown = set(overrides) - set(MOE_DEFAULTS) - {"total_timesteps"}
        if unknown:
            raise ConfigError(f"moe: unknown hyper-parameter(s) {sorted(unknown)}; known: {sorted(MOE_DEFAULTS)}")
        overrides.pop("total_timesteps", None)
        super().__init__(**overrides)
        c = self.config
        if c["router"] not in ROUTERS:
            raise ConfigError(f"moe: router must be one of {ROUTERS}, got {c['router']!r}")
        if c["freeze"] not in FREEZE:
            raise ConfigError(f"moe: freeze must be one of {FREEZE}, got {c['freeze']!r}")
        for k in ("router_every", "expert_every", "pbt_every", "freeze_period"):
            if int(c[k]) < 1:
                raise ConfigError(f"moe: {k} must be >= 1, got {c[k]}")
        self.core: MoECore | None = None
        self.router_model = None
        self._fits = 0
        self._it = 0  # iterations (router decisions) of the current learn()
        self._act_states: list[RouterState] = []
        self._act_rng = np.random.default_rng(0)
        self.history: dict[str, list] = {"iteration": [], "router_reward": []}

    # -- training -----------------------------------------------------------------------------
    def learn(self, env: gym.Env, total_timesteps: int, seed: int = 0) -> "MoEAgent":
        """Train for ``total_timesteps`` market steps on a single ``gymnasium.Env``.

        One *iteration* is one router decision (M market steps by the chosen, stochastic expert).
        Every ``expert_every`` iterations the experts, encoder, discriminator and value heads take
        ``utd * (steps since the last update)`` gradient steps; MaskablePPO updates every
        ``router_every`` iterations (its ``n_steps``); PBT runs every ``pbt_every`` iterations.
        A second call (or ``init_from``) continues from the current weights with the encoder in
        ``retrain_mode``.
        """
        if int(total_timesteps) <= 0:
            raise ConfigError(f"moe: total_timesteps must be > 0, got {total_timesteps}")
        if hasattr(env, "single_observation_space"):
            raise AgentError("moe: learn() needs a single gymnasium.Env (make_env), not a VectorEnv")
        obs_space, act_space = env_spaces(env)
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise AgentError(f"moe: needs a flat Box observation space, got {obs_space}")
        prev_spaces = (self.observation_space, self.action_space)
        self._set_spaces(env)
        seed = int(seed)
        cfg = self.config
        with torch_threads(cfg.get("n_threads", 1)):
            seed_everything(seed)
            obs_dim, act_dim = int(obs_space.shape[0]), int(np.prod(act_space.shape))
            warm = self.core is not None
            if warm and prev_spaces[0] is not None and (prev_spaces[0].shape != obs_space.shape
                                                        or prev_spaces[1].shape != act_space.shape):
                raise AgentError("moe: learn() again on an env with other spaces; make a new agent")
            if not warm:
                self.core = MoECore(obs_dim, act_dim, _n_assets(env, act_dim), cfg, seed)
                if cfg.get("init_from"):
                    self._warm_start(Path(cfg["init_from"]), env)
                    warm = True
            core = self.core
            core.rng = np.random.default_rng(seed)
            core.encoder.set_retrain_mode(cfg["retrain_mode"] if warm else "full")
            core.make_optimizers()
            core.replay = None
            core.ensure_replay(min(int(cfg["buffer_size"]), int(total_timesteps) + 1))
            core.new_episode()
            renv = RouterEnv(core, env, cfg, seed, training=True)
            self._train_loop(renv, int(total_timesteps), seed)
        self.trained_timesteps += int(total_timesteps)
        self.seed = seed
        self._fits += 1
        self._act_states = []
        return self

    def _train_loop(self, renv: RouterEnv, total: int, seed: int) -> None:
        cfg = self.config
        M = int(cfg["segment"])
        n_iter = max(1, -(-total // M))
        counters = {"steps": 0, "since": 0, "it": 0}

        def on_env_step(n: int) -> None:
            counters["steps"] += n
            counters["since"] += n

        renv.on_env_step = on_env_step

        def on_iteration(reward: float) -> None:
            counters["it"] += 1
            it = self._it = counters["it"]
            self.history["iteration"].append(it)
            self.history["router_reward"].append(float(reward))
            core = self.core
            if self._experts_frozen(it):
                counters["since"] = 0
            elif it % int(cfg["expert_every"]) == 0 and core.replay.n >= int(cfg["learning_starts"]):
                g = max(1, int(round(float(cfg["utd"]) * counters["since"])))
                core.update_experts(g)
                core.update_values(g)
                counters["since"] = 0
            if it % int(cfg["pbt_every"]) == 0 and core.replay.n >= int(cfg["learning_starts"]):
                core.pbt()

        # DIAYN samples skills uniformly; the first `router_warmup` of the iterations do the same
        # (uniform over the allowed experts) so every skill gets data before the router specialises.
        n_warm = n_iter if cfg["router"] != "ppo" else int(float(cfg["router_warmup"]) * n_iter)
        rng = np.random.default_rng(seed)
        if n_warm > 0:
            renv.reset(seed=seed)
            for i in range(n_warm):
                k = self._rule_choice(renv.state, rng, "random" if cfg["router"] == "ppo" else None)
                _, r, term, trunc, _ = renv.step(k)
                on_iteration(r)
                if (term or trunc) and i < n_warm - 1:
                    renv.reset()
        if cfg["router"] == "ppo" and n_iter - n_warm > 0:
            renv._seed = seed + 1 if n_warm > 0 else seed
            self._learn_ppo(renv, n_iter - n_warm, seed, on_iteration)

    def _router_frozen(self, it: int) -> bool:
        return self.config["freeze"] == "alternate" and (it // int(self.config["freeze_period"])) % 2 == 0

    def _experts_frozen(self, it: int) -> bool:
        return self.config["freeze"] == "alternate" and (it // int(self.config["freeze_period"])) % 2 == 1

    def _learn_ppo(self, renv: RouterEnv, n_iter: int, seed: int, on_iteration) -> None:
        from sb3_contrib import MaskablePPO
        from stable_baselines3.common.callbacks import BaseCallback

        agent = self
        cfg = self.config

        class _Hook(BaseCallback):
            def _on_step(self) -> bool:
                on_iteration(float(self.locals["rewards"][0]))
                return True

        lr = float(cfg["router_lr"])

        def lr_schedule(_progress: float) -> float:  # 0 while the router is frozen (alternate)
            return 0.0 if agent._router_frozen(agent._it) else lr

        n_steps = int(cfg["router_every"])
        if self.router_model is None:
            self.router_model = MaskablePPO(
                "MlpPolicy", renv, n_steps=n_steps, batch_size=n_steps, n_epochs=int(cfg["router_n_epochs"]),
                learning_rate=lr_schedule, gamma=0.9, ent_coef=0.01, seed=seed, device="cpu",
                policy_kwargs={"net_arch": [64, 64]}, verbose=int(cfg["verbose"]),
            )
        else:
            self.router_model.set_env(renv)
            self.router_model.learning_rate = lr_schedule
            self.router_model._setup_lr_schedule()
            self.router_model.set_random_seed(seed)
        quiet_logger(self.router_model, None, int(cfg["verbose"]))
        self.router_model.learn(total_timesteps=n_iter, callback=_Hook(), reset_num_timesteps=True)

    def _rule_choice(self, state: RouterState, rng: np.random.Generator, rule: str | None = None) -> int:
        """Random router: uniform over allowed experts. Sharpe router: best trailing Sharpe
        among the allowed ones (untried experts first, ties by index) -- the ICAIF ensemble rule."""
        masks = state.masks()
        allowed = np.flatnonzero(masks)
        if (rule or self.config["router"]) == "random":
            return int(rng.choice(allowed))
        sh = state.sharpe()
        score = np.where(np.isnan(sh), np.inf, sh)
        return int(allowed[np.argmax(score[allowed])])

    def _route(self, state: RouterState, deterministic: bool) -> int:
        if self.config["router"] == "ppo" and self.router_model is not None:
            obs = self.core.router_obs(state)
            k, _ = self.router_model.predict(obs, action_masks=state.masks(), deterministic=deterministic)
            return int(np.asarray(k).reshape(-1)[0])
        return self._rule_choice(state, self._act_rng)

    def _warm_start(self, path: Path, env: Any) -> None:
        other = MoEAgent.load(path, env)
        self.core.load_state_dict(other.core.state_dict())
        self.router_model = other.router_model

    # -- acting --------------------------------------------------------------------------------
    def reset_state(self) -> None:
        """Forget the rolling windows and router state (the next act() starts an episode)."""
        self._act_states = []

    def act(self, obs: np.ndarray, deterministic: bool = True, info: dict | None = None) -> np.ndarray:
        """Router picks an expert every M calls; the expert acts on the encoded window.

        The agent keeps its own window of the last L observations per batch row. A new episode
        starts (window = L copies of ``obs``) on the first call, after :meth:`reset_state`, when
        the batch size changes, when ``info`` is a reset info (it has ``"episode_end"``), or when
        ``info["t"]`` is not the previous ``t + 1``. With ``info``
        the trailing per-expert returns (for masks and the Sharpe router) come from
        ``info["portfolio_value"]``.
        """
        if self.core is None:
            raise AgentError("moe: call learn(env, ...) or load(path, env) before act()")
        batch, single = self._check_obs(obs)
        infos = [info] if single or info is None else [
            {k: (v[i] if isinstance(v, np.ndarray) and v.ndim >= 1 else v) for k, v in info.items()}
            for i in range(batch.shape[0])]
        if len(infos) == 1 and batch.shape[0] > 1:
            infos = [None] * batch.shape[0]
        if len(self._act_states) != batch.shape[0]:
            self._act_states = [None] * batch.shape[0]
        out = []
        with torch_threads(self.config.get("n_threads", 1)):
            for i, o in enumerate(batch):
                out.append(self._act_one(i, o, infos[i], deterministic))
        a = np.stack(out).astype(np.float32)
        return a[0] if single else a

    def _act_one(self, i: int, obs: np.ndarray, info: dict | None, deterministic: bool) -> np.ndarray:
        st = self._act_states[i]
        t = None if info is None or "t" not in info else int(np.asarray(info["t"]))
        reset_info = info is not None and "episode_end" in info  # meta's reset() info; step() info lacks it
        new = st is None or reset_info or (t is not None and st.last_t is not None and t != st.last_t + 1)
        if new:
            st = RouterState(self.core.K, self.core.lookback, self.config)
            st.start_episode(obs)
            if info is not None and info.get("bars_per_year"):
                st.bars_per_year = float(info["bars_per_year"])
            self._act_states[i] = st
        else:
            st.push(obs)
        if info is not None and "portfolio_value" in info:
            v = float(np.asarray(info["portfolio_value"]))
            if st.last_value is not None and st.current >= 0 and st.last_value > 0 and v > 0:
                st.record_return(st.current, np.log(v / st.last_value))
            st.last_value = v
        st.last_t = t
        if st.steps_left <= 0:
            st.choose(self._route(st, deterministic))
        st.steps_left -= 1
        st.usage[st.current] += 1
        a, _, _, _ = self.core.expert_step(st.window, st.current, deterministic)
        return a

    # -- diagnostics ---------------------------------------------------------------------------
    def window_diagnostics(self, env: gym.Env, seed: int, start: int) -> dict[str, float]:
        """The walk-forward loop's hook: ``diversity`` and ``router_entropy`` of
        :meth:`diversity_report` on the trading window (table columns of those names)."""
        rep = self.diversity_report(env, seed=seed, start=start)
        return {k: rep[k] for k in ("diversity", "router_entropy") if k in rep}

    def diversity_report(self, env: gym.Env, seed: int = 0, start: int | None = None) -> dict:
        """Measured diversity on ``env`` (an evaluation window; episodes start at bar ``start``
        when given, via ``reset(options={"start": start})``).

        * ``diversity``: mean pairwise half-L1 distance between the experts' portfolio weights
          (assets + cash), each expert run alone and deterministically through one episode;
        * ``router_entropy`` (nats) and ``router_entropy_norm`` (/ log K) of the router's expert
          usage when the whole agent runs the episode; ``router_usage`` the step counts.
        """
        if self.core is None:
            raise AgentError("moe: call learn(env, ...) before diversity_report()")
        n_assets = self.core.n_assets
        opts = None if start is None else {"start": int(start)}
        paths = []
        with torch_threads(self.config.get("n_threads", 1)):
            for k in range(self.core.K):
                obs, info = env.reset(seed=seed, options=opts)
                st = RouterState(self.core.K, self.core.lookback, self.config)
                st.start_episode(obs)
                w, done = [], False
                while not done:
                    a, _, _, _ = self.core.expert_step(st.window, k, True)
                    obs, _, term, trunc, info = env.step(a)
                    st.push(obs)
                    w.append(skill_features(info, n_assets))
                    done = bool(term or trunc)
                paths.append(np.stack(w))
        score, pair = half_l1_diversity(np.stack(paths))
        saved = self._act_states
        self._act_states = []
        obs, info = env.reset(seed=seed, options=opts)
        done = False
        while not done:
            a = self.act(obs, deterministic=True, info=info)
            obs, _, term, trunc, info = env.step(a)
            done = bool(term or trunc)
        usage = self._act_states[0].usage.copy()
        self._act_states = saved
        H = usage_entropy(usage)
        K = self.core.K
        return {"diversity": score, "pairwise": pair.tolist(), "router_usage": usage.tolist(),
                "router_entropy": H, "router_entropy_norm": H / np.log(K) if K > 1 else 0.0,
                "n_steps": int(paths[0].shape[0]), "pbt_events": len(self.core.pbt_log)}

    # -- persistence ---------------------------------------------------------------------------
    def _save(self, path: Path) -> None:
        buf = io.BytesIO()
        torch.save(self.core.state_dict(), buf)
        members = {"moe_core.pt": buf.getvalue()}
        if self.router_model is not None:
            rb = io.BytesIO()
            self.router_model.save(rb)
            members["router.zip"] = rb.getvalue()
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in members.items():
                zf.writestr(name, data)

    def _load(self, path: Path, manifest: dict, env: Any) -> None:
        try:
            with zipfile.ZipFile(path) as zf:
                sd = torch.load(io.BytesIO(zf.read("moe_core.pt")), weights_only=False)
                router = zf.read("router.zip") if "router.zip" in zf.namelist() else None
        except (zipfile.BadZipFile, KeyError, RuntimeError) as exc:
            raise AgentLoadError(f"{path}: not a moe agent file ({exc})") from exc
        obs_dim, act_dim, n_assets = sd["dims"]
        self.core = MoECore(obs_dim, act_dim, n_assets, self.config, int(manifest.get("seed") or 0))
        self.core.load_state_dict(sd)
        if router is not None:
            from sb3_contrib import MaskablePPO

            self.router_model = MaskablePPO.load(io.BytesIO(router), device="cpu")
        if env is not None:
            self.observation_space, self.action_space = env_spaces(env)
        else:
            self.observation_space = _box(manifest["observation_space"])
            self.action_space = _box(manifest["action_space"])
        self._fits = 1


def _box(sig: dict) -> gym.spaces.Box:
    shape = tuple(sig["shape"])
    if "low" in sig:
        lo = np.array([float(x) for x in sig["low"]], sig["dtype"]).reshape(shape)
        hi = np.array([float(x) for x in sig["high"]], sig["dtype"]).reshape(shape)
        return gym.spaces.Box(lo, hi, dtype=np.dtype(sig["dtype"]))
    return gym.spaces.Box(-np.inf, np.inf, shape, dtype=np.dtype(sig["dtype"]))


def _ablation(name: str, doc: str, **preset: Any) -> type[MoEAgent]:
    """An MoE variant with ``preset`` overriding the defaults (for benchmark configs; its name is an
    entry of :data:`agents.base.BUILTIN_AGENTS`)."""
    cls = type(f"MoE_{name}", (MoEAgent,), {"name": name, "defaults": {**MOE_DEFAULTS, **preset},
                                             "__doc__": doc, "__module__": __name__})
    return cls


#: the ablations of docs/moe.md as agent names (the same as ``make_agent("moe", **preset)``)
ABLATIONS: dict[str, type[MoEAgent]] = {
    "moe_no_diversity": _ablation("moe_no_diversity", "MoE without the DIAYN reward (beta = 0).", beta=0.0),
    "moe_single": _ablation("moe_single", "MoE with one expert (K = 1): plain SAC on the encoder.", n_experts=1),
    "moe_random_router": _ablation("moe_random_router", "MoE with a uniform random router.", router="random"),
    "moe_sharpe_router": _ablation("moe_sharpe_router", "MoE routed by best trailing Sharpe (ICAIF rule).",
                                   router="sharpe"),
}
#: the entry points of :data:`agents.base.BUILTIN_AGENTS` for the ablations
MoENoDiversity = ABLATIONS["moe_no_diversity"]
MoESingle = ABLATIONS["moe_single"]
MoERandomRouter = ABLATIONS["moe_random_router"]
MoESharpeRouter = ABLATIONS["moe_sharpe_router"]

"""The agent interface, the registry and the shared helpers (seeding, space checks, save format).

Every agent -- a Stable-Baselines3 backend, an ElegantRL backend or a rule-based baseline -- is an
:class:`Agent`::

    agent = make_agent("ppo", learning_rate=1e-4)        # FinRL defaults, overridden from a config dict
    agent.learn(env, total_timesteps=50_000, seed=0)      # env: gymnasium.Env or gymnasium.vector.VectorEnv
    action = agent.act(obs, deterministic=True)           # obs (obs_dim,) -> action (act_dim,)
    agent.save("ppo.zip")                                 # one zip file
    same = load_agent("ppo.zip", env)                     # refuses a file made for other spaces

Saved agents are zip files holding a ``finmeta.json`` member (agent name, class, hyper-parameters,
observation/action space signatures) next to the backend's own members, so :func:`load_agent`
can dispatch on the name and check the spaces before anything is built.
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
import random
import zipfile
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import gymnasium as gym
import numpy as np

from finmeta.errors import ConfigError, FinMetaError
from finmeta.jsonutil import json_default_repr

__all__ = [
    "Agent",
    "AgentError",
    "AgentLoadError",
    "AGENT_REGISTRY",
    "register_agent",
    "make_agent",
    "load_agent",
    "agent_names",
    "agent_class",
    "BUILTIN_AGENTS",
    "seed_everything",
    "torch_threads",
    "space_signature",
    "env_spaces",
    "check_spaces",
    "read_manifest",
]

MANIFEST = "finmeta.json"
FORMAT_VERSION = 1


class AgentError(FinMetaError):
    """An agent was used wrongly (acting before training, bad observation shape, bad env)."""


class AgentLoadError(AgentError):
    """A saved agent cannot be loaded: missing/corrupt file, or spaces that do not match the env."""


# ----------------------------------------------------------------------------------------- seeding


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():  # pragma: no cover - CPU machines
        torch.cuda.manual_seed_all(seed)


def quiet_logger(model: Any, tensorboard_log: str | None = None, verbose: int = 0) -> None:
    """Give an SB3 model a logger that writes nothing, unless TensorBoard or verbose output is on.

    Without it every ``learn()`` with ``verbose=0`` calls SB3's ``configure(None, [""])``, which
    creates an empty ``SB3-<timestamp>`` folder in the temp dir: thousands of them per benchmark.
    """
    if tensorboard_log or int(verbose) > 0:
        return
    from stable_baselines3.common.logger import Logger

    model.set_logger(Logger(folder=None, output_formats=[]))


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Fix torch's intra-op thread count inside the block (None: leave it), then restore it.

    A fixed thread count makes float reductions run in the same order, so two runs with the same
    seed on one machine give bit-identical weights.
    """
    import torch

    if n is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ------------------------------------------------------------------------------------------ spaces


def env_spaces(env: Any) -> tuple[gym.Space, gym.Space]:
    """The *single-env* observation and action spaces of a gymnasium Env or VectorEnv."""
    if isinstance(env, gym.vector.VectorEnv) or hasattr(env, "single_observation_space"):
        return env.single_observation_space, env.single_action_space
    if hasattr(env, "observation_space") and hasattr(env, "action_space"):
        return env.observation_space, env.action_space
    raise AgentError(f"{type(env).__name__} is not a gymnasium Env or VectorEnv (no observation/action space)")


def num_envs_of(env: Any) -> int:
    """E for a vector env, 1 for a single env."""
    return int(getattr(env, "num_envs", 1)) if hasattr(env, "single_observation_space") else 1


def space_signature(space: gym.Space) -> dict:
    """A JSON-able description of a space used to check that a saved agent fits an env.

    Box: kind, shape, dtype and -- when they are finite and small (<= 4096 entries) -- the bounds.
    """
    if isinstance(space, gym.spaces.Box):
        sig: dict = {"kind": "Box", "shape": list(space.shape), "dtype": str(space.dtype)}
        if space.low.size <= 4096:
            lo, hi = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
            # JSON has no inf: encode bounds as strings via repr of floats
            sig["low"] = [repr(float(x)) for x in lo.ravel()]
            sig["high"] = [repr(float(x)) for x in hi.ravel()]
        return sig
    if isinstance(space, gym.spaces.Discrete):
        return {"kind": "Discrete", "n": int(space.n)}
    return {"kind": type(space).__name__, "repr": repr(space)}


def _describe(sig: dict) -> str:
    if sig.get("kind") == "Box":
        return f"Box(shape={tuple(sig['shape'])}, dtype={sig['dtype']})"
    return sig.get("repr") or f"{sig.get('kind')}({sig.get('n')})"


def obs_scaling_of(env: Any) -> dict | None:
    """The env's observation scaling (``metadata["obs_scaling"]`` of FinMeta envs), else None."""
    meta = getattr(env, "metadata", None)
    return dict(meta["obs_scaling"]) if isinstance(meta, dict) and isinstance(meta.get("obs_scaling"), dict) else None


def check_spaces(path: str | os.PathLike, saved: dict, env: Any) -> None:
    """Raise :class:`AgentLoadError` when the spaces recorded in ``saved`` differ from ``env``'s, or
    when the agent was trained on scaled observations and the env gives raw ones (or the reverse).
    Fitted statistics may differ (a warm start continues on the next window's training range)."""
    want, have = saved.get("obs_scaling"), obs_scaling_of(env)
    if want and have and want.get("normalize_obs") != have.get("normalize_obs"):
        raise AgentLoadError(
            f"{path}: saved agent was trained on {'scaled' if want.get('normalize_obs') else 'raw'} observations "
            f"but the env gives {'scaled' if have.get('normalize_obs') else 'raw'} ones (normalize_obs="
            f"{have.get('normalize_obs')}); build the env with normalize_obs={want.get('normalize_obs')}")
    obs_space, act_space = env_spaces(env)
    for what, space in (("observation", obs_space), ("action", act_space)):
        want = saved.get(f"{what}_space")
        have = space_signature(space)
        if want is None:
            raise AgentLoadError(f"{path}: the file records no {what} space; it is not a FinMeta agent file")
        # bounds only compared when both sides recorded them
        keys = [k for k in ("kind", "shape", "dtype", "n", "repr", "low", "high") if k in want and k in have]
        if any(want[k] != have[k] for k in keys) or want.get("kind") != have.get("kind"):
            diff = [k for k in keys if want[k] != have[k]]
            raise AgentLoadError(
                f"{path}: saved agent was trained for {what} space {_describe(want)} but the env has "
                f"{_describe(have)} (differs in: {', '.join(diff) or 'kind'}); load it with an env built "
                f"from the same assets, features and family"
            )


# ------------------------------------------------------------------------------------------- files


def write_manifest(path: str | os.PathLike, manifest: dict, members: dict[str, bytes] | None = None,
                   mode: str = "w") -> None:
    """Write (``mode="w"``) or add to (``mode="a"``) a zip with ``finmeta.json`` and ``members``."""
    with zipfile.ZipFile(path, mode, compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=json_default_repr))
        for name, data in (members or {}).items():
            zf.writestr(name, data)



def read_manifest(path: str | os.PathLike) -> dict:
    """The ``finmeta.json`` of a saved agent; :class:`AgentLoadError` if the file is not one."""
    p = Path(path)
    if not p.is_file():
        raise AgentLoadError(f"{p}: no such agent file")
    try:
        with zipfile.ZipFile(p) as zf:
            return json.loads(zf.read(MANIFEST))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as exc:
        raise AgentLoadError(f"{p}: not a FinMeta agent file ({type(exc).__name__}: {exc})") from exc


# ------------------------------------------------------------------------------------------- agent


class Agent(abc.ABC):
    """One trading agent: trained on an env with a step budget and a seed, then acting on observations.

    Subclasses set :attr:`name` and implement :meth:`learn`, :meth:`act`, :meth:`_save` and
    :meth:`_load`. ``config`` is the merged hyper-parameter dict (class defaults updated by the
    overrides given to :func:`make_agent`).

    Shapes: a single observation is ``(obs_dim,)`` and gives an action ``(act_dim,)``; a batch
    ``(B, obs_dim)`` (e.g. from a VectorEnv) gives ``(B, act_dim)``.
    """

    #: registry name (``"ppo"``, ``"buy_and_hold"``, ...)
    name: ClassVar[str] = "agent"
    #: default hyper-parameters (copied, then updated by the overrides)
    defaults: ClassVar[dict[str, Any]] = {}
    #: True when a second ``learn()`` continues from the current weights (the walk-forward loop's
    #: ``warm_start``); False when every ``learn()`` starts a fresh model (the SB3 agents)
    supports_warm_start: ClassVar[bool] = False
    #: True: a learned agent, trained afresh per walk-forward window on its training range
    #: (``learn(env, total_timesteps, seed)``) and validated; False: a rule
    #: (:class:`agents.baselines.Baseline`), bound to the trading window's env with ``learn(env, 0)``
    learned: ClassVar[bool] = True
    #: rules only: the walk-forward loop trades the rule under the window's turbulence stop, like the
    #: learned agents (which always trade under it); the ``*_gated`` baselines set it
    trades_under_stop: ClassVar[bool] = False

    @classmethod
    def config_keys(cls) -> set[str] | None:
        """The option names this agent accepts (what a config's ``agents.<name>`` may set besides
        the loop's keys), or ``None`` when the agent checks its options itself. Default: the keys of
        :attr:`defaults`."""
        return set(cls.defaults) if cls.defaults else None

    def __init__(self, **overrides: Any) -> None:
        self.config: dict[str, Any] = {**self.defaults, **overrides}
        self.observation_space: gym.Space | None = None
        self.action_space: gym.Space | None = None
        self.trained_timesteps: int = 0
        self.seed: int | None = None

    # -- the interface ---------------------------------------------------------------------------

    @abc.abstractmethod
    def learn(self, env: gym.Env | gym.vector.VectorEnv, total_timesteps: int, seed: int = 0) -> "Agent":
        """Train on ``env`` for ``total_timesteps`` environment steps (summed over sub-envs).

        Same seed, same env and same machine give identical weights (hence identical actions).
        Returns ``self``.
        """

    def train(self, env: gym.Env | gym.vector.VectorEnv, total_timesteps: int, seed: int = 0) -> "Agent":
        """Alias of :meth:`learn` (the architecture document's spelling)."""
        return self.learn(env, total_timesteps, seed)

    @abc.abstractmethod
    def act(self, obs: np.ndarray, deterministic: bool = True, info: dict | None = None) -> np.ndarray:
        """The action for ``obs`` ``(obs_dim,)`` -> ``(act_dim,)`` or ``(B, obs_dim)`` -> ``(B, act_dim)``.

        ``info`` is the env's last info dict; rule-based baselines need ``info["t"]`` (the bar
        index), learned agents ignore it.
        """

    def save(self, path: str | os.PathLike) -> Path:
        """Write the agent to one zip file at ``path`` and return the path."""
        if self.observation_space is None or self.action_space is None:
            raise AgentError(f"{self.name}: nothing to save -- call learn(env, ...) first")
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        self._save(p)
        write_manifest(p, self._manifest(), mode="a" if p.exists() else "w")
        return p

    @classmethod
    def load(cls, path: str | os.PathLike, env: gym.Env | gym.vector.VectorEnv | None = None,
             **overrides: Any) -> "Agent":
        """Load an agent saved by :meth:`save`.

        With ``env`` given, the saved observation/action spaces must match ``env``'s, else
        :class:`AgentLoadError`. ``overrides`` update the stored config (e.g. ``device``).
        """
        manifest = read_manifest(path)
        if env is not None:
            check_spaces(path, manifest, env)
        want = cls.name
        got = manifest.get("name")
        if cls is not Agent and got != want and manifest.get("class") != cls.__name__:
            raise AgentLoadError(f"{path}: holds a '{got}' agent, not '{want}'; use agents.load_agent()")
        agent = cls(**{**manifest.get("config", {}), **overrides})
        agent.trained_timesteps = int(manifest.get("trained_timesteps", 0))
        agent.seed = manifest.get("seed")
        agent._load(Path(path), manifest, env)
        if manifest.get("obs_scaling") is not None:
            agent.obs_scaling = manifest["obs_scaling"]
        return agent

    # -- hooks of the walk-forward loop (benchmarks/loop.py) ------------------------------------------

    def carry_over(self, state: dict | None) -> Any:
        """The object that trades a window entered with the portfolio ``state`` (``{"cash",
        "holdings"}`` the previous window ended with; ``None`` in the first window). Default: the
        agent itself. Buy-and-hold returns a holder of the carried portfolio instead of buying
        equal weights again (:meth:`agents.baselines.BuyAndHold.carry_over`)."""
        return self

    def window_diagnostics(self, env: Any, seed: int, start: int) -> dict[str, float]:
        """Extra figures measured on a trading window's ``env`` (episodes from bar ``start``),
        recorded in the window's checkpoint and averaged over the windows into table columns of the
        same names. Default: none. The moe agent reports ``diversity`` and ``router_entropy``."""
        return {}

    # -- for subclasses --------------------------------------------------------------------------

    @abc.abstractmethod
    def _save(self, path: Path) -> None:
        """Write the backend members into the (new) zip file at ``path``."""

    @abc.abstractmethod
    def _load(self, path: Path, manifest: dict, env: Any) -> None:
        """Restore the backend state from ``path``; sets the spaces."""

    def _manifest(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "name": self.name,
            "class": type(self).__name__,
            "module": type(self).__module__,
            "config": self._config_for_manifest(),
            "observation_space": space_signature(self.observation_space),
            "action_space": space_signature(self.action_space),
            "trained_timesteps": int(self.trained_timesteps),
            "seed": self.seed,
            "obs_scaling": getattr(self, "obs_scaling", None),
        }

    def _config_for_manifest(self) -> dict:
        return {k: v for k, v in self.config.items() if _jsonable(v)}

    def _set_spaces(self, env: Any) -> None:
        self.observation_space, self.action_space = env_spaces(env)
        self.obs_scaling = obs_scaling_of(env)
        if not isinstance(self.action_space, gym.spaces.Box):
            raise AgentError(f"{self.name}: needs a continuous Box action space, got {self.action_space}")

    def _check_obs(self, obs: np.ndarray) -> tuple[np.ndarray, bool]:
        """``obs`` as float32 ``(B, obs_dim)`` and whether it was a single observation."""
        if self.observation_space is None:
            raise AgentError(f"{self.name}: call learn(env, ...) or load(path, env) before act()")
        if hasattr(obs, "detach"):  # a torch tensor (torch-backend vector env), maybe on a GPU
            obs = obs.detach().cpu().numpy()
        a = np.asarray(obs, dtype=np.float32)
        shape = tuple(self.observation_space.shape)
        if a.shape == shape:
            return a[None], True
        if a.ndim == len(shape) + 1 and a.shape[1:] == shape:
            return a, False
        raise AgentError(f"{self.name}: observation has shape {a.shape}, expected {shape} or (B, *{shape})")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, config={self.config!r})"


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False


# ---------------------------------------------------------------------------------------- registry

#: The built-in agents as Gymnasium-style entry points ``name -> "module:attribute"``. Nothing is
#: imported until a name is used (:func:`make_agent`, :func:`agent_class`, :func:`load_agent`), so
#: ``import agents`` and :func:`agent_names` stay light, and this module imports no implementation.
#: A new built-in agent is one line here; a third-party agent calls :func:`register_agent`.
BUILTIN_AGENTS: dict[str, str] = {
    # Stable-Baselines3 (agents/sb3.py), FinRL's defaults
    "a2c": "agents.sb3:A2CAgent",
    "ppo": "agents.sb3:PPOAgent",
    "ddpg": "agents.sb3:DDPGAgent",
    "td3": "agents.sb3:TD3Agent",
    "sac": "agents.sb3:SACAgent",
    # ElegantRL in a subprocess (agents/elegantrl_backend.py): make_agent(name, backend="elegantrl")
    "elegantrl_a2c": "agents.elegantrl_backend:ElegantRLA2CAgent",
    "elegantrl_ppo": "agents.elegantrl_backend:ElegantRLPPOAgent",
    "elegantrl_ddpg": "agents.elegantrl_backend:ElegantRLDDPGAgent",
    "elegantrl_td3": "agents.elegantrl_backend:ElegantRLTD3Agent",
    "elegantrl_sac": "agents.elegantrl_backend:ElegantRLSACAgent",
    # torch-native vectorized learners (agents/torch_rl/): make_agent(name, backend="torch")
    "torch_a2c": "agents.torch_rl.a2c:TorchA2CAgent",
    "torch_ppo": "agents.torch_rl.ppo:TorchPPOAgent",
    "torch_ddpg": "agents.torch_rl.ddpg:TorchDDPGAgent",
    "torch_td3": "agents.torch_rl.td3:TorchTD3Agent",
    "torch_sac": "agents.torch_rl.sac:TorchSACAgent",
    # rule baselines (agents/baselines.py)
    "buy_and_hold": "agents.baselines:BuyAndHold",
    "equal_weight": "agents.baselines:EqualWeight",
    "equal_weight_gated": "agents.baselines:EqualWeightGated",
    "min_variance": "agents.baselines:MinVariance",
    "index": "agents.baselines:IndexBaseline",
    # the mixture-of-experts agent and its ablations (agents/moe/, docs/moe.md)
    "moe": "agents.moe.agent:MoEAgent",
    "moe_no_diversity": "agents.moe.agent:MoENoDiversity",
    "moe_single": "agents.moe.agent:MoESingle",
    "moe_random_router": "agents.moe.agent:MoERandomRouter",
    "moe_sharpe_router": "agents.moe.agent:MoESharpeRouter",
}

#: name -> factory returning an :class:`Agent` (a class or any callable taking ``**overrides``), or
#: an entry point ``"module:attribute"`` not imported yet (:func:`agent_class` resolves it in place)
AGENT_REGISTRY: dict[str, Callable[..., Agent] | str] = dict(BUILTIN_AGENTS)
#: names a config may use that are no agent class of the registry, so that their absence is
#: reported as such rather than as a typo: ``ensemble`` is a loop-level selection among trained
#: members (:mod:`benchmarks.loop`); ``moe`` is kept for installs whose registry lacks it
RESERVED_NAMES: tuple[str, ...] = ("ensemble", "moe")


def register_agent(name: str, factory: Callable[..., Agent] | str | None = None, *, overwrite: bool = False):
    """Register ``factory`` under ``name``; usable as a decorator (``@register_agent("x")``).

    ``factory`` is an :class:`Agent` subclass, any callable taking ``**overrides``, or an entry
    point ``"package.module:Class"`` imported at first use. A registered name (the built-in table
    included) is only replaced with ``overwrite=True``.
    """
    def _do(f: Callable[..., Agent] | str) -> Callable[..., Agent] | str:
        key = name.lower()
        if isinstance(f, str) and ":" not in f:
            raise ConfigError(f"agent '{key}': an entry point is 'module:attribute', got {f!r}")
        same = key in AGENT_REGISTRY and (AGENT_REGISTRY[key] is f or (isinstance(f, str) and AGENT_REGISTRY[key] == f))
        if key in AGENT_REGISTRY and not overwrite and not same:
            raise ConfigError(f"agent name '{key}' is already registered ({AGENT_REGISTRY[key]!r})")
        AGENT_REGISTRY[key] = f
        return f

    return _do(factory) if factory is not None else _do


def agent_names() -> list[str]:
    """The registered names, sorted (nothing is imported)."""
    return sorted(AGENT_REGISTRY)


def agent_class(name: str) -> Callable[..., Agent]:
    """The factory registered under ``name`` (normally an :class:`Agent` subclass), importing its
    entry point on first use; :class:`ConfigError` for an unknown name or a module that fails to
    import. ``name`` is a registry key (see :func:`registry_key` for the ``backend`` spelling)."""
    key = str(name).lower()
    if key not in AGENT_REGISTRY:
        registry_key(key)  # raises the "unknown agent" error
    entry = AGENT_REGISTRY[key]
    if not isinstance(entry, str):
        return entry
    module, _, attr = entry.partition(":")
    import importlib

    try:
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # a broken module must not take the other agents down
        _OPTIONAL_ERRORS[module] = f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"agent '{key}': its entry point {entry} failed to import ({type(exc).__name__}: "
                          f"{exc})") from exc
    if AGENT_REGISTRY.get(key) == entry:  # not replaced meanwhile (e.g. popped by a test)
        AGENT_REGISTRY[key] = obj
    return obj


def make_agent(name: str, **overrides: Any) -> Agent:
    """Build the agent registered under ``name`` with its defaults updated by ``overrides``.

    ``make_agent("ppo", backend="elegantrl")`` builds the ElegantRL variant of a learned agent
    (same as the name ``"elegantrl_ppo"``); ``backend="torch"`` the torch-native vectorized one
    (``"torch_ppo"``, :mod:`agents.torch_rl`).
    """
    key = registry_key(name, overrides.pop("backend", None))
    return agent_class(key)(**overrides)


def registry_key(name: str, backend: str | None = None) -> str:
    """The registry name that ``make_agent(name, backend=backend)`` builds; :class:`ConfigError`
    for an unknown agent or backend."""
    key = str(name).lower()
    if backend is not None and backend not in ("sb3", "stable_baselines3"):
        if backend not in ("elegantrl", "torch"):
            raise ConfigError(f"agent '{name}': backend must be 'sb3', 'elegantrl' or 'torch', got {backend!r}")
        key = f"{backend}_{key}"
        if key not in AGENT_REGISTRY:
            have = sorted(k.split("_", 1)[1] for k in AGENT_REGISTRY if k.startswith(f"{backend}_"))
            raise ConfigError(f"agent '{name}': the {backend} backend has no such agent; it has: {', '.join(have)}")
    if key not in AGENT_REGISTRY:
        broken = "".join(f"; {m} failed to import ({e})" for m, e in _OPTIONAL_ERRORS.items())
        if key in RESERVED_NAMES:
            raise ConfigError(f"agent '{key}' is reserved but not implemented yet{broken}")
        raise ConfigError(f"unknown agent '{name}'; known: {', '.join(sorted(AGENT_REGISTRY))}{broken}")
    return key


def load_agent(path: str | os.PathLike, env: Any = None, **overrides: Any) -> Agent:
    """Load any saved agent, dispatching on the name stored in its ``finmeta.json``."""
    manifest = read_manifest(path)
    name = manifest.get("name")
    if str(name) not in AGENT_REGISTRY:
        raise AgentLoadError(f"{path}: agent '{name}' is not registered here (known: {agent_names()})")
    factory = agent_class(str(name))
    cls = factory if isinstance(factory, type) else type(factory())
    return cls.load(path, env, **overrides)


_OPTIONAL_ERRORS: dict[str, str] = {}  # module -> why its import failed (named in "unknown agent" errors)


def _import_builtin() -> None:
    """Resolve every entry point still unresolved (imports every implementation module; a module
    that fails is recorded, not raised). Only for tools that want every class at once: the
    registry itself imports lazily, name by name."""
    for key, entry in list(AGENT_REGISTRY.items()):
        if isinstance(entry, str):
            try:
                agent_class(key)
            except ConfigError:
                pass

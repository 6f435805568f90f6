"""The train-validate-test-trade loop, walked forward.

For every (agent, seed) the loop walks the windows of :mod:`benchmarks.windows` in order:

1. **train** a fresh agent on the training range (RL agents only), seeded by
   ``window_seed(seed, window, agent)``;
2. **validate** it on the validation range from a fresh portfolio and record the Sharpe ratio
   (the ``ensemble`` agent trains every member and keeps the one with the best validation Sharpe,
   as in the ICAIF 2020 paper);
3. **trade** the next range with it, starting from the portfolio the previous window ended with.

Each stage builds its env from ``arrays.slice(train_lo, hi)`` with episodes starting at the
stage's first bar: the bars before it are the past (observation look-back, baselines' trailing
estimates) and no bar at or after the stage's end ``hi`` exists for the env, whatever the agent
does. Window ``k > 0`` trades from bar ``lo - 1``, the previous window's last bar (already
observed; the portfolio is carried over at that bar's close), so that every fill happens inside
the window and the chained account-value path has no gap. After each window the chain's state is checkpointed atomically; a rerun with the same
run directory resumes after the last finished window and ends with the same table, because each
window's randomness depends only on (seed, window, agent).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from data_processors.arrays import MarketArrays
from finmeta.errors import ConfigError, FinMetaError
from finmeta.fs import file_lock, write_atomic

from . import rundir
from .metrics import RunDirError
from .spec import (  # noqa: F401 - the loop's keys are declared by the spec; re-exported for existing imports
    ENSEMBLE_MEMBERS_DEFAULT,
    LOOP_KEYS,
    RL_AGENTS,
    TURBULENCE_RULE_KEYS,
    TURBULENCE_RULES,
    RunSpec,
    TurbulenceRule,
    as_spec,
    fingerprint_body,
)
from .windows import Window, make_windows, window_seed

# RL_AGENTS: the five algorithm names of the SB3 / ElegantRL / torch backends; whether an agent is
# trained per window is its class's ``learned`` (see :func:`learns`)


@dataclass
class ChainResult:
    """One (agent, seed) walk: the chained trading path and per-window records."""

    agent: str
    seed: int
    times: np.ndarray  # (L,) datetime64 of the account values
    values: np.ndarray  # (L,) account value at each bar's close
    actions: np.ndarray  # (L, N) action taken after observing each bar (NaN on the last bar)
    costs: np.ndarray  # (L,) costs paid at each bar
    turnover: np.ndarray  # (L,) traded value / portfolio value at each bar
    windows: list[dict]  # per window: index, ranges, chosen model, validation Sharpe


# --------------------------------------------------------------------------------------------
# adapters to the env and agent layers
# --------------------------------------------------------------------------------------------
# LOOP_KEYS (spec.py): agent-config keys that steer the training loop, not the agent, with their
# defaults; the typed split is RunSpec.agent_options (spec.AgentOptions / spec.LoopOptions).


def build_env(arrays: MarketArrays, env_cfg: dict, **overrides):
    """A single gymnasium env over ``arrays`` (already sliced to the stage's range)."""
    from meta import make_env

    cfg = dict(env_cfg)
    family = cfg.pop("family", "stock_trading")
    cfg.update(overrides)
    return make_env(arrays, family=family, **cfg)


def rollout(agent, env, *, seed: int, start: int = 0, start_state: dict | None = None,
            deterministic: bool = True) -> dict:
    """Run ``agent`` through one episode of ``env`` from bar ``start`` to its end.

    ``deterministic=False`` samples the policy's actions; the global generators (torch, NumPy,
    Python) are seeded with ``seed`` first, so a sampled rollout is reproducible too.

    Returns arrays over the episode's bars (L bars): ``values (L,)``, ``actions (L, N)`` (row i =
    action after observing bar i; NaN on the last), ``costs (L,)``, ``turnover (L,)``, and
    ``state`` (cash/holdings at the end, for carrying over).
    """
    if not deterministic:
        from agents.base import seed_everything

        seed_everything(int(seed))
    options: dict[str, Any] = {"start": int(start)}
    if start_state is not None:
        options.update(cash=start_state["cash"], holdings=start_state["holdings"])
    obs, info = env.reset(seed=int(seed), options=options)
    values = [float(info["portfolio_value"])]
    costs = [0.0]
    turnover = [0.0]
    actions: list[np.ndarray] = []
    done = False
    while not done:
        action = agent.act(obs, deterministic=deterministic, info=info)
        actions.append(np.asarray(action, dtype=np.float64).reshape(-1))
        obs, _reward, terminated, truncated, info = env.step(action)
        values.append(float(info["portfolio_value"]))
        costs.append(float(info.get("costs", 0.0)))
        turnover.append(float(info.get("turnover", 0.0)))
        done = bool(terminated or truncated)
    n = actions[0].shape[0] if actions else 0
    actions.append(np.full(n, np.nan))
    state = {"cash": float(info["cash"]), "holdings": np.asarray(info["holdings"], dtype=np.float64).tolist()}
    return {
        "values": np.asarray(values),
        "actions": np.vstack(actions) if n else np.zeros((len(values), 0)),
        "costs": np.asarray(costs),
        "turnover": np.asarray(turnover),
        "state": state,
    }


def _progress_callback(report: Callable[[str, int, int], None], label: str, total: int):
    """An SB3 callback that reports training steps (it draws no random numbers)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _Progress(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % 256 < self.training_env.num_envs or self.num_timesteps >= total:
                report(label, int(self.num_timesteps), int(total))
            return True

    return _Progress()


# TURBULENCE_RULE_KEYS / TURBULENCE_RULES (spec.py): the env-section keys that choose the
# turbulence stop's threshold per window (resolved here, never passed to the env), typed as
# spec.TurbulenceRule; see turbulence_threshold.


def turbulence_threshold(rule: TurbulenceRule | Mapping[str, Any], arrays: MarketArrays, train: tuple[int, int],
                         validation_start: int | None = None) -> tuple[float | None, dict]:
    """A window's turbulence-stop threshold under the config's rule, and how it was chosen.

    ``rule`` is the spec's :class:`~benchmarks.spec.TurbulenceRule` (or an env section, whose rule
    is read by :meth:`TurbulenceRule.from_env`). Rules (``env.turbulence_rule``):

    * ``quantile`` (default; used when ``turbulence_quantile: q`` is set): the q-quantile of the
      turbulence over the window's *training* range ``train`` only (``q = 0.99`` in our
      ``icaif2020_dow30`` config).
    * ``icaif2020_switch``: the rule of the ICAIF 2020 code (``model/models.py`` lines 135-165 of
      commit d8d7723). ``Q`` = the ``turbulence_quantile`` (paper: 0.90) of the turbulence over the
      fixed in-sample range ``turbulence_insample: [start, end)`` (paper: 2009-01-01 ..
      2015-10-01); ``M`` = its maximum. If the mean turbulence of the ``turbulence_lookback``
      bars (paper: 63) ending at the window's validation start (inclusive; the trade start when
      there is no validation) exceeds ``Q``, the threshold is ``Q``, else ``M``.

    Without ``turbulence_quantile`` the threshold is the env's fixed ``turbulence_threshold`` (or none).

    Returns:
        ``(threshold or None, detail)``; ``detail`` has ``rule`` and, for the switch rule,
        ``insample_q``, ``insample_max``, ``lookback_mean`` and ``choice`` (``"quantile"``/``"max"``).
    """
    if not isinstance(rule, TurbulenceRule):
        rule = TurbulenceRule.from_env(rule)
    q = rule.quantile
    if q is None or arrays.turbulence is None:
        if rule.rule != "quantile" and arrays.turbulence is None:
            raise ConfigError("env.turbulence_rule: icaif2020_switch needs the turbulence feature "
                              "(features.turbulence: true)")
        return rule.threshold, {"rule": "fixed" if rule.threshold is not None else "none"}
    turb = np.asarray(arrays.turbulence, dtype=np.float64)
    if rule.rule == "quantile":
        lo, hi = train
        return float(np.quantile(turb[lo:hi], q)), {"rule": "quantile"}
    span = rule.insample
    if span is None or len(span) != 2:
        raise ConfigError("env.turbulence_insample: give [start, end) dates of the in-sample range, e.g. "
                          "['2009-01-01', '2015-10-01'] (the ICAIF 2020 code)")
    lookback = rule.lookback
    import pandas as pd

    times = pd.DatetimeIndex(arrays.times)
    i0, i1 = (int(times.searchsorted(pd.Timestamp(str(d)), side="left")) for d in span)
    if i1 <= i0:
        raise ConfigError(f"env.turbulence_insample: {list(span)} holds no bars of the data "
                          f"({times[0].date()} .. {times[-1].date()})")
    at = validation_start if validation_start is not None else train[1]
    if i1 > at:
        raise ConfigError(f"env.turbulence_insample ends on {pd.Timestamp(str(span[1])).date()}, after the "
                          f"window's validation start {times[at].date()}: its quantile would use the future")
    ins = turb[i0:i1]
    insample_q, insample_max = float(np.quantile(ins, q)), float(ins.max())
    mean = float(turb[max(at - lookback + 1, 0): at + 1].mean())
    choice = "quantile" if mean > insample_q else "max"
    return (insample_q if choice == "quantile" else insample_max), {
        "rule": rule.rule, "insample_q": insample_q, "insample_max": insample_max, "lookback_mean": mean,
        "choice": choice}


def stage_env_config(env: RunSpec | Mapping[str, Any], arrays: MarketArrays, train: tuple[int, int],
                     validation_start: int | None = None) -> dict:
    """The env config of a window's stages (what the loop and ``finmeta train`` build envs from):
    the env section with its turbulence rule resolved, see :func:`stage_options`. ``env``: the run
    spec (its typed views) or an env section as a dict (its rule read by
    :meth:`TurbulenceRule.from_env`)."""
    if isinstance(env, RunSpec):
        options, rule, normalize = env.env_options, env.turbulence, env.env_config.normalize_obs
    else:
        options = {k: v for k, v in env.items() if k not in TURBULENCE_RULE_KEYS}
        rule, normalize = TurbulenceRule.from_env(env), bool(env.get("normalize_obs"))
    return stage_options(options, rule, normalize, arrays, train, validation_start)


def stage_options(options: Mapping[str, Any], rule: TurbulenceRule, normalize_obs: bool, arrays: MarketArrays,
                  train: tuple[int, int], validation_start: int | None = None) -> dict:
    """The env options of a window's stages (what :func:`build_env` takes).

    ``options`` are the env section without the rule's keys (:attr:`RunSpec.env_options`); the
    window's threshold under ``rule`` (see :func:`turbulence_threshold`) replaces
    ``turbulence_threshold`` when a quantile rule chose it. With ``normalize_obs`` it sets
    ``obs_fit_bars`` to the length of the training range ``train``: the stage envs, built on arrays
    that start at the training range's first bar, then scale the features with the training range's
    statistics only (frozen; the same in training, validation and trade; see docs/env.md,
    "Observation scaling"). The rest goes to the env unchanged.
    """
    cfg = dict(options)
    threshold, detail = turbulence_threshold(rule, arrays, train, validation_start)
    if detail["rule"] not in ("none", "fixed"):
        cfg["turbulence_threshold"] = threshold
    if normalize_obs:
        cfg["obs_fit_bars"] = int(train[1] - train[0])
    return cfg


def _gated(name: str) -> bool:
    """Whether baseline ``name`` trades under the turbulence stop (its class's ``trades_under_stop``)."""
    from agents.base import AGENT_REGISTRY, agent_class

    return name in AGENT_REGISTRY and bool(getattr(agent_class(name), "trades_under_stop", False))


def _validation_start(w: Window) -> int:
    return w.validation[0] if w.validation else w.trade[0]


def learns(name: str) -> bool:
    """Whether agent ``name`` is trained per window (its class's ``learned``: RL agents, moe) or is a
    rule (baselines). ``ensemble`` is no agent class but a loop-level selection among trained
    members (see :meth:`WalkForward._run_window`), so it is named here."""
    if name == "ensemble":
        return True
    from agents.base import AGENT_REGISTRY, agent_class

    if name not in AGENT_REGISTRY:
        return False  # make_agent will raise the clear "unknown agent" error
    return bool(getattr(agent_class(name), "learned", True))


def _sharpe(values: np.ndarray, periods_per_year: float) -> float:
    from .metrics import compute_metrics

    if len(values) < 3:
        return float("nan")
    s = compute_metrics(values, periods_per_year=periods_per_year)["sharpe"]
    return float(s) if np.isfinite(s) else float("-inf")


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    write_atomic(path, data)


def _ckpt_path(run_dir: Path, agent: str, seed: int, window: int) -> Path:
    return rundir.checkpoint_path(run_dir, agent, seed, window)


def _model_lock(path: Path):
    """Hold an exclusive lock on ``<path>.lock`` (:func:`finmeta.fs.file_lock`; blocks until free).

    The lock file stays (empty) beside the model. Without ``fcntl`` (Windows) it does nothing:
    parallel chains may then train the same model twice (same result, wasted time).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return file_lock(path.with_suffix(".lock"))


_CKPT_ARRAYS = ("values", "actions", "costs", "turnover", "record", "state")
log = logging.getLogger("finmeta.loop")


class CheckpointRejected(Exception):
    """A checkpoint or saved model that must not be reused (corrupt, or made for another chain)."""


def _digest(entries: dict[str, np.ndarray]) -> str:
    """sha256 over the named arrays (name, dtype, shape and bytes, in sorted name order)."""
    h = hashlib.sha256()
    for k in sorted(entries):
        a = np.ascontiguousarray(entries[k])
        h.update(f"{k}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _json_bytes(obj: Any) -> np.ndarray:
    return np.frombuffer(json.dumps(obj, sort_keys=True).encode(), dtype=np.uint8)


def _save_window(path: Path, part: dict, record: dict, identity: dict) -> None:
    """Write one finished window: its arrays, record and state, bound to its chain.

    ``identity`` = {agent, seed, window, fingerprint}; ``checksum`` = sha256 of every other entry,
    so that a file copied from another chain or damaged on disk is recognised on resume.
    """
    import io

    entries = {
        "values": np.asarray(part["values"]),
        "actions": np.asarray(part["actions"]),
        "costs": np.asarray(part["costs"]),
        "turnover": np.asarray(part["turnover"]),
        "record": _json_bytes(record),
        "state": _json_bytes(part["state"]),
        "identity": _json_bytes(identity),
    }
    buf = io.BytesIO()
    np.savez(buf, checksum=np.frombuffer(_digest(entries).encode(), dtype=np.uint8), **entries)
    _atomic_write_bytes(path, buf.getvalue())


def _load_window(path: Path, identity: dict | None = None) -> tuple[dict, dict]:
    """Read a window checkpoint; :class:`CheckpointRejected` (with the reason) when it is corrupt,
    has no identity (written before checkpoints were bound), or belongs to another chain or run."""
    try:
        with np.load(path) as z:
            entries = {k: z[k] for k in z.files}
    except Exception as exc:  # noqa: BLE001 - BadZipFile, zlib.error, EOFError, ValueError, OSError...
        raise CheckpointRejected(f"unreadable ({type(exc).__name__}: {exc})") from None
    missing = [k for k in _CKPT_ARRAYS + ("identity", "checksum") if k not in entries]
    if missing:
        why = "has no identity (written by an older FinMeta)" if "identity" in missing else f"lacks {missing}"
        raise CheckpointRejected(why)
    checksum = entries.pop("checksum").tobytes().decode(errors="replace")
    if _digest(entries) != checksum:
        raise CheckpointRejected("checksum mismatch (damaged or edited)")
    try:
        theirs = json.loads(entries["identity"].tobytes().decode())
        part = {k: entries[k] for k in ("values", "actions", "costs", "turnover")}
        part["state"] = json.loads(entries["state"].tobytes().decode())
        record = json.loads(entries["record"].tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointRejected(f"unreadable record ({exc})") from None
    if identity is not None and theirs != identity:
        diff = {k: theirs.get(k) for k in identity if theirs.get(k) != identity[k]}
        raise CheckpointRejected(f"belongs to another chain or run ({_short(diff)})")
    return part, record


def _short(d: dict) -> str:
    return ", ".join(f"{k}={str(v)[:12]}" for k, v in d.items())


def has_artefacts(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds window checkpoints or saved models (what a fingerprint protects)."""
    return any((run_dir / rundir.CHECKPOINTS).rglob("*.npz")) or any((run_dir / rundir.MODELS).rglob("*.zip"))


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _model_identity_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _write_model_identity(path: Path, identity: dict) -> None:
    body = {**identity, "sha256": _file_sha256(path)}
    _atomic_write_bytes(_model_identity_path(path), json.dumps(body, sort_keys=True).encode())


def _check_model(path: Path, identity: dict) -> dict:
    """Raise :class:`CheckpointRejected` unless ``path`` is the model of this chain, undamaged; its
    identity file's contents (the identity and the model's ``sha256``) when it is."""
    side = _model_identity_path(path)
    if not side.exists():
        raise CheckpointRejected(f"has no identity file {side.name} (written by an older FinMeta or copied in)")
    try:
        theirs = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointRejected(f"identity file {side.name} unreadable ({exc})") from None
    mine = {k: theirs.get(k) for k in identity}
    if mine != identity:
        diff = {k: theirs.get(k) for k in identity if theirs.get(k) != identity[k]}
        raise CheckpointRejected(f"belongs to another chain or run ({_short(diff)})")
    if theirs.get("sha256") != _file_sha256(path):
        raise CheckpointRejected("checksum mismatch (damaged or replaced)")
    return theirs


# --------------------------------------------------------------------------------------------
# the walk
# --------------------------------------------------------------------------------------------
class WalkForward:
    """Walk-forward runner for one dataset and run spec.

    Args:
        arrays: the full dataset (all windows are slices of it).
        config: the validated :class:`~benchmarks.spec.RunSpec`, or a config dict (validated here
            into one: one :class:`ConfigError` naming ``section.key``); the loop reads only the
            spec's typed fields and views (``env``, ``windows``, ``agents``, ``periods_per_year``;
            see ``docs/benchmarks.md``).
        run_dir: where checkpoints and results go (resumes from it when it holds checkpoints).
        on_window: optional callback ``(agent, seed, window_index, n_windows)`` for progress bars.
        on_train: optional callback ``(label, steps_done, total_steps)`` called while an agent
            trains (SB3 agents), for a training-steps progress bar.
        windows: the windows to walk (default: cut from the spec's ``windows`` section, which may
            then be absent).
        models: ``{agent: saved model}`` traded instead of trained (``finmeta backtest``).

    Config key ``cache_models`` (default true) keeps each trained agent in ``<run_dir>/models/``
    so that the ensemble reuses its members' training. Config key ``tensorboard: true`` writes
    SB3's TensorBoard logs under ``<run_dir>/tensorboard/<agent>_seed<k>/`` (one run per window;
    needs ``tensorboard``). Without ``periods_per_year`` the annualised figures use the env's bars
    a year (:func:`meta.market.env_bars_per_year`).
    """

    def __init__(
        self,
        arrays: MarketArrays,
        config: RunSpec | Mapping[str, Any],
        run_dir: str | Path,
        *,
        on_window: Callable[[str, int, int, int], None] | None = None,
        on_train: Callable[[str, int, int], None] | None = None,
        windows: list[Window] | None = None,
        models: dict[str, str | Path] | None = None,
    ) -> None:
        self.arrays = arrays
        #: ``{agent: saved model}``: that agent is not trained, every window trades the saved model
        #: (``finmeta backtest``); everything else (stop rule, carried state, costs, report) is the bench's
        self.models: dict[str, Path] = {k: Path(v) for k, v in (models or {}).items()}
        #: the validated run spec: everything the loop reads
        self.spec: RunSpec = as_spec(config, windows_given=windows is not None)
        self.run_dir = Path(run_dir)
        self.on_window = on_window
        self.on_train = on_train
        #: save each trained agent and reuse it for the same (agent, seed, window)
        self.cache_models = self.spec.cache_models
        if windows is None:
            try:
                windows = make_windows(arrays.times, **self.spec.windows.model_dump())
            except ConfigError as exc:
                cut = (arrays.meta or {}).get("cut_start")
                if not cut:
                    raise
                late = ", ".join(f"{k} {v}" for k, v in ((arrays.meta or {}).get("late_start") or {}).items())
                raise ConfigError(f"{exc}; the data start at {cut[1]}, not {cut[0]}: cleaning cut the panel to the "
                                  f"first bar of its late-listing ticker(s) ({late}); set data.clean.late_start: drop "
                                  f"to drop them and keep the full span") from None
        self.windows: list[Window] = list(windows)
        ppy = self.spec.periods_per_year
        if ppy is None:  # annualise as the env does
            from meta.market import env_bars_per_year

            ppy = env_bars_per_year(self.spec.env_config, arrays)
        self.periods_per_year = float(ppy)
        self._fingerprint: str | None = None

    @property
    def config(self) -> dict:
        """The config as written (:attr:`RunSpec.raw`; read-only, for callers of the dict API)."""
        return self.spec.raw

    # -- per-stage helpers ---------------------------------------------------------------------
    def _slice(self, lo: int, hi: int) -> MarketArrays:
        return self.arrays.slice(lo, hi)

    def _env_overrides(self, w: Window) -> dict:
        return stage_env_config(self.spec, self.arrays, w.train, _validation_start(w))

    def _training_stop(self) -> bool:
        """Whether the training env has the turbulence stop (``env.turbulence_in_training``,
        default true; the ICAIF 2020 code trains without it)."""
        return self.spec.turbulence.in_training

    def stop_mask(self) -> np.ndarray:
        """``(T,)`` bool over the bar axis: True on trade bars whose turbulence is at or above their
        window's threshold (the stop is active); False elsewhere and without a stop."""
        hit = np.zeros(len(self.arrays.times), dtype=bool)
        if self.arrays.turbulence is None:
            return hit
        turb = np.asarray(self.arrays.turbulence, dtype=np.float64)
        for w in self.windows:
            thr, _ = turbulence_threshold(self.spec.turbulence, self.arrays, w.train, _validation_start(w))
            if thr is not None:
                lo, hi = w.trade
                hit[lo:hi] = turb[lo:hi] >= thr
        return hit

    def window_table(self) -> list[dict]:
        """Per window: its dates, the turbulence threshold (and how the rule chose it) and the
        number of trade bars on which the stop is active (turbulence >= threshold) -- the
        ``windows.csv`` of a run directory."""
        import pandas as pd

        times = pd.DatetimeIndex(self.arrays.times)
        turb = None if self.arrays.turbulence is None else np.asarray(self.arrays.turbulence, dtype=np.float64)
        rows = []
        for w in self.windows:
            thr, detail = turbulence_threshold(self.spec.turbulence, self.arrays, w.train, _validation_start(w))
            lo, hi = w.trade
            row = {"window": w.index,
                   "train_start": times[w.train[0]].date(), "train_end": times[w.train[1] - 1].date(),
                   "validation_start": times[w.validation[0]].date() if w.validation else None,
                   "validation_end": times[w.validation[1] - 1].date() if w.validation else None,
                   "trade_start": times[lo].date(), "trade_end": times[hi - 1].date(), "trade_bars": hi - lo,
                   "rule": detail["rule"], "threshold": thr, "choice": detail.get("choice"),
                   "lookback_mean": detail.get("lookback_mean"),
                   "stop_bars": None if thr is None or turb is None else int((turb[lo:hi] >= thr).sum()),
                   "stop_in_training": self._training_stop() and thr is not None}
            rows.append(row)
        return rows

    def _model_path(self, name: str, w: Window, seed: int) -> Path:
        return rundir.model_path(self.run_dir, name, seed, w.index)

    def _train(self, name: str, w: Window, seed: int):
        """An agent trained on window ``w``'s training range (seed from (seed, window, name)).

        Fresh by default. With ``warm_start: true`` in the agent's config (agents whose
        ``supports_warm_start``, i.e. ``moe``), window k > 0 loads window k-1's saved agent and
        continues training it for ``retrain_timesteps`` (default ``total_timesteps``) steps.

        The trained agent is saved under ``<run_dir>/models/``; a later request for the same
        (agent, seed, window) -- the ensemble's members, a resumed run -- loads it instead of
        training again, which gives the same agent because training is deterministic per seed.
        While one process trains a model, every other process asking for it (the ensemble's chain
        beside a member's chain on Ray) waits on ``<model>.lock`` and then loads it: each model is
        trained once per run directory.
        """
        from agents import load_agent

        lo, hi = w.train
        train_cfg = self._env_overrides(w)
        if not self._training_stop():
            train_cfg.pop("turbulence_threshold", None)  # the ICAIF 2020 code trains without the stop
        env = build_env(self._slice(lo, hi), train_cfg, **(self.spec.train_env or {}))
        if name in self.models:  # a backtest: the given model, not trained here
            return load_agent(self.models[name], env)
        path = self._model_path(name, w, seed)
        if not self.cache_models:
            return self._fit(name, w, seed, env, path)
        with _model_lock(path):  # one trainer per saved model, across processes and Ray workers
            if path.exists():
                try:
                    _check_model(path, self._identity(name, seed, w))
                    return load_agent(path, env)
                except (CheckpointRejected, FinMetaError, OSError, ValueError, zipfile.BadZipFile) as exc:
                    log.warning(f"{path}: {exc}; training {name} seed {seed} window {w.index} again")
            return self._fit(name, w, seed, env, path)

    def _fit(self, name: str, w: Window, seed: int, env, path: Path):
        """Train (fresh or warm-started) on ``env`` and save to ``path``; the body of
        :meth:`_train` (with the model's lock held when models are cached)."""
        from agents import load_agent, make_agent

        options = self.spec.agent_options(name)
        cfg, opts = dict(options.kwargs), options.loop
        steps = opts.total_timesteps
        warm = opts.warm_start
        retrain_steps = steps if opts.retrain_timesteps is None else opts.retrain_timesteps
        if self.spec.tensorboard and name in RL_AGENTS:
            cfg.setdefault("tensorboard_log", str(self.run_dir / "tensorboard" / f"{name}_seed{seed}"))
        prev = self._previous_window(w) if warm else None
        if prev is not None:
            # warm start: continue from the previous window's trained agent (for moe: LoRA-only
            # encoder updates) for retrain_timesteps steps; it is on disk (or made now, in order)
            prev_path = self._model_path(name, prev, seed)
            try:
                _check_model(prev_path, self._identity(name, seed, prev))
            except CheckpointRejected:
                self._train(name, prev, seed)  # (re)makes it, or says why the one on disk is refused
            agent = load_agent(prev_path, env)
            steps = retrain_steps
        else:
            agent = make_agent(name, **cfg)
        if warm and not agent.supports_warm_start:
            raise ConfigError(
                f"agents.{name}.warm_start: {name} starts a fresh model at every learn(), so it "
                f"cannot continue from the previous window; remove warm_start"
            )
        if warm and not self.cache_models:
            raise ConfigError(f"agents.{name}.warm_start needs cache_models: true (it loads the "
                              f"previous window's saved model)")
        kw = {}
        if self.on_train is not None and "callback" in inspect.signature(agent.learn).parameters:
            kw["callback"] = _progress_callback(self.on_train, f"{name} window {w.index}", steps)
        agent.learn(env, total_timesteps=steps, seed=window_seed(seed, w.index, name), **kw)
        if self.cache_models:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.zip")
            agent.save(tmp)
            os.replace(tmp, path)
            _write_model_identity(path, self._identity(name, seed, w))
        return agent

    def _previous_window(self, w: Window) -> Window | None:
        earlier = [x for x in self.windows if x.index == w.index - 1]
        return earlier[0] if earlier else None

    def _stage_env(self, w: Window, lo: int, hi: int, *, turbulence: bool = True):
        """An env over bars ``[train_lo, hi)`` whose episodes start at ``lo``.

        The bars before ``lo`` are the past (observation look-back, baselines' trailing
        estimates); nothing at or after ``hi`` exists for the env. ``turbulence=False`` drops the
        window's turbulence stop (the rule baselines' trade env, see :meth:`_baseline_turbulence`).
        """
        base = w.train[0]
        overrides = self._env_overrides(w)
        if not turbulence:
            overrides.pop("turbulence_threshold", None)
        env = build_env(self._slice(base, hi), overrides)
        return env, lo - base

    def _baseline_turbulence(self) -> bool:
        """Whether rule baselines trade under the turbulence stop (config ``baseline_turbulence``).

        Default False: the turbulence stop (sell everything, stop buying while turbulence is
        above the threshold) is the ICAIF risk control of the *RL agents*; the paper's min-variance
        and DJIA rows are passive references computed outside the env. Under the stop, a
        ``buy_and_hold`` row would be liquidated on the first turbulent day and sit in cash for
        every later window.
        """
        return bool(self.spec.baseline_turbulence)

    def _stop_threshold(self, name: str, w: Window) -> float | None:
        """The turbulence stop agent ``name`` trades under in window ``w`` (None: no stop): learned
        agents, gated baselines (``trades_under_stop``, e.g. ``equal_weight_gated``), and every
        baseline under ``baseline_turbulence: true``."""
        if learns(name) or self._baseline_turbulence() or _gated(name):
            return self._env_overrides(w).get("turbulence_threshold")
        return None

    def _checkpoint_current(self, name: str, w: Window, record: dict) -> bool:
        """False for a rule baseline's window saved under the other turbulence-stop rule (run
        directories from before baselines traded without the stop); it is then recomputed."""
        if learns(name):
            return True
        return (record.get("threshold") is None) == (self._stop_threshold(name, w) is None)

    def _baseline(self, name: str, w: Window, env):
        from agents import make_agent

        agent = make_agent(name, **self.spec.agent_options(name).kwargs)
        agent.learn(env, total_timesteps=0, seed=0)  # binds spaces and the env's (past-only) prices
        return agent

    def _deterministic(self, name: str) -> bool:
        """The agent's ``deterministic`` loop option (default true; the ensemble's chosen member's own)."""
        return self.spec.agent_options(name).loop.deterministic

    def _validate(self, agent, w: Window, seed: int) -> float:
        if w.validation is None:
            return float("nan")
        env, start = self._stage_env(w, *w.validation)
        out = rollout(agent, env, seed=window_seed(seed, w.index, "validation"), start=start,
                      deterministic=self._deterministic(getattr(agent, "name", "")))
        return _sharpe(out["values"], self.periods_per_year)

    def _trade_env(self, w: Window, state: dict | None, *, turbulence: bool = True):
        lo, hi = w.trade
        if state is not None:
            lo -= 1  # start on the previous window's last bar (see module doc)
        return self._stage_env(w, lo, hi, turbulence=turbulence)

    # -- one chain -----------------------------------------------------------------------------
    def fingerprint(self) -> str:
        """A hash of everything that decides the chains' results (data, features, env, windows,
        agents, dataset hash). Checkpoints and saved models are only reused under the same one."""
        # the RunSpec fields that decide results (spec.RESULT_FIELDS) of the config as written: the
        # same bytes as before the loop took a spec, so existing run directories keep their hash
        body = self.spec.fingerprint_body()  # = spec.fingerprint_body(spec.raw)
        body["dataset_hash"] = self.arrays.meta.get("dataset_hash")
        if self.models:  # a backtest's checkpoints hold its model's trades: bound to that file's content
            from data_processors.store import file_sha256

            body["models"] = {k: file_sha256(v) for k, v in sorted(self.models.items())}
        text = json.dumps(body, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _identity(self, name: str, seed: int, w: Window) -> dict:
        """What binds a checkpoint or saved model to its chain: agent, seed, window, run fingerprint."""
        if self._fingerprint is None:
            self._fingerprint = self.fingerprint()
        return {"agent": name, "seed": int(seed), "window": int(w.index), "fingerprint": self._fingerprint}

    def _claim_run_dir(self) -> None:
        """Refuse to resume a run directory written by a different config (stale checkpoints)."""
        path = self.run_dir / rundir.FINGERPRINT
        mine = self.fingerprint()
        if path.exists():
            try:
                theirs = rundir.read_fingerprint(self.run_dir)
            except RunDirError:
                theirs = None  # unreadable: as another config's (refused below if anything was trained)
            if theirs == mine:
                return
            if has_artefacts(self.run_dir):
                raise ConfigError(
                    f"{self.run_dir} holds a run of a different config or dataset (its checkpoints and "
                    f"models would be reused); use a new --out, or delete that directory"
                )
            log.warning(f"{path}: written by another config, but the run directory holds no checkpoint "
                        f"or model yet (an earlier run failed at once); taking it over")
        rundir.write_fingerprint(self.run_dir, mine)

    def run_chain(self, name: str, seed: int) -> ChainResult:
        """Walk every window for one agent and seed (resuming from checkpoints)."""
        self._claim_run_dir()
        parts: list[dict] = []
        records: list[dict] = []
        state: dict | None = None
        for w in self.windows:
            ck = _ckpt_path(self.run_dir, name, seed, w.index)
            part = record = None
            identity = self._identity(name, seed, w)
            if ck.exists():
                try:
                    part, record = _load_window(ck, identity)
                except CheckpointRejected as exc:
                    log.warning(f"{ck}: {exc}; recomputing window {w.index} of {name} seed {seed}")
                else:
                    if not self._checkpoint_current(name, w, record):
                        part = record = None  # written under other baseline rules: redo this window
            if part is None:
                part, record = self._run_window(name, w, seed, state)
                _save_window(ck, part, record, identity)
            parts.append(part)
            records.append(record)
            state = part["state"]
            if self.on_window:
                self.on_window(name, seed, w.index, len(self.windows))
        return self._chain(name, seed, parts, records)

    def _run_window(self, name: str, w: Window, seed: int, state: dict | None) -> tuple[dict, dict]:
        """One window of one chain. What differs between agents comes from their class (``learned``,
        ``trades_under_stop``, the hooks ``carry_over`` and ``window_diagnostics``); the one name
        known here is ``ensemble``, which is no agent but this loop's choice among trained members."""
        t0 = time.perf_counter()
        record: dict[str, Any] = {"window": w.index, "train": list(w.train),
                                  "validation": list(w.validation) if w.validation else None,
                                  "trade": list(w.trade)}
        if name == "ensemble":
            members = self.spec.ensemble_members
            best, best_sharpe, sharpes = None, -np.inf, {}
            for m in members:  # fixed order: ties go to the first member, deterministically
                ag = self._train(m, w, seed)
                s = self._validate(ag, w, seed)
                sharpes[m] = s
                if best is None or (np.isfinite(s) and s > best_sharpe):
                    best, best_sharpe, chosen = ag, s, m
            agent = best
            record.update(chosen=chosen, validation_sharpe=sharpes)
        elif learns(name):
            agent = self._train(name, w, seed)
            record.update(validation_sharpe=self._validate(agent, w, seed))
        threshold = self._stop_threshold(name, w)
        env, start = self._trade_env(w, state, turbulence=threshold is not None)
        if not learns(name):
            agent = self._baseline(name, w, env)
        agent = agent.carry_over(state) if hasattr(agent, "carry_over") else agent  # buy-and-hold holds
        part = rollout(agent, env, seed=window_seed(seed, w.index, "trade"), start=start, start_state=state,
                       deterministic=self._deterministic(getattr(agent, "name", name)))
        diagnostics = getattr(agent, "window_diagnostics", None)  # Agent hook (moe: diversity, router entropy)
        extra = diagnostics(env, seed=window_seed(seed, w.index, "diversity"), start=start) if diagnostics else {}
        if extra:  # kept under the checkpoint's historical key "diversity"
            record["diversity"] = extra
        record["threshold"] = threshold
        record["seconds"] = round(time.perf_counter() - t0, 3)
        return part, record

    def _chain(self, name: str, seed: int, parts: list[dict], records: list[dict]) -> ChainResult:
        vals, acts, costs, turns, idx = [], [], [], [], []
        for k, (w, p) in enumerate(zip(self.windows, parts)):
            lo, hi = w.trade
            skip = 1 if k > 0 else 0  # the carried-over first bar is the previous window's last
            # the action recorded on the previous window's last bar is the one taken in this window
            if k > 0 and len(acts):
                acts[-1][-1] = p["actions"][0]
            vals.append(p["values"][skip:])
            acts.append(np.array(p["actions"][skip:], copy=True))
            costs.append(p["costs"][skip:])
            turns.append(p["turnover"][skip:])
            idx.append(np.arange(lo, hi))
        index = np.concatenate(idx)
        return ChainResult(
            agent=name,
            seed=seed,
            times=self.arrays.times[index],
            values=np.concatenate(vals),
            actions=np.vstack(acts),
            costs=np.concatenate(costs),
            turnover=np.concatenate(turns),
            windows=records,
        )

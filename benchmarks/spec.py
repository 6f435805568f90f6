"""The run spec: every section and key a benchmark config may hold, typed and documented.

``validate_config(config)`` checks a config (the dict a YAML file loads to) against these section
types before any data is read: an unknown key, a wrong type or a bad value is one
:class:`~finmeta.errors.ConfigError` naming ``section.key`` (with the closest known keys for a typo).
The env section is also built into :class:`meta.config.EnvConfig` here, so a bad env option fails at
load, not after the data pipeline ran. Agent options are checked against the agent's own keys
(:meth:`agents.base.Agent.config_keys`) plus the loop's (:data:`LOOP_KEYS`).

The loop (:class:`benchmarks.loop.WalkForward`) takes the validated :class:`RunSpec` and reads it
through typed views: the sections' models, :attr:`RunSpec.env_config` (the env section built into an
``EnvConfig``), :attr:`RunSpec.turbulence` (the stop's rule, :class:`TurbulenceRule`) and
:meth:`RunSpec.agent_options` (an agent's kwargs and its :class:`LoopOptions`). The dict as written
stays on the spec (:attr:`RunSpec.raw`): the resume fingerprint hashes it (:func:`fingerprint_body`),
never a dump with defaults filled in, so existing run directories keep their hash.

This module also loads configs (:func:`load_config`, :func:`load_spec`) and merges the parameters
``finmeta tune`` saved into them (:func:`apply_tuned`). ``docs/benchmarks.md``'s config reference is
generated from these models (:func:`reference_markdown`) and a test keeps the two equal.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from finmeta.errors import ConfigError

if TYPE_CHECKING:  # meta.config is imported when a spec is validated, not with this module
    from meta.config import EnvConfig


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


def _iso(value: Any, key: str) -> Any:
    from finmeta.timeparse import parse_date

    if value is not None:
        parse_date(value, key)
    return value


class CleanSection(_Section):
    """``data.clean``: options of the cleaning step (``data_processors.clean.clean``)."""

    min_coverage: float = Field(0.0, ge=0.0, le=1.0, description="drop tickers with less calendar coverage (0..1)")
    max_gap: Optional[int] = Field(None, ge=1, description="drop tickers with a longer run of missing bars")
    late_start: Literal["cut", "drop"] = Field("cut", description="late-listing tickers: cut the panel start to "
                                               "them, or drop them")
    max_off_calendar: float = Field(0.05, ge=0.0, le=1.0, description="largest share of bars off the exchange "
                                    "calendar before the data is refused")
    check_ohlc: bool = Field(True, description="check high/low enclose open/close")
    on_bad_ohlc: Literal["error", "clip", "drop"] = Field("error", description="bars whose high/low do not enclose "
                                                          "open/close: refuse, widen high/low, or drop the bar")


class FileEntry(_Section):
    """One entry of ``data.files``."""

    file: str = Field(..., description="path (``${FINMETA_DATA_DIR}`` and ``~`` expand)")
    format: Optional[str] = Field(None, description="the vendor format (default ``data.format``, else canonical)")
    options: Optional[dict[str, Any]] = Field(None, description="the source's file options")


class DataSection(_Section):
    """``data``: where the prices come from. One of ``dataset``, ``files``, ``file``, or ``source``."""

    model_config = ConfigDict(extra="allow")  # a download source's own options (synthetic: checked by it)

    dataset: Optional[str] = Field(None, description="a stored dataset (``finmeta data import/features``); a "
                                   "featured one's stored features are used unless ``features`` is given")
    files: Optional[list[Union[str, FileEntry]]] = Field(None, min_length=1, description="vendor files "
                                                        "(paths or entries), concatenated")
    file: Optional[str] = Field(None, description="one vendor file")
    format: Optional[str] = Field(None, description="the vendor format of ``file``")
    options: Optional[dict[str, Any]] = Field(None, description="file options of ``file``'s source")
    source: Optional[str] = Field(None, description="download from this source (default ``synthetic``)")
    tickers: Optional[Union[int, list[str]]] = Field(None, description="tickers to keep (a list), or the number "
                                                     "of synthetic tickers")
    start: Optional[Any] = Field(None, description="first date kept (ISO ``YYYY-MM-DD``)")
    end: Optional[Any] = Field(None, description="end date, exclusive (ISO)")
    freq: str = Field("1d", description="bar frequency of a download")
    calendar: Optional[str] = Field(None, description="exchange calendar (XNYS, XSHG, 24/7, FX); default: the "
                                    "dataset's or source's")
    clean: Optional[CleanSection] = Field(None, description="cleaning options")
    seed: Optional[int] = Field(None, description="seed of the synthetic market")

    @field_validator("start", "end")
    @classmethod
    def _dates(cls, v, info):
        return _iso(v, f"data.{info.field_name}")


class FeaturesSection(_Section):
    """``features``: what the bench computes after cleaning (``data_processors.features``)."""

    engine: Literal["stockstats", "talib"] = Field("stockstats", description="indicator engine")
    indicators: Optional[list[str]] = Field(None, description="indicator names (``macd``, ``rsi_30``, ...)")
    columns: Optional[list[str]] = Field(None, description="the K feature columns the env sees (default: the "
                                         "indicators)")
    turbulence: bool = Field(True, description="add the turbulence index (the stop's input)")
    turbulence_window: int = Field(252, ge=2, description="turbulence look-back in bars")
    turbulence_mode: Literal["returns", "icaif2020"] = Field("returns", description="returns index, or the ICAIF "
                                                             "2020 code's price-level series")
    vix: Optional[dict[str, Any]] = Field(None, description="a data section for the VIX series")


class WindowsSection(_Section):
    """``windows``: the walk-forward schedule (``benchmarks.windows.make_windows``)."""

    train_start: Any = Field(..., description="first training bar (ISO date)")
    trade_start: Any = Field(..., description="first traded bar (ISO date)")
    trade_end: Optional[Any] = Field(None, description="end of trading, exclusive (ISO date; default: the data's "
                                     "end)")
    rebalance: int = Field(63, ge=1, description="bars traded per window (the retraining period)")
    validation: int = Field(63, ge=0, description="bars per validation window (0: none)")
    mode: Literal["expanding", "rolling"] = Field("expanding", description="training range: from train_start, "
                                                  "or the last train_length bars")
    train_length: Optional[int] = Field(None, ge=2, description="bars of training in rolling mode")

    @field_validator("train_start", "trade_start", "trade_end")
    @classmethod
    def _dates(cls, v, info):
        return _iso(v, f"windows.{info.field_name}")


class IndexSection(_Section):
    """``index`` / ``more_indices[]``: a market-index row (buy and hold of the index level)."""

    price_weighted: bool = Field(False, description="the price-weighted index of the config's own tickers")
    file: Optional[str] = Field(None, description="a file with the index level")
    dataset: Optional[str] = Field(None, description="a stored dataset with the index level")
    format: Optional[str] = Field(None, description="the file's vendor format")
    tic: Optional[str] = Field(None, description="the index's ticker in that file")
    name: Optional[str] = Field(None, description="the row's label (``index_<name>`` for more_indices)")
    calendar: Optional[str] = Field(None, description="the file's calendar")


class TuneSection(_Section):
    """``tune``: ``finmeta tune`` defaults."""

    trials: int = Field(20, ge=1, description="Optuna trials")
    validation: Optional[int] = Field(None, ge=1, description="validation bars of the tuning split")
    timesteps: Optional[int] = Field(None, ge=1, description="training steps per trial")
    parallel: Optional[int] = Field(None, ge=1, description="parallel trials")
    search_space: Optional[dict[str, Any]] = Field(None, description="per-parameter search ranges")


class RaySection(_Section):
    """``ray``: the Ray executor (``--executor ray``)."""

    address: Optional[str] = Field(None, description="cluster address (default: a private local Ray)")
    num_cpus: Optional[int] = Field(None, ge=1, description="CPUs of the local Ray")
    cpus_per_task: Optional[float] = Field(None, gt=0, description="CPUs per chain task")
    max_retries: int = Field(2, ge=0, strict=True, description="retries of a chain whose worker died (it resumes)")
    runtime_env: Optional[dict[str, Any]] = Field(None, description="Ray runtime_env")
    node_ip_address: Optional[str] = Field(None, description="this node's address for Ray")


# --------------------------------------------------------------------------------------------
# the loop's keys inside the env and agents sections, and their typed views
# --------------------------------------------------------------------------------------------
#: the five algorithm names of the SB3 / ElegantRL / torch backends (the ones ``finmeta tune`` has
#: search spaces for and tuned files of, and the ones the ``tensorboard`` option logs)
RL_AGENTS = ("a2c", "ppo", "ddpg", "td3", "sac")
#: the ensemble's members when ``agents.ensemble.members`` is not given (the ICAIF 2020 paper's)
ENSEMBLE_MEMBERS_DEFAULT = ("a2c", "ppo", "ddpg")

#: env-section keys that choose the turbulence stop's threshold per window (resolved by the loop,
#: never passed to the env); see :class:`TurbulenceRule` and :func:`benchmarks.loop.turbulence_threshold`
TURBULENCE_RULE_KEYS = ("turbulence_rule", "turbulence_quantile", "turbulence_insample", "turbulence_lookback",
                        "turbulence_in_training")
TURBULENCE_RULES = ("quantile", "icaif2020_switch")

#: agent-config keys that steer the training loop, not the agent (never passed to make_agent),
#: with their defaults; ``retrain_timesteps`` None means ``total_timesteps``.
#: ``deterministic: false`` validates and trades with SAMPLED policy actions (the ICAIF 2020 code
#: trades sampled A2C/PPO actions), seeded by the stage's window seed so runs stay reproducible.
LOOP_KEYS: dict[str, Any] = {"total_timesteps": 10_000, "warm_start": False, "retrain_timesteps": None,
                             "deterministic": True}


class TurbulenceRule(BaseModel):
    """The turbulence stop's rule of an env section: its ``turbulence_*`` keys, typed.

    ``rule``, ``quantile``, ``insample``, ``lookback`` and ``in_training`` are the loop's keys
    (:data:`TURBULENCE_RULE_KEYS`, never passed to the env); ``threshold`` is the env's own fixed
    ``turbulence_threshold`` (used when no quantile is set). Build one with :meth:`from_env`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: Literal["quantile", "icaif2020_switch"] = "quantile"
    quantile: Optional[float] = None
    threshold: Optional[Union[int, float]] = None
    insample: Optional[tuple[Any, ...]] = None
    lookback: int = 63
    in_training: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, Any], section: str = "env", prefix: str = "") -> TurbulenceRule:
        """The rule of env section ``env``; one :class:`ConfigError` naming ``<section>.<key>``."""
        rule = env.get("turbulence_rule", "quantile")
        if rule not in TURBULENCE_RULES:
            raise ConfigError(f"{prefix}{section}.turbulence_rule: {rule!r}; choose one of "
                              f"{', '.join(TURBULENCE_RULES)}")
        q = env.get("turbulence_quantile")
        if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < float(q) <= 1.0):
            raise ConfigError(f"{prefix}{section}.turbulence_quantile: {q!r}; must lie in (0, 1]")
        in_training = env.get("turbulence_in_training", True)
        if not isinstance(in_training, bool):
            raise ConfigError(f"{prefix}{section}.turbulence_in_training: {in_training!r}; use true or false")
        lookback = env.get("turbulence_lookback", 63)
        if not isinstance(lookback, int) or isinstance(lookback, bool) or lookback < 1:
            raise ConfigError(f"{prefix}{section}.turbulence_lookback: {lookback!r}; must be a whole number of "
                              f"bars >= 1")
        span = env.get("turbulence_insample")
        if span is not None and not isinstance(span, (list, tuple)):
            raise ConfigError(f"{prefix}{section}.turbulence_insample: {span!r}; give [start, end) dates of the "
                              f"in-sample range")
        for d in span or []:
            try:
                _iso(d, f"{section}.turbulence_insample")
            except ConfigError as exc:
                raise ConfigError(f"{prefix}{exc}") from None
        threshold = env.get("turbulence_threshold")
        return cls(rule=rule, quantile=None if q is None else float(q), threshold=threshold,
                   insample=None if span is None else tuple(span), lookback=lookback, in_training=in_training)


class LoopOptions(BaseModel):
    """The loop's options of one agent entry (:data:`LOOP_KEYS`), typed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    total_timesteps: int = Field(LOOP_KEYS["total_timesteps"], ge=0)
    warm_start: bool = LOOP_KEYS["warm_start"]
    retrain_timesteps: Optional[int] = Field(LOOP_KEYS["retrain_timesteps"], ge=0)
    deterministic: bool = Field(LOOP_KEYS["deterministic"], strict=True)


@dataclass(frozen=True)
class AgentOptions:
    """One ``agents.<name>`` entry split in two: the kwargs of ``make_agent`` and the loop's options."""

    kwargs: dict[str, Any]
    loop: LoopOptions


def split_agent_options(name: str, entry: Mapping[str, Any] | None, prefix: str = "") -> AgentOptions:
    """``agents.<name>``'s entry as :class:`AgentOptions` (a bad loop option: one :class:`ConfigError`
    naming ``agents.<name>.<key>``)."""
    entry = dict(entry or {})
    kwargs = {k: v for k, v in entry.items() if k not in LOOP_KEYS}
    try:
        loop = LoopOptions.model_validate({k: v for k, v in entry.items() if k in LOOP_KEYS})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if key == "deterministic":
            raise ConfigError(f"{prefix}agents.{name}.deterministic: {err.get('input')!r}; use true or false") from None
        raise ConfigError(f"{prefix}agents.{name}.{key}: {err['msg']} (got {err.get('input')!r})") from None
    return AgentOptions(kwargs=kwargs, loop=loop)


class RunSpec(_Section):
    """A benchmark config (``benchmarks/configs/*.yaml``)."""

    name: str = Field("run", description="the run's name (default run directory ``runs/<name>``)")
    data: DataSection = Field(default_factory=DataSection, description="the prices")
    features: Optional[FeaturesSection] = Field(None, description="features computed after cleaning")
    env: dict[str, Any] = Field(default_factory=dict, description="the market env: ``family`` plus "
                                "``meta.config.EnvConfig`` options and the turbulence rule keys")
    train_env: Optional[dict[str, Any]] = Field(None, description="env options for training only")
    windows: WindowsSection = Field(..., description="the walk-forward schedule")
    agents: dict[str, Optional[dict[str, Any]]] = Field(default_factory=dict, description="agent name -> options "
                                                        "(the agent's own keys and the loop's)")
    index: Optional[Union[IndexSection, list[IndexSection]]] = Field(None, description="the market-index row(s)")
    more_indices: Optional[list[IndexSection]] = Field(None, description="further index rows")
    seeds: list[int] = Field(default_factory=lambda: [0], description="seeds of the learned agents")
    periods_per_year: Optional[float] = Field(None, gt=0, description="bars a year for annualised figures "
                                              "(default: the env's, from its calendar and the bar spacing)")
    baseline_turbulence: Optional[bool] = Field(None, description="rule baselines trade under the turbulence stop "
                                                "too (default false)")
    cache_models: bool = Field(True, description="save each trained model and reuse it (ensemble, resume)")
    tensorboard: bool = Field(False, description="write SB3 TensorBoard logs in the run directory")
    use_tuned: Union[bool, dict[str, str]] = Field(False, description="apply the parameters `finmeta tune` saved "
                                                   "(``--tuned``), or ``{agent: file}`` (relative to the config)")
    tune: Optional[TuneSection] = Field(None, description="`finmeta tune` defaults")
    ray: Optional[RaySection] = Field(None, description="the Ray executor")
    published: Optional[dict[str, Any]] = Field(None, description="published figures set beside ours by "
                                                "``benchmarks.results_md`` (checked there)")

    # set by validate_config (not fields: the field list is the config's schema)
    _raw: dict = PrivateAttr(default_factory=dict)
    _path: Optional[str] = PrivateAttr(default=None)
    _env_config: Any = PrivateAttr(default=None)
    _turbulence: Optional[TurbulenceRule] = PrivateAttr(default=None)
    _validated: bool = PrivateAttr(default=False)

    @property
    def raw(self) -> dict:
        """The config as written (without the loader's keys ``_path``, ``tuned``), tuned parameters
        merged when :func:`apply_tuned` ran before validation (``run_benchmark`` does; :func:`load_spec`
        does not): what :func:`fingerprint_body` hashes. Never mutate it (nor the spec's fields: the
        fingerprint would no longer describe what the loop runs)."""
        return self._raw

    @property
    def path(self) -> Optional[str]:
        """The file the config was loaded from (None for a dict config)."""
        return self._path

    @property
    def env_options(self) -> dict[str, Any]:
        """The env section without the turbulence rule's keys: ``family`` plus the
        ``meta.config.EnvConfig`` options as written (what :func:`benchmarks.loop.build_env` takes)."""
        return {k: v for k, v in self.env.items() if k not in TURBULENCE_RULE_KEYS}

    @property
    def env_config(self) -> EnvConfig:
        """The env section built into a (validated) ``meta.config.EnvConfig``: the family's defaults
        and the options set."""
        if self._env_config is None:
            self._env_config = _env_config(self.env_options, "env", "")
        return self._env_config

    @property
    def turbulence(self) -> TurbulenceRule:
        """The env section's turbulence-stop rule."""
        if self._turbulence is None:
            self._turbulence = TurbulenceRule.from_env(self.env)
        return self._turbulence

    def agent_options(self, name: str) -> AgentOptions:
        """``agents.<name>`` split into ``make_agent`` kwargs and the loop's options (defaults for an
        agent the config does not list, e.g. an ensemble member)."""
        return split_agent_options(name, self.agents.get(name))

    @property
    def ensemble_members(self) -> tuple[str, ...]:
        """The ensemble's members (``agents.ensemble.members``, else :data:`ENSEMBLE_MEMBERS_DEFAULT`)."""
        members = (self.agents.get("ensemble") or {}).get("members")
        return tuple(members) if members is not None else ENSEMBLE_MEMBERS_DEFAULT

    @property
    def gated_index_costs(self) -> tuple[float, float]:
        """(buy, sell) cost fractions of the ``index_gated`` row: ``env.buy_cost_pct`` and
        ``env.sell_cost_pct`` as written, 0 when unset (not the family's default)."""
        return float(self.env.get("buy_cost_pct", 0.0)), float(self.env.get("sell_cost_pct", 0.0))

    def fingerprint_body(self) -> dict:
        """:func:`fingerprint_body` of the config as written (:attr:`raw`)."""
        return fingerprint_body(self._raw)


#: top-level keys the loader adds (not the user's): the config's file, and what :func:`apply_tuned`
#: merged (kept for the manifest)
_INTERNAL = ("_path", "tuned")


def _message(exc: ValidationError, where: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        section = RunSpec
        for part in err["loc"][:-1]:
            if isinstance(part, int):
                continue
            ann = section.model_fields[part].annotation
            section = next((a for a in _flat_types(ann) if isinstance(a, type) and issubclass(a, BaseModel)), section)
        known = sorted(section.model_fields)
        close = difflib.get_close_matches(str(err["loc"][-1]), known, n=2, cutoff=0.6)
        hint = f"did you mean {close}? " if close else ""
        return f"{where}{loc}: unknown key ({hint}known: {', '.join(known)})"
    return f"{where}{loc}: {err['msg']} (got {err.get('input')!r})"


def _flat_types(ann) -> list:
    from typing import get_args

    out, todo = [], [ann]
    while todo:
        a = todo.pop()
        args = get_args(a)
        if args:
            todo.extend(args)
        else:
            out.append(a)
    return out


def validate_config(config: Mapping[str, Any], where: str | None = None, *,
                    windows_given: bool = False) -> RunSpec:
    """Check every section and key of ``config``; return the typed :class:`RunSpec`.

    Raises one :class:`ConfigError` naming ``section.key`` (``where`` -- the config's name or file --
    leads the message). Reads no data. The spec keeps ``config`` as written (a copy, without the
    loader's keys) as :attr:`RunSpec.raw`. ``windows_given``: the caller cuts the windows itself
    (:class:`benchmarks.loop.WalkForward`'s ``windows=``), so the ``windows`` section may be absent.
    """
    prefix = f"config {where}: " if where else ""
    body = {k: v for k, v in config.items() if k not in _INTERNAL}
    checked = body
    if windows_given and "windows" not in body:  # a placeholder the loop never reads
        checked = {**body, "windows": {"train_start": None, "trade_start": None}}
    try:
        spec = RunSpec.model_validate(checked)
    except ValidationError as exc:
        raise ConfigError(_message(exc, prefix)) from None
    except ConfigError as exc:  # an ISO-date check inside a validator
        raise ConfigError(f"{prefix}{exc}") from None
    spec._turbulence, spec._env_config = _check_env(spec.env, "env", prefix)
    if spec.train_env:
        _check_env({**spec.env, **spec.train_env}, "train_env", prefix)
    _check_agents(spec.agents, prefix)
    spec._raw = copy.deepcopy(body)
    spec._path = config.get("_path")
    spec._validated = True
    return spec


def as_spec(config: RunSpec | Mapping[str, Any], *, windows_given: bool = False) -> RunSpec:
    """``config`` itself when it is a :class:`RunSpec`, else :func:`validate_config` of the dict (API
    callers and tests pass dicts; the loop reads only the spec). A spec not made by
    :func:`validate_config` (``RunSpec(...)`` / ``RunSpec.model_validate``) is refused: it holds no
    config as written, and its resume fingerprint would hash nothing but the dataset."""
    if isinstance(config, RunSpec):
        if not config._validated:
            raise ConfigError("a RunSpec must come from benchmarks.spec.validate_config / load_spec (or pass the "
                              "config dict): RunSpec.model_validate keeps no config as written to fingerprint")
        return config
    return validate_config(config, config.get("_path") or config.get("name"), windows_given=windows_given)


def _check_env(env: Mapping[str, Any], section: str, prefix: str) -> tuple[TurbulenceRule, EnvConfig]:
    """The env section's turbulence rule (the loop's keys, :meth:`TurbulenceRule.from_env`) and the
    rest built into an ``EnvConfig``; one :class:`ConfigError` naming ``<section>.<key>``."""
    rule = TurbulenceRule.from_env(env, section, prefix)
    return rule, _env_config({k: v for k, v in env.items() if k not in TURBULENCE_RULE_KEYS}, section, prefix)


def _env_config(options: Mapping[str, Any], section: str, prefix: str) -> EnvConfig:
    """``family`` + ``EnvConfig`` options -> the validated ``EnvConfig`` (one error naming the key)."""
    from dataclasses import fields

    from meta.config import EnvConfig

    cfg = dict(options)
    family = cfg.pop("family", "stock_trading")
    known = sorted({f.name for f in fields(EnvConfig)} | set(TURBULENCE_RULE_KEYS))
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
            raise ConfigError(f"{prefix}{section}.{key}: unknown option ({'did you mean ' + str(close) + '? ' if close else ''}"
                              f"known: {', '.join(known)})")
    try:
        return EnvConfig.for_family(family, **cfg).validate()
    except ConfigError as exc:
        text = str(exc).replace("EnvConfig.", f"{section}.")
        raise ConfigError(f"{prefix}{text}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix}{section}: {exc}") from None


#: agent names the loop computes itself (from the index row), with no agent class behind them
LOOP_ROWS = ("index_gated",)


def known_agent_names() -> list[str]:
    """Every name a config's ``agents`` or ``--agents`` may use: the registry's, ``ensemble`` and
    :data:`LOOP_ROWS` (index rows are named by the config's ``index`` section, not here).
    ``ensemble`` is no agent class: the loop picks one trained member per window by validation."""
    from agents.base import agent_names

    return sorted(set(agent_names()) | {"ensemble", *LOOP_ROWS})


def _check_agents(agents: dict, prefix: str) -> None:
    """Each agent is known, and each of its options is the agent's own or a loop option (of the
    type :class:`LoopOptions` declares)."""
    from agents.base import agent_class

    known = known_agent_names()
    for name, opts in agents.items():
        if name not in known:
            close = difflib.get_close_matches(name, known, n=2, cutoff=0.6)
            raise ConfigError(f"{prefix}agents.{name}: unknown agent ({'did you mean ' + str(close) + '? ' if close else ''}"
                              f"known: {', '.join(known)})")
        opts = dict(opts or {})
        if name == "ensemble":
            allowed = {"members"}
        elif name in LOOP_ROWS:
            allowed = set()
        else:
            from agents.base import registry_key

            try:
                key = registry_key(name, opts.pop("backend", None))
            except ConfigError as exc:
                raise ConfigError(f"{prefix}agents.{name}.backend: {exc}") from None
            split_agent_options(name, opts, prefix)  # the loop's options: typed values
            factory = agent_class(key)
            cls = factory if isinstance(factory, type) else type(factory())
            own = cls.config_keys()
            if own is None:  # the agent does not declare its keys: it checks them itself
                continue
            allowed = set(own) | set(LOOP_KEYS)
        bad = sorted(set(opts) - allowed)
        if bad:
            close = difflib.get_close_matches(bad[0], sorted(allowed), n=2, cutoff=0.6)
            raise ConfigError(f"{prefix}agents.{name}.{bad[0]}: unknown option "
                              f"({'did you mean ' + str(close) + '? ' if close else ''}known: "
                              f"{', '.join(sorted(allowed)) or 'none'})")


def reference_markdown() -> str:
    """The config reference (one table per section) for ``docs/benchmarks.md``, from the models."""
    sections = [("top level", RunSpec), ("data", DataSection), ("data.files[]", FileEntry), ("data.clean", CleanSection),
                ("features", FeaturesSection), ("windows", WindowsSection), ("index / more_indices[]", IndexSection),
                ("tune", TuneSection), ("ray", RaySection)]
    out = []
    for title, model in sections:
        out.append(f"**{title}**\n\n| key | type | default | meaning |\n|---|---|---|---|")
        for key, f in model.model_fields.items():
            typ = _type_name(f.annotation)
            if f.is_required():
                default = "required"
            elif f.default_factory is not None:
                default = f"`{f.default_factory()!r}`" if not isinstance(f.default_factory(), BaseModel) else "{}"
            else:
                default = f"`{f.default!r}`"
            out.append(f"| `{key}` | {typ} | {default} | {f.description or ''} |")
        out.append("")
    return "\n".join(out)


def _type_name(ann) -> str:
    text = repr(ann) if not isinstance(ann, type) else ann.__name__
    for junk in ("typing.", "benchmarks.spec.", "<class '", "'>"):
        text = text.replace(junk, "")
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------------------------
# the resume fingerprint
# --------------------------------------------------------------------------------------------
#: RunSpec fields whose values decide a chain's results: a run directory's checkpoints and models are
#: only reused under the same values (:meth:`benchmarks.loop.WalkForward.fingerprint` hashes them with
#: the dataset hash). ``baseline_turbulence`` counts only when set, so older run directories keep
#: their hash.
RESULT_FIELDS: tuple[str, ...] = ("data", "features", "env", "train_env", "windows", "agents", "periods_per_year")
RESULT_FIELDS_WHEN_SET: tuple[str, ...] = ("baseline_turbulence",)
#: RunSpec fields that do not change a chain's numbers (labels, which seeds/rows to run, reporting,
#: execution, tuning defaults); a test keeps every RunSpec field in exactly one of these lists
NON_RESULT_FIELDS: tuple[str, ...] = ("name", "index", "more_indices", "seeds", "cache_models", "tensorboard",
                                      "use_tuned", "tune", "ray", "published")


def fingerprint_body(config: dict) -> dict:
    """The parts of a (validated) config dict that decide a chain's results: :data:`RESULT_FIELDS`
    (None when absent) and the :data:`RESULT_FIELDS_WHEN_SET` that are set. ``use_tuned`` is not
    one: the tuned parameters are merged into ``agents`` before the fingerprint is taken."""
    body = {k: config.get(k) for k in RESULT_FIELDS}
    for k in RESULT_FIELDS_WHEN_SET:
        if k in config:
            body[k] = config[k]
    return body


# --------------------------------------------------------------------------------------------
# loading a config file
# --------------------------------------------------------------------------------------------
#: the shipped configs (``finmeta bench quickstart`` resolves ``quickstart`` here)
CONFIG_DIR = Path(__file__).parent / "configs"


def resolve_config_path(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.is_file():
        return p
    for ext in (".yaml", ".yml", ".json"):
        q = CONFIG_DIR / f"{name_or_path}{ext}"
        if q.is_file():
            return q
    known = sorted(x.stem for x in CONFIG_DIR.glob("*.y*ml"))
    raise ConfigError(f"config {name_or_path!r} is neither a file nor one of {known}")


def _read_config(name_or_path: str | Path) -> tuple[dict, Path]:
    """The mapping a config file holds (``name`` defaulting to the file's stem) and its path."""
    path = resolve_config_path(name_or_path)
    text = path.read_text(encoding="utf-8")
    cfg = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    cfg.setdefault("name", path.stem)
    if "tuned" in cfg:  # apply_tuned's record of what it merged, never the user's
        raise ConfigError(f"config {path}: tuned: is written by `finmeta bench --tuned` into the run's manifest; "
                          f"to use tuned parameters set use_tuned: true (or {{agent: file}})")
    return cfg, path


def load_config(name_or_path: str | Path) -> dict:
    """A config file (or a shipped config's name) as its dict, validated, with ``_path`` added."""
    cfg, path = _read_config(name_or_path)
    validate_config(cfg, str(path))  # every section and key, before any data is read
    cfg["_path"] = str(path)
    return cfg


def load_spec(name_or_path: str | Path) -> RunSpec:
    """A config file (or a shipped config's name) as its validated :class:`RunSpec`."""
    cfg, path = _read_config(name_or_path)
    cfg["_path"] = str(path)
    return validate_config(cfg, str(path))


# --------------------------------------------------------------------------------------------
# tuned parameters (``finmeta tune`` writes them: benchmarks.tune.write_tuned)
# --------------------------------------------------------------------------------------------
def tuned_path(config: Mapping[str, Any] | RunSpec | str | Path, agent: str) -> Path:
    """``<config dir>/<config stem>.best_<agent>.yaml`` for a config file (or a loaded config)."""
    if isinstance(config, RunSpec):
        src = config.path
    elif isinstance(config, Mapping):
        src = config.get("_path")
    else:
        src = config
    if not src:
        raise ConfigError("this config was not loaded from a file: give the output path (--out)")
    p = Path(src)
    return p.with_name(f"{p.stem}.best_{str(agent).lower()}.yaml")


def load_tuned(config: Mapping[str, Any] | RunSpec | str | Path, agent: str,
               path: str | Path | None = None) -> dict | None:
    """The tuned parameters of ``agent`` (None when no file exists)."""
    p = Path(path) if path else tuned_path(config, agent)
    if not p.is_file():
        return None
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not a tuned-parameters file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict):
        raise ConfigError(f"{p}: not a tuned-parameters file (no 'params' mapping)")
    if str(doc.get("agent", agent)).lower() != str(agent).lower():
        raise ConfigError(f"{p}: holds parameters for {doc.get('agent')!r}, not {agent!r}")
    return dict(doc["params"])


def apply_tuned(config: dict, agents: list[str] | None = None, *, required: bool = False) -> dict:
    """A copy of ``config`` with tuned parameters merged into ``config['agents'][name]``.

    Which files: ``config['use_tuned']`` may be ``true`` (the default location of every agent,
    :func:`tuned_path`) or a mapping ``{agent: path}`` (relative paths are relative to the
    config's folder). Only agents already listed in ``config['agents']`` are updated (ensemble
    members included, since the ensemble trains them from their own entries); the training
    budget (``total_timesteps``) is never changed. ``required=True`` raises when an RL agent has
    no tuned file. What was applied is recorded in ``config['tuned']`` (for the manifest; the
    spec does not read it).
    """
    cfg = copy.deepcopy(config)
    use = cfg.get("use_tuned", True)
    if use is False or use is None:
        return cfg
    base = Path(cfg["_path"]).parent if cfg.get("_path") else Path(".")
    listed = list((cfg.get("agents") or {}).keys())
    names = [a for a in (agents or listed) if a in RL_AGENTS and a in listed]
    applied: dict[str, dict] = {}
    for name in names:
        if isinstance(use, dict):
            if name not in use:
                if required:
                    raise ConfigError(f"use_tuned has no file for agent {name!r}")
                continue
            p = Path(use[name])
            p = p if p.is_absolute() else base / p
        else:
            p = tuned_path(cfg, name)
        params = load_tuned(cfg, name, p)
        if params is None:
            if required:
                raise ConfigError(f"no tuned parameters for {name!r} ({p} does not exist): run finmeta tune first")
            continue
        params.pop("total_timesteps", None)
        entry = dict((cfg.get("agents") or {}).get(name) or {})
        entry.update(params)
        cfg["agents"][name] = entry
        applied[name] = {"file": str(p), "params": params}
    cfg["tuned"] = applied
    return cfg

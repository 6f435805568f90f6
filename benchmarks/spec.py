"""The run spec: every section and key a benchmark config may hold, typed and documented.

``validate_config(config)`` checks a config (the dict a YAML file loads to) against these section
types before any data is read: an unknown key, a wrong type or a bad value is one
:class:`~finmeta.errors.ConfigError` naming ``section.key`` (with the closest known keys for a typo).
The env section is also built into :class:`meta.config.EnvConfig` here, so a bad env option fails at
load, not after the data pipeline ran. Agent options are checked against the agent's own keys
(:meth:`agents.base.Agent.config_keys`) plus the loop's (:data:`benchmarks.loop.LOOP_KEYS`).

The loop still reads the validated dict (the sections below are its schema); ``docs/benchmarks.md``'s
config reference is generated from these models (:func:`reference_markdown`) and a test keeps the
two equal.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from finmeta.errors import ConfigError


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
    max_retries: int = Field(2, ge=0, description="retries of a chain whose worker died (it resumes)")
    runtime_env: Optional[dict[str, Any]] = Field(None, description="Ray runtime_env")
    node_ip_address: Optional[str] = Field(None, description="this node's address for Ray")


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
    periods_per_year: float = Field(252, gt=0, description="bars a year for annualised figures")
    baseline_turbulence: Optional[bool] = Field(None, description="rule baselines trade under the turbulence stop "
                                                "too (default false)")
    cache_models: bool = Field(True, description="save each trained model and reuse it (ensemble, resume)")
    tensorboard: bool = Field(False, description="write SB3 TensorBoard logs in the run directory")
    use_tuned: bool = Field(False, description="apply the parameters `finmeta tune` saved (``--tuned``)")
    tune: Optional[TuneSection] = Field(None, description="`finmeta tune` defaults")
    ray: Optional[RaySection] = Field(None, description="the Ray executor")
    published: Optional[dict[str, Any]] = Field(None, description="published figures set beside ours by "
                                                "``benchmarks.results_md`` (checked there)")


#: top-level keys the loader adds (not the user's)
_INTERNAL = ("_path",)


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


def validate_config(config: dict, where: str | None = None) -> RunSpec:
    """Check every section and key of ``config``; return the typed :class:`RunSpec`.

    Raises one :class:`ConfigError` naming ``section.key`` (``where`` -- the config's name or file --
    leads the message). Reads no data.
    """
    prefix = f"config {where}: " if where else ""
    body = {k: v for k, v in config.items() if k not in _INTERNAL}
    try:
        spec = RunSpec.model_validate(body)
    except ValidationError as exc:
        raise ConfigError(_message(exc, prefix)) from None
    except ConfigError as exc:  # an ISO-date check inside a validator
        raise ConfigError(f"{prefix}{exc}") from None
    _check_env(spec.env, "env", prefix)
    if spec.train_env:
        _check_env({**spec.env, **spec.train_env}, "train_env", prefix)
    _check_agents(spec.agents, prefix)
    return spec


def _check_env(env: dict, section: str, prefix: str) -> None:
    """Build the env section into an ``EnvConfig`` (the turbulence rule keys are the loop's)."""
    from meta.config import EnvConfig

    from .loop import TURBULENCE_RULE_KEYS, TURBULENCE_RULES

    cfg = dict(env)
    family = cfg.pop("family", "stock_trading")
    rule = {k: cfg.pop(k) for k in TURBULENCE_RULE_KEYS if k in cfg}
    if rule.get("turbulence_rule", "quantile") not in TURBULENCE_RULES:
        raise ConfigError(f"{prefix}{section}.turbulence_rule: {rule['turbulence_rule']!r}; choose one of "
                          f"{', '.join(TURBULENCE_RULES)}")
    q = rule.get("turbulence_quantile")
    if q is not None and (isinstance(q, bool) or not isinstance(q, (int, float)) or not 0.0 < float(q) <= 1.0):
        raise ConfigError(f"{prefix}{section}.turbulence_quantile: {q!r}; must lie in (0, 1]")
    if "turbulence_in_training" in rule and not isinstance(rule["turbulence_in_training"], bool):
        raise ConfigError(f"{prefix}{section}.turbulence_in_training: {rule['turbulence_in_training']!r}; "
                          f"use true or false")
    for d in rule.get("turbulence_insample") or []:
        try:
            _iso(d, f"{section}.turbulence_insample")
        except ConfigError as exc:
            raise ConfigError(f"{prefix}{exc}") from None
    from dataclasses import fields

    known = sorted({f.name for f in fields(EnvConfig)} | set(TURBULENCE_RULE_KEYS))
    for key in cfg:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=2, cutoff=0.6)
            raise ConfigError(f"{prefix}{section}.{key}: unknown option ({'did you mean ' + str(close) + '? ' if close else ''}"
                              f"known: {', '.join(known)})")
    try:
        EnvConfig.for_family(family, **cfg).validate()
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
    """Each agent is known, and each of its options is the agent's own or a loop option."""
    from agents.base import agent_class

    from .loop import LOOP_KEYS

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


def load_config(name_or_path: str | Path) -> dict:
    path = resolve_config_path(name_or_path)
    text = path.read_text(encoding="utf-8")
    cfg = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a mapping")
    cfg.setdefault("name", path.stem)
    validate_config(cfg, str(path))  # every section and key, before any data is read
    cfg["_path"] = str(path)
    return cfg

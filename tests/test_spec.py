"""The typed run spec (benchmarks/spec.py): every config key checked at load, before any data work."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from benchmarks.run import load_config, run_benchmark
from benchmarks.spec import reference_markdown, validate_config
from finmeta.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "benchmarks" / "configs").glob("*.yaml"))

BASE = {
    "name": "spec_tiny",
    "data": {"source": "synthetic", "tickers": 3, "start": "2017-01-01", "end": "2019-01-01", "seed": 5},
    "features": {"engine": "stockstats", "indicators": ["macd"], "turbulence": False},
    "env": {"family": "stock_trading", "initial_cash": 100_000, "hmax": 50},
    "windows": {"train_start": "2017-01-01", "trade_start": "2018-07-02", "rebalance": 63, "validation": 21},
    "agents": {"equal_weight": {"rebalance_every": 5}, "ppo": {"total_timesteps": 64, "n_steps": 32},
               "ddpg": {"backend": "elegantrl", "total_timesteps": 64}},
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_is_valid(path):
    validate_config(yaml.safe_load(path.read_text()), path.stem)


def _with(path: str, value):
    cfg = copy.deepcopy(BASE)
    *parents, key = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    node[key] = value
    return cfg


def _without(path: str):
    cfg = copy.deepcopy(BASE)
    *parents, key = path.split(".")
    node = cfg
    for p in parents:
        node = node[p]
    del node[key]
    return cfg


CASES = [
    # (config, the message's start after "config spec: ", a fragment that must follow)
    (_with("windows.rebalnce", 63), "windows.rebalnce: unknown key", "did you mean ['rebalance']"),
    (_with("windows.rebalance", "x"), "windows.rebalance: Input should be a valid integer", "'x'"),
    (_with("windows.validation", -1), "windows.validation:", "greater than or equal to 0"),
    (_with("windows.mode", "expandng"), "windows.mode:", "'expanding' or 'rolling'"),
    (_with("windows.trade_start", "07-02-2018"), "windows.trade_start: '07-02-2018' is not an ISO date", ""),
    (_with("data.end", "01/01/2019"), "data.end: '01/01/2019' is not an ISO date", ""),
    (_with("data.clean", {"late_start": "cutt"}), "data.clean.late_start:", "'cut' or 'drop'"),
    (_with("data.clean", {"min_coverag": 0.5}), "data.clean.min_coverag: unknown key", "min_coverage"),
    (_with("features.engine", "ta-lib"), "features.engine:", "'stockstats' or 'talib'"),
    (_with("features.turbulence_mod", "icaif2020"), "features.turbulence_mod: unknown key", "turbulence_mode"),
    (_with("env.hmaxx", 3), "env.hmaxx: unknown option", "did you mean ['hmax']"),
    (_with("env.turbulence_rule", "switch"), "env.turbulence_rule: 'switch'", "icaif2020_switch"),
    (_with("env.turbulence_quantile", 1.5), "env.turbulence_quantile: 1.5", "(0, 1]"),
    (_with("env.fill", "midday"), "env.fill:", ""),
    (_with("train_env", {"hmx": 3}), "train_env.hmx: unknown option", "hmax"),
    (_with("agents.equal_weight", {"rebalance_evry": 5}), "agents.equal_weight.rebalance_evry: unknown option",
     "did you mean ['rebalance_every']"),
    (_with("agents.ppo", {"n_step": 32}), "agents.ppo.n_step: unknown option", "did you mean ['n_steps'"),
    (_with("agents.ppo", {"backend": "jax"}), "agents.ppo.backend:", "'elegantrl' or 'torch'"),
    (_with("agents.ppo", {"backend": "torch", "num_envs": 64, "n_stepz": 5}), "agents.ppo.n_stepz: unknown option",
     "did you mean ['n_steps'"),
    (_with("agents.ensemble", {"member": ["a2c"]}), "agents.ensemble.member: unknown option", "members"),
    (_with("agents.equalweight", {}), "agents.equalweight: unknown agent", "equal_weight"),
    (_with("seeds", ["a"]), "seeds.0:", "valid integer"),
    (_with("ray", {"max_retry": 2}), "ray.max_retry: unknown key", "max_retries"),
    (_with("indexx", {"price_weighted": True}), "indexx: unknown key", "did you mean ['index'"),
    (_without("windows.trade_start"), "windows.trade_start: Field required", ""),
]


@pytest.mark.parametrize("cfg,start,fragment", CASES, ids=[c[1].split(":")[0] for c in CASES])
def test_a_bad_key_or_value_is_one_error_naming_section_and_key(cfg, start, fragment):
    with pytest.raises(ConfigError) as ei:
        validate_config(cfg, "spec")
    msg = str(ei.value)
    assert msg.startswith(f"config spec: {start}"), msg
    assert fragment in msg and "\n" not in msg


def test_the_check_comes_before_any_data_is_read(tmp_path, monkeypatch):
    import benchmarks.dataset as dataset

    def no_data(*a, **k):
        raise AssertionError("data was read before the config was validated")

    monkeypatch.setattr(dataset, "load_frame", no_data)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(_with("env.hmaxx", 3)))
    with pytest.raises(ConfigError, match=r"bad.yaml: env.hmaxx: unknown option"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"agents.equal_weight.rebalance_evry"):
        run_benchmark(_with("agents.equal_weight", {"rebalance_evry": 5}), out=tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_the_docs_config_reference_is_the_spec():
    text = (ROOT / "docs" / "benchmarks.md").read_text()
    block = re.search(r"<!-- config-reference:start -->\n(.*)<!-- config-reference:end -->", text, re.S)
    assert block is not None, "docs/benchmarks.md lost its config reference markers"
    assert block.group(1) == reference_markdown(), (
        "docs/benchmarks.md's config reference is stale: regenerate it from benchmarks.spec.reference_markdown()")


def test_every_spec_field_is_classified_for_the_resume_fingerprint():
    """The fingerprint's key list is the spec's, not hand-kept in the loop: a new RunSpec field must be
    declared result-deciding or not, or this fails (issue 12)."""
    from benchmarks.spec import NON_RESULT_FIELDS, RESULT_FIELDS, RESULT_FIELDS_WHEN_SET, RunSpec, fingerprint_body

    classified = [*RESULT_FIELDS, *RESULT_FIELDS_WHEN_SET, *NON_RESULT_FIELDS]
    assert sorted(classified) == sorted(RunSpec.model_fields), set(RunSpec.model_fields) ^ set(classified)
    cfg = load_config("quickstart")
    body = fingerprint_body(cfg)
    assert set(body) == set(RESULT_FIELDS) and body["agents"] == cfg["agents"]
    assert fingerprint_body({**cfg, "baseline_turbulence": True})["baseline_turbulence"] is True
    assert fingerprint_body({**cfg, "seeds": [5], "name": "x"}) == body


def test_the_specs_typed_views_of_env_agents_and_turbulence_rule():
    """The loop's keys inside the env and agents sections, typed (issue 12)."""
    from meta.config import EnvConfig

    from benchmarks.spec import ENSEMBLE_MEMBERS_DEFAULT, LoopOptions, TurbulenceRule, load_spec

    spec = load_spec("icaif2020_original")
    assert spec.turbulence == TurbulenceRule(rule="icaif2020_switch", quantile=0.9, lookback=63, in_training=False,
                                             insample=("2009-01-01", "2015-10-01"))
    assert isinstance(spec.env_config, EnvConfig) and spec.env_config.fill == "close"
    assert not set(spec.env_options) & {"turbulence_rule", "turbulence_quantile", "turbulence_in_training"}
    a2c = spec.agent_options("a2c")
    assert a2c.loop == LoopOptions(total_timesteps=30_000, deterministic=False) and "total_timesteps" not in a2c.kwargs
    assert spec.agent_options("not_listed").loop == LoopOptions() and spec.agent_options("not_listed").kwargs == {}
    assert spec.ensemble_members == ENSEMBLE_MEMBERS_DEFAULT
    assert spec.path and spec.path.endswith("icaif2020_original.yaml")
    assert spec.periods_per_year == 252  # as written; absent -> None (the env's, see test_architecture)
    assert validate_config({k: v for k, v in load_config("quickstart").items()
                            if k != "periods_per_year"}).periods_per_year is None


@pytest.mark.parametrize("key,value,fragment", [
    ("deterministic", "no", "agents.a2c.deterministic: 'no'; use true or false"),
    ("total_timesteps", "lots", "agents.a2c.total_timesteps"),
    ("retrain_timesteps", -5, "agents.a2c.retrain_timesteps"),
])
def test_a_bad_loop_option_is_one_error_at_load(key, value, fragment):
    cfg = load_config("quickstart")
    cfg["agents"]["a2c"] = {**(cfg["agents"].get("a2c") or {}), key: value}
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        validate_config(cfg, "q")


def test_the_spec_owns_tuned_parameters_and_a_tuned_config_validates(tmp_path):
    """tuned_path / load_tuned / apply_tuned live in the spec (tune re-exports them); the ``tuned``
    record apply_tuned adds is the loader's, not a config key (``bench --tuned`` was refused)."""
    from benchmarks import spec as spec_mod
    from benchmarks import tune

    assert tune.apply_tuned is spec_mod.apply_tuned and tune.load_tuned is spec_mod.load_tuned
    assert tune.tuned_path is spec_mod.tuned_path
    cfg = load_config("quickstart")
    path = tmp_path / "q.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in cfg.items() if k != "_path"}))
    cfg = load_config(path)
    cfg["agents"]["ppo"] = {"total_timesteps": 100}
    spec_mod.tuned_path(cfg, "ppo").write_text(yaml.safe_dump({"agent": "ppo", "params": {"n_steps": 64,
                                                                                          "total_timesteps": 5}}))
    tuned = spec_mod.apply_tuned({**cfg, "use_tuned": True})
    assert tuned["agents"]["ppo"] == {"total_timesteps": 100, "n_steps": 64} and "ppo" in tuned["tuned"]
    spec = validate_config(tuned, "q")
    assert "tuned" not in spec.raw and spec.agent_options("ppo").kwargs == {"n_steps": 64}
    assert spec_mod.tuned_path(spec, "ppo") == spec_mod.tuned_path(cfg, "ppo") == tmp_path / "q.best_ppo.yaml"
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump({"agent": "ppo", "params": {"n_steps": 128}}))
    named = {**cfg, "use_tuned": {"ppo": "mine.yaml"}}  # the documented {agent: file} form
    assert validate_config(named, "q").use_tuned == {"ppo": "mine.yaml"}
    assert spec_mod.apply_tuned(named)["agents"]["ppo"]["n_steps"] == 128


def test_as_spec_refuses_a_runspec_not_made_by_validate_config():
    """RunSpec.model_validate keeps no config as written: the loop would fingerprint nothing but the
    dataset (every RESULT_FIELD None), so stale checkpoints of another config would be reused."""
    from benchmarks.spec import RunSpec, as_spec, validate_config

    cfg = {"name": "t", "windows": {"train_start": "2016-01-01", "trade_start": "2019-01-02"},
           "agents": {"equal_weight": {}}}
    with pytest.raises(ConfigError, match="validate_config"):
        as_spec(RunSpec.model_validate(cfg))
    spec = validate_config(cfg)
    assert as_spec(spec) is spec and spec.fingerprint_body()["windows"] == cfg["windows"]


def test_a_config_file_may_not_carry_the_tuned_record(tmp_path):
    """``tuned`` is apply_tuned's record (kept for the manifest); written by hand in a config file it
    would pass as applied parameters, so the loader refuses it and names use_tuned."""
    from benchmarks.spec import load_config, load_spec

    from benchmarks.spec import CONFIG_DIR

    text = (CONFIG_DIR / "quickstart.yaml").read_text() + "\ntuned: {a2c: {params: {learning_rate: 0.1}}}\n"
    path = tmp_path / "hand_tuned.yaml"
    path.write_text(text)
    for loader in (load_config, load_spec):
        with pytest.raises(ConfigError, match="use_tuned"):
            loader(path)

"""Layer contracts of issue 12: the kernel's backend protocol and the one annualisation rule."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from meta.backend import Backend, NumpyBackend, TorchBackend, get_backend

ROOT = Path(__file__).resolve().parents[1]


def _protocol_members() -> set[str]:
    names = set(getattr(Backend, "__annotations__", {}))
    names |= {k for k, v in vars(Backend).items() if callable(v) and not k.startswith("_")}
    return names


def test_both_backends_implement_the_backend_protocol():
    assert isinstance(get_backend("numpy"), Backend)
    assert isinstance(get_backend("torch"), Backend)
    members = _protocol_members()
    for backend in (NumpyBackend("float64"), TorchBackend("float64")):
        missing = [m for m in members if not hasattr(backend, m)]
        assert not missing, (type(backend).__name__, missing)


def test_the_protocol_lists_every_backend_operation_the_env_layer_calls():
    used: set[str] = set()
    for f in ("kernel.py", "schemes.py", "envs.py"):
        text = (ROOT / "meta" / f).read_text()
        used |= set(re.findall(r"\bB\.([a-z_][a-z0-9_]*)", text))
    used.discard("torch")  # the torch module itself, reached only behind `B.name == "torch"`
    assert used, "no backend calls found"
    assert used <= _protocol_members(), sorted(used - _protocol_members())


# ------------------------------------------------------------------------------------ annualisation


def test_data_calendars_map_to_env_calendars():
    from data_processors.calendars import TRADING_DAYS, env_calendar
    from data_processors.sources.base import DataSource  # noqa: F401 - the registry's sources
    from meta.config import CALENDARS

    assert set(TRADING_DAYS) == set(CALENDARS)
    assert [env_calendar(c) for c in ("XNYS", "XNAS", "XSHG", "XSHE", "24/7", "FX", "fx", "XHKG", None)] == \
        ["equity", "equity", "ashare", "ashare", "crypto", "forex", "forex", "equity", "equity"]
    for c in CALENDARS:
        assert env_calendar(c) == c


def _arrays(freq: str, calendar: str, T: int = 60):
    import numpy as np

    from data_processors.arrays import MarketArrays

    rng = np.random.default_rng(0)
    close = (50 * np.exp(np.cumsum(rng.normal(0, 0.01, size=(T, 2)), axis=0))).astype(np.float32)
    times = pd_times(freq, T)
    return MarketArrays(times=times, tickers=("A", "B"), close=close, open=close, high=close * 1.01,
                        low=close * 0.99, volume=np.full((T, 2), 1e6, np.float32),
                        features=np.zeros((T, 2, 0), np.float32), feature_names=(), meta={"calendar": calendar})


def pd_times(freq: str, T: int):
    import pandas as pd

    if freq == "1d":  # business days: weekends stretch the spacing, still a daily bar
        return pd.bdate_range("2021-01-04", periods=T).to_numpy().astype("datetime64[ns]")
    return pd.date_range("2021-01-04", periods=T, freq=freq).to_numpy().astype("datetime64[ns]")


@pytest.mark.parametrize("calendar,freq,expected", [
    ("XNYS", "1d", 252.0), ("XSHG", "1d", 242.0), ("24/7", "1d", 365.0), ("FX", "1d", 260.0),
    ("24/7", "1h", 8760.0), ("FX", "5min", 260.0 * 288), ("XNYS", "1min", 252.0 * 390), ("XSHG", "30min", 242.0 * 8),
    ("XNYS", "7D", 365.25 / 7),
])
def test_env_metrics_and_the_calendar_rule_agree(calendar, freq, expected):
    import pandas as pd

    from benchmarks.metrics import bars_per_year as metrics_bpy
    from data_processors.calendars import bars_per_year
    from meta import make_env

    env = make_env(_arrays(freq, calendar), family="stock_trading", calendar="auto")
    assert env.metadata["bars_per_year"] == pytest.approx(expected, rel=1e-12)
    seconds = pd.Timedelta(freq[:-1] + "D" if freq.endswith("d") else freq).total_seconds()
    assert bars_per_year(calendar, seconds) == pytest.approx(expected, rel=1e-12)
    assert metrics_bpy(freq.lower(), calendar) == pytest.approx(expected, rel=1e-12)


def test_auto_calendar_only_when_asked_and_explicit_bars_per_year_wins():
    from meta import make_env

    a = _arrays("1d", "XSHG")
    assert make_env(a, family="stock_trading").metadata["bars_per_year"] == 252.0  # the family's calendar
    auto = make_env(a, family="stock_trading", calendar="auto")
    assert auto.metadata["calendar"] == auto.config.calendar == "ashare"
    assert make_env(a, family="stock_trading", calendar="auto", bars_per_year=250).metadata["bars_per_year"] == 250


def test_the_loop_default_is_the_rule_for_daily_equities_and_an_explicit_value_wins(tmp_path):
    import copy

    from benchmarks.loop import WalkForward
    from benchmarks.metrics import TRADING_DAYS_STOCK
    from data_processors.calendars import bars_per_year

    a = _arrays("1d", "XNYS", T=300)
    cfg = {"env": {"family": "stock_trading"}, "agents": {"buy_and_hold": {}},
           "windows": {"train_start": "2021-01-04", "trade_start": str(pd_times("1d", 300)[200])[:10],
                       "rebalance": 50, "validation": 20}}
    assert WalkForward(a, copy.deepcopy(cfg), tmp_path / "a").periods_per_year == bars_per_year("equity") \
        == TRADING_DAYS_STOCK == 252
    assert WalkForward(a, dict(copy.deepcopy(cfg), periods_per_year=8760), tmp_path / "b").periods_per_year == 8760


# ------------------------------------------------------------------------------------ loop hooks


def test_the_loop_reads_an_agents_kind_and_hooks_from_its_class(tmp_path):
    import copy

    from agents.base import AGENT_REGISTRY, register_agent
    from agents.baselines import EqualWeight
    from benchmarks.loop import WalkForward, _gated, learns

    calls = []

    class Hooked(EqualWeight):
        name = "hooked_rule_test"
        trades_under_stop = True

        def carry_over(self, state):
            calls.append(state is None)
            return self

        def window_diagnostics(self, env, seed, start):
            return {"my_figure": float(start)}

    register_agent("hooked_rule_test", Hooked)
    try:
        assert learns("hooked_rule_test") is False and _gated("hooked_rule_test") is True
        assert learns("ensemble") is True and learns("no_such_agent_test") is False
        a = _arrays("1d", "XNYS", T=300)
        cfg = {"env": {"family": "stock_trading"}, "agents": {"hooked_rule_test": {}},
               "windows": {"train_start": "2021-01-04", "trade_start": str(pd_times("1d", 300)[200])[:10],
                           "rebalance": 50, "validation": 20}}
        ch = WalkForward(a, copy.deepcopy(cfg), tmp_path).run_chain("hooked_rule_test", 0)
        assert calls == [True] + [False] * (len(ch.windows) - 1)
        assert all(set(r["diversity"]) == {"my_figure"} for r in ch.windows)
    finally:
        AGENT_REGISTRY.pop("hooked_rule_test", None)


@pytest.mark.parametrize("family,calendar,freq,env,expected", [
    ("ashare", "XSHG", "1d", {}, 242.0),
    ("stock_trading", "XSHG", "1d", {"calendar": "auto"}, 242.0),
    ("crypto", "24/7", "1h", {}, 8760.0),
    ("stock_trading", "XSHG", "1d", {"bars_per_year": 250}, 250.0),
])
def test_without_periods_per_year_the_loop_annualises_as_the_env_does(family, calendar, freq, env, expected, tmp_path):
    """An A-share or crypto config without ``periods_per_year`` used to annualise with 252 while its
    env reported 242 / 8760 bars a year; the default is now the env's figure (issue 12)."""
    from benchmarks.loop import WalkForward
    from benchmarks.windows import Window
    from meta import make_env

    a = _arrays(freq, calendar, T=150)
    cfg = {"env": {"family": family, **env}, "agents": {"equal_weight": {}}}
    wf = WalkForward(a, cfg, tmp_path, windows=[Window(0, (0, 100), (100, 120), (120, 150))])
    assert wf.spec.periods_per_year is None
    assert wf.periods_per_year == expected == wf._trade_env(wf.windows[0], None)[0].metadata["bars_per_year"]
    assert make_env(a, family=family, **env).metadata["bars_per_year"] == expected
    assert WalkForward(a, dict(cfg, periods_per_year=252), tmp_path, windows=wf.windows).periods_per_year == 252


def test_a_run_without_periods_per_year_records_the_envs_figure_in_its_manifest(tmp_path):
    import json

    from benchmarks.run import run_benchmark

    cfg = {"name": "ashare_days",
           "data": {"source": "synthetic", "tickers": 3, "start": "2017-01-01", "end": "2018-07-01", "seed": 5},
           "features": {"engine": "stockstats", "indicators": ["macd"], "turbulence": False},
           "env": {"family": "stock_trading", "calendar": "ashare", "initial_cash": 100_000, "hmax": 50},
           "windows": {"train_start": "2017-01-01", "trade_start": "2018-01-02", "rebalance": 63, "validation": 0},
           "agents": {"equal_weight": {}}}
    run_benchmark(cfg, out=tmp_path / "run", progress=False, tearsheets=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["periods_per_year"] == 242.0
    assert "periods_per_year" not in manifest["config"]  # the config as written


# ------------------------------------------------------------------------------------ import directions


def _imports(module: Path) -> set[str]:
    """Every benchmarks module ``module`` imports (top level and inside functions), by name."""
    import ast

    names: set[str] = set()
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from .x import y / from . import x
                names |= {base} if base else {a.name for a in node.names}
            elif base.startswith("benchmarks."):
                names.add(base.removeprefix("benchmarks."))
            elif base == "benchmarks":
                names |= {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix("benchmarks.") for a in node.names if a.name.startswith("benchmarks.")}
    return names


def test_benchmarks_import_directions():
    """spec -> dataset/rundir -> loop -> run (orchestration): the spec is upstream of the loop, and the
    tuner, results_md and the loop read spec/dataset/rundir, never run.py (issue 12)."""
    bench = ROOT / "benchmarks"
    for name in ("tune", "results_md", "loop", "spec", "dataset", "rundir", "distributed", "cli_tune", "report"):
        assert "run" not in _imports(bench / f"{name}.py"), f"benchmarks/{name}.py imports benchmarks/run.py"
    assert not _imports(bench / "spec.py") & {"loop", "tune", "report", "distributed"}
    assert "spec" in _imports(bench / "loop.py") and "spec" in _imports(bench / "tune.py")


def test_the_run_directory_owns_the_manifest(tmp_path):
    from benchmarks import report, rundir

    for name in ("build_manifest", "write_manifest", "read_manifest", "git_commit", "library_versions"):
        assert getattr(report, name) is getattr(rundir, name)  # report re-exports the owner's
    path = rundir.write_manifest(tmp_path, rundir.build_manifest(config={"name": "x"}, periods_per_year=242))
    assert path == tmp_path / rundir.MANIFEST and rundir.read_manifest(tmp_path)["periods_per_year"] == 242


# ------------------------------------------------------------------------------------ typed kernel


def _unannotated(path: Path) -> list[str]:
    """``name:line`` of every function / method in ``path`` (nested ones included, lambdas not) that
    lacks an annotation on an argument other than a method's ``self`` / ``cls``, or on its return
    (``__init__`` included: ``-> None``)."""
    import ast

    tree = ast.parse(path.read_text())
    methods = {id(f) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
               for f in c.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))}
    missing = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        a = node.args
        args = [*a.posonlyargs, *a.args, *a.kwonlyargs, *(x for x in (a.vararg, a.kwarg) if x is not None)]
        is_static = any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in node.decorator_list)
        if id(node) in methods and not is_static and args and args[0].arg in ("self", "cls"):
            args = args[1:]
        if node.returns is None or any(x.annotation is None for x in args):
            missing.append(f"{node.name}:{node.lineno}")
    return missing


def test_the_meta_layer_is_fully_annotated():
    """Every function and method of ``meta/`` annotates its arguments and its return (issue 12), so
    the kernel layer stays typed; arrays are ``meta.backend.Array`` / ``numpy.typing.NDArray``."""
    files = sorted((ROOT / "meta").glob("*.py"))
    assert len(files) >= 7, files
    missing = {p.name: m for p in files if (m := _unannotated(p))}
    assert not missing, f"unannotated functions (name:line): {missing}"

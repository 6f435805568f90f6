"""``--executor ray``: chains as Ray tasks on a real two-node cluster give the local results exactly.

The cluster is started here with ``ray start`` (a head and a second node, one CPU each, in a
temporary Ray temp dir) on the loopback address 127.0.0.2 -- Ray rewrites 127.0.0.1/localhost to the
machine's primary IP, any other 127/8 address it keeps -- and the processes this test started are
killed (by process group) at the end, even on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from benchmarks.distributed import ray_address, run_chains_ray_with_info
from benchmarks.loop import WalkForward
from finmeta.errors import ConfigError

LOOPBACK = "127.0.0.2"

TINY = {
    "name": "tiny_ray",
    "data": {"source": "synthetic", "tickers": 3, "start": "2018-01-01", "end": "2019-10-01", "seed": 7},
    "features": {"engine": "stockstats", "indicators": ["macd", "rsi_30"], "turbulence": True},
    "env": {"family": "stock_trading", "initial_cash": 1_000_000, "hmax": 100, "buy_cost_pct": 0.001,
            "sell_cost_pct": 0.001, "reward_scaling": 1e-4, "turbulence_quantile": 0.99, "fill": "open"},
    "windows": {"train_start": "2018-01-01", "trade_start": "2019-07-01", "trade_end": "2019-10-01",
                "rebalance": 32, "validation": 40},
    "agents": {"a2c": {"total_timesteps": 200, "n_steps": 5}, "buy_and_hold": {}},
    "seeds": [0],
}
JOBS = [("a2c", 0), ("buy_and_hold", 0), ("a2c", 1)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(arrays, config, local chains): the local executor's results for JOBS."""
    pytest.importorskip("ray")
    from benchmarks.run import build_arrays

    arrays, _ = build_arrays(TINY)
    run_dir = tmp_path_factory.mktemp("local_run")
    wf = WalkForward(arrays, TINY, run_dir)
    assert len(wf.windows) == 2  # carry-over between windows is exercised
    local = [wf.run_chain(a, s) for a, s in JOBS]
    return arrays, TINY, local


def _same(local, remote) -> None:
    assert (local.agent, local.seed) == (remote.agent, remote.seed)
    np.testing.assert_array_equal(local.times, remote.times)
    # bitwise, not approximately
    assert local.values.tobytes() == remote.values.tobytes()
    assert np.array_equal(local.actions, remote.actions, equal_nan=True)
    assert local.costs.tobytes() == remote.costs.tobytes()
    assert local.turnover.tobytes() == remote.turnover.tobytes()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in local.windows]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in remote.windows]


def test_ray_address_resolution(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert ray_address({}) is None
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6379")
    assert ray_address({}) == "10.1.2.3:6379"
    assert ray_address({"ray": {"address": "auto"}}) == "auto"
    assert ray_address({"ray": {"address": "auto"}}, address="1.2.3.4:1") == "1.2.3.4:1"


def test_unknown_ray_key_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="config.ray: unknown keys \\['adress'\\]"):
        run_chains_ray_with_info(None, {"ray": {"adress": "x"}}, tmp_path, [("a2c", 0)])


# --------------------------------------------------------------------------------------------
# a real two-node cluster
# --------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _kill_group(proc: subprocess.Popen, grace: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, the process group of ``proc`` (a ``ray start --block`` we started).

    ``start_new_session=True`` made ``proc`` the leader of its own group, so the group holds only
    what it spawned (gcs, raylet, agents, workers).
    """
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is still draining
    except ProcessLookupError:
        pass
    proc.wait(10)


@pytest.fixture
def two_node_cluster(monkeypatch):
    """Start a head and a worker node (1 CPU each) on 127.0.0.2; yield the GCS address."""
    ray_bin = shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the `ray` command is not installed")
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    tmp = tempfile.mkdtemp(prefix="fmray", dir="/tmp")  # short: Ray's unix socket paths are limited
    port = _free_port()
    common = ["--num-cpus=1", f"--node-ip-address={LOOPBACK}", "--block", "--disable-usage-stats"]
    procs: list[subprocess.Popen] = []
    logs = []
    try:
        for args in (
            ["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={tmp}/head",
             f"--ray-client-server-port={_free_port()}"],
            [f"--address={LOOPBACK}:{port}", f"--temp-dir={tmp}/node2"],
        ):
            log = open(Path(tmp) / f"node{len(procs)}.log", "w")
            logs.append(log)
            procs.append(subprocess.Popen([ray_bin, "start", *args, *common], env=env, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True))
            if len(procs) == 1:  # wait for the GCS before adding the second node
                deadline = time.time() + 40
                while True:
                    try:
                        socket.create_connection((LOOPBACK, port), timeout=0.5).close()
                        break
                    except OSError:
                        if time.time() > deadline or procs[0].poll() is not None:
                            pytest.fail("the Ray head did not start:\n" + Path(log.name).read_text()[-2000:])
                        time.sleep(0.3)
        yield f"{LOOPBACK}:{port}"
    finally:
        for p in reversed(procs):
            _kill_group(p)
        for log in logs:
            log.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_for_nodes(address: str, n: int, timeout: float = 45.0) -> None:
    import ray

    ray.init(address=address, log_to_driver=False, _node_ip_address=LOOPBACK, configure_logging=False)
    try:
        deadline = time.time() + timeout
        while len([x for x in ray.nodes() if x["Alive"]]) < n:
            if time.time() > deadline:
                pytest.fail(f"only {len(ray.nodes())} of {n} Ray nodes joined")
            time.sleep(0.3)
    finally:
        ray.shutdown()


def test_two_node_cluster_matches_local_executor(tiny, two_node_cluster, tmp_path):
    arrays, config, local = tiny
    _wait_for_nodes(two_node_cluster, 2)
    cfg = dict(config, ray={"node_ip_address": LOOPBACK})
    done = []
    remote, infos = run_chains_ray_with_info(arrays, cfg, tmp_path / "run", JOBS, address=two_node_cluster,
                                             on_done=lambda a, s, k, n: done.append((a, s, k, n)))
    assert [(c.agent, c.seed) for c in remote] == JOBS  # the order of jobs, whatever finished first
    for a, b in zip(local, remote):
        _same(a, b)
    # every task ran on a node of this cluster, and both nodes were used
    assert {i.node_ip for i in infos} == {LOOPBACK}
    assert len({i.node_id for i in infos}) == 2, infos
    assert sorted(k for *_, k, _n in done) == [1, 2, 3]
    # the tasks wrote the checkpoints into the run directory
    ck = sorted(p.relative_to(tmp_path / "run").as_posix() for p in (tmp_path / "run").rglob("*.npz"))
    assert ck == [f"checkpoints/{a}_seed{s}/window_{w:03d}.npz" for a, s in sorted(set(JOBS)) for w in (0, 1)]
    # the seeds matter (a2c seed 0 vs seed 1 differ), so equality above is not vacuous
    assert local[0].actions.tobytes() != local[2].actions.tobytes()


def test_local_ray_matches_local_executor(tiny, tmp_path, monkeypatch):
    """Without an address a private local Ray is started (and shut down) for the run."""
    import ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    arrays, config, local = tiny
    agents = dict(config["agents"], ensemble={"members": ["a2c"]})
    cfg = dict(config, agents=agents, ray={"num_cpus": 2, "node_ip_address": LOOPBACK})
    # the ensemble is listed first but submitted last (after its member); results keep job order
    jobs = [("ensemble", 0), *JOBS[:2]]
    remote, infos = run_chains_ray_with_info(arrays, cfg, tmp_path / "run", jobs)
    assert not ray.is_initialized()  # it shut down what it started
    assert [(c.agent, c.seed) for c in remote] == jobs
    for a, b in zip(local[:2], remote[1:]):
        _same(a, b)
    # one member: the ensemble trades exactly as a2c, from the model a2c's chain trained
    assert remote[0].values.tobytes() == local[0].values.tobytes()
    assert all(r["chosen"] == "a2c" for r in remote[0].windows)
    assert all(i.pid != os.getpid() for i in infos)  # really ran in Ray workers


def _dying_task(marker: str, times: int):
    """A task body that kills its own worker process ``times`` times (counted in ``marker``), then
    runs the chain: a worker that dies mid-chain, as ``kill -9`` or the OOM killer would do it."""

    def task(*args):
        import os
        from pathlib import Path

        from benchmarks.distributed import _chain_task

        m = Path(marker)
        died = len(m.read_text()) if m.exists() else 0
        if died < times:
            m.write_text("x" * (died + 1))
            os._exit(1)
        return _chain_task(*args)

    return task


def test_a_dead_worker_is_retried_and_then_named_in_one_line(tiny, tmp_path, monkeypatch):
    import ray

    from benchmarks.distributed import DistributedError

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    arrays, config, local = tiny
    cfg = dict(config, ray={"num_cpus": 1, "node_ip_address": LOOPBACK})
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False,
             configure_logging=False, _node_ip_address=LOOPBACK)
    try:
        # dies once, retried (default max_retries 2): the same result as the local executor
        remote, _ = run_chains_ray_with_info(arrays, cfg, tmp_path / "run", [JOBS[1]],
                                             _task=_dying_task(str(tmp_path / "once"), 1))
        assert (tmp_path / "once").read_text() == "x"
        _same(local[1], remote[0])
        # dies every time: one DistributedError line naming the chain, after the retries
        cfg0 = dict(cfg, ray={**cfg["ray"], "max_retries": 1})
        with pytest.raises(DistributedError) as err:
            run_chains_ray_with_info(arrays, cfg0, tmp_path / "run2", [JOBS[1]],
                                     _task=_dying_task(str(tmp_path / "always"), 99))
        msg = str(err.value)
        assert "\n" not in msg
        assert "chain buy_and_hold seed 0 died on a Ray worker" in msg and "resumes" in msg
        assert (tmp_path / "always").read_text() == "xx"  # first try + one retry
        with pytest.raises(ConfigError, match="max_retries"):
            run_chains_ray_with_info(arrays, dict(cfg, ray={"max_retries": -1}), tmp_path / "r3", [JOBS[1]])
    finally:
        ray.shutdown()

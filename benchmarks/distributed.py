"""Run walk-forward chains as Ray tasks (``finmeta bench --executor ray``).

One Ray task = one chain = one ``(agent, seed)`` walked over every window by
:meth:`benchmarks.loop.WalkForward.run_chain` -- the very code the local executor runs, so the
results are identical for the same seeds (tested). The dataset is put in the object store once
(``ray.put``) and every task reads it from there (zero-copy on the node).

Cluster: ``address`` argument, else the spec's ``ray.address``, else the ``RAY_ADDRESS``
environment variable, connects to an existing cluster (``"auto"`` = the one started on this
machine with ``ray start``). Without any, a private local Ray is started with ``num_cpus`` limited
(``ray.num_cpus``, default ``min(jobs, cpu count)``), no dashboard and no worker log
forwarding, and shut down afterwards. The ``ray`` section is read typed
(:class:`benchmarks.spec.RaySection`, :func:`ray_options`).

Determinism: every task runs with one torch thread (``torch.set_num_threads(1)`` and
``OMP_NUM_THREADS=1``), the thread count the SB3 agents also fix while learning; each window's
randomness depends only on ``(seed, window, agent)`` (see :mod:`benchmarks.windows`), so neither
the node nor the order in which tasks run can change a result.

Dead workers: a chain whose worker process dies (killed, out of memory, node lost) is rerun by Ray
up to ``ray.max_retries`` times (default 2); it resumes from its checkpoints. If it still fails, one
:class:`DistributedError` line names the chain and says that rerunning the command resumes.

Checkpoints: the tasks write ``<run_dir>/checkpoints/...`` themselves. On a multi-machine cluster
``run_dir`` must be on a filesystem every node sees (NFS, ...) for resume to work; results are
returned to the driver either way.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import ValidationError

from data_processors.arrays import MarketArrays
from finmeta.errors import ConfigError, FinMetaError

from .loop import ChainResult
from .spec import RaySection, RunSpec

__all__ = ["DistributedError", "TaskInfo", "ray_address", "run_chains_ray", "run_chains_ray_with_info",
           "ray_session"]


#: keys of a config's optional ``ray`` section (:class:`benchmarks.spec.RaySection`)
RAY_CONFIG_KEYS = tuple(RaySection.model_fields)

#: how often Ray reruns a chain whose worker died (chains resume from their checkpoints, so a rerun
#: redoes at most the window that was running); config ``ray.max_retries``
MAX_RETRIES_DEFAULT = 2


class DistributedError(FinMetaError):
    """Ray is missing, the cluster cannot be reached, or a chain failed on a worker."""


@dataclass(frozen=True)
class TaskInfo:
    """Where one chain ran."""

    agent: str
    seed: int
    node_id: str  # Ray node id (hex)
    node_ip: str
    pid: int
    seconds: float


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise DistributedError(
            "--executor ray needs Ray: pip install 'finmeta[distributed]' (or pip install ray)"
        ) from exc
    return ray


def ray_options(config: RunSpec | Mapping[str, Any] | None) -> RaySection:
    """The ``ray`` section of a spec (or of a config dict, checked here alone: one
    :class:`ConfigError` naming ``config.ray``'s bad key), defaults when absent."""
    if isinstance(config, RunSpec):
        return config.ray or RaySection()
    rcfg = dict((config or {}).get("ray") or {})
    unknown = set(rcfg) - set(RAY_CONFIG_KEYS)
    if unknown:
        raise ConfigError(f"config.ray: unknown keys {sorted(unknown)}; known: {', '.join(RAY_CONFIG_KEYS)}")
    try:
        return RaySection.model_validate(rcfg)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"config.ray.{key} must be {err['msg'].lower().removeprefix('input should be ')}, "
                          f"got {err.get('input')!r}") from None


def ray_address(config: RunSpec | Mapping[str, Any] | None = None, address: str | None = None) -> str | None:
    """The cluster to join: ``address``, else the config's ``ray.address``, else ``$RAY_ADDRESS``."""
    if address:
        return str(address)
    rcfg = ray_options(config)
    if rcfg.address:
        return str(rcfg.address)
    return os.environ.get("RAY_ADDRESS") or None


class ray_session:
    """Context manager: join the cluster at ``address`` or start a private local Ray.

    Leaves an already-initialised Ray (the caller's) alone; shuts down only what it started.

    Args:
        address: cluster address (``host:port`` of the GCS, ``"auto"``, or ``ray://...``), or
            None for a local Ray.
        num_cpus: CPUs of the local Ray (ignored when joining a cluster).
        runtime_env: passed to ``ray.init`` (e.g. ``{"working_dir": "."}`` for a remote cluster
            whose nodes do not have the project installed; needs ``ray[default]``).
        node_ip_address: this (driver) node's IP as the cluster knows it (``ray.init``'s
            ``_node_ip_address``). Ray replaces ``127.0.0.1``/``localhost`` with the machine's
            primary IP; a loopback-only setup (the tests) uses another loopback address such
            as ``127.0.0.2`` for the nodes and the driver.
    """

    def __init__(self, address: str | None = None, *, num_cpus: int | None = None,
                 runtime_env: dict | None = None, node_ip_address: str | None = None) -> None:
        self.address = address
        self.num_cpus = num_cpus
        self.runtime_env = runtime_env
        self.node_ip_address = node_ip_address
        self._started = False

    def __enter__(self):
        ray = _import_ray()
        if ray.is_initialized():
            return ray
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                              "configure_logging": False}
        # No runtime_env unless asked for: it needs the ray[default] extra (plain `ray` suffices
        # otherwise). Workers import the project from the installed package (pip install -e .);
        # torch threads are fixed inside each task.
        if self.runtime_env:
            kw["runtime_env"] = dict(self.runtime_env)
        if self.node_ip_address:
            kw["_node_ip_address"] = str(self.node_ip_address)
        if self.address:
            kw["address"] = self.address
        else:
            # "local" starts a new private Ray even when RAY_ADDRESS is set (ray_address() has
            # already turned an explicit or environment address into ``self.address``).
            kw["address"] = "local"
            kw["num_cpus"] = int(self.num_cpus or os.cpu_count() or 1)
        try:
            ray.init(**kw)
        except ConnectionError as exc:
            raise DistributedError(f"cannot reach the Ray cluster at {self.address!r}: {exc}") from exc
        self._started = True
        return ray

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def _chain_task(arrays: MarketArrays, config: RunSpec | dict, run_dir: str, agent: str, seed: int,
                torch_threads: int) -> tuple[ChainResult, dict]:
    """Body of the Ray task: one chain, plus where it ran."""
    t0 = time.perf_counter()
    os.environ["OMP_NUM_THREADS"] = str(torch_threads)
    try:
        import torch

        torch.set_num_threads(int(torch_threads))
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    import ray

    from .loop import WalkForward

    wf = WalkForward(arrays, config, run_dir)
    result = wf.run_chain(agent, int(seed))
    ctx = ray.get_runtime_context()
    info = {"node_id": ctx.get_node_id(), "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(),
            "seconds": round(time.perf_counter() - t0, 3)}
    return result, info


def run_chains_ray_with_info(
    arrays: MarketArrays,
    config: RunSpec | dict,
    run_dir: str | Path,
    jobs: Sequence[tuple[str, int]],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    torch_threads: int = 1,
    on_done: Callable[[str, int, int, int], None] | None = None,
    _task: Callable[..., Any] | None = None,
) -> tuple[list[ChainResult], list[TaskInfo]]:
    """Like :func:`run_chains_ray`, also returning where each chain ran (same order as ``jobs``).

    Args:
        arrays: the full dataset (put in the object store once).
        config: the run spec or config dict (as for :class:`benchmarks.loop.WalkForward`); its
            optional ``ray`` section holds ``address``, ``num_cpus`` (local Ray), ``cpus_per_task``
            (default 1), ``runtime_env`` and ``node_ip_address`` (see :class:`ray_session`).
        run_dir: the run directory (checkpoints are written there by the tasks).
        jobs: ``(agent, seed)`` pairs.
        address: cluster to join (overrides the config and ``$RAY_ADDRESS``).
        num_cpus: CPUs of a local Ray (default ``min(len(jobs), cpu count)``).
        torch_threads: torch intra-op threads per task (1 for reproducibility).
        on_done: callback ``(agent, seed, done, total)`` as chains finish (any order).
        _task: the task body (default :func:`_chain_task`); tests wrap it to kill a worker.
    """
    jobs = [(str(a), int(s)) for a, s in jobs]
    if not jobs:
        return [], []
    rcfg = ray_options(config)
    addr = ray_address(config, address)
    n_local = int(num_cpus or rcfg.num_cpus or min(len(jobs), os.cpu_count() or 1))
    cpus_per_task = float(rcfg.cpus_per_task or 1)
    max_retries = rcfg.max_retries
    run_dir = str(Path(run_dir).resolve())
    # the tasks get the config as written without its ray section (each validates it into its spec)
    raw = config.raw if isinstance(config, RunSpec) else config
    cfg = {k: v for k, v in raw.items() if k != "ray"}

    with ray_session(addr, num_cpus=n_local, runtime_env=rcfg.runtime_env,
                     node_ip_address=rcfg.node_ip_address) as ray:
        # max_retries: Ray reruns a task whose worker died (not one that raised: retry_exceptions off)
        task = ray.remote(num_cpus=cpus_per_task, max_retries=max_retries)(_task or _chain_task)
        arrays_ref = ray.put(arrays)
        # ensemble chains are submitted last: they load their members' models, which the members'
        # own chains train (a chain asking for a model being trained waits on its lock, see
        # WalkForward._train), so started early they would hold a CPU while waiting
        order = sorted(range(len(jobs)), key=lambda i: jobs[i][0] == "ensemble")
        refs = [task.remote(arrays_ref, cfg, run_dir, *jobs[i], int(torch_threads)) for i in order]
        position = {ref: i for ref, i in zip(refs, order)}
        out: list[Any] = [None] * len(refs)
        pending = list(refs)
        done = 0
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    i = position[ref]
                    try:
                        out[i] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = exc.as_instanceof_cause() if hasattr(exc, "as_instanceof_cause") else exc
                        if isinstance(cause, FinMetaError):
                            raise cause from None
                        a, s = jobs[i]
                        raise DistributedError(f"chain {a} seed {s} failed on a Ray worker: {exc}") from exc
                    except ray.exceptions.RayError as exc:  # WorkerCrashedError, NodeDiedError, ...
                        a, s = jobs[i]
                        raise DistributedError(
                            f"chain {a} seed {s} died on a Ray worker ({type(exc).__name__}) and was retried "
                            f"{max_retries} time(s); rerun the same command: it resumes from the checkpoints "
                            f"in {run_dir}") from exc
                    done += 1
                    if on_done:
                        on_done(jobs[i][0], jobs[i][1], done, len(jobs))
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    results = [r for r, _ in out]
    infos = [TaskInfo(agent=a, seed=s, **info) for (a, s), (_, info) in zip(jobs, out)]
    return results, infos


def run_chains_ray(
    arrays: MarketArrays,
    config: RunSpec | dict,
    run_dir: str | Path,
    jobs: Sequence[tuple[str, int]],
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    torch_threads: int = 1,
) -> list[ChainResult]:
    """Run every ``(agent, seed)`` chain as one Ray task; results in the order of ``jobs``.

    Identical to ``[WalkForward(arrays, config, run_dir).run_chain(a, s) for a, s in jobs]``
    (the local executor), only spread over the cluster. See :func:`run_chains_ray_with_info`
    for the arguments.
    """
    results, _ = run_chains_ray_with_info(arrays, config, run_dir, jobs, address=address,
                                          num_cpus=num_cpus, torch_threads=torch_threads)
    return results

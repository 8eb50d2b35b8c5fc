"""Connect to Dask: an existing scheduler, or a LocalCluster of worker processes."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dask

from refine.errors import RefineError
from refine.pipeline.config import ClusterConfig

log = logging.getLogger("refine")

#: LocalCluster settings, key: (distributed's default, ours); a value the user set (Dask YAML
#: config or its DASK_* environment variable) is left alone. Our tasks are whole partitions
#: (seconds to minutes each), so Dask's housekeeping can tick less often. An idle 1-worker
#: LocalCluster (scheduler, nanny, worker, profiler off) used 4.9% of a core with the other
#: three at their defaults, 1.4% with ours (~1 CPU-second over a 30-second run).
#: - the worker's statistical profiler samples every thread every 10 ms: ~5% of a core while our
#:   tasks run (measured with scripts/bench.py); the dashboard's profile plots need it on;
#: - the event-loop health tick only feeds "event loop was unresponsive" warnings;
#: - the system monitor feeds the dashboard's resource plots;
#: - the worker memory monitor enforces the memory limit: at 500 ms a worker can overshoot it
#:   that much longer before it is paused or restarted (the extraction child, the usual memory
#:   hog, has its own hard cap, ExtractConfig.memory_limit_mb).
_QUIET = {
    "distributed.worker.profile.enabled": (True, False),
    "distributed.admin.tick.interval": ("20ms", "200ms"),
    "distributed.admin.system-monitor.interval": ("500ms", "2s"),
    "distributed.worker.memory.monitor-interval": ("100ms", "500ms"),
}


@contextmanager
def dask_client(cfg: ClusterConfig, *, quiet: bool = True) -> Iterator[Any]:
    """Yield a ``distributed.Client``; a LocalCluster is closed on exit, a remote one is not."""
    from distributed import Client

    level = logging.CRITICAL if quiet else logging.INFO  # task failures: we report them
    # distributed installs its own INFO handlers; in the driver (scheduler, nannies) too
    for name in ("distributed", "distributed.scheduler", "distributed.nanny", "distributed.core"):
        logging.getLogger(name).setLevel(level)
    if cfg.address:
        try:
            client = Client(cfg.address, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise RefineError(f"cannot reach the Dask scheduler at {cfg.address}: {e}") from None
        try:
            yield client
        finally:
            client.close()
        return
    if cfg.kind != "local":
        cluster = batch_cluster(cfg, silence_logs=level)
        scale_batch_cluster(cluster, cfg)
    else:
        cluster = _local_cluster(cfg, level)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def _local_cluster(cfg: ClusterConfig, level: int) -> Any:
    from distributed import LocalCluster

    n = cfg.workers or os.cpu_count() or 1
    # Our extraction runs a child process per worker; nannies must not be daemonic for that to
    # be allowed by multiprocessing-based libraries, and it costs nothing otherwise.
    settings = {"distributed.worker.daemon": False}
    for key, (default, quiet) in _QUIET.items():
        if dask.config.get(key, default) == default:  # not set by the user (YAML or DASK_* env)
            settings[key] = quiet
    with dask.config.set(settings):
        return LocalCluster(
            n_workers=n,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=":0" if cfg.dashboard else None,
            silence_logs=level,
            resources=dict(cfg.resources) or None,
        )


_JOBQUEUE = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
}


def batch_cluster(cfg: ClusterConfig, silence_logs: int = logging.CRITICAL) -> Any:
    """A dask-jobqueue cluster (Slurm, PBS, SGE, LSF) or a dask-kubernetes one, not yet scaled:
    its ``job_script()`` shows what each job will run. Workers are single-threaded, one per core
    (refine's tasks are whole partitions), with the driver's Python and environment."""
    if cfg.kind == "kubernetes":
        try:
            from dask_kubernetes.operator import KubeCluster
        except ImportError as e:
            raise RefineError(
                f"cluster.kind: kubernetes needs dask-kubernetes (pip install dask-kubernetes): {e}"
            ) from None
        resources = {}
        if cfg.cores or cfg.memory:
            limits = {k: v for k, v in (("cpu", cfg.cores), ("memory", cfg.memory)) if v}
            resources = {"requests": limits, "limits": limits}
        return KubeCluster(
            name="refine",
            image=cfg.image,
            n_workers=0,
            resources=resources,
            worker_command=["dask", "worker", "--nthreads", "1"],
        )
    try:
        import dask_jobqueue
    except ImportError as e:
        raise RefineError(f"cluster.kind: {cfg.kind} needs dask-jobqueue: {e}") from None
    cls = getattr(dask_jobqueue, _JOBQUEUE[cfg.kind])
    kwargs: dict[str, Any] = {
        "cores": cfg.cores,
        "processes": cfg.cores,  # one single-threaded worker per core
        "memory": cfg.memory,
        "walltime": cfg.walltime,
        "queue": cfg.queue,
        "account": cfg.account,
        "job_extra_directives": list(cfg.job_extra),
        "job_script_prologue": list(cfg.job_script_prologue),
        "worker_extra_args": ["--no-dashboard", *resource_args(cfg.resources)],
        "interface": cfg.interface,
        "silence_logs": silence_logs,
    }
    if cfg.kind == "sge":
        kwargs.pop("account")
        kwargs["project"] = cfg.account
    settings = {"distributed.worker.daemon": False}  # extraction runs a child per worker
    with dask.config.set(settings):
        return cls(**{k: v for k, v in kwargs.items() if v is not None})


def resource_args(resources: dict[str, float]) -> list[str]:
    """``dask worker`` arguments declaring ``resources`` (``--resources "GPU=1"``)."""
    if not resources:
        return []
    return ["--resources", " ".join(f"{k}={v:g}" for k, v in sorted(resources.items()))]


def scale_batch_cluster(cluster: Any, cfg: ClusterConfig) -> None:
    if cfg.kind == "kubernetes":
        cluster.scale(cfg.jobs)
    else:
        cluster.scale(jobs=cfg.jobs)


def dashboard_link(client: Any, cfg: ClusterConfig) -> str | None:
    """The dashboard's address: a remote scheduler's, or our LocalCluster's when it serves one
    (without it, Dask still formats a link to the default port: not printed)."""
    if not cfg.address and not cfg.dashboard:
        return None
    try:
        return client.dashboard_link
    except Exception:
        return None

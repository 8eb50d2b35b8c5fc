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
    from distributed import Client, LocalCluster

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
    n = cfg.workers or os.cpu_count() or 1
    # Our extraction runs a child process per worker; nannies must not be daemonic for that to
    # be allowed by multiprocessing-based libraries, and it costs nothing otherwise.
    settings = {"distributed.worker.daemon": False}
    for key, (default, quiet) in _QUIET.items():
        if dask.config.get(key, default) == default:  # not set by the user (YAML or DASK_* env)
            settings[key] = quiet
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=":0" if cfg.dashboard else None,
            silence_logs=level,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def dashboard_link(client: Any, cfg: ClusterConfig) -> str | None:
    """The dashboard's address: a remote scheduler's, or our LocalCluster's when it serves one
    (without it, Dask still formats a link to the default port: not printed)."""
    if not cfg.address and not cfg.dashboard:
        return None
    try:
        return client.dashboard_link
    except Exception:
        return None

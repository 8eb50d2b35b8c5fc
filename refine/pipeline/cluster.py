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
    # The worker's statistical profiler samples every thread every 10 ms: ~5% of a core while
    # our tasks run (measured with scripts/bench.py). Users who want the dashboard's profile
    # plots can turn it back on with DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED=True.
    settings = {"distributed.worker.daemon": False}
    if os.environ.get("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED") is None:
        settings["distributed.worker.profile.enabled"] = False
    with dask.config.set(settings):
        cluster = LocalCluster(
            n_workers=n,
            threads_per_worker=cfg.threads_per_worker,
            processes=True,
            memory_limit=cfg.memory_limit,
            dashboard_address=":0",
            silence_logs=level,
        )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def dashboard_link(client: Any) -> str | None:
    try:
        return client.dashboard_link
    except Exception:
        return None

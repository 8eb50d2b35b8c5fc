"""Run a global stage's per-part tasks in a bounded window and fold their results as they arrive.

``client.gather(client.map(fn, parts))`` submits every part at once and holds every result at
once: at 10^5-10^6 parts that is 10^6 task states on the scheduler and ~10 KB of stats per part
(gigabytes) on the driver. :func:`map_folded` submits at most ``window`` tasks at a time (the map
segment's window: four per worker thread, at least 16), hands each result to ``fold`` as its task
finishes and releases it, so the driver holds one result at a time (the folds keep bounded
summaries: summed stats, a bounded sample of examples). Results arrive in completion order: a
fold must not depend on it (sums, maxima, sorted picks), or take the part's index
(``indexed=True``) and file the result by it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


def total_threads(client: Any) -> int:
    """Worker threads of the cluster (the machine's CPUs when the scheduler cannot say)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:
        return os.cpu_count() or 1


def window_size(client: Any) -> int:
    """Tasks kept submitted at once: enough to keep every worker thread busy."""
    return max(16, 4 * total_threads(client))


def map_folded(
    client: Any,
    fn: Callable[..., Any],
    *iterables: Iterable[Any],
    fold: Callable[..., None] | None = None,
    indexed: bool = False,
    window: int | None = None,
) -> None:
    """``fn(*args)`` for each tuple of the zipped ``iterables`` on the cluster, at most
    ``window`` in flight; ``fold(result)`` (``fold(index, result)`` when ``indexed``) as each
    finishes. A task's exception is raised here, as ``gather`` would."""
    from distributed import as_completed

    window = window or window_size(client)
    queue = as_completed()
    index_of: dict[str, int] = {}
    items = list(zip(*iterables, strict=True))
    # a client that shows progress (the runner's TrackedClient) counts the tasks as a phase
    done = client.phase(fn, len(items)) if hasattr(client, "phase") else None

    def collect(future: Any) -> None:
        result = future.result()
        i = index_of.pop(future.key)
        future.release()
        if done is not None:
            done()
        if fold is not None:
            fold(i, result) if indexed else fold(result)

    for i, args in enumerate(items):
        if len(index_of) >= window:
            collect(next(queue))
        future = client.submit(fn, *args, pure=False)
        index_of[future.key] = i
        queue.add(future)
    for future in queue:
        collect(future)


def map_sum(client: Any, fn: Callable[..., Any], *iterables: Iterable[Any]) -> Any:
    """The sum of ``fn``'s results over the zipped ``iterables`` (see :func:`map_folded`)."""
    total = 0

    def add(result: Any) -> None:
        nonlocal total
        total = total + result

    map_folded(client, fn, *iterables, fold=add)
    return total


def map_list(client: Any, fn: Callable[..., Any], *iterables: Iterable[Any]) -> list[Any]:
    """``fn``'s results in input order, submitted in a bounded window: for small results the
    caller needs one per part (a count, a shard's entry)."""
    out: list[Any] = []

    def put(i: int, result: Any) -> None:
        out.extend([None] * (i + 1 - len(out)))
        out[i] = result

    map_folded(client, fn, *iterables, fold=put, indexed=True)
    return out

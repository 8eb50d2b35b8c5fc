"""Fold the results of a global stage's tasks on the driver as they arrive.

``client.gather(futures)`` holds every part's result at once: ~10 KB of stats per part is
gigabytes on the driver at 10^5-10^6 parts. ``fold_completed`` hands each result to ``fold`` as
its task finishes and releases it, so the driver holds one result at a time (the folds keep
bounded summaries: summed stats, a bounded sample of examples). Results arrive in completion
order: a fold must not depend on it (sums, maxima, sorted picks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any


def fold_completed(futures: Iterable[Any], fold: Callable[[Any], None]) -> None:
    from distributed import as_completed

    for future in as_completed(list(futures)):
        result = future.result()
        future.release()
        fold(result)

"""Global stages' per-part tasks: a bounded submission window, results folded as they arrive."""

from __future__ import annotations

import threading
import time

import pytest
from distributed import Client

from refine.pipeline.gather import map_folded, map_list, map_sum, window_size


@pytest.fixture(scope="module")
def client():
    with Client(processes=False, n_workers=2, threads_per_worker=2, dashboard_address=None) as c:
        yield c


_lock = threading.Lock()
_running = {"now": 0, "max": 0}


def _task(i: int, pause: float) -> dict:
    with _lock:
        _running["now"] += 1
        _running["max"] = max(_running["max"], _running["now"])
    time.sleep(pause)
    with _lock:
        _running["now"] -= 1
    return {"i": i, "payload": "x" * 1000}


def test_at_most_window_tasks_exist_at_once(client):
    seen, most = [], 0

    def fold(result: dict) -> None:
        nonlocal most
        seen.append(result["i"])
        most = max(most, len(client.futures))  # futures the client holds now

    map_folded(client, _task, range(200), [0.001] * 200, fold=fold, window=8)
    assert sorted(seen) == list(range(200))
    assert most <= 8 and _running["max"] <= 4  # 4 worker threads
    assert window_size(client) == 16  # 4 threads x 4, at least 16


def test_list_keeps_input_order_and_sum_adds(client):
    got = map_list(client, _task, range(50), [0.0] * 50)
    assert [r["i"] for r in got] == list(range(50))
    assert map_sum(client, pow, range(10), [2] * 10) == sum(i * i for i in range(10))
    assert map_list(client, _task, [], []) == [] and map_sum(client, pow, [], []) == 0


def _fail(i: int) -> int:
    if i == 7:
        raise ValueError("part 7 is bad")
    return i


def test_a_failed_task_raises_like_gather(client):
    with pytest.raises(ValueError, match="part 7 is bad"):
        map_folded(client, _fail, range(20), fold=lambda r: None, window=4)


def test_indexed_fold_gets_each_index_once(client):
    got: dict[int, int] = {}
    map_folded(client, pow, range(30), [3] * 30, fold=got.__setitem__, indexed=True, window=5)
    assert got == {i: i**3 for i in range(30)}

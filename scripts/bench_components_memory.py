"""Peak worker memory of dedup_minhash's connected components against the number of edges, with
the edges per partition held fixed (issue #18: "largest worker bounded by the partition size,
not the corpus").

dedup_minhash's largest worker peaks in the first round of its connected components (measured
with ``bench_scale.py`` at 10^6 and 3x10^6 documents). This isolates that step: a synthetic
edge list shaped like the planted corpora's candidate pairs (stars of 2-50 members, chains of
1,000, one star holding 1 of every 40 edges; node names like refine's ids, written ``a < b`` over
``--files`` Parquet files as the stage writes them) goes through
``refine.dedup.components.connected_components`` on a LocalCluster of 2 single-threaded worker
processes, with ``ceil(edges / --per-partition)`` partitions, as the stage sizes them with
``EDGES_PER_PARTITION``. ``--rounds 1`` stops after the first round (the peak); the default
runs to the end. Peak RSS of the workers sampled every 0.05 s (psutil).

    python scripts/bench_components_memory.py --edges 1000000 2000000 4000000 8000000 \
        --per-partition 200000 --rounds 1 --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


class _StopAfterRounds(Exception):
    pass


def make_edges(folder: Path, n_edges: int, files: int, seed: int = 0) -> int:
    """Write about ``n_edges`` edges (``a < b``) over ``files`` Parquet files; the count."""
    rng = np.random.default_rng(seed)
    a: list[np.ndarray] = []
    b: list[np.ndarray] = []
    node = 0

    def star(members: int) -> None:
        nonlocal node
        a.append(np.full(members, node))
        b.append(np.arange(node + 1, node + 1 + members))
        node += members + 1

    star(max(1, n_edges // 40))  # the giant cluster's hub
    made = max(1, n_edges // 40)
    while made < n_edges:
        if rng.random() < 0.02:  # a chain of 1,000 nodes
            ids = np.arange(node, node + 1000)
            a.append(ids[:-1])
            b.append(ids[1:])
            node += 1000
            made += 999
        else:
            k = int(rng.integers(2, 50))
            star(k)
            made += k
    ca, cb = np.concatenate(a), np.concatenate(b)
    perm = rng.permutation(len(ca))
    ca, cb = ca[perm], cb[perm]

    def names(ids: np.ndarray) -> pa.Array:
        mixed = (ids.astype(np.uint64) * np.uint64(2654435761)) % np.uint64(1 << 32)
        pairs = zip(mixed.tolist(), ids.tolist(), strict=True)
        return pa.array([f"{m:08x}-{i:012d}" for m, i in pairs])

    folder.mkdir(parents=True)
    for f, idx in enumerate(np.array_split(np.arange(len(ca)), files)):
        x, y = names(ca[idx]), names(cb[idx])
        first = pc.less(x, y)
        pq.write_table(
            pa.table(
                {
                    "a": pc.if_else(first, x, y),
                    "b": pc.if_else(first, y, x),
                }
            ),
            folder / f"part.{f:05d}.parquet",
        )
    return len(ca)


def measure(n_edges: int, files: int, per_partition: int, rounds: int | None, work: Path) -> dict:
    import psutil
    from distributed import Client, LocalCluster

    import refine.dedup.components as components

    shutil.rmtree(work, ignore_errors=True)
    edges = make_edges(work / "edges", n_edges, files)
    npartitions = max(1, -(-edges // per_partition))
    original = components._round
    done = [0]

    def counted(*args, **kwargs):
        if rounds is not None and done[0] >= rounds:
            raise _StopAfterRounds
        done[0] += 1
        return original(*args, **kwargs)

    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        procs = [psutil.Process(pid) for pid in client.run(os.getpid).values()]
        start = max(p.memory_info().rss for p in procs)
        peak = [start]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                for p in procs:
                    try:
                        peak[0] = max(peak[0], p.memory_info().rss)
                    except psutil.Error:
                        pass
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        t0 = time.perf_counter()
        components._round = counted
        converged = None
        try:
            _, result = components.connected_components(
                work / "edges", work / "cc", npartitions, 50
            )
            converged = result.converged
        except _StopAfterRounds:
            pass
        finally:
            components._round = original
            stop.set()
            sampler.join()
    shutil.rmtree(work, ignore_errors=True)
    return {
        "edges": edges,
        "files": files,
        "npartitions": npartitions,
        "edges_per_partition": -(-edges // npartitions),
        "rounds_run": done[0],
        "converged": converged,
        "worker_start_mb": start >> 20,
        "worker_peak_mb": peak[0] >> 20,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, nargs="+", required=True)
    ap.add_argument("--per-partition", type=int, default=200_000)
    ap.add_argument(
        "--files-per-million", type=int, default=70, help="edge files per 10^6 edges (min 1)"
    )
    ap.add_argument("--rounds", type=int, help="stop after this many rounds (default: all)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    ap.add_argument("--json", action="store_true", help="print one JSON line (the default)")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        runs = [
            measure(
                n,
                max(1, n * a.files_per_million // 1_000_000),
                a.per_partition,
                a.rounds,
                work / f"cc-{n}",
            )
            for n in a.edges
        ]
    print(json.dumps({"per_partition": a.per_partition, "rounds": a.rounds, "runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

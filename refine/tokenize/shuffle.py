"""``shuffle``: a seeded global shuffle of the documents across partitions.

Every document gets a sort key, a 64-bit keyed BLAKE2b of ``(seed, id)``; ties (the same id
twice) fall back to ``source`` and then the text hash, so the order is a function of the
documents and the seed only, never of how they were partitioned or of the number of workers.

Phases, none of which holds more than a partition in one process:

1. per input part: (key, tie-breakers, part, row) for every document, a small Parquet table;
2. Dask's ``sort_values`` on the key over those tables, then per sorted partition the order of
   its rows; partition lengths (one integer per partition on the driver) turn that into a global
   rank, and ``rank // docs_per_part`` names the output part. Ranks are written per input part;
3. per input part: its documents are split by output part into fragment files;
4. per output part: its fragments are concatenated and ordered by rank: ``part-K.parquet`` holds
   the documents of global ranks ``[K * docs_per_part, (K + 1) * docs_per_part)``.

Phases 3 and 4 are a shuffle of the documents themselves done as file fragments, which keeps the
Arrow columns (``large_string`` text, timestamps, signals) exactly as they were.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from refine.pipeline.stage import (
    GlobalContext,
    GlobalStage,
    StageParams,
    decision_log,
    text_bytes,
    text_hashes,
)
from refine.pipeline.stats import StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_parquet_atomic


class ShuffleParams(StageParams):
    seed: int = 0
    """Seed of the permutation: the same seed and documents give the same order."""
    docs_per_part: int = Field(default=10_000, ge=1)
    """Documents per output part (the unit of work and resume of the stages after it)."""


def shuffle_keys(ids: list[str | None], seed: int) -> list[int]:
    """A signed 64-bit key per id: BLAKE2b keyed by the seed, so different seeds give
    independent permutations."""
    salt = seed.to_bytes(16, "little", signed=True)
    return [
        int.from_bytes(
            hashlib.blake2b(
                (i or "").encode("utf-8", "surrogatepass"), digest_size=8, key=salt
            ).digest(),
            "little",
            signed=True,
        )
        for i in ids
    ]


class Shuffle(GlobalStage):
    """Seeded global shuffle; output parts of ``docs_per_part`` documents."""

    name = "shuffle"
    Params = ShuffleParams

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = list_parts(Path(ctx.input_dir))
        work = Path(ctx.work_dir)
        remove_tree(work)
        keys_dir, ranks_dir, frag_dir = work / "keys", work / "ranks", work / "fragments"
        client = ctx.client
        stats = StageStats(name=self.name)
        n = len(parts)
        futures = client.map(
            _write_keys, [str(p) for p in parts], [str(keys_dir)] * n, [self.params.seed] * n
        )
        n_docs = sum(client.gather(futures))
        if n_docs:
            _rank(client, work, n, self.params.docs_per_part)
        futures = client.map(
            _split,
            [str(p) for p in parts],
            [str(ranks_dir)] * len(parts),
            [str(frag_dir)] * len(parts),
            [ctx.log_dir] * len(parts),
            pure=False,
        )
        for d in client.gather(futures):
            stats = stats + StageStats.from_dict(d)
        n_out = -(-n_docs // self.params.docs_per_part)
        futures = client.map(
            _assemble,
            list(range(n_out)),
            [str(frag_dir)] * n_out,
            [ctx.output_dir] * n_out,
            pure=False,
        )
        client.gather(futures)
        stats.counters["output_parts"] = n_out
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0
        remove_tree(work)
        return stats


def _write_keys(part: str, keys_dir: str, seed: int) -> int:
    cols = [c for c in ("id", "source", "text") if c in pq.read_schema(part).names]
    table = pq.read_table(part, columns=cols)
    n = table.num_rows
    ids = table["id"].to_pylist() if "id" in cols else [None] * n
    out = pa.table(
        {
            "key": pa.array(shuffle_keys(ids, seed), pa.int64()),
            "id": pa.array(ids, pa.string()),
            "source": table["source"] if "source" in cols else pa.nulls(n, pa.string()),
            "text_hash": text_hashes(table),
            "part": pa.array([Path(part).stem] * n, pa.string()),
            "row": pa.array(range(n), pa.int64()),
        }
    )
    write_parquet_atomic(out, Path(keys_dir) / f"{Path(part).stem}.parquet")
    return n


def _rank(client: Any, work: Path, n_parts: int, docs_per_part: int) -> None:
    """Global rank of every document. Dask sorts the keys (equal keys land in one partition),
    each sorted partition orders its rows by the full tie-break and is written as one file;
    the files' row counts (one integer each, from Parquet metadata) give rank offsets."""
    import dask.dataframe as dd

    sorted_dir = work / "sorted"
    ddf = dd.read_parquet(str(work / "keys"))
    ordered = ddf.sort_values("key", npartitions=max(1, min(n_parts, ddf.npartitions)))
    ordered = ordered.map_partitions(_order_partition, meta=ordered._meta)
    ordered.to_parquet(
        str(sorted_dir), write_index=False, name_function=lambda i: f"{i:08d}.parquet"
    )
    files = sorted(sorted_dir.glob("*.parquet"))
    starts, total = [], 0
    for f in files:
        starts.append(total)
        total += pq.read_metadata(f).num_rows
    n = len(files)
    client.gather(
        client.map(
            _assign_rank,
            [str(f) for f in files],
            starts,
            [str(work / "ranks")] * n,
            [docs_per_part] * n,
            pure=False,
        )
    )


def _order_partition(df: Any) -> Any:
    return df.sort_values(["key", "id", "source", "text_hash", "part", "row"], kind="stable")


def _assign_rank(sorted_file: str, start: int, ranks_dir: str, docs_per_part: int) -> None:
    """Ranks of one sorted file, written per input part (``ranks/part=STEM/NNNNNNNN.parquet``)."""
    t = pq.read_table(sorted_file, columns=["part", "row"])
    rank = pa.array(range(start, start + t.num_rows), pa.int64())
    t = pa.table(
        {"part": t["part"], "row": t["row"], "rank": rank, "out": pc.divide(rank, docs_per_part)}
    )
    for stem in pc.unique(t["part"]).to_pylist():
        sub = t.filter(pc.equal(t["part"], stem)).drop_columns(["part"])
        write_parquet_atomic(sub, Path(ranks_dir) / f"part={stem}" / Path(sorted_file).name)


def _split(part: str, ranks_dir: str, frag_dir: str, log_dir: str) -> dict:
    """One input part: its documents go to fragment files, one per output part they belong to."""
    t0, c0 = time.perf_counter(), time.process_time()
    table = pq.read_table(part)
    stem = Path(part).stem
    n = table.num_rows
    stats = StageStats(name="shuffle", parts=1, docs_in=n, docs_out=n)
    stats.bytes_in = stats.bytes_out = text_bytes(table)
    rank_path = Path(ranks_dir) / f"part={stem}"
    rank = pa.nulls(n, pa.int64())
    if n:
        ranks = pq.read_table(rank_path, columns=["row", "rank", "out"]).sort_by("row")
        rank = ranks["rank"]
        with_rank = table.append_column("_rank", rank).append_column("_out", ranks["out"])
        for out in pc.unique(ranks["out"]).to_pylist():
            frag = with_rank.filter(pc.equal(with_rank["_out"], out)).drop_columns(["_out"])
            write_parquet_atomic(frag, Path(frag_dir) / f"out={out}" / f"{stem}.parquet")
    kept = pa.array([True] * n, pa.bool_())
    log = decision_log(table, kept, pa.nulls(n, pa.string()), None, {"rank": rank})
    write_parquet_atomic(log, Path(log_dir) / Path(part).name)
    stats.seconds = time.perf_counter() - t0
    stats.cpu_seconds = time.process_time() - c0
    return stats.to_dict()


def _assemble(out: int, frag_dir: str, output_dir: str) -> None:
    folder = Path(frag_dir) / f"out={out}"
    frags = [pq.read_table(p) for p in sorted(folder.glob("*.parquet"))]
    table = pa.concat_tables(frags, promote_options="default").sort_by("_rank")
    table = table.drop_columns(["_rank"]).combine_chunks()
    write_parquet_atomic(table, Path(output_dir) / f"part-{out:05d}.parquet")

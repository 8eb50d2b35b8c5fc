"""``shuffle``: a seeded global shuffle of the documents across partitions.

Every document gets a sort key, a 64-bit keyed BLAKE2b of ``(seed, id)`` (``(seed, id, repeat)``
for the extra copies ``rehydrate`` and ``mix`` write, so they are spread apart); ties (the same id
twice) fall back to ``source`` and then the text hash, so the order is a function of the
documents and the seed only, never of how they were partitioned or of the number of workers.

Phases, none of which holds more than a partition in one process:

1. per input part: (key, tie-breakers, part, row) for every document, a small Parquet table;
2. Dask's ``sort_values`` on the key over those tables, then per sorted partition the order of
   its rows; partition lengths (one integer per partition on the driver) turn that into a global
   rank, and ``rank // docs_per_part`` names the output part. The ranks go back to their input
   parts through a Dask shuffle on the part, one file per input part;
3. per input part: its decision log (the rank of each document);
4. the documents move through one Dask shuffle on the output part id, with divisions
   ``0, 1, ..., Q`` so that Dask partition ``K`` is exactly output part ``K``; each output
   partition is ordered by rank: ``part-K.parquet`` holds the documents of global ranks
   ``[K * docs_per_part, (K + 1) * docs_per_part)``.

Phase 4 writes no file per (input part, output part) pair: Dask's p2p shuffle moves the rows
between workers and spills to one buffer file per output partition (in the worker's local
directory, deleted when the shuffle ends), so the files written are ~``P + Q``: keys, sorted keys
and ranks, at most one each per input part (the stage reports their number as ``work_files``),
and one document file per output part. The documents travel as Arrow IPC streams (one
per input part and output part), so the Arrow columns (``large_string`` text, timestamps,
signals) arrive exactly as they were, with no pandas conversion.

Memory per worker follows the partition sizes, not the corpus: an input part's documents are
ordered by rank once and their streams written into one buffer of its exact size (about two
copies of the part at once); an output part is written ``WRITE_ROWS`` rows at a time from the
streams as they arrived (its rows are never copied whole).
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from refine.pipeline.gather import map_folded, map_sum
from refine.pipeline.stage import (
    GlobalContext,
    GlobalStage,
    StageParams,
    decision_log,
    text_bytes,
    text_hashes,
)
from refine.pipeline.stats import StageStats
from refine.pipeline.storage import (
    list_parts,
    remove_tree,
    write_parquet_atomic,
    write_parquet_pieces_atomic,
)

WRITE_ROWS = 10_000
"""Rows an output part is written at a time (a row group each): ordering a part by rank copies
this many documents at once, not the whole part."""


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
        parts = [str(p) for p in list_parts(Path(ctx.input_dir))]
        work = Path(ctx.work_dir)
        remove_tree(work)
        keys_dir, ranks_dir = work / "keys", work / "ranks"
        client = ctx.client
        stats = StageStats(name=self.name)
        n = len(parts)
        n_docs = map_sum(client, _write_keys, parts, [str(keys_dir)] * n, [self.params.seed] * n)
        if n_docs:
            _rank(client, work, n, self.params.docs_per_part)

        def fold(d: dict) -> None:
            nonlocal stats
            stats = stats + StageStats.from_dict(d)

        map_folded(client, _split, parts, [str(ranks_dir)] * n, [ctx.log_dir] * n, fold=fold)
        n_out = -(-n_docs // self.params.docs_per_part)
        if n_out:
            _move(client, parts, str(ranks_dir), ctx.output_dir, n_out)
        stats.counters["output_parts"] = n_out
        stats.counters["work_files"] = _count_files(work)
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0
        remove_tree(work)
        return stats


def _count_files(folder: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(folder))


def _key_names(ids: list[str | None], repeats: list[int | None] | None) -> list[str | None]:
    """What a document's shuffle key hashes: its id; for the k-th extra copy ``rehydrate``
    or ``mix`` wrote (``repeat`` k > 0), ``id NUL k``, so the copies of one document (same id) are
    shuffled apart instead of landing next to each other."""
    if repeats is None:
        return ids
    return [i if not r else f"{i or ''}\x00{r}" for i, r in zip(ids, repeats, strict=True)]


def _write_keys(part: str, keys_dir: str, seed: int) -> int:
    cols = [c for c in ("id", "source", "text", "repeat") if c in pq.read_schema(part).names]
    table = pq.read_table(part, columns=cols)
    n = table.num_rows
    ids = table["id"].to_pylist() if "id" in cols else [None] * n
    repeats = table["repeat"].to_pylist() if "repeat" in cols else None
    out = pa.table(
        {
            "key": pa.array(shuffle_keys(_key_names(ids, repeats), seed), pa.int64()),
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
    the files' row counts (one integer each, from Parquet metadata) give rank offsets. The
    ranks are then shuffled on the input part and written as ``ranks/part=STEM/``, one file
    per input part (writing each sorted file's ranks per part would be parts x parts files)."""
    import dask.dataframe as dd
    import pandas as pd

    sorted_dir = work / "sorted"
    ddf = dd.read_parquet(str(work / "keys"))
    npartitions = max(1, min(n_parts, ddf.npartitions))
    ordered = ddf.sort_values("key", npartitions=npartitions)
    ordered = ordered.map_partitions(_order_partition, meta=ordered._meta)
    ordered.to_parquet(
        str(sorted_dir), write_index=False, name_function=lambda i: f"{i:08d}.parquet"
    )
    files = sorted(str(f) for f in sorted_dir.glob("*.parquet"))
    starts, total = [], 0
    for f in files:
        starts.append(total)
        total += pq.read_metadata(f).num_rows
    meta = pd.DataFrame(
        {
            "part": pd.Series([], dtype="string"),
            "row": pd.Series([], dtype="int64"),
            "rank": pd.Series([], dtype="int64"),
            "out": pd.Series([], dtype="int64"),
        }
    )
    ranks = dd.from_map(
        _ranks_of, files, starts, docs_per_part=docs_per_part, meta=meta, enforce_metadata=False
    )
    ranks.shuffle(on="part", npartitions=npartitions).to_parquet(
        str(work / "ranks"), partition_on=["part"], write_index=False
    )


def _order_partition(df: Any) -> Any:
    return df.sort_values(["key", "id", "source", "text_hash", "part", "row"], kind="stable")


def _ranks_of(sorted_file: str, start: int, docs_per_part: int) -> Any:
    """pandas: (part, row, rank, out) of the rows of one sorted file, whose first is ``start``."""
    t = pq.read_table(sorted_file, columns=["part", "row"])
    rank = pa.array(range(start, start + t.num_rows), pa.int64())
    df = t.to_pandas()
    return df.assign(
        part=df["part"].astype("string"),
        rank=rank.to_numpy(),
        out=pc.divide(rank, docs_per_part).to_numpy(),
    )


def _split(part: str, ranks_dir: str, log_dir: str) -> dict:
    """One input part: its decision log (every document kept, with its global rank)."""
    t0, c0 = time.perf_counter(), time.process_time()
    table = pq.read_table(part)
    n = table.num_rows
    stats = StageStats(name="shuffle", parts=1, docs_in=n, docs_out=n)
    stats.bytes_in = stats.bytes_out = text_bytes(table)
    rank = _read_ranks(part, ranks_dir)["rank"] if n else pa.nulls(n, pa.int64())
    kept = pa.array([True] * n, pa.bool_())
    log = decision_log(table, kept, pa.nulls(n, pa.string()), None, {"rank": rank})
    write_parquet_atomic(log, Path(log_dir) / Path(part).name)
    stats.seconds = time.perf_counter() - t0
    stats.cpu_seconds = time.process_time() - c0
    return stats.to_dict()


def _read_ranks(part: str, ranks_dir: str) -> pa.Table:
    """(rank, out) of every row of one input part, in row order."""
    folder = Path(ranks_dir) / f"part={Path(part).stem}"
    ranks = pq.read_table(folder, columns=["row", "rank", "out"]).sort_by("row")
    return ranks.select(["rank", "out"]).combine_chunks()


def _blob_meta() -> Any:
    import pandas as pd

    return pd.DataFrame(
        {
            "_out": pd.Series([], dtype="int64"),
            "_part": pd.Series([], dtype="string"),
            "_blob": pd.Series([], dtype=pd.ArrowDtype(pa.large_binary())),
        }
    )


def _blobs(part: str, ranks_dir: str) -> Any:
    """pandas, one input part: a row per output part its documents go to, holding those
    documents (with their ``_rank``, ordered by it) as an Arrow IPC stream.

    One copy of the part's documents: they are ordered by rank once (an output part is a run
    of ranks, so each output part's documents are then one slice, not copied), every stream is
    written into one buffer of its exact size, and the blobs are views of that buffer
    (``from_buffers``), not Python bytes each copied again."""
    import pandas as pd

    table = pq.read_table(part)
    if not table.num_rows:
        return _blob_meta()
    ranks = _read_ranks(part, ranks_dir)
    order = pc.sort_indices(ranks["rank"])
    table = table.append_column("_rank", ranks["rank"]).take(order)
    outs_sorted = ranks["out"].take(order).to_numpy()
    del ranks, order
    bounds = np.flatnonzero(np.diff(outs_sorted)) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64)
    ends = np.concatenate([bounds, [len(outs_sorted)]]).astype(np.int64)
    pieces = [table.slice(a, b - a) for a, b in zip(starts.tolist(), ends.tolist(), strict=True)]
    # the streams' sizes first (a mock stream counts bytes, copies none), then one buffer of
    # exactly that size: a growing buffer would double past it and copy itself as it grows
    mock = pa.MockOutputStream()
    offsets = [0]
    for piece in pieces:
        with pa.ipc.new_stream(mock, table.schema) as writer:
            writer.write_table(piece)
        offsets.append(mock.size())
    data = pa.allocate_buffer(offsets[-1])
    sink = pa.FixedSizeBufferWriter(data)
    for k, piece in enumerate(pieces):
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(piece)
        if sink.tell() != offsets[k + 1]:
            raise RuntimeError(
                f"{part}: IPC stream {k} is {sink.tell()} bytes, counted {offsets[k + 1]}"
            )
    del table, pieces
    blobs = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(starts), [None, pa.array(offsets, pa.int64()).buffers()[1], data]
    )
    return pd.DataFrame(
        {
            "_out": pd.Series(outs_sorted[starts], dtype="int64"),
            "_part": pd.Series([Path(part).stem] * len(starts), dtype="string"),
            "_blob": pd.Series(pd.arrays.ArrowExtensionArray(blobs)),
        }
    )


def _move(client: Any, parts: list[str], ranks_dir: str, output_dir: str, n_out: int) -> None:
    """Phase 4: the documents shuffled on their output part, Dask partition K = output part K
    (divisions ``0, 1, ..., n_out``: the last partition is the closed interval
    ``[n_out - 1, n_out]``), each written as ``part-K.parquet``."""
    import dask.dataframe as dd
    import pandas as pd

    frame = dd.from_map(
        _blobs, parts, ranks_dir=ranks_dir, meta=_blob_meta(), enforce_metadata=False
    )
    by_out = frame.set_index("_out", divisions=list(range(n_out + 1)))
    written = by_out.map_partitions(
        _assemble,
        output_dir,
        part_width(n_out),
        meta=pd.DataFrame(
            {"out": pd.Series([], dtype="int64"), "rows": pd.Series([], dtype="int64")}
        ),
    )
    done = client.compute(written).result()
    if sorted(done["out"].tolist()) != list(range(n_out)):
        raise RuntimeError(f"shuffle wrote output parts {sorted(done['out'])}, not 0..{n_out - 1}")


def _binary_chunks(column: Any) -> list[pa.Buffer]:
    """The values of a pandas column of Arrow binary as Arrow buffers (views, no copy)."""
    arr = column.array
    if not hasattr(arr, "__arrow_array__"):  # not Arrow-backed: Python bytes
        return [pa.py_buffer(b) for b in column.tolist()]
    chunked = arr.__arrow_array__()
    if isinstance(chunked, pa.Array):
        chunked = pa.chunked_array([chunked])
    out = []
    for chunk in chunked.chunks:
        offsets = np.frombuffer(chunk.buffers()[1], dtype=np.int64)[
            chunk.offset : chunk.offset + len(chunk) + 1
        ]
        data = chunk.buffers()[2]
        out.extend(
            data.slice(int(a), int(b - a)) for a, b in zip(offsets[:-1], offsets[1:], strict=True)
        )
    return out


def part_width(n: int) -> int:
    """Digits of the part numbers of ``n`` parts (at least 5): names sort as strings in
    number order past 99,999 parts (readers list part files in string order)."""
    return max(5, len(str(max(n - 1, 0))))


def _assemble(df: Any, output_dir: str, width: int = 5) -> Any:
    """pandas, one output partition: its documents from every input part that has some,
    concatenated in input part order and ordered by rank."""
    import pandas as pd

    outs = df.index.unique().tolist()
    if not outs:
        return pd.DataFrame(
            {"out": pd.Series([], dtype="int64"), "rows": pd.Series([], dtype="int64")}
        )
    if len(outs) != 1:
        raise RuntimeError(f"one shuffled partition holds output parts {outs}")
    out = int(outs[0])
    # the streams are read where they lie (IPC reads of a buffer are views, no copy), then
    # written in rank order ``WRITE_ROWS`` at a time: the rows are never copied whole
    blobs = _binary_chunks(df["_blob"])
    order = np.argsort(df["_part"].to_numpy(dtype=object), kind="stable").tolist()
    frags = []
    for k in order:
        with pa.ipc.open_stream(blobs[k]) as reader:
            frags.append(reader.read_all())
    table = pa.concat_tables(frags, promote_options="default")
    del frags, blobs
    ranked = pc.sort_indices(table["_rank"])
    table = table.drop_columns(["_rank"])
    pieces = (table.take(ranked.slice(i, WRITE_ROWS)) for i in range(0, table.num_rows, WRITE_ROWS))
    path = Path(output_dir) / f"part-{out:0{width}d}.parquet"
    write_parquet_pieces_atomic(table.schema, pieces, path)
    return pd.DataFrame({"out": pd.Series([out], dtype="int64"), "rows": [table.num_rows]})

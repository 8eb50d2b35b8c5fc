"""``dedup_minhash``: near-duplicate removal with MinHash LSH, as a global stage (FineWeb's
recipe: word 5-grams, 14 bands x 8 rows), with distributed connected components.

Phases, none of which gathers document data on one machine (phases 2, 4 and 5 run as one task
instead, on keys only, when the data is under ``single_task_rows``: see the param):

1. per part (a Dask task each): datasketch-compatible signatures of every document, computed by
   batches (``signatures.py``), written as one row per (document, band): the band's 64-bit bucket
   key and the document's node name, which sorts by the survivor rule (``keep``): ``id NUL part
   NUL row`` (smallest id) or ``part NUL row NUL id`` (first in reading order), so the smallest
   name of a cluster is its survivor;
2. Dask shuffle on the bucket key; in each bucket every member is linked to the bucket's smallest
   member (a star, not all pairs, so a bucket of 10^5 copies gives 10^5 edges, not 10^10); the
   edges are de-duplicated after a shuffle on their larger end;
3. optional (``verify_jaccard``): each candidate edge meets both documents' shingle sets through
   two shuffles and is kept only if their true Jaccard similarity reaches ``jaccard_threshold``;
4. connected components by randomised local contraction over Dask shuffles (``components.py``):
   O(log n) rounds whatever the longest chain of near-duplicates;
5. Dask shuffle on the label: each cluster's size, and for each member its survivor (the
   cluster's smallest name); a shuffle on the part then writes each part's flags as one file;
6. per part: non-survivors are dropped and logged with ``duplicate_of`` (the survivor's id) and
   ``minhash_cluster`` (the cluster's size); each survivor carries its cluster's size in the
   ``minhash_cluster_size`` column (1 outside any cluster), as FineWeb-2's documents do, for
   ``rehydrate``.

The stats count candidate pairs, clusters and bytes removed, and keep the ``MAX_EXAMPLES``
removed documents with the smallest ids beside their survivor's id and their cluster's size.

With ``by: language`` each band key is mixed with the document's language after phase 1, so
only documents of the same language become candidates (FineWeb-2 deduplicates each language
apart).

The survivors depend only on the documents, their order (with ``keep: first``) and the params,
never on partitioning or workers.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field, model_validator

from refine.dedup.by_language import DedupBy, language_hashes, read_languages
from refine.dedup.components import connected_components
from refine.dedup.keyed import Keep, apply_flags, pick_examples, write_by_part, write_table_by_part
from refine.dedup.signatures import MinHasher, band_keys, jaccard_of_sets, sorted_unique_sets
from refine.pipeline.gather import map_folded
from refine.pipeline.stage import GlobalContext, GlobalStage, StageParams, decision_log, text_bytes
from refine.pipeline.stats import MAX_EXAMPLES, StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_parquet_atomic

REASON = "near_duplicate"
#: Column of every survivor: how many documents its MinHash cluster had (itself included; 1 for
#: a document in no cluster), FineWeb-2's ``minhash_cluster_size``, which ``rehydrate`` reads.
CLUSTER_SIZE_COLUMN = "minhash_cluster_size"
_STR = "string"
#: documents per signature batch: bounds the NumPy temporaries (about 100 bytes per text byte)
_BATCH_ROWS = 512
#: Candidate edges per shuffled partition in connected components. The rounds are shuffles over
#: the edges: sizing them by the edge count, not by the number of document parts, keeps each
#: task's memory bounded and avoids paying a round's fixed cost per document part when there are
#: few duplicates. A worker's peak (round 1's two p2p shuffles) at 1 / 4 / 8 / 16 M edges, 2
#: workers (scripts/bench_components_memory.py): 557 / 664 / 662 / 690 MB at 100,000 edges per
#: partition, 617-703 / 886 / 916 / 1,048 MB at 200,000: at 100,000 it levels off, with the same
#: wall time.
EDGES_PER_PARTITION = 100_000
#: see ``DedupMinhashParams.single_task_rows``
SINGLE_TASK_ROWS = 250_000


class DedupMinhashParams(StageParams):
    num_bands: int = Field(14, ge=1)
    """LSH bands (FineWeb: 14). Pairs with Jaccard s become candidates with probability
    ``1 - (1 - s**rows_per_band)**num_bands`` (0.92 at s = 0.8 with 14 x 8)."""
    rows_per_band: int = Field(8, ge=1)
    """MinHash values per band (FineWeb: 8); the signature has ``num_bands * rows_per_band``."""
    ngram: int = Field(5, ge=1)
    """Shingle size in words, after normalisation (lower case, no punctuation, numbers -> 0,
    no diacritics). Documents with fewer words take no part."""
    seed: int = 1
    """Seed of datasketch's permutations; the same seed gives the same signatures everywhere."""
    verify_jaccard: bool = False
    """Keep a candidate pair only if the true Jaccard similarity of its shingle sets reaches
    ``jaccard_threshold`` (FineWeb does not verify; costs two more shuffles of shingle sets)."""
    jaccard_threshold: float = Field(0.8, ge=0.0, le=1.0)
    """Used only with ``verify_jaccard``."""
    max_iterations: int = Field(50, ge=1)
    """Rounds of contraction before giving up (O(log n) rounds are needed, whatever the
    cluster's diameter: 10-12 for a chain of 2,000 near-duplicates; see ``components.py``); a
    cluster still in several pieces then is left split (more survivors, never fewer).
    ``counters.cc_converged`` says whether it happened, ``counters.cc_iterations`` how many
    rounds ran. Only the distributed connected components have rounds; the one-task path
    always finishes."""
    single_task_rows: int = Field(SINGLE_TASK_ROWS, ge=0)
    """Up to this many band rows (signed documents x ``num_bands``), the bucket grouping runs
    as one Dask task instead of two shuffles; up to this many candidate edges, so do connected
    components (a union-find, scipy's ``connected_components``) and the cluster flags. The
    result is the same (the same survivors); the task's memory is bounded by
    this number, not by the corpus (measured at the default with 60-character document ids:
    ~90 MiB for the band rows, ~170 MiB for the edges); each of the up to ~8 shuffles it saves
    costs about a second of fixed time however small the data. 0: always shuffle."""
    keep: Keep = "smallest_id"
    """Which member of a cluster survives. ``smallest_id``: the smallest document id, the
    default of every refine dedup stage (the output depends only on the set of documents, not
    on the order of the inputs). ``first``: the first in reading order (parts in part-id order, i.e.
    the config's input order then byte offset, rows in order), so the order of ``input``
    says which copy to keep; datatrove keeps the same member of a two-document cluster (its
    union-find root by size, then by its first pair's order, for larger ones)."""

    by: DedupBy = "all"
    """``all``: every document against every other. ``language``: only documents with the same
    ``language`` column are near-duplicates of each other (FineWeb-2 deduplicates each language
    separately): the language is folded into every LSH bucket key, so candidate pairs never
    cross languages. Needs that column; documents without a language form a group of their
    own."""

    @model_validator(mode="after")
    def _signature_size(self) -> DedupMinhashParams:
        if self.num_bands * self.rows_per_band > 4096:
            raise ValueError("num_bands * rows_per_band must be at most 4096")
        return self


class DedupMinhash(GlobalStage):
    """One document per cluster of near-duplicates (MinHash LSH + connected components); the
    survivor is the cluster's smallest id, or its first document (``keep: first``)."""

    name = "dedup_minhash"
    Params = DedupMinhashParams

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        p = self.params
        parts = [str(x) for x in list_parts(Path(ctx.input_dir))]
        work = Path(ctx.work_dir)
        remove_tree(work)
        bands_dir, sets_dir = work / "bands", work / "sets"
        edges_dir, verified_dir, flags_dir = work / "edges", work / "verified", work / "flags"
        client = ctx.client
        n = len(parts)
        sig = Counter()
        sets = [str(sets_dir) if p.verify_jaccard else None] * n
        map_folded(client, self._write_bands, parts, [str(bands_dir)] * n, sets, fold=sig.update)
        counters: dict[str, int] = {"no_signature": sig["no_signature"]}
        if p.by == "language":
            map_folded(client, self._language_buckets, parts, [str(bands_dir)] * n, fold=sig.update)
        npart = max(1, n)
        band_rows = sig["signed"] * p.num_bands
        if not band_rows:
            counters["candidate_pairs"] = 0
        elif band_rows <= p.single_task_rows:
            counters["candidate_pairs"] = client.submit(
                _candidate_edges_one_task, str(bands_dir), str(edges_dir), pure=False
            ).result()
        else:
            counters["candidate_pairs"] = _candidate_edges(bands_dir, edges_dir, npart)
        if counters["candidate_pairs"] and p.verify_jaccard:
            kept = _verify_edges(edges_dir, sets_dir, verified_dir, p.jaccard_threshold, npart)
            counters["pairs_rejected_by_jaccard"] = counters["candidate_pairs"] - kept
            edges_dir = verified_dir
            if not kept:
                counters["candidate_pairs"] = 0
        pairs = counters["candidate_pairs"]
        if 0 < pairs <= p.single_task_rows:
            counters.update(
                client.submit(
                    _components_one_task, str(edges_dir), str(flags_dir), p.keep, pure=False
                ).result()
            )
        elif pairs:
            cc_npart = max(1, -(-counters["candidate_pairs"] // EDGES_PER_PARTITION))
            labels_dir, cc = connected_components(
                edges_dir, work / "cc", cc_npart, p.max_iterations
            )
            counters["cc_iterations"] = cc.iterations
            counters["cc_converged"] = int(cc.converged)
            counters["cc_nodes"] = cc.nodes
            _cluster_flags(labels_dir, flags_dir, npart, p.keep)
        stats = apply_flags(client, self._apply, self.name, parts, flags_dir, ctx)
        for k, v in counters.items():
            stats.counters[k] += v
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0 + sig["cpu"]
        remove_tree(work)
        return stats

    # -- phase 1 ---------------------------------------------------------------------------
    def _write_bands(self, part: str, bands_dir: str, sets_dir: str | None) -> dict[str, Any]:
        c0 = time.process_time()
        p = self.params
        hasher = MinHasher(p.num_bands * p.rows_per_band, p.seed, p.ngram)
        has_language = "language" in pq.read_schema(part).names
        table = pq.read_table(part, columns=["id", "text"] + ["language"] * has_language)
        part_id = Path(part).stem
        nodes = node_names(table["id"], part_id, p.keep)
        buckets, members, set_nodes, sets = [], [], [], []
        signed = 0
        for lo in range(0, table.num_rows, _BATCH_ROWS):
            texts = table["text"].slice(lo, _BATCH_ROWS)
            languages = table["language"].slice(lo, _BATCH_ROWS) if has_language else None
            sig, sh = hasher.signatures(texts, languages)
            has = np.flatnonzero(sh.counts > 0)
            signed += has.size
            keys = band_keys(sig[has], p.num_bands, p.rows_per_band)
            buckets.append(keys.reshape(-1))
            members.append(nodes.slice(lo, _BATCH_ROWS).take(np.repeat(has, p.num_bands)))
            if sets_dir is not None:
                set_nodes.append(nodes.slice(lo, _BATCH_ROWS).take(has))
                sets.append(sorted_unique_sets(sh).take(has))
        out = pa.table(
            {
                "bucket": pa.array(np.concatenate(buckets) if buckets else [], pa.int64()),
                "node": pa.chunked_array(members, pa.string()),
            }
        )
        write_parquet_atomic(out, Path(bands_dir) / f"{part_id}.parquet")
        if sets_dir is not None:
            sets_table = pa.table(
                {
                    "node": pa.chunked_array(set_nodes, pa.string()),
                    "shingles": pa.chunked_array(sets, pa.large_binary()),
                }
            )
            write_parquet_atomic(sets_table, Path(sets_dir) / f"{part_id}.parquet")
        return {
            "signed": signed,
            "no_signature": table.num_rows - signed,
            "cpu": time.process_time() - c0,
        }

    def _language_buckets(self, part: str, bands_dir: str) -> dict[str, Any]:
        """``by: language``: the part's band rows re-keyed by their document's language (the
        bucket XOR a 64-bit hash of the label), so that only documents of one language share a
        bucket. A pass over the band rows ``_write_bands`` wrote (no text is read again)."""
        c0 = time.process_time()
        path = Path(bands_dir) / f"{Path(part).stem}.parquet"
        langs = read_languages(part, self.name)
        bands = pq.read_table(path, columns=["bucket", "node"])
        if bands.num_rows:
            _, _, rows = _split_node_arrow(bands["node"].combine_chunks(), self.params.keep)
            mix = language_hashes(langs)[rows.to_numpy()]
            bucket = np.bitwise_xor(bands["bucket"].to_numpy(), mix)
            bands = bands.set_column(0, "bucket", pa.array(bucket, pa.int64()))
            write_parquet_atomic(bands, path)
        return {"signed": 0, "no_signature": 0, "cpu": time.process_time() - c0}

    # -- phase 6 ---------------------------------------------------------------------------
    def _apply(self, part: str, flags_dir: str, output_dir: str, log_dir: str) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        table = pq.read_table(part)
        part_id = Path(part).stem
        n = table.num_rows
        dup_of = np.full(n, None, dtype=object)
        size = np.ones(n, np.int64)
        clusters = 0
        flag_path = Path(flags_dir) / f"part={part_id}"
        if flag_path.is_dir():
            flags = pq.read_table(flag_path, columns=["row", "survivor", "size", "is_survivor"])
            rows = flags["row"].to_numpy()
            is_survivor = flags["is_survivor"].to_numpy(zero_copy_only=False)
            size[rows] = flags["size"].to_numpy()
            survivor = np.asarray(flags["survivor"].to_pylist(), dtype=object)
            dup_of[rows[~is_survivor]] = survivor[~is_survivor]
            clusters = int(is_survivor.sum())
        dup_arr = pa.array(dup_of, pa.string())
        kept = pc.is_null(dup_arr)
        reasons = pc.if_else(kept, pa.scalar(None, pa.string()), pa.scalar(REASON))
        out = with_cluster_size(table, size).filter(kept)
        name = Path(part).name
        write_parquet_atomic(out, Path(output_dir) / name)
        log = decision_log(
            table,
            kept,
            reasons,
            None,
            {"duplicate_of": dup_arr, "minhash_cluster": pa.array(size, pa.int32())},
        )
        write_parquet_atomic(log, Path(log_dir) / name)
        stats = StageStats(name=self.name, parts=1, docs_in=n, docs_out=out.num_rows)
        stats.bytes_in, stats.bytes_out = text_bytes(table), text_bytes(out)
        if n - out.num_rows:
            stats.drop(REASON, n - out.num_rows)
        stats.counters["clusters"] = clusters
        stats.counters["bytes_removed"] = stats.bytes_in - stats.bytes_out
        stats.examples = _examples(table, dup_of, size)
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return stats.to_dict()


def with_cluster_size(table: pa.Table, size: np.ndarray) -> pa.Table:
    """``table`` with its ``CLUSTER_SIZE_COLUMN`` set to ``size`` (replaced if an earlier
    dedup wrote one: the clusters of this stage are the ones that count)."""
    column = pa.array(size, pa.int32())
    if CLUSTER_SIZE_COLUMN in table.column_names:
        at = table.column_names.index(CLUSTER_SIZE_COLUMN)
        return table.set_column(at, CLUSTER_SIZE_COLUMN, column)
    return table.append_column(CLUSTER_SIZE_COLUMN, column)


def _examples(table: pa.Table, dup_of: np.ndarray, size: np.ndarray) -> list[dict]:
    """The part's removed documents with the smallest ids (at most ``MAX_EXAMPLES``)."""
    removed = np.flatnonzero(dup_of != None)  # noqa: E711 - element-wise on an object array
    if not removed.size:
        return []
    ids = pc.fill_null(table["id"].take(removed), "")
    first = removed[pc.sort_indices(ids).to_numpy()[:MAX_EXAMPLES]]
    sub = table.select([c for c in ("id", "url") if c in table.column_names]).take(first)
    ids = sub["id"].to_pylist()
    urls = sub["url"].to_pylist() if "url" in sub.column_names else [None] * len(ids)
    items = [
        {"id": ids[k], "url": urls[k], "duplicate_of": dup_of[i], "cluster_size": int(size[i])}
        for k, i in enumerate(first)
    ]
    return pick_examples(items)


#: separator of the fields of a node name. The id may hold anything (NUL too); part ids and
#: rows never do, so the splitters below take the id as what is left after them.
_NODE_SEP = "\x00"
#: digits of a row in a node name: rows sort as strings
_ROW_DIGITS = 10


def node_names(
    ids: pa.ChunkedArray | pa.Array, part_id: str, keep: str = "smallest_id"
) -> pa.Array:
    """Unique per document and ordered by the survivor rule: ``id NUL part NUL row`` for
    ``keep="smallest_id"`` (by id first), ``part NUL row NUL id`` for ``keep="first"`` (by
    reading order: part ids compare as strings, rows are zero-padded)."""
    n = len(ids)
    rows = pc.utf8_lpad(pc.cast(pa.array(np.arange(n)), pa.string()), _ROW_DIGITS, "0")
    ids = pc.fill_null(pc.cast(ids, pa.string()), "")
    if keep == "first":
        names = pc.binary_join_element_wise(pa.scalar(part_id), rows, ids, _NODE_SEP)
    else:
        names = pc.binary_join_element_wise(ids, pa.scalar(part_id), rows, _NODE_SEP)
    return names.combine_chunks() if isinstance(names, pa.ChunkedArray) else names


def _split_node(nodes: pd.Series, keep: str = "smallest_id") -> tuple[pd.Series, ...]:
    """(id, part, row) of node names, in pandas (the shuffle path's partitions)."""
    if keep == "first":
        parts = nodes.str.split(_NODE_SEP, n=2, expand=True)
        return parts[2], parts[0], parts[1].astype("int64")
    parts = nodes.str.rsplit(_NODE_SEP, n=2, expand=True)
    return parts[0], parts[1], parts[2].astype("int64")


def _split_node_arrow(names: pa.Array, keep: str = "smallest_id") -> tuple[pa.Array, ...]:
    """(id, part, row) of node names, in Arrow (the one-task path: no pandas copy)."""
    first = keep == "first"
    split = pc.split_pattern(names, _NODE_SEP, max_splits=2, reverse=not first)
    id_at, part_at, row_at = (2, 0, 1) if first else (0, 1, 2)
    return (
        pc.list_element(split, id_at),
        pc.list_element(split, part_at),
        pc.cast(pc.list_element(split, row_at), pa.int64()),
    )


# -- phase 2 -------------------------------------------------------------------------------
def _bucket_edges(df: pd.DataFrame) -> pd.DataFrame:
    """One partition shuffled on ``bucket``: each member linked to its bucket's smallest node."""
    if df.empty:
        return pd.DataFrame({"a": pd.array([], _STR), "b": pd.array([], _STR)})
    # most buckets hold one document: drop them before grouping strings (10x less CPU)
    df = df[df["bucket"].duplicated(keep=False)]
    first = df.groupby("bucket", sort=False)["node"].transform("min")
    edges = pd.DataFrame({"a": first, "b": df["node"]})
    edges = edges[edges["a"] != edges["b"]].drop_duplicates()
    return edges.astype(_STR).reset_index(drop=True)


def _distinct_edges(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop_duplicates().astype(_STR).reset_index(drop=True)


def _candidate_edges(bands_dir: Path, edges_dir: Path, npartitions: int) -> int:
    """Write the distinct candidate edges (a < b); return how many there are."""
    import dask.dataframe as dd

    bands = dd.read_parquet(str(bands_dir), columns=["bucket", "node"])
    edges = bands.shuffle(on="bucket", npartitions=npartitions).map_partitions(
        _bucket_edges, meta={"a": _STR, "b": _STR}
    )
    edges.shuffle(on="b", npartitions=npartitions).map_partitions(
        _distinct_edges, meta={"a": _STR, "b": _STR}
    ).to_parquet(str(edges_dir), write_index=False)
    return len(dd.read_parquet(str(edges_dir), columns=["a"]))


def _name_codes(*columns: pa.ChunkedArray) -> tuple[pa.Array, list[np.ndarray]]:
    """The distinct strings of ``columns`` sorted (UTF-8 byte order = code point order, as
    pandas' ``min`` on the shuffle path), and each column as int64 codes into them: a smaller
    code is a smaller name."""
    columns = tuple(pc.cast(col, pa.large_string()) for col in columns)  # string or large
    chunks = [c for col in columns for c in col.chunks]
    names = pc.unique(pa.chunked_array(chunks, pa.large_string()))
    names = names.take(pc.sort_indices(names))
    codes = [
        pc.index_in(col, value_set=names).to_numpy(zero_copy_only=False).astype(np.int64)
        for col in columns
    ]
    return names, codes


def _candidate_edges_one_task(bands_dir: str, edges_dir: str) -> int:
    """``_candidate_edges`` as one task, on integer codes (every band row in memory at once:
    only up to ``single_task_rows``): in each bucket every member is linked to the bucket's
    smallest member, the edges (a < b) de-duplicated. Returns the edge count."""
    table = pq.read_table(bands_dir, columns=["bucket", "node"])
    bucket = table["bucket"].to_numpy()
    names, (code,) = _name_codes(table["node"])
    del table
    order = np.lexsort((code, bucket))
    bucket, code = bucket[order], code[order]
    del order
    starts = np.r_[True, bucket[1:] != bucket[:-1]] if bucket.size else np.zeros(0, bool)
    first = np.maximum.accumulate(np.where(starts, np.arange(bucket.size), 0))
    smallest = code[first]
    linked = code != smallest
    pairs = np.unique(smallest[linked] * len(names) + code[linked])
    edges = pa.table(
        {
            "a": names.take(pa.array(pairs // len(names))),
            "b": names.take(pa.array(pairs % len(names))),
        }
    )
    write_parquet_atomic(edges, Path(edges_dir) / "edges.parquet")
    return edges.num_rows


def components_labels(a: pa.ChunkedArray, b: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """Connected components of the undirected edges ``(a[i], b[i])``: every node that has an
    edge, and its component's smallest node name (as the shuffle path's labels). scipy's
    ``connected_components`` on integer codes that follow name order."""
    names, comp, smallest = _components(a, b)
    return names, names.take(pa.array(smallest[comp]))


def _components(a: pa.ChunkedArray, b: pa.ChunkedArray) -> tuple[pa.Array, Any, Any]:
    """(node names, component of each node, smallest node code of each component)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    a, b = (x if isinstance(x, pa.ChunkedArray) else pa.chunked_array([x]) for x in (a, b))
    names, (ca, cb) = _name_codes(a, b)
    n = len(names)
    graph = coo_matrix((np.ones(ca.size, np.int8), (ca, cb)), shape=(n, n))
    del ca, cb
    count, comp = scipy_components(graph, directed=False)
    smallest = np.full(count, n, np.int64)
    np.minimum.at(smallest, comp, np.arange(n))
    return names, comp, smallest


def _components_one_task(edges_dir: str, flags_dir: str, keep: str) -> dict[str, int]:
    """Connected components and cluster flags as one task (only up to ``single_task_rows``
    edges): per part, the flags ``_cluster_flags`` would write (row, survivor's id, cluster
    size, is_survivor), one file per part that has clustered documents."""
    edges = pq.read_table(edges_dir, columns=["a", "b"])
    names, comp, smallest = _components(edges["a"], edges["b"])
    del edges
    survivor_code = smallest[comp]
    ids, part, row = _split_node_arrow(names, keep)
    flags = pa.table(
        {
            "part": part,
            "row": row,
            "survivor": ids.take(pa.array(survivor_code)),
            "size": pa.array(np.bincount(comp)[comp].astype(np.int64)),
            "is_survivor": pa.array(survivor_code == np.arange(len(names))),
        }
    )
    write_table_by_part(flags, Path(flags_dir), ["row", "survivor", "size", "is_survivor"])
    return {"cc_iterations": 0, "cc_converged": 1, "cc_nodes": len(names), "cc_one_task": 1}


# -- phase 3 -------------------------------------------------------------------------------
_VMETA = {"key": _STR, "other": _STR, "sets": object}


def _attach_sets(df: pd.DataFrame) -> pd.DataFrame:
    """A partition shuffled on ``key``: edges (key, other) get the key's shingle set, and
    are re-keyed on their other end."""
    sets = df[df["other"].isna()][["key", "sets"]]
    edges = df[df["other"].notna()][["key", "other"]]
    m = edges.merge(sets, on="key", how="inner")
    return pd.DataFrame(
        {
            "key": pd.array(m["other"], _STR),
            "other": pd.array(m["key"], _STR),
            "sets": m["sets"].astype(object),
        }
    )


def _pair_jaccard(threshold: float) -> Any:
    def run(df: pd.DataFrame) -> pd.DataFrame:
        sets = df[df["other"].isna()][["key", "sets"]]
        edges = df[df["other"].notna()]
        m = edges.merge(sets, on="key", how="inner", suffixes=("_other", "_key"))
        sim = np.array(
            [jaccard_of_sets(x, y) for x, y in zip(m["sets_other"], m["sets_key"], strict=True)],
            dtype=np.float64,
        )
        ok = sim >= threshold
        a, b = m["other"][ok], m["key"][ok]
        first = a < b
        return pd.DataFrame(
            {"a": pd.array(a.where(first, b), _STR), "b": pd.array(b.where(first, a), _STR)}
        ).reset_index(drop=True)

    return run


def _verify_edges(
    edges_dir: Path, sets_dir: Path, out_dir: Path, threshold: float, npartitions: int
) -> int:
    """Keep the candidate edges whose shingle sets have Jaccard >= threshold; return how many.
    Each edge meets its ends' sets through a shuffle on each end: no document is gathered."""
    import dask.dataframe as dd

    edges = dd.read_parquet(str(edges_dir), columns=["a", "b"])
    sets = dd.read_parquet(str(sets_dir), columns=["node", "shingles"])

    def edge_rows(d: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "key": pd.array(d["a"], _STR),
                "other": pd.array(d["b"], _STR),
                "sets": pd.Series([None] * len(d), dtype=object, index=d.index),
            }
        )

    def set_rows(d: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "key": pd.array(d["node"], _STR),
                "other": pd.array([pd.NA] * len(d), _STR),
                "sets": d["shingles"].astype(object),
            }
        )

    set_side = sets.map_partitions(set_rows, meta=_VMETA)
    first = dd.concat([edges.map_partitions(edge_rows, meta=_VMETA), set_side])
    half = first.shuffle(on="key", npartitions=npartitions).map_partitions(
        _attach_sets, meta=_VMETA
    )
    second = dd.concat([half, set_side]).shuffle(on="key", npartitions=npartitions)
    second.map_partitions(_pair_jaccard(threshold), meta={"a": _STR, "b": _STR}).to_parquet(
        str(out_dir), write_index=False
    )
    return len(dd.read_parquet(str(out_dir), columns=["a"]))


# -- phase 5 -------------------------------------------------------------------------------
#: Components with more members than this get their size from a lookup sent to every task
#: instead of a join on their label: a join puts all rows of one label in one task, and at crawl
#: scale a giant cluster has millions of members. Smaller components are joined by label (a task
#: then holds whole components of at most this many rows).
BIG_COMPONENT = 10_000
_FLAG_META = {"part": _STR, "row": "int64", "survivor": _STR, "size": "int64", "is_survivor": bool}


def _count_labels(df: pd.DataFrame) -> pd.DataFrame:
    counts = df.groupby("label", sort=False).size()
    return pd.DataFrame({"label": counts.index.astype(_STR), "n": counts.to_numpy(np.int64)})


def _sum_counts(df: pd.DataFrame) -> pd.DataFrame:
    sums = df.groupby("label", sort=False)["n"].sum()
    return pd.DataFrame({"label": sums.index.astype(_STR), "n": sums.to_numpy(np.int64)})


def _flag_rows(df: pd.DataFrame, keep: str) -> pd.DataFrame:
    """Rows of (node, label, n = the component's size) as flags; no two rows need each other."""
    if df.empty:
        return pd.DataFrame({k: pd.Series([], dtype=v) for k, v in _FLAG_META.items()})
    _, part, row = _split_node(df["node"], keep)
    survivor, _, _ = _split_node(df["label"], keep)
    return pd.DataFrame(
        {
            "part": part,
            "row": row,
            "survivor": survivor,
            "size": df["n"].astype("int64"),
            "is_survivor": (df["node"] == df["label"]).astype(bool),
        }
    ).astype(_FLAG_META)


def _component_sizes(labels: Any, npartitions: int) -> Any:
    """(label, n) of every component: counts per partition, summed after a shuffle on the label,
    so a task holds at most one row per label and input partition, never a component's members."""
    counts = labels.map_partitions(_count_labels, meta={"label": _STR, "n": "int64"})
    return counts.shuffle(on="label", npartitions=npartitions).map_partitions(
        _sum_counts, meta={"label": _STR, "n": "int64"}
    )


def _cluster_flags(
    labels_dir: Path, flags_dir: Path, npartitions: int, keep: str, big: int = BIG_COMPONENT
) -> None:
    import dask.dataframe as dd

    labels = dd.read_parquet(str(labels_dir), columns=["node", "label"])
    sizes = _component_sizes(labels, npartitions).persist()
    giant = sizes[sizes["n"] > big].compute()
    giant_sizes = dict(zip(giant["label"], giant["n"].astype("int64"), strict=True))
    small = labels
    if giant_sizes:
        small = labels[~labels["label"].isin(list(giant_sizes))]
    rows = small.merge(sizes[sizes["n"] <= big], on="label", how="inner", npartitions=npartitions)
    if giant_sizes:
        members = labels[labels["label"].isin(list(giant_sizes))]
        members = members.assign(n=members["label"].map(giant_sizes, meta=("n", "int64")))
        rows = dd.concat([rows, members])
    flags = rows.map_partitions(_flag_rows, keep, meta=_FLAG_META)
    write_by_part(flags, flags_dir, npartitions)

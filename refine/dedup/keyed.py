"""Key-based deduplication as a global stage: ``dedup_url`` and ``dedup_exact``.

Three phases, none of which gathers document data on one machine:

1. per part (a Dask task each): the key of every document (normalised URL, or a hash of the
   normalised text) and a rank that orders the candidates (most recent capture first for URLs,
   then the smallest id, or with ``keep: first`` the first read), written as a small Parquet
   table (key, rank, part, row);
2. Dask's own shuffle on the key, then per shuffled partition the best rank and size of each key,
   so each document of a key with several documents learns whether it is the representative;
   those flags go through a second shuffle on the part, so each part's flags are one file
   (not one per shuffled partition: that would be parts x parts files). Up to
   ``single_task_rows`` keyed documents, one Dask task does the same with Arrow's group-by
   instead of the two shuffles (the same flags);
3. per part: the flags join the documents by row, the representatives go on, the rest are logged
   with ``duplicate_of`` (the representative's id).

The stats count clusters (keys with more than one document) and bytes removed, and keep the
``MAX_EXAMPLES`` removed documents with the smallest ids beside their representative's id.

With ``by: language`` the key starts with the document's language, so documents of different
languages are never duplicates of each other (FineWeb-2 deduplicates each language apart).

The representative depends only on the documents (and, with ``keep: first``, their order),
never on how they are partitioned or on the number of workers.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from refine.dedup.by_language import DedupBy, read_languages
from refine.pipeline.gather import map_folded, map_sum
from refine.pipeline.stage import GlobalContext, GlobalStage, StageParams, decision_log, text_bytes
from refine.pipeline.stats import MAX_EXAMPLES, StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_parquet_atomic

#: documents normalised and hashed at a time by ``dedup_exact``
_TEXT_BATCH = 256
#: ranks sort as strings; a date is turned into "time until the year 10000" so that min = latest
_FAR_FUTURE_US = 253402300800 * 1_000_000
#: see ``KeyDedupParams.single_task_rows``
SINGLE_TASK_ROWS = 250_000


#: which of equally preferred duplicates stays (every dedup stage with a ``keep`` param)
Keep = Literal["smallest_id", "first"]


class KeyDedupParams(StageParams):
    keep: Keep = "smallest_id"
    """Among equally preferred documents of a key, which one stays. ``smallest_id``: the
    smallest document id (the output depends only on the set of documents, not on the order of
    the inputs). ``first``: the first in reading order (parts in part-id order, i.e. the
    config's input order then byte offset, rows in order), so the order of ``input`` says which
    copy to keep."""
    single_task_rows: int = Field(SINGLE_TASK_ROWS, ge=0)
    """Up to this many keyed documents, the grouping by key runs as one Dask task (Arrow's
    group-by over every (key, rank) row at once) instead of two Dask shuffles, each of which
    costs about a second of fixed time however small the data; the flags are the same. The
    task's memory is bounded by this number, not by the corpus. 0: always shuffle."""
    by: DedupBy = "all"
    """``all``: every document against every other. ``language``: only documents with the same
    ``language`` column are duplicates of each other (FineWeb-2 deduplicates each language
    separately); needs that column (the ``language`` stage, or a text input that has it);
    documents without a language form a group of their own."""


def _rank(pref: str, doc_id: str, part_id: str, row: int, keep: str) -> str:
    """A candidate's rank (smallest wins): the preference, then the ``keep`` rule; unique even
    if two documents share an id (part, row). Only the id may hold NUL."""
    if keep == "first":
        return f"{pref}\x00{part_id}\x00{row:010d}\x00{doc_id}"
    return f"{pref}\x00{doc_id}\x00{part_id}\x00{row:010d}"


def _rank_id(rank: str, keep: str) -> str:
    """The document id inside a rank made by ``_rank``."""
    if keep == "first":
        return rank.split("\x00", 3)[3]
    return rank.split("\x00", 1)[1].rsplit("\x00", 2)[0]


class KeyDedup(GlobalStage):
    """Keeps one document per key; subclasses say what the key and the preference are."""

    reason: ClassVar[str]
    #: the columns ``keys`` and ``preference`` read (besides ``id``), when the part has them
    columns: ClassVar[tuple[str, ...]] = ()

    def keys(self, table: pa.Table) -> list[Any]:
        """One key per row (None: the row takes part in no deduplication)."""
        raise NotImplementedError

    def preference(self, table: pa.Table) -> list[str]:
        """One string per row (no NUL); the smallest wins within a key, then ``keep``."""
        return [""] * table.num_rows

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = list_parts(Path(ctx.input_dir))
        work = Path(ctx.work_dir)
        remove_tree(work)
        keys_dir, flags_dir = work / "keys", work / "flags"
        client = ctx.client
        keyed = map_sum(
            client, self._write_keys, [str(p) for p in parts], [str(keys_dir)] * len(parts)
        )
        one_task = 0 < keyed <= self.params.single_task_rows
        if one_task:
            client.submit(_flag_one_task, str(keys_dir), str(flags_dir), pure=False).result()
        elif keyed:
            self._flag(keys_dir, flags_dir, len(parts))
        stats = apply_flags(client, self._apply, self.name, parts, flags_dir, ctx)
        stats.counters["flags_one_task"] = int(one_task)
        stats.seconds = time.perf_counter() - t0  # wall time of the whole stage
        stats.cpu_seconds += time.process_time() - c0
        remove_tree(work)
        return stats

    # -- phase 1 ---------------------------------------------------------------------------
    def _write_keys(self, part: str, keys_dir: str) -> int:
        """Write the part's (key, rank, part, row) rows; return how many (documents with a
        key)."""
        names = pq.read_schema(part).names
        table = pq.read_table(part, columns=[c for c in ("id", *self.columns) if c in names])
        part_id = Path(part).stem
        keys = self.keys(table)
        if self.params.by == "language":  # the language first: keys never meet across languages
            langs = read_languages(part, self.name).to_pylist()
            keys = [
                None if k is None else f"{lang}\x00{k}" for lang, k in zip(langs, keys, strict=True)
            ]
        pref = self.preference(table)
        ids = table["id"].to_pylist()
        keep = self.params.keep
        rows = [i for i, k in enumerate(keys) if k is not None]
        out = pa.table(
            {
                "key": pa.array([keys[i] for i in rows], pa.string()),
                "rank": pa.array(
                    [_rank(pref[i], ids[i] or "", part_id, i, keep) for i in rows], pa.string()
                ),
                "part": pa.array([part_id] * len(rows), pa.string()),
                "row": pa.array(rows, pa.int64()),
            }
        )
        write_parquet_atomic(out, Path(keys_dir) / f"{part_id}.parquet")
        return out.num_rows

    # -- phase 2 ---------------------------------------------------------------------------
    @staticmethod
    def _flag(keys_dir: Path, flags_dir: Path, n_parts: int) -> None:
        """Flag every row with its key's best rank and the key's size, after a Dask shuffle on
        the key (all rows of a key meet in one partition; memory is bounded by partition)."""
        import dask.dataframe as dd

        ddf = dd.read_parquet(str(keys_dir))
        split = max(1, min(n_parts, ddf.npartitions))
        shuffled = ddf.shuffle(on="key", npartitions=split)
        meta = {"part": "string", "row": "int64", "rank": "string", "best": "string", "n": "int64"}
        flagged = shuffled.map_partitions(_flag_partition, meta=meta)
        write_by_part(flagged, flags_dir, split)

    # -- phase 3 ---------------------------------------------------------------------------
    def _apply(self, part: str, flags_dir: str, output_dir: str, log_dir: str) -> dict:
        t0, c0 = time.perf_counter(), time.process_time()
        table = pq.read_table(part)
        part_id = Path(part).stem
        n = table.num_rows
        reasons: list[str | None] = [None] * n
        dup_of: list[str | None] = [None] * n
        flag_path = Path(flags_dir) / f"part={part_id}"
        clusters = 0  # keys with more than one document, counted at their representative
        if flag_path.is_dir():
            flags = pq.read_table(flag_path, columns=["row", "rank", "best", "n"])
            for row, rank, best, size in zip(
                flags["row"].to_pylist(),
                flags["rank"].to_pylist(),
                flags["best"].to_pylist(),
                flags["n"].to_pylist(),
                strict=True,
            ):
                if rank != best:
                    reasons[row] = self.reason
                    dup_of[row] = _rank_id(best, self.params.keep)
                elif size > 1:
                    clusters += 1
        reason_arr = pa.array(reasons, pa.string())
        kept = pc.is_null(reason_arr)
        out = table.filter(kept)
        examples = self._examples(table, dup_of)
        name = Path(part).name
        write_parquet_atomic(out, Path(output_dir) / name)
        log = decision_log(
            table, kept, reason_arr, None, {"duplicate_of": pa.array(dup_of, pa.string())}
        )
        write_parquet_atomic(log, Path(log_dir) / name)
        stats = StageStats(name=self.name, parts=1, docs_in=n, docs_out=out.num_rows)
        stats.bytes_in, stats.bytes_out = text_bytes(table), text_bytes(out)
        if n - out.num_rows:
            stats.drop(self.reason, n - out.num_rows)
        stats.counters["clusters"] = clusters
        stats.counters["bytes_removed"] = stats.bytes_in - stats.bytes_out
        stats.examples = examples
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return stats.to_dict()

    @staticmethod
    def _examples(table: pa.Table, dup_of: list[str | None]) -> list[dict]:
        """The part's removed documents with the smallest ids (at most ``MAX_EXAMPLES``)."""
        removed = [i for i, d in enumerate(dup_of) if d is not None]
        if not removed:
            return []
        ids = table["id"].take(removed).to_pylist()
        has_url = "url" in table.column_names
        urls = table["url"].take(removed).to_pylist() if has_url else [None] * len(removed)
        first = heapq.nsmallest(MAX_EXAMPLES, range(len(removed)), key=lambda k: ids[k] or "")
        return [{"id": ids[k], "url": urls[k], "duplicate_of": dup_of[removed[k]]} for k in first]


def _flag_partition(df: Any) -> Any:
    """pandas, one shuffled partition: each row of a key with several rows gets its key's best
    rank and size (a key's only row is its representative: nothing to write)."""
    ranks = df.groupby("key")["rank"]
    out = df.assign(best=ranks.transform("min"), n=ranks.transform("size"))
    out = out[out["n"] > 1]
    return out[["part", "row", "rank", "best", "n"]].astype(
        {"part": "string", "row": "int64", "rank": "string", "best": "string", "n": "int64"}
    )


def _flag_one_task(keys_dir: str, flags_dir: str) -> None:
    """``_flag`` as one task (only up to ``single_task_rows`` rows): Arrow's group-by gives
    each key's best rank (the smallest string, by code point as pandas' ``min``) and size; the
    rows of keys with several documents are written as ``flags_dir/part=ID/flags.parquet``."""
    table = pq.read_table(keys_dir, columns=["key", "rank", "part", "row"])
    per_key = table.group_by("key", use_threads=False).aggregate(
        [("rank", "min"), ("rank", "count")]
    )
    per_key = per_key.filter(pc.greater(per_key["rank_count"], 1))
    flags = table.join(per_key, "key", join_type="inner", use_threads=False)
    flags = flags.rename_columns({"rank_min": "best", "rank_count": "n"})
    write_table_by_part(flags, Path(flags_dir), ["row", "rank", "best", "n"])


def write_table_by_part(table: pa.Table, folder: Path, columns: list[str]) -> None:
    """The one-task counterpart of ``write_by_part``: ``columns`` of ``table``'s rows as
    ``folder/part=ID/flags.parquet``, one file per value of its ``part`` column."""
    table = table.sort_by("part")  # each part's rows contiguous, in order of first appearance
    runs = pc.value_counts(table["part"])
    start = 0
    for part_id, n in zip(
        runs.field("values").to_pylist(), runs.field("counts").to_pylist(), strict=True
    ):
        rows = table.slice(start, n).select(columns)
        write_parquet_atomic(rows, folder / f"part={part_id}" / "flags.parquet")
        start += n


def write_by_part(frame: Any, folder: Path, npartitions: int) -> None:
    """Write a Dask frame with a ``part`` column as ``folder/part=ID/``, after a shuffle on
    ``part`` so that each part's rows are in one file: a part's reader then opens one file, not
    one per partition of ``frame`` (which would be parts x parts files in all)."""
    frame.shuffle(on="part", npartitions=npartitions).to_parquet(
        str(folder), partition_on=["part"], write_index=False
    )


def _by_id(example: dict) -> tuple:
    return (example["id"] or "", example["duplicate_of"] or "")


def apply_flags(
    client: Any, apply: Callable[..., dict], name: str, parts: list, flags_dir: Path, ctx: Any
) -> StageStats:
    """The last phase of a flag-based dedup stage: ``apply(part, flags_dir, output_dir,
    log_dir)`` on every part, their stats summed and their examples picked."""
    total = StageStats(name=name)
    examples: list[dict] = []

    def fold(part_stats: dict) -> None:
        nonlocal total, examples
        total = total + StageStats.from_dict(part_stats)
        examples = pick_examples(examples + part_stats["examples"])  # bounded, order-free

    n = len(parts)
    args = ([str(p) for p in parts], [str(flags_dir)] * n, [ctx.output_dir] * n, [ctx.log_dir] * n)
    map_folded(client, apply, *args, fold=fold)
    total.examples = examples
    return total


def pick_examples(items: list[dict], key: Callable[[dict], Any] = _by_id) -> list[dict]:
    """The ``MAX_EXAMPLES`` items that sort first (by removed id, then survivor id): each part
    sends its own first ones, so the pick is the same whatever the partitioning."""
    return sorted(items, key=key)[:MAX_EXAMPLES]


def normalize_url(url: str | None) -> str | None:
    """The key of a URL: lower-case host, no ``www.``, no default port, no fragment, ``/`` for
    an empty path, and ``https`` counted as ``http`` (the same page crawled both ways). Query
    strings are kept: they often name different pages."""
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return url.strip()
    host = host.removeprefix("www.")
    scheme = parts.scheme.lower()
    if port and not ((scheme == "http" and port == 80) or (scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    if scheme == "https":
        scheme = "http"
    return urlunsplit((scheme, host, parts.path or "/", parts.query, ""))


class DedupUrlParams(KeyDedupParams):
    pass


class DedupUrl(KeyDedup):
    """One document per normalised URL: the most recent capture (WARC date), as in Llama 3;
    among captures of the same time, the smallest id (or the first read: ``keep``)."""

    name = "dedup_url"
    Params = DedupUrlParams
    reason = "duplicate_url"
    columns = ("url", "date")

    def keys(self, table: pa.Table) -> list[Any]:
        return [normalize_url(u) for u in table["url"].to_pylist()]

    def preference(self, table: pa.Table) -> list[str]:
        if "date" not in table.column_names:
            return [""] * table.num_rows
        dates = pc.cast(table["date"], pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_pylist()
        return [f"{(_FAR_FUTURE_US - d) if d is not None else _FAR_FUTURE_US:020d}" for d in dates]


class DedupExactParams(KeyDedupParams):
    lowercase: bool = True
    """Compare texts case-insensitively."""
    collapse_whitespace: bool = True
    """Treat runs of whitespace as one space and ignore leading/trailing whitespace."""


class DedupExact(KeyDedup):
    """One document per normalised text (NFKC, optionally lower-cased and whitespace-folded);
    the representative is the smallest id, or the first read (``keep: first``)."""

    name = "dedup_exact"
    Params = DedupExactParams
    reason = "duplicate_text"
    columns = ("text",)

    def keys(self, table: pa.Table) -> list[Any]:
        """By batches of ``_TEXT_BATCH`` documents with Arrow kernels (NFKC, Unicode lower case,
        split on Unicode whitespace and join with one space): the part's texts never all
        become Python strings at once, and each hash reads one document's bytes."""
        out: list[Any] = []
        texts = table["text"]
        for lo in range(0, len(texts), _TEXT_BATCH):
            t = pc.utf8_normalize(texts.slice(lo, _TEXT_BATCH), "NFKC")
            if self.params.lowercase:
                t = pc.utf8_lower(t)
            if self.params.collapse_whitespace:
                words = pc.utf8_split_whitespace(pc.utf8_trim_whitespace(t))
                t = pc.binary_join(words, pa.scalar(" ", t.type))
            for b in t.cast(pa.large_binary()).to_pylist():
                out.append(None if b is None else hashlib.blake2b(b, digest_size=16).hexdigest())
        return out

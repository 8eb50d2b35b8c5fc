"""``dedup_lines``: drop lines that occur more than ``max_occurrences`` times across the corpus
(Llama 3's line-level dedup; CCNet's paragraph hashing), as a global stage in three phases:

1. per part: a 64-bit hash of every normalised line of at least ``min_chars`` characters (mixed
   with the document's bucket when the corpus has more than ``bucket_docs`` documents). Its
   occurrences (hash, row, line) stay beside the part, unshuffled; what goes on is the part's
   *combined* counts, one row (hash, part, count) per distinct line of the part;
2. Dask's shuffle on the hash, then per shuffled partition each hash's corpus count (the sum over
   the parts); the (part, hash, count) of every hash counted more than ``max_occurrences`` times
   goes through a shuffle on the part and is written as one file per part. Up to
   ``single_task_rows`` combined rows, one Dask task does the same with Arrow's group-by instead
   of the two shuffles (the same flags);
3. per part: its occurrences of those hashes are removed from the documents; a document left
   with no text is dropped (``empty_after_line_dedup``); the decision log counts removed lines
   and bytes.

The stats count the distinct repeated lines (``repeated_lines``), lines and bytes removed, and
keep the ``MAX_EXAMPLES`` most repeated removed lines with their corpus count and a document they
were removed from. ``max_rows_per_line_key`` is the most rows one removed line's hash brought to
its shuffled partition: one per part the line occurs in, whatever its number of occurrences.

Memory per task is bounded by a part or a shuffled partition, never the corpus: a line in 10^8
documents is at most one shuffled row per part (summing per part first is the combiner of a
map-reduce word count), so a shuffled partition holds at most (distinct lines per part) x
(parts) rows, not one row per occurrence.
"""

from __future__ import annotations

import hashlib
import heapq
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
from pydantic import Field

from refine.dedup.by_language import DedupBy, language_hashes, read_languages
from refine.dedup.keyed import (
    SINGLE_TASK_ROWS,
    pick_examples,
    write_by_part,
    write_table_by_part,
)
from refine.pipeline.gather import map_folded, map_sum
from refine.pipeline.stage import GlobalContext, GlobalStage, StageParams, decision_log, text_bytes
from refine.pipeline.stats import MAX_EXAMPLES, StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_parquet_atomic

REASON = "empty_after_line_dedup"


class DedupLinesParams(StageParams):
    max_occurrences: int = Field(default=6, ge=1)
    """A line seen more than this many times in the corpus is removed from every document
    (Llama 3: more than 6 times per bucket of 30M documents)."""
    bucket_docs: int = Field(default=30_000_000, ge=1)
    """Llama 3 counts lines per bucket of 30M documents: with N documents in, they are split
    into ceil(N / bucket_docs) buckets (a document's bucket comes from a hash of its id, so it
    does not depend on parts or workers) and a line is removed from the documents of a bucket
    where it occurs more than ``max_occurrences`` times. ``max_occurrences`` thus means the
    same at any corpus size; a corpus of up to bucket_docs documents is one bucket."""
    min_chars: int = Field(default=20, ge=1)
    """Shorter lines (after stripping) are never counted or removed."""
    single_task_rows: int = Field(SINGLE_TASK_ROWS, ge=0)
    """Up to this many combined rows (distinct lines of each part, summed over the parts),
    the corpus counts are made by one Dask task (Arrow's group-by) instead of two Dask
    shuffles, each of which costs about a second of fixed time however small the data; the
    flags are the same. The task's memory is bounded by this number. 0: always shuffle."""
    by: DedupBy = "all"
    """``all``: a line is counted over every document. ``language``: over the documents of
    each ``language`` separately (FineWeb-2 deduplicates each language apart), so a line
    frequent in one language is not removed from another; within a language the
    ``bucket_docs`` buckets still apply. Needs that column; documents without a language form a
    group of their own."""


def normalize_line(line: str) -> str:
    return " ".join(line.split()).lower()


def line_key(line: str) -> int:
    digest = hashlib.blake2b(normalize_line(line).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


def bucket_of(doc_id: str | None, buckets: int) -> int:
    """A document's line-counting bucket: xxh3_64 of its id modulo the number of buckets."""
    if buckets <= 1:
        return 0
    return xxhash.xxh3_64_intdigest((doc_id or "").encode("utf-8", "surrogatepass")) % buckets


_MASK = (1 << 64) - 1


def bucket_key(key: int, bucket: int) -> int:
    """The counting key of a line in a bucket (bucket 0 keeps the line's own key, so one
    bucket counts exactly as without buckets)."""
    if bucket == 0:
        return key
    mixed = (((key & _MASK) * 0x9E3779B97F4A7C15) ^ (bucket * 0xC2B2AE3D27D4EB4F)) & _MASK
    return mixed - (1 << 64) if mixed >= 1 << 63 else mixed


class DedupLines(GlobalStage):
    """Removes lines repeated across the corpus more than ``max_occurrences`` times."""

    name = "dedup_lines"
    Params = DedupLinesParams

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = [str(p) for p in list_parts(Path(ctx.input_dir))]
        work = Path(ctx.work_dir)
        remove_tree(work)
        keys_dir, lines_dir, flags_dir = work / "keys", work / "lines", work / "flags"
        client = ctx.client
        n = len(parts)
        docs = sum(pq.ParquetFile(p).metadata.num_rows for p in parts)
        buckets = max(1, -(-docs // self.params.bucket_docs))
        combined = map_sum(
            client,
            self._write_keys,
            parts,
            [str(keys_dir)] * n,
            [str(lines_dir)] * n,
            [buckets] * n,
        )
        one_task = 0 < combined <= self.params.single_task_rows
        if one_task:
            client.submit(
                _frequent_keys_one_task,
                str(keys_dir),
                str(flags_dir),
                self.params.max_occurrences,
                pure=False,
            ).result()
        elif combined:
            self._flag(keys_dir, flags_dir, n)
        stats = StageStats(name=self.name)
        examples: dict[str, dict] = {}
        repeated, max_rows = 0, 0

        def fold(result: tuple[dict, int, int]) -> None:
            nonlocal stats, examples, repeated, max_rows
            part_stats, part_repeated, part_max_rows = result
            stats = stats + StageStats.from_dict(part_stats)
            repeated += part_repeated
            max_rows = max(max_rows, part_max_rows)
            for e in part_stats["examples"]:  # one per line: the document with the smallest id
                old = examples.get(e["normalized"])
                if old is None or e["id"] < old["id"]:
                    examples[e["normalized"]] = e
            if len(examples) > 4 * MAX_EXAMPLES:
                # a line's count is its corpus count in every part: one outside the most
                # repeated MAX_EXAMPLES now can never enter them later
                keep = pick_examples(list(examples.values()), key=_most_repeated)
                examples = {e["normalized"]: e for e in keep}

        map_folded(
            client,
            self._apply,
            parts,
            [str(flags_dir)] * n,
            [str(lines_dir)] * n,
            [ctx.output_dir] * n,
            [ctx.log_dir] * n,
            fold=fold,
        )
        stats.counters["repeated_lines"] = repeated
        stats.counters["buckets"] = buckets
        stats.counters["max_rows_per_line_key"] = max_rows
        stats.counters["flags_one_task"] = int(one_task)
        stats.examples = pick_examples(list(examples.values()), key=_most_repeated)
        for e in stats.examples:
            del e["normalized"]
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0
        remove_tree(work)
        return stats

    def _write_keys(self, part: str, keys_dir: str, lines_dir: str, buckets: int = 1) -> int:
        """Phase 1: the part's line occurrences to ``lines_dir`` (read back by its own apply
        task), and one row per distinct line with its count in the part to ``keys_dir`` (the
        only rows that are shuffled). Returns that number of rows."""
        columns = ["text", "id"] if buckets > 1 else ["text"]
        table = pq.read_table(part, columns=columns)
        part_id = Path(part).stem
        ids = table["id"].to_pylist() if buckets > 1 else [None] * table.num_rows
        by_language = self.params.by == "language"
        if by_language:  # a line's key is mixed with its document's language
            lang_mix = language_hashes(read_languages(part, self.name)).tolist()
        keys, rows, lines = [], [], []
        for row, text in enumerate(table["text"].to_pylist()):
            bucket = bucket_of(ids[row], buckets)
            for i, line in enumerate((text or "").split("\n")):
                if len(line.strip()) >= self.params.min_chars:
                    key = bucket_key(line_key(line), bucket)
                    keys.append(bucket_key(key, lang_mix[row]) if by_language else key)
                    rows.append(row)
                    lines.append(i)
        occurrences = pa.table(
            {
                "key": pa.array(keys, pa.int64()),
                "row": pa.array(rows, pa.int64()),
                "line": pa.array(lines, pa.int64()),
            }
        )
        write_parquet_atomic(occurrences, Path(lines_dir) / f"{part_id}.parquet")
        counts = occurrences.group_by("key", use_threads=False).aggregate([("key", "count")])
        out = pa.table(
            {
                "key": counts["key"],
                "part": pa.array([part_id] * counts.num_rows, pa.string()),
                "count": counts["key_count"],
            }
        )
        write_parquet_atomic(out, Path(keys_dir) / f"{part_id}.parquet")
        return out.num_rows

    def _flag(self, keys_dir: Path, flags_dir: Path, n_parts: int) -> None:
        import dask.dataframe as dd

        ddf = dd.read_parquet(str(keys_dir))
        split = max(1, min(n_parts, ddf.npartitions))
        limit = self.params.max_occurrences
        frequent = ddf.shuffle(on="key", npartitions=split).map_partitions(
            _frequent_keys, limit, meta=_FLAG_TYPES
        )
        write_by_part(frequent, flags_dir, split)

    def _apply(
        self, part: str, flags_dir: str, lines_dir: str, output_dir: str, log_dir: str
    ) -> tuple[dict, int, int]:
        """Rewrite one part; returns its stats, the repeated lines it counts (each at the first
        part it occurs in, so the sum over parts is the number of distinct repeated lines) and
        the most shuffled rows of one of its removed lines' hashes."""
        t0, c0 = time.perf_counter(), time.process_time()
        table = pq.read_table(part)
        part_id = Path(part).stem
        drop: dict[int, dict[int, int]] = {}  # row -> line number -> corpus count
        flag_path = Path(flags_dir) / f"part={part_id}"
        repeated, max_rows = 0, 0
        if flag_path.is_dir():
            flags = pq.read_table(flag_path, columns=["key", "n", "rows", "first"])
            occurrences = pq.read_table(Path(lines_dir) / f"{part_id}.parquet")
            where = pc.index_in(occurrences["key"], value_set=flags["key"])
            found = pc.is_valid(where)
            removed = occurrences.filter(found)
            counts = flags["n"].take(where.filter(found))
            for row, line, count in zip(
                removed["row"].to_pylist(),
                removed["line"].to_pylist(),
                counts.to_pylist(),
                strict=True,
            ):
                drop.setdefault(row, {})[line] = count
            repeated = int(pc.sum(flags["first"].cast(pa.int64())).as_py() or 0)
            max_rows = int(pc.max(flags["rows"]).as_py() or 0)
        texts = table["text"].to_pylist()
        ids = table["id"].to_pylist()
        seen: dict[str, dict] = {}  # normalised removed line -> example
        new_texts: list[str | None] = []
        reasons_list: list[str | None] = []
        removed_lines = [0] * len(texts)
        removed_bytes = [0] * len(texts)
        for row, text in enumerate(texts):
            gone = drop.get(row)
            if not gone or text is None:
                new_texts.append(text)
                reasons_list.append(None)
                continue
            kept = []
            for i, line in enumerate(text.split("\n")):
                if i in gone:
                    removed_lines[row] += 1
                    removed_bytes[row] += len(line.encode("utf-8", "surrogatepass")) + 1
                    key = normalize_line(line)
                    old = seen.get(key)
                    if old is None or (ids[row] or "") < old["id"]:
                        seen[key] = {
                            "line": line.strip(),
                            "count": gone[i],
                            "id": ids[row] or "",
                            "normalized": key,
                        }
                else:
                    kept.append(line)
            new_texts.append("\n".join(kept))
            reasons_list.append(None if "\n".join(kept).strip() else REASON)
        reasons = pa.array(reasons_list, pa.string())
        kept_mask = pc.is_null(reasons)
        rewritten = table.set_column(
            table.column_names.index("text"), "text", pa.array(new_texts, pa.large_string())
        )
        out = rewritten.filter(kept_mask)
        name = Path(part).name
        write_parquet_atomic(out, Path(output_dir) / name)
        log = decision_log(
            table,
            kept_mask,
            reasons,
            None,
            {
                "lines_removed": pa.array(removed_lines, pa.int64()),
                "line_bytes_removed": pa.array(removed_bytes, pa.int64()),
            },
        )
        write_parquet_atomic(log, Path(log_dir) / name)
        stats = StageStats(name=self.name, parts=1, docs_in=table.num_rows, docs_out=out.num_rows)
        stats.bytes_in, stats.bytes_out = text_bytes(table), text_bytes(out)
        if table.num_rows - out.num_rows:
            stats.drop(REASON, table.num_rows - out.num_rows)
        stats.counters["lines_removed"] = sum(removed_lines)
        stats.counters["docs_with_lines_removed"] = sum(1 for n in removed_lines if n)
        stats.counters["bytes_removed"] = stats.bytes_in - stats.bytes_out
        stats.examples = heapq.nsmallest(MAX_EXAMPLES, seen.values(), key=_most_repeated)
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds = time.process_time() - c0
        return stats.to_dict(), repeated, max_rows


def _most_repeated(example: dict) -> tuple:
    return (-example["count"], example["normalized"])


_FLAG_TYPES = {"part": "string", "key": "int64", "n": "int64", "rows": "int64", "first": "bool"}


def _frequent_keys(df: Any, limit: int) -> Any:
    """pandas, one shuffled partition of combined counts (at most one row per line and part):
    for every hash whose corpus count (the sum over its parts) is more than ``limit``, one row
    per part it occurs in, with that count, the rows the hash had here and whether the part is
    the hash's first (smallest id). All its occurrences go: a boilerplate line is removed
    everywhere, as in Llama 3."""
    by_key = df.groupby("key")
    out = df.assign(
        n=by_key["count"].transform("sum"),
        rows=by_key["count"].transform("size"),
        first=by_key["part"].transform("min"),
    )
    out = out[out["n"] > limit]
    out = out.assign(first=out["part"] == out["first"])
    return out[list(_FLAG_TYPES)].astype(_FLAG_TYPES)


def _frequent_keys_one_task(keys_dir: str, flags_dir: str, limit: int) -> None:
    """``_frequent_keys`` over all combined counts at once (only up to ``single_task_rows``
    rows), with Arrow's group-by; the flags written per part as ``write_by_part`` does."""
    table = pq.read_table(keys_dir, columns=["key", "part", "count"])
    per_key = table.group_by("key", use_threads=False).aggregate(
        [("count", "sum"), ("count", "count"), ("part", "min")]
    )
    per_key = per_key.filter(pc.greater(per_key["count_sum"], limit))
    flags = table.join(per_key, "key", join_type="inner", use_threads=False)
    flags = flags.append_column("first", pc.equal(flags["part"], flags["part_min"]))
    flags = flags.rename_columns({"count_sum": "n", "count_count": "rows"})
    write_table_by_part(flags, Path(flags_dir), ["key", "n", "rows", "first"])

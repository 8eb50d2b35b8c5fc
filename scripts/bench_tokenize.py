"""Tokens/s of the tokenize stage vs a bare ``Tokenizer.encode_batch_fast`` loop on the same docs.

The documents are the 697 real Common Crawl texts of ``shared/data/text`` replicated ``--copies``
times (each copy gets a distinct id), written as Parquet parts. Three measurements, one worker:

- ``bare``: ``encode_batch_fast`` over the texts in batches (the floor: what the library costs);
- ``table``: ``tokenize_table`` on the same texts (encode + BOS/EOS + NumPy arrays + untrained
  check), i.e. the stage's per-part work without I/O;
- ``stage``: the whole ``tokenize`` stage (read parts, tokenize, write token parts, cut and
  write Parquet + Megatron + flat shards, hash every file) in a one-worker in-process Dask client.

Usage: ``python scripts/bench_tokenize.py [--copies 8] [--threads 1]``; ``--threads`` sets
``RAYON_NUM_THREADS`` (the Rust thread pool of ``encode_batch``) before tokenizers loads.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("REFINE_TEST_DATA", "../shared/data"))
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="RAYON_NUM_THREADS for tokenizers")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3, help="best of N for bare and table")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    import pyarrow as pa
    from distributed import Client

    from refine.pipeline.stage import GlobalContext
    from refine.pipeline.storage import write_parquet_atomic
    from refine.tokenize.stage import Tokenize, TokenizeParams, tokenize_table
    from refine.tokenize.tokenizer import GPT2_SPEC, describe, load_tokenizer

    src = Path(args.data) / "text" / "cc-main-2019-30-en.jsonl.gz"
    with gzip.open(src, "rt") as f:
        base = [json.loads(line)["text"] for line in f]
    texts = [t for _ in range(args.copies) for t in base if t]
    ids = [f"doc-{i}" for i in range(len(texts))]
    table = pa.table({"id": ids, "source": ids, "text": pa.array(texts, pa.large_string())})
    info = describe(GPT2_SPEC)
    tok = load_tokenizer(GPT2_SPEC)
    tok.encode_batch_fast(texts[:64])  # warm up

    def bare() -> int:
        n = 0
        for i in range(0, len(texts), args.batch):
            for enc in tok.encode_batch_fast(texts[i : i + args.batch], add_special_tokens=False):
                n += len(enc.ids)
        return n

    def table_fn() -> int:
        return int(tokenize_table(table, tok, info, args.batch).offsets[-1])

    # best of N, interleaved (the machine is shared: the minimum is the least disturbed run);
    # CPU seconds of this process (all threads) next to wall seconds
    results: dict[str, tuple[int, float, float]] = {}
    for _ in range(args.repeat):
        for name, fn in [("bare", bare), ("table", table_fn)]:
            t0, c0 = time.perf_counter(), time.process_time()
            tokens = fn()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            old = results.get(name)
            results[name] = (
                tokens,
                min(wall, old[1]) if old else wall,
                min(cpu, old[2]) if old else cpu,
            )

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        docs = out / "documents" / "01_docs"
        per_part = max(1, table.num_rows // 8)
        for k, start in enumerate(range(0, table.num_rows, per_part)):
            write_parquet_atomic(table.slice(start, per_part), docs / f"part-{k:05d}.parquet")
        ctx = GlobalContext(
            input_dir=str(docs),
            output_dir=str(out / "documents" / "02_tokenize"),
            log_dir=str(out / "stages" / "02_tokenize"),
            work_dir=str(out / "_state" / "work"),
            client=None,
        )
        with Client(
            processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None
        ) as c:
            ctx.client = c
            stage = Tokenize(TokenizeParams(shard_tokens=2_000_000, batch_docs=args.batch))
            t0, c0 = time.perf_counter(), time.process_time()
            stats = stage.run(ctx)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            results["stage"] = (stats.counters["tokens"], wall, cpu)

    bare_wall, bare_cpu = (
        results["bare"][0] / results["bare"][1],
        results["bare"][0] / results["bare"][2],
    )
    print(f"documents: {len(texts)}, RAYON_NUM_THREADS={args.threads}, batch={args.batch}")
    for name, (tokens, wall, cpu) in results.items():
        print(
            f"{name:6s} {tokens:>11,d} tokens | wall {wall:7.3f} s {tokens / wall:>10,.0f} tok/s "
            f"({bare_wall / (tokens / wall) - 1:+.1%}) | cpu {cpu:7.3f} s "
            f"{tokens / cpu:>10,.0f} tok/s ({bare_cpu / (tokens / cpu) - 1:+.1%} vs bare)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

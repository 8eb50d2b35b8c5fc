"""The tokenize stage vs a bare ``Tokenizer.encode_batch_fast`` loop on the same documents.

The documents are the real Common Crawl texts of ``shared/data/text`` (670 non-empty) replicated
``--copies`` times (each copy gets a distinct id), written once as 8 Parquet parts. Sides, one
worker, ``RAYON_NUM_THREADS=--threads`` (the Rust pool of ``encode_batch``):

- ``bare``: ``encode_batch_fast`` over the texts, already Python strings in memory, in batches
  of ``--batch``, reading every document's ``ids`` (the least any user of the ids pays);
- ``table``: ``tokenize_table`` on the same texts as an Arrow table (encode + BOS/EOS + NumPy
  arrays + untrained check), i.e. the stage's per-part work without I/O;
- ``stage``: the whole ``tokenize`` stage, as ``refine run`` runs it (read the Parquet parts,
  tokenize, scratch token parts, decision log, cut shards, write Parquet + Megatron + flat shards
  with their sha256, manifest) on a one-worker one-thread in-process Dask client, configured as
  ``refine run`` configures its cluster (the worker's statistical profiler off, unless
  ``DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED`` is set).

Each round runs every side once, the order reversed every other round (the machine is shared:
interleaving spreads the disturbance over the sides). Reported: best of the rounds per side
(wall and CPU seconds of this process, all threads), the overhead as a ratio of those bests,
and the spread of the per-round ratios. The ratio compares seconds on the same documents, so
the stage's EOS tokens do not flatter its tokens/s; tokens/s are text tokens for every side.

Also, within each run: the CPU seconds spent inside ``encode_batch_fast`` itself (every side
goes through a thin timing proxy of the tokenizer), so ``cpu / encode - 1`` is each side's
overhead over the library call measured in the same run, which a busy machine disturbs far
less than the comparison of separate runs.

Usage: ``python scripts/bench_tokenize.py [--copies 8] [--rounds 5] [--threads 1]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def spread(values: list[float], base: float) -> str:
    """Median [min .. max] of ``values - base``, as percentages."""
    v = [x - base for x in values]
    return f"median {statistics.median(v):+.1%} [{min(v):+.1%} .. {max(v):+.1%}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("REFINE_TEST_DATA", "../shared/data"))
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="RAYON_NUM_THREADS for tokenizers")
    ap.add_argument("--batch", type=int, default=512, help="documents per encode_batch call")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (best of N)")
    ap.add_argument("--sides", default="bare,table,stage")
    args = ap.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)

    import dask
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
    import refine.tokenize.stage as stage_module

    class TimedTokenizer:
        """The tokenizer, with the CPU seconds (all threads: Rust's pool too) in encode calls."""

        def __init__(self, tok):
            self.tok, self.cpu = tok, 0.0

        def encode_batch_fast(self, *a, **k):
            c0 = time.process_time()
            try:
                return self.tok.encode_batch_fast(*a, **k)
            finally:
                self.cpu += time.process_time() - c0

        encode_batch = encode_batch_fast  # for callers that look it up as a fallback

    info = describe(GPT2_SPEC)
    tok = TimedTokenizer(load_tokenizer(GPT2_SPEC))
    stage_module.load_tokenizer = lambda spec: tok  # the stage's workers are in this process
    tok.encode_batch_fast(texts[:64])  # warm up

    def bare() -> int:
        n = 0
        for i in range(0, len(texts), args.batch):
            for enc in tok.encode_batch_fast(texts[i : i + args.batch], add_special_tokens=False):
                n += len(enc.ids)
        return n

    def table_side() -> int:
        res = tokenize_table(table, tok, info, args.batch)
        return int(res.offsets[-1]) - res.meta.num_rows  # text tokens (without EOS)

    tmp = tempfile.TemporaryDirectory()
    out = Path(tmp.name) / "out"
    docs = out / "documents" / "01_docs"
    per_part = -(-table.num_rows // 8)
    for k, start in enumerate(range(0, table.num_rows, per_part)):
        write_parquet_atomic(table.slice(start, per_part), docs / f"part-{k:05d}.parquet")
    ctx = GlobalContext(
        input_dir=str(docs),
        output_dir=str(out / "documents" / "02_tokenize"),
        log_dir=str(out / "stages" / "02_tokenize"),
        work_dir=str(out / "_state" / "work"),
        client=None,
        output_root=str(out),
    )
    params = TokenizeParams(shard_tokens=2_000_000, batch_docs=args.batch)

    def stage_side() -> int:
        stats = Tokenize(params).run(ctx)  # a new stage object each time, as a new run
        return stats.counters["text_tokens"]

    sides = {"bare": bare, "table": table_side, "stage": stage_side}
    sides = {k: sides[k] for k in args.sides.split(",")}
    first = next(iter(sides))
    runs: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
    encode: dict[str, list[float]] = {k: [] for k in sides}
    tokens: dict[str, int] = {}
    # as ``refine run``'s cluster (refine/pipeline/cluster.py): no statistical profiler in the
    # worker, which samples every thread every 10 ms while the tasks run
    settings = {}
    if os.environ.get("DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED") is None:
        settings["distributed.worker.profile.enabled"] = False
    with (
        dask.config.set(settings),
        Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as c,
    ):
        ctx.client = c
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for name in order:
                tok.cpu = 0.0
                t0, c0 = time.perf_counter(), time.process_time()
                tokens[name] = sides[name]()
                runs[name].append((time.perf_counter() - t0, time.process_time() - c0))
                encode[name].append(tok.cpu)
    tmp.cleanup()

    if len(set(tokens.values())) != 1:
        raise SystemExit(f"the sides disagree on the text tokens: {tokens}")
    n_tok = tokens[first]
    print(
        f"documents: {len(texts):,}, text tokens: {n_tok:,}, RAYON_NUM_THREADS={args.threads}, "
        f"batch={args.batch}, rounds={args.rounds} (best of N, interleaved)"
    )
    best = {k: (min(w for w, _ in v), min(c for _, c in v)) for k, v in runs.items()}
    for name, (wall, cpu) in best.items():
        ratio_w = [w / bw for (w, _), (bw, _) in zip(runs[name], runs[first], strict=True)]
        ratio_c = [c / bc for (_, c), (_, bc) in zip(runs[name], runs[first], strict=True)]
        print(
            f"{name:6s} wall {wall:7.3f} s {n_tok / wall:>10,.0f} tok/s "
            f"({wall / best[first][0] - 1:+6.1%}) | cpu {cpu:7.3f} s {n_tok / cpu:>10,.0f} tok/s "
            f"({cpu / best[first][1] - 1:+6.1%}) vs {first}"
        )
        if name != first:
            print(
                f"       per-round ratio to {first}: wall {spread(ratio_w, 1)}, "
                f"cpu {spread(ratio_c, 1)}"
            )
        own = [c / e - 1 for (_, c), e in zip(runs[name], encode[name], strict=True)]
        print(
            f"       in-run: encode_batch_fast {min(encode[name]):.3f} cpu s (best); "
            f"cpu over it {spread(own, 0)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

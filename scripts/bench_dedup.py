"""dedup_minhash benchmarks on the real text sample (../shared/data or $REFINE_TEST_DATA).

1. signatures per second, one process: refine's batched NumPy signatures vs datatrove 0.10.1's
   ``MinhashDedupSignature.get_shingles`` + ``get_signature`` on the same documents
   (14 x 8, 5-grams);
2. end-to-end ``dedup_minhash`` wall time on the sample replicated 1x, 2x, 4x with perturbed
   copies (1-5 % of words replaced), same partition size, in-process Dask workers.

    python scripts/bench_dedup.py [--workers 2] [--sizes 1 2 4]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent


def load_texts() -> list[str]:
    env = os.environ.get("REFINE_TEST_DATA")
    data = Path(env) if env else REPO.parent / "shared" / "data"
    with gzip.open(data / "text" / "cc-main-2019-30-en.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def bench_signatures(texts: list[str]) -> None:
    from refine.dedup.signatures import MinHasher

    hasher = MinHasher(112, seed=1, ngram=5)
    arr = pa.array(texts, pa.large_string())
    t0 = time.process_time()
    for lo in range(0, len(arr), 512):
        hasher.signatures(arr.slice(lo, 512))
    ours = len(texts) / (time.process_time() - t0)
    print(f"refine signatures: {ours:,.0f} docs/CPU-s ({len(texts)} docs)")
    try:
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    except ImportError as e:
        print(f"datatrove not available: {e}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        step = MinhashDedupSignature(output_folder=tmp, config=MinhashConfig())
        step.get_shingles("warm up the word tokenizer with a few words here")
        t0 = time.process_time()
        for t in texts:
            sh = step.get_shingles(t)
            if sh.size:
                step.get_signature(sh)
        theirs = len(texts) / (time.process_time() - t0)
    print(f"datatrove signatures: {theirs:,.0f} docs/CPU-s; refine is {ours / theirs:.1f}x")


def perturbed_corpus(texts: list[str], copies: int, rng: random.Random) -> list[tuple[str, str]]:
    docs = []
    for c in range(copies):
        for i, t in enumerate(texts):
            if c:
                words = t.split(" ")
                k = max(1, int(len(words) * rng.uniform(0.01, 0.05)))
                for j in rng.sample(range(len(words)), min(k, len(words))):
                    words[j] = "".join(rng.choice("abcdefghij") for _ in range(7))
                t = " ".join(words)
            docs.append((f"doc-{c:02d}-{i:05d}", t))
    rng.shuffle(docs)
    return docs


def bench_end_to_end(texts: list[str], sizes: list[int], workers: int, per_part: int) -> None:
    from distributed import Client

    from refine.dedup.minhash import DedupMinhash
    from refine.pipeline.stage import GlobalContext

    for size in sizes:
        docs = perturbed_corpus(texts, size, random.Random(size))
        with tempfile.TemporaryDirectory() as tmp:
            inp = Path(tmp) / "in"
            inp.mkdir()
            for k, lo in enumerate(range(0, len(docs), per_part)):
                chunk = docs[lo : lo + per_part]
                pq.write_table(
                    pa.table({"id": [d[0] for d in chunk], "text": [d[1] for d in chunk]}),
                    inp / f"part-{k:05d}.parquet",
                )
            ctx = dict(
                input_dir=str(inp),
                output_dir=f"{tmp}/out",
                log_dir=f"{tmp}/log",
                work_dir=f"{tmp}/work",
            )
            with Client(
                processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
            ) as client:
                t0 = time.perf_counter()
                stats = DedupMinhash().run(GlobalContext(client=client, **ctx))
                wall = time.perf_counter() - t0
            print(
                f"{size}x: {len(docs)} docs, {stats.parts} parts: {wall:.1f} s wall, "
                f"{len(docs) / wall:,.0f} docs/s, kept {stats.docs_out}, "
                f"cc_iterations {stats.counters['cc_iterations']}"
            )


_SHARD_PEAK = """
import resource, sys, time
sys.path.insert(0, {repo!r})
from scripts.bench_dedup import load_texts, perturbed_corpus
import random
from refine.dedup.substring import index_shard
docs = perturbed_corpus(load_texts(), 16, random.Random(0))
texts, size = [], 0
for _, t in docs:
    if size >= {budget}:
        break
    texts.append(t)
    size += len(t.encode())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.process_time()
idx = index_shard(texts, [str(i) for i in range(len(texts))], 50)
cpu = time.process_time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(size, int(idx["sa_entries"]), peak * 1024, cpu)
"""


def bench_substring(texts: list[str], sizes: list[int], workers: int, per_part: int) -> None:
    """dedup_substring: (1) peak memory and CPU of one shard's suffix-array index against the
    shard's text bytes, each in a fresh process (ru_maxrss); (2) end-to-end wall time on the
    sample replicated with perturbed copies (so most text is a repeated span)."""
    import subprocess
    import sys

    from distributed import Client

    from refine.dedup.substring import DedupSubstring
    from refine.pipeline.stage import GlobalContext

    for budget in (2**20, 4 * 2**20, 16 * 2**20):
        code = _SHARD_PEAK.format(repo=str(REPO), budget=budget)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        size, tokens, peak, cpu = (float(x) for x in out.stdout.split())
        mib = size / 2**20
        print(
            f"shard {mib:.1f} MiB, {tokens:,.0f} tokens: peak +{peak / 2**20:.0f} MiB "
            f"({peak / size:.1f}x text bytes), index {mib / cpu:.2f} MiB/CPU-s"
        )
    for size in sizes:
        docs = perturbed_corpus(texts, size, random.Random(size))
        with tempfile.TemporaryDirectory() as tmp:
            inp = Path(tmp) / "in"
            inp.mkdir()
            for k, lo in enumerate(range(0, len(docs), per_part)):
                chunk = docs[lo : lo + per_part]
                pq.write_table(
                    pa.table({"id": [d[0] for d in chunk], "text": [d[1] for d in chunk]}),
                    inp / f"part-{k:05d}.parquet",
                )
            ctx = dict(
                input_dir=str(inp),
                output_dir=f"{tmp}/out",
                log_dir=f"{tmp}/log",
                work_dir=f"{tmp}/work",
            )
            with Client(
                processes=False, n_workers=workers, threads_per_worker=1, dashboard_address=None
            ) as client:
                t0 = time.perf_counter()
                stats = DedupSubstring().run(GlobalContext(client=client, **ctx))
                wall = time.perf_counter() - t0
            mb = stats.bytes_in / 2**20
            print(
                f"substring {size}x: {len(docs)} docs, {mb:.1f} MiB, {stats.parts} parts: "
                f"{wall:.1f} s wall, {mb / wall:.2f} MiB/s, {stats.counters['tokens_removed']:,}"
                f" of {stats.counters['tokens_in']:,} tokens removed, kept {stats.docs_out} docs"
            )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--docs-per-part", type=int, default=250)
    ap.add_argument("--substring", action="store_true", help="only the dedup_substring bench")
    args = ap.parse_args()
    texts = load_texts()
    if args.substring:
        bench_substring(texts, args.sizes, args.workers, args.docs_per_part)
        return
    bench_signatures(texts)
    bench_end_to_end(texts, args.sizes, args.workers, args.docs_per_part)


if __name__ == "__main__":
    main()

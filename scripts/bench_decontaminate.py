"""Decontamination throughput: refine's ``decontaminate`` against datatrove 0.10.1's
``NGramsDecontFilter``, same documents, same evaluation items, 13-grams.

Documents: the real text sample (``text/cc-main-2019-30-en.jsonl.gz``, 697 docs) replicated to
``--docs``; 1% of them get a passage of an item planted (so the matching path that finds
something runs too). Evaluation set: ``--items`` items synthesised from the sample's sentences
(three random sentences, their words shuffled: real vocabulary, n-grams that are not in the
documents), >= 10^6 13-grams by default.

datatrove's indexer (``NGramsDecontIndexer``) takes its items from lighteval tasks (it imports
lighteval and loads the task datasets from the Hub: not offline). Its index file format is simple:
``<task>.index.hashes``, the raw uint64 array of ``xxhash64`` of each normalised n-gram (its own
``simplify_text``, spaCy word tokenizer and ``HashConfig``). So this script writes that file
itself from the same items, with datatrove's own ``compute_hashes`` code path (simplify_text,
word_tokenize, ngrams, hash_func), and runs ``NGramsDecontFilter.filter`` per document.

Both run in this process, one thread; per tool the best of ``--repeat`` rounds of CPU time is
kept. Index memory: refine's index arrays (``BenchmarkIndex.nbytes``: hashes, refs, bitset, item
table) and the RSS growth of loading each index. Prints one JSON line.

    python scripts/bench_decontaminate.py [--data ../shared/data] [--docs 4000] [--items 25000]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_items(texts: list[str], n: int, rng: random.Random) -> list[str]:
    sentences = [
        s.split() for t in texts for s in re.split(r"(?<=[.!?])\s+", t) if len(s.split()) >= 8
    ]
    items = []
    for _ in range(n):
        words = [w for s in rng.sample(sentences, 3) for w in s]
        rng.shuffle(words)
        items.append(" ".join(words))
    return items


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--docs", type=int, default=4000)
    ap.add_argument("--items", type=int, default=25000)
    ap.add_argument("--partition", type=int, default=1000, help="documents per refine batch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-datatrove", action="store_true")
    args = ap.parse_args()
    rng = random.Random(0)
    with gzip.open(Path(args.data) / "text" / "cc-main-2019-30-en.jsonl.gz") as f:
        base = [json.loads(line)["text"] for line in f]
    items = make_items(base, args.items, rng)
    docs = [base[i % len(base)] for i in range(args.docs)]
    planted = rng.sample(range(len(docs)), max(1, len(docs) // 100))
    for i in planted:
        item = items[rng.randrange(len(items))].split()
        docs[i] = f"{docs[i]} {' '.join(item[:20])} end"
    tmp = Path(tempfile.mkdtemp(prefix="bench_decont_"))
    os.environ["REFINE_CACHE"] = str(tmp / "cache")
    bench = tmp / "synthetic.jsonl"
    bench.write_text("".join(json.dumps({"id": i, "q": t}) + "\n" for i, t in enumerate(items)))

    from refine.filters.decontaminate import Decontaminate, load_index

    stage = Decontaminate(Decontaminate.Params(benchmarks=[{"path": str(bench), "id_field": "id"}]))
    t0 = time.process_time()
    stage.check()
    build_cpu = time.process_time() - t0
    r0 = rss()
    index = load_index(stage.index_file())
    refine_rss = rss() - r0
    table = pa.table({"id": [str(i) for i in range(len(docs))], "text": docs})
    refine_cpu, refine_drop = [], 0
    for _ in range(args.repeat):
        c0, refine_drop = time.process_time(), 0
        for a in range(0, len(docs), args.partition):
            res = stage.process(table.slice(a, args.partition))
            refine_drop += res.stats.dropped.get("contaminated", 0)
        refine_cpu.append(time.process_time() - c0)
    out = {
        "docs": len(docs),
        "items": len(items),
        "planted": len(planted),
        "refine_ngrams": int(len(index.hashes)),
        "refine_index_build_cpu_s": round(build_cpu, 2),
        "refine_index_bytes": index.nbytes,
        "refine_index_rss_bytes": refine_rss,
        "refine_docs_per_cpu_s": round(len(docs) / min(refine_cpu), 1),
        "refine_dropped": refine_drop,
    }
    if not args.skip_datatrove:
        out.update(run_datatrove(items, docs, tmp, args.repeat))
        out["speedup"] = round(out["refine_docs_per_cpu_s"] / out["datatrove_docs_per_cpu_s"], 2)
    print(json.dumps(out))


def run_datatrove(items: list[str], docs: list[str], tmp: Path, repeat: int) -> dict:
    import logging

    logging.getLogger("datatrove").setLevel(logging.ERROR)
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter
    from datatrove.utils.hashing import create_hash_func
    from datatrove.utils.text import ngrams, simplify_text
    from datatrove.utils.word_tokenizers import load_word_tokenizer

    try:
        from loguru import logger

        logger.remove()
    except ImportError:
        pass
    config = NGramsDecontConfig(n_grams=13, find_query_ngrams=True, find_overlap_ngrams=False)
    tokenizer = load_word_tokenizer("en")
    hash_func = create_hash_func(config.hash_config)
    c0 = time.process_time()
    hashes: set[int] = set()
    for text in items:  # NGramsDecontIndexer.compute_hashes, the label part
        tokens = tokenizer.word_tokenize(simplify_text(text, config.norm_config))
        hashes.update(map(hash_func, map(" ".join, ngrams(tokens, config.n_grams))))
    build_cpu = time.process_time() - c0
    folder = tmp / "datatrove_index"
    folder.mkdir()
    np.array(sorted(hashes), dtype=config.hash_config.np_descr).tofile(
        folder / "synthetic.index.hashes"
    )
    flt = NGramsDecontFilter(index_folder=str(folder), config=config)
    r0 = rss()
    flt.load_index_hashes()
    index_rss = rss() - r0
    flt.filter(Document(text=docs[0], id="warm"))
    cpu, dropped = [], 0
    for _ in range(repeat):
        c0, dropped = time.process_time(), 0
        for i, text in enumerate(docs):
            if flt.filter(Document(text=text, id=str(i))) is not True:
                dropped += 1
        cpu.append(time.process_time() - c0)
    return {
        "datatrove_ngrams": len(hashes),
        "datatrove_index_build_cpu_s": round(build_cpu, 2),
        "datatrove_index_rss_bytes": index_rss,
        "datatrove_docs_per_cpu_s": round(len(docs) / min(cpu), 1),
        "datatrove_dropped": dropped,
    }


if __name__ == "__main__":
    main()

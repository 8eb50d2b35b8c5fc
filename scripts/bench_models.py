"""Documents/s of the ``perplexity`` and ``quality_classifier`` stages vs the bare model loops.

One process (= one worker), the 697 real Common Crawl texts of ``shared/data/text`` replicated
``--copies`` times, one Arrow table per ``--part`` documents (a partition). For each model:

- ``bare``: the model called the way cc_net / DCLM do, one document at a time, no Arrow:
  perplexity: per line ``normalize`` -> ``sp.encode_as_pieces`` -> ``lm.score``;
  classifier: DCLM's ``classify_fasttext_hq_prob``: ``model.predict(" ".join(text.strip()
  .splitlines()))``, the ``__label__hq`` probability (1 - p when the top label is ``__label__cc``).
- ``stage``: ``Stage.process(table)`` on the same documents (signals, text hashes, decision,
  decision log, stats), the per-partition work the runner does, without I/O.

The two sides are interleaved (bare, stage, stage, bare, ... : each round alternates which goes
first), ``--repeat`` rounds, so both see the same machine load. ``overhead`` = best stage CPU
seconds / best bare CPU seconds - 1; ``round_overhead`` gives min / median / max of the per-round
ratios (the spread). ``text_hash_share``: the CPU the stage spends on ``text_hashes`` (the
saved-signal text hash), as a fraction of the bare loop. Models: ``--lm`` and ``--sp`` (else an
order-3 model is trained on the sample with ``train_lm``, needs lmplz), ``--clf`` (else a
classifier is trained with ``train_quality``). Prints one JSON object.

Usage: ``python scripts/bench_models.py [--copies 4] [--part 2000] [--repeat 9]``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path


def interleaved(repeat: int, bare, stage) -> tuple[list[float], list[float]]:
    """CPU seconds of ``repeat`` rounds of each side, alternating which side runs first. CPU
    time, not wall: the work is single-threaded, and CPU time is less inflated than wall time
    when other processes share the machine."""
    bare_s, stage_s = [], []
    for r in range(repeat):
        for side in ("bare", "stage") if r % 2 == 0 else ("stage", "bare"):
            fn, out = (bare, bare_s) if side == "bare" else (stage, stage_s)
            t0 = time.process_time()
            fn()
            out.append(time.process_time() - t0)
    return bare_s, stage_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("REFINE_TEST_DATA", "../shared/data"))
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--part", type=int, default=2000, help="documents per partition (table)")
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--lm", help="KenLM model (else trained on the sample)")
    ap.add_argument("--sp", help="SentencePiece model of --lm")
    ap.add_argument("--clf", help="fastText classifier (else trained on the sample)")
    args = ap.parse_args()

    import pyarrow as pa

    from refine.filters.classifier import QualityClassifier
    from refine.filters.perplexity import (
        PerplexityFilter,
        kenlm_model,
        normalize_line,
        sentencepiece_model,
    )
    from refine.models import fasttext_model
    from refine.pipeline.stage import text_hashes
    from refine.training import train_lm, train_quality

    src = Path(args.data) / "text" / "cc-main-2019-30-en.jsonl.gz"
    with gzip.open(src, "rt") as f:
        base = [t for t in (json.loads(line).get("text") for line in f) if t]
    texts = [t for _ in range(args.copies) for t in base]
    parts = []
    for start in range(0, len(texts), args.part):
        chunk = texts[start : start + args.part]
        ids = [f"doc-{start + i}" for i in range(len(chunk))]
        parts.append(
            pa.table(
                {"id": ids, "url": ids, "source": ids, "text": pa.array(chunk, pa.large_string())}
            )
        )
    tmp = tempfile.TemporaryDirectory(prefix="bench-models-")
    trained: dict = {}
    if not (args.lm and args.sp):
        trained["lm"] = train_lm(
            [str(src)], 3, f"{tmp.name}/lm.binary", vocab_size=8000, max_sp_lines=20_000
        )
        args.lm, args.sp = trained["lm"]["model"], trained["lm"]["sp_model"]
    if not args.clf:
        prose = [p for t in base for p in t.split("\n") if len(p.split()) >= 12]
        rng = random.Random(0)
        junk = [" ".join(rng.sample(p.split(), len(p.split()))) for p in prose]
        for name, docs in (("pos", prose), ("neg", junk)):
            Path(f"{tmp.name}/{name}.txt").write_text("\n".join(docs), encoding="utf-8")
        trained["clf"] = train_quality(
            f"{tmp.name}/pos.txt", f"{tmp.name}/neg.txt", f"{tmp.name}/clf.bin", dim=64, threads=1
        )
        args.clf = trained["clf"]["model"]

    results: dict = {
        "documents": len(texts),
        "text_mb": round(sum(len(t.encode()) for t in texts) / 1e6, 2),
        "part_docs": args.part,
        "cpu": os.cpu_count(),
        "python": sys.version.split()[0],
    }

    # perplexity --------------------------------------------------------------------------------
    ppl_stage = PerplexityFilter(PerplexityFilter.Params(model=args.lm, sp_model=args.sp))
    ppl_stage.check()
    lm, sp = kenlm_model(args.lm), sentencepiece_model(args.sp)

    def ppl_bare() -> None:
        for text in texts:
            logp, n = 0.0, 0
            for line in text.split("\n"):
                line = normalize_line(line)
                if line:
                    tok = " ".join(sp.encode_as_pieces(line))
                    logp += lm.score(tok)
                    n += len(tok.split()) + 1
            _ = 10.0 ** (-logp / n) if n else None

    def ppl_staged() -> None:
        for part in parts:
            ppl_stage.process(part)

    ppl_staged()  # warm up (loads models)
    results["perplexity"] = _compare(*interleaved(args.repeat, ppl_bare, ppl_staged), len(texts))

    # quality classifier -------------------------------------------------------------------------
    clf_stage = QualityClassifier(QualityClassifier.Params(model=args.clf))
    clf_stage.check()
    model = fasttext_model(args.clf)

    def clf_bare() -> None:
        for text in texts:
            (label,), (p,) = model.predict(" ".join(text.strip().splitlines()))
            _ = 1.0 - p if label == "__label__cc" else p

    def clf_staged() -> None:
        for part in parts:
            clf_stage.process(part)

    clf_staged()
    results["quality_classifier"] = _compare(
        *interleaved(args.repeat, clf_bare, clf_staged), len(texts)
    )
    hash_s = min(_cpu(lambda: [text_hashes(part) for part in parts]) for _ in range(args.repeat))
    for key in ("perplexity", "quality_classifier"):
        results[key]["text_hash_share"] = round(hash_s / results[key]["bare_cpu_seconds"], 4)
    results["models"] = {"lm": args.lm, "sp": args.sp, "clf": args.clf}
    if trained:
        results["trained"] = trained
    print(json.dumps(results, indent=2))
    tmp.cleanup()
    return 0


def _cpu(fn) -> float:
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def _compare(bare_s: list[float], stage_s: list[float], n: int) -> dict:
    bare, stage = min(bare_s), min(stage_s)
    ratios = sorted(s / b - 1 for b, s in zip(bare_s, stage_s, strict=True))
    return {
        "bare_cpu_seconds": round(bare, 3),
        "stage_cpu_seconds": round(stage, 3),
        "bare_docs_per_s": round(n / bare, 1),
        "stage_docs_per_s": round(n / stage, 1),
        "overhead": round(stage / bare - 1, 4),
        "round_overhead": {
            "min": round(ratios[0], 4),
            "median": round(statistics.median(ratios), 4),
            "max": round(ratios[-1], 4),
        },
        "rounds": len(ratios),
    }


if __name__ == "__main__":
    raise SystemExit(main())

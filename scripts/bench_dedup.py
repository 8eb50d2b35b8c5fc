"""dedup benchmarks on the real text sample (../shared/data or $REFINE_TEST_DATA).

1. MinHash signatures per CPU-second, one process (= per worker): refine's batched NumPy
   signatures vs datatrove 0.10.1's ``MinhashDedupSignature.get_shingles`` + ``get_signature``
   (its MinHash stage 1) on the same documents (14 x 8, 5-grams); the two sides interleaved,
   best of ``--repeat`` rounds each. Target: refine >= 2x datatrove.
2. end-to-end scaling of every dedup stage (``dedup_url``, ``dedup_exact``, ``dedup_minhash``,
   ``dedup_lines``, ``dedup_substring``) with the corpus at 1x, 2x, 4x (``--sizes``). The
   corpora are the sample replicated and perturbed (tests/dedup_corpus.py, shared with the
   memory test), written as WARC, run through the real ``Runner`` on a LocalCluster of
   ``--workers`` processes with the same ``slice_mb`` (same part size: the 4x corpus has 4x the
   parts). ``read`` + ``extract`` run once per corpus; each dedup stage is then appended to the
   stage list and run alone (the stages before it resume from their checkpoints), so only that
   stage is timed: its wall time (``seconds`` in report.json), the worker-task CPU report.json
   counts (``cpu_seconds``), and the CPU the worker processes and the driver (runner,
   scheduler, Dask graph building) really used, read from ``getrusage`` around the run (that
   one includes Dask's shuffles, which the stage stats do not see).
   A tiny corpus (``--baseline-docs`` documents, one part) measures each stage's fixed cost
   (task and shuffle round trips, connected-components rounds), after a warm-up pass on it
   that is not counted (imports and first tasks on the workers); the growth exponent (slope of
   log time over log documents) is fitted on the raw times and on the times minus that
   baseline, beside n log n's own exponent over the same sizes, and time / (n log n) is given
   relative to 1x. That one-part baseline cannot see a cost per shuffle round that grows with
   the partitions, so ``dedup_minhash``'s connected components are timed apart (a probe around
   the call): rounds, seconds per round, and the exponent of the stage without them. Every
   (size, stage) is run ``--repeat`` times, sizes interleaved within a round; the best is used
   and the spread (worst / best) printed. Defaults: 1x = the sample and 7 perturbed copies
   (~5,400 documents, 22 MiB of text), 2 MiB of WARC per part (6, 12, 23 parts); about 7 min.
   Target: growth no worse than n log n.
3. ``--substring``: peak memory and CPU of one ``dedup_substring`` shard's suffix-array index
   against the shard's text bytes, each in a fresh process.

    python scripts/bench_dedup.py [--workers 2] [--sizes 1 2 4] [--repeat 3] [--json out.json]
    python scripts/bench_dedup.py --substring
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the corpus builder shared with the memory test

from dedup_corpus import corpus, real_docs, write_corpus  # noqa: E402

DEDUP_STAGES = ["dedup_url", "dedup_exact", "dedup_minhash", "dedup_lines", "dedup_substring"]


def load_texts() -> list[str]:
    return [d["text"] for d in real_docs()]


def bench_signatures(texts: list[str], repeat: int) -> dict:
    """Documents per CPU-second for refine and datatrove on ``texts``, interleaved, best of
    ``repeat`` rounds each."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    from refine.dedup.signatures import MinHasher

    hasher = MinHasher(112, seed=1, ngram=5)
    arr = pa.array(texts, pa.large_string())

    def ours() -> float:
        t0 = time.process_time()
        for lo in range(0, len(arr), 512):
            hasher.signatures(arr.slice(lo, 512))
        return time.process_time() - t0

    with tempfile.TemporaryDirectory() as tmp:
        step = MinhashDedupSignature(output_folder=tmp, config=MinhashConfig())
        step.get_shingles("warm up the word tokenizer with a few words here")

        def theirs() -> float:
            t0 = time.process_time()
            for t in texts:
                sh = step.get_shingles(t)
                if sh.size:
                    step.get_signature(sh)
            return time.process_time() - t0

        ours()  # warm-up: NumPy buffers, the permutation tables
        rounds = [(ours(), theirs()) for _ in range(repeat)]
    n = len(texts)
    ratios = [b / a for a, b in rounds]
    out = {
        "docs": n,
        "refine_docs_per_cpu_s": n / min(a for a, _ in rounds),
        "datatrove_docs_per_cpu_s": n / min(b for _, b in rounds),
        "ratio_per_round": ratios,
    }
    out["ratio_best_of"] = out["refine_docs_per_cpu_s"] / out["datatrove_docs_per_cpu_s"]
    print(
        f"signatures ({n} docs, best of {repeat}): refine {out['refine_docs_per_cpu_s']:,.0f} "
        f"docs/CPU-s, datatrove {out['datatrove_docs_per_cpu_s']:,.0f} docs/CPU-s: refine is "
        f"{out['ratio_best_of']:.2f}x (rounds: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"target >= 2x)"
    )
    return out


# -- end-to-end scaling --------------------------------------------------------------------------


def _cpu_self() -> float:
    """CPU seconds (user + system) of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _workers_cpu(client) -> float:
    return sum(client.run(_cpu_self).values())


@contextmanager
def _timed_components(sink: list[float]):
    """Wall seconds of ``dedup_minhash``'s connected components (it runs on the driver, the
    rounds' tasks on the workers): a probe of this benchmark, the stage is not changed."""
    import refine.dedup.minhash as minhash

    inner = minhash.connected_components

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            sink.append(time.perf_counter() - t0)

    minhash.connected_components = timed
    try:
        yield
    finally:
        minhash.connected_components = inner


class DedupScaling:
    """One extracted corpus per size (and the tiny baseline corpus) under ``root``; ``time``
    runs one dedup stage on one of them through the real runner and measures it."""

    def __init__(self, root: Path, client, slice_mb: float):
        self.root, self.client, self.slice_mb = root, client, slice_mb
        self.read = [{"read": {"slice_mb": slice_mb}}, {"extract": {"engine": "resiliparse"}}]
        self.facts: dict[str, dict] = {}

    def _run(self, label: str, stages: list) -> tuple[dict, float]:
        from refine.pipeline.config import PipelineConfig
        from refine.pipeline.runner import Runner

        cfg = PipelineConfig(
            input=[str(self.root / f"{label}.warc.gz")],
            output=str(self.root / f"out-{label}"),
            stages=stages,
        )
        t0 = time.perf_counter()
        report = Runner.prepare(cfg).run(self.client).report
        wall = time.perf_counter() - t0
        if not report["complete"]:
            raise RuntimeError(f"the {label} run is incomplete: {report['failed_parts']}")
        return report, wall

    def prepare(self, label: str, docs: list[dict]) -> None:
        """Write the corpus as WARC and run read + extract on it (not timed)."""
        write_corpus(self.root / f"{label}.warc.gz", docs)
        report, wall = self._run(label, self.read)
        extract = report["stages"][1]
        self.facts[label] = {
            "docs": extract["docs_out"],
            "parts": extract["parts"],
            "text_mib": extract["bytes_out"] / 2**20,
            "extract_wall_s": wall,
        }
        print(
            f"{label}: {extract['docs_out']} docs, {extract['parts']} parts, "
            f"{extract['bytes_out'] / 2**20:.1f} MiB of text (read+extract {wall:.0f} s)"
        )

    def time(self, label: str, upto: int) -> dict:
        """Run ``DEDUP_STAGES[upto]`` on corpus ``label`` (the dedup stages before it resume
        from their checkpoints); its figures."""
        from refine.pipeline.storage import OutputLayout, stage_folder

        stages = self.read + [{name: {}} for name in DEDUP_STAGES[: upto + 1]]
        folder = stage_folder(len(stages) - 1, DEDUP_STAGES[upto])
        marker = OutputLayout(self.root / f"out-{label}").done_marker(folder, "global")
        marker.unlink(missing_ok=True)  # the stage is redone; everything before it resumes
        workers0, driver0 = _workers_cpu(self.client), _cpu_self()
        components: list[float] = []
        with _timed_components(components):
            report, wall = self._run(label, stages)
        workers_cpu, driver_cpu = _workers_cpu(self.client) - workers0, _cpu_self() - driver0
        entry = report["stages"][-1]
        assert entry["name"] == DEDUP_STAGES[upto] and entry["folder"] == folder
        return {
            "docs_in": entry["docs_in"],
            "docs_out": entry["docs_out"],
            "bytes_in": entry["bytes_in"],
            "parts": entry["parts"],
            "wall_s": entry["seconds"],
            "runner_wall_s": wall,
            "report_cpu_s": entry["cpu_seconds"],
            "workers_cpu_s": workers_cpu,
            "driver_cpu_s": driver_cpu,
            "components_s": sum(components),
            "counters": entry["counters"],
        }


def _slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log y over log x (None when a y is not positive)."""
    if len(xs) < 2 or min(ys) <= 0:
        return None
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sum(
        (a - mx) ** 2 for a in lx
    )


def _nlogn(n: float) -> float:
    return n * math.log(n)


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def summarise(stage: str, best: dict[str, dict], spread: dict[str, float], labels: list[str]):
    """Print one stage's table and its growth figures; return them."""
    base = best["baseline"]
    rows = [best[label] for label in labels]
    ns = [r["docs_in"] for r in rows]
    print(
        f"\n{stage}: fixed cost (baseline, {base['docs_in']} docs, {base['parts']} part): "
        f"{base['wall_s']:.2f} s wall, {base['workers_cpu_s']:.2f} s worker CPU, "
        f"{base['driver_cpu_s']:.2f} s driver CPU"
    )
    print(
        "  size    docs parts  wall s  -base  spread  report CPU  worker CPU  driver CPU"
        "  t/(n log n) vs 1x"
    )
    t1, n1 = rows[0]["wall_s"], ns[0]
    for label, r in zip(labels, rows, strict=True):
        rel = (r["wall_s"] / t1) / (_nlogn(r["docs_in"]) / _nlogn(n1))
        print(
            f"  {label:>4} {r['docs_in']:7d} {r['parts']:5d} {r['wall_s']:7.2f} "
            f"{r['wall_s'] - base['wall_s']:6.2f} {spread[label]:6.2f}x {r['report_cpu_s']:10.2f} "
            f"{r['workers_cpu_s']:11.2f} {r['driver_cpu_s']:11.2f} {rel:18.2f}"
        )
    walls = [r["wall_s"] for r in rows]
    net = [w - base["wall_s"] for w in walls]
    cpu = [r["workers_cpu_s"] + r["driver_cpu_s"] for r in rows]
    out = {
        "docs": ns,
        "wall_s": walls,
        "baseline_wall_s": base["wall_s"],
        "exponent_wall": _slope(ns, walls),
        "exponent_wall_minus_baseline": _slope(ns, net),
        "exponent_cpu": _slope(ns, cpu),
        "exponent_nlogn": _slope(ns, [_nlogn(n) for n in ns]),
        "time_over_nlogn_vs_1x": [
            (w / walls[0]) / (_nlogn(n) / _nlogn(ns[0])) for w, n in zip(walls, ns, strict=True)
        ],
        "net_time_over_nlogn_vs_1x": [
            (w / net[0]) / (_nlogn(n) / _nlogn(ns[0])) if net[0] > 0 else None
            for w, n in zip(net, ns, strict=True)
        ],
    }
    print(
        f"  growth exponent (slope of log time over log docs): wall {_fmt(out['exponent_wall'])}, "
        f"wall - baseline {_fmt(out['exponent_wall_minus_baseline'])}, "
        f"worker+driver CPU {_fmt(out['exponent_cpu'])}; "
        f"n log n over the same sizes: {_fmt(out['exponent_nlogn'])}"
    )
    if any(r["components_s"] for r in rows):
        rounds = [r["counters"].get("cc_iterations", 0) for r in rows]
        cc = [r["components_s"] for r in rows]
        rest = [w - c for w, c in zip(walls, cc, strict=True)]
        out.update(
            cc_rounds=rounds,
            cc_wall_s=cc,
            cc_s_per_round=[c / (n + 1) for c, n in zip(cc, rounds, strict=True)],
            wall_without_cc_s=rest,
            exponent_wall_without_cc=_slope(ns, rest),
        )
        per_size = ", ".join(f"{n} rounds {c:.1f} s" for n, c in zip(rounds, cc, strict=True))
        print(
            f"  connected components: {per_size}"
            f" ({', '.join(f'{x:.2f}' for x in out['cc_s_per_round'])} s per shuffle round incl."
            f" the initial labels); the rest of the stage: "
            f"{', '.join(f'{x:.1f}' for x in rest)} s, exponent "
            f"{_fmt(out['exponent_wall_without_cc'])}"
        )
    return out


def bench_scaling(
    sizes: list[int], base_copies: int, slice_mb: float, workers: int, repeat: int, baseline: int
) -> dict:
    from refine.pipeline.cluster import dask_client
    from refine.pipeline.config import ClusterConfig

    docs = real_docs()
    labels = [f"{s}x" for s in sizes]
    runs: dict[tuple[str, str], list[dict]] = {}
    with (
        tempfile.TemporaryDirectory() as tmp,
        dask_client(ClusterConfig(workers=workers)) as client,
    ):
        bench = DedupScaling(Path(tmp), client, slice_mb)
        # the tiny corpus: a few documents and one perturbed copy of each, so every stage
        # finds duplicates and runs all its phases, in one part
        bench.prepare("baseline", corpus(docs[: baseline // 2], 2))
        for size, label in zip(sizes, labels, strict=True):
            bench.prepare(label, corpus(docs, size * base_copies, seed=size))
        for i in range(len(DEDUP_STAGES)):  # warm-up, not counted: imports, first tasks
            bench.time("baseline", i)
        t0 = time.perf_counter()
        for r in range(repeat):
            for label in ["baseline", *labels]:
                for i, stage in enumerate(DEDUP_STAGES):
                    runs.setdefault((stage, label), []).append(bench.time(label, i))
            print(f"round {r + 1}/{repeat} done ({time.perf_counter() - t0:.0f} s)")
        facts = bench.facts
    result: dict = {"corpora": facts, "stages": {}, "runs": {}}
    totals: dict[str, list[float]] = {}
    for stage in DEDUP_STAGES:
        best, spread = {}, {}
        for label in ["baseline", *labels]:
            items = runs[(stage, label)]
            walls = [x["wall_s"] for x in items]
            best[label] = min(items, key=lambda x: x["wall_s"])
            spread[label] = max(walls) / min(walls)
            result["runs"][f"{stage}@{label}"] = items
            totals.setdefault(label, []).append(best[label]["wall_s"])
        result["stages"][stage] = summarise(stage, best, spread, labels)
    ns = [facts[label]["docs"] for label in labels]
    walls = [sum(totals[label]) for label in labels]
    net = [w - sum(totals["baseline"]) for w in walls]
    result["all_stages"] = {
        "docs": ns,
        "wall_s": walls,
        "exponent_wall": _slope(ns, walls),
        "exponent_wall_minus_baseline": _slope(ns, net),
        "exponent_nlogn": _slope(ns, [_nlogn(n) for n in ns]),
    }
    print(
        f"\nall five stages: wall {', '.join(f'{w:.1f}' for w in walls)} s at "
        f"{', '.join(labels)} (baseline {sum(totals['baseline']):.1f} s); exponent "
        f"{_fmt(result['all_stages']['exponent_wall'])}, minus baseline "
        f"{_fmt(result['all_stages']['exponent_wall_minus_baseline'])}; n log n "
        f"{_fmt(result['all_stages']['exponent_nlogn'])}"
    )
    return result


# -- dedup_substring: memory of one shard's index ------------------------------------------------

_SHARD_PEAK = """
import resource, sys, time
sys.path.insert(0, {tests!r})
from dedup_corpus import corpus, real_docs
from refine.dedup.substring import index_shard
texts, size = [], 0
for d in corpus(real_docs(), 16):
    if size >= {budget}:
        break
    texts.append(d["text"])
    size += len(d["text"].encode())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.process_time()
idx = index_shard(texts, [str(i) for i in range(len(texts))], 50)
cpu = time.process_time() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base
print(size, int(idx["sa_entries"]), peak * 1024, cpu)
"""


def bench_substring_shard() -> None:
    """Peak memory and CPU of one shard's suffix-array index against the shard's text bytes,
    each in a fresh process (ru_maxrss), on the sample replicated with perturbed copies (so
    most text is a repeated span)."""
    import subprocess

    for budget in (2**20, 4 * 2**20, 16 * 2**20):
        code = _SHARD_PEAK.format(tests=str(REPO / "tests"), budget=budget)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"shard index bench failed: {out.stderr[-2000:]}")
        size, tokens, peak, cpu = (float(x) for x in out.stdout.split())
        mib = size / 2**20
        print(
            f"shard {mib:.1f} MiB, {tokens:,.0f} tokens: peak +{peak / 2**20:.0f} MiB "
            f"({peak / size:.1f}x text bytes), index {mib / cpu:.2f} MiB/CPU-s"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument(
        "--base-copies", type=int, default=8, help="1x = the sample and N-1 perturbed copies"
    )
    ap.add_argument("--slice-mb", type=float, default=2.0, help="compressed WARC MiB per part")
    ap.add_argument("--baseline-docs", type=int, default=60, help="documents of the tiny corpus")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write every figure here")
    ap.add_argument("--substring", action="store_true", help="only the substring shard bench")
    args = ap.parse_args()
    if args.substring:
        bench_substring_shard()
        return
    started = time.perf_counter()
    result = {"args": {k: str(v) for k, v in vars(args).items()}}
    result["signatures"] = bench_signatures(load_texts(), max(args.repeat, 3))
    result["scaling"] = bench_scaling(
        args.sizes, args.base_copies, args.slice_mb, args.workers, args.repeat, args.baseline_docs
    )
    result["bench_seconds"] = time.perf_counter() - started
    print(f"bench took {result['bench_seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

